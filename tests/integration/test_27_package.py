# Integration test 27: `make deb`: contents, lintian, the units under systemd-analyze verify, the maintainer scripts run in a controlled way, the packaged agent and collector working from a throwaway root.
import os
import re
import shutil
import signal
import subprocess

from tmlib import (ROOT, RecServer, check, check_against_server, free_port, judge, need_tool,
                   short, timeout, wait_listening, wait_until, gen_bytes)

WANT = ["usr/bin/tlsmirror", "usr/lib/tlsmirror/libtlsmirror.so",
        "usr/share/man/man1/tlsmirror.1.gz", "usr/share/doc/tlsmirror/copyright",
        "usr/share/doc/tlsmirror/changelog.gz", "usr/share/doc/tlsmirror/operations.md",
        "usr/share/doc/tlsmirror/README.md", "lib/systemd/system/tlsmirror.service",
        "lib/systemd/system/tlsmirror-collector.service", "etc/tlsmirror/agent.conf",
        "etc/tlsmirror/collector.conf"]

_deb = {}


def build_deb():
    """`make deb` once per run; returns the .deb's path."""
    if "path" in _deb:
        return _deb["path"]
    build = os.environ.get("BUILD", "build")
    r = subprocess.run(["make", "-s", f"BUILD={build}", "deb"], cwd=ROOT, capture_output=True,
                       timeout=300)
    check(r.returncode == 0, f"make deb failed: {short(r.stdout + r.stderr, 1500)}")
    bdir = os.path.join(ROOT, build)
    debs = sorted((f for f in os.listdir(bdir) if re.fullmatch(r"tlsmirror_[^_]+_[^_]+\.deb", f)),
                  key=lambda f: os.path.getmtime(os.path.join(bdir, f)))
    check(debs, f"no {build}/tlsmirror_VERSION_ARCH.deb after make deb")
    path = os.path.join(bdir, debs[-1])
    _deb["path"] = path
    return path


def unpack(env):
    """The package's files in a throwaway root, with the host's own units beside
    them (systemd-analyze resolves the targets the units name)."""
    deb = build_deb()
    root = env.path("root")
    os.makedirs(os.path.join(root, "lib", "systemd"))
    shutil.copytree("/lib/systemd/system", os.path.join(root, "lib", "systemd", "system"),
                    symlinks=True)
    r = subprocess.run(["dpkg-deb", "-x", deb, root], capture_output=True, timeout=60)
    check(r.returncode == 0, f"dpkg-deb -x: {short(r.stderr)}")
    ctl = env.path("control")
    r = subprocess.run(["dpkg-deb", "-e", deb, ctl], capture_output=True, timeout=60)
    check(r.returncode == 0, f"dpkg-deb -e: {short(r.stderr)}")
    return deb, root, ctl


@timeout(300)
def test_contents_and_lintian(env):
    deb, root, ctl = unpack(env)
    listing = subprocess.run(["dpkg-deb", "-c", deb], capture_output=True, timeout=30).stdout.decode()
    for f in WANT:
        check(re.search(rf"root/root .* \./{re.escape(f)}$", listing, re.M),
              f"the package lacks {f} (owned by root):\n{listing}")
    check(os.access(os.path.join(root, "usr/bin/tlsmirror"), os.X_OK), "tlsmirror not executable")
    fields = subprocess.run(["dpkg-deb", "-f", deb, "Package", "Depends", "Architecture"],
                            capture_output=True, timeout=30).stdout.decode()
    check("Package: tlsmirror" in fields and "libssl3" in fields and "adduser" in fields,
          f"control fields: {fields}")
    with open(os.path.join(ctl, "conffiles")) as f:
        check(f.read().split() == ["/etc/tlsmirror/agent.conf", "/etc/tlsmirror/collector.conf"],
              "conffiles")
    for s in ("postinst", "prerm", "postrm"):
        check(os.access(os.path.join(ctl, s), os.X_OK), f"{s} not executable")
    r = subprocess.run(["man", "-l", os.path.join(root, "usr/share/man/man1/tlsmirror.1.gz")],
                       capture_output=True, timeout=30, env=dict(os.environ, MANPAGER="cat", PAGER="cat"))
    check(r.returncode == 0 and b"tlsmirror enable" in r.stdout, "the packaged man page")
    lintian = need_tool("lintian")
    r = subprocess.run([lintian, "--no-tag-display-limit", deb], capture_output=True, timeout=240)
    out = r.stdout.decode("utf-8", "replace")
    errors = [l for l in out.splitlines() if l.startswith("E:")]
    check(not errors and r.returncode == 0, f"lintian: exit {r.returncode}:\n{out}{short(r.stderr)}")


@timeout(120)
def test_units_verify(env):
    deb, root, ctl = unpack(env)
    units = [os.path.join(root, "lib/systemd/system", u)
             for u in ("tlsmirror.service", "tlsmirror-collector.service")]
    tool = need_tool("systemd-analyze")
    r = subprocess.run([tool, "verify", f"--root={root}"] + units, capture_output=True, timeout=60,
                       env=dict(os.environ, MANPATH=os.path.join(root, "usr/share/man")))
    check(r.returncode == 0 and r.stderr.strip() == b"" and r.stdout.strip() == b"",
          f"systemd-analyze verify: exit {r.returncode}: {short(r.stdout + r.stderr, 1500)}")
    # verify does fail on a unit it cannot accept (so the check above means something)
    bad = os.path.join(root, "lib/systemd/system", "tlsmirror-bad.service")
    with open(units[0]) as f, open(bad, "w") as g:
        g.write(f.read().replace("ProtectSystem=strict", "ProtectSystem=bogus"))
    r = subprocess.run([tool, "verify", f"--root={root}", bad], capture_output=True, timeout=60,
                       env=dict(os.environ, MANPATH=os.path.join(root, "usr/share/man")))
    check(b"bogus" in r.stderr, f"verify of a broken unit said nothing: {short(r.stderr)}")
    text = open(units[0]).read()
    for line in ("ExecStart=/usr/bin/tlsmirror --config /etc/tlsmirror/agent.conf",
                 "Restart=on-failure", "RuntimeDirectory=tlsmirror", "ProtectSystem=strict",
                 "NoNewPrivileges=yes", "CapabilityBoundingSet=CAP_NET_RAW CAP_NET_BIND_SERVICE\n",
                 "StateDirectory=tlsmirror"):
        check(line in text, f"tlsmirror.service lacks {line!r}")
    text = open(units[1]).read()
    check("ExecStart=/usr/bin/tlsmirror --config /etc/tlsmirror/collector.conf" in text,
          "the collector's ExecStart")


def fake_bin(env, names, log):
    """Commands that log their arguments to log and succeed (getent: as told)."""
    d = env.path("fakebin")
    os.makedirs(d, exist_ok=True)
    for n in names:
        with open(os.path.join(d, n), "w") as f:
            f.write(f'#!/bin/sh\necho "{n} $*" >> {log}\n')
            if n == "getent":
                f.write(f'[ -e {env.path("group-exists")} ]\n')
        os.chmod(os.path.join(d, n), 0o755)
    return d


@timeout(120)
def test_maintainer_scripts(env):
    deb, root, ctl = unpack(env)
    log = env.path("calls.log")
    fb = fake_bin(env, ["getent", "addgroup", "systemctl", "deb-systemd-helper",
                        "deb-systemd-invoke", "install"], log)
    base = {"PATH": f"{fb}:/usr/bin:/bin"}

    def run(script, *args, path=None, extra=None):
        if os.path.exists(log):
            os.unlink(log)
        e = dict(base, **(extra or {}))
        if path:
            e["PATH"] = path
        r = subprocess.run(["sh", "-e", os.path.join(ctl, script)] + list(args), env=e,
                           capture_output=True, timeout=30)
        check(r.returncode == 0, f"{script} {args}: exit {r.returncode}: {short(r.stderr)}")
        return open(log).read() if os.path.exists(log) else ""
    # first install: the group is created (system group), the agent's unit enabled
    calls = run("postinst", "configure")
    check("addgroup --system --quiet tlsmirror" in calls, f"postinst did not create the group:\n{calls}")
    check("deb-systemd-helper enable tlsmirror.service" in calls, f"agent unit not enabled:\n{calls}")
    check("enable tlsmirror-collector" not in calls, "the collector must not be enabled by default")
    check(os.path.isdir("/var/lib/tlsmirror") or "install -d -m 0750 /var/lib/tlsmirror" in calls,
          f"postinst did not make the agent's state directory:\n{calls}")
    # the group exists: not created again
    open(env.path("group-exists"), "w").close()
    calls = run("postinst", "configure", "0.0.9")
    check("addgroup" not in calls, f"postinst created an existing group:\n{calls}")
    # prerm remove: every drop-in goes (the admin's other drop-ins stay), even when
    # the binary is not there to do it
    units = env.path("systemd")
    for with_binary in (True, False):
        for u in ("nginx.service", "php8.2-fpm.service"):
            os.makedirs(os.path.join(units, u + ".d"), exist_ok=True)
            with open(os.path.join(units, u + ".d", "tlsmirror.conf"), "w") as f:
                f.write("[Service]\nEnvironment=LD_PRELOAD=/usr/lib/tlsmirror/libtlsmirror.so\n")
        with open(os.path.join(units, "nginx.service.d", "local.conf"), "w") as f:
            f.write("[Service]\n")
        p = f"{fb}:{os.path.join(root, 'usr/bin')}:/usr/bin:/bin" if with_binary else f"{fb}:/bin"
        run("prerm", "upgrade", "0.2.0", path=p, extra={"TLSMIRROR_SYSTEMD_DIR": units})
        check(os.path.exists(os.path.join(units, "nginx.service.d", "tlsmirror.conf")),
              "prerm upgrade removed a drop-in")
        run("prerm", "remove", path=p, extra={"TLSMIRROR_SYSTEMD_DIR": units})
        left = sorted(os.path.relpath(os.path.join(d, f), units)
                      for d, _, fs in os.walk(units) for f in fs)
        check(left == ["nginx.service.d/local.conf"],
              f"prerm remove ({'with' if with_binary else 'without'} the binary) left {left}")
    calls = run("postrm", "purge")
    check("deb-systemd-helper purge tlsmirror.service" in calls, f"postrm purge:\n{calls}")


@timeout(120)
def test_packaged_agent_and_collector(env):
    """The unpacked binary finds its library, reads the packaged configuration
    (the paths it names are overridden on the command line), and mirrors curl."""
    deb, root, ctl = unpack(env)
    binary = os.path.join(root, "usr/bin/tlsmirror")
    sock, pcap, mport = env.path("a.sock"), env.path("a.pcap"), free_port()
    ag = env.spawn("agent", [binary, "--config", os.path.join(root, "etc/tlsmirror/agent.conf"),
                             "--socket", sock, "-w", pcap, "--metrics", f"127.0.0.1:{mport}"])
    wait_until(lambda: os.path.exists(sock), 10, f"the packaged agent: {short(ag.err())}")
    body = gen_bytes(30000, 27)
    with open(env.path("body.bin"), "wb") as f:
        f.write(body)
    srv = RecServer(env, body=env.path("body.bin"))
    from tmlib import certs
    c = certs()
    cl = env.spawn("curl", [binary, "run", "--socket", sock, "--", need_tool("curl"), "-sS",
                            "--cacert", c["cert"], "--resolve", f"localhost:{srv.port}:127.0.0.1",
                            f"https://localhost:{srv.port}/body", "-o", env.path("got")])
    check(cl.wait(30) == 0 and cl.err() == b"", f"curl under the packaged library: {short(cl.err())}")
    conns = srv.conns(1)
    r = subprocess.run(["curl", "-sS", f"http://127.0.0.1:{mport}/metrics"], capture_output=True,
                       timeout=10)
    check(b"tlsmirror_agent_conns_total 1" in r.stdout, f"packaged agent's metrics: {short(r.stdout)}")
    ag.signal(signal.SIGTERM)
    check(ag.wait(15) == 0, f"packaged agent exit: {short(ag.err())}")
    check_against_server(judge(pcap), conns)
    # the collector's configuration, with certificates from the packaged `tlsmirror pki`
    pki = env.path("pki")
    for argv in (["pki", "init", pki], ["pki", "issue", pki, "sensor", "--collector", "--host",
                                        "localhost"]):
        rc, out, err = env.run("pki", [binary] + argv)
        check(rc == 0, f"tlsmirror {' '.join(argv)}: {short(err)}")
    lport = free_port()
    csock = env.path("c.sock")
    col = env.spawn("collector", [binary, "--config", os.path.join(root, "etc/tlsmirror/collector.conf"),
                                  "--socket", csock, "-l", f"127.0.0.1:{lport}", "--ca",
                                  f"{pki}/ca.pem", "--cert", f"{pki}/sensor.pem", "--key",
                                  f"{pki}/sensor.key", "-w", env.path("c.pcap"), "--metrics",
                                  f"127.0.0.1:{free_port()}"])
    wait_listening(lport, proc=col)
    rc, out, err = env.run("cstats", [binary, "stats", "--socket", csock])
    check(rc == 0 and b"collector listen=127.0.0.1:" in out and b"tls=yes" in out,
          f"packaged collector: {short(out + err)}")
    col.signal(signal.SIGTERM)
    check(col.wait(15) == 0, f"collector exit: {short(col.err())}")
