# Integration test 28: agent restarts (SIGTERM, SIGKILL) under load lose nothing silently; `tlsmirror repair`.
import os
import signal
import subprocess
import time

from tmlib import (HELPERS, PYTHON, TLSMIRROR, Agent, RecServer, certs, check, need_build,
                   need_tool, read_capture, short, stat_int, timeout, tshark_fields)

M32 = 0xFFFFFFFF
SYN = 0x02
CONNS, DURATION = 6, 11.0


def run_restarts(env, sigs):
    """A captured client keeps CONNS connections busy for DURATION s while the agent is
    stopped with each signal of sigs in turn and started again (a new file each time).
    Returns (server connections, [(agent, signal it was stopped with)])."""
    c = certs()
    srv = RecServer(env, mode="echo")
    sock = env.path("agent.sock")
    agents = [Agent(env, name="agent0", sock=sock).start()]
    cl = env.captured("stream", sock, [PYTHON, os.path.join(HELPERS, "pyprogs.py"), "stream",
                                       "--port", str(srv.port), "--cert", c["cert"],
                                       "--conns", str(CONNS), "--duration", str(DURATION)])
    step = DURATION / (len(sigs) + 1)
    stopped = []
    for i, sig in enumerate(sigs):
        time.sleep(step)
        a = agents[-1]
        a.proc.signal(sig)
        rc = a.proc.wait(20)
        check(rc == (0 if sig == signal.SIGTERM else -signal.SIGKILL),
              f"{a.name} after {sig.name}: exit {rc}: {short(a.proc.err())}")
        stopped.append((a, sig))
        time.sleep(0.2)
        agents.append(Agent(env, name=f"agent{i + 1}", sock=sock).start())
    rc = cl.wait(60)
    check(rc == 0 and cl.err() == b"", f"client across {len(sigs)} agent restarts: exit {rc}, "
          f"stderr {short(cl.err())!r}")
    time.sleep(0.3)
    agents[-1].proc.signal(signal.SIGTERM)
    check(agents[-1].proc.wait(20) == 0, f"last agent: {short(agents[-1].proc.err())}")
    stopped.append((agents[-1], signal.SIGTERM))
    return srv.conns(CONNS), stopped


def counted_loss(agent):
    """Bytes an agent stopped with SIGTERM counted as not shown (its exit stats)."""
    from tmlib import parse_stats
    _, total = parse_stats(agent.proc.err())
    check(total is not None, f"{agent.name} printed no exit stats: {short(agent.proc.err())}")
    return sum(stat_int(total, k) for k in ("dropped_bytes", "gap_bytes", "orphan_bytes"))


def merged_account(env, conns, files, srv_port):
    """Places every payload byte of every capture at its stream offset (one ISN per
    connection across all files). Returns {(port, dir): (present, total)}; fails on a
    byte shown twice or shown wrong."""
    segs = {}
    for path in files:
        cap = read_capture(path)
        for st in cap.streams:
            for s in st.segs:
                segs.setdefault(st.client[1], []).append((st.side(s), s))
    out = {}
    for cn in conns:
        mine = segs.get(cn.peer_port, [])
        check(mine, f"connection from port {cn.peer_port} is in no capture")
        for d, want in ((0, cn.c2s), (1, cn.s2c)):
            syns = [s for side, s in mine if side == d and s.flags & SYN]
            check(syns, f"port {cn.peer_port} dir {d}: no SYN in any capture")
            isn = syns[0].seq  # the first agent's: the connection began under it
            pieces = sorted(((s.seq - isn - 1) & M32, s.payload, s.frame) for side, s in mine
                            if side == d and s.payload)
            present, end = 0, 0
            for off, data, frame in pieces:
                check(off >= end, f"port {cn.peer_port} dir {d}: bytes {off}..{off + len(data)} "
                      f"(frame {frame}) shown again (already up to {end}): overlapping sequence "
                      "space across the captures")
                check(want[off:off + len(data)] == data, f"port {cn.peer_port} dir {d}: the "
                      f"{len(data)} bytes at offset {off} (frame {frame}) differ from what the "
                      "application moved")
                present += len(data)
                end = off + len(data)
            out[(cn.peer_port, d)] = (present, len(want))
    merged = env.path("merged.pcap")
    subprocess.run([need_tool("mergecap"), "-F", "pcap", "-w", merged] + files, check=True,
                   timeout=120)
    bad = tshark_fields(merged, ["frame.number", "_ws.expert.message"],
                        display_filter="tcp.analysis.retransmission || "
                        "tcp.analysis.fast_retransmission || tcp.analysis.spurious_retransmission"
                        " || tcp.analysis.out_of_order")
    check(not bad, f"tshark finds {len(bad)} retransmitted or out-of-order segments across the "
          f"merged captures: {bad[:5]}")
    return out


@timeout(240)
def test_sigterm_restarts_account_exactly(env):
    """Stopped with SIGTERM three times under load: bytes in the pcaps + bytes the agents
    counted as lost == bytes the application moved, and no byte is shown twice."""
    need_build(TLSMIRROR)
    conns, stopped = run_restarts(env, [signal.SIGTERM] * 3)
    files = [a.pcap for a, _ in stopped]
    acct = merged_account(env, conns, files, None)
    present = sum(p for p, _ in acct.values())
    total = sum(t for _, t in acct.values())
    lost = sum(counted_loss(a) for a, _ in stopped)
    check(total > 1 << 20, f"only {total} bytes moved: the load is too light")
    check(present + lost == total, f"{present} bytes in the captures + {lost} counted as lost = "
          f"{present + lost}, the application moved {total} "
          f"({total - present - lost} bytes neither shown nor counted)")
    check(lost == 0, f"{lost} bytes lost across SIGTERM restarts (the ring holds them)")


@timeout(240)
def test_sigkill_restarts_no_overlap(env):
    """SIGKILLed twice under load: the next agent repairs nothing of another's file (each has
    its own), `tlsmirror repair` cuts each killed file to its last whole record, and the
    merged captures show every byte at most once and at its right place."""
    need_build(TLSMIRROR)
    conns, stopped = run_restarts(env, [signal.SIGKILL, signal.SIGTERM, signal.SIGKILL])
    for a, sig in stopped:
        if sig == signal.SIGKILL:
            r = subprocess.run([TLSMIRROR, "repair", a.pcap], capture_output=True, timeout=30)
            check(r.returncode == 0, f"tlsmirror repair {a.pcap}: exit {r.returncode}: "
                  f"{short(r.stderr)}")
    files = [a.pcap for a, _ in stopped]
    acct = merged_account(env, conns, files, None)
    present = sum(p for p, _ in acct.values())
    total = sum(t for _, t in acct.values())
    check(present > total * 0.5, f"only {present} of {total} bytes in the captures")
    with open(env.path("accounting"), "w") as f:
        f.write(f"present {present} total {total}\n")


@timeout(180)
def test_repair_cut_files(env):
    """A pcap and a pcapng cut at several offsets (a header, a record's middle, one byte short,
    a record boundary): `tlsmirror repair` keeps a prefix of whole records that tshark and
    capinfos read cleanly, says what it cut, and leaves a whole file alone; no capture: exit 1."""
    c = certs()
    srv = RecServer(env)
    a = Agent(env, args=["--pcapng", env.path("agent.pcapng")]).start()
    rc, out, err = env.run("curl", [TLSMIRROR, "run", "--socket", a.sock, "--", need_tool("curl"),
                                    "-sS", "--cacert", c["cert"], "--resolve",
                                    f"localhost:{srv.port}:127.0.0.1",
                                    f"https://localhost:{srv.port}/size/200000", "-o", "/dev/null"])
    check(rc == 0, f"curl: {rc} {short(err)}")
    a.stop()
    for path in (a.pcap, env.path("agent.pcapng")):
        with open(path, "rb") as f:
            whole = f.read()
        frames = len(tshark_fields(path, ["frame.number"]))
        check(frames > 20, f"{path}: only {frames} frames")
        r = subprocess.run([TLSMIRROR, "repair", path], capture_output=True, timeout=30)
        check(r.returncode == 0 and b"nothing to cut" in r.stdout,
              f"repair of a whole file: {r.returncode} {short(r.stdout + r.stderr)}")
        with open(path, "rb") as f:
            check(f.read() == whole, f"repair changed the whole file {path}")
        cuts = [len(whole) // 3, len(whole) // 2 + 7, len(whole) - 1]
        if path.endswith(".pcapng"):
            # cut inside the section header: nothing whole to keep, nothing touched
            bad = env.path("cut-30.pcapng")
            with open(bad, "wb") as f:
                f.write(whole[:30])
            r = subprocess.run([TLSMIRROR, "repair", bad], capture_output=True, timeout=30)
            check(r.returncode == 1 and b"no whole pcapng section header" in r.stderr,
                  f"repair of a pcapng cut in its header: {r.returncode} "
                  f"{short(r.stdout + r.stderr)}")
        else:
            cuts.insert(0, 30)  # the file header and 6 bytes of the first record
        for cut in cuts:
            bad = env.path(f"cut-{cut}-" + os.path.basename(path))
            with open(bad, "wb") as f:
                f.write(whole[:cut])
            r = subprocess.run([TLSMIRROR, "repair", bad], capture_output=True, timeout=30)
            check(r.returncode == 0 and b"cut the last" in r.stdout,
                  f"repair {bad} (cut at {cut} of {len(whole)}): exit {r.returncode}: "
                  f"{short(r.stdout + r.stderr)}")
            with open(bad, "rb") as f:
                fixed = f.read()
            check(whole.startswith(fixed) and len(fixed) < cut,
                  f"{bad}: {len(fixed)} bytes after repair is no shorter prefix of the original")
            n = len(tshark_fields(bad, ["frame.number"]))  # fails on any complaint of tshark
            check(n <= frames, f"{bad}: {n} frames, the original has {frames}")
            ci = subprocess.run([need_tool("capinfos"), "-c", bad], capture_output=True,
                                timeout=30)
            check(ci.returncode == 0 and b"cut short" not in ci.stderr + ci.stdout,
                  f"capinfos {bad}: {ci.returncode} {short(ci.stdout + ci.stderr)}")
            r = subprocess.run([TLSMIRROR, "repair", bad], capture_output=True, timeout=30)
            check(r.returncode == 0 and b"nothing to cut" in r.stdout,
                  f"second repair of {bad}: {short(r.stdout + r.stderr)}")
    junk = env.path("junk")
    with open(junk, "wb") as f:
        f.write(b"not a capture at all\n" * 10)
    r = subprocess.run([TLSMIRROR, "repair", junk], capture_output=True, timeout=30)
    check(r.returncode == 1 and b"neither pcap nor pcapng" in r.stderr,
          f"repair of a non-capture: {r.returncode} {short(r.stdout + r.stderr)}")
    with open(junk, "rb") as f:
        check(f.read() == b"not a capture at all\n" * 10, "repair changed a file that is no capture")
