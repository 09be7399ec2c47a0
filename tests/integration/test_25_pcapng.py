# Integration test 25: pcapng output: each connection's metadata as frame.comment (curl, Python ssl, nginx), rotation.
import glob
import os
import re
import subprocess
import time

from tmlib import (PYTHON, TLSMIRROR, Agent, assert_bytes, certs, check, free_port, gen_bytes, judge,
                   need_tool, nginx_conf, pcap_header, short, start_nginx, timeout,
                   tshark_fields, wait_listening)

SERVER = """    server {{
        listen 127.0.0.1:{port} ssl http2;
        ssl_certificate {cert};
        ssl_certificate_key {key};
        ssl_protocols TLSv1.2 TLSv1.3;
        root {prefix}/html;
    }}
"""

# A Python ssl client: TLS 1.2, ALPN http/1.1, SNI localhost; GET /body into OUT.
PY_CLIENT = r"""
import socket, ssl, sys
port, out, ca = int(sys.argv[1]), sys.argv[2], sys.argv[3]
ctx = ssl.create_default_context(cafile=ca)
ctx.maximum_version = ssl.TLSVersion.TLSv1_2
ctx.set_alpn_protocols(["http/1.1"])
with socket.create_connection(("127.0.0.1", port)) as s:
    with ctx.wrap_socket(s, server_hostname="localhost") as t:
        t.sendall(b"GET /body HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        data = b""
        while True:
            b = t.recv(65536)
            if not b:
                break
            data += b
with open(out, "wb") as f:
    f.write(data)
"""


def nginx(env, name, body, sock=None):
    """nginx serving /body on a fresh port: under the capture library if sock is
    given (returns its worker's pid), else a plain server. Returns (port, pid)."""
    prefix = env.path(name)
    os.makedirs(os.path.join(prefix, "html"))
    os.makedirs(os.path.join(prefix, "tmp"))
    with open(os.path.join(prefix, "html", "body"), "wb") as f:
        f.write(body)
    c, port = certs(), free_port()
    conf = nginx_conf(1, SERVER).format(prefix=prefix, port=port, cert=c["cert"], key=c["key"])
    if sock:
        _, workers = start_nginx(env, sock, prefix, conf, 1)
        wait_listening(port)
        return port, workers[0]
    path = os.path.join(prefix, "nginx.conf")
    with open(path, "w") as f:
        f.write(conf)
    p = env.spawn(name, [need_tool("nginx"), "-p", prefix, "-e", os.path.join(prefix, "error.log"),
                         "-c", path, "-g", "daemon off;"])
    wait_listening(port, proc=p)
    return port, None


def curl_argv(port, out, http2=True):
    return [need_tool("curl"), "-sS", "--http2" if http2 else "--http1.1", "--cacert",
            certs()["cert"], "--resolve", f"localhost:{port}:127.0.0.1",
            f"https://localhost:{port}/body", "-o", out]


def run_ok(p, what):
    rc = p.wait(120)
    check(rc == 0 and p.err() == b"", f"{what} exited {rc}: {short(p.err())}")


def check_file(what, path, body, http=False):
    with open(path, "rb") as f:
        got = f.read()
    if http:
        check(b"\r\n\r\n" in got, f"{what}: no HTTP response: {short(got)}")
        got = got.split(b"\r\n\r\n", 1)[1]
    assert_bytes(what, body, got)


def comments(path):
    """{tcp.stream: [(frame number, comment or '')]} as tshark shows the file."""
    out = {}
    for num, stream, comment in tshark_fields(path, ["frame.number", "tcp.stream",
                                                     "frame.comment"]):
        out.setdefault(int(stream), []).append((int(num), comment))
    return out


def parse_comment(c):
    check(c.startswith("tlsmirror: "), f"comment {c!r} does not start with 'tlsmirror: '")
    return dict(kv.split("=", 1) for kv in c[len("tlsmirror: "):].split(" "))


def first_only(per_stream):
    """Each stream's comment (on its first frame, on no other): {stream: fields}."""
    out = {}
    for st, frames in per_stream.items():
        check(frames[0][1] != "", f"stream {st}: its first frame {frames[0][0]} has no comment")
        later = [n for n, c in frames[1:] if c]
        check(not later, f"stream {st}: frames {later[:5]} carry a comment too")
        out[st] = parse_comment(frames[0][1])
    return out


def want(fields, **kw):
    bad = {k: (fields.get(k), v) for k, v in kw.items() if fields.get(k) != str(v)}
    check(not bad, f"comment fields (got, want): {bad}; the whole comment: {fields}")


@timeout(120)
def test_comments_curl_python_nginx(env):
    body = gen_bytes(200000, 251)
    plain_port, _ = nginx(env, "nginx-plain", body)
    # -w: pcapng chosen by the name; --pcapng beside it (two outputs: each behind its queue)
    agent = Agent(env, pcap=env.path("m.pcapng"),
                  args=["--pcapng", env.path("also.cap")]).start()
    cap_port, worker = nginx(env, "nginx-cap", body, sock=agent.sock)

    cu = env.captured("curl", agent.sock, curl_argv(plain_port, env.path("curl.out")))
    run_ok(cu, "curl under capture")
    py = env.captured("python", agent.sock, [PYTHON, "-c", PY_CLIENT, str(plain_port),
                                             env.path("py.out"), certs()["cert"]])
    run_ok(py, "python ssl client under capture")
    pc = env.spawn("curl-plain", curl_argv(cap_port, env.path("curl-plain.out")))
    run_ok(pc, "curl (not captured) against the captured nginx")
    for what, path, http in (("curl", "curl.out", False), ("python", "py.out", True),
                             ("curl to the captured nginx", "curl-plain.out", False)):
        check_file(what + "'s download", env.path(path), body, http)
    agent.final_stats()

    path = agent.pcap
    with open(path, "rb") as f:
        check(f.read(4) == b"\x0a\x0d\x0d\x0a", f"{path} does not start with a Section Header")
    cap = judge(path)  # byte-exact TCP as for pcap
    check(len(cap.streams) == 3, f"3 connections, capture has {cap.describe()}")
    streams, by_port = {s.idx: s for s in cap.streams}, {}
    for st, fields in first_only(comments(path)).items():
        by_port.setdefault(streams[st].server[1], []).append((streams[st], fields))
    clients = sorted(by_port.get(plain_port, []), key=lambda x: x[1].get("process", ""))
    check(len(clients) == 2 and len(by_port.get(cap_port, [])) == 1,
          f"streams by server port: {by_port}")
    (c_st, c), (p_st, p) = clients[0], clients[1]
    want(c, process="curl", pid=cu.pid, uid=os.getuid(), side="client", sni="localhost",
         alpn="h2", tls="TLSv1.3", source="capture")
    want(p, process=os.path.basename(PYTHON)[:15], pid=py.pid, side="client", sni="localhost",
         alpn="http/1.1", tls="TLSv1.2", source="capture")
    check(p.get("cipher", "").startswith(("ECDHE-", "DHE-", "AES")),
          f"python's TLS 1.2 cipher in the comment: {p}")
    n_st, n = by_port[cap_port][0]
    want(n, process="nginx", pid=worker, side="server", sni="localhost", alpn="h2",
         tls="TLSv1.3", source="capture")
    check(c.get("cipher", "").startswith("TLS_"), f"curl's TLS 1.3 cipher: {c}")
    check(p_st.bytes(1).endswith(body), "python's stream does not end with the body")
    names = {r[0] for r in tshark_fields(path, ["frame.interface_name"])}
    check(names == {os.uname().nodename}, f"interface names {names}, want this host's only")
    check(comments(env.path("also.cap")) == comments(path),
          "--pcapng FILE and -w FILE.pcapng differ in their comments")


@timeout(150)
def test_rotation_reannounces(env):
    body = gen_bytes(3 << 20, 252)
    port, _ = nginx(env, "nginx-plain", body)
    # --pcapng with a name that does not say so; a new file every 1 MiB
    agent = Agent(env, pcap=env.path("rot.cap"), out="--pcapng",
                  args=["--rotate-size", "1M"]).start()
    cu = env.captured("curl", agent.sock, curl_argv(port, env.path("curl.out"), http2=False))
    run_ok(cu, "curl under capture")
    check_file("curl's download", env.path("curl.out"), body)
    agent.final_stats()
    files = [agent.pcap] + sorted(glob.glob(agent.pcap + ".*"),
                                  key=lambda f: int(f.rsplit(".", 1)[1]))
    check(len(files) >= 3, f"3 MiB at 1 MiB a file: want at least 3 files, got {files}")
    for f in files:
        check(os.path.getsize(f) <= 1 << 20, f"{f}: {os.path.getsize(f)} bytes, over 1M")
        nano, linktype, _ = pcap_header(f)  # a Section Header, then an Interface Description
        check(nano and linktype == 1, f"{f}: if_tsresol 9 and Ethernet, got {nano}, {linktype}")
        rows = tshark_fields(f, ["frame.comment"])
        check(rows and rows[0][0].startswith("tlsmirror: "),
              f"{f}: the connection's first packet in this file has no comment: {rows[:1]}")
        check(sum(1 for r in rows if r[0]) == 1, f"{f}: {sum(1 for r in rows if r[0])} comments, "
              "want one (the spanning connection, announced once per file)")
        want(parse_comment(rows[0][0]), process="curl", pid=cu.pid, alpn="http/1.1")
    merged = env.path("merged.pcapng")
    r = subprocess.run([need_tool("mergecap"), "-a", "-w", merged] + files, capture_output=True)
    check(r.returncode == 0, f"mergecap: {short(r.stderr)}")
    cap = judge(merged)
    check(len(cap.streams) == 1 and cap.streams[0].bytes(1).endswith(body),
          f"the files together: one connection ending with the body: {cap.describe()}")


@timeout(30)
def test_pcapng_errors_name_the_cause(env):
    r = subprocess.run([TLSMIRROR, "--socket", env.path("s"), "--pcapng", "/nonexistent-dir/x"],
                       capture_output=True, timeout=10)
    err = r.stderr.decode("utf-8", "replace")
    check(r.returncode == 1 and "--pcapng /nonexistent-dir/x: cannot create the capture file" in err
          and "No such file or directory" in err,
          f"--pcapng into a missing directory: exit {r.returncode}, stderr {short(err)}")
    r = subprocess.run([TLSMIRROR, "--socket", env.path("s"), "--rotate-size", "1M",
                        "--rotate-count", "2", "--pcapng", env.path("m-%H.pcapng")],
                       capture_output=True, timeout=10)
    check(r.returncode == 2 and b"--rotate-count needs a plain file name" in r.stderr,
          f"--rotate-count with a pattern: exit {r.returncode}, stderr {short(r.stderr)}")


@timeout(90)
def test_h2_streams_carry_their_connection(env):
    body = gen_bytes(50000, 253)
    port, _ = nginx(env, "nginx-plain", body)
    agent = Agent(env, pcap=env.path("h2.pcapng"), args=["--h2-to-h1"]).start()
    cu = env.captured("curl", agent.sock, curl_argv(port, env.path("curl.out")))
    run_ok(cu, "curl --http2 under capture")
    check_file("curl's download", env.path("curl.out"), body)
    agent.final_stats()
    cap = judge(agent.pcap)
    fields = first_only(comments(agent.pcap))
    check(len(cap.streams) == 1 and len(fields) == 1,
          f"one HTTP/2 stream as one HTTP/1.1 connection: {cap.describe()}, comments {fields}")
    f = list(fields.values())[0]
    # the stream is invented by the converter: its own kind, its parent named, the rest inherited
    want(f, process="curl", pid=cu.pid, side="client", sni="localhost", alpn="h2",
         tls="TLSv1.3", source="synthetic")
    check(re.fullmatch(r"\d+/\d+", f.get("parent", "")), f"parent of the stream: {f}")
    check(cap.streams[0].bytes(1).endswith(body), "the HTTP/1.1 response does not end with the body")
