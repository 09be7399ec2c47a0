# Integration test 28 (static OpenSSL): programs with OpenSSL linked in (libssl.a, node) hooked in place; byte-exact, refusals, stripped, fail-open.
import re
import subprocess

from test_05_nginx import check_h1, check_h2
from tmlib import (TLSMIRROR, Agent, RecServer, certs, check, check_against_server, check_stream,
                   digits, feed, free_port, gen_bytes, judge, need_tool, proc_stats, prog, short,
                   stat_int, timeout, wait_until)


def static_server(env, sock, port, name="staticssl-server", binary="staticssl", extra_env=None):
    c = certs()
    argv = [prog(binary), "server", str(port), c["cert"], c["key"]]
    if sock is None:
        return env.spawn(name, argv, stdin=subprocess.PIPE, extra_env=extra_env)
    return env.captured(name, sock, argv, stdin=subprocess.PIPE, extra_env=extra_env)


def scan(env, sock, pid):
    r = subprocess.run([TLSMIRROR, "scan", "--socket", sock, str(pid)], capture_output=True,
                       timeout=30)
    check(r.returncode == 0, f"tlsmirror scan {pid}: exit {r.returncode}: {short(r.stderr)}")
    return r.stdout.decode()


def exchange(env, srv, cli, c2s, s2c, srv_has, cli_has):
    """Feeds both ends, waits for both payloads, ends both; returns nothing."""
    t1, t2 = feed(cli, c2s), feed(srv, s2c)
    wait_until(lambda: c2s in srv_has() and s2c in cli_has(), 30,
               f"both payloads to arrive; server stderr {short(srv.err())}, "
               f"client stderr {short(cli.err())}")
    t1.join(5)
    t2.join(5)
    cli.popen.stdin.close()
    srv.popen.stdin.close()
    for p in (cli, srv):
        rc = p.wait(20)
        check(rc == 0, f"{p.name} exited {rc}: {short(p.err())}")


def exchange_judged(env, agent, srv, cli, static, c2s, s2c, port):
    """exchange(), then: the static end hooked in place, one connection in the
    capture with exactly both payloads. Returns the agent's total stats."""
    exchange(env, srv, cli, c2s, s2c, srv.out, cli.out)
    procs, total = agent.final_stats()
    check_hooked(procs, static.pid, static.name, c2s, s2c)
    cap = judge(agent.pcap)
    syn = cap.syn_streams()
    check(len(syn) == 1, f"one connection (mirrored from one or both ends): {cap.describe()}")
    check_stream(syn[0], c2s=c2s, s2c=s2c, server=("127.0.0.1", port))
    return total


def check_hooked(procs, pid, name, c2s, s2c):
    ps = proc_stats(procs, pid)
    check(ps is not None, f"no stats line for {name} pid {pid}")
    check(stat_int(ps, "inline_hooks") == 7 and stat_int(ps, "inline_refused") == 0,
          f"{name}: want inline_hooks=7 inline_refused=0 (SSL_read/_ex, SSL_write/_ex, "
          f"SSL_do_handshake, SSL_shutdown, SSL_free hooked in place): {ps}")
    check(ps.get("tls") == "static-openssl", f"{name}: tls={ps.get('tls')}, want static-openssl")
    check(stat_int(ps, "conns") == 1 and stat_int(ps, "c2s_bytes") == len(c2s) and
          stat_int(ps, "s2c_bytes") == len(s2c),
          f"{name}: want conns=1 c2s_bytes={len(c2s)} s2c_bytes={len(s2c)}: {ps}")


@timeout(120)
def test_static_server_vs_s_client(env):
    """The libssl.a program as the server (captured), openssl s_client (captured
    too, shared libssl): one connection from both ends, byte-exact, deduplicated."""
    c = certs()
    port = free_port()
    c2s, s2c = digits(300_000, 281), digits(200_000, 282)
    agent = Agent(env).start()
    srv = static_server(env, agent.sock, port)
    wait_until(lambda: b"LISTEN" in srv.err() or not srv.alive(), 15, "staticssl LISTEN")
    check(srv.alive(), f"staticssl server exited: {short(srv.err())}")
    out = scan(env, agent.sock, srv.pid)
    check("stack=static-openssl" in out and "mirrored=waiting" in out,
          f"scan of the static server before its first TLS call: {out}")
    cli = env.captured("s_client", agent.sock,
                       [need_tool("openssl"), "s_client", "-quiet", "-connect", f"127.0.0.1:{port}",
                        "-servername", "localhost", "-CAfile", c["cert"]], stdin=subprocess.PIPE)
    wait_until(lambda: b"ACCEPT" in srv.err() or not srv.alive(), 15, "staticssl ACCEPT")
    out = scan(env, agent.sock, srv.pid)
    check("stack=static-openssl" in out and "mirrored=yes" in out and "hooked in place" in out,
          f"scan of the hooked static server: {out}")
    total = exchange_judged(env, agent, srv, cli, srv, c2s, s2c, port)
    check(stat_int(total, "duplicate_conns") == 1, f"dedup of the two ends: {total}")
    check(stat_int(total, "dropped_bytes") == 0, f"drops: {total}")
    check("hooked in place (7 functions)" in agent.stderr_text,
          f"the agent's log line for the hooked process: {short(agent.stderr_text.encode(), 800)}")


@timeout(120)
def test_static_client_vs_s_server(env):
    """The libssl.a program as the client (captured) against s_server (not captured)."""
    c = certs()
    port = free_port()
    c2s, s2c = digits(250_000, 283), digits(350_000, 284)
    agent = Agent(env).start()
    srv = env.spawn("s_server", [need_tool("openssl"), "s_server", "-accept",
                                 f"127.0.0.1:{port}", "-cert", c["cert"], "-key", c["key"],
                                 "-naccept", "1"], stdin=subprocess.PIPE)
    # (no probe connection: -naccept 1 would take it)
    wait_until(lambda: b"ACCEPT" in srv.out() or not srv.alive(), 15, "s_server ACCEPT")
    cli = env.captured("staticssl-client", agent.sock,
                       [prog("staticssl"), "client", "127.0.0.1", str(port), c["cert"]],
                       stdin=subprocess.PIPE)
    exchange_judged(env, agent, srv, cli, cli, c2s, s2c, port)


@timeout(120)
def test_static_failopen_no_agent(env):
    """No agent: both static ends work exactly as without the library."""
    c = certs()
    port = free_port()
    c2s, s2c = digits(100_000, 285), digits(100_000, 286)
    sock = env.path("nobody.sock")
    srv = static_server(env, sock, port)
    wait_until(lambda: b"LISTEN" in srv.err() or not srv.alive(), 15, "staticssl LISTEN")
    cli = env.captured("staticssl-client", sock,
                       [prog("staticssl"), "client", "127.0.0.1", str(port), c["cert"]],
                       stdin=subprocess.PIPE)
    exchange(env, srv, cli, c2s, s2c, srv.out, cli.out)
    check(srv.out() == c2s and cli.out() == s2c, "payloads changed under the library without agent")


@timeout(120)
def test_static_refused_and_stripped(env):
    """TLSMIRROR_NO_CODE_PATCH=1: not hooked, the agent says which process and
    why; stripped of .symtab: not reached, scan says so; both work unchanged."""
    c = certs()
    agent = Agent(env).start()
    for binary, extra, want_scan in (
            ("staticssl", {"TLSMIRROR_NO_CODE_PATCH": "1"}, "in-place hooks refused"),
            ("staticssl-stripped", None, "static TLS, stripped: not reachable")):
        port = free_port()
        c2s, s2c = digits(50_000, 287), digits(60_000, 288)
        srv = static_server(env, agent.sock, port, name=binary, binary=binary, extra_env=extra)
        wait_until(lambda: b"LISTEN" in srv.err() or not srv.alive(), 15, f"{binary} LISTEN")
        if extra:
            # refused: the process tells the agent from its constructor
            wait_until(lambda: proc_stats(agent.stats()[0], srv.pid) is not None, 10,
                       "the refused process in tlsmirror stats")
        out = scan(env, agent.sock, srv.pid)
        check("stack=static-openssl" in out and "mirrored=no" in out and want_scan in out,
              f"scan of {binary} {extra or ''}: want mirrored=no, {want_scan!r}: {out}")
        cli = env.spawn("s_client", [need_tool("openssl"), "s_client", "-quiet", "-connect",
                                     f"127.0.0.1:{port}", "-servername", "localhost", "-CAfile",
                                     c["cert"]], stdin=subprocess.PIPE)
        exchange(env, srv, cli, c2s, s2c, srv.out, cli.out)
        check(srv.out() == c2s and cli.out() == s2c, f"{binary}: payloads changed")
        if extra:
            ps = proc_stats(agent.stats()[0], srv.pid)
            check(ps is not None and stat_int(ps, "inline_hooks") == 0 and
                  stat_int(ps, "inline_refused") == 7 and stat_int(ps, "conns") == 0,
                  f"refused process: want inline_hooks=0 inline_refused=7 conns=0: {ps}")
    procs, total = agent.final_stats()
    check(stat_int(total, "conns") == 0, f"nothing is mirrored from unhooked programs: {total}")
    check("NOT hooked (7 function(s) left alone): code patching is off (TLSMIRROR_NO_CODE_PATCH)"
          in agent.stderr_text, f"the agent's log of the refusal: {short(agent.stderr_text.encode(), 800)}")


NODE_SERVER = r"""
const https = require('https'), fs = require('fs');
const [cert, key, bodyPath] = process.argv.slice(2);
const body = fs.readFileSync(bodyPath);
https.createServer({cert: fs.readFileSync(cert), key: fs.readFileSync(key)}, (req, res) => {
  const parts = [];
  req.on('data', d => parts.push(d));
  req.on('end', () => {
    const got = Buffer.concat(parts);
    res.writeHead(200, {'content-length': got.length ? got.length : body.length});
    res.end(got.length ? got : body);
  });
}).listen(0, '127.0.0.1', function () { console.log('PORT ' + this.address().port); });
"""

NODE_CLIENT = r"""
const https = require('https'), fs = require('fs');
const [ca, port, postPath, outPath] = process.argv.slice(2);
const agent = new https.Agent({keepAlive: false});
function req(method, path, data) {
  return new Promise((ok, bad) => {
    const r = https.request({host: '127.0.0.1', port: +port, path, method, ca: fs.readFileSync(ca),
                             servername: 'localhost', agent,
                             headers: data ? {'content-length': data.length} : {}}, res => {
      const parts = []; res.on('data', d => parts.push(d)); res.on('end', () => ok(Buffer.concat(parts)));
    });
    r.on('error', bad); r.end(data);
  });
}
(async () => {
  const got = await req('GET', '/body');
  const echoed = await req('POST', '/echo', fs.readFileSync(postPath));
  fs.writeFileSync(outPath, Buffer.concat([got, echoed]));
})().catch(e => { console.error(e); process.exit(1); });
"""


@timeout(150)
def test_node_https_server_curl(env):
    """node's https server (OpenSSL linked into node) captured, curl GET and POST: byte-exact."""
    c = certs()
    body = digits(1 << 20, 289)
    post = digits(300_000, 290)
    for name, data in (("body.txt", body), ("post.txt", post)):
        with open(env.path(name), "wb") as f:
            f.write(data)
    agent, srv, port = start_node_server(env, "node-server", NODE_SERVER, "body.txt")
    url = f"https://localhost:{port}"
    curl = need_tool("curl")
    for args, out in ((["-o", env.path("got.txt"), url + "/body"], "got.txt"),
                      (["--data-binary", "@" + env.path("post.txt"), "-o", env.path("echo.txt"),
                        url + "/echo"], "echo.txt")):
        rc, _, err = env.run("curl", [curl, "-sS", "--http1.1", "--cacert", c["cert"]] + args)
        check(rc == 0, f"curl {args}: exit {rc}: {short(err)}")
    with open(env.path("got.txt"), "rb") as f:
        check(f.read() == body, "curl's GET body differs from the served file")
    with open(env.path("echo.txt"), "rb") as f:
        check(f.read() == post, "curl's POST echo differs")
    wait_until(lambda: stat_int(proc_stats(agent.stats()[0], srv.pid) or {"conns": "0"},
                                "conns") == 2, 15, "both connections in the node server's stats")
    srv.signal(15)
    srv.wait(15)
    procs, total = agent.final_stats()
    ps = proc_stats(procs, srv.pid)
    check(ps is not None and stat_int(ps, "inline_hooks") >= 4 and stat_int(ps, "inline_refused") == 0
          and ps.get("tls") == "static-openssl", f"node server: hooked in place: {ps}")
    cap = judge(agent.pcap)
    syn = cap.syn_streams()
    check(len(syn) == 2, f"two connections: {cap.describe()}")
    get, pst = sorted(syn, key=lambda s: s.idx)
    for st in (get, pst):
        check(st.server == ("127.0.0.1", port), f"{st.name()}: server end")
    check(get.bytes(0).startswith(b"GET /body HTTP/1.1\r\n"), f"GET request: {short(get.bytes(0))}")
    check(get.bytes(1).startswith(b"HTTP/1.1 200 OK\r\n") and get.bytes(1).endswith(body),
          f"GET response in the capture: {len(get.bytes(1))} bytes, ends with the body: "
          f"{get.bytes(1).endswith(body)}")
    check(pst.bytes(0).startswith(b"POST /echo HTTP/1.1\r\n") and pst.bytes(0).endswith(post),
          "POST request in the capture does not end with the posted body")
    check(pst.bytes(1).endswith(post), "POST response in the capture does not end with the echo")


def start_node_server(env, name, script, body_file):
    """An agent and the node server script (cert, key, body file) under capture: (agent, proc, port)."""
    c = certs()
    with open(env.path(name + ".js"), "w") as f:
        f.write(script)
    agent = Agent(env).start()
    srv = env.captured(name, agent.sock, [need_tool("node"), env.path(name + ".js"), c["cert"],
                                          c["key"], env.path(body_file)])
    return agent, srv, wait_until(lambda: node_port(srv), 20, f"{name} PORT")


def node_port(p):
    check(p.alive(), f"{p.name} exited: {short(p.err())}")
    out = p.out().split()
    return int(out[1]) if len(out) >= 2 and out[0] == b"PORT" else None


@timeout(150)
def test_node_https_client(env):
    """node's https client captured against the recording server: every byte it
    sent and received, as the server logged them."""
    node = need_tool("node")
    c = certs()
    body = digits(700_000, 291)
    post = digits(200_000, 292)
    with open(env.path("body.txt"), "wb") as f:
        f.write(body)
    with open(env.path("post.txt"), "wb") as f:
        f.write(post)
    with open(env.path("cli.js"), "w") as f:
        f.write(NODE_CLIENT)
    srv = RecServer(env, body=env.path("body.txt"))
    agent = Agent(env).start()
    cli = env.captured("node-client", agent.sock, [node, env.path("cli.js"), c["cert"],
                                                    str(srv.port), env.path("post.txt"),
                                                    env.path("out.bin")])
    rc = cli.wait(60)
    check(rc == 0, f"node client exited {rc}: {short(cli.err())}")
    with open(env.path("out.bin"), "rb") as f:
        check(f.read() == body + post, "node client's GET + POST echo differ from the server's")
    conns = srv.conns(2)
    procs, total = agent.final_stats()
    ps = proc_stats(procs, cli.pid)
    check(ps is not None and stat_int(ps, "conns") == 2 and ps.get("tls") == "static-openssl" and
          stat_int(ps, "c2s_bytes") == sum(len(x.c2s) for x in conns) and
          stat_int(ps, "s2c_bytes") == sum(len(x.s2c) for x in conns),
          f"node client stats: {ps}")
    cap = judge(agent.pcap)
    check_against_server(cap, conns)


NODE_H2_SERVER = r"""
const http2 = require('http2'), fs = require('fs');
const [cert, key, bodyPath] = process.argv.slice(2);
const body = fs.readFileSync(bodyPath);
http2.createSecureServer({allowHTTP1: true, cert: fs.readFileSync(cert), key: fs.readFileSync(key)},
                         (req, res) => {
  res.writeHead(200, {'content-length': body.length});
  res.end(body);
}).listen(0, '127.0.0.1', function () { console.log('PORT ' + this.address().port); });
"""


def h2load_run(env, url, h1, n, clients):
    argv = [need_tool("h2load"), "-n", str(n), "-c", str(clients), "-m", "4"] + (["--h1"] if h1 else [])
    rc, out, err = env.run("h2load-h1" if h1 else "h2load-h2", argv + [url], timeout_s=120)
    text = out.decode("utf-8", "replace")
    m = re.search(r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed",
                  text)
    check(rc == 0 and m and int(m.group(4)) == n and int(m.group(5)) == 0,
          f"h2load {'--h1 ' if h1 else ''}{url} against node under capture: exit {rc}: "
          f"{short((text + err.decode()).encode(), 800)}")


@timeout(200)
def test_node_h1_h2_under_h2load(env):
    """node's http2 server (HTTP/1.1 allowed) captured under h2load, h1 then h2:
    no failed request, every request and response in the capture, every body exact."""
    n, clients = 400, 4
    body = gen_bytes(1024, 293)
    with open(env.path("1k"), "wb") as f:
        f.write(body)
    agent, srv, port = start_node_server(env, "node-h2", NODE_H2_SERVER, "1k")
    h2load_run(env, f"https://127.0.0.1:{port}/1k", True, n, clients)
    h2load_run(env, f"https://127.0.0.1:{port}/1k", False, n, clients)
    wait_until(lambda: stat_int(proc_stats(agent.stats()[0], srv.pid) or {"conns": "0"},
                                "conns") == 2 * clients, 15, "the node server's connections in its stats")
    srv.signal(15)
    srv.wait(15)
    procs, total = agent.final_stats()
    ps = proc_stats(procs, srv.pid)
    check(ps is not None and ps.get("tls") == "static-openssl" and stat_int(ps, "inline_hooks") >= 4,
          f"node server stats: {ps}")
    check(stat_int(total, "dropped_bytes") == 0 and stat_int(total, "gap_bytes") == 0,
          f"drops: {total}")
    cap = judge(agent.pcap)
    syn = cap.syn_streams()
    check(len(syn) == 2 * clients, f"{2 * clients} connections: {cap.describe()}")
    h1 = [st for st in syn if not st.bytes(0).startswith(b"PRI * HTTP/2.0")]
    h2 = [st for st in syn if st.bytes(0).startswith(b"PRI * HTTP/2.0")]
    check(len(h1) == clients and len(h2) == clients, f"h1 {len(h1)}, h2 {len(h2)} connections")
    reqs, resps, s2c1 = check_h1(h1, body)
    check(reqs == n and resps == n, f"h1: {reqs} requests, {resps} responses in the capture, want {n}")
    reqs, resps, s2c2 = check_h2(h2, body)
    check(reqs == n and resps == n, f"h2: {reqs} requests, {resps} responses in the capture, want {n}")
    check(s2c1 + s2c2 == stat_int(ps, "s2c_bytes"), f"capture s2c {s2c1 + s2c2} vs stats {ps}")


@timeout(120)
def test_static_attach_patches_no_code(env):
    """tlsmirror attach to a running libssl.a program: the library loads, patches
    no code (late: other threads could be anywhere), says so; the program works on."""
    c = certs()
    port = free_port()
    c2s, s2c = digits(40_000, 294), digits(30_000, 295)
    agent = Agent(env).start()
    srv = static_server(env, None, port)
    wait_until(lambda: b"LISTEN" in srv.err() or not srv.alive(), 15, "staticssl LISTEN")
    r = subprocess.run([TLSMIRROR, "attach", "--socket", agent.sock, str(srv.pid)],
                       capture_output=True, timeout=60)
    check(r.returncode == 0, f"attach to the static program: exit {r.returncode}: {short(r.stderr)}")
    out = scan(env, agent.sock, srv.pid)
    check("stack=static-openssl" in out and "mirrored=no" in out and "loaded late (tlsmirror attach)" in out,
          f"scan of the attached static program: want mirrored=no, loaded late: {out}")
    cli = env.spawn("s_client", [need_tool("openssl"), "s_client", "-quiet", "-connect",
                                 f"127.0.0.1:{port}", "-servername", "localhost", "-CAfile",
                                 c["cert"]], stdin=subprocess.PIPE)
    exchange(env, srv, cli, c2s, s2c, srv.out, cli.out)
    check(srv.out() == c2s and cli.out() == s2c, "payloads changed after attach")
    procs, total = agent.final_stats()
    check(stat_int(total, "conns") == 0, f"no code patched, nothing mirrored: {total}")
