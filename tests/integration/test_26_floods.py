# Integration test 26: floods do not blind the agent: idle control connections, rings fed after their socket closed (issue 15).
import os
import re
import subprocess
import time

from test_23_access import open_dir, temp_user
from tmlib import (BUILD, TLSMIRROR, Agent, RecServer, certs, check, check_against_server, judge,
                   need_build, need_tool, proc_stats, short, stat_int, timeout, wait_until)

BADRING = os.path.join(BUILD, "progs", "badring")
FLOOD = 1100


def timed_stats(sock, limit_s=1.0):
    """`tlsmirror stats` must answer within limit_s; returns (seconds, stdout)."""
    t0 = time.time()
    try:
        r = subprocess.run([TLSMIRROR, "stats", "--socket", sock], capture_output=True,
                           timeout=10)
    except subprocess.TimeoutExpired:
        raise AssertionError("`tlsmirror stats` got no answer within 10 s") from None
    dt = time.time() - t0
    check(r.returncode == 0 and b"total " in r.stdout,
          f"`tlsmirror stats` failed ({r.returncode}): {short(r.stderr)}")
    check(dt < limit_s, f"`tlsmirror stats` took {dt:.2f} s (limit {limit_s} s)")
    return dt, r.stdout.decode(errors="replace")


def cpu_s(pid):
    with open(f"/proc/{pid}/stat") as f:
        v = f.read().rsplit(")", 1)[1].split()
    return (int(v[11]) + int(v[12])) / os.sysconf("SC_CLK_TCK")


def curl(env, agent, srv, size, name="curl"):
    c = certs()
    cu = env.captured(name, agent.sock, [need_tool("curl"), "-sS", "--cacert", c["cert"],
                                         "--resolve", f"localhost:{srv.port}:127.0.0.1",
                                         f"https://localhost:{srv.port}/size/{size}",
                                         "-o", env.path(name + ".bin")])
    rc = cu.wait(30)
    check(rc == 0, f"{name} exited {rc}: {short(cu.err())}")
    return cu


def badring_as(pw, sock, *args):
    return [need_tool("setpriv"), f"--reuid={pw.pw_uid}", f"--regid={pw.pw_gid}",
            "--init-groups", "--", need_build(BADRING), "--socket", sock] + list(args)


@timeout(120)
def test_control_socket_flood(env):
    """An agent limited to 1,024 descriptors (prlimit) and a user allowed to
    attach (--allow-user) who opens 1,100 control connections that attach a
    ring and then idle, and 1,100 more that never say hello: the agent spins
    no core, `tlsmirror stats` answers within 1 s, and curl (root) under
    capture is mirrored byte-exact; the refusals are counted."""
    open_dir(env)
    srv = RecServer(env)
    with temp_user() as pw:
        agent = Agent(env, args=["--allow-user", pw.pw_name],
                      prefix=[need_tool("prlimit"), "--nofile=1024:1024", "--"]).start()
        floods = []
        for args in (["--hold", str(FLOOD), "--attach"], ["--hold", str(FLOOD)]):
            f = env.spawn("flood", badring_as(pw, agent.sock, *args), stdin=subprocess.PIPE)
            wait_until(lambda: b"holding" in f.out() or not f.alive(), 60,
                       "badring to hold its connections")
            check(f.alive(), f"badring {args} exited: {short(f.out())} {short(f.err())}")
            floods.append(f)
        time.sleep(0.5)
        c0, t0 = cpu_s(agent.proc.popen.pid), time.time()
        time.sleep(1.0)
        busy = (cpu_s(agent.proc.popen.pid) - c0) / (time.time() - t0)
        check(busy < 0.3, f"the agent burns {busy:.0%} of a core under the idle flood")
        for _ in range(3):
            timed_stats(agent.sock)
        cu = curl(env, agent, srv, 200000)
        conn = srv.conns(1)[0]
        _, text = timed_stats(agent.sock)
        for f in floods:
            f.popen.stdin.close()
        procs, total = agent.final_stats()
    ps = proc_stats(procs, cu.pid)
    check(ps is not None and stat_int(ps, "conns") == 1,
          f"curl's process not attached/mirrored: {short(agent.stderr_text, 800)}")
    check(stat_int(total, "rejected_attach") > 0, f"no refused attach counted: {total}")
    check(stat_int(total, "pending_dropped") > 0, f"no silent connection closed: {total}")
    check("descriptor" in agent.stderr_text or "per uid" in agent.stderr_text,
          f"the flood is not logged: {short(agent.stderr_text, 800)}")
    check_against_server(judge(agent.pcap), [conn])


@timeout(120)
def test_ring_fed_after_close(env):
    """A producer that closes its control socket and keeps feeding its ring
    for 8 s (badring --feed-after-close): meanwhile `tlsmirror stats` answers
    within 1 s, curl under capture is mirrored byte-exact, and the agent
    takes at most what the ring held when the socket closed."""
    srv = RecServer(env)
    agent = Agent(env).start()
    feeder = env.spawn("feeder", [need_build(BADRING), "--socket", agent.sock,
                                  "--feed-after-close", "8000"])
    wait_until(lambda: "pid=%d " % feeder.popen.pid in timed_stats(agent.sock, 5)[1]
               or not feeder.alive(), 10, "the feeder to attach")
    time.sleep(0.5)
    n = 0
    while feeder.alive():
        timed_stats(agent.sock)
        curl(env, agent, srv, 50000 + n, f"curl{n}")
        n += 1
        time.sleep(0.3)
    check(feeder.wait(5) == 0, f"feeder: {short(feeder.out())} {short(feeder.err())}")
    out = feeder.out().decode()
    m = re.search(r"committed (\d+) bytes before the close, (\d+) after", out)
    check(m and int(m.group(2)) > 0, f"feeder output: {out}")
    check(n >= 3, f"only {n} curl runs while the feeder ran")
    conns = srv.conns(n)
    procs, total = agent.final_stats()
    ps = proc_stats(procs, feeder.popen.pid)
    check(ps is not None, f"no stats line for the feeder: {short(agent.stderr_text, 600)}")
    took = stat_int(ps, "c2s_bytes")
    # what the ring held when the agent saw the close: at most what was there
    # before, what it drained meanwhile (one ring) and the ring itself
    check(took <= int(m.group(1)) + (32 << 20),
          f"the agent took {took} bytes of the feeder's ring, more than it can have held "
          f"when the close was seen ({m.group(1)} + two rings of 16 MiB)")
    cap = judge(agent.pcap, binary=lambda st: st.client[1] == 6668)
    fed = cap.find(client_port=6668)
    check(len(fed) == 1 and len(fed[0].bytes(0)) == took,
          f"the feeder's connection: {[len(f.bytes(0)) for f in fed]}, stats say {took}")
    check(len(cap.syn_streams()) == len(conns) + 1, f"streams: {cap.describe()}")
    check_against_server(cap, conns, exact_count=False)
