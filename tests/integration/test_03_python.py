# Integration tests 3 and 4: Python ssl (threads) and asyncio (memory BIO) client+server in one captured process.
import json
import os
import time

from tmlib import (HELPERS, PYTHON, Agent, Skip, certs, check, check_stream, have_ipv6, judge,
                   wait_until,
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


ASYNCIO_CONNS = 5000


@timeout(240)
def test_asyncio_5000_concurrent(env):
    """5,000 asyncio TLS connections from one process, all handshakes in flight
    at once (the server holds every handshake until all 5,000 ClientHellos
    wait in its sockets): each connection keeps its real 127.0.0.1 address and
    port in the pcap (no 198.18.x.x), byte-exact both ways, and the process's
    stats line says synthetic_conns=0."""
    c = certs()
    port_file = env.path("port")
    srv = env.spawn("holdserver", [PYTHON, os.path.join(HELPERS, "pyprogs.py"), "holdserver",
                                   "--cert", c["cert"], "--key", c["key"], "--conns",
                                   str(ASYNCIO_CONNS), "--port-file", port_file])
    wait_until(lambda: os.path.exists(port_file) or not srv.alive(), 20, "the holding server")
    check(srv.alive(), f"holdserver exited: {short(srv.err())}")
    port = int(open(port_file).read())
    agent = Agent(env).start()
    out = env.path("many.jsonl")
    p = env.captured("py-many", agent.sock,
                     [PYTHON, os.path.join(HELPERS, "pyprogs.py"), "many", "--port", str(port),
                      "--cert", c["cert"], "--conns", str(ASYNCIO_CONNS), "--out", out])
    rc = p.wait(200)
    check(rc == 0, f"python asyncio client exited {rc}: {short(p.err(), 600)}; server: "
          f"{short(srv.out())} {short(srv.err())}")
    check(b"holding %d" % ASYNCIO_CONNS in srv.out(),
          f"the server did not hold all handshakes at once: {short(srv.out())}")
    procs, total = agent.final_stats()
    ps = proc_stats(procs, p.pid)
    check(ps is not None, f"no stats line for python pid {p.pid}: {short(agent.stderr_text)}")
    check(stat_int(ps, "synthetic_conns") == 0 and stat_int(total, "synthetic_conns") == 0,
          f"connections mapped to synthetic addresses: {ps}")
    check(stat_int(ps, "conns") == ASYNCIO_CONNS, f"{ASYNCIO_CONNS} connections expected: {ps}")
    cap = judge(agent.pcap)
    with open(out) as f:
        res = [json.loads(line) for line in f]
    check(len(res) == ASYNCIO_CONNS, f"{len(res)} results")
    check(len(cap.syn_streams()) == ASYNCIO_CONNS,
          f"{len(cap.syn_streams())} connections in the pcap: {cap.describe()}")
    for r in res:
        st = cap.one(client_port=r["client_port"])
        check_stream(st, c2s=bytes.fromhex(r["c2s"]), s2c=bytes.fromhex(r["s2c"]),
                     client=("127.0.0.1", r["client_port"]), server=("127.0.0.1", port))
