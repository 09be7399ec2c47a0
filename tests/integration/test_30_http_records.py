# Integration test 30: --http-log: nginx (HTTP/1.1 and HTTP/2) and Python's http.server under capture; each JSON record equals what curl, h2load and raw clients sent and got; tshark's HTTP view of the same run agrees.
import base64
import hashlib
import json
import os
import signal
import socket
import ssl
import subprocess
import time

from test_13_h2 import run_nginx
from tmlib import (HELPERS, PYTHON, Agent, certs, check, free_port, gen_bytes, need_tool,
                   nginx_conf, short, stat_int, timeout, tshark_fields, wait_listening,
                   wait_until)

H2RAW = os.path.join(HELPERS, "h2raw.py")

CONF = nginx_conf(1, """    client_max_body_size 10m;
    client_body_buffer_size 1m;
    etag on;
    server {{
        listen 127.0.0.1:{port} ssl http2;
        ssl_certificate {cert};
        ssl_certificate_key {key};
        root {prefix}/html;
        location = /nc {{ return 204; }}
        location /echo {{ proxy_pass http://127.0.0.1:{bport}; }}
        location /ws {{
            proxy_pass http://127.0.0.1:{bport};
            proxy_http_version 1.1;
            proxy_set_header Upgrade $http_upgrade;
            proxy_set_header Connection "upgrade";
        }}
    }}
""")

# Behind nginx: /echo answers a POST with its body and content type; /ws
# switches protocols and echoes raw bytes until the client closes.
BACKEND = r"""
import http.server, socketserver, sys
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def log_message(self, *a):
        pass
    def do_POST(self):
        n = int(self.headers.get("Content-Length", "0"))
        body = self.rfile.read(n)
        self.send_response(200)
        self.send_header("Content-Type", self.headers.get("Content-Type", "application/octet-stream"))
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def do_GET(self):
        if self.headers.get("Upgrade", "").lower() != "websocket":
            self.send_error(404)
            return
        self.send_response(101)
        self.send_header("Upgrade", "websocket")
        self.send_header("Connection", "Upgrade")
        self.end_headers()
        self.wfile.flush()
        while True:
            b = self.connection.recv(65536)
            if not b:
                break
            self.connection.sendall(b)
        self.close_connection = True
class S(socketserver.ThreadingTCPServer):
    allow_reuse_address = True
    daemon_threads = True
S(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
"""

# Python's http.server behind a TLS wrapper: HTTP/1.0, a response without
# a length, ended by the close.
PYSERVER = r"""
import http.server, ssl, sys
body = open(sys.argv[4], "rb").read()
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.0"
    def log_message(self, *a):
        pass
    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.end_headers()
        for i in range(0, len(body), 1000):
            self.wfile.write(body[i:i + 1000])
srv = http.server.HTTPServer(("127.0.0.1", int(sys.argv[1])), H)
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(sys.argv[2], sys.argv[3])
srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
srv.serve_forever()
"""

BODY_MAX = 64 * 1024


def sha(b):
    return hashlib.sha256(b).hexdigest()


def body_of(part):
    """The bytes a record kept of a body."""
    if part["body"] is None:
        return b""
    if part["body_encoding"] == "base64":
        return base64.b64decode(part["body"])
    return part["body"].encode("utf-8")


def hdr(part, name):
    return [v for k, v in part["headers"] if k.lower() == name]


def tls_client(port):
    ctx = ssl.create_default_context(cafile=certs()["cert"])
    ctx.set_alpn_protocols(["http/1.1"])
    raw = socket.create_connection(("127.0.0.1", port), timeout=10)
    return ctx.wrap_socket(raw, server_hostname="localhost")


def read_all(s):
    out = b""
    while True:
        try:
            b = s.recv(65536)
        except (ssl.SSLError, OSError):
            break
        if not b:
            break
        out += b
    return out


def curl(env, name, args):
    rc, out, err = env.run(name, [need_tool("curl"), "-sS", "--cacert", certs()["cert"]] + args,
                           timeout_s=60)
    check(rc == 0, f"curl {name} exited {rc}: {short(err)}")
    return out


def setup(env):
    prefix = env.path("nginx")
    for d in ("html", "tmp", "logs"):
        os.makedirs(os.path.join(prefix, d))
    files = {"f4k": gen_bytes(4096, 3001).hex()[:4096].encode(),  # text
             "big": gen_bytes(1 << 20, 3002)}                      # binary
    for name, data in files.items():
        with open(os.path.join(prefix, "html", name), "wb") as f:
            f.write(data)
    bport = free_port()
    with open(env.path("backend.py"), "w") as f:
        f.write(BACKEND)
    env.spawn("backend", [PYTHON, env.path("backend.py"), str(bport)])
    wait_listening(bport)
    return prefix, files, bport


def records_of(path):
    with open(path, "rb") as f:
        data = f.read()
    check(data.endswith(b"\n") or not data, "the record file does not end with a newline")
    return [json.loads(line) for line in data.split(b"\n") if line]


@timeout(240)
def test_http_records_nginx_and_python(env):
    prefix, files, bport = setup(env)
    port, pyport = free_port(), free_port()
    log = env.path("records.jsonl")
    agent = Agent(env, args=["--http-log", log]).start()
    c = certs()
    ngx = run_nginx(env, agent, prefix, CONF.format(prefix=prefix, port=port, bport=bport,
                                                    cert=c["cert"], key=c["key"]))
    with open(env.path("pyserver.py"), "w") as f:
        f.write(PYSERVER)
    pytext = ("unicode \u00e9t\u00e9 " * 3000).encode("utf-8")
    with open(env.path("pybody"), "wb") as f:
        f.write(pytext)
    pysrv = env.captured("pyserver", agent.sock, [PYTHON, env.path("pyserver.py"), str(pyport),
                                                  c["cert"], c["key"], env.path("pybody")])
    wait_listening(pyport)
    base = f"https://localhost:{port}"
    res = ["--resolve", f"localhost:{port}:127.0.0.1", "--http1.1"]
    sent = []   # (version, method, path) of every request, in the order sent per connection

    # GET, HEAD (its ETag), 304 by If-None-Match, 204, the 1 MiB download
    got = curl(env, "get", res + [base + "/f4k"])
    check(got == files["f4k"], "curl got a different /f4k")
    head = curl(env, "head", res + ["-I", base + "/f4k"]).decode()
    etag = [l.split(":", 1)[1].strip() for l in head.split("\r\n") if l.lower().startswith("etag:")]
    check(etag, f"nginx sent no ETag: {head}")
    curl(env, "304", res + ["-H", f"If-None-Match: {etag[0]}", "-o", "/dev/null", base + "/f4k"])
    curl(env, "204", res + ["-o", "/dev/null", base + "/nc"])
    got = curl(env, "big", res + [base + "/big"])
    check(got == files["big"], "curl got a different /big")
    sent += [("1.1", "GET", "/f4k"), ("1.1", "HEAD", "/f4k"), ("1.1", "GET", "/f4k"),
             ("1.1", "GET", "/nc"), ("1.1", "GET", "/big")]
    # POST with a JSON body; a chunked upload of 100 KiB
    js = json.dumps({"user": "alice", "items": [1, 2, 3], "note": "caf\u00e9"}).encode()
    got = curl(env, "json", res + ["-H", "Content-Type: application/json", "--data-binary", js,
                                   base + "/echo"])
    check(got == js, "the echo backend did not return the JSON body")
    up = gen_bytes(100 * 1024, 3003)
    with open(env.path("up.bin"), "wb") as f:
        f.write(up)
    got = curl(env, "chunked", res + ["-H", "Transfer-Encoding: chunked", "--data-binary",
                                      "@" + env.path("up.bin"), base + "/echo"])
    check(got == up, "the echo backend did not return the chunked upload")
    sent += [("1.1", "POST", "/echo"), ("1.1", "POST", "/echo")]
    # one keep-alive connection, 50 requests
    args = list(res)
    for i in range(50):
        args += ["-o", "/dev/null", f"{base}/f4k?n={i}"]
    curl(env, "keepalive", args)
    sent += [("1.1", "GET", f"/f4k?n={i}") for i in range(50)]
    # pipelined: three requests in one write, before any response
    s = tls_client(port)
    s.sendall(b"".join(f"GET /f4k?p={i} HTTP/1.1\r\nHost: localhost\r\n{'Connection: close' if i == 2 else 'X-P: 1'}\r\n\r\n".encode()
                       for i in range(3)))
    piped = read_all(s)
    s.close()
    check(piped.count(b"HTTP/1.1 200 OK") == 3, f"pipelined: {short(piped)}")
    sent += [("1.1", "GET", f"/f4k?p={i}") for i in range(3)]
    # WebSocket: the handshake is an exchange; the frames (an HTTP request in
    # them, on purpose) are not
    s = tls_client(port)
    s.sendall(b"GET /ws HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
              b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
    resp = b""
    while b"\r\n\r\n" not in resp:
        resp += s.recv(4096)
    check(resp.startswith(b"HTTP/1.1 101"), f"websocket: {short(resp)}")
    smuggled = b"GET /smuggled HTTP/1.1\r\nHost: localhost\r\n\r\n"
    s.sendall(smuggled)
    echo = resp.split(b"\r\n\r\n", 1)[1]
    while len(echo) < len(smuggled):
        echo += s.recv(4096)
    check(echo == smuggled, f"websocket echo: {echo!r}")
    s.close()
    sent += [("1.1", "GET", "/ws")]
    # HTTP/2: curl and h2load -m 10
    h2 = ["--resolve", f"localhost:{port}:127.0.0.1", "--http2"]
    curl(env, "h2get", h2 + ["-o", "/dev/null", base + "/f4k", "-o", "/dev/null", base + "/big"])
    got = curl(env, "h2post", h2 + ["-H", "Content-Type: application/json", "--data-binary", js,
                                    base + "/echo"])
    check(got == js, "h2: the echo backend did not return the JSON body")
    sent += [("2", "GET", "/f4k"), ("2", "GET", "/big"), ("2", "POST", "/echo")]
    rc, out, err = env.run("h2load", [need_tool("h2load"), "-n", "100", "-c", "2", "-m", "10",
                                      "-H", ":authority: localhost", f"https://127.0.0.1:{port}/f4k"],
                           timeout_s=60)
    check(rc == 0 and b"100 succeeded" in out, f"h2load: {short(out + err, 600)}")
    sent += [("2", "GET", "/f4k")] * 100
    # Python's http.server: HTTP/1.0, no length
    got = curl(env, "py", ["--resolve", f"localhost:{pyport}:127.0.0.1",
                           f"https://localhost:{pyport}/py?x=1"])
    check(got == pytext, "curl got a different body from the Python server")
    sent += [("1.1", "GET", "/py")]   # curl asks in HTTP/1.1, the answer is HTTP/1.0

    time.sleep(0.5)
    ngx.signal(signal.SIGQUIT)
    check(ngx.wait(20) == 0, f"nginx exit: {short(ngx.err())}")
    pysrv.signal(signal.SIGTERM)
    pysrv.wait(10)
    time.sleep(0.3)
    procs, total = agent.final_stats()
    recs = records_of(log)

    # as many records as requests, the same requests
    def key(r):
        return (r["http_version"].split("/")[1], r["method"], r["path"] +
                (("?" + r["query"]) if r["query"] is not None else ""))
    want = sorted((v, m, p if p != "/py" else "/py?x=1") for v, m, p in sent)
    check(sorted(key(r) for r in recs) == want,
          f"{len(recs)} records for {len(sent)} requests; differ: "
          f"{sorted(set(map(key, recs)) ^ set(want))[:8]}")
    check(not any("smuggled" in json.dumps(r) and r["path"] != "/ws" for r in recs),
          "a record of the WebSocket payload")
    by = {}
    for r in recs:
        by.setdefault(key(r), []).append(r)

    def one(k):
        check(k in by, f"no record for {k}")
        return by[k][0]
    # every record: complete, with its connection's facts
    for r in recs:
        check(r["end"] in ("done", "upgrade"), f"{key(r)}: end {r['end']}")
        check(r["server"]["port"] in (port, pyport) and r["client"]["addr"] == "127.0.0.1",
              f"{key(r)}: addresses {r['client']} {r['server']}")
        m = r["conn"]
        check(m["source"] == "capture" and m["side"] == "server" and m.get("pid") and
              m.get("tls_version", "").startswith("TLSv1") and m.get("cipher"),
              f"{key(r)}: connection metadata {m}")
        check(m["process"] in ("nginx", "python3") and r["time_response_ns"] >= r["time_request_ns"],
              f"{key(r)}: process/time {m} {r['time_request_ns']} {r['time_response_ns']}")
    # GET: headers as curl sent them, the body byte-exact
    r = one(("1.1", "GET", "/f4k"))
    check(r["response"]["status"] == 200 and body_of(r["response"]) == files["f4k"] and
          r["response"]["body_encoding"] == "text" and not r["response"]["body_truncated"],
          f"GET /f4k: {r['response']['status']} {len(body_of(r['response']))}")
    check(hdr(r["request"], "host") == [f"localhost:{port}"] and
          hdr(r["request"], "user-agent")[0].startswith("curl/") and r["authority"] == f"localhost:{port}",
          f"GET /f4k request headers: {r['request']['headers']}")
    check(r["scheme"] == "https" and r["conn"]["alpn"] == "http/1.1", f"scheme/alpn: {r['conn']}")
    r = one(("1.1", "HEAD", "/f4k"))
    check(r["response"]["status"] == 200 and r["response"]["body_bytes"] == 0 and
          hdr(r["response"], "content-length") == ["4096"], f"HEAD: {r['response']}")
    r304 = [x for x in by[("1.1", "GET", "/f4k")] if x["response"]["status"] == 304]
    check(len(r304) == 1 and r304[0]["response"]["body_bytes"] == 0 and
          hdr(r304[0]["request"], "if-none-match") == [etag[0]], f"304: {r304}")
    r = one(("1.1", "GET", "/nc"))
    check(r["response"]["status"] == 204 and r["response"]["body_bytes"] == 0, f"204: {r['response']}")
    for v in ("1.1", "2"):
        r = one((v, "GET", "/big"))
        rs = r["response"]
        check(rs["status"] == 200 and rs["body_bytes"] == 1 << 20 and rs["body_length"] == 1 << 20 and
              rs["body_truncated"] and rs["body_encoding"] == "base64" and
              body_of(rs) == files["big"][:BODY_MAX], f"HTTP/{v} /big: {dict(rs, body='...')}")
    # POSTs: the JSON both ways, the chunked upload cut at the cap
    posts = by[("1.1", "POST", "/echo")]
    pj = [x for x in posts if hdr(x["request"], "content-type") == ["application/json"]]
    pc = [x for x in posts if hdr(x["request"], "transfer-encoding") == ["chunked"]]
    check(len(pj) == 1 and len(pc) == 1, f"POST records: {[x['request']['headers'] for x in posts]}")
    check(body_of(pj[0]["request"]) == js and body_of(pj[0]["response"]) == js and
          pj[0]["request"]["body_encoding"] == "text" and pj[0]["request"]["body_length"] == len(js),
          f"POST JSON: {pj[0]['request']['body']!r} {pj[0]['response']['body']!r}")
    rq = pc[0]["request"]
    check(rq["body_bytes"] == len(up) and rq["body_length"] == len(up) and rq["body_truncated"] and
          body_of(rq) == up[:BODY_MAX] and sha(body_of(pc[0]["response"])) == sha(up[:BODY_MAX]),
          f"chunked upload: {dict(rq, body='...')}")
    r = one(("2", "POST", "/echo"))
    check(body_of(r["request"]) == js and body_of(r["response"]) == js and r["stream_id"] % 2 == 1 and
          r["conn"]["alpn"] == "h2" and r["authority"] == "localhost:%d" % port,
          f"h2 POST: {dict(r, request='...', response='...')}")
    # 50 on one connection, 3 pipelined on one connection, in order
    ka = [one(("1.1", "GET", f"/f4k?n={i}")) for i in range(50)]
    check(len({x["conn"]["id"] for x in ka}) == 1 and
          [x["time_request_ns"] for x in ka] == sorted(x["time_request_ns"] for x in ka),
          "the 50 keep-alive requests are not one connection's, in order")
    pl = [one(("1.1", "GET", f"/f4k?p={i}")) for i in range(3)]
    check(len({x["conn"]["id"] for x in pl}) == 1 and all(body_of(x["response"]) == files["f4k"] for x in pl),
          "pipelined records")
    # WebSocket: the handshake, ended by the upgrade
    r = one(("1.1", "GET", "/ws"))
    check(r["response"]["status"] == 101 and r["end"] == "upgrade" and
          hdr(r["request"], "upgrade") == ["websocket"], f"websocket record: {r}")
    # h2load: 100 streams on 2 connections, stream ids odd
    h2r = by[("2", "GET", "/f4k")]
    check(len(h2r) == 101 and all(x["stream_id"] % 2 == 1 and body_of(x["response"]) == files["f4k"]
                                  for x in h2r), "h2 /f4k records")
    # Python: HTTP/1.0, the body ended by the close, UTF-8 text
    r = one(("1.1", "GET", "/py?x=1"))
    rs = r["response"]
    check(r["conn"]["process"] == "python3" and rs["status"] == 200 and rs["complete"] and
          rs["body_bytes"] == len(pytext) and rs["body_length"] == len(pytext) and
          body_of(rs) == pytext[:BODY_MAX] and rs["body_truncated"] == (len(pytext) > BODY_MAX),
          f"Python record: {dict(rs, body='...')}")
    # the counters say the same
    st = agent.stderr_text
    check(f" records={len(sent)} " in st and " records_incomplete=0 " in st and " h1_errors=0 " in st,
          f"stage counters: {short(st, 1500)}")
    # tshark's HTTP view of the same run: the same HTTP/1.x requests
    def requests(rows):
        """(method, path) pairs; a frame with several requests has comma-joined fields"""
        return sorted(p for r in rows for p in zip(r[0].split(","), r[1].split(",")))
    rows = tshark_fields(agent.pcap, ["http.request.method", "http.request.uri"],
                         display_filter="http.request")
    h1 = sorted((m, p) for v, m, p in want if v != "2")
    check(requests(rows) == h1,
          f"tshark's HTTP/1.x requests differ from the records: {sorted(set(requests(rows)) ^ set(h1))[:6]}")
    rows = tshark_fields(agent.pcap, ["http2.headers.method", "http2.headers.path"],
                         display_filter="http2.headers.method", extra=["-d", f"tcp.port=={port},http2"])
    h2t = requests(rows)
    check(h2t == sorted((m, p) for v, m, p in want if v == "2"),
          f"tshark's HTTP/2 requests differ from the records: {h2t[:5]} ({len(h2t)})")
    check_har(env, log, recs)


def check_har(env, log, recs):
    """tlsmirror har: the same run as one HAR 1.2 document, entry by entry the
    records (method, URL, status, headers, bodies); bad lines named and left out."""
    rc, out, err = env.run("har", [agent_bin(), "har", log], timeout_s=60)
    check(rc == 0 and not err, f"tlsmirror har exited {rc}: {short(err)}")
    doc = json.loads(out)
    ents = doc["log"]["entries"]
    check(doc["log"]["version"] == "1.2" and doc["log"]["creator"]["name"] == "tlsmirror" and
          len(ents) == len(recs), f"HAR: version {doc['log'].get('version')}, {len(ents)} entries "
          f"for {len(recs)} records")
    for r, e in zip(recs, ents):
        rq, q = e["request"], r["request"]
        url = f"{r['scheme']}://{r['authority']}{r['path']}" + (f"?{r['query']}" if r["query"] is not None else "")
        check(rq["method"] == r["method"] and rq["url"] == url and
              [[h["name"], h["value"]] for h in rq["headers"]] == q["headers"] and
              rq["bodySize"] == q["body_bytes"] and e["_end"] == r["end"],
              f"HAR request differs from its record: {short(json.dumps(rq), 600)}")
        for k in ("startedDateTime", "time", "cache", "timings", "response"):
            check(k in e, f"HAR entry without {k}")
        check(e["startedDateTime"].endswith("Z") and e["time"] >= 0 and
              all(e["timings"][k] >= 0 for k in ("send", "wait", "receive")),
              f"HAR entry times: {e['startedDateTime']} {e['time']} {e['timings']}")
        if q["body_bytes"] and q["body"] is not None:
            pd = rq["postData"]
            got = base64.b64decode(pd["text"]) if pd.get("_encoding") == "base64" else pd["text"].encode()
            check(got == body_of(q), "HAR postData differs from the record's request body")
        rs, p = e["response"], r["response"]
        if p is None:
            check(rs["status"] == 0, f"HAR: a request without response has status {rs['status']}")
            continue
        c = rs["content"]
        got = b"" if "text" not in c else (base64.b64decode(c["text"]) if c.get("encoding") == "base64"
                                            else c["text"].encode())
        check(rs["status"] == p["status"] and
              [[h["name"], h["value"]] for h in rs["headers"]] == p["headers"] and
              got == body_of(p) and rs["bodySize"] == p["body_bytes"],
              f"HAR response differs from its record: status {rs['status']}, {short(json.dumps(c), 300)}")
    # a file an agent was killed writing (its last line cut), with a stranger's
    # line and a JSON bomb in it: each named, left out, the rest still a valid HAR
    bad = env.path("bad.jsonl")
    with open(log, "rb") as f:
        lines = f.read().split(b"\n")[:3]
    with open(bad, "wb") as f:
        f.write(lines[0] + b"\nnot json at all\n" + b"[" * 100000 + b"\n" + lines[1] + b"\n" +
                b'{"time_request_ns": 1}\n' + lines[2][:len(lines[2]) // 2])
    rc, out, err = env.run("harbad", [agent_bin(), "har", bad], timeout_s=60)
    doc = json.loads(out)
    text = err.decode()
    check(rc == 2 and len(doc["log"]["entries"]) == 2 and
          all(f"bad.jsonl:{n}:" in text for n in (2, 3, 5, 6)) and "nested too deep" in text and
          "no method" in text, f"tlsmirror har on bad lines: rc {rc}, {len(doc['log']['entries'])} "
          f"entries, {short(err, 800)}")
    rc, out, err = env.run("harnone", [agent_bin(), "har", env.path("absent.jsonl")], timeout_s=30)
    check(rc == 2 and b"absent.jsonl" in err and json.loads(out)["log"]["entries"] == [],
          f"tlsmirror har on a missing file: rc {rc}, {short(err)}")


@timeout(120)
def test_http_records_hostile_h2_invent_nothing(env):
    """CR/LF in an HTTP/2 :path or header value (a second request line in it),
    a body longer than its content-length: no record of an invented request,
    the good GET recorded, the POST recorded as ended by an error."""
    from test_23_h2_hostile import start_nginx as hostile_nginx
    log = env.path("records.jsonl")
    agent = Agent(env, args=["--http-log", log]).start()
    port = free_port()
    small = gen_bytes(100, 3010)
    ngx = hostile_nginx(env, agent, "127.0.0.1", port, {"small": small})
    rc, out, err = env.run("h2raw", [PYTHON, H2RAW, "127.0.0.1", str(port), "localhost",
                                     certs()["cert"], "hostile"], timeout_s=60)
    check(rc == 0, f"h2raw exited {rc}: {short(err)}")
    ngx.signal(signal.SIGQUIT)
    ngx.wait(20)
    time.sleep(0.3)
    procs, total = agent.final_stats()
    recs = records_of(log)
    text = open(log, "rb").read()
    check(b"admin" not in text and b"evil" not in text, f"an invented request in the records: {short(text)}")
    got = sorted((r["method"], r["path"], r["end"]) for r in recs)
    check(got == [("GET", "/small", "done"), ("POST", "/small", "error")], f"records: {got}")
    good = [r for r in recs if r["method"] == "GET"][0]
    check(body_of(good["response"]) == small, "the good GET's body")


@timeout(60)
def test_http_log_to_stdout_live_and_bad_options(env):
    """--http-log - writes each record as it ends (a reader sees it before the
    agent exits); bad option values are refused with a clear error."""
    port = free_port()
    c = certs()
    sock = env.path("a.sock")
    argv = [agent_bin(), "--socket", sock, "--http-log", "-", "--http-body-max", "0"]
    p = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        wait_until(lambda: os.path.exists(sock), 10, "agent socket")
        srv = env.captured("s_server", sock, [need_tool("openssl"), "s_server", "-quiet",
                                                    "-accept", str(port), "-cert", c["cert"],
                                                    "-key", c["key"], "-www"])
        wait_listening(port)
        curl(env, "www", ["--resolve", f"localhost:{port}:127.0.0.1", "-o", "/dev/null",
                          f"https://localhost:{port}/"])
        line = p.stdout.readline()   # before the agent stops
        r = json.loads(line)
        check(r["method"] == "GET" and r["path"] == "/" and r["response"]["status"] == 200 and
              r["response"]["body"] == "", f"stdout record: {short(line)}")
        check(r["response"]["body_bytes"] > 0 and r["response"]["body_truncated"],
              f"--http-body-max 0 keeps no body: {short(line)}")
        srv.signal(signal.SIGTERM)
    finally:
        p.send_signal(signal.SIGTERM)
        p.wait(10)
    for bad, why in ((["--http-body-max", "1G"], b"256K"), (["--http-format", "xml"], b"akto"),
                     (["--http-log", "/proc/x"], b"kernel"),
                     (["--http-format", "akto", "-w", "/dev/null"], b"--http-log")):
        r = subprocess.run([agent_bin(), "--socket", env.path("x.sock")] + bad +
                           ([] if "--http-log" in bad or "-w" in bad else ["--http-log", "-"]),
                           capture_output=True, timeout=10)
        check(r.returncode == 2 and why in r.stderr, f"{bad}: rc {r.returncode}: {short(r.stderr)}")


def agent_bin():
    from tmlib import TLSMIRROR
    return TLSMIRROR
