#!/usr/bin/env python3
"""Hostile rings against a live agent: it survives each case, logs why, writes nothing for them, and keeps mirroring ringgen byte-exact meanwhile.

Self-contained: needs BUILD (default build) with tlsmirror, ringgen and
progs/badring. Run as a script it prints one line per case and exits 0 when
everything passed; tests/integration/run.py runs it through test_all_cases.
test_flipping_producer (run.py only) is the concurrent hostile producer:
`badring --flip 10000` against an agent that mirrors curl meanwhile.
"""
import os
import re
import signal
import struct
import subprocess
import sys
import tempfile
import threading
import time

import tmlib

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BUILD = os.path.join(ROOT, os.environ.get("BUILD", "build"))
TM = os.path.join(BUILD, "tlsmirror")
RINGGEN = os.path.join(BUILD, "ringgen")
BADRING = os.path.join(BUILD, "progs", "badring")
RECVFAULT = os.path.join(BUILD, "progs", "recvfault.so")

BAD_ADDR = bytes([127, 0, 0, 0x42])  # every address a bad ring describes (badring.c)
ALPHABET = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
RG_CONNS = 4
RG_BYTES = 4 << 20
RG_RATE = 2 << 20
# Cases where an agent may accept what it got without complaint: a nonsense
# head/tail it can resync from, an extra descriptor it can close, a CLOSE of
# a connection it never saw. They must still not crash it or write anything.
# A zero-length SOCK_SEQPACKET message reads exactly like EOF.
LENIENT = {"head-tail-garbage", "hello-two-fds", "close-unknown-conn", "empty"}
# Cases where the agent must refuse the ring (close the connection): a ring it
# cannot trust, or a hello that is not an attach.
MUST_CLOSE = {"bad-magic", "bad-version", "size-not-pow2", "short-memfd", "unsealed",
              "no-shrink-seal", "rec-len-0", "rec-len-unaligned", "rec-len-past-end",
              "rec-type-unknown", "data-off-oob", "data-off-small", "data-len-oob",
              "data-len-huge", "pad-mid", "hello-bad-magic", "hello-bad-version",
              "hello-bad-type", "hello-truncated", "hello-no-fd", "hello-pipe-fd", "garbage",
              "hello-eight-fds", "hello-recvmsg-fault"}
COUNTERS = ("bad_records", "orphan_records", "rejected_attach")
REASON = re.compile(r"warning|error|reject|malformed|invalid|refus", re.I)


def stats(sock):
    """The agent's total line as a dict, or None if it does not answer."""
    try:
        out = subprocess.run([TM, "stats", "--socket", sock], capture_output=True,
                             text=True, timeout=5)
    except subprocess.TimeoutExpired:
        return None
    for line in out.stdout.splitlines():
        if line.startswith("total "):
            return {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", line)}
    return None


def moved(before, after):
    """Which complaint counters grew, e.g. 'rejected_attach+1'."""
    if before is None:
        return ""
    return " ".join("%s+%d" % (k, after.get(k, 0) - before.get(k, 0)) for k in COUNTERS
                    if after.get(k, 0) > before.get(k, 0))


class RinggenLoop(threading.Thread):
    """Runs ringgen again and again (new ports each time) until stopped."""

    def __init__(self, sock):
        super().__init__(daemon=True)
        self.sock, self.stop, self.runs, self.pids = sock, threading.Event(), [], set()

    def run(self):
        base = 40000
        while not self.stop.is_set():
            p = subprocess.Popen([RINGGEN, "--socket", self.sock, "--bytes", str(RG_BYTES),
                                  "--conns", str(RG_CONNS), "--chunk", "3000", "--rate",
                                  str(RG_RATE), "--port-base", str(base)],
                                 stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            self.pids.add(p.pid)
            out, _ = p.communicate()
            m = re.search(r"^bytes=(\d+)", out, re.M)
            self.runs.append((base, p.returncode, int(m.group(1)) if m else 0, out.strip()))
            base += RG_CONNS


def read_pcap(path):
    """Yields (src, dst, sport, dport, seq, flags, payload) for IPv4/TCP frames."""
    with open(path, "rb") as f:
        data = f.read()
    magic = struct.unpack_from("<I", data, 0)[0]
    if magic not in (0xA1B2C3D4, 0xA1B23C4D):
        raise ValueError("not a little-endian pcap: magic %#x" % magic)
    off = 24
    while off + 16 <= len(data):
        incl = struct.unpack_from("<I", data, off + 8)[0]
        frame = data[off + 16:off + 16 + incl]
        off += 16 + incl
        if len(frame) < 14 + 20 or frame[12:14] != b"\x08\x00":
            continue
        ip = frame[14:]
        ihl = (ip[0] & 15) * 4
        total = struct.unpack_from(">H", ip, 2)[0]
        if ip[9] != 6:
            continue
        tcp = ip[ihl:total]
        sport, dport, seq = struct.unpack_from(">HHI", tcp, 0)
        doff = (tcp[12] >> 4) * 4
        yield ip[12:16], ip[16:20], sport, dport, seq, tcp[13], tcp[doff:]


def check_ringgen(pcap, runs):
    """Every ringgen stream, each direction, must be the pattern, contiguous, complete."""
    streams = {}  # (client port, dir) -> [isn, [(seq, payload)]]
    bad_packets = 0
    for src, dst, sport, dport, seq, flags, payload in read_pcap(pcap):
        if BAD_ADDR in (src, dst):
            bad_packets += 1
            continue
        if 8443 not in (sport, dport):
            continue
        d, cport = (0, sport) if dport == 8443 else (1, dport)
        s = streams.setdefault((cport, d), [None, []])
        if flags & 0x02:
            s[0] = (seq + 1) & 0xFFFFFFFF
        elif payload:
            s[1].append((seq, payload))
    errors, total = [], 0
    for base, rc, sent, out in runs:
        if rc != 0:
            errors.append("ringgen --port-base %d failed: %s" % (base, out))
            continue
        got = 0
        for c in range(RG_CONNS):
            for d in (0, 1):
                isn, segs = streams.get((base + c, d), [None, []])
                if isn is None and segs:
                    errors.append("port %d dir %d: data without SYN" % (base + c, d))
                    continue
                buf, pos = bytearray(), 0
                for seq, p in sorted(segs, key=lambda x: (x[0] - isn) & 0xFFFFFFFF):
                    rel = (seq - isn) & 0xFFFFFFFF
                    if rel != pos:
                        errors.append("port %d dir %d: segment at %d, expected %d"
                                      % (base + c, d, rel, pos))
                        break
                    buf += p
                    pos += len(p)
                k = 7 * c + 31 * d  # ringgen's pattern, c = index within its run
                want = bytes(ALPHABET[(i + k) % 64] for i in range(64)) * (len(buf) // 64 + 2)
                if bytes(buf) != want[:len(buf)]:
                    errors.append("port %d dir %d: bytes differ from the pattern" % (base + c, d))
                got += len(buf)
        if got != sent:
            errors.append("ringgen --port-base %d: sent %d, pcap holds %d" % (base, sent, got))
        total += got
    return bad_packets, total, errors


def run_case(name, sock, log_path, rg_pids):
    """Runs one badring case; returns (ok, message)."""
    before = stats(sock)
    log_off = os.path.getsize(log_path)
    p = subprocess.run([BADRING, "--socket", sock, "--case", name, "--timeout-ms", "1000"],
                       capture_output=True, text=True, timeout=30)
    seen = " ".join(p.stdout.split()[2:]) if p.stdout else p.stderr.strip()
    time.sleep(0.1)
    after = stats(sock)
    if after is None:
        return False, "agent no longer answers stats (badring: %s)" % seen
    with open(log_path, "rb") as f:
        f.seek(log_off)
        new = f.read().decode(errors="replace").splitlines()
    new = [l for l in new if not any(str(pid) in l for pid in list(rg_pids))
           and "ringgen" not in l]
    reason = next((l for l in new if REASON.search(l)), "")
    counted = moved(before, after)
    if p.returncode != 0:
        return False, "badring could not run the case: %s" % seen
    if name in MUST_CLOSE and "closed" not in seen:
        return False, "the agent did not refuse it (%s)" % seen
    if not reason and not counted and name not in LENIENT:
        return False, "no reason logged, no counter moved (%s)" % seen
    if not reason and counted:
        reason = "log rate-limited; counted %s" % counted
    return True, "%s | %s" % (reason or "accepted quietly", seen)


def main():
    for f in (TM, RINGGEN, BADRING):
        if not os.access(f, os.X_OK):
            print("test_badring: missing %s (make BUILD=... all $(TOOLS))" % f)
            return 1
    names = [l.split()[0] for l in subprocess.run([BADRING, "--list"], capture_output=True,
                                                   text=True).stdout.splitlines()]
    tmp = tempfile.mkdtemp(prefix="tlsmirror-badring.")
    sock, pcap, log = (os.path.join(tmp, n) for n in ("agent.sock", "out.pcap", "agent.log"))
    logf = open(log, "wb")
    agent = subprocess.Popen([TM, "--socket", sock, "-w", pcap], stderr=logf)
    for _ in range(50):
        if os.path.exists(sock):
            break
        time.sleep(0.1)
    rg = RinggenLoop(sock)
    rg.start()
    failed = 0
    try:
        for name in names:
            ok, msg = run_case(name, sock, log, rg.pids)
            print("%s %s: %s" % ("PASS" if ok else "FAIL", name, msg), flush=True)
            failed += not ok
            if agent.poll() is not None:
                print("FAIL agent died after case %s (status %s)" % (name, agent.returncode))
                return 1
    finally:
        rg.stop.set()
        rg.join(timeout=60)
        if agent.poll() is None:
            agent.send_signal(signal.SIGTERM)
            agent.wait(timeout=30)
        logf.close()
    ok = agent.returncode == 0
    print("%s agent exits cleanly on SIGTERM (status %d)" % ("PASS" if ok else "FAIL",
                                                            agent.returncode))
    failed += not ok
    bad_packets, total, errors = check_ringgen(pcap, rg.runs)
    ok = bad_packets == 0
    print("%s bad rings wrote nothing: %d packets with 127.0.0.66" % ("PASS" if ok else "FAIL",
                                                                    bad_packets))
    failed += not ok
    ok = not errors and len(rg.runs) > 0
    print("%s ringgen mirrored byte-exact meanwhile: %d runs, %d bytes%s"
          % ("PASS" if ok else "FAIL", len(rg.runs), total,
             "" if ok else "; " + "; ".join(errors[:5])))
    failed += not ok
    passed = len(names) + 3 - failed
    print("badring: %d passed, %d failed" % (passed, failed))
    if failed:
        print("badring: agent log kept in %s" % log)
    else:
        subprocess.run(["rm", "-rf", tmp])
    return 1 if failed else 0


def test_all_cases(env):
    """For tests/integration/run.py: runs this script, fails with its FAIL lines."""
    p = subprocess.run([sys.executable, os.path.abspath(__file__)], capture_output=True,
                       text=True, timeout=170)
    if p.returncode != 0:
        bad = [l for l in p.stdout.splitlines() if l.startswith(("FAIL", "badring:"))]
        raise AssertionError("\n".join(bad or [p.stdout[-2000:], p.stderr[-2000:]]))


test_all_cases.timeout = 180

FLIP_ATTACHES = 10000


def test_recvmsg_failure(env):
    """A recvmsg that fails (tests/progs/recvfault.c, preloaded into the agent,
    fails it after leaving an SCM_RIGHTS header naming descriptors 3..6 in the
    control buffer, which the kernel does not promise to leave alone): the
    agent must not walk that data. It keeps its event loop, socket and output
    (stats answers, curl is mirrored byte-exact afterwards)."""
    sock, pcap = env.path("agent.sock"), env.path("agent.pcap")
    agent = env.spawn("agent", [tmlib.need_build(TM), "--socket", sock, "-w", pcap],
                      extra_env={"LD_PRELOAD": tmlib.need_build(RECVFAULT),
                                 "ASAN_OPTIONS": "verify_asan_link_order=0"})
    tmlib.wait_until(lambda: os.path.exists(sock) or not agent.alive(), 10, "agent socket")
    srv = tmlib.RecServer(env)
    for i in range(3):
        rc, out, err = env.run("fault%d" % i, [BADRING, "--socket", sock, "--case",
                                                "hello-recvmsg-fault"], timeout_s=10)
        tmlib.check(rc == 0 and b"closed" in out, "badring hello-recvmsg-fault: rc %s, %s %s"
                    % (rc, tmlib.short(out), tmlib.short(err)))
    tmlib.check(agent.alive(), "agent died: %s" % tmlib.short(agent.err()))
    tmlib.check(stats(sock) is not None, "the agent no longer answers stats after a failed "
                "recvmsg (it closed descriptors named by stale control data?)")
    c = tmlib.certs()
    cu = env.captured("curl", sock, [tmlib.need_tool("curl"), "-sS", "--cacert", c["cert"],
                                     "--resolve", "localhost:%d:127.0.0.1" % srv.port,
                                     "https://localhost:%d/size/100000" % srv.port,
                                     "-o", env.path("got.bin")])
    rc = cu.wait(30)
    tmlib.check(rc == 0, "curl exited %s: %s" % (rc, tmlib.short(cu.err())))
    conns = srv.conns(1)
    tmlib.wait_until(lambda: (stats(sock) or {}).get("conns", 0) >= 1, 10,
                     "the agent to see curl's connection")
    agent.signal(signal.SIGTERM)
    tmlib.check(agent.wait(15) == 0, "agent exit status: %s" % tmlib.short(agent.err()))
    cap = tmlib.judge(pcap)
    tmlib.check_against_server(cap, conns)



def test_flipping_producer(env):
    """10,000 attaches of rings whose header and record fields another thread
    keeps flipping (badring --flip): the agent (--h2-to-h1, two outputs, so
    the sinks run behind queues) survives every one and mirrors curl under
    the capture library byte-exact meanwhile, judged by tshark."""
    srv = tmlib.RecServer(env)
    agent = tmlib.Agent(env, args=["--h2-to-h1", "--pcap-over-ip",
                                   "127.0.0.1:%d" % tmlib.free_port()]).start()
    flip = env.spawn("badring", [tmlib.need_build(BADRING), "--socket", agent.sock,
                                 "--flip", str(FLIP_ATTACHES)])
    c = tmlib.certs()
    n, t0 = 0, time.time()
    while n < 4 or (flip.alive() and time.time() - t0 < 60):
        size = 50000 + 7919 * n
        cu = env.captured("curl", agent.sock, [tmlib.need_tool("curl"), "-sS", "--cacert",
                                               c["cert"], "--resolve",
                                               "localhost:%d:127.0.0.1" % srv.port,
                                               "https://localhost:%d/size/%d" % (srv.port, size),
                                               "-o", env.path("got%d.bin" % n)])
        rc = cu.wait(30)
        tmlib.check(rc == 0, "curl %d exited %s: %s" % (n, rc, tmlib.short(cu.err())))
        n += 1
        tmlib.check(agent.proc.alive(), "the agent died under the flipping producer "
                    "(status %s) after %d curl runs; badring: %s; agent stderr: %s"
                    % (agent.proc.popen.returncode, n, tmlib.short(flip.out()),
                       tmlib.short(agent.proc.err()[-600:])))
    rc = flip.wait(60)
    out = flip.out().decode(errors="replace").strip()
    tmlib.check(agent.proc.alive(), "the agent died under the flipping producer (status %s); "
                "badring: %s" % (agent.proc.popen.returncode, out))
    tmlib.check(rc == 0 and ("flip %d of %d" % (FLIP_ATTACHES, FLIP_ATTACHES)) in out,
                "badring --flip exited %s: %s" % (rc, out))
    conns = srv.conns(n)
    agent.stop()  # exit status 0 (a ThreadSanitizer report would make it 66)
    good = env.path("good.pcap")
    r = subprocess.run([tmlib.need_tool("tshark"), "-r", agent.pcap, "-w", good, "-F", "nsecpcap",
                        "-Y", "ip.src == 127.0.0.1 && ip.dst == 127.0.0.1 && tcp.port == %d"
                        % srv.port], capture_output=True, timeout=120)
    tmlib.check(r.returncode == 0, "tshark could not filter the capture: %s"
                % tmlib.short(r.stderr))
    # ~100 curl connections from 127.0.0.1 to one port: the kernel may hand a
    # client port out again within the trace (check_against_server pairs them)
    cap = tmlib.judge(good, allow_port_reuse=True)
    tmlib.check_against_server(cap, conns)
    print("flip: %s; %d curl transfers byte-exact" % (out, len(conns)))


test_flipping_producer.timeout = 150


if __name__ == "__main__":
    sys.exit(main())
