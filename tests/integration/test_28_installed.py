# Integration test 28: the .deb installed for real (dpkg -i, apt install ./x.deb) into a throwaway copy of this machine: files, group, default configuration, a working mirror, maintainer scripts run twice, remove and purge; then under a real systemd as PID 1: the units, enable/status/disable with nginx, removal restarting it without the library.
import os
import re

from test_27_package import build_deb
from tmlib import SANITIZED, Skip, check, gen_bytes, judge, short, timeout, wait_until
from sysroot import SysRoot

LIB = "/usr/lib/tlsmirror/libtlsmirror.so"
DROPIN = "/etc/systemd/system/nginx.service.d/tlsmirror.conf"
PCAP = "/var/lib/tlsmirror/mirror.pcap"
NET_CAPS = (1 << 10) | (1 << 13)  # CAP_NET_BIND_SERVICE, CAP_NET_RAW


def put_deb(root):
    deb = build_deb()
    with open(deb, "rb") as f, open(root.path("/tmp/tlsmirror.deb"), "wb") as g:
        g.write(f.read())
    return "/tmp/tlsmirror.deb"


def make_cert(root, d):
    root.sh(f"mkdir -p {d} && openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 "
            f"-nodes -keyout {d}/key.pem -out {d}/cert.pem -days 2 -subj /CN=localhost "
            f"-addext subjectAltName=DNS:localhost,IP:127.0.0.1 2>/dev/null")


def package_files(root):
    """The package's files (not directories), from dpkg -L."""
    out = root.run(["dpkg", "-L", "tlsmirror"]).stdout.decode().split("\n")
    return [f for f in out if f.startswith("/") and not os.path.isdir(root.path(f))]


def status_of(root):
    r = root.run(["dpkg-query", "-W", "-f", "${Status}", "tlsmirror"], check_rc=False)
    return r.stdout.decode() if r.returncode == 0 else "not known"


def check_installed(root, conf_tail=None):
    check(status_of(root) == "install ok installed", f"dpkg status: {status_of(root)}")
    files = package_files(root)
    for f in ("/usr/bin/tlsmirror", LIB, "/lib/systemd/system/tlsmirror.service",
              "/lib/systemd/system/tlsmirror-collector.service", "/etc/tlsmirror/agent.conf",
              "/etc/tlsmirror/collector.conf", "/usr/share/man/man1/tlsmirror.1.gz"):
        check(f in files and os.path.isfile(root.path(f)), f"{f} not installed: {files}")
    groups = root.run(["getent", "group", "tlsmirror"], check_rc=False).stdout.decode()
    check(re.fullmatch(r"tlsmirror:x:(\d+):\n", groups) and int(groups.split(":")[2]) < 1000,
          f"group tlsmirror (a system group, once): {groups!r}")
    r = root.run(["grep", "-c", "^tlsmirror:", "/etc/group"], check_rc=False)
    check(r.stdout.strip() == b"1", f"group tlsmirror in /etc/group {r.stdout!r} times")
    left = root.run(["find", "/etc/tlsmirror", "-name", "*.dpkg-*"]).stdout
    check(left == b"", f"dpkg left copies of the configuration: {left!r}")
    if conf_tail:
        with open(root.path("/etc/tlsmirror/agent.conf")) as f:
            check(f.read().endswith(conf_tail), "the admin's edit of agent.conf was lost")
    return files


def check_gone(root, files):
    check(status_of(root) == "not known", f"after purge, dpkg still knows: {status_of(root)}")
    left = [f for f in files + ["/etc/tlsmirror", "/var/lib/tlsmirror", "/run/tlsmirror",
                                "/etc/systemd/system/multi-user.target.wants/tlsmirror.service"]
            if os.path.lexists(root.path(f))]
    check(not left, f"purge left {left}")
    r = root.run(["sh", "-c", "ls /etc/systemd/system/*.d/tlsmirror.conf 2>/dev/null"], check_rc=False)
    check(r.stdout == b"", f"purge left drop-ins: {r.stdout!r}")
    running = [p for p in root.ns_pids() if _exe(p) == "/usr/bin/tlsmirror"]
    check(not running, f"an agent still runs after purge: pids {running}")
    hooked = root.pids_mapping(LIB)
    check(not hooked, f"processes still have the capture library mapped: {hooked}")


def _exe(pid):
    """The program of a process of the root, as a path in the root."""
    try:
        exe = os.readlink(f"/proc/{pid}/exe").replace(" (deleted)", "")
        top = os.readlink(f"/proc/{pid}/root").rstrip("/")
    except OSError:
        return None
    return exe[len(top):] if top and exe.startswith(top + "/") else exe


def mirrored(root, want_c2s, want_s2c):
    """The packaged agent's pcap: judged, with one stream carrying exactly these bytes."""
    cap = judge(root.path(PCAP))
    for st in cap.streams:
        if st.bytes(0) == want_c2s and st.bytes(1) == want_s2c:
            return cap
    raise AssertionError(f"no stream of {PCAP} carries the request and answer "
                         f"({len(want_c2s)}, {len(want_s2c)} bytes): {cap.describe()}")


@timeout(240)
def test_dpkg_into_throwaway_root(env):
    """dpkg -i on a copy of this machine without an init: the files, the group,
    the default configuration running as is (tlsmirror --config), curl to
    openssl s_server mirrored into its pcap; reinstall, remove, reinstall, purge."""
    root = SysRoot(env, "chroot")
    try:
        deb = put_deb(root)
        # a fresh machine: no tlsmirror before (this one may have had `make install`)
        root.sh("if getent group tlsmirror >/dev/null; then groupdel tlsmirror; fi; "
                "rm -rf /etc/tlsmirror /usr/local/bin/tlsmirror /usr/local/lib/tlsmirror "
                "/etc/systemd/system/*.d/tlsmirror.conf; "
                "! dpkg-query -W tlsmirror >/dev/null 2>&1 || dpkg --purge tlsmirror")
        root.run(["dpkg", "-i", deb])
        files = check_installed(root)
        # the default configuration, unchanged, without systemd to make the unit's
        # RuntimeDirectory and StateDirectory: the agent runs, its socket in
        # /run/tlsmirror, its pcap in /var/lib/tlsmirror
        check(not os.path.exists(root.path("/run/tlsmirror")), "/run/tlsmirror before the agent")
        agent = root.spawn("agent", ["tlsmirror", "--config", "/etc/tlsmirror/agent.conf"])
        sock = root.path("/run/tlsmirror/tlsmirror.sock")
        wait_until(lambda: os.path.exists(sock) or not agent.alive(), 15, "the packaged agent")
        check(agent.alive(), f"tlsmirror --config /etc/tlsmirror/agent.conf: {short(agent.err())}")
        st = os.stat(sock)
        grp = root.run(["getent", "group", "tlsmirror"]).stdout.decode().split(":")
        check(st.st_gid == int(grp[2]) and st.st_mode & 0o777 == 0o660,
              f"socket owner/mode {st.st_gid}/{oct(st.st_mode)}, want group tlsmirror 0660")
        make_cert(root, "/tmp/tls")
        body = gen_bytes(20000, 28)
        with open(root.path("/tmp/tls/index.html"), "wb") as f:
            f.write(body)
        srv = root.spawn("s_server", ["sh", "-c", "cd /tmp/tls && exec openssl s_server -quiet "
                                      "-accept 127.0.0.1:4433 -cert cert.pem -key key.pem -WWW "
                                      "-naccept 2"])
        wait_until(lambda: b":1151 " in open(f"/proc/{root.pid}/net/tcp", "rb").read() or
                   not srv.alive(), 10, "openssl s_server listening")
        # as the README says: `tlsmirror run` for a command (LD_PRELOAD, the default socket)
        root.run(["tlsmirror", "run", "--", "curl", "-sS", "--cacert", "/tmp/tls/cert.pem",
                  "https://127.0.0.1:4433/index.html", "-o", "/tmp/got", "-D", "/tmp/head"],
                 timeout_s=30)
        with open(root.path("/tmp/got"), "rb") as f:
            got = f.read()
        check(got.endswith(body), f"curl got {len(got)} bytes, not the page")
        r = root.run(["tlsmirror", "stats"])
        check(re.search(rb"comm=curl .*conns=1 ", r.stdout), f"stats: {short(r.stdout)}")
        # a hand-written LD_PRELOAD alone (no TLSMIRROR_SOCKET) finds the packaged agent too
        root.run(["curl", "-sS", "--cacert", "/tmp/tls/cert.pem", "https://127.0.0.1:4433/index.html",
                  "-o", "/dev/null"], env={"LD_PRELOAD": LIB}, timeout_s=30)
        wait_until(lambda: len(re.findall(rb"^pid=\d+ .*comm=curl .*conns=1 ",
                                          root.run(["tlsmirror", "stats"]).stdout, re.M)) == 2,
                   10, "the LD_PRELOAD'ed curl attached to the packaged agent")
        req = root.run(["tlsmirror", "stats", "--json"]).stdout
        check(b'"comm": "curl"' in req or b'"comm":"curl"' in req, f"stats --json: {short(req)}")
        # SIGTERM to the agent itself (nsenter passes on its exit status)
        pids = [p for p in root.ns_pids() if _exe(p) == "/usr/bin/tlsmirror"]
        check(len(pids) == 1, f"the agent's pid in the root: {pids}")
        os.kill(pids[0], 15)
        check(agent.wait(15) == 0, f"the agent's exit: {short(agent.err())}")
        with open(root.path("/tmp/head"), "rb") as f:
            head = f.read()
        cap = judge(root.path(PCAP))
        check(len(cap.streams) == 2 and cap.streams[0].bytes(1) == head + got and
              cap.streams[0].bytes(0).startswith(b"GET /index.html HTTP/1.1\r\n"),
              f"the mirror of curl: {cap.describe()}")
        # `tlsmirror enable` writes its drop-in into the installed tree
        root.run(["tlsmirror", "enable", "nginx.service"])
        with open(root.path(DROPIN)) as f:
            text = f.read()
        check(f"Environment=LD_PRELOAD={LIB}\n" in text and
              "Environment=TLSMIRROR_SOCKET=/run/tlsmirror/tlsmirror.sock\n" in text,
              f"the packaged drop-in:\n{text}")
        # the maintainer scripts twice: the same package again keeps the admin's edit
        tail = "# edited by the admin\n"
        with open(root.path("/etc/tlsmirror/agent.conf"), "a") as f:
            f.write(tail)
        root.run(["dpkg", "-i", deb])
        check_installed(root, tail)
        check(os.path.exists(root.path(DROPIN)), "an upgrade (reinstall) removed the drop-in")
        # remove without purge: the program and the drop-ins go, the configuration stays
        root.run(["dpkg", "-r", "tlsmirror"])
        check(status_of(root) == "deinstall ok config-files", f"after remove: {status_of(root)}")
        check(not os.path.exists(root.path("/usr/bin/tlsmirror")) and
              not os.path.exists(root.path(LIB)), "remove left the program or the library")
        check(not os.path.exists(root.path(DROPIN)) and
              not os.path.exists(os.path.dirname(root.path(DROPIN))),
              "remove left the nginx drop-in (or its empty directory)")
        with open(root.path("/etc/tlsmirror/agent.conf")) as f:
            check(f.read().endswith(tail), "remove lost the configuration")
        root.run(["dpkg", "-r", "tlsmirror"])  # twice: nothing to do, no error
        # installed again over the kept configuration, then purged
        root.run(["dpkg", "-i", deb])
        check_installed(root, tail)
        root.run(["dpkg", "--purge", "tlsmirror"])
        check_gone(root, files)
        r = root.run(["getent", "group", "tlsmirror"], check_rc=False)
        check(r.returncode == 0, "purge removed group tlsmirror (docs: it stays; files may be its)")
    finally:
        root.close()


def systemctl_show(root, unit, props):
    r = root.run(["systemctl", "show", unit] + [f"--property={p}" for p in props])
    return dict(l.split("=", 1) for l in r.stdout.decode().splitlines() if "=" in l)


def proc_status(pid):
    with open(f"/proc/{pid}/status") as f:
        return dict(l.split(":\t", 1) for l in f.read().splitlines() if ":\t" in l)


def host_pid(root, unit):
    """MainPID of a unit of the namespace, as a host pid (NSpid's first field)."""
    ns_pid = int(systemctl_show(root, unit, ["MainPID"])["MainPID"])
    check(ns_pid > 0, f"{unit} has no MainPID")
    for p in root.ns_pids():
        try:
            nspid = proc_status(p)["NSpid"].split()
        except (OSError, KeyError):
            continue
        if int(nspid[-1]) == ns_pid:
            return p
    raise AssertionError(f"{unit}'s pid {ns_pid} not found from the host")


def nginx_pids(root):
    return [p for p in root.ns_pids() if _exe(p) == "/usr/sbin/nginx"]


def nginx_hooked(root, hooked, what):
    """Waits until nginx runs (master and workers: systemctl returns before
    the workers are all forked) and every one of its processes, or none,
    maps the capture library, and nothing else does."""
    def settled():
        ngx, mapped = set(nginx_pids(root)), set(root.pids_mapping(LIB))
        return len(ngx) >= 2 and mapped == (ngx if hooked else set())
    try:
        wait_until(settled, 15, what, interval=0.2)
    except AssertionError as e:
        raise AssertionError(f"{e}: nginx {nginx_pids(root)}, mapping the library "
                             f"{root.pids_mapping(LIB)}") from None


@timeout(300)
def test_units_under_systemd(env):
    """systemd as PID 1 of a throwaway copy of this machine: apt install ./x.deb
    starts the agent, sandboxed as the unit says; the README's steps mirror
    nginx; disable takes it back; removal restarts nginx without the library;
    reinstall, install twice, purge."""
    if not os.access("/usr/sbin/nginx", os.X_OK):
        raise Skip("nginx not installed (scripts/deps.sh installs it)")
    root = SysRoot(env, "systemd")
    try:
        deb = put_deb(root)
        root.sh("if getent group tlsmirror >/dev/null; then groupdel tlsmirror; fi; "
                "rm -rf /etc/tlsmirror /etc/systemd/system/*.d/tlsmirror.conf; "
                "! dpkg-query -W tlsmirror >/dev/null 2>&1 || dpkg --purge tlsmirror")
        if SANITIZED:
            # LeakSanitizer's exit check traces the agent (ptrace), which the unit's
            # SystemCallFilter=@system-service refuses: the agent would exit 1 and the
            # unit end "failed" on every stop. The leak check is the suite's elsewhere.
            for unit in ("tlsmirror.service", "tlsmirror-collector.service"):
                os.makedirs(root.path(f"/etc/systemd/system/{unit}.d"), exist_ok=True)
                with open(root.path(f"/etc/systemd/system/{unit}.d/sanitizer.conf"), "w") as f:
                    f.write("[Service]\nEnvironment=ASAN_OPTIONS=detect_leaks=0\n")
        # nginx with a TLS site, running before the package comes
        make_cert(root, "/etc/nginx/tlsmirror-test")
        body = gen_bytes(30000, 281)
        with open(root.path("/etc/nginx/tlsmirror-test/page"), "wb") as f:
            f.write(body)
        with open(root.path("/etc/nginx/conf.d/tlsmirror-test.conf"), "w") as f:
            f.write("server {\n listen 127.0.0.1:8443 ssl;\n"
                    " ssl_certificate /etc/nginx/tlsmirror-test/cert.pem;\n"
                    " ssl_certificate_key /etc/nginx/tlsmirror-test/key.pem;\n"
                    " root /etc/nginx/tlsmirror-test;\n access_log off;\n}\n")
        root.run(["systemctl", "restart", "nginx.service"])
        nginx_hooked(root, False, "nginx before the package")
        # the README: apt install ./x.deb; the agent starts (postinst)
        root.run(["apt-get", "install", "-y", deb], timeout_s=180)
        files = check_installed(root)
        r = root.run(["systemctl", "is-active", "tlsmirror.service"], check_rc=False)
        check(r.stdout.strip() == b"active", f"tlsmirror.service after install: {r.stdout!r}")
        r = root.run(["systemctl", "is-enabled", "tlsmirror.service", "tlsmirror-collector.service"],
                     check_rc=False)
        check(r.stdout.split() == [b"enabled", b"disabled"], f"is-enabled: {r.stdout!r}")
        # the sandbox, as systemd applied it
        sh = systemctl_show(root, "tlsmirror.service",
                            ["CapabilityBoundingSet", "NoNewPrivileges", "ProtectSystem",
                             "ProtectHome", "PrivateTmp", "PrivateDevices", "RestrictNamespaces",
                             "MemoryDenyWriteExecute", "Restart", "RuntimeDirectory",
                             "StateDirectory", "SupplementaryGroups", "ExecStart"])
        want = {"CapabilityBoundingSet": "cap_net_bind_service cap_net_raw", "NoNewPrivileges": "yes", "ProtectSystem": "strict",
                "ProtectHome": "yes", "PrivateTmp": "yes", "PrivateDevices": "yes",
                "RestrictNamespaces": "yes", "MemoryDenyWriteExecute": "yes",
                "Restart": "on-failure", "RuntimeDirectory": "tlsmirror",
                "StateDirectory": "tlsmirror", "SupplementaryGroups": "tlsmirror"}
        bad = {k: sh.get(k) for k, v in want.items() if sh.get(k) != v}
        check(not bad and "/etc/tlsmirror/agent.conf" in sh.get("ExecStart", ""),
              f"systemctl show tlsmirror: {bad} {sh.get('ExecStart')}")
        wait_until(lambda: root.run(["tlsmirror", "stats"], check_rc=False).returncode == 0, 15,
                   "the packaged agent to answer")
        agent = host_pid(root, "tlsmirror.service")
        ps = proc_status(agent)
        # the unit allows CAP_NET_RAW and CAP_NET_BIND_SERVICE; the default
        # configuration (a file, --metrics on 9848) needs neither: none left
        check(int(ps["CapBnd"], 16) == NET_CAPS and int(ps["CapEff"], 16) == 0 and
              int(ps["CapPrm"], 16) == 0 and ps["NoNewPrivs"] == "1" and ps["Seccomp"] == "2",
              f"the running agent: CapBnd {ps['CapBnd']} CapPrm {ps['CapPrm']} CapEff "
              f"{ps['CapEff']} NoNewPrivs {ps['NoNewPrivs']} Seccomp {ps['Seccomp']}")
        with open(f"/proc/{agent}/mountinfo") as f:
            mi = f.read()
        check(re.search(r" / / ro[, ]", mi) or re.search(r" /usr /usr ro[, ]", mi),
              "ProtectSystem=strict: / is not read-only for the agent")
        # the README: enable, daemon-reload, restart; status shows the processes
        r = root.run(["tlsmirror", "enable", "nginx.service"])
        check(b"systemctl daemon-reload" in r.stdout, f"enable: {short(r.stdout)}")
        root.run(["systemctl", "daemon-reload"])
        root.run(["systemctl", "restart", "nginx.service"])
        nginx_hooked(root, True, "every nginx process with the library after enable + restart")
        r = root.run(["curl", "-sS", "--cacert", "/etc/nginx/tlsmirror-test/cert.pem",
                      "https://localhost:8443/page", "-o", "/tmp/got", "-D", "/tmp/head"])
        with open(root.path("/tmp/got"), "rb") as f:
            check(f.read() == body, "curl did not get the page from nginx")

        def attached():
            out = root.run(["tlsmirror", "status"]).stdout.decode()
            m = re.search(r"^nginx\.service\s+enabled\s+(\d+) attached \(pid ([\d ]+)\)", out, re.M)
            return (m, out) if m else None
        wait_until(attached, 15, "tlsmirror status to show nginx's processes attached")
        m, out = attached()
        check(int(m.group(1)) >= 1 and "(nginx)" not in out.split("nginx.service", 1)[1],
              f"tlsmirror status:\n{out}")
        r = root.run(["curl", "-sS", "http://127.0.0.1:9848/metrics"])
        check(re.search(rb'^tlsmirror_process_attached\{[^}]*comm="nginx"[^}]*\} 1$', r.stdout, re.M),
              f"metrics of the packaged agent: {short(r.stdout, 800)}")
        # the mirror: stop the agent (it writes what it holds), judge its pcap
        root.run(["systemctl", "stop", "tlsmirror.service"])
        with open(root.path("/tmp/head"), "rb") as f:
            head = f.read()
        cap = judge(root.path(PCAP))
        check(any(st.bytes(1) == head + body and st.bytes(0).startswith(b"GET /page HTTP/1.1\r\n")
                  for st in cap.streams), f"nginx's answer not mirrored: {cap.describe()}")
        # -o IFACE in agent.conf, a restart, and it works: CAP_NET_RAW kept, only it
        root.sh("ip link add mirror0 type veth peer name mirror1 && ip link set mirror0 up && "
                "ip link set mirror1 up")
        with open(root.path("/etc/tlsmirror/agent.conf"), "a") as f:
            f.write("output-interface mirror0\n")
        root.run(["systemctl", "start", "tlsmirror.service"])
        # (Type=simple: started is forked; ready is its socket answering)
        wait_until(lambda: root.run(["tlsmirror", "stats"], check_rc=False).returncode == 0, 15,
                   "the restarted agent")
        ps = proc_status(host_pid(root, "tlsmirror.service"))
        check(int(ps["CapEff"], 16) == int(ps["CapPrm"], 16) == 1 << 13,
              f"with -o: CapPrm {ps['CapPrm']} CapEff {ps['CapEff']}, want CAP_NET_RAW alone")
        # workers that re-attach on their own (as www-data) are refused: a reload
        # forks new ones on the master's connection (docs/security.md, "Limits")
        root.run(["systemctl", "reload", "nginx.service"])

        def replayed():
            root.run(["curl", "-sS", "--cacert", "/etc/nginx/tlsmirror-test/cert.pem",
                      "https://localhost:8443/page", "-o", "/dev/null"])
            out = root.run(["tlsmirror", "stats"]).stdout.decode()
            m = re.search(r"^sink name=interface target=mirror0 packets=(\d+) .*errors=0 ", out, re.M)
            return m and int(m.group(1)) > 0
        try:
            wait_until(replayed, 15, "packets replayed onto mirror0", interval=0.5)
        except AssertionError as e:
            raise AssertionError(f"{e}:\n{root.run(['tlsmirror', 'stats']).stdout.decode()}") from None
        # the collector's unit, as its collector.conf says to start it
        root.run(["tlsmirror", "pki", "init", "/etc/tlsmirror/pki"])
        root.run(["tlsmirror", "pki", "issue", "/etc/tlsmirror/pki", "sensor", "--collector",
                  "--host", "localhost"])
        root.run(["systemctl", "enable", "--now", "tlsmirror-collector.service"])
        wait_until(lambda: root.run(["tlsmirror", "stats", "-C"], check_rc=False).returncode == 0,
                   15, "the collector's unit to answer")
        r = root.run(["tlsmirror", "stats", "-C"])
        check(b"collector listen=0.0.0.0:7443" in r.stdout and b"tls=yes" in r.stdout,
              f"stats -C: {short(r.stdout)}")
        ps = proc_status(host_pid(root, "tlsmirror-collector.service"))
        check(int(ps["CapBnd"], 16) == NET_CAPS and int(ps["CapEff"], 16) == 0 and
              ps["NoNewPrivs"] == "1", f"the collector: CapBnd {ps['CapBnd']} CapEff {ps['CapEff']}")
        root.run(["systemctl", "disable", "--now", "tlsmirror-collector.service"])
        root.run(["rm", "-rf", "/etc/tlsmirror/pki"])  # the admin's keys: purge leaves them
        # disable takes it back
        r = root.run(["tlsmirror", "disable", "nginx.service"])
        check(not os.path.exists(root.path(DROPIN)), f"disable: {short(r.stdout)}")
        root.run(["systemctl", "daemon-reload"])
        root.run(["systemctl", "restart", "nginx.service"])
        nginx_hooked(root, False, "nginx without the library after disable + restart")
        # removal: the drop-ins go, nginx restarts without the library, the agent stops
        root.run(["tlsmirror", "enable", "nginx.service"])
        root.run(["systemctl", "daemon-reload"])
        root.run(["systemctl", "restart", "nginx.service"])
        nginx_hooked(root, True, "nginx hooked after the second enable")
        root.run(["apt-get", "remove", "-y", "tlsmirror"], timeout_s=120)
        check(status_of(root) == "deinstall ok config-files", f"after remove: {status_of(root)}")
        check(not os.path.exists(root.path(DROPIN)), "remove left nginx's drop-in")
        r = root.run(["systemctl", "is-active", "nginx.service", "tlsmirror.service"], check_rc=False)
        check(r.stdout.split() == [b"active", b"inactive"], f"after remove: {r.stdout!r}")
        nginx_hooked(root, False, "nginx restarted without the library by the removal")
        # reinstall after remove, then the same package again: running, enabled
        root.run(["dpkg", "-i", deb])
        root.run(["dpkg", "-i", deb])
        check_installed(root)
        r = root.run(["systemctl", "is-active", "tlsmirror.service"], check_rc=False)
        check(r.stdout.strip() == b"active", f"after reinstall: {r.stdout!r}")
        check(os.path.exists(root.path("/run/tlsmirror/tlsmirror.sock")), "no socket after reinstall")
        root.run(["tlsmirror", "enable", "nginx.service"])
        root.run(["dpkg", "--purge", "tlsmirror"])
        r = root.run(["systemctl", "is-active", "tlsmirror.service"], check_rc=False)
        check(r.stdout.strip() == b"inactive", f"after purge: {r.stdout!r}")
        check_gone(root, files)
        r = root.run(["systemctl", "list-unit-files", "tlsmirror*"], check_rc=False)
        check(b"tlsmirror.service" not in r.stdout, f"units left: {short(r.stdout)}")
    finally:
        root.close()
