# Integration test 23: a hostile producer opening millions of never-closed connections stays under the documented memory bound; caps on processes and ring size.
import os
import re
import socket
import subprocess

from tmlib import (BUILD, SANITIZED, TLSMIRROR, Agent, RecServer, certs, check, check_against_server, free_port,
                   judge, need_build, need_tool, proc_stats, short, stat_int,
                   timeout, wait_until)

RINGGEN = os.path.join(BUILD, "ringgen")

# The options of the test and the bound docs/agent.md ("Memory") states for them.
MAX_CONNS, PER_PROC, MAX_PROCS, MAX_RING = 5000, 2000, 3, 4 << 20
HOSTILE_OPENS = 2000000
CHUNK = 16
FIXED = 16 << 20          # the agent's fixed part (program, libraries, stacks, buffers)
PER_FLOW = 1024           # bytes per open connection: flow, owner entry, metadata, tag (docs/agent.md)
PER_PROC_STATE = 1024     # struct proc, its origin, its log label: < 1 KiB


def bound(procs_mapped):
    """docs/agent.md: fixed + flows + per attached process (its mapped ring)."""
    return FIXED + MAX_CONNS * PER_FLOW + procs_mapped * (MAX_RING + 4096 + PER_PROC_STATE)


def status_kib(pid, key):
    with open(f"/proc/{pid}/status") as f:
        m = re.search(rf"^{key}:\s+(\d+) kB", f.read(), re.M)
    check(m, f"/proc/{pid}/status has no {key}")
    return int(m.group(1))


def ringgen(env, sock, name, *args):
    need_build(RINGGEN)
    return env.spawn(name, [RINGGEN, "--socket", sock] + list(args), stdin=subprocess.PIPE)


def wait_holding(p, what):
    def holding():
        if b"holding" in p.out():
            return True
        check(p.alive(), f"{what} exited {p.popen.returncode}: {short(p.err())}")
        return False
    wait_until(holding, 40, f"{what} to have written every record and be holding")


def curl_under_capture(env, agent, srv, path, ring=None):
    """curl of https://localhost:PORT/PATH under `tlsmirror run`; returns the server's log of it."""
    c = certs()
    curl = env.captured("curl", agent.sock, [need_tool("curl"), "-sS", "--cacert", c["cert"],
                                             "--resolve", f"localhost:{srv.port}:127.0.0.1",
                                             f"https://localhost:{srv.port}{path}",
                                             "-o", env.path("got.bin")], ring=ring)
    rc = curl.wait(30)
    check(rc == 0, f"curl exited {rc}: {short(curl.err())}")
    return curl, srv.conns(1)[0]


@timeout(120)
def test_hostile_producer_stays_under_memory_bound(env):
    srv = RecServer(env)
    agent = Agent(env, args=["--max-conns", str(MAX_CONNS), "--max-conns-per-proc", str(PER_PROC),
                             "--max-procs", str(MAX_PROCS), "--max-ring-size", "4M"])
    agent.start()
    pid = agent.proc.popen.pid
    # 2 million connections, never closed, 16 bytes of clear text each
    hostile = ringgen(env, agent.sock, "hostile", "--hold", "--conns", str(HOSTILE_OPENS),
                      "--bytes", str(HOSTILE_OPENS * CHUNK), "--chunk", str(CHUNK),
                      "--dir", "c2s", "--ring-size", "1M")
    wait_holding(hostile, "the hostile producer")
    # a good producer meanwhile: curl under the capture library, byte-exact
    curl, conn = curl_under_capture(env, agent, srv, "/size/300000", ring="1M")
    procs, total, raw = agent.stats()
    hwm = status_kib(pid, "VmHWM") * 1024
    limit = bound(2)
    # ASan's shadow memory and free quarantine are in the RSS: the bound is the
    # agent's own, judged on a normal build
    check(SANITIZED or hwm < limit, f"agent peak RSS {hwm >> 10} KiB, over the documented bound "
          f"{limit >> 10} KiB for --max-conns {MAX_CONNS} and 2 rings of at most 4M")
    h = proc_stats(procs, hostile.popen.pid)
    check(h is not None, f"no stats line for the hostile producer: {raw}")
    refused = HOSTILE_OPENS - PER_PROC
    check(stat_int(h, "open") == PER_PROC, f"hostile producer: open={h.get('open')}, "
          f"expected the cap {PER_PROC}")
    check(stat_int(h, "refused_conns") == refused, f"hostile refused_conns="
          f"{h.get('refused_conns')}, expected {refused}")
    check(stat_int(h, "orphan_bytes") == refused * CHUNK, f"hostile orphan_bytes="
          f"{h.get('orphan_bytes')}, expected {refused * CHUNK}: the refused connections' data")
    check(stat_int(total, "refused_conns") == refused, f"total refused_conns wrong: {raw}")
    good = proc_stats(procs, curl.popen.pid)
    check(good is not None and stat_int(good, "refused_conns") == 0 and
          stat_int(good, "conns") == 1, f"curl's stats line: {good}")
    # more processes than --max-procs (hostile and its 2 fellows attached), a ring too big
    extra = [ringgen(env, agent.sock, f"extra{i}", "--hold", "--conns", "1", "--bytes", "0",
                     "--ring-size", "1M", "--port-base", str(30000 + i)) for i in range(2)]
    wait_holding(extra[0], "the second producer")
    wait_holding(extra[1], "the third producer")
    over = ringgen(env, agent.sock, "over", "--conns", "1", "--bytes", "100", "--ring-size", "1M")
    check(over.wait(40) != 0, "a producer over --max-procs was mirrored")
    for p in extra:
        p.popen.stdin.close()
        p.wait(10)
    big = ringgen(env, agent.sock, "big", "--conns", "1", "--bytes", "100", "--ring-size", "8M")
    check(big.wait(40) != 0, "a ring over --max-ring-size was mapped")
    _, total, raw = agent.stats()
    check(stat_int(total, "rejected_attach") == 2, f"rejected_attach, expected 2: {raw}")
    hostile.popen.stdin.close()
    hostile.wait(10)
    agent.stop()
    log = agent.stderr_text
    lines = [l for l in log.splitlines() if f"pid {hostile.popen.pid} " in l and "cap " in l]
    check(len(lines) == 1, f"the refusal should be logged once for the process, got "
          f"{len(lines)}: {short(log, 800)}")
    check("--max-procs" in log and "--max-ring-size" in log,
          f"the rejected attaches are not logged with their cause: {short(log, 800)}")
    cap = judge(agent.pcap)
    check_against_server(cap, [conn], exact_count=False)
    check(len(cap.syn_streams()) == PER_PROC + 3, f"capture has {len(cap.syn_streams())} "
          f"connections, expected {PER_PROC} of the hostile producer, curl's and 2 more")


@timeout(90)
def test_silent_control_connections_and_pcap_over_ip_clients_capped(env):
    """300 control connections that never say hello and 40 PCAP-over-IP clients:
    the oldest silent ones are closed (256 kept), clients past 32 are refused,
    both counted; curl is mirrored byte-exact all the same."""
    srv = RecServer(env)
    port = free_port()
    agent = Agent(env, args=["--pcap-over-ip", f"127.0.0.1:{port}"]).start()
    silent = []
    for _ in range(300):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        s.connect(agent.sock)
        silent.append(s)
    readers = [socket.create_connection(("127.0.0.1", port)) for _ in range(40)]

    def refused_readers():
        n = 0
        for r in readers:
            r.settimeout(0.01)
            try:
                n += r.recv(65536, socket.MSG_PEEK) == b""
            except (socket.timeout, BlockingIOError):
                pass
            except OSError:
                n += 1
        return n >= 8
    wait_until(refused_readers, 10, "8 of 40 PCAP-over-IP clients refused (at most 32)")
    _, conn = curl_under_capture(env, agent, srv, "/size/100000")
    procs, total = agent.final_stats()
    dropped = stat_int(total, "pending_dropped")
    check(dropped >= 300 - 256, f"pending_dropped={dropped}, expected at least 44")
    closed = 0
    for s in silent:
        s.settimeout(0.01)
        try:
            closed += s.recv(1) == b""
        except (socket.timeout, BlockingIOError):
            pass
    check(closed >= 44, f"only {closed} of the silent control connections were closed")
    text = agent.stderr_text
    poip = [l for l in text.splitlines() if l.startswith("sink name=pcap-over-ip")]
    check(poip and int(re.search(r"peers_dropped=(\d+)", poip[0]).group(1)) >= 8,
          f"refused PCAP-over-IP clients not counted: {poip}")
    check("client refused" in text, f"refused PCAP-over-IP client not logged: {short(text, 800)}")
    for x in silent + readers:
        x.close()
    check_against_server(judge(agent.pcap), [conn])


@timeout(30)
def test_cap_options_reject_bad_values(env):
    need_build(TLSMIRROR)
    for opt, val, want in [("--max-conns", "0", "a number from 1 to 100000000"),
                           ("--max-conns-per-proc", "x", "a number from 1 to 100000000"),
                           ("--max-procs", "-1", "a number from 1 to 100000000"),
                           ("--max-ring-size", "2G", "a size from 64K to 1G"),
                           ("--max-h2-conns", "", "a number from 1 to 100000000"),
                           ("--max-h2-streams", "1e3", "a number from 1 to 100000000"),
                           ("--max-peers", "0", "a number from 1 to 100000000")]:
        rc, out, err = env.run("bad", [TLSMIRROR, opt, val, "-w", env.path("x.pcap")], 10)
        msg = f"tlsmirror: invalid {opt} '{val}': {want}"
        check(rc == 2 and msg in err.decode(), f"{opt} {val!r}: exit {rc}, stderr "
              f"{short(err)}, want 2 and {msg!r}")
