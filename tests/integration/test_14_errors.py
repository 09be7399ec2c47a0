# Integration test 14: errors that name what failed: --mss below the minimum, -w into a missing directory, unloadable --cert/--key/--ca (path and OpenSSL's reason).
import subprocess

from tmlib import TLSMIRROR, certs, check, free_port, need_build, short, timeout


def cases(env):
    """(argv, exit codes allowed, strings stderr must contain)."""
    c = certs()
    garbage = env.path("garbage.pem")
    with open(garbage, "w") as f:
        f.write("this is not a PEM file\n")
    missing = env.path("no-such-dir", "cert.pem")
    out = env.path("out.pcap")
    tun = ["-t", "127.0.0.1:%d" % free_port()]
    col = ["-C", "-l", "127.0.0.1:%d" % free_port(), "-w", out]
    return [
        (["--mss", "64", "-w", out], (2,), ["--mss", "'64'", "88"]),
        (["--mss", "87", "-w", out], (2,), ["--mss", "88"]),
        (["-w", env.path("no-such-dir", "x.pcap")], (1,),
         [env.path("no-such-dir", "x.pcap"), "No such file or directory"]),
        (tun + ["--cert", missing, "--key", c["key"], "--ca", c["cert"]], (1,),
         ["--cert", missing, "No such file or directory"]),
        (tun + ["--cert", garbage, "--key", c["key"], "--ca", c["cert"]], (1,),
         ["--cert", garbage, "PEM routines", "no start line"]),
        (tun + ["--cert", c["cert"], "--key", garbage, "--ca", c["cert"]], (1,),
         ["--key", garbage, "routines::"]),
        (tun + ["--cert", c["cert"], "--key", c["key"], "--ca", missing], (1,),
         ["--ca", missing, "No such file or directory"]),
        (col + ["--cert", garbage, "--key", c["key"], "--ca", c["cert"]], (1,),
         ["--cert", garbage, "no start line"]),
    ]


@timeout(60)
def test_errors_name_the_cause(env):
    need_build(TLSMIRROR)
    problems = []
    for n, (argv, rcs, must) in enumerate(cases(env)):
        shown = " ".join(["tlsmirror"] + argv)
        p = env.spawn("bad%d" % n, [TLSMIRROR, "--socket", env.path("s%d.sock" % n)] + argv)
        try:
            rc = p.popen.wait(timeout=5)
        except subprocess.TimeoutExpired:
            problems.append("`%s` still running after 5 s (accepted?)" % shown)
            p.kill_group()
            continue
        err = p.err().decode("utf-8", "replace")
        if rc not in rcs:
            problems.append("`%s` exited %d, expected %s; stderr %r" % (shown, rc, rcs, short(err)))
        for m in must:
            if m not in err:
                problems.append("`%s`: stderr does not name %r: %r" % (shown, m, short(err, 400)))
    check(not problems, "error messages:\n  " + "\n  ".join(problems))
