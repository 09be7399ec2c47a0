# Integration tests 10-13: live stdout, SIGTERM/SIGINT and stats, bad command lines, sequence gap on a full ring.
import os
import signal
import subprocess
import threading
import time

from tmlib import (HELPERS, PYTHON, TLSMIRROR, Agent, RecServer, assert_bytes, certs, check,
                   check_against_server, judge, need_build, need_tool, pcap_complete_prefix,
                   proc_stats, short, stat_int, timeout, wait_until, gen_bytes)


def curl_get(env, sock, srv, path, out, ring=None):
    c = certs()
    return env.captured("curl", sock, [need_tool("curl"), "-sS", "--cacert", c["cert"],
                                       "--resolve", f"localhost:{srv.port}:127.0.0.1",
                                       f"https://localhost:{srv.port}{path}", "-o", out], ring=ring)


@timeout(90)
def test_live_stdout(env):
    srv = RecServer(env)
    live = env.path("live.pcap")
    agent = Agent(env, pcap="-", args=["--mss", "1000"])
    agent.start(stdout=subprocess.PIPE)
    sink = open(live, "wb")

    def pump():
        while True:
            d = agent.proc.popen.stdout.read1(65536)
            if not d:
                break
            sink.write(d)
            sink.flush()
    th = threading.Thread(target=pump, daemon=True)
    th.start()
    p = curl_get(env, agent.sock, srv, "/size/200000", env.path("got.bin"))
    rc = p.wait(30)
    check(rc == 0 and p.err() == b"", f"curl exited {rc}: {short(p.err())}")
    conn = srv.conns(1)[0]
    snap = env.path("snapshot.pcap")

    def conversation_visible():
        with open(live, "rb") as f:
            data = f.read()
        with open(snap, "wb") as f:
            f.write(data[:pcap_complete_prefix(data)])
        try:
            cap = judge(snap, mss=1000)
            st = cap.one(client_port=conn.peer_port)
            return st.direction(0)["fin"] is not None and st.direction(1)["fin"] is not None
        except AssertionError:
            return False
    wait_until(conversation_visible, 5, "the finished conversation to appear complete on the "
               "agent's stdout while it is still running", interval=0.5)
    check(agent.proc.alive(), "agent exited")
    cap = judge(snap, mss=1000)
    check_against_server(cap, [conn])
    st = cap.one(client_port=conn.peer_port)
    sizes = [len(s.payload) for s in st.segs if s.payload]
    check(max(sizes) == 1000, f"--mss 1000: largest segment {max(sizes)} bytes, want 1000")
    # tshark reading the live stream itself
    r = subprocess.run(["tshark", "-n", "-r", "-", "-T", "fields", "-e", "tcp.srcport"],
                       input=open(snap, "rb").read(), capture_output=True, timeout=60)
    check(r.returncode == 0 and str(conn.peer_port).encode() in r.stdout,
          f"`tshark -r -` on the live stream: exit {r.returncode}, {short(r.stderr)}")
    procs, total = agent.final_stats()
    th.join(10)
    sink.close()
    cap = judge(live, mss=1000)
    check_against_server(cap, [conn])


@timeout(90)
def test_sigterm_and_stats(env):
    c = certs()
    srv = RecServer(env, mode="echo")
    agent = Agent(env).start()
    hold = env.captured("hold", agent.sock, [PYTHON, os.path.join(HELPERS, "pyprogs.py"), "hold",
                                             "--port", str(srv.port), "--cert", c["cert"]],
                        stdin=subprocess.PIPE)
    wait_until(lambda: b"HELD" in hold.out() or not hold.alive(), 20, "client HELD")
    check(hold.alive(), f"client exited: {short(hold.err())}")
    port = int(hold.out().split()[1])

    want_c2s, want_s2c = 5000 + len("LEN 5000\n"), 5000 + len("ECHO 5000\n")

    def attached():
        # the agent drains rings asynchronously: wait until it has seen every byte
        procs, total, raw = agent.stats()
        ps = proc_stats(procs, hold.pid)
        done = ps and ps.get("conns") == "1" and ps.get("c2s_bytes") == str(want_c2s) and \
            ps.get("s2c_bytes") == str(want_s2c)
        return (ps, total, raw) if done else None
    ps, total, raw = wait_until(attached, 10, f"`tlsmirror stats` to show pid {hold.pid} "
                                f"with its connection and {want_c2s}/{want_s2c} bytes")
    check(ps.get("state") == "attached" and stat_int(ps, "open") == 1,
          f"stats line for the client: want state=attached open=1: {ps}")
    check(stat_int(ps, "c2s_bytes") == want_c2s and stat_int(ps, "s2c_bytes") == want_s2c,
          f"stats bytes for the first exchange: {ps}")
    check(stat_int(total, "processes") >= 1, f"total line: {total}")
    # SIGTERM while the connection is still open: valid pcap, flow closed, stats on stderr
    procs, total = agent.stop(signal.SIGTERM)
    check(total is not None and proc_stats(procs, hold.pid) is not None,
          f"agent stderr at exit lacks stats for pid {hold.pid}: {short(agent.stderr_text, 800)}")
    cap = judge(agent.pcap)
    st = cap.one(client_port=port)
    sent = b"LEN 5000\n" + gen_bytes(5000, 7)
    check_stream(st, c2s=sent, s2c=b"ECHO 5000\n" + gen_bytes(5000, 7)[::-1])
    # the client goes on without an agent
    hold.popen.stdin.write(b"go\n")
    hold.popen.stdin.close()
    rc = hold.wait(20)
    check(rc == 0 and hold.err() == b"", f"client after the agent's SIGTERM: exit {rc}, "
          f"stderr {short(hold.err())!r}")
    # SIGINT on an idle agent: exit 0, a valid empty capture
    a2 = Agent(env, name="agent2").start()
    procs, total = a2.stop(signal.SIGINT)
    check(total is not None, f"no stats on SIGINT: {short(a2.stderr_text)}")
    cap = judge(a2.pcap)
    check(not cap.segs, f"idle agent wrote {len(cap.segs)} packets")


def check_stream(st, c2s, s2c):
    assert_bytes(f"{st.name()} c2s", c2s, st.bytes(0))
    assert_bytes(f"{st.name()} s2c", s2c, st.bytes(1))


BAD = [
    (["--no-such-option", "-w", "OUT"], ["no-such-option"]),
    ([], ["-w"]),
    (["--socket", "SOCK"], ["-w"]),
    (["-w"], ["-w"]),
    (["--mss", "abc", "-w", "OUT"], ["mss", "abc"]),
    (["--mss", "0", "-w", "OUT"], ["mss"]),
    (["--mss", "70000", "-w", "OUT"], ["mss"]),
    (["--mss", "-5", "-w", "OUT"], ["mss"]),
    (["--mss", "-w", "OUT"], ["mss"]),
    (["-w", "/nonexistent-dir/x.pcap"], ["/nonexistent-dir/x.pcap"]),
    (["stats", "--socket", "NOSOCK"], ["NOSOCK"]),
    (["run", "--socket", "SOCK"], []),
    (["run", "--socket", "SOCK", "--"], []),
    # arguments say what they mean (issue 15 item 8): no port taken modulo 65536, no
    # silent random port, no second -w replacing the first, no kernel file, no '%' name
    (["--vxlan", "127.0.0.1:99999", "-w", "OUT"], ["--vxlan", "99999"]),
    (["--vxlan", "127.0.0.1:0", "-w", "OUT"], ["--vxlan", "127.0.0.1:0"]),
    (["--pcap-over-ip", "99999", "-w", "OUT"], ["--pcap-over-ip", "99999"]),
    (["--pcap-over-ip", "0", "-w", "OUT"], ["--pcap-over-ip", "'0'"]),
    (["--pcap-over-ip", "127.0.0.1:0", "-w", "OUT"], ["--pcap-over-ip", "127.0.0.1:0"]),
    (["-t", "127.0.0.1:70000", "--insecure-plaintext-tunnel", "-w", "OUT"], ["-t", "70000"]),
    (["-C", "-l", "127.0.0.1:99999", "-w", "OUT"], ["-l", "99999"]),
    (["-w", "OUT", "-w", "OUT2"], ["-w", "twice"]),
    (["--pcapng", "OUT", "--pcapng", "OUT2"], ["--pcapng", "twice"]),
    (["-w", "OUT", "--pcapng", "OUT"], ["-w", "--pcapng"]),
    (["-w", "/proc/version"], ["-w", "/proc/version"]),
    (["-w", "%"], ["-w", "'%'"]),
    (["-w", "cap-%"], ["-w", "cap-%"]),
    (["-w", "DIR"], ["-w", "directory"]),
    (["pki", "issue", "PKI", "n1", "--agent", "--collector"], ["--agent", "--collector"]),
]


@timeout(90)
def test_bad_command_lines(env):
    need_build(TLSMIRROR)
    problems = []
    for args, must in BAD:
        subst = {"OUT": env.path("bad.pcap"), "OUT2": env.path("bad2.pcap"),
                 "SOCK": env.path("bad.sock"), "NOSOCK": env.path("no-agent.sock"),
                 "PKI": env.path("pki"), "DIR": env.dir}
        argv = [subst.get(a, a) for a in args]
        before = set(os.listdir(env.dir))
        shown = " ".join(["tlsmirror"] + args)
        p = env.spawn("bad", [TLSMIRROR] + argv)
        try:
            rc = p.popen.wait(timeout=5)
        except subprocess.TimeoutExpired:
            problems.append(f"`{shown}` still running after 5 s (accepted the command line?)")
            p.kill_group()
            continue
        err = p.err().decode("utf-8", "replace")
        if rc == 0:
            problems.append(f"`{shown}` exited 0; stderr {short(err)!r}")
        if not err.strip():
            problems.append(f"`{shown}` exited {rc} without a message on stderr")
        if p.out():
            problems.append(f"`{shown}` wrote to stdout: {short(p.out())!r}")
        for m in must:
            m = subst.get(m, m)
            if m not in err:
                problems.append(f"`{shown}`: message does not name {m!r}: {short(err)!r}")
        made = [f for f in set(os.listdir(env.dir)) - before
                if not f.endswith((".out", ".err"))]
        if made:
            problems.append(f"`{shown}` created {made}")
        if len(err.strip().splitlines()) > 30:
            problems.append(f"`{shown}`: {len(err.splitlines())} lines of stderr, want a short error")
    check(not problems, "bad command lines:\n  " + "\n  ".join(problems))


def run_gap(env, resume_after):
    """Ring of 64K, agent SIGSTOPped while curl downloads 4 MiB; SIGCONT after the download
    (resume_after None) or resume_after seconds into a ~1.5 s download."""
    size = 4 << 20
    body = gen_bytes(size, size)
    with open(env.path("body.bin"), "wb") as f:
        f.write(body)
    srv = RecServer(env, body=env.path("body.bin"), rate=(3 << 20) if resume_after else 0)
    agent = Agent(env).start()
    agent.proc.signal(signal.SIGSTOP)
    try:
        p = curl_get(env, agent.sock, srv, "/body", env.path("got.bin"), ring="64K")
        if resume_after:
            time.sleep(resume_after)
            agent.proc.signal(signal.SIGCONT)
        rc = p.wait(60)
        check(rc == 0 and p.err() == b"", f"curl with a stopped agent and a 64K ring: exit {rc}, "
              f"stderr {short(p.err())!r}")
    finally:
        agent.proc.signal(signal.SIGCONT)
    with open(env.path("got.bin"), "rb") as f:
        assert_bytes("downloaded file", body, f.read())
    conn = srv.conns(1)[0]
    time.sleep(1)
    procs, total = agent.final_stats()
    ps = proc_stats(procs, p.pid)
    check(ps is not None, f"no exit stats for curl pid {p.pid}: {short(agent.stderr_text, 800)}")
    dropped = stat_int(total, "dropped_bytes")
    check(dropped > 0, f"a 64K ring and a stopped agent while 4 MiB flowed: stats show no "
          f"dropped bytes: {total}")
    cap = judge(agent.pcap, allow_gaps=True,
                allow_analysis=("Previous segment(s) not captured", "ACKed segment that wasn't captured"))
    st = cap.one(client_port=conn.peer_port)
    gaps = st.gap_total()
    # whatever was mirrored is exact and at its true offset
    for d, real in ((0, conn.c2s), (1, conn.s2c)):
        r = st.direction(d)
        for off, chunk in r["chunks"]:
            check(real[off:off + len(chunk)] == chunk, f"{st.name()}: mirrored bytes at offset "
                  f"{off} ({len(chunk)} bytes) differ from the real stream")
    check(gaps == dropped, f"pcap sequence gaps total {gaps} bytes "
          f"(c2s {st.direction(0)['gaps'][:3]}, s2c {st.direction(1)['gaps'][:3]}), stats "
          f"dropped_bytes={dropped}; s2c mirrored {len(st.direction(1)['data'])} of "
          f"{len(conn.s2c)} bytes, FIN at s2c offset {st.direction(1)['fin']}")
    check(stat_int(total, "gap_bytes") == gaps, f"stats gap_bytes={total.get('gap_bytes')}, "
          f"pcap gaps {gaps}")
    for d, real in ((0, conn.c2s), (1, conn.s2c)):
        r = st.direction(d)
        check(r["end"] == len(real), f"{st.name()} {'c2s' if d == 0 else 's2c'} ends at "
              f"offset {r['end']} (data + gaps), the real stream has {len(real)} bytes")
    if resume_after:
        after = [off for off, chunk in st.direction(1)["chunks"]
                 if st.direction(1)["gaps"] and off > st.direction(1)["gaps"][0][0]]
        check(after, f"agent resumed mid-transfer but no data after the first gap was mirrored")


@timeout(120)
def test_sequence_gap_at_end(env):
    run_gap(env, None)


@timeout(120)
def test_sequence_gap_mid_stream(env):
    run_gap(env, 0.5)
