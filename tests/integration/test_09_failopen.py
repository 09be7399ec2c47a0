# Integration test 9: fail-open: no agent, agent SIGKILLed mid-transfer, agent restarted under a running client.
import os
import re
import signal
import time

from tmlib import (HELPERS, LIBRARY, PYTHON, Agent, RecServer, assert_bytes, certs,
                   check, check_stream, free_port, gen_bytes, judge, need_build, need_tool, prog,
                   run_three_ways, short, timeout, wait_until)


def norm(b):
    """Run-to-run noise in messages (curl's 'after N ms')."""
    return re.sub(rb"after \d+ ms", b"after N ms", b)


@timeout(120)
def test_no_agent(env):
    c = certs()
    need_build(LIBRARY)
    srv = RecServer(env)
    curl = need_tool("curl")
    dead = free_port()
    nosock = env.path("no-agent.sock")
    base = [curl, "-sS", "--resolve", f"localhost:{srv.port}:127.0.0.1",
            "-w", "%{http_code} %{size_download}\\n"]
    cases = {
        "curl-get": base + ["--cacert", c["cert"], f"https://localhost:{srv.port}/size/300000",
                            "-o", "OUT"],
        "curl-post": base + ["--cacert", c["cert"], "--data-binary", "@" + os.path.abspath(__file__),
                             f"https://localhost:{srv.port}/sum"],
        "curl-untrusted": base + [f"https://localhost:{srv.port}/size/10"],
        "curl-refused": base + ["--cacert", c["cert"], f"https://127.0.0.1:{dead}/"],
        "python-fetch": [PYTHON, os.path.join(HELPERS, "pyprogs.py"), "fetch", "--port",
                         str(srv.port), "--cert", c["cert"], "/size/1000", "/seq/5", "/size/70000"],
        "python-badname": [PYTHON, os.path.join(HELPERS, "pyprogs.py"), "fetch", "--port",
                           str(srv.port), "--cert", c["cert"], "--verify-name", "wrong.example",
                           "/seq/1"],
        "mtclient": [prog("mtclient"), "127.0.0.1", str(srv.port), c["cert"], "2", "3", "1000"],
    }
    srv_echo = RecServer(env, mode="echo", name="echo")
    cases["mtclient"][2] = str(srv_echo.port)
    for name, argv in cases.items():
        results = []
        for rc, out, err in run_three_ways(env, name, argv, nosock):
            if name == "mtclient":  # local ports and thread interleaving differ run to run
                out = re.sub(rb"^(conn \d+ \d+) \d+", rb"\1 PORT", out, flags=re.M)
                out = b"\n".join(sorted(out.splitlines()))
            results.append((rc, norm(out), norm(err)))
        (rc0, o0, e0), (rc1, o1, e1), (rc2, o2, e2) = results
        check((rc1, o1, e1) == (rc0, o0, e0),
              f"{name} with LD_PRELOAD={os.path.basename(LIBRARY)} and no agent differs from "
              f"the run without it:\n  without: exit {rc0}, stdout {short(o0)!r}, stderr "
              f"{short(e0)!r}\n  with:    exit {rc1}, stdout {short(o1)!r}, stderr {short(e1)!r}")
        e2_app = b"\n".join(l for l in e2.splitlines() if not l.startswith(b"tlsmirror"))
        e0_cmp = b"\n".join(e0.splitlines())
        check((rc2, o2, e2_app) == (rc0, o0, e0_cmp),
              f"{name} under `tlsmirror run` with no agent differs from the plain run:\n"
              f"  without: exit {rc0}, stdout {short(o0)!r}, stderr {short(e0)!r}\n"
              f"  run:     exit {rc2}, stdout {short(o2)!r}, stderr {short(e2)!r}")
        if name == "curl-get":
            with open(env.path("curl-get-plain.out"), "rb") as f:
                ref = f.read()
            for mode in ("preload", "run"):
                with open(env.path(f"curl-get-{mode}.out"), "rb") as f:
                    assert_bytes(f"curl output file ({mode})", ref, f.read())


@timeout(120)
def test_agent_killed_mid_transfer(env):
    c = certs()
    size = 48 << 20
    body = gen_bytes(size, 91)
    with open(env.path("big.bin"), "wb") as f:
        f.write(body)
    srv = RecServer(env, body=env.path("big.bin"), rate=16 << 20)  # ~3 s transfer
    agent = Agent(env).start()
    t0 = time.monotonic()
    p = env.captured("curl", agent.sock,
                     [need_tool("curl"), "-sS", "--cacert", c["cert"], "--resolve",
                      f"localhost:{srv.port}:127.0.0.1", f"https://localhost:{srv.port}/body",
                      "-o", env.path("got.bin")])
    out = env.path("got.bin")
    wait_until(lambda: os.path.exists(out) and os.path.getsize(out) > (4 << 20), 20,
               "curl to have downloaded 4 MiB")
    # a C client too: it keeps SIGPIPE at its default, so a write to the dead agent would kill it
    echo = RecServer(env, mode="echo", name="echo")
    mt = env.captured("mtclient", agent.sock, [prog("mtclient"), "127.0.0.1", str(echo.port),
                                               c["cert"], "1", "40", "5000", "50"])
    time.sleep(0.5)
    agent.proc.signal(signal.SIGKILL)
    agent.proc.wait(10)
    check(os.path.getsize(out) < size, "the download finished before the agent was killed; "
          "the test needs a slower transfer")
    rc = p.wait(60)
    dt = time.monotonic() - t0
    check(rc == 0 and p.err() == b"", f"curl after the agent was SIGKILLed: exit {rc}, "
          f"stderr {short(p.err())!r}")
    with open(out, "rb") as f:
        assert_bytes("downloaded file after agent SIGKILL", body, f.read())
    check(dt < 15, f"download took {dt:.1f}s, at the server's rate it takes ~3s")
    rc = mt.wait(60)
    check(rc == 0 and mt.err() == b"", f"mtclient after the agent was SIGKILLed: exit {rc} "
          f"(signal {-rc if rc < 0 else 0}), stderr {short(mt.err())!r}")
    check(len(echo.conns(40)) == 40, "not all 40 mtclient connections reached the server")


@timeout(120)
def test_agent_restart(env):
    c = certs()
    srv = RecServer(env)
    sock = env.path("agent.sock")
    a1 = Agent(env, name="agent1", sock=sock).start()
    log = env.path("periodic.log")
    cl = env.captured("periodic", sock, [PYTHON, os.path.join(HELPERS, "pyprogs.py"), "periodic",
                                         "--port", str(srv.port), "--cert", c["cert"],
                                         "--interval", "0.1", "--duration", "9", "--log", log])
    time.sleep(2.5)
    a1.stop()
    t_stop = time.time()
    time.sleep(0.3)
    a2 = Agent(env, name="agent2", sock=sock).start()
    t_new = time.time()
    rc = cl.wait(30)
    check(rc == 0 and cl.err() == b"", f"periodic client across the agent restart: exit {rc}, "
          f"stderr {short(cl.err())!r}")
    a2.stop()
    reqs = []
    with open(log) as f:
        for line in f:
            i, t, port, status = line.split()
            check(status == "ok", f"request {i}: {status}")
            reqs.append((int(i), float(t), int(port)))
    check(len(reqs) > 50, f"only {len(reqs)} requests made in 9 s")
    conns = {cn.peer_port: cn for cn in srv.conns(len(reqs))}
    with open(env.path("restart-times"), "w") as f:
        f.write(f"agent1 stopped {t_stop:.3f}, agent2 ready {t_new:.3f}\n")
    cap1, cap2 = judge(a1.pcap), judge(a2.pcap)
    before = [r for r in reqs if r[1] < t_stop - 0.5]
    after = [r for r in reqs if r[1] > t_new + 3.0]
    check(len(before) > 10 and len(after) > 10, f"{len(before)} requests before the restart, "
          f"{len(after)} more than 3 s after it: timing off")
    for name, cap, group in (("first agent", cap1, before), ("restarted agent", cap2, after)):
        missing = [r[0] for r in group if not cap.find(client_port=r[2], server_port=srv.port)]
        check(not missing, f"{name}'s capture lacks requests {missing[:10]} "
              f"({len(missing)} of {len(group)}); {cap.describe(4)}")
        for i, t, port in group:
            cn = conns[port]
            check_stream(cap.one(client_port=port), c2s=cn.c2s, s2c=cn.s2c)
