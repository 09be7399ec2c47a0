# Integration test 1: curl under the capture library, GET and a 1 MiB POST, byte-exact in the pcap.
import time

from tmlib import (Agent, RecServer, assert_bytes, certs, check, check_against_server, gen_bytes,
                   judge, need_tool, proc_stats, short, stat_int, timeout)


def curl(env, agent, name, args, server):
    c = certs()
    p = env.captured(name, agent.sock, [need_tool("curl"), "-sS", "--cacert", c["cert"],
                                        "--resolve", f"localhost:{server.port}:127.0.0.1"] + args)
    rc = p.wait(60)
    check(rc == 0 and p.err() == b"", f"curl {' '.join(args)} under capture exited {rc}, "
          f"stderr: {short(p.err())}")
    return p


@timeout(120)
def test_get_post(env):
    body = gen_bytes(1 << 20, 101)
    with open(env.path("body.bin"), "wb") as f:
        f.write(body)
    post = gen_bytes((1 << 20) + 12345, 102)
    with open(env.path("post.bin"), "wb") as f:
        f.write(post)
    srv = RecServer(env, body=env.path("body.bin"))
    agent = Agent(env).start()
    t0 = int(time.time() * 1e9)
    url = f"https://localhost:{srv.port}"
    get = curl(env, agent, "curl-get", [url + "/body", "-o", env.path("got.bin")], srv)
    pst = curl(env, agent, "curl-post", ["--data-binary", "@" + env.path("post.bin"),
                                         "-H", "Content-Type: application/octet-stream",
                                         url + "/echo", "-o", env.path("echoed.bin")], srv)
    with open(env.path("got.bin"), "rb") as f:
        assert_bytes("curl's GET output file vs the served body", body, f.read())
    with open(env.path("echoed.bin"), "rb") as f:
        assert_bytes("curl's POST output file vs the posted body", post, f.read())
    conns = srv.conns(2)
    procs, total = agent.final_stats()
    cap = judge(agent.pcap, ts_window=(t0 - 10**9, int(time.time() * 1e9) + 10**9))
    check_against_server(cap, conns)
    # the request and the response bodies are in there, not only headers
    get_st = cap.one(client_port=conns[0].peer_port)
    check(get_st.bytes(1).endswith(body), "GET stream s2c does not end with the 1 MiB body")
    post_st = cap.one(client_port=conns[1].peer_port)
    check(post_st.bytes(0).endswith(post), "POST stream c2s does not end with the posted body")
    check(post_st.bytes(1).endswith(post), "POST stream s2c does not end with the echoed body")
    for p, c in ((get, conns[0]), (pst, conns[1])):
        ps = proc_stats(procs, p.pid)
        check(ps is not None, f"agent's exit stats have no line for curl pid {p.pid}: "
              f"{short(agent.stderr_text, 800)}")
        check(stat_int(ps, "conns") == 1, f"curl pid {p.pid}: conns={ps.get('conns')}, want 1")
        check(ps.get("tls") == "openssl", f"curl pid {p.pid}: tls={ps.get('tls')}, want openssl")
        check(stat_int(ps, "c2s_bytes") == len(c.c2s) and stat_int(ps, "s2c_bytes") == len(c.s2c),
              f"curl pid {p.pid} stats c2s_bytes={ps.get('c2s_bytes')} s2c_bytes="
              f"{ps.get('s2c_bytes')}, the server saw {len(c.c2s)}/{len(c.s2c)}")
    check(stat_int(total, "dropped_bytes") == 0 and stat_int(total, "gap_bytes") == 0,
          f"drops in a plain run: {total}")
