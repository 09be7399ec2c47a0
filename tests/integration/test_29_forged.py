# Integration test 29: a producer's forged record timestamps and pre-announced tuples.
import os
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
