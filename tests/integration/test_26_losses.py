# Integration test 26: every loss is counted in bytes and logged: a full disk, a stopped stdout reader.
import os
import re
import signal
import struct
import subprocess
import time

from tmlib import (TLSMIRROR, Agent, RecServer, Skip, assert_bytes, certs, check, gen_bytes,
                   need_tool, short, stat_int, timeout, wait_until)


def curl_get(env, sock, srv, n, name):
    c = certs()
    out = env.path(name + ".bin")
    p = env.captured(name, sock, [need_tool("curl"), "-sS", "--cacert", c["cert"], "--resolve",
                                  f"localhost:{srv.port}:127.0.0.1",
                                  f"https://localhost:{srv.port}/size/{n}", "-o", out])
    rc = p.wait(120)
    check(rc == 0 and p.err() == b"", f"curl exited {rc}: {short(p.err())}")
    with open(out, "rb") as f:
        assert_bytes(f"curl /size/{n}", gen_bytes(n, n), f.read())


def sink_line(text, name="pcap"):
    lines = [dict(re.findall(r"(\w+)=(\S*)", ln)) for ln in text.splitlines()
             if ln.startswith("sink ")]
    lines = [s for s in lines if s.get("name") == name]
    check(len(lines) == 1, f"want one 'sink name={name}' line in the stats: {short(text, 900)}")
    return lines[0]


def pcap_frame_bytes(path):
    """(records, sum of the frames' original lengths) of a whole nanosecond pcap file."""
    with open(path, "rb") as f:
        data = f.read()
    check(len(data) >= 24 and data[:4] == b"\x4d\x3c\xb2\xa1",
          f"{path}: {len(data)} bytes, not a nanosecond pcap")
    pos, n, total = 24, 0, 0
    while pos + 16 <= len(data):
        incl, orig = struct.unpack("<II", data[pos + 8:pos + 16])
        pos += 16 + incl
        n += 1
        total += orig
    check(pos == len(data), f"{path} ends mid-record ({len(data) - pos} bytes over)")
    return n, total


class Tmpfs:
    """A small tmpfs mounted by the test (root), unmounted afterwards."""

    def __init__(self, path, size):
        if os.geteuid() != 0:
            raise Skip("mounting a tmpfs needs root")
        os.makedirs(path, exist_ok=True)
        r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", path],
                           capture_output=True, timeout=30)
        if r.returncode:
            raise Skip(f"cannot mount a tmpfs: {short(r.stderr)}")
        self.path = path

    def close(self):
        subprocess.run(["umount", "-l", self.path], capture_output=True, timeout=30)


@timeout(180)
def test_disk_full(env):
    """-w on a 2 MiB tmpfs that a filler leaves 1 MiB of: curl downloads 3 MiB (the disk
    fills), the filler goes, curl downloads 300 KB more. The agent keeps running, logs the
    episode's start and end once each with the bytes lost, stats show the lost bytes and
    the state, and the file holds exactly the frames the counters say were written."""
    fs = Tmpfs(env.path("small"), "2m")
    try:
        filler = os.path.join(fs.path, "filler")
        with open(filler, "wb") as f:
            f.write(b"\0" * (1 << 20))
        srv = RecServer(env)
        agent = Agent(env, pcap=os.path.join(fs.path, "cap.pcap")).start()
        curl_get(env, agent.sock, srv, 3 << 20, "big")
        pkts_seen = lambda: stat_int(agent.stats()[1], "packets")  # noqa: E731
        # the agent drains rings asynchronously: wait until its stats stop moving
        last = [-1]

        def settled():
            n = pkts_seen()
            done = n == last[0] and n > 0
            last[0] = n
            return done
        wait_until(settled, 20, "the agent to mirror the download", interval=0.5)
        _, _, raw = agent.stats()
        sk = sink_line(raw)
        check(stat_int(sk, "lost_bytes") > 1 << 20 and sk.get("failing") == "1",
              f"disk full: want lost_bytes > 1 MiB and failing=1 in the stats: {sk}")
        check(agent.proc.alive(), "the agent exited on a full disk")
        os.unlink(filler)
        curl_get(env, agent.sock, srv, 300000, "small")
        wait_until(lambda: sink_line(agent.stats()[2]).get("failing") == "0", 20,
                   "the output to work again (failing=0 in stats)", interval=0.3)
        procs, total = agent.final_stats()
        sk = sink_line(agent.stderr_text)
        err = agent.stderr_text
        starts = [ln for ln in err.splitlines() if "No space left on device" in ln]
        ends = [ln for ln in err.splitlines() if "writing again" in ln]
        check(len(starts) == 1 and len(ends) == 1,
              f"want the episode logged once at its start (ENOSPC) and once at its end: "
              f"{short(err, 1500)}")
        lost = stat_int(sk, "lost_bytes")
        check(f"{lost} bytes" in ends[0], f"the end of the episode does not say the "
              f"{lost} bytes lost: {ends[0]}")
        n, frame_bytes = pcap_frame_bytes(agent.pcap)
        check(n == stat_int(sk, "packets") and frame_bytes == stat_int(sk, "bytes"),
              f"the file holds {n} packets of {frame_bytes} frame bytes, the counters claim "
              f"{sk.get('packets')} packets of {sk.get('bytes')} bytes")
        check(stat_int(sk, "packets") + stat_int(sk, "errors") == stat_int(total, "packets"),
              f"written {sk.get('packets')} + lost {sk.get('errors')} packets != the "
              f"{total.get('packets')} synthesized: {sk}")
        check(lost >= 1 << 20, f"lost_bytes {lost}: the 3 MiB download did not fit in 1 MiB")
        check(n > 200, f"only {n} packets written: the 300 KB after the filler went are missing")
    finally:
        fs.close()


@timeout(120)
def test_stdout_reader_stopped(env):
    """-w - into a reader that is SIGSTOPped: the application is not slowed, the agent
    answers stats, counts what it cannot write (in bytes) and exits within 2 s of SIGTERM."""
    srv = RecServer(env)
    r, w = os.pipe()
    reader = env.spawn("reader", ["cat"], stdin=r, stdout=open(env.path("live.pcap"), "wb"))
    os.close(r)
    agent = Agent(env, pcap="-")
    agent.start(stdout=w)
    os.close(w)
    reader.signal(signal.SIGSTOP)
    t0 = time.time()
    curl_get(env, agent.sock, srv, 4 << 20, "big")
    took = time.time() - t0
    check(took < 30, f"curl took {took:.1f} s with the agent's reader stopped")

    def dropped():
        try:
            r = subprocess.run([TLSMIRROR, "stats", "--socket", agent.sock],
                               capture_output=True, timeout=3)
        except subprocess.TimeoutExpired:
            raise AssertionError("`tlsmirror stats` did not answer in 3 s") from None
        check(r.returncode == 0, f"`tlsmirror stats` exited {r.returncode}: {short(r.stderr)}")
        sk = sink_line(r.stdout.decode())
        held = stat_int(sk, "queued_bytes") + stat_int(sk, "queue_drop_bytes")
        return sk if held > 3 << 20 else None
    wait_until(dropped, 20, "stats to show > 3 MiB queued or dropped for the stopped reader")
    t0 = time.time()
    agent.proc.signal(signal.SIGTERM)
    try:
        agent.proc.popen.wait(timeout=2.5)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"the agent still runs {time.time() - t0:.1f} s after SIGTERM "
                             "with its stdout reader stopped") from None
    took = time.time() - t0
    err = agent.proc.err().decode("utf-8", "replace")
    sk = sink_line(err)
    check(took <= 2.5, f"the agent took {took:.1f} s to exit")
    lost = stat_int(sk, "lost_bytes") + stat_int(sk, "queue_drop_bytes")
    check(lost > 4 << 20, f"want > 4 MiB counted lost at exit (the reader took ~64 KiB): {sk}")
    check(re.search(r"stdout: .*(gave up|lost)", err),
          f"the loss at exit is not logged: {short(err, 1200)}")
    m = re.search(r"stdout: still failing at exit after losing \d+ packets \((\d+) bytes\)", err)
    check(m and int(m.group(1)) == stat_int(sk, "lost_bytes"),
          f"the exit log does not say the {sk.get('lost_bytes')} bytes lost: {short(err, 1200)}")
    reader.signal(signal.SIGCONT)
