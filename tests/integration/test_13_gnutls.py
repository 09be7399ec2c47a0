# Integration test 13 (GnuTLS): wget, gnutls-cli/-serv, git over HTTPS, a GnuTLS client of every record call; byte-exact, metadata, fail-open.
import os
import signal
import subprocess

from tmlib import (LIBRARY, Agent, RecServer, assert_bytes, certs, check,
                   check_against_server, check_stream, digits, feed, free_port, gen_bytes, judge, need_build,
                   need_tool, proc_stats, prog, run_three_ways, short, stat_int, timeout, tshark_fields,
                   wait_listening, wait_until)

TLS13_LABELS = {"CLIENT_HANDSHAKE_TRAFFIC_SECRET", "SERVER_HANDSHAKE_TRAFFIC_SECRET",
                "CLIENT_TRAFFIC_SECRET_0", "SERVER_TRAFFIC_SECRET_0", "EXPORTER_SECRET"}


def comments(path):
    """{tcp.stream: comment of its first frame} as tshark reads the pcapng."""
    out = {}
    for stream, comment in tshark_fields(path, ["tcp.stream", "frame.comment"]):
        if comment and int(stream) not in out:
            check(comment.startswith("tlsmirror: "), f"comment {comment!r}")
            out[int(stream)] = dict(kv.split("=", 1) for kv in
                                    comment[len("tlsmirror: "):].split(" "))
    return out


def want(fields, **kw):
    bad = {k: (fields.get(k), v) for k, v in kw.items() if fields.get(k) != str(v)}
    check(not bad, f"comment fields (got, want): {bad}; the whole comment: {fields}")


def wget(env, sock, name, args, port):
    c = certs()
    p = env.captured(name, sock, [need_tool("wget"), "-q", "-4", "--ca-certificate", c["cert"]]
                     + args)
    rc = p.wait(60)
    check(rc == 0 and p.err() == b"", f"wget {' '.join(args)} under capture: exit {rc}, "
          f"stderr {short(p.err())}")
    return p


@timeout(120)
def test_wget_get_post(env):
    body = gen_bytes(1 << 20, 131)
    with open(env.path("body.bin"), "wb") as f:
        f.write(body)
    post = gen_bytes((1 << 20) + 4321, 132)
    with open(env.path("post.bin"), "wb") as f:
        f.write(post)
    srv = RecServer(env, body=env.path("body.bin"))
    agent = Agent(env, pcap=env.path("m.pcapng")).start()
    url = f"https://localhost:{srv.port}"
    get = wget(env, agent.sock, "wget-get", [url + "/body", "-O", env.path("got.bin")], srv.port)
    pst = wget(env, agent.sock, "wget-post", ["--post-file", env.path("post.bin"), url + "/echo",
                                              "-O", env.path("echoed.bin")], srv.port)
    with open(env.path("got.bin"), "rb") as f:
        assert_bytes("wget's GET output vs the served body", body, f.read())
    with open(env.path("echoed.bin"), "rb") as f:
        assert_bytes("wget's POST output vs the posted body", post, f.read())
    conns = srv.conns(2)
    procs, total = agent.final_stats()
    cap = judge(agent.pcap)
    check_against_server(cap, conns)
    check(cap.one(client_port=conns[0].peer_port).bytes(1).endswith(body),
          "GET stream s2c does not end with the body")
    check(cap.one(client_port=conns[1].peer_port).bytes(0).endswith(post),
          "POST stream c2s does not end with the posted body")
    for p, cn in ((get, conns[0]), (pst, conns[1])):
        ps = proc_stats(procs, p.pid)
        check(ps is not None and stat_int(ps, "conns") == 1 and
              stat_int(ps, "c2s_bytes") == len(cn.c2s) and stat_int(ps, "s2c_bytes") == len(cn.s2c),
              f"wget pid {p.pid} stats {ps}: want conns=1 c2s_bytes={len(cn.c2s)} "
              f"s2c_bytes={len(cn.s2c)}")
        check(ps.get("tls") == "gnutls", f"wget pid {p.pid}: tls={ps.get('tls')}, want gnutls "
              "(ring_hdr.tls_backends)")
    check(stat_int(total, "dropped_bytes") == 0 and stat_int(total, "gap_bytes") == 0,
          f"drops in a plain run: {total}")
    for st, fields in comments(agent.pcap).items():
        want(fields, process="wget", side="client", sni="localhost", tls="TLSv1.3")
        check(fields.get("cipher", "").startswith("TLS_"), f"wget's TLS 1.3 cipher: {fields}")


@timeout(120)
def test_gnutls_cli_vs_s_server(env):
    """GnuTLS as the client (gnutls-cli, captured) against OpenSSL's s_server."""
    c = certs()
    port = free_port()
    c2s, s2c = digits(150_000, 133), digits(250_000, 134)
    agent = Agent(env, pcap=env.path("m.pcapng")).start()
    srv = env.spawn("s_server", [need_tool("openssl"), "s_server", "-accept", f"127.0.0.1:{port}",
                                 "-cert", c["cert"], "-key", c["key"], "-naccept", "1",
                                 "-alpn", "tm-test"], stdin=subprocess.PIPE)
    wait_until(lambda: b"ACCEPT" in srv.out() or not srv.alive(), 15, "s_server ACCEPT")
    cli = env.captured("gnutls-cli", agent.sock,
                       [need_tool("gnutls-cli"), "--x509cafile", c["cert"], "--alpn", "tm-test",
                        "-p", str(port), "localhost"], stdin=subprocess.PIPE)
    t1, t2 = feed(cli, c2s), feed(srv, s2c)
    # s_server writes these lines into the data it prints, wherever its buffer ends
    notes = (b"ALPN protocols advertised by the client: tm-test\n",
             b"ALPN protocols selected: tm-test\n")

    def srv_data():
        out = srv.out()
        for n in notes:
            out = out.replace(n, b"")
        return out
    wait_until(lambda: c2s in srv_data() and s2c in cli.out(), 30,
               "both payloads to arrive (s_server's stdout has the client's, gnutls-cli's the server's)")
    t1.join(5)
    t2.join(5)
    cli.popen.stdin.close()
    rc = cli.wait(15)
    check(rc == 0, f"gnutls-cli exited {rc}: {short(cli.err())}")
    srv.popen.stdin.close()
    srv.wait(15)
    procs, total = agent.final_stats()
    cap = judge(agent.pcap)
    syn = cap.syn_streams()
    check(len(syn) == 1, f"one connection, capture has {cap.describe()}")
    check_stream(syn[0], c2s=c2s, s2c=s2c, server=("127.0.0.1", port))
    (fields,) = comments(agent.pcap).values()
    want(fields, process="gnutls-cli", pid=cli.pid, side="client", sni="localhost",
         alpn="tm-test", tls="TLSv1.3", source="capture")
    check(fields.get("cipher", "").startswith("TLS_AES_"), f"gnutls-cli's cipher: {fields}")


@timeout(120)
def test_gnutls_serv_vs_s_client_and_curl(env):
    """GnuTLS as the server (gnutls-serv, captured): OpenSSL's s_client (TLS 1.2) and curl."""
    c = certs()
    echo_port, http_port = free_port(), free_port()
    agent = Agent(env, pcap=env.path("m.pcapng")).start()
    serv = need_tool("gnutls-serv")
    base = ["--x509certfile", c["cert"], "--x509keyfile", c["key"], "-a"]
    echo = env.captured("serv-echo", agent.sock, [serv, "--echo", "-p", str(echo_port),
                                                  "--alpn", "tm-echo"] + base)
    http = env.captured("serv-http", agent.sock, [serv, "--http", "-p", str(http_port),
                                                  "--alpn", "http/1.1"] + base)
    wait_listening(echo_port, proc=echo)
    wait_listening(http_port, proc=http)
    # the two probes of wait_listening are plain TCP: never TLS, never mirrored
    msg = digits(60_000, 135)
    cli = env.spawn("s_client", [need_tool("openssl"), "s_client", "-connect",
                                 f"127.0.0.1:{echo_port}", "-servername", "localhost", "-CAfile",
                                 c["cert"], "-alpn", "tm-echo", "-tls1_2", "-nocommands"],
                    stdin=subprocess.PIPE)
    t = feed(cli, msg)
    wait_until(lambda: cli.out().count(msg) >= 1, 30, "s_client to get its bytes echoed")
    t.join(5)
    cli.popen.stdin.close()
    cli.wait(15)
    cu = env.spawn("curl", [need_tool("curl"), "-sS", "--cacert", c["cert"], "--http1.1",
                            "--resolve", f"localhost:{http_port}:127.0.0.1", "-D",
                            env.path("hdr"), "-o", env.path("body"),
                            f"https://localhost:{http_port}/"])
    rc = cu.wait(30)
    check(rc == 0, f"curl against gnutls-serv --http: exit {rc}, {short(cu.err())}")
    procs, total = agent.final_stats()
    cap = judge(agent.pcap)
    e_st = cap.one(server_port=echo_port)
    check_stream(e_st, c2s=msg, s2c=msg)
    h_st = cap.one(server_port=http_port)
    with open(env.path("hdr"), "rb") as f, open(env.path("body"), "rb") as g:
        assert_bytes("gnutls-serv's response as curl got it", f.read() + g.read(), h_st.bytes(1))
    check(h_st.bytes(0).startswith(b"GET / HTTP/1.1\r\nHost: localhost:"),
          f"curl's request: {h_st.bytes(0)[:80]!r}")
    by_port = {s.server[1]: s.idx for s in cap.streams}
    cm = comments(agent.pcap)
    want(cm[by_port[echo_port]], process="gnutls-serv", pid=echo.pid, side="server",
         sni="localhost", alpn="tm-echo", tls="TLSv1.2")
    check(cm[by_port[echo_port]].get("cipher", "").startswith("TLS_ECDHE_"),
          f"TLS 1.2 cipher suite's IANA name: {cm[by_port[echo_port]]}")
    want(cm[by_port[http_port]], process="gnutls-serv", pid=http.pid, side="server",
         sni="localhost", alpn="http/1.1", tls="TLSv1.3")


@timeout(120)
def test_every_record_call_and_app_keylog(env):
    """gtclient: gnutls_record_send/_send2/_send_range, _recv/_recv_seq/_recv_packet, and an
    application key-log function of its own, which must still get every secret; the
    agent's --keylog gets the same lines (GnuTLS's key export)."""
    c = certs()
    srv = RecServer(env, mode="echo")
    ours = env.path("keys.log")
    agent = Agent(env, args=["--keylog", ours]).start()
    kl = env.path("app-keylog.txt")
    p = env.captured("gtclient", agent.sock, [prog("gtclient"), "127.0.0.1", str(srv.port),
                                              c["cert"], "6", "70000", kl])
    rc = p.wait(60)
    check(rc == 0 and p.err() == b"", f"gtclient: exit {rc}, stderr {short(p.err())}")
    check(p.out().count(b" ok\n") == 6, f"gtclient's rounds: {short(p.out())}")
    conns = srv.conns(1)
    agent.final_stats()
    check_against_server(judge(agent.pcap), conns)
    with open(kl) as f:
        labels = {line.split()[0] for line in f if line.strip()}
    check(labels == TLS13_LABELS, f"the application's own key-log function got {labels}, "
          f"want {TLS13_LABELS}")
    # the application writes "LABEL SECRET"; the NSS key log has the client random between
    with open(kl) as f:
        app = {tuple(line.lower().split()) for line in f if line.strip()}
    with open(ours) as f:
        every = [line.lower().split() for line in f if line.strip()]
    lines = [l for l in every if l[0] != "#"]
    # one # TUPLE line before the keys: the real ends, the randoms, TLS 1.3, no suite (libgnutls
    # names none)
    tup = [l for l in every if l[:2] == ["#", "tuple"]]
    check(len(tup) == 1 and every[0] == tup[0] and len(tup[0]) == 8 and tup[0][5] != "-"
          and tup[0][6:] == ["0304", "-"] and tup[0][4] == lines[0][1],
          f"--keylog's # TUPLE lines: {tup}")
    got = {(l[0], l[2]) for l in lines if len(l) == 3}
    check(app and got == app and len(lines) == len(app) and len({l[1] for l in lines}) == 1,
          f"--keylog: {len(lines)} lines, the application's {len(app)}, {len(got & app)} alike")


@timeout(90)
def test_early_data(env):
    """TLS 1.3 0-RTT between GnuTLS ends: gnutls-cli -r --earlydata against gnutls-serv
    --earlydata, each under its own agent. The early data (sent before the client's session
    has a socket or a cipher suite) comes first in the resumed connection, from both ends."""
    c = certs()
    port = free_port()
    early = b"EARLY-0RTT-" + digits(300, 138)
    with open(env.path("early.bin"), "wb") as f:
        f.write(early)
    a_srv = Agent(env, name="agent-srv").start()
    a_cli = Agent(env, name="agent-cli", pcap=env.path("cli.pcapng")).start()
    srv = env.captured("gnutls-serv", a_srv.sock,
                       [need_tool("gnutls-serv"), "--echo", "--earlydata", "--maxearlydata=4096",
                        "-p", str(port), "--x509certfile", c["cert"], "--x509keyfile", c["key"], "-a"])
    wait_listening(port, proc=srv)
    msg = digits(2000, 139)
    cli = env.captured("gnutls-cli", a_cli.sock,
                       [need_tool("gnutls-cli"), "--x509cafile", c["cert"], "-p", str(port), "-r",
                        "--earlydata=" + env.path("early.bin"), "--waitresumption", "localhost"],
                       stdin=subprocess.PIPE)
    t = feed(cli, msg)
    wait_until(lambda: msg in cli.out() or not cli.alive(), 30, "gnutls-cli to get its line echoed")
    t.join(5)
    cli.popen.stdin.close()
    rc = cli.wait(15)
    check(rc == 0 and b"This is a resumed session" in cli.out(),
          f"gnutls-cli -r --earlydata: exit {rc}, {short(cli.out()[-300:])} {short(cli.err())}")
    srv.signal(signal.SIGTERM)
    srv.wait(15)
    a_cli.final_stats()
    a_srv.final_stats()
    # gnutls-cli -r drops its first connection before gnutls-serv ends that
    # handshake: getpeername fails and the server's copy of it is announced
    # with synthetic addresses (docs/capture.md); the resumed one is checked
    cli_cap, srv_cap = judge(a_cli.pcap), judge(a_srv.pcap, synthetic_ok=True)
    resumed = [st for st in cli_cap.syn_streams() if st.bytes(0)]
    check(len(resumed) == 1, f"one client connection with data: {cli_cap.describe()}")
    st = resumed[0]
    check_stream(st, c2s=early + msg, s2c=msg, server=("127.0.0.1", port))
    check_stream(srv_cap.one(client_port=st.client[1]), c2s=early + msg, s2c=msg,
                 client=st.client, server=st.server)
    fields = [f for f in comments(a_cli.pcap).values() if f.get("server_port") == str(port)]
    for f in fields:
        want(f, side="client", sni="localhost", tls="TLSv1.3")


LIGHTTPD_GIT = """server.document-root = "{root}"
server.port = {port}
server.bind = "127.0.0.1"
server.modules = ("mod_openssl", "mod_cgi", "mod_setenv", "mod_alias")
server.errorlog = "{root}/error.log"
ssl.engine = "enable"
ssl.pemfile = "{cert}"
ssl.privkey = "{key}"
alias.url = ( "/git/" => "/usr/lib/git-core/git-http-backend/" )
$HTTP["url"] =~ "^/git/" {{
  cgi.assign = ( "" => "" )
  setenv.add-environment = ( "GIT_PROJECT_ROOT" => "{root}", "GIT_HTTP_EXPORT_ALL" => "1" )
}}
"""


def make_repo(env, root):
    git = need_tool("git")
    src = env.path("src")
    os.makedirs(src)
    with open(os.path.join(src, "blob.bin"), "wb") as f:
        f.write(gen_bytes(400_000, 136))
    with open(os.path.join(src, "a.txt"), "w") as f:
        f.write("tlsmirror\n")
    genv = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
            "GIT_COMMITTER_EMAIL": "t@t", "HOME": env.dir, "PATH": os.environ["PATH"]}
    for argv, cwd in (([git, "init", "-q", "-b", "main"], src), ([git, "add", "."], src),
                      ([git, "commit", "-qm", "init"], src),
                      ([git, "clone", "-q", "--bare", src, os.path.join(root, "repo.git")], src)):
        r = subprocess.run(argv, cwd=cwd, env=genv, capture_output=True, timeout=30)
        check(r.returncode == 0, f"{' '.join(argv)}: {short(r.stderr)}")
    return src, genv


@timeout(150)
def test_git_clone_https(env):
    """git clone over HTTPS (git-remote-https: libcurl-gnutls) from git http-backend behind
    lighttpd (mod_openssl). Each end is mirrored by its own agent: the GnuTLS client's copy
    must equal the OpenSSL server's, byte for byte."""
    c = certs()
    root = env.path("www")
    os.makedirs(root)
    src, genv = make_repo(env, root)
    port = free_port()
    conf = env.path("lighttpd.conf")
    with open(conf, "w") as f:
        f.write(LIGHTTPD_GIT.format(root=root, port=port, cert=c["cert"], key=c["key"]))
    a_srv = Agent(env, name="agent-srv").start()
    a_cli = Agent(env, name="agent-cli", pcap=env.path("cli.pcapng")).start()
    httpd = env.captured("lighttpd", a_srv.sock, [need_tool("lighttpd"), "-D", "-f", conf])
    wait_listening(port, proc=httpd)
    out = env.path("clone")
    genv = dict(genv, GIT_SSL_CAINFO=c["cert"])
    g = env.captured("git", a_cli.sock, [need_tool("git"), "clone", "-q",
                                         f"https://localhost:{port}/git/repo.git", out],
                     env=genv)
    rc = g.wait(60)
    check(rc == 0 and g.err() == b"", f"git clone under capture: exit {rc}, stderr {short(g.err())}")
    with open(os.path.join(src, "blob.bin"), "rb") as f, open(os.path.join(out, "blob.bin"), "rb") as h:
        assert_bytes("the cloned blob", f.read(), h.read())
    httpd.signal(signal.SIGTERM)
    httpd.wait(15)
    procs, _ = a_cli.final_stats()
    a_srv.final_stats()
    cli_cap, srv_cap = judge(a_cli.pcap), judge(a_srv.pcap)
    cli_st = [s for s in cli_cap.syn_streams() if s.server == ("127.0.0.1", port)]
    check(cli_st and len(cli_st) == len(srv_cap.syn_streams()),
          f"git's capture {cli_cap.describe()} vs lighttpd's {srv_cap.describe()}")
    for st in cli_st:
        peer = srv_cap.one(client_port=st.client[1])
        check_stream(st, c2s=peer.bytes(0), s2c=peer.bytes(1), client=peer.client,
                     server=peer.server)
    check(sum(len(s.bytes(1)) for s in cli_st) > 400_000, "the pack is not in git's capture")
    remote = [p for p in procs if p.get("comm", "").startswith("git-remote-")]
    check(remote and all(stat_int(p, "conns") >= 1 for p in remote),
          f"git-remote-https mirrored nothing: {procs}")
    for fields in comments(a_cli.pcap).values():
        want(fields, side="client", sni="localhost")


def run_three(env, name, argv, nosock):
    """run_three_ways, the library's own stderr lines left out."""
    return [(rc, out, b"\n".join(l for l in err.splitlines() if not l.startswith(b"tlsmirror")))
            for rc, out, err in run_three_ways(env, name, argv, nosock)]


@timeout(120)
def test_fail_open_no_agent(env):
    c = certs()
    need_build(LIBRARY)
    srv = RecServer(env)
    echo = RecServer(env, mode="echo", name="echo")
    nosock = env.path("no-agent.sock")
    cases = {
        "wget-get": [need_tool("wget"), "-q", "-4", "--ca-certificate", c["cert"],
                     f"https://localhost:{srv.port}/size/300000", "-O", "OUT"],
        "wget-untrusted": [need_tool("wget"), "-q", "-4", f"https://localhost:{srv.port}/size/10",
                           "-O", "OUT"],
        "wget-refused": [need_tool("wget"), "-q", "-4", "--tries=1", "--ca-certificate", c["cert"],
                         f"https://localhost:{free_port()}/"],
        "gtclient": [prog("gtclient"), "127.0.0.1", str(echo.port), c["cert"], "3", "20000", "OUT"],
    }
    for name, argv in cases.items():
        (rc0, o0, e0), (rc1, o1, e1), (rc2, o2, e2) = run_three(env, name, argv, nosock)
        for mode, (rc, o, e) in (("LD_PRELOAD", (rc1, o1, e1)), ("tlsmirror run", (rc2, o2, e2))):
            check((rc, o, e) == (rc0, o0, e0), f"{name} with {mode} and no agent differs from "
                  f"the plain run: exit {rc0}/{rc}, stdout {short(o0)!r}/{short(o)!r}, "
                  f"stderr {short(e0)!r}/{short(e)!r}")
    with open(env.path("wget-get-plain.out"), "rb") as f:
        ref = f.read()
    for mode in ("preload", "run"):
        with open(env.path(f"wget-get-{mode}.out"), "rb") as f:
            assert_bytes(f"wget's output file ({mode})", ref, f.read())


@timeout(120)
def test_fail_open_agent_killed(env):
    size = 48 << 20
    body = gen_bytes(size, 137)
    with open(env.path("big.bin"), "wb") as f:
        f.write(body)
    srv = RecServer(env, body=env.path("big.bin"), rate=16 << 20)  # ~3 s
    agent = Agent(env).start()
    out = env.path("got.bin")
    p = env.captured("wget", agent.sock, [need_tool("wget"), "-q", "-4", "--ca-certificate",
                                          certs()["cert"], f"https://localhost:{srv.port}/body",
                                          "-O", out])
    wait_until(lambda: os.path.exists(out) and os.path.getsize(out) > (4 << 20), 20,
               "wget to have downloaded 4 MiB")
    agent.proc.signal(signal.SIGKILL)
    agent.proc.wait(10)
    check(os.path.getsize(out) < size, "the download ended before the agent was killed")
    rc = p.wait(60)
    check(rc == 0 and p.err() == b"", f"wget after the agent was SIGKILLed: exit {rc}, "
          f"stderr {short(p.err())!r}")
    with open(out, "rb") as f:
        assert_bytes("wget's file after the agent's SIGKILL", body, f.read())
