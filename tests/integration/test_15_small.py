# Integration test 15 (small processes): many idle TLS processes pay little memory and little first-call time.
import os
import statistics

from tmlib import (LIBRARY, Agent, RecServer, certs, check, need_build, prog, timeout,
                   wait_until)

# Processes per kind (with the library, without it); the issue measured 200.
N = int(os.environ.get("TLSMIRROR_SMALL_PROCS", "50"))
RUNS = 25                     # sequential fresh processes per kind for the first-call time
MAX_EXTRA_PSS_KIB = 1024      # per idle TLS process
MAX_EXTRA_FIRST_CALL_US = 1000


def pss_kib(pid):
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            if line.startswith("Pss:"):
                return int(line.split()[1])
    raise AssertionError(f"no Pss line in /proc/{pid}/smaps_rollup")


def run_idle_clients(env, port, cert, sock, n, while_idle=None):
    """Starts n idleclients without and n with the library, interleaved, all
    alive at once (so shared pages are split alike); returns per kind the
    PSS (KiB) and first-call durations (us) of each process. while_idle()
    runs while they all hold their connections."""
    need_build(LIBRARY)
    clients = []
    for i in range(n):
        for kind in ("plain", "lib"):
            extra = {"LD_PRELOAD": LIBRARY, "TLSMIRROR_SOCKET": sock} if kind == "lib" else {}
            r, w = os.pipe()  # stdin: EOF ends the client
            p = env.spawn(f"idle-{kind}-{i}", [prog("idleclient"), "127.0.0.1", str(port), cert],
                          stdin=r, extra_env=extra)
            os.close(r)
            clients.append((kind, p, w))

    def all_ready():
        for kind, p, w in clients:
            check(p.alive() or p.popen.returncode == 0,
                  f"{p.name} exited {p.popen.returncode}: {p.err()[:300]!r}")
            if not p.out().startswith(b"ready"):
                return False
        return True
    wait_until(all_ready, 120, f"{2 * n} idle clients connected")
    res = {"plain": [], "lib": []}
    for kind, p, w in clients:
        res[kind].append(pss_kib(p.pid))
    if while_idle:
        while_idle()
    for kind, p, w in clients:
        os.close(w)
    for kind, p, w in clients:
        check(p.wait(30) == 0, f"{p.name} exited {p.popen.returncode}: {p.err()[:300]!r}")
        check(p.err() == b"", f"{p.name} wrote to stderr: {p.err()[:300]!r}")
    return res


def first_calls(env, port, cert, sock, runs):
    """Fresh processes one at a time, alternately without and with the library:
    per kind the medians of their first TLS calls' (SSL_connect and the first
    SSL_write) wall-clock time and of the CPU time the process spent in them
    (us). The CPU time is the library's cost to the application; the wall
    clock on this shared 2-core machine also holds the agent's and the other
    tests' competition for the cores, so it is reported, not judged."""
    res = {"plain": ([], []), "lib": ([], [])}
    for i in range(runs):
        for kind in ("plain", "lib"):
            extra = {"LD_PRELOAD": LIBRARY, "TLSMIRROR_SOCKET": sock} if kind == "lib" else {}
            rc, out, err = env.run(f"first-{kind}-{i}", [prog("idleclient"), "127.0.0.1",
                                                         str(port), cert], extra_env=extra)
            check(rc == 0 and err == b"" and out.startswith(b"ready"),
                  f"idleclient ({kind}) exited {rc}, stdout {out[:100]!r}, stderr {err[:300]!r}")
            _, t_conn, t_write, t_cpu = out.split()[:4]
            res[kind][0].append(int(t_conn) + int(t_write))
            res[kind][1].append(int(t_cpu))
    return {k: (statistics.median(w), statistics.median(c)) for k, (w, c) in res.items()}


def report(what, pss_res, first):
    pss = {k: statistics.mean(v) for k, v in pss_res.items()}
    (wp, cp), (wl, cl) = first["plain"], first["lib"]
    line = (f"{what}: {N} idle processes each: PSS mean {pss['plain']:.0f} KiB without, "
            f"{pss['lib']:.0f} KiB with the library (+{pss['lib'] - pss['plain']:.0f} KiB); "
            f"first TLS calls of a fresh process, median of {RUNS}: CPU {cp:.0f} us without, "
            f"{cl:.0f} us with (+{cl - cp:.0f} us), wall clock {wp:.0f} us without, {wl:.0f} us "
            f"with (+{wl - wp:.0f} us)")
    print(line)
    check(pss["lib"] - pss["plain"] <= MAX_EXTRA_PSS_KIB,
          f"{line}: more than {MAX_EXTRA_PSS_KIB} KiB extra PSS per idle TLS process")
    check(cl - cp <= MAX_EXTRA_FIRST_CALL_US,
          f"{line}: the first TLS calls cost more than {MAX_EXTRA_FIRST_CALL_US} us more CPU")


@timeout(300)
def test_idle_processes_with_agent(env):
    """N idle TLS clients attached to a running agent (each has its ring)."""
    c = certs()
    srv = RecServer(env, mode="echo")
    agent = Agent(env).start()

    def all_attached():
        procs, total, _ = agent.stats()
        attached = [p for p in procs if p.get("state") == "attached" and
                    p.get("comm") == "idleclient" and p.get("c2s_bytes") == "108"]
        check(len(attached) == N, f"{len(attached)} idle clients attached to the agent with "
              f"their request mirrored, expected {N}: {procs[:2]}")
    res = run_idle_clients(env, srv.port, c["cert"], agent.sock, N, all_attached)
    report("with an agent", res, first_calls(env, srv.port, c["cert"], agent.sock, RUNS))
    agent.final_stats()


@timeout(300)
def test_idle_processes_without_agent(env):
    """N idle TLS clients with the library and no agent: nothing to commit."""
    c = certs()
    srv = RecServer(env, mode="echo")
    sock = env.path("no-agent.sock")
    res = run_idle_clients(env, srv.port, c["cert"], sock, N)
    report("without an agent", res, first_calls(env, srv.port, c["cert"], sock, RUNS))
