# Integration test 8: close() in one thread racing SSL_free in another on the capture library's fd table.
import os
import platform

from tmlib import (Agent, certs, check, need_build, need_tool, proc_stats, prog, short, stat_int,
                   timeout)

ITER = 1500


@timeout(120)
def test_close_vs_free_under_capture(env):
    """closerace under the preloaded library (UBSan in the sanitizer build):
    every connection closed exactly once (no orphan CLOSE, none left open)."""
    cr = prog("closerace")
    c = certs()
    agent = Agent(env).start()
    p = env.captured("closerace", agent.sock, [cr, c["cert"], c["key"], str(ITER)])
    rc = p.wait(100)
    check(rc == 0 and p.out().strip() == b"DONE %d" % ITER and p.err() == b"",
          f"closerace exited {rc}: {short(p.out())} {short(p.err())}")
    procs, total = agent.final_stats()
    ps = proc_stats(procs, p.pid)
    check(ps is not None and stat_int(ps, "conns") == 2 * ITER,
          f"closerace stats {ps}: want conns={2 * ITER} (client and server ends)")
    check(stat_int(ps, "orphan_records") == 0 and stat_int(ps, "bad_records") == 0,
          f"a CLOSE for a connection already closed (or never opened): {ps}")


@timeout(200)
def test_close_vs_free_tsan(env):
    """closerace linked with the capture sources under ThreadSanitizer: no
    data race, no use after free between close() and SSL_free()."""
    tsan = prog("closerace-tsan")
    need_build(tsan)
    c = certs()
    agent = Agent(env).start()
    # without address randomisation: ThreadSanitizer's fixed shadow layout
    # clashes with some kernels' mmap randomisation
    argv = [need_tool("setarch"), platform.machine(), "-R", tsan, c["cert"], c["key"], "600"]
    p = env.spawn("closerace-tsan", argv,
                  extra_env={"TLSMIRROR_SOCKET": agent.sock,
                             "TSAN_OPTIONS": "halt_on_error=1 exitcode=66",
                             "LD_LIBRARY_PATH": os.environ.get("LD_LIBRARY_PATH", "")})
    rc = p.wait(180)
    check(rc == 0 and b"ThreadSanitizer" not in p.err(),
          f"closerace-tsan exited {rc}: {short(p.err(), 3000)}")
    agent.final_stats()
