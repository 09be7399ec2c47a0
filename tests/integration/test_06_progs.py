# Integration tests 6-8: many threads (mtclient), fork (forkclient), SSL_peek (peekclient), all byte-exact.
import re
import subprocess

from tmlib import (Agent, RecServer, certs, check, check_against_server, judge, proc_stats,
                   prog, short, stat_int, timeout, wait_until)

THREADS, CONNS, SIZE = 8, 25, 20000


@timeout(120)
def test_many_threads(env):
    mt = prog("mtclient")
    srv = RecServer(env, mode="echo")
    agent = Agent(env).start()
    p = env.captured("mtclient", agent.sock, [mt, "127.0.0.1", str(srv.port), certs()["cert"],
                                              str(THREADS), str(CONNS), str(SIZE)])
    rc = p.wait(90)
    check(rc == 0 and p.err() == b"", f"mtclient under capture exited {rc}: {short(p.err())}")
    lines = re.findall(rb"^conn (\d+) (\d+) (\d+) (\d+)$", p.out(), re.M)
    check(len(lines) == THREADS * CONNS, f"mtclient reported {len(lines)} connections, "
          f"want {THREADS * CONNS}")
    conns = srv.conns(THREADS * CONNS)
    procs, total = agent.final_stats()
    # 200 connections in a second: the kernel may give a client port again once
    # its earlier connection ended (excused only then, by the judge)
    cap = judge(agent.pcap, allow_port_reuse=True)
    check_against_server(cap, conns)
    ps = proc_stats(procs, p.pid)
    check(ps is not None and stat_int(ps, "conns") == THREADS * CONNS,
          f"stats for mtclient pid {p.pid}: {ps}, want conns={THREADS * CONNS}")
    check(stat_int(ps, "c2s_bytes") == sum(len(c.c2s) for c in conns) and
          stat_int(ps, "s2c_bytes") == sum(len(c.s2c) for c in conns),
          f"stats bytes {ps} differ from the server's totals")
    check(stat_int(total, "dropped_bytes") == 0, f"drops: {total}")


@timeout(90)
def test_fork(env):
    fc = prog("forkclient")
    nchild = 3
    srv = RecServer(env, mode="echo")
    agent = Agent(env).start()
    p = env.captured("forkclient", agent.sock,
                     [fc, "127.0.0.1", str(srv.port), certs()["cert"], str(nchild), "30000"],
                     stdin=subprocess.PIPE)
    wait_until(lambda: b"READY" in p.out() or not p.alive(), 30, "forkclient READY")
    check(p.alive(), f"forkclient exited early: {short(p.err())}")
    made = re.findall(rb"^conn (\d+) (\d+) (\d+)$", p.out(), re.M)
    per_pid = {}
    for pid, port, n in made:
        per_pid.setdefault(int(pid), []).append(int(port))
    check(len(per_pid) == nchild + 1 and all(len(v) == 2 for v in per_pid.values()),
          f"forkclient connections per pid {per_pid}, want 2 in the parent and each of "
          f"{nchild} children")
    check(p.pid in per_pid, f"parent pid {p.pid} made no connection: {per_pid}")
    # every process is still alive: stats must show each with its own two connections
    procs, total, raw = agent.stats()
    for pid in per_pid:
        ps = proc_stats(procs, pid)
        check(ps is not None, f"`tlsmirror stats` has no line for forkclient pid {pid} "
              f"({'parent' if pid == p.pid else 'child'}):\n{raw}")
        check(stat_int(ps, "conns") == 2, f"pid {pid} has conns={ps.get('conns')}, want 2:\n{raw}")
    p.popen.stdin.write(b"go\n")
    p.popen.stdin.close()
    rc = p.wait(30)
    check(rc == 0 and p.err() == b"", f"forkclient exited {rc}: {short(p.err())}")
    conns = srv.conns(2 * (nchild + 1))
    procs, total = agent.final_stats()
    cap = judge(agent.pcap)
    check_against_server(cap, conns)
    check(stat_int(total, "dropped_bytes") == 0, f"drops: {total}")


@timeout(60)
def test_peek(env):
    pk = prog("peekclient")
    srv = RecServer(env, mode="echo")
    agent = Agent(env).start()
    p = env.captured("peekclient", agent.sock,
                     [pk, "127.0.0.1", str(srv.port), certs()["cert"], "100000"])
    rc = p.wait(30)
    check(rc == 0 and p.err() == b"", f"peekclient exited {rc}: {short(p.err())}")
    m = re.search(rb"conn (\d+) (\d+) (\d+)", p.out())
    check(m, f"peekclient output: {short(p.out())}")
    conns = srv.conns(1)
    check(int(m.group(3)) == len(conns[0].s2c), f"peekclient read {m.group(3)} bytes, "
          f"the server sent {len(conns[0].s2c)}")
    procs, total = agent.final_stats()
    cap = judge(agent.pcap)
    # peeked bytes must appear once: s2c equals exactly what the server sent
    check_against_server(cap, conns)
    ps = proc_stats(procs, p.pid)
    check(ps is not None and stat_int(ps, "s2c_bytes") == len(conns[0].s2c),
          f"peekclient stats {ps}: s2c_bytes should be {len(conns[0].s2c)} (peeks not counted)")
