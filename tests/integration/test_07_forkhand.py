# Integration test 7: a TLS connection handed over to a child by fork() is mirrored as ONE connection, byte-exact.
import re
import socket
import ssl

from tmlib import (Agent, RecServer, certs, check, check_against_server, check_stream,
                   free_port, gen_bytes, judge, prog, proc_stats, short, stat_int, timeout,
                   wait_until)

SIZE = 30000


def _client_case(env, mode):
    fh = prog("forkhand")
    srv = RecServer(env, mode="echo")
    agent = Agent(env).start()
    p = env.captured("forkhand", agent.sock,
                     [fh, mode, "127.0.0.1", str(srv.port), certs()["cert"], str(SIZE)])
    rc = p.wait(60)
    check(rc == 0 and p.err() == b"", f"forkhand {mode} exited {rc}: {short(p.err())}")
    # the child may outlive the parent (mode exit): wait for its report
    wait_until(lambda: re.search(rb"^conn ", p.out(), re.M), 30, "the child's report")
    m = re.search(rb"^conn (\d+) (\d+) (\d+)$", p.out(), re.M)
    check(m and int(m.group(1)) != p.pid, f"forkhand {mode}: the child reported no "
          f"connection: {short(p.out())}")
    conns = srv.conns(1)
    procs, total = agent.final_stats()
    cap = judge(agent.pcap)  # one SYN, FIN at the end, no gap, no tshark analysis flag
    check_against_server(cap, conns)  # exactly one TCP connection, byte-exact
    check(stat_int(total, "duplicate_conns") == 0, f"a duplicate was counted: {total}")
    check(stat_int(total, "dropped_bytes") == 0, f"drops: {total}")
    return procs, conns


@timeout(90)
def test_fork_client_child_uses(env):
    """connect + handshake, fork; the child sends the request and reads the
    response; the parent closes its copy without SSL_shutdown."""
    procs, conns = _client_case(env, "client")
    check(len(conns[0].c2s) > SIZE and len(conns[0].s2c) > SIZE,
          f"the server saw {len(conns[0].c2s)}/{len(conns[0].s2c)} bytes")


@timeout(90)
def test_fork_split_parent_then_child(env):
    """the parent writes the first half of the request, forks, the child
    writes the rest: both parts in order, one connection."""
    _client_case(env, "split")


@timeout(90)
def test_fork_parent_holds_copy(env):
    """the parent keeps its copy open while the child uses the connection
    (the child's OPEN arrives while the parent's flow is open: no duplicate),
    then closes it after the child exited."""
    _client_case(env, "hold")


@timeout(90)
def test_fork_parent_exits_first(env):
    """the parent exits right after the fork without closing anything; the
    child uses the connection 500 ms later: still one connection."""
    _client_case(env, "exit")


@timeout(90)
def test_prefork_server(env):
    """a pre-fork server accepts and handshakes in the parent and serves in
    the child; the parent frees its copy without SSL_shutdown."""
    fh = prog("forkhand")
    c = certs()
    nconn = 3
    port = free_port()
    agent = Agent(env).start()
    p = env.captured("forkhand", agent.sock, [fh, "server", str(port), c["cert"], c["key"],
                                               str(nconn)])
    wait_until(lambda: b"LISTENING" in p.out() or not p.alive(), 20, "forkhand LISTENING")
    check(p.alive(), f"forkhand server exited: {short(p.err())}")
    ctx = ssl.create_default_context(cafile=c["cert"])
    sent = []
    for i in range(nconn):
        body = gen_bytes(SIZE + i * 101, 40 + i)
        req = b"LEN %d\n" % len(body) + body
        with socket.create_connection(("127.0.0.1", port), timeout=20) as raw:
            with ctx.wrap_socket(raw, server_hostname="localhost") as s:
                s.sendall(req)
                want = b"ECHO %d\n" % len(body) + body[::-1]
                got = b""
                while len(got) < len(want):
                    b = s.recv(65536)
                    if not b:
                        break
                    got += b
                check(got == want, f"connection {i}: the server answered {len(got)} bytes, "
                      f"want {len(want)}")
                sent.append((s.getsockname()[1], req, want))
    wait_until(lambda: b"DONE" in p.out() or not p.alive(), 20, "forkhand DONE")
    rc = p.wait(20)
    check(rc == 0, f"forkhand server exited {rc}: {short(p.err())}")
    procs, total = agent.final_stats()
    cap = judge(agent.pcap)
    for cport, req, resp in sent:
        st = cap.one(client_port=cport, server_port=port)
        check_stream(st, c2s=req, s2c=resp, client=("127.0.0.1", cport),
                     server=("127.0.0.1", port))
    check(len(cap.syn_streams()) == nconn, f"{len(cap.syn_streams())} TCP connections in the "
          f"capture, want {nconn}: {cap.describe()}")
    check(stat_int(total, "duplicate_conns") == 0, f"a duplicate was counted: {total}")
    ps = proc_stats(procs, p.pid)
    check(ps is not None and stat_int(ps, "conns") == nconn,
          f"the pre-fork parent's stats {ps}: want conns={nconn}")
