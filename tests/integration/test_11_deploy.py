# Integration test 11: how operators deploy it: exec chains, an installed tree, rotated output.
import glob
import os
import subprocess
import time

from tmlib import (ROOT, TLSMIRROR, Agent, RecServer, assert_bytes, certs, check, check_against_server,
                   gen_bytes, judge, need_tool, proc_stats, short, stat_int, timeout,
                   tshark_fields)


def curl_args(srv, path, out):
    c = certs()
    return [need_tool("curl"), "-sS", "--cacert", c["cert"], "--resolve",
            f"localhost:{srv.port}:127.0.0.1", f"https://localhost:{srv.port}{path}", "-o", out]


@timeout(120)
def test_exec_chain(env):
    """The library follows exec: a shell started under capture runs curl twice
    (fork+exec, then exec); both curl processes are mirrored byte-exact."""
    body = gen_bytes(200000, 111)
    with open(env.path("body.bin"), "wb") as f:
        f.write(body)
    srv = RecServer(env, body=env.path("body.bin"))
    agent = Agent(env).start()
    a1 = " ".join(curl_args(srv, "/body", env.path("one.bin")))
    a2 = " ".join(curl_args(srv, "/body", env.path("two.bin")))
    p = env.captured("sh", agent.sock, ["/bin/sh", "-c", f"{a1} && exec {a2}"])
    rc = p.wait(60)
    check(rc == 0 and p.err() == b"", f"sh -c 'curl && exec curl' exited {rc}: {short(p.err())}")
    for name in ("one.bin", "two.bin"):
        with open(env.path(name), "rb") as f:
            assert_bytes(f"curl output {name}", body, f.read())
    conns = srv.conns(2)
    procs, total = agent.final_stats()
    curls = [q for q in procs if q.get("comm") == "curl"]
    check(len(curls) == 2, f"want 2 curl processes in the agent's stats, got {procs}")
    cap = judge(agent.pcap)
    check_against_server(cap, conns)
    check(stat_int(total, "dropped_bytes") == 0, f"drops: {total}")


@timeout(240)
def test_installed_tree(env):
    """`make install PREFIX=DIR` gives bin/tlsmirror, lib/tlsmirror/libtlsmirror.so and the
    man page; the installed `tlsmirror run` finds its library and mirrors curl."""
    prefix = env.path("prefix")
    build = os.environ.get("BUILD", "build")
    had_group = subprocess.run(["getent", "group", "tlsmirror"], capture_output=True).returncode == 0
    try:
        r = subprocess.run(["make", "-s", f"BUILD={build}", "install", f"PREFIX={prefix}"],
                           cwd=ROOT, capture_output=True, timeout=200)
        has_group = subprocess.run(["getent", "group", "tlsmirror"], capture_output=True).returncode == 0
    finally:
        if not had_group:
            subprocess.run(["groupdel", "tlsmirror"], capture_output=True)
    check(r.returncode == 0, f"make install failed: {short(r.stderr, 800)}")
    check(has_group, f"make install (as root) did not create group tlsmirror: {short(r.stdout)}")
    for rel in ("bin/tlsmirror", "lib/tlsmirror/libtlsmirror.so",
                "share/man/man1/tlsmirror.1"):
        check(os.path.exists(os.path.join(prefix, rel)), f"make install did not install {rel}")
    r = subprocess.run(["man", "-l", os.path.join(prefix, "share/man/man1/tlsmirror.1")],
                       capture_output=True, timeout=30, env=dict(os.environ, MANPAGER="cat",
                                                                 PAGER="cat"))
    check(r.returncode == 0 and b"tlsmirror" in r.stdout,
          f"installed man page does not render: {short(r.stderr)}")
    body = gen_bytes(50000, 112)
    with open(env.path("body.bin"), "wb") as f:
        f.write(body)
    srv = RecServer(env, body=env.path("body.bin"))
    binary = os.path.join(prefix, "bin/tlsmirror")
    sock = env.path("inst.sock")
    pcap = env.path("inst.pcap")
    ag = env.spawn("agent", [binary, "--socket", sock, "-w", pcap])
    deadline = time.time() + 10
    while not os.path.exists(sock) and time.time() < deadline:
        time.sleep(0.05)
    check(os.path.exists(sock), f"installed agent did not listen: {short(ag.err())}")
    p = env.spawn("curl", [binary, "run", "--socket", sock, "--"] +
                  curl_args(srv, "/body", env.path("got.bin")))
    rc = p.wait(60)
    check(rc == 0 and p.err() == b"", f"installed `tlsmirror run -- curl` exited {rc}: "
          f"{short(p.err())}")
    conns = srv.conns(1)
    ag.signal(15)
    check(ag.wait(15) == 0, f"installed agent exit: {short(ag.err())}")
    cap = judge(pcap)
    check_against_server(cap, conns)


@timeout(120)
def test_rotate_size(env):
    """--rotate-size: several files, each a valid pcap tshark reads without complaint, none
    beyond the size, and together they hold every byte of the transfer."""
    body = gen_bytes(3 << 20, 113)
    with open(env.path("body.bin"), "wb") as f:
        f.write(body)
    srv = RecServer(env, body=env.path("body.bin"))
    agent = Agent(env, args=["--rotate-size", "512K"]).start()
    p = env.captured("curl", agent.sock, curl_args(srv, "/body", env.path("got.bin")))
    rc = p.wait(60)
    check(rc == 0, f"curl exited {rc}: {short(p.err())}")
    conns = srv.conns(1)
    procs, total = agent.final_stats()
    files = [agent.pcap] + sorted(glob.glob(agent.pcap + ".*"),
                                  key=lambda s: int(s.rsplit(".", 1)[1]))
    check(len(files) >= 6, f"3 MiB at --rotate-size 512K gave only {len(files)} files")
    payload = 0
    for f in files:
        size = os.path.getsize(f)
        check(size <= 512 * 1024, f"{f} is {size} bytes, beyond --rotate-size 512K")
        rows = tshark_fields(f, ["tcp.len"])
        payload += sum(int(r[0] or 0) for r in rows)
    want = len(conns[0].c2s) + len(conns[0].s2c)
    check(payload == want, f"rotated files hold {payload} payload bytes, the connection "
          f"carried {want}")
    check(stat_int(total, "dropped_bytes") == 0, f"drops: {total}")


@timeout(60)
def test_broken_pipe_stops_agent(env):
    """`tlsmirror -w - | head -c 100`: once head has gone, the agent stops by itself (exit 0,
    a clear log line), as tcpdump does, and the mirrored program never notices."""
    body = gen_bytes(100000, 114)
    with open(env.path("body.bin"), "wb") as f:
        f.write(body)
    srv = RecServer(env, body=env.path("body.bin"))
    sock = env.path("pipe.sock")
    ag = env.spawn("agent", ["/bin/sh", "-c", f"'{TLSMIRROR}' --socket '{sock}' -w - | head -c 100"
                             " > /dev/null"])
    deadline = time.time() + 10
    while not os.path.exists(sock) and time.time() < deadline:
        time.sleep(0.05)
    check(os.path.exists(sock), f"agent did not listen: {short(ag.err())}")
    p = env.captured("curl", sock, curl_args(srv, "/body", env.path("got.bin")))
    rc = p.wait(60)
    check(rc == 0 and p.err() == b"", f"curl under capture exited {rc}: {short(p.err())}")
    with open(env.path("got.bin"), "rb") as f:
        assert_bytes("curl's output", body, f.read())
    rc = ag.wait(15)
    check(rc == 0, f"agent pipeline exited {rc}")
    check(b"broken pipe" in ag.err(), f"agent did not say why it stopped: {short(ag.err())}")
    check(not os.path.exists(sock), "the agent left its socket behind")


@timeout(90)
def test_both_ends_short_connections_once(env):
    """Server (openssl s_server -WWW) and client (curl) both under capture, short
    connections: the agent may drain one end's whole connection before it reads the
    other end's OPEN; every connection must still appear exactly once."""
    c = certs()
    openssl = need_tool("openssl")
    from tmlib import free_port, wait_until
    port = free_port()
    www = env.path("www")
    os.mkdir(www)
    page = gen_bytes(3000, 115)
    with open(os.path.join(www, "page.bin"), "wb") as f:
        f.write(page)
    agent = Agent(env).start()
    srv = env.captured("s_server", agent.sock,
                       [openssl, "s_server", "-quiet", "-accept", f"127.0.0.1:{port}",
                        "-cert", c["cert"], "-key", c["key"], "-WWW"], cwd=www)
    from tmlib import wait_listening
    wait_listening(port, proc=srv)
    n = 6
    for i in range(n):
        p = env.captured(f"curl-{i}", agent.sock,
                         [need_tool("curl"), "-sS", "-k", f"https://127.0.0.1:{port}/page.bin",
                          "-o", env.path(f"got-{i}.bin")])
        rc = p.wait(30)
        check(rc == 0, f"curl {i} exited {rc}: {short(p.err())}")
        with open(env.path(f"got-{i}.bin"), "rb") as f:
            assert_bytes(f"curl {i} output", page, f.read())
    time.sleep(0.3)
    procs, total = agent.final_stats()
    cap = judge(agent.pcap)
    syns = cap.syn_streams()
    check(len(syns) == n, f"{n} connections, each mirrored from both ends, should appear "
          f"{n} times; the pcap has {len(syns)} connections: {cap.describe(8)}")
    check(stat_int(total, "duplicate_conns") == n, f"duplicate_conns: {total}")
    for st in syns:
        check(st.bytes(1).endswith(page), f"{st.name()}: the response does not end with the page")
