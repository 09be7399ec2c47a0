# Integration tests 3 and 4: Python ssl (threads) and asyncio (memory BIO) client+server in one captured process.
import json
import os
import time

from tmlib import (HELPERS, PYTHON, Agent, Skip, certs, check, check_stream, have_ipv6, judge,
                   proc_stats, short, stat_int, timeout, _read)

SIZES = [1, 5000, 300000, 70000]


def run_pair(env, mode, addr):
    c = certs()
    out = env.path(f"pair-{mode}")
    os.mkdir(out)
    agent = Agent(env).start()
    t0 = int(time.time() * 1e9)
    p = env.captured(f"py-{mode}", agent.sock,
                     [PYTHON, os.path.join(HELPERS, "pyprogs.py"), "pair", "--mode", mode,
                      "--addr", addr, "--cert", c["cert"], "--key", c["key"], "--out", out,
                      "--sizes", ",".join(map(str, SIZES))])
    rc = p.wait(60)
    check(rc == 0 and p.err() == b"", f"python {mode} pair on {addr} exited {rc}: "
          f"{short(p.err(), 600)}")
    procs, total = agent.final_stats()
    cap = judge(agent.pcap, ts_window=(t0 - 10**9, int(time.time() * 1e9) + 10**9))
    conns = []
    for i in range(len(SIZES)):
        with open(os.path.join(out, f"conn-{i}.json")) as f:
            meta = json.load(f)
        conns.append((meta, _read(os.path.join(out, f"conn-{i}.c2s")),
                      _read(os.path.join(out, f"conn-{i}.s2c"))))
    syn = cap.syn_streams()
    check(len(syn) == len(SIZES), f"{len(SIZES)} connections made (each with both ends in this "
          f"process: expected once each), capture has {len(syn)}: {cap.describe()}")
    for meta, c2s, s2c in conns:
        st = cap.one(client_port=meta["client_port"])
        check_stream(st, c2s=c2s, s2c=s2c, client=(addr, meta["client_port"]),
                     server=(addr, meta["server_port"]))
    ps = proc_stats(procs, p.pid)
    check(ps is not None, f"no exit stats line for python pid {p.pid}: {short(agent.stderr_text)}")
    check(stat_int(total, "dropped_bytes") == 0, f"drops: {total}")


@timeout(90)
def test_blocking_ipv4(env):
    run_pair(env, "blocking", "127.0.0.1")


@timeout(90)
def test_blocking_ipv6(env):
    if not have_ipv6():
        raise Skip("no IPv6 loopback (::1) on this host")
    run_pair(env, "blocking", "::1")


@timeout(90)
def test_asyncio_ipv4(env):
    run_pair(env, "asyncio", "127.0.0.1")


@timeout(90)
def test_asyncio_ipv6(env):
    if not have_ipv6():
        raise Skip("no IPv6 loopback (::1) on this host")
    run_pair(env, "asyncio", "::1")
