# Integration test 12: TLS 1.3 early data (0-RTT) read by a server under capture is mirrored exactly.
import time

from tmlib import (Agent, certs, check, free_port, judge, need_tool, proc_stats, short,
                   stat_int, timeout, wait_until)


@timeout(90)
def test_early_data(env):
    """openssl s_server -early_data under capture; a plain s_client resumes a session and
    sends 0-RTT data: the server reads it with SSL_read_early_data, and the mirrored
    connection's client-to-server stream is exactly those bytes."""
    c = certs()
    openssl = need_tool("openssl")
    port = free_port()
    early = b"EARLY 0-RTT 1234567890 " * 40 + b"\n"
    with open(env.path("early.txt"), "wb") as f:
        f.write(early)
    agent = Agent(env).start()
    srv = env.captured("s_server", agent.sock,
                       [openssl, "s_server", "-quiet", "-accept", f"127.0.0.1:{port}",
                        "-cert", c["cert"], "-key", c["key"], "-early_data"])
    time.sleep(0.3)
    check(srv.alive(), f"s_server exited: {short(srv.err())}")
    sess = env.path("sess.pem")
    # first connection: only to get a session ticket that allows early data
    first = env.spawn("s_client-1", [openssl, "s_client", "-quiet", "-connect",
                                     f"127.0.0.1:{port}", "-sess_out", sess])
    wait_until(lambda: __import__("os").path.exists(sess) and
               __import__("os").path.getsize(sess) > 0, 15, "a session ticket from s_client")
    time.sleep(0.3)
    first.kill_group()
    second = env.spawn("s_client-2", [openssl, "s_client", "-quiet", "-connect",
                                      f"127.0.0.1:{port}", "-sess_in", sess,
                                      "-early_data", env.path("early.txt")])
    wait_until(lambda: early in srv.out(), 15, "s_server to print the early data")
    time.sleep(0.3)
    second.kill_group()
    procs, total = agent.final_stats()
    ps = proc_stats(procs, srv.pid)
    check(ps is not None, f"no stats line for s_server pid {srv.pid}: {short(agent.stderr_text)}")
    check(stat_int(ps, "c2s_bytes") >= len(early), f"s_server stats {ps}: the early data "
          f"({len(early)} bytes) was not counted")
    cap = judge(agent.pcap)
    streams = [s for s in cap.streams if s.bytes(0) == early]
    check(len(streams) == 1, f"want one mirrored connection whose client-to-server bytes are "
          f"exactly the early data; streams carry {[len(s.bytes(0)) for s in cap.streams]}")
    check(stat_int(total, "dropped_bytes") == 0, f"drops: {total}")
