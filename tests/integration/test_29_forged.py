# Integration test 29: a producer's forged record timestamps and pre-announced tuples.
import os
import re
import subprocess
import time

from test_26_ops import stats_json
from tmlib import (BUILD, Agent, check, need_build, read_capture, short, stat_int, timeout)

RINGGEN = os.path.join(BUILD, "ringgen")


def ringgen_run(env, sock, name, *args):
    need_build(RINGGEN)
    p = env.spawn(name, [RINGGEN, "--socket", sock] + list(args), stdin=subprocess.DEVNULL)
    rc = p.wait(60)
    check(rc == 0, f"ringgen {' '.join(args)}: exit {rc}: {short(p.err())}")
    return p


@timeout(120)
def test_forged_timestamps_are_clamped(env):
    """Two producers forge their clocks, 3 days behind and 1 day ahead: 6 records each
    (OPEN, DATA, CLOSE of 2 connections). Every packet's timestamp stays within 1 h before
    and 2 s after the agent's clock, each record is counted (clamped_ts), once logged."""
    agent = Agent(env, args=["--rotate-count", "5", "--rotate-seconds", "3600"]).start()
    t0 = time.time()
    ringgen_run(env, agent.sock, "past", "--conns", "2", "--bytes", "2000", "--chunk", "1000",
                "--dir", "c2s", "--ts-offset", str(-3 * 86400), "--port-base", "41000")
    ringgen_run(env, agent.sock, "future", "--conns", "2", "--bytes", "2000", "--chunk", "1000",
                "--dir", "c2s", "--ts-offset", str(86400), "--port-base", "42000")
    time.sleep(0.3)
    procs, total, raw = agent.stats()
    check(stat_int(total, "clamped_ts") == 12, f"stats total clamped_ts, want 12 (6 records of "
          f"each producer): {raw}")
    for p in procs:
        check(stat_int(p, "clamped_ts") == 6, f"a producer's clamped_ts, want 6: {p}")
    js, _ = stats_json(agent)
    check(js.get(("tlsmirror_agent_clamped_ts_total", frozenset())) == 12,
          f"stats --json lacks tlsmirror_agent_clamped_ts_total 12: "
          f"{[k for k in js if 'clamped' in k[0]]}")
    procs, total = agent.final_stats()
    t1 = time.time()
    cap = read_capture(agent.pcap)
    check(len(cap.segs) >= 4 * 5, f"only {len(cap.segs)} packets: {cap.describe()}")
    lo, hi = (t0 - 3600 - 2) * 1e9, (t1 + 2 + 1) * 1e9
    bad = [s.frame for s in cap.segs if not lo <= s.ts <= hi]
    check(not bad, f"frames {bad[:10]} have timestamps outside 1 h before .. 2 s after the "
          f"agent's clock: {cap.describe()}")
    log = agent.stderr_text
    check(log.count("counted as clamped_ts") == 2, f"want one warning per producer: {short(log, 800)}")


@timeout(180)
def test_preannounced_tuples_do_not_hide_connections(env):
    """A producer pre-announces 2000 4-tuples (127.0.0.1:40000-41999 -> the server, OPEN
    only, never used); then curl makes 3 requests from ports in that range: every request
    is in the capture, byte-exact; the announcements give way (evicted)."""
    from test_23_caps import wait_holding
    from tmlib import RecServer, certs, check_stream, need_tool, TLSMIRROR
    c = certs()
    srv = RecServer(env)
    agent = Agent(env).start()
    hostile = env.spawn("hostile", [RINGGEN, "--socket", agent.sock, "--hold", "--conns", "2000",
                                    "--bytes", "0", "--port-base", "40000", "--server-port",
                                    str(srv.port), "--ring-size", "1M"], stdin=subprocess.PIPE)
    wait_holding(hostile, "the hostile producer")
    time.sleep(2.5)  # its announcements are old by now
    for i in range(3):
        rc, out, err = env.run(f"curl{i}", [TLSMIRROR, "run", "--socket", agent.sock, "--",
                                            need_tool("curl"), "-sS", "--local-port",
                                            # a range each: a port reused at once would be one
                                            # tshark stream of two connections
                                            f"{40000 + 600 * i}-{40599 + 600 * i}",
                                            "--cacert", c["cert"], "--resolve",
                                            f"localhost:{srv.port}:127.0.0.1",
                                            f"https://localhost:{srv.port}/size/{1000 + i}",
                                            "-o", "/dev/null"])
        check(rc == 0, f"curl {i}: exit {rc}: {short(err)}")
    conns = srv.conns(3)
    time.sleep(0.5)
    procs, total, raw = agent.stats()
    curls = [p for p in procs if p.get("comm") == "curl"]
    check(len(curls) == 3 and all(stat_int(p, "duplicate_conns") == 0 for p in curls),
          f"curl's connections counted as duplicates of another producer's: {raw}")
    ports = len({cn.peer_port for cn in conns})  # curl may reuse a port of the range
    check(re.search(rf"\bevicted={ports}\b", raw), f"want {ports} unused announcements evicted "
          f"(dedup stage), one per port curl used: {raw}")
    hostile.popen.stdin.close()
    hostile.wait(30)
    agent.final_stats()
    cap = read_capture(agent.pcap)
    for cn in conns:
        check(40000 <= cn.peer_port <= 41999, f"curl used port {cn.peer_port}, outside the range")
        streams = [st for st in cap.streams if st.client[1] == cn.peer_port and st.bytes(0)]
        check(len(streams) == 1, f"curl's connection from port {cn.peer_port} is hidden "
              f"({len(streams)} streams with its clear text): {cap.describe(6)}\n{raw}")
        check_stream(streams[0], c2s=cn.c2s, s2c=cn.s2c)


def dedup_row(raw):
    row = next((ln for ln in raw.splitlines() if ln.startswith("stage name=dedup")), "")
    return dict(kv.split("=", 1) for kv in row.split()[1:] if "=" in kv)


@timeout(120)
def test_unused_announcements_expire(env):
    """A producer announces 50 4-tuples and never uses them: 10 s later the dedup stage has
    forgotten every one (expired=50, tracked=0), so they can mark nothing a duplicate; the
    connections stay open (nothing their producer sends later would be lost)."""
    agent = Agent(env).start()
    from test_23_caps import wait_holding
    hostile = env.spawn("hostile", [RINGGEN, "--socket", agent.sock, "--hold", "--conns", "50",
                                    "--bytes", "0", "--port-base", "43000", "--ring-size", "1M"],
                        stdin=subprocess.PIPE)
    wait_holding(hostile, "the hostile producer")
    time.sleep(0.5)
    _, _, raw = agent.stats()
    d = dedup_row(raw)
    check(d.get("tracked") == "50" and d.get("expired") == "0",
          f"want 50 announcements tracked, none expired yet: {raw}")
    deadline = time.time() + 15
    while time.time() < deadline:
        _, _, raw = agent.stats()
        d = dedup_row(raw)
        if d.get("expired") == "50":
            break
        time.sleep(0.5)
    check(d.get("expired") == "50" and d.get("tracked") == "0",
          f"want the 50 unused announcements expired after 10 s: {raw}")
    procs, total, raw = agent.stats()
    check(any(stat_int(p, "open") == 50 for p in procs),
          f"the producer's 50 connections should stay open: {raw}")
    hostile.popen.stdin.close()
    hostile.wait(30)
    agent.final_stats()


@timeout(180)
def test_announce_and_close_does_not_hide(env):
    """A producer announces 200 4-tuples (127.0.0.1:44000-44199 -> the server) and closes
    them at once, unused; 1.5 s later curl makes 3 requests from ports in that range (within
    the 10 s in which a recently ended connection's other end is still recognised): every
    request is in the capture, byte-exact, none counted as a duplicate."""
    from tmlib import RecServer, certs, check_stream, need_tool, TLSMIRROR
    c = certs()
    srv = RecServer(env)
    agent = Agent(env).start()
    ringgen_run(env, agent.sock, "hostile", "--conns", "200", "--bytes", "0", "--port-base",
                "44000", "--server-port", str(srv.port), "--ring-size", "1M")
    time.sleep(1.5)
    for i in range(3):
        rc, out, err = env.run(f"curl{i}", [TLSMIRROR, "run", "--socket", agent.sock, "--",
                                            need_tool("curl"), "-sS", "--local-port",
                                            f"{44000 + 60 * i}-{44059 + 60 * i}",
                                            "--cacert", c["cert"], "--resolve",
                                            f"localhost:{srv.port}:127.0.0.1",
                                            f"https://localhost:{srv.port}/size/{2000 + i}",
                                            "-o", "/dev/null"])
        check(rc == 0, f"curl {i}: exit {rc}: {short(err)}")
    conns = srv.conns(3)
    time.sleep(0.5)
    procs, total, raw = agent.stats()
    curls = [p for p in procs if p.get("comm") == "curl"]
    check(len(curls) == 3 and all(stat_int(p, "duplicate_conns") == 0 for p in curls),
          f"curl's connections counted as duplicates of closed announcements: {raw}")
    agent.final_stats()
    cap = read_capture(agent.pcap)
    for cn in conns:
        check(44000 <= cn.peer_port <= 44199, f"curl used port {cn.peer_port}, outside the range")
        streams = [st for st in cap.streams if st.client[1] == cn.peer_port and st.bytes(0)]
        check(len(streams) == 1, f"curl's connection from port {cn.peer_port} is hidden "
              f"({len(streams)} streams with its clear text): {cap.describe(6)}\n{raw}")
        check_stream(streams[0], c2s=cn.c2s, s2c=cn.s2c)
