# Integration test 13: --h2-to-h1: nginx (h2) under capture, curl --http2, h2load -m 10, nghttp (push); tshark sees HTTP/1.1 exchanges.
import os
import random
import re
import signal
import time

from tmlib import (nginx_conf, PYTHON, Agent, certs, check, free_port, gen_bytes, judge, need_tool, short,
                   stat_int, timeout, tshark_fields, wait_until)

CONF = nginx_conf(1, """    large_client_header_buffers 4 64k;
    client_max_body_size 10m;
    client_body_buffer_size 1m;
    server {{
        listen 127.0.0.1:{port} ssl http2;
        ssl_certificate {cert};
        ssl_certificate_key {key};
        root {prefix}/html;
        location /echo {{ proxy_pass http://127.0.0.1:{bport}; }}
        location /stream {{
            proxy_pass http://127.0.0.1:{bport};
            proxy_buffering off;
            add_trailer X-Trail "done" always;
        }}
        location = /pushy {{ http2_push /small; return 200 "pushed\\n"; }}
    }}
""")

# A backend behind nginx: /stream answers HTTP/1.0 without a length (nginx then
# sends h2 DATA without content-length: chunked after conversion), /echo echoes.
BACKEND = r"""
import http.server, socketserver, sys, time
BODY = open(sys.argv[2], "rb").read()
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.0"
    def log_message(self, *a):
        pass
    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.end_headers()
        for i in range(0, len(BODY), 7000):
            self.wfile.write(BODY[i:i + 7000])
            self.wfile.flush()
            time.sleep(0.002)
    def do_POST(self):
        n = int(self.headers.get("Content-Length", "0"))
        body = self.rfile.read(n)
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
class S(socketserver.ThreadingTCPServer):
    allow_reuse_address = True
S(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
"""

F64K = 64 * 1024


def parse_h1(data, responses):
    """Splits HTTP/1.1 bytes into (start line, [(name, value)], body, trailers):
    content-length, chunked (with trailers), bodyless statuses; nothing may be left over."""
    out, pos = [], 0
    while pos < len(data):
        end = data.find(b"\r\n\r\n", pos)
        check(end >= 0, f"incomplete HTTP head at offset {pos}: {data[pos:pos + 80]!r}")
        lines = data[pos:end].split(b"\r\n")
        hdrs = [tuple(x.strip() for x in l.split(b":", 1)) for l in lines[1:]]
        hd = {k.lower(): v for k, v in hdrs}
        pos = end + 4
        status = lines[0].split(b" ")[1] if responses else b""
        body, trailers = b"", []
        if responses and (status.startswith(b"1") or status in (b"204", b"304")):
            pass
        elif hd.get(b"transfer-encoding") == b"chunked":
            while True:
                e = data.find(b"\r\n", pos)
                check(e >= 0, f"chunk size line cut at {pos}")
                n = int(data[pos:e].split(b";")[0], 16)
                pos = e + 2
                if n == 0:
                    e = data.find(b"\r\n\r\n", pos - 2)
                    check(e >= 0, "trailer section cut")
                    trailers = [tuple(x.strip() for x in l.split(b":", 1))
                                for l in data[pos:e].split(b"\r\n") if l]
                    pos = e + 4
                    break
                body += data[pos:pos + n]
                check(data[pos + n:pos + n + 2] == b"\r\n", f"chunk at {pos} not followed by CRLF")
                pos += n + 2
        else:
            n = int(hd.get(b"content-length", b"0"))
            body = data[pos:pos + n]
            check(len(body) == n, f"body cut: {len(body)} of {n}")
            pos += n
        out.append((lines[0], hdrs, body, trailers))
    return out


def start_nginx(env, agent, prefix, port, bport):
    c = certs()
    return run_nginx(env, agent, prefix, CONF.format(prefix=prefix, port=port, bport=bport,
                                                     cert=c["cert"], key=c["key"]))


def run_nginx(env, agent, prefix, conf_text):
    """nginx under capture with conf_text as its nginx.conf in prefix; waits until it is up."""
    conf = os.path.join(prefix, "nginx.conf")
    with open(conf, "w") as f:
        f.write(conf_text)
    ngx = env.captured("nginx", agent.sock, [need_tool("nginx"), "-p", prefix, "-e",
                                              os.path.join(prefix, "error.log"), "-c", conf,
                                              "-g", "daemon off;"])

    def up():
        check(ngx.alive(), f"nginx exited: {short(ngx.err())}")
        return os.path.exists(os.path.join(prefix, "nginx.pid"))
    wait_until(up, 15, "nginx pid file")
    time.sleep(0.5)
    return ngx


def setup(env):
    prefix = env.path("nginx")
    for d in ("html", "tmp", "logs"):
        os.makedirs(os.path.join(prefix, d))
    files = {"f64k": gen_bytes(F64K, 131), "small": gen_bytes(100, 132),
             "streamed": gen_bytes(150000, 133)}
    for name, data in files.items():
        with open(os.path.join(prefix, "html", name), "wb") as f:
            f.write(data)
    bport = free_port()
    with open(env.path("backend.py"), "w") as f:
        f.write(BACKEND)
    env.spawn("backend", [PYTHON, env.path("backend.py"), str(bport),
                          os.path.join(prefix, "html", "streamed")])
    return prefix, files, bport


def curl(env, name, args):
    rc, out, err = env.run(name, [need_tool("curl"), "-sS", "--http2", "--cacert", certs()["cert"]]
                           + args, timeout_s=60)
    check(rc == 0, f"curl {name} exited {rc}: {short(err)}")
    return out


def traffic(env, port, files):
    """Runs the h2 clients; returns the (method, uri) requests expected and the POST body."""
    base = f"https://localhost:{port}"
    resolve = ["--resolve", f"localhost:{port}:127.0.0.1"]
    expect = []
    # one connection: static files, a 20 KiB header (HEADERS + CONTINUATION), a cookie pair
    big = "v" * (20 * 1024)
    curl(env, "curl-get", resolve + ["-H", f"x-big: {big}", "-H", "cookie: a=1; b=2",
                                      "-o", "/dev/null", base + "/f64k",
                                      "-o", "/dev/null", base + "/small"])
    expect += [("GET", "/f64k"), ("GET", "/small")]
    # one connection, 30 requests with changing header values: HPACK evictions
    rnd = random.Random(7)
    args = list(resolve)
    for i in range(30):
        if i:
            args.append("--next")
        args += ["--http2", "--cacert", certs()["cert"], "-o", "/dev/null", "-H",
                 f"x-n: {rnd.randbytes(300).hex()}", f"{base}/small?i={i}"]
        expect.append(("GET", f"/small?i={i}"))
    curl(env, "curl-evict", args)
    # POST body (through the echo backend) and a streamed response without length + trailer
    post = gen_bytes(300000, 134)
    with open(env.path("post.bin"), "wb") as f:
        f.write(post)
    got = curl(env, "curl-post", resolve + ["--data-binary", "@" + env.path("post.bin"),
                                            base + "/echo"])
    check(got == post, "the echo backend did not return the POST body")
    expect.append(("POST", "/echo"))
    got = curl(env, "curl-stream", resolve + [base + "/stream"])
    check(got == files["streamed"], "curl got a different streamed body")
    expect.append(("GET", "/stream"))
    # multiplexed: h2load -m 10
    rc, out, err = env.run("h2load", [need_tool("h2load"), "-n", "100", "-c", "2", "-m", "10",
                                      "-H", ":authority: localhost", f"https://127.0.0.1:{port}/f64k"],
                           timeout_s=60)
    text = out.decode("utf-8", "replace")
    check(rc == 0 and "100 succeeded" in text, f"h2load: {short(text + err.decode(), 600)}")
    expect += [("GET", "/f64k")] * 100
    # server push (nghttp accepts pushes): the pushed /small on a connection of its own
    rc, out, err = env.run("nghttp", [need_tool("nghttp"), "-n", "-s",
                                      f"https://127.0.0.1:{port}/pushy"], timeout_s=30)
    check(rc == 0 and re.search(rb"\*\s+\S+\s+\S+\s+200\s+\d+\s+/small", out),
          f"nghttp did not get /small pushed: {short(out + err, 600)}")
    expect += [("GET", "/pushy"), ("GET", "/small")]
    return expect, post


def stop_all(env, ngx, agent):
    ngx.signal(signal.SIGQUIT)
    check(ngx.wait(20) == 0, f"nginx exit: {short(ngx.err())}")
    time.sleep(0.3)
    return agent.final_stats()


@timeout(180)
def test_h2_to_h1(env):
    prefix, files, bport = setup(env)
    port = free_port()
    agent = Agent(env, args=["--h2-to-h1"]).start()
    ngx = start_nginx(env, agent, prefix, port, bport)
    expect, post = traffic(env, port, files)
    procs, total = stop_all(env, ngx, agent)
    n = len(expect)
    check(stat_int(total, "h2_conns") == 7 and stat_int(total, "h2_streams") == n and
          stat_int(total, "h2_errors") == 0 and stat_int(total, "h2_fallbacks") == 0,
          f"h2 counters, want 7 connections and {n} streams: {total}")
    cap = judge(agent.pcap)
    # one synthetic connection per stream, client ports below the ephemeral range
    syn = cap.syn_streams()
    check(len(syn) == n, f"{len(syn)} TCP connections, want {n} (one per stream): {cap.describe()}")
    for st in syn:
        check(st.server == ("127.0.0.1", port) and 10000 <= st.client[1] <= 32767,
              f"{st.name()}: not a synthetic connection to nginx")
    # tshark sees HTTP/1.1 with the right methods, URIs and Host
    rows = tshark_fields(agent.pcap, ["http.request.method", "http.request.uri", "http.host",
                                      "http.request.version"], display_filter="http.request")
    got = sorted((r[0], r[1]) for r in rows)
    check(got == sorted(expect), f"tshark's requests differ: {got[:5]}... want {sorted(expect)[:5]}")
    check(all(r[2] in ("localhost", f"localhost:{port}", f"127.0.0.1:{port}") and
              r[3] == "HTTP/1.1" for r in rows),
          f"Host/version: {set((r[2], r[3]) for r in rows)}")
    big_ok = evicted_ok = stream_ok = post_ok = 0
    for st in syn:
        (rl, rh, rb, _), = parse_h1(st.bytes(0), responses=False)
        resps = parse_h1(st.bytes(1), responses=True)
        check(len(resps) == 1, f"{st.name()}: {len(resps)} responses")
        sl, sh, sb, tr = resps[0]
        check(sl.startswith(b"HTTP/1.1 200"), f"{st.name()}: {sl!r}")
        uri = rl.split(b" ")[1].decode()
        want = {"/f64k": files["f64k"], "/stream": files["streamed"], "/echo": post,
                "/pushy": b"pushed\n"}.get(uri, files["small"])
        check(sb == want, f"{st.name()} {uri}: response body of {len(sb)} bytes differs")
        hd = dict(rh)
        if uri == "/f64k" and hd.get(b"x-big") == b"v" * 20480:
            big_ok = hd.get(b"cookie") == b"a=1; b=2"
        if uri.startswith("/small?i="):
            evicted_ok += len(hd.get(b"x-n", b"")) == 600
        if uri == "/stream":
            stream_ok = (dict(sh).get(b"transfer-encoding") == b"chunked" and
                         (b"x-trail", b"done") in [(k.lower(), v) for k, v in tr])
        if uri == "/echo":
            post_ok = rb == post
    check(big_ok, "no /f64k request with the 20 KiB x-big header and the joined cookie")
    check(evicted_ok == 30, f"{evicted_ok} of 30 requests carry their x-n header")
    check(stream_ok, "the /stream response is not chunked with its X-Trail trailer")
    check(post_ok, "the POST body is not byte-exact")


@timeout(120)
def test_h2_unconverted_without_option(env):
    prefix, files, bport = setup(env)
    port = free_port()
    agent = Agent(env).start()
    ngx = start_nginx(env, agent, prefix, port, bport)
    curl(env, "curl-get", ["--resolve", f"localhost:{port}:127.0.0.1", "-o", "/dev/null",
                           f"https://localhost:{port}/f64k"])
    procs, total = stop_all(env, ngx, agent)
    check(stat_int(total, "h2_conns") == 0, f"h2 counters without the option: {total}")
    cap = judge(agent.pcap, binary=lambda st: True)
    check(len(cap.syn_streams()) == 1, f"want the one real connection: {cap.describe()}")
    rows = tshark_fields(agent.pcap, ["http2.type"], display_filter="http2",
                         extra=["-d", f"tcp.port=={port},http2"])
    check(rows and any("1" in r[0].split(",") for r in rows),
          f"tshark sees no HTTP/2 HEADERS: {rows[:5]}")
    check(not tshark_fields(agent.pcap, ["frame.number"], display_filter="http.request"),
          "HTTP/1.1 requests in an unconverted capture")
