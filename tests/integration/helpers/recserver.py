# Recording TLS server for the integration tests (never under capture): logs each connection's exact bytes.
"""Usage: recserver.py --cert C --key K --logdir D [--addr A] [--port P]
                     [--mode http|echo] [--body FILE] [--rate BYTES_PER_S]

Prints 'READY <port>' on stdout once listening. For every connection it
writes D/conn-NNNNN.c2s (bytes received), .s2c (bytes sent) and, last,
.json (peer and local address and port, error or null).

http mode (one request per connection, Connection: close):
  GET /body       the --body file (sent at --rate bytes/s if given)
  GET /seq/N      'seq N\\n'
  GET /size/N     N deterministic bytes (seed N)
  POST /echo      the request body
  POST other      sha256 hex of the request body
echo mode (any number of messages per connection until EOF):
  client 'LEN n\\n' + n bytes  ->  server 'ECHO n\\n' + the n bytes reversed
"""

import argparse
import hashlib
import json
import os
import random
import socket
import ssl
import sys
import threading
import time


def gen_bytes(n, seed):
    return random.Random(seed).randbytes(n).replace(b"\x03", b"\xfc")


class Conn:
    def __init__(self, sock):
        self.sock = sock
        self.c2s = bytearray()
        self.s2c = bytearray()
        self.buf = bytearray()

    def recv_more(self):
        d = self.sock.recv(262144)
        if d:
            self.c2s += d
            self.buf += d
        return d

    def read_until(self, token):
        while token not in self.buf:
            if not self.recv_more():
                return None
        i = self.buf.index(token) + len(token)
        out = bytes(self.buf[:i])
        del self.buf[:i]
        return out

    def read_exact(self, n):
        while len(self.buf) < n:
            if not self.recv_more():
                raise EOFError(f"EOF after {len(self.buf)} of {n} body bytes")
        out = bytes(self.buf[:n])
        del self.buf[:n]
        return out

    def send(self, data, rate=0):
        chunk = 65536 if rate else len(data) or 1
        for i in range(0, len(data), chunk):
            part = data[i:i + chunk]
            self.sock.sendall(part)
            self.s2c += part
            if rate:
                time.sleep(len(part) / rate)


def response(status, body):
    head = (f"HTTP/1.1 {status}\r\nContent-Type: application/octet-stream\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode()
    return head


def serve_http(c, args):
    head = c.read_until(b"\r\n\r\n")
    if head is None:
        return
    lines = head[:-4].split(b"\r\n")
    method, path = lines[0].split(b" ")[0:2]
    hdrs = {}
    for l in lines[1:]:
        k, _, v = l.partition(b":")
        hdrs[k.strip().lower()] = v.strip()
    n = int(hdrs.get(b"content-length", b"0"))
    if hdrs.get(b"expect", b"").lower() == b"100-continue":
        c.send(b"HTTP/1.1 100 Continue\r\n\r\n")
    body = c.read_exact(n)
    rate = 0
    if method == b"GET" and path == b"/body" and args.body:
        with open(args.body, "rb") as f:
            out = f.read()
        rate = args.rate
    elif method == b"GET" and path.startswith(b"/seq/"):
        out = b"seq " + path[5:] + b"\n"
    elif method == b"GET" and path.startswith(b"/size/"):
        k = int(path[6:])
        out = gen_bytes(k, k)
    elif method == b"POST" and path == b"/echo":
        out = body
    elif method == b"POST":
        out = hashlib.sha256(body).hexdigest().encode() + b"\n"
    else:
        c.send(response("404 Not Found", b"") )
        return
    c.send(response("200 OK", out))
    c.send(out, rate)


def serve_echo(c, args):
    while True:
        line = c.read_until(b"\n")
        if line is None:
            return
        if not line.startswith(b"LEN "):
            raise ValueError(f"bad request line {line[:40]!r}")
        n = int(line[4:])
        data = c.read_exact(n)
        c.send(b"ECHO %d\n" % n + data[::-1])


def handle(n, raw, peer, ctx, args):
    local = raw.getsockname()
    meta = {"n": n, "peer": peer[0], "peer_port": peer[1], "local": local[0],
            "local_port": local[1], "error": None, "t_start": time.time()}
    c = None
    try:
        raw.settimeout(60)
        s = ctx.wrap_socket(raw, server_side=True)
        c = Conn(s)
        if args.mode == "http":
            serve_http(c, args)
        else:
            serve_echo(c, args)
        try:
            s.unwrap()
        except (OSError, ValueError):
            pass
        s.close()
    except Exception as e:  # logged for the test to report
        meta["error"] = f"{type(e).__name__}: {e}"
        raw.close()
    meta["t_end"] = time.time()
    base = os.path.join(args.logdir, f"conn-{n:05d}")
    with open(base + ".c2s", "wb") as f:
        f.write(c.c2s if c else b"")
    with open(base + ".s2c", "wb") as f:
        f.write(c.s2c if c else b"")
    with open(base + ".tmp", "w") as f:
        json.dump(meta, f)
    os.rename(base + ".tmp", base + ".json")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--cert", required=True)
    ap.add_argument("--key", required=True)
    ap.add_argument("--logdir", required=True)
    ap.add_argument("--addr", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--mode", choices=["http", "echo"], default="http")
    ap.add_argument("--body")
    ap.add_argument("--rate", type=int, default=0)
    args = ap.parse_args()
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(args.cert, args.key)
    fam = socket.AF_INET6 if ":" in args.addr else socket.AF_INET
    ls = socket.socket(fam, socket.SOCK_STREAM)
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind((args.addr, args.port))
    ls.listen(512)
    print(f"READY {ls.getsockname()[1]}", flush=True)
    n = 0
    while True:
        raw, peer = ls.accept()
        n += 1
        threading.Thread(target=handle, args=(n, raw, peer, ctx, args), daemon=True).start()


if __name__ == "__main__":
    sys.exit(main())
