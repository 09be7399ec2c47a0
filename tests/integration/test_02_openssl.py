# Integration test 2: openssl s_client <-> s_server, both under capture: one connection, both directions exact.
import subprocess

from tmlib import (Agent, certs, check, digits, feed, free_port, judge, need_tool, proc_stats,
                   short, stat_int, timeout, wait_until, check_stream)


@timeout(90)
def test_s_client_s_server(env):
    c = certs()
    openssl = need_tool("openssl")
    port = free_port()
    c2s, s2c = digits(200_000, 21), digits(300_000, 22)
    agent = Agent(env).start()
    srv = env.captured("s_server", agent.sock,
                       [openssl, "s_server", "-accept", f"127.0.0.1:{port}", "-cert", c["cert"],
                        "-key", c["key"], "-naccept", "1"], stdin=subprocess.PIPE)
    wait_until(lambda: b"ACCEPT" in srv.out() or not srv.alive(), 15, "s_server ACCEPT")
    check(srv.alive(), f"s_server exited: {short(srv.err())}")
    cli = env.captured("s_client", agent.sock,
                       [openssl, "s_client", "-connect", f"127.0.0.1:{port}", "-servername",
                        "localhost", "-CAfile", c["cert"], "-nocommands"], stdin=subprocess.PIPE)
    t1, t2 = feed(cli, c2s), feed(srv, s2c)
    wait_until(lambda: c2s in srv.out() and s2c in cli.out(), 30,
               "both payloads to arrive (s_server stdout has the client's, s_client's the server's)")
    t1.join(5)
    t2.join(5)
    # both sides are still inside the connection: stats must show both processes
    # (once the agent has drained both rings: wait for it, not a fixed time)
    def drained():
        ps = [proc_stats(agent.stats()[0], p.pid) for p in (srv, cli)]
        return all(q and stat_int(q, "c2s_bytes") == len(c2s) and
                   stat_int(q, "s2c_bytes") == len(s2c) for q in ps)
    wait_until(drained, 15, "both processes' bytes in tlsmirror stats")
    procs, total, raw = agent.stats()
    for p, name in ((srv, "s_server"), (cli, "s_client")):
        ps = proc_stats(procs, p.pid)
        check(ps is not None, f"`tlsmirror stats` has no line for {name} pid {p.pid}:\n{raw}")
        # each end really mirrored the connection (else dedup would be trivial)
        check(stat_int(ps, "conns") == 1 and stat_int(ps, "c2s_bytes") == len(c2s)
              and stat_int(ps, "s2c_bytes") == len(s2c),
              f"{name} stats: want conns=1 c2s_bytes={len(c2s)} s2c_bytes={len(s2c)}: {ps}")
    cli.popen.stdin.close()
    rc = cli.wait(15)
    check(rc == 0, f"s_client exited {rc}: {short(cli.err())}")
    srv.popen.stdin.close()
    rc = srv.wait(15)
    check(rc == 0, f"s_server exited {rc}: {short(srv.err())}")
    procs, total = agent.final_stats()
    cap = judge(agent.pcap)
    syn = cap.syn_streams()
    check(len(syn) == 1, f"connection mirrored from both ends must appear once; capture has "
          f"{len(syn)} connections: {cap.describe()}")
    st = syn[0]
    check(st.server == ("127.0.0.1", port) and st.client[0] == "127.0.0.1",
          f"{st.name()}: expected a client on 127.0.0.1 connecting to 127.0.0.1:{port}")
    check_stream(st, c2s=c2s, s2c=s2c)
    check(stat_int(total, "dropped_bytes") == 0, f"drops: {total}")
    # the other end was recognised by the dedup stage, once
    check(stat_int(total, "duplicate_conns") == 1, f"duplicate_conns: {total}")
