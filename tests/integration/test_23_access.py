# Integration test 23: who may feed the mirror (SO_PEERCRED): refused users, group tlsmirror, nginx workers as www-data.
import contextlib
import grp
import os
import pwd
import re
import socket
import ssl
import stat
import subprocess
import time

from tmlib import (TLSMIRROR, Agent, Fail, RecServer, certs, check, check_against_server, check_stream,
                   free_port, gen_bytes, judge, need_tool, nginx_conf, read_capture, short,
                   start_nginx, stat_int, timeout, wait_until)

GROUP = "tlsmirror"


def _run(argv):
    r = subprocess.run(argv, capture_output=True, timeout=60)
    check(r.returncode == 0, f"{' '.join(argv)} exited {r.returncode}: {short(r.stderr)}")


@contextlib.contextmanager
def temp_group(name=GROUP):
    """Group `name`, created (and removed afterwards) if it does not exist."""
    created = False
    try:
        grp.getgrnam(name)
    except KeyError:
        _run([need_tool("groupadd"), "--system", name])
        created = True
    try:
        yield grp.getgrnam(name).gr_gid
    finally:
        if created:
            subprocess.run(["groupdel", name], capture_output=True, timeout=60)


@contextlib.contextmanager
def temp_user(groups=()):
    """An unprivileged user of our own (no home, primary group nogroup), removed afterwards."""
    name = f"tmt{os.getpid() % 100000}"
    subprocess.run(["userdel", name], capture_output=True, timeout=60)
    argv = [need_tool("useradd"), "-M", "-N", "-g", "nogroup", "-s", "/usr/sbin/nologin"]
    if groups:
        argv += ["-G", ",".join(groups)]
    _run(argv + [name])
    try:
        yield pwd.getpwnam(name)
    finally:
        subprocess.run(["userdel", name], capture_output=True, timeout=60)


def as_user(pw, argv):
    """argv run as pw (its own groups), through `tlsmirror run` (so the preload is set as that user)."""
    return [need_tool("setpriv"), f"--reuid={pw.pw_uid}", f"--regid={pw.pw_gid}", "--init-groups",
            "--"] + argv


def open_dir(env):
    """The test dir traversable by everyone: only the agent's access control may keep anyone out."""
    os.chmod(env.dir, 0o755)


def curl_as(env, agent, srv, pw, name):
    argv = [TLSMIRROR, "run", "--socket", agent.sock, "--", need_tool("curl"), "-sSk",
            f"https://127.0.0.1:{srv.port}/body"]
    return env.run(name, as_user(pw, argv), timeout_s=60)


def refused_count(text, uid):
    m = re.search(rf"^refused uid={uid} attaches=(\d+)$", text, re.M)
    return int(m.group(1)) if m else 0


@timeout(120)
def test_unprivileged_user_refused(env):
    """A user who is neither root nor in group tlsmirror runs curl under `tlsmirror run`
    against a reachable socket: the agent refuses it, counts it per uid, logs it once, and
    nothing of its connection reaches the pcap."""
    open_dir(env)
    body = gen_bytes(30000, 231)
    with open(env.path("body.bin"), "wb") as f:
        f.write(body)
    srv = RecServer(env, body=env.path("body.bin"))
    agent = Agent(env).start()
    mode = stat.S_IMODE(os.stat(agent.sock).st_mode)
    check(not mode & 0o007, f"the control socket is mode {mode:o}: others may connect")
    with temp_user() as pw:
        for i in range(2):
            rc, out, err = curl_as(env, agent, srv, pw, f"curl{i}")
            check(rc == 0 and out == body, f"curl as {pw.pw_name} exited {rc} (fail-open "
                  f"broken?): {short(err)}")
        _, _, raw = agent.stats()
        n = refused_count(raw, pw.pw_uid)
        check(n >= 2, f"stats count {n} refused attaches for uid {pw.pw_uid}, want >= 2:\n{raw}")
        procs, total = agent.final_stats()
    check(not [p for p in procs if p.get("uid") == str(pw.pw_uid)],
          f"uid {pw.pw_uid} appears as an attached process: {procs}")
    logs = agent.stderr_text.count(f"refused a connection from uid {pw.pw_uid} ")
    check(logs == 1, f"the refusal of uid {pw.pw_uid} is logged {logs} times, want once:\n"
          f"{short(agent.stderr_text, 1500)}")
    cap = read_capture(agent.pcap)
    check(not cap.streams, f"the refused user's traffic is in the pcap: {cap.describe()}")


@timeout(120)
def test_group_member_mirrored(env):
    """A user in group tlsmirror attaches through the root:tlsmirror 0660 socket: mirrored
    byte-exact, attributed to its uid; `tlsmirror stats` answers it too."""
    open_dir(env)
    body = gen_bytes(50000, 232)
    with open(env.path("body.bin"), "wb") as f:
        f.write(body)
    srv = RecServer(env, body=env.path("body.bin"))
    with temp_group() as gid, temp_user(groups=[GROUP]) as pw:
        agent = Agent(env).start()
        st = os.stat(agent.sock)
        check(stat.S_IMODE(st.st_mode) == 0o660 and st.st_gid == gid and st.st_uid == 0,
              f"control socket is {st.st_uid}:{st.st_gid} mode {stat.S_IMODE(st.st_mode):o}, "
              f"want 0:{gid} 0660")
        rc, out, err = curl_as(env, agent, srv, pw, "curl")
        check(rc == 0 and out == body, f"curl as {pw.pw_name} exited {rc}: {short(err)}")
        r = subprocess.run(as_user(pw, [TLSMIRROR, "stats", "--socket", agent.sock]),
                           capture_output=True, timeout=30)
        check(r.returncode == 0 and b"total " in r.stdout,
              f"`tlsmirror stats` as a group member exited {r.returncode}: {short(r.stderr)}")
        conns = srv.conns(1)
        procs, total = agent.final_stats()
    mine = [p for p in procs if p.get("uid") == str(pw.pw_uid) and p.get("comm") == "curl"]
    check(len(mine) == 1 and stat_int(mine[0], "conns") == 1,
          f"want one curl process of uid {pw.pw_uid} with 1 connection in stats: {procs}")
    check(mine[0].get("auth_uid") == str(pw.pw_uid), f"auth_uid of curl: {mine[0]}")
    cap = judge(agent.pcap)
    check_against_server(cap, conns)


NGINX = nginx_conf(2, """    server {{
        listen 127.0.0.1:{port} ssl;
        ssl_certificate {cert};
        ssl_certificate_key {key};
        root {prefix}/html;
    }}
""").replace("user root;", "user www-data;")


def fetch(port, path, n):
    """n HTTPS GETs of path from this (uncaptured) process: [(client_port, request, response)]."""
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    out = []
    for i in range(n):
        req = (f"GET {path} HTTP/1.1\r\nHost: localhost\r\nX-N: {i}\r\n"
               "Connection: close\r\n\r\n").encode()
        with socket.create_connection(("127.0.0.1", port), timeout=20) as raw:
            cport = raw.getsockname()[1]
            with ctx.wrap_socket(raw) as s:
                s.sendall(req)
                resp = bytearray()
                while True:
                    try:
                        d = s.recv(65536)
                    except ssl.SSLZeroReturnError:
                        break
                    if not d:
                        break
                    resp += d
        out.append((cport, req, bytes(resp)))
    return out


@timeout(150)
def test_nginx_www_data_workers(env):
    """nginx with `user www-data;` and 2 workers under the default policy (www-data in no
    group of ours): the workers attach through the socket their root master connected
    before fork, appear with their own pid and uid 33, and their traffic is mirrored
    byte-exact; a www-data process started on its own is refused."""
    open_dir(env)
    www = pwd.getpwnam("www-data")
    c = certs()
    prefix = env.path("nginx")
    for d in ("html", "tmp", "logs"):
        os.makedirs(os.path.join(prefix, d))
    body = gen_bytes(20000, 233)
    with open(os.path.join(prefix, "html", "f"), "wb") as f:
        f.write(body)
    for root, dirs, files in os.walk(prefix):
        for x in dirs + files:
            os.chmod(os.path.join(root, x), 0o755)
    port = free_port()
    agent = Agent(env).start()
    ngx, kids = start_nginx(env, agent.sock, prefix,
                            NGINX.format(prefix=prefix, port=port, cert=c["cert"], key=c["key"]), 2)

    def dropped():
        try:
            return all(os.stat(f"/proc/{k}").st_uid == www.pw_uid for k in kids)
        except FileNotFoundError:
            raise Fail(f"an nginx worker exited: {short(ngx.err())}") from None
    wait_until(dropped, 10, f"nginx workers {kids} running as www-data")
    got = fetch(port, "/f", 6)
    for _, _, resp in got:
        check(resp.startswith(b"HTTP/1.1 200") and resp.endswith(body),
              f"nginx answered {short(resp[:200])}")
    # a www-data process on its own is not allowed (to a server not under capture)
    srv = RecServer(env)
    r = subprocess.run([need_tool("setpriv"), f"--reuid={www.pw_uid}", f"--regid={www.pw_gid}",
                        "--init-groups", "--", TLSMIRROR, "run", "--socket", agent.sock, "--",
                        need_tool("curl"), "-sSk", "-o", "/dev/null",
                        f"https://127.0.0.1:{srv.port}/"], capture_output=True, timeout=60)
    check(r.returncode == 0, f"curl as www-data exited {r.returncode}: {short(r.stderr)}")
    procs, total, raw = agent.stats()
    check(refused_count(raw, www.pw_uid) >= 1, f"the lone www-data curl was not refused:\n{raw}")
    ws = [p for p in procs if p.get("comm") == "nginx" and stat_int(p, "conns") > 0]
    check(ws and all(p.get("uid") == str(www.pw_uid) and p.get("auth_uid") == "0" and
                     p.get("auth_pid") == str(ngx.pid) and int(p["pid"]) in kids for p in ws),
          f"want nginx workers (pids {kids}) as uid {www.pw_uid}, authorised by the master "
          f"{ngx.pid} (auth_uid=0):\n{raw}")
    check(sum(stat_int(p, "conns") for p in ws) == len(got),
          f"workers report {sum(stat_int(p, 'conns') for p in ws)} connections, want {len(got)}")
    ngx.signal(15)
    ngx.wait(20)
    time.sleep(0.2)
    agent.final_stats()
    cap = judge(agent.pcap)
    check(len(cap.syn_streams()) == len(got), f"capture: {cap.describe()}, want {len(got)} "
          f"connections (the lone www-data curl must not be there)")
    for cport, req, resp in got:
        check_stream(cap.one(client_port=cport, server_port=port), c2s=req, s2c=resp)


@timeout(90)
def test_stats_refused_to_others(env):
    """`tlsmirror stats` shows every process's pid, uid and volumes: only to those who may
    attach. With --allow-user the socket file is 0666 (SO_PEERCRED decides): a user outside
    the lists gets no answer and a clear message; a listed user gets the stats."""
    open_dir(env)
    srv = RecServer(env)
    with temp_user() as pw:
        allowed = None
        with temp_user_named(f"tma{os.getpid() % 100000}") as pw2:
            allowed = pw2
            agent = Agent(env, args=["--allow-user", pw2.pw_name]).start()
            mode = stat.S_IMODE(os.stat(agent.sock).st_mode)
            check(mode == 0o666, f"with --allow-user the socket is {mode:o}, want 666")
            rc, out, err = curl_as(env, agent, srv, allowed, "curl")
            check(rc == 0, f"curl as {allowed.pw_name} exited {rc}: {short(err)}")
            r = subprocess.run(as_user(pw, [TLSMIRROR, "stats", "--socket", agent.sock]),
                               capture_output=True, timeout=30)
            check(r.returncode != 0 and b"pid=" not in r.stdout and b"total " not in r.stdout,
                  f"`tlsmirror stats` as {pw.pw_name} (not allowed) exited {r.returncode}: "
                  f"{short(r.stdout)}")
            check(b"did not answer" in r.stderr and b"--allow-user" in r.stderr,
                  f"the refusal does not say who may ask: {short(r.stderr)}")
            r = subprocess.run(as_user(allowed, [TLSMIRROR, "stats", "--socket", agent.sock]),
                               capture_output=True, timeout=30)
            check(r.returncode == 0 and f"uid={allowed.pw_uid} ".encode() in r.stdout,
                  f"`tlsmirror stats` as the allowed {allowed.pw_name}: exit {r.returncode}, "
                  f"{short(r.stdout)} {short(r.stderr)}")
            agent.final_stats()


@contextlib.contextmanager
def temp_user_named(name):
    subprocess.run(["userdel", name], capture_output=True, timeout=60)
    _run([need_tool("useradd"), "-M", "-N", "-g", "nogroup", "-s", "/usr/sbin/nologin", name])
    try:
        yield pwd.getpwnam(name)
    finally:
        subprocess.run(["userdel", name], capture_output=True, timeout=60)
