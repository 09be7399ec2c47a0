# Integration test 26: tlsmirror attach into running processes (Python client loop, nginx under h2load), its refusals, and failure at each step.
import os
import re
import signal
import time

from tmlib import (HELPERS, PYTHON, SANITIZED, TLSMIRROR, Agent, RecServer, Skip, certs, check,
                   check_stream, free_port, gen_bytes, judge, need_build, need_tool, nginx_conf,
                   prog, short, stat_int, timeout, wait_listening, wait_until)
from test_05_nginx import check_h1
from test_13_gnutls import comments

STEPS = 10  # src/agent/attach.c enum step: check .. detach
REGKEEP = os.path.join(os.path.dirname(TLSMIRROR), "progs", "regkeep")
STATICSLEEP = os.path.join(os.path.dirname(TLSMIRROR), "progs", "staticsleep")


def attach(env, sock, pids, fail_step=None, user=None):
    """Runs tlsmirror attach; returns (rc, stdout, stderr) as text."""
    argv = [TLSMIRROR, "attach", "--socket", sock] + [str(p) for p in pids]
    if user is not None:
        argv = [need_tool("setpriv"), f"--reuid={user}", f"--regid={user}", "--clear-groups"] + argv
    extra = {"TLSMIRROR_ATTACH_FAIL_STEP": str(fail_step)} if fail_step else None
    rc, out, err = env.run("attach", argv, timeout_s=60, extra_env=extra)
    return rc, out.decode("utf-8", "replace"), err.decode("utf-8", "replace")


def status(pid, key):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return line.split(":", 1)[1].strip()
    return None


def has_lib(pid):
    with open(f"/proc/{pid}/maps") as f:
        return "libtlsmirror" in f.read()


# Under a sanitizer build the library pulls UBSan's runtime (and libstdc++, libm,
# libgcc_s with it), which glibc never unloads after the undone dlopen: those and the
# anonymous mappings they leave are not the library's to undo.
SANITIZER_RUNTIME = re.compile(r"/lib(ubsan|asan|stdc\+\+|gcc_s|m)\.so")


def maps_text(pid):
    """The memory map minus [heap] (malloc in the undone dlopen may grow it)."""
    with open(f"/proc/{pid}/maps") as f:
        lines = [l for l in f.read().splitlines() if "[heap]" not in l]
    if SANITIZED:
        lines = [l for l in lines if len(l.split()) >= 6 and not SANITIZER_RUNTIME.search(l)]
    return lines


def untouched(pid, maps_before, what):
    """The process runs, untraced, not stopped, without the library, same mappings."""
    check(status(pid, "TracerPid") == "0", f"{what}: pid {pid} is left traced")
    st = status(pid, "State")
    check(st and st[0] in "SR", f"{what}: pid {pid} is left in state {st}")
    check(not has_lib(pid), f"{what}: libtlsmirror.so is left mapped in pid {pid}")
    after = maps_text(pid)
    check(after == maps_before, f"{what}: the memory map of pid {pid} changed: "
          f"{sorted(set(after) ^ set(maps_before))[:6]}")


def stopped_ms(out):
    m = re.search(r"stopped_ms=([\d.]+)", out)
    check(m, f"attach printed no stopped_ms=: {out!r}")
    return float(m.group(1))


def lines(proc, word):
    return re.findall(rb"^" + word + rb" (\d+)(?: (\d+))?$", proc.out(), re.M)


def start_loop(env, server, threads=1):
    stop = env.path(f"stop-{threads}")
    argv = [PYTHON, os.path.join(HELPERS, "loopclient.py"), str(server.port), stop]
    if threads > 1:
        argv += ["--threads", str(threads)]
    p = env.spawn(f"loop{threads}", argv)
    wait_until(lambda: len(lines(p, b"ok")) >= 3 or not p.alive(), 20, "3 requests of the loop")
    check(p.alive(), f"loop client exited: {short(p.out() + p.err())}")
    return p, stop


def stop_loop(p, stop):
    with open(stop, "w"):
        pass
    rc = p.wait(20)
    check(rc == 0, f"loop client exited {rc}: {short(p.out() + p.err(), 600)}")


def loop_after_attach(env, threads):
    """A Python client looping over new connections is attached; every
    connection it opens after the attach is mirrored byte-exact."""
    agent = Agent(env).start()
    server = RecServer(env)
    p, stop = start_loop(env, server, threads)
    rc, out, err = attach(env, agent.sock, [p.pid])
    check(rc == 0 and "attached pid=%d" % p.pid in out, f"attach exited {rc}: {out} {err}")
    print(f"  attach to python ({threads} threads): stopped {stopped_ms(out):.2f} ms")
    after = len(lines(p, b"conn"))  # connections started after attach returned: index >= after
    wait_until(lambda: len(lines(p, b"ok")) >= after + 5, 30, "5 requests after the attach")
    stop_loop(p, stop)
    procs, total = agent.final_stats()
    conns = {c.peer_port: c for c in server.conns()}
    cap = judge(agent.pcap)
    post = [(int(n), int(port)) for n, port in lines(p, b"conn") if int(n) >= after]
    check(len(post) >= 5, f"only {len(post)} connections after the attach")
    for n, port in post:
        c = conns.get(port)
        check(c is not None, f"the server did not log connection {n} from port {port}")
        st = cap.one(client_port=port)
        check_stream(st, c2s=c.c2s, s2c=c.s2c, client=(c.peer, port),
                     server=(c.local, c.local_port))
    syn = cap.syn_streams()
    # one connection may have been under way during the attach: mirrored from then on
    check(len(post) <= len(syn) <= len(post) + 1, f"capture has {len(syn)} connections, "
          f"{len(post)} were made after the attach: {cap.describe()}")
    m = re.search(r"pid %d \(python3?\): (.*)" % p.pid, agent.stderr_text)
    check(m and "loaded late (tlsmirror attach)" in m.group(1) and
          re.search(r"openssl \(\S*libssl\S*\) hooked", m.group(1)),
          f"the agent's log does not say what it hooked in pid {p.pid}: {short(agent.stderr_text, 800)}")
    ps = [q for q in procs if q.get("pid") == str(p.pid)]
    check(ps and stat_int(ps[0], "conns") == len(syn), f"agent's line for pid {p.pid}: {ps}")


@timeout(120)
def test_attach_python_loop(env):
    loop_after_attach(env, 1)


@timeout(120)
def test_attach_python_threads(env):
    loop_after_attach(env, 4)


NGINX = nginx_conf(2, """    server {{
        listen 127.0.0.1:{port} ssl;
        ssl_certificate {cert};
        ssl_certificate_key {key};
        root {prefix}/html;
    }}
""")


def nginx_workers(ngx, n):
    def up():
        check(ngx.alive(), f"nginx exited: {short(ngx.err())}")
        try:
            with open(f"/proc/{ngx.pid}/task/{ngx.pid}/children") as f:
                kids = [int(k) for k in f.read().split()]
        except OSError:
            return None
        return kids if len(kids) >= n else None
    return wait_until(up, 15, f"nginx with {n} workers")


def h2load_result(text):
    m = re.search(r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, "
                  r"(\d+) failed", text)
    check(m, f"h2load printed no result: {short(text, 600)}")
    return int(m.group(1)), int(m.group(4)), int(m.group(5))


@timeout(240)
def test_attach_nginx_h2load(env):
    """nginx (not started under capture) serves h2load; tlsmirror attach to the
    master and both workers in the middle of the load: no request fails, and
    every connection after the attach is mirrored with the served bytes."""
    c = certs()
    prefix = env.path("nginx")
    for d in ("html", "tmp", "logs"):
        os.makedirs(os.path.join(prefix, d))
    body = gen_bytes(1024, 26)
    with open(os.path.join(prefix, "html", "1k"), "wb") as f:
        f.write(body)
    port = free_port()
    conf = os.path.join(prefix, "nginx.conf")
    with open(conf, "w") as f:
        f.write(NGINX.format(prefix=prefix, port=port, cert=c["cert"], key=c["key"]))
    agent = Agent(env).start()
    ngx = env.spawn("nginx", [need_tool("nginx"), "-p", prefix, "-e",
                              os.path.join(prefix, "error.log"), "-c", conf, "-g", "daemon off;"])
    workers = nginx_workers(ngx, 2)
    url = f"https://127.0.0.1:{port}/1k"
    h2load = need_tool("h2load")
    # during: 10 kept-alive connections, 50 requests/s each, for 4 s
    during = env.spawn("h2load-during", [h2load, "--h1", "-c", "10", "--rps", "50", "-D", "4",
                                         url])
    time.sleep(1)
    check(during.alive(), f"h2load ended before the attach: {short(during.out())}")
    rc, out, err = attach(env, agent.sock, [ngx.pid] + workers)
    check(rc == 0 and out.count("attached pid=") == 3, f"attach exited {rc}: {out} {err}")
    ms = [float(x) for x in re.findall(r"stopped_ms=([\d.]+)", out)]
    print(f"  attach to nginx master + 2 workers under h2load: stopped {ms} ms")
    check(during.wait(60) == 0, f"h2load during the attach: {short(during.err())}")
    total, ok, failed = h2load_result(during.out().decode())
    check(failed == 0 and ok > 0, f"h2load during the attach: {total} total, {ok} ok, "
          f"{failed} failed")
    t_after = time.time()
    n, clients = 2000, 20
    rc, o2, e2 = env.run("h2load-after", [h2load, "--h1", "-n", str(n), "-c", str(clients), url],
                         timeout_s=120)
    total, ok, failed = h2load_result(o2.decode())
    check(rc == 0 and ok == n and failed == 0, f"h2load after the attach: {total}/{ok}/{failed}")
    ngx.signal(signal.SIGQUIT)
    check(ngx.wait(20) == 0, f"nginx exited badly: {short(ngx.err())}")
    procs, tot = agent.final_stats()
    for k in ("dropped_bytes", "gap_bytes", "bad_records"):
        check(stat_int(tot, k) == 0, f"agent exit stats: {k}={tot.get(k)}: {tot}")
    cap = judge(agent.pcap)
    syn = cap.syn_streams()
    after = [s for s in syn if s.segs[0].ts / 1e9 >= t_after]
    check(len(after) == clients, f"{len(after)} connections mirrored after the attach, h2load "
          f"made {clients}: {cap.describe()}")
    reqs, resps, _ = check_h1(after, body)
    check(reqs == n and resps == n, f"the mirror carries {reqs} requests and {resps} responses "
          f"after the attach, h2load completed {n}")
    check(len(syn) - len(after) <= 10, f"{len(syn) - len(after)} connections before, h2load "
          f"had 10 open")


@timeout(120)
def test_attach_refusals(env):
    agent = Agent(env).start()
    # no such process
    gone = env.spawn("true", ["true"])
    gone.wait(10)
    rc, out, err = attach(env, agent.sock, [gone.pid])
    check(rc == 1 and "no such process" in err, f"attach to a dead pid: {rc} {err!r}")
    # not a number
    rc, out, err = attach(env, agent.sock, ["12ab"])
    check(rc == 2 and "not a process id" in err, f"attach 12ab: {rc} {err!r}")
    target = env.spawn("sleeper", [PYTHON, "-c", "import time, ssl\nprint('ready', flush=True)\n"
                                              "while True: time.sleep(0.05)"])
    wait_until(lambda: target.out().startswith(b"ready"), 10, "python with ssl imported")
    before = maps_text(target.pid)
    # another tracer
    tracer = env.spawn("strace", [need_tool("strace"), "-p", str(target.pid), "-o", os.devnull])
    wait_until(lambda: status(target.pid, "TracerPid") not in (None, "0"), 10, "strace attached")
    rc, out, err = attach(env, agent.sock, [target.pid])
    check(rc == 1 and "already traced by pid %d (strace)" % tracer.pid in err,
          f"attach to a process strace traces: {rc} {err!r}")
    tracer.signal(signal.SIGTERM)
    tracer.wait(10)
    wait_until(lambda: status(target.pid, "TracerPid") == "0", 10, "strace gone")
    untouched(target.pid, before, "refused (strace)")
    # another user, unprivileged, against root's process
    if os.geteuid() == 0:
        rc, out, err = attach(env, agent.sock, [target.pid], user=65534)
        check(rc == 1 and "attaching needs root" in err, f"attach as nobody: {rc} {err!r}")
    else:
        rc, out, err = attach(env, agent.sock, [1])
        check(rc == 1 and "attaching needs root" in err, f"attach to pid 1: {rc} {err!r}")
    untouched(target.pid, before, "refused (user)")
    # no dlopen: a statically linked program
    need_build(STATICSLEEP)
    st = env.spawn("static", [STATICSLEEP])
    wait_until(lambda: st.out().startswith(b"ready"), 10, "static program")
    rc, out, err = attach(env, agent.sock, [st.pid])
    check(rc == 1 and "has no dlopen" in err, f"attach to a static program: {rc} {err!r}")
    check(st.alive() and status(st.pid, "TracerPid") == "0", "static program left traced/dead")
    # the library already loaded
    rc, out, err = attach(env, agent.sock, [target.pid])
    check(rc == 0, f"attach: {rc} {err}")
    rc, out, err = attach(env, agent.sock, [target.pid])
    check(rc == 1 and "loaded in it already" in err, f"second attach: {rc} {err!r}")
    check(target.alive(), "python died")


@timeout(180)
def test_attach_fail_each_step(env):
    """Each step of attach made to fail in turn (TLSMIRROR_ATTACH_FAIL_STEP):
    the target runs on with its registers, stack and mappings as they were
    (regkeep checks its own registers and the 4 KiB below its stack pointer
    around every system call), and a TLS client keeps working unmirrored."""
    need_build(REGKEEP)
    agent = Agent(env).start()
    server = RecServer(env)
    rk = env.spawn("regkeep", [REGKEEP])
    wait_until(lambda: b"round 10 ok" in rk.out() or not rk.alive(), 10, "regkeep running")
    loop, stop = start_loop(env, server)
    for pid in (rk.pid, loop.pid):
        before = maps_text(pid)
        for step in range(1, STEPS + 1):
            rc, out, err = attach(env, agent.sock, [pid], fail_step=step)
            check(rc == 1 and f"step {step} (" in err, f"step {step} on pid {pid}: {rc} {err!r}")
            untouched(pid, before, f"step {step} failed")
    check(rk.alive(), f"regkeep: {short(rk.out())}")
    n = len(lines(loop, b"ok"))
    wait_until(lambda: len(lines(loop, b"ok")) >= n + 2, 20, "the client after the failures")
    procs, total, raw = agent.stats()
    check(not [p for p in procs if p.get("pid") in (str(rk.pid), str(loop.pid))],
          f"the agent sees a process whose attach failed:\n{raw}")
    # and then for real: the registers survive that too
    rc, out, err = attach(env, agent.sock, [rk.pid])
    check(rc == 0, f"attach to regkeep: {rc} {err}")
    print(f"  attach to regkeep: stopped {stopped_ms(out):.2f} ms")
    r = int(re.findall(rb"round (\d+) ok", rk.out())[-1])
    wait_until(lambda: f"round {r + 20} ok".encode() in rk.out() or not rk.alive(), 20,
               "regkeep after the attach")
    check(rk.alive() and b"CHANGED" not in rk.out(), f"regkeep: {short(rk.out())}")
    stop_loop(loop, stop)


def check_suffix(what, whole, tail):
    """The mirror of a connection open before the attach: a non-empty suffix
    of what the server logged (what flowed before the attach is not there)."""
    check(tail and whole.endswith(tail), f"{what}: the mirror ({len(tail)} bytes) is not a "
          f"suffix of the {len(whole)} bytes the server logged: {short(tail[:80])}")


def check_midstream(cap, port, c, fields):
    """The connection open before the attach: judged (its handshake, segments,
    FIN exchange), its bytes the tail of the real stream, and marked mid-stream."""
    st = cap.one(client_port=port)
    check(st.client == (c.peer, port) and st.server == (c.local, c.local_port),
          f"{st.name()}: ends {st.client} {st.server}, want {(c.peer, port)} "
          f"{(c.local, c.local_port)}")
    check_suffix(f"{st.name()} c2s", c.c2s, st.bytes(0))
    check_suffix(f"{st.name()} s2c", c.s2c, st.bytes(1))
    check(len(st.bytes(0)) < len(c.c2s), f"{st.name()}: the whole stream is there, "
          "nothing flowed before the attach?")
    check(fields.get("start") == "midstream", f"{st.name()}: the comment does not say the "
          f"capture started mid-connection: {fields}")


@timeout(120)
def test_attach_python_open_connection(env):
    """A Python client with one TLS connection open before the attach, sending
    in a loop: from the attach on, its bytes are mirrored as the tail of the
    real stream, judged by tshark, and the pcapng comment says mid-stream."""
    agent = Agent(env, pcap=env.path("m.pcapng")).start()
    server = RecServer(env, mode="echo")
    stop = env.path("stop")
    p = env.spawn("long", [PYTHON, os.path.join(HELPERS, "longclient.py"), str(server.port),
                           stop])
    wait_until(lambda: len(lines(p, b"ok")) >= 5 or not p.alive(), 20, "5 messages")
    check(p.alive(), f"long client exited: {short(p.out() + p.err())}")
    port = int(re.search(rb"^conn (\d+)$", p.out(), re.M).group(1))
    rc, out, err = attach(env, agent.sock, [p.pid])
    check(rc == 0, f"attach exited {rc}: {out} {err}")
    n = len(lines(p, b"ok"))
    wait_until(lambda: len(lines(p, b"ok")) >= n + 10, 30, "10 messages after the attach")
    stop_loop(p, stop)
    c = server.conns(1)[0]
    procs, total = agent.final_stats()
    cap = judge(agent.pcap)
    check(len(cap.streams) == 1, f"one connection expected: {cap.describe()}")
    check_midstream(cap, port, c, comments(agent.pcap)[0])
    ps = [q for q in procs if q.get("pid") == str(p.pid)]
    check(ps and stat_int(ps[0], "midstream_conns") == 1, f"agent's line for pid {p.pid}: {ps}")


@timeout(120)
def test_attach_gnutls_client(env):
    """gtclient (GnuTLS) not started under capture: its first connection is
    open across the attach (mirrored from then on, marked mid-stream), the
    ones it opens after the attach are mirrored byte-exact."""
    c = certs()
    agent = Agent(env, pcap=env.path("m.pcapng")).start()
    server = RecServer(env, mode="echo")
    gt = env.spawn("gtclient", [prog("gtclient"), "127.0.0.1", str(server.port), c["cert"],
                                "20", "3000", env.path("keylog"), "3", "50"])
    wait_until(lambda: b"round 5 ok" in gt.out() or not gt.alive(), 20, "gtclient's rounds")
    check(gt.alive(), f"gtclient exited: {short(gt.out() + gt.err())}")
    rc, out, err = attach(env, agent.sock, [gt.pid])
    check(rc == 0, f"attach exited {rc}: {out} {err}")
    print(f"  attach to gtclient: stopped {stopped_ms(out):.2f} ms")
    check(gt.wait(60) == 0, f"gtclient: {short(gt.out() + gt.err())}")
    ports = [int(x) for x in re.findall(rb"^conn \d+ (\d+)$", gt.out(), re.M)]
    check(len(ports) == 3, f"gtclient's connections: {short(gt.out())}")
    conns = {x.peer_port: x for x in server.conns(3)}
    procs, total = agent.final_stats()
    cap = judge(agent.pcap)
    check(len(cap.syn_streams()) == 3, f"3 connections expected: {cap.describe()}")
    cm = comments(agent.pcap)
    by_port = {st.client[1]: st for st in cap.streams}
    for i, port in enumerate(ports):
        st = by_port.get(port)
        check(st is not None, f"connection {i} (port {port}) not mirrored: {cap.describe()}")
        fields = cm[st.idx]
        if i == 0:
            check_midstream(cap, port, conns[port], fields)
        else:
            x = conns[port]
            check_stream(st, c2s=x.c2s, s2c=x.s2c, client=(x.peer, port),
                         server=(x.local, x.local_port))
            check("start" not in fields, f"connection {i} marked {fields}")
        check(fields.get("side") == "client" and fields.get("process") == "gtclient",
              f"connection {i}: {fields}")
    m = re.search(r"pid %d \(gtclient\): (.*)" % gt.pid, agent.stderr_text)
    check(m and re.search(r"gnutls \(\S*libgnutls\S*\) hooked", m.group(1)),
          f"the agent's log does not say gnutls is hooked in pid {gt.pid}: "
          f"{short(agent.stderr_text, 800)}")
    ps = [q for q in procs if q.get("pid") == str(gt.pid)]
    check(ps and ps[0].get("tls") == "gnutls" and stat_int(ps[0], "conns") == 3 and
          stat_int(ps[0], "midstream_conns") == 1, f"agent's line for pid {gt.pid}: {ps}")


# A Python process under a seccomp filter: "allow" allows everything, "noexec"
# kills the process at an mmap with PROT_EXEC (dlopen maps code so).
SECCOMP_PY = r'''
import ctypes, ssl, struct, sys, time
def ins(code, jt, jf, k):
    return struct.pack("HBBI", code, jt, jf, k)
ALLOW, KILL = 0x7fff0000, 0x80000000
if sys.argv[1] == "allow":
    prog = [ins(0x06, 0, 0, ALLOW)]
else:  # ld [nr]; jeq mmap; ld [args[2]]; jset PROT_EXEC; ret KILL; ret ALLOW
    prog = [ins(0x20, 0, 0, 0), ins(0x15, 0, 3, 9), ins(0x20, 0, 0, 32), ins(0x45, 0, 1, 4),
            ins(0x06, 0, 0, KILL), ins(0x06, 0, 0, ALLOW)]
buf = ctypes.create_string_buffer(b"".join(prog))
class Fprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]
fp = Fprog(len(prog), ctypes.cast(buf, ctypes.c_void_p))
libc = ctypes.CDLL(None, use_errno=True)
if libc.prctl(38, 1, 0, 0, 0) or libc.prctl(22, 2, ctypes.byref(fp), 0, 0):
    print("prctl failed", ctypes.get_errno(), flush=True)
    sys.exit(1)
print("ready", flush=True)
while True:
    time.sleep(0.05)
'''


@timeout(120)
def test_attach_seccomp(env):
    """A target under a seccomp filter that would kill it at dlopen's mmap is
    refused (the filter, read with PTRACE_SECCOMP_GET_FILTER, is run on the
    system calls our calls make) and left untouched; one whose filter allows
    them is attached."""
    agent = Agent(env).start()
    procs = {}
    for mode in ("noexec", "allow"):
        p = env.spawn(f"seccomp-{mode}", [PYTHON, "-c", SECCOMP_PY, mode])
        wait_until(lambda: p.out().startswith(b"ready") or not p.alive(), 10, "seccomp target")
        check(p.alive() and status(p.pid, "Seccomp") == "2", f"{mode}: {short(p.out())}")
        procs[mode] = p
    p = procs["noexec"]
    before = maps_text(p.pid)
    rc, out, err = attach(env, agent.sock, [p.pid])
    check(rc == 1 and "seccomp filter does not allow mmap" in err,
          f"attach to a process whose seccomp filter kills at mmap(PROT_EXEC): {rc} {err!r}")
    time.sleep(0.2)
    check(p.alive(), f"the seccomp target died: {short(p.out() + p.err())}")
    untouched(p.pid, before, "refused (seccomp)")
    p = procs["allow"]
    rc, out, err = attach(env, agent.sock, [p.pid])
    check(rc == 0 and has_lib(p.pid), f"attach under an allow-all seccomp filter: {rc} {err!r}")
    time.sleep(0.2)
    check(p.alive(), f"the allow-all seccomp target died: {short(p.out() + p.err())}")


EXITER_PY = r'''
import os, ssl, sys, threading, time
def exiter():
    while not os.path.exists(sys.argv[1]):
        time.sleep(0.01)
    os._exit(7)
threading.Thread(target=exiter, daemon=True).start()
print("ready", flush=True)
while True:
    time.sleep(3600)  # held by attach without the GIL, so the exiter thread can run
'''


@timeout(180)
def test_attach_target_dies_midway(env):
    """The target is SIGKILLed, or exits by itself (another of its threads),
    while tlsmirror attach holds it stopped (TLSMIRROR_ATTACH_PAUSE_STEP: the
    stack written, the library loaded, hooked): attach ends at once with a
    clear error, the agent and a bystander client run on unaffected."""
    agent = Agent(env).start()
    server = RecServer(env)
    loop, stop = start_loop(env, server)
    cases = [(7, "kill"), (9, "kill"), (8, "exit"), (5, "exit")]
    for step, how in cases:
        go = env.path(f"go-{step}-{how}")
        t = env.spawn(f"target-{step}", [PYTHON, "-c", EXITER_PY, go])
        wait_until(lambda: t.out().startswith(b"ready") or not t.alive(), 10, "target")
        at = env.spawn(f"attach-{step}", [TLSMIRROR, "attach", "--socket", agent.sock,
                                          str(t.pid)],
                       extra_env={"TLSMIRROR_ATTACH_PAUSE_STEP": str(step),
                                  "TLSMIRROR_ATTACH_PAUSE_MS": "800"})
        wait_until(lambda: b"pausing" in at.err() or not at.alive(), 20, "attach to pause")
        t0 = time.time()
        if how == "kill":
            t.signal(signal.SIGKILL)
        else:
            with open(go, "w"):
                pass
        rc = at.wait(20)
        took = time.time() - t0
        err = at.err().decode("utf-8", "replace")
        check(rc == 1 and f"it ended during step {step} (" in err and took < 10,
              f"step {step} ({how}): attach exited {rc} after {took:.1f} s: {err!r}")
        t.wait(10)
        check(agent.proc.alive(), f"the agent died: {short(agent.proc.err())}")
        print(f"  target {how} before step {step}: attach ended in {took:.1f} s: "
              f"{err.strip().splitlines()[-1][:120]}")
    n = len(lines(loop, b"ok"))
    wait_until(lambda: len(lines(loop, b"ok")) >= n + 2, 20, "the bystander client")
    stop_loop(loop, stop)
    procs, total, raw = agent.stats()
    check(stat_int(total, "bad_records") == 0, f"agent stats: {raw}")


@timeout(120)
def test_attach_stop_signal_during_call(env):
    """SIGSTOP (which no mask blocks) reaches the thread at the start of the
    injected dlopen: it is held back, the attach completes, and the target
    stops at detach as the signal asked; SIGCONT resumes it, hooked."""
    agent = Agent(env).start()
    t = env.spawn("sleeper", [PYTHON, "-c", "import time, ssl\nprint('ready', flush=True)\n"
                                         "while True: time.sleep(0.05)"])
    wait_until(lambda: t.out().startswith(b"ready"), 10, "python with ssl imported")
    at = env.spawn("attach", [TLSMIRROR, "attach", "--socket", agent.sock, str(t.pid)],
                   extra_env={"TLSMIRROR_ATTACH_PAUSE_STEP": "7",
                              "TLSMIRROR_ATTACH_PAUSE_MS": "800"})
    wait_until(lambda: b"pausing" in at.err() or not at.alive(), 20, "attach to pause")
    os.kill(t.pid, signal.SIGSTOP)
    rc = at.wait(20)
    check(rc == 0, f"attach with a SIGSTOP during its call: {rc} {short(at.err())}")
    wait_until(lambda: (status(t.pid, "State") or "?")[0] == "T", 5, "the target stopped")
    check(status(t.pid, "TracerPid") == "0" and has_lib(t.pid), "target left traced or unhooked")
    os.kill(t.pid, signal.SIGCONT)
    wait_until(lambda: (status(t.pid, "State") or "?")[0] in "SR", 5, "the target resumed")
    check(t.alive(), "the target died")


LINECLIENT_PY = r'''
import os, socket, ssl, sys, time
ctx = ssl.create_default_context(cafile=sys.argv[2])
s = ctx.wrap_socket(socket.create_connection(("127.0.0.1", int(sys.argv[1]))),
                    server_hostname="localhost")
print("conn %d" % s.getsockname()[1], flush=True)
n = 0
while not os.path.exists(sys.argv[3]):
    line = b"line %d %s\n" % (n, b"x" * (n % 90))
    s.sendall(line)
    got = b""
    while len(got) < len(line):
        got += s.recv(65536)
    if got != line:
        print("bad echo %d: %r" % (n, got), flush=True)
        sys.exit(1)
    print("ok %d" % n, flush=True)
    n += 1
    time.sleep(0.05)
s.close()
'''


@timeout(120)
def test_attach_gnutls_server(env):
    """gnutls-serv --echo (not under capture) with a Python client connected
    before the attach and one after: both mirrored as the server's, the old
    one mid-stream with its ends right (the side of a session older than the
    library is not known to libgnutls' API: a listening socket on its local
    port makes it the server), the new one byte-exact."""
    c = certs()
    port = free_port()
    agent = Agent(env, pcap=env.path("m.pcapng")).start()
    serv = env.spawn("gnutls-serv", [need_tool("gnutls-serv"), "--echo", "-p", str(port),
                                     "--x509certfile", c["cert"], "--x509keyfile", c["key"]])
    wait_listening(port, proc=serv)
    clients = []
    for i in range(2):
        stop = env.path(f"stop-{i}")
        if i == 1:
            rc, out, err = attach(env, agent.sock, [serv.pid])
            check(rc == 0, f"attach to gnutls-serv: {rc} {out} {err}")
        p = env.spawn(f"client-{i}", [PYTHON, "-c", LINECLIENT_PY, str(port), c["cert"], stop])
        wait_until(lambda: len(lines(p, b"ok")) >= 5 or not p.alive(), 20, f"client {i}")
        check(p.alive(), f"client {i}: {short(p.out() + p.err())}")
        clients.append((p, stop))
    n = len(lines(clients[0][0], b"ok"))
    wait_until(lambda: len(lines(clients[0][0], b"ok")) >= n + 5, 20, "the old connection")
    for p, stop in clients:
        stop_loop(p, stop)
    procs, total = agent.final_stats()
    cap = judge(agent.pcap)
    cm = comments(agent.pcap)
    for i, (p, stop) in enumerate(clients):
        cport = int(re.search(rb"^conn (\d+)$", p.out(), re.M).group(1))
        st = cap.one(client_port=cport)
        check(st.client == ("127.0.0.1", cport) and st.server == ("127.0.0.1", port),
              f"client {i}: {st.name()}: ends {st.client} -> {st.server}")
        fields = cm[st.idx]
        check(fields.get("side") == "server" and fields.get("process") == "gnutls-serv",
              f"client {i}: {fields}")
        check(st.bytes(0) == st.bytes(1) and st.bytes(0).endswith(b"\n"),
              f"client {i}: the echo differs: {short(st.bytes(0)[-60:])} / {short(st.bytes(1)[-60:])}")
        if i == 0:
            check(fields.get("start") == "midstream" and not st.bytes(0).startswith(b"line 0 "),
                  f"the connection older than the attach: {fields} {short(st.bytes(0)[:40])}")
        else:
            sent = b"".join(b"line %d %s\n" % (k, b"x" * (k % 90))
                            for k in range(len(lines(p, b"ok"))))
            check_stream(st, c2s=sent, s2c=sent)
            check("start" not in fields, f"client {i}: {fields}")
