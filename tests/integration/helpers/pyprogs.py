# Python TLS programs the integration tests run under the capture library (blocking, asyncio, clients).
"""Subcommands (all write errors to stderr and exit 1 on any mismatch):

pair --mode blocking|asyncio --addr A --cert C --key K --out DIR --sizes 1,5000,...
    A server and concurrent clients in this one process (threads or asyncio).
    Echo protocol: 'LEN n\\n'+data -> 'ECHO n\\n'+reversed data. Writes, per
    connection i, DIR/conn-i.json (client/server address and port) and what the
    client really sent (.c2s) and received (.s2c).
periodic --addr A --port P --cert C --interval S --duration S --log FILE
    A new TLS connection with one 'GET /seq/N' every interval; one log line
    per request: 'N t_start client_port ok'.
hold --addr A --port P --cert C
    One echo exchange, prints 'HELD <client_port>', waits for a line on stdin,
    one more exchange, closes.
fetch --addr A --port P --cert C [--verify-name NAME] PATH...
    GET each PATH on its own connection; prints status and sha256 of the body.
holdserver --addr A --cert C --key K --conns N --port-file F
    Echo server (not meant to run under capture) that holds every TLS
    handshake until N connections have their ClientHello waiting unread, then
    serves them all; the chosen port is written to F.
stream --addr A --port P --cert C --conns N --duration S
    N threads, each one TLS connection kept open for the whole duration,
    echo exchanges of 1..40000 bytes back to back (a long-lived load across
    agent restarts); prints 'conn CLIENT_PORT SENT RECEIVED' per connection.
many --addr A --port P --cert C --conns N --out FILE
    N concurrent asyncio TLS echo connections from this one process; writes
    one JSON line per connection (client port, bytes sent and received).
"""

import argparse
import asyncio
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


def client_ctx(cert):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(cert)
    return ctx


def fam(addr):
    return socket.AF_INET6 if ":" in addr else socket.AF_INET


def read_exact(s, n):
    buf = bytearray()
    while len(buf) < n:
        d = s.recv(min(262144, n - len(buf)))
        if not d:
            raise EOFError(f"EOF after {len(buf)} of {n} bytes")
        buf += d
    return bytes(buf)


def read_line(s):
    buf = bytearray()
    while not buf.endswith(b"\n"):
        d = s.recv(1)
        if not d:
            raise EOFError("EOF in line")
        buf += d
    return bytes(buf)


def echo_exchange(s, payload):
    """Sends one echo message; returns (bytes sent, bytes received)."""
    req = b"LEN %d\n" % len(payload) + payload
    s.sendall(req)
    head = read_line(s)
    want = b"ECHO %d\n" % len(payload)
    if head != want:
        raise ValueError(f"bad echo header {head!r}")
    body = read_exact(s, len(payload))
    if body != payload[::-1]:
        raise ValueError("echo body differs")
    return req, head + body


# ---------------------------------------------------------------- pair

def write_conn(out, i, meta, c2s, s2c):
    with open(os.path.join(out, f"conn-{i}.c2s"), "wb") as f:
        f.write(c2s)
    with open(os.path.join(out, f"conn-{i}.s2c"), "wb") as f:
        f.write(s2c)
    with open(os.path.join(out, f"conn-{i}.json"), "w") as f:
        json.dump(meta, f)


def pair_blocking(args, sizes):
    sctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    sctx.load_cert_chain(args.cert, args.key)
    ls = socket.socket(fam(args.addr), socket.SOCK_STREAM)
    ls.bind((args.addr, 0))
    ls.listen(64)
    port = ls.getsockname()[1]
    errors = []
    received = {}

    def serve_one(raw):
        try:
            s = sctx.wrap_socket(raw, server_side=True)
            line = read_line(s)
            n = int(line[4:])
            data = read_exact(s, n)
            received[s.getpeername()[1]] = line + data
            s.sendall(b"ECHO %d\n" % n + data[::-1])
            try:
                s.unwrap()
            except (OSError, ValueError):
                pass
            s.close()
        except Exception as e:
            errors.append(f"server: {type(e).__name__}: {e}")

    def accept_loop():
        for _ in sizes:
            raw, _ = ls.accept()
            raw.settimeout(30)
            threading.Thread(target=serve_one, args=(raw,)).start()

    acc = threading.Thread(target=accept_loop)
    acc.start()
    cctx = client_ctx(args.cert)
    results = {}

    def client(i, size):
        try:
            raw = socket.create_connection((args.addr, port), timeout=30)
            s = cctx.wrap_socket(raw, server_hostname="localhost")
            me = s.getsockname()
            sent, got = echo_exchange(s, gen_bytes(size, 1000 + i))
            s.close()
            results[i] = (me, sent, got)
        except Exception as e:
            errors.append(f"client {i}: {type(e).__name__}: {e}")

    ths = [threading.Thread(target=client, args=(i, n)) for i, n in enumerate(sizes)]
    for t in ths:
        t.start()
    for t in ths:
        t.join(60)
    acc.join(60)
    finish_pair(args, results, received, errors, port)


async def pair_asyncio_main(args, sizes):
    sctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    sctx.load_cert_chain(args.cert, args.key)
    errors, received, results = [], {}, {}

    async def handler(reader, writer):
        try:
            line = await reader.readline()
            n = int(line[4:])
            data = await reader.readexactly(n)
            received[writer.get_extra_info("peername")[1]] = line + data
            writer.write(b"ECHO %d\n" % n + data[::-1])
            await writer.drain()
            writer.close()
            await writer.wait_closed()
        except Exception as e:
            errors.append(f"server: {type(e).__name__}: {e}")

    server = await asyncio.start_server(handler, host=args.addr, port=0, ssl=sctx)
    port = server.sockets[0].getsockname()[1]
    cctx = client_ctx(args.cert)

    async def client(i, size):
        try:
            reader, writer = await asyncio.open_connection(args.addr, port, ssl=cctx,
                                                           server_hostname="localhost")
            me = writer.get_extra_info("sockname")
            payload = gen_bytes(size, 1000 + i)
            req = b"LEN %d\n" % len(payload) + payload
            writer.write(req)
            await writer.drain()
            head = await reader.readline()
            body = await reader.readexactly(len(payload))
            if head != b"ECHO %d\n" % size or body != payload[::-1]:
                raise ValueError("echo mismatch")
            writer.close()
            await writer.wait_closed()
            results[i] = (me, req, head + body)
        except Exception as e:
            errors.append(f"client {i}: {type(e).__name__}: {e}")

    await asyncio.wait_for(asyncio.gather(*(client(i, n) for i, n in enumerate(sizes))), 60)
    await asyncio.sleep(0.2)
    server.close()
    await server.wait_closed()
    return results, received, errors, port


def finish_pair(args, results, received, errors, port):
    for i, (me, sent, got) in sorted(results.items()):
        if received.get(me[1]) != sent:
            errors.append(f"conn {i}: server received other bytes than the client sent")
        write_conn(args.out, i, {"client_addr": me[0], "client_port": me[1],
                                 "server_addr": args.addr, "server_port": port}, sent, got)
    if len(results) != len(args.sizes.split(",")):
        errors.append(f"only {len(results)} connections completed")
    for e in errors:
        print(e, file=sys.stderr)
    sys.exit(1 if errors else 0)


def cmd_pair(args):
    sizes = [int(x) for x in args.sizes.split(",")]
    if args.mode == "blocking":
        pair_blocking(args, sizes)
    else:
        results, received, errors, port = asyncio.run(pair_asyncio_main(args, sizes))
        finish_pair(args, results, received, errors, port)


# ---------------------------------------------------------------- clients

def http_get(args, ctx, path):
    raw = socket.create_connection((args.addr, args.port), timeout=20)
    s = ctx.wrap_socket(raw, server_hostname=args.verify_name)
    me = s.getsockname()
    s.sendall(b"GET %s HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n" % path)
    buf = bytearray()
    while True:
        try:
            d = s.recv(262144)
        except ssl.SSLEOFError:
            break
        if not d:
            break
        buf += d
    s.close()
    head, _, body = bytes(buf).partition(b"\r\n\r\n")
    return me, head.split(b"\r\n")[0], body


def cmd_periodic(args):
    ctx = client_ctx(args.cert)
    end = time.time() + args.duration
    i = 0
    bad = 0
    with open(args.log, "w") as log:
        while time.time() < end:
            t0 = time.time()
            try:
                me, status, body = http_get(args, ctx, b"/seq/%d" % i)
                ok = status.endswith(b"200 OK") and body == b"seq %d\n" % i
                log.write(f"{i} {t0:.3f} {me[1]} {'ok' if ok else 'bad'}\n")
                bad += not ok
            except Exception as e:
                log.write(f"{i} {t0:.3f} 0 error\n")
                print(f"request {i}: {type(e).__name__}: {e}", file=sys.stderr)
                bad += 1
            log.flush()
            i += 1
            time.sleep(max(0.0, args.interval - (time.time() - t0)))
    sys.exit(1 if bad else 0)


def cmd_hold(args):
    ctx = client_ctx(args.cert)
    raw = socket.create_connection((args.addr, args.port), timeout=30)
    s = ctx.wrap_socket(raw, server_hostname="localhost")
    me = s.getsockname()
    echo_exchange(s, gen_bytes(5000, 7))
    print(f"HELD {me[1]}", flush=True)
    sys.stdin.readline()
    echo_exchange(s, gen_bytes(3000, 8))
    s.close()
    print("DONE", flush=True)


def cmd_fetch(args):
    ctx = client_ctx(args.cert)
    for p in args.paths:
        _, status, body = http_get(args, ctx, p.encode())
        print(status.decode(), len(body), hashlib.sha256(body).hexdigest())


def cmd_stream(args):
    ctx = client_ctx(args.cert)
    end = time.time() + args.duration
    out, errors = [], []

    def one(i):
        rnd = random.Random(1000 + i)
        try:
            raw = socket.create_connection((args.addr, args.port), timeout=30)
            s = ctx.wrap_socket(raw, server_hostname="localhost")
            port, sent, got = s.getsockname()[1], 0, 0
            k = 0
            while time.time() < end:
                req, resp = echo_exchange(s, gen_bytes(rnd.randint(1, 40000), i * 100003 + k))
                sent, got, k = sent + len(req), got + len(resp), k + 1
                time.sleep(0.002)
            s.close()
            out.append((port, sent, got))
        except Exception as e:
            errors.append(f"connection {i}: {type(e).__name__}: {e}")
    threads = [threading.Thread(target=one, args=(i,)) for i in range(args.conns)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for port, sent, got in sorted(out):
        print(f"conn {port} {sent} {got}")
    for e in errors[:20]:
        print(e, file=sys.stderr)
    sys.exit(1 if errors else 0)


def raise_nofile():
    import resource
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


class HeldEcho(asyncio.Protocol):
    """The application protocol over the TLS transport: LEN n + data -> ECHO n + reversed."""

    def __init__(self):
        self.buf, self.t = bytearray(), None

    def data_received(self, data):
        self.buf += data
        self.reply()

    def reply(self):
        head, nl, rest = bytes(self.buf).partition(b"\n")
        if self.t and nl and len(rest) >= int(head[4:]):
            n = int(head[4:])
            self.t.write(b"ECHO %d\n" % n + rest[:n][::-1])
            self.t.close()


class Held(asyncio.Protocol):
    """A TCP connection whose ClientHello stays unread in the socket until released."""

    held = []

    def connection_made(self, transport):
        transport.pause_reading()
        self.t = transport
        Held.held.append(transport)


async def holdserver_main(args):
    import fcntl
    import termios
    loop = asyncio.get_running_loop()
    sctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    sctx.load_cert_chain(args.cert, args.key)
    server = await loop.create_server(Held, host=args.addr, port=0, backlog=4096)
    with open(args.port_file + ".tmp", "w") as f:
        f.write(str(server.sockets[0].getsockname()[1]))
    os.rename(args.port_file + ".tmp", args.port_file)

    def waiting(t):
        b = fcntl.ioctl(t.get_extra_info("socket").fileno(), termios.FIONREAD, b"\0\0\0\0")
        return int.from_bytes(b, sys.byteorder) > 0
    deadline = time.time() + 120
    while time.time() < deadline:
        if len(Held.held) >= args.conns and all(waiting(t) for t in Held.held):
            break
        await asyncio.sleep(0.05)
    print(f"holding {len(Held.held)} handshakes", flush=True)

    async def serve(t):
        try:
            proto = HeldEcho()
            proto.t = await loop.start_tls(t, proto, sctx, server_side=True)
            proto.reply()
        except Exception as e:
            print(f"server: {type(e).__name__}: {e}", file=sys.stderr)
    held, Held.held = Held.held, []
    await asyncio.gather(*(serve(t) for t in held))
    await asyncio.sleep(3600)


def cmd_holdserver(args):
    raise_nofile()
    asyncio.run(holdserver_main(args))


async def many_main(args):
    ctx = client_ctx(args.cert)
    results, errors = [], []

    async def one(i):
        try:
            reader, writer = await asyncio.open_connection(args.addr, args.port, ssl=ctx,
                                                           server_hostname="localhost")
            me = writer.get_extra_info("sockname")
            payload = b"conn %d " % i + gen_bytes(100 + i % 200, i)
            req = b"LEN %d\n" % len(payload) + payload
            writer.write(req)
            head = await reader.readline()
            body = await reader.readexactly(len(payload))
            if head != b"ECHO %d\n" % len(payload) or body != payload[::-1]:
                raise ValueError("echo mismatch")
            writer.close()
            try:
                await writer.wait_closed()
            except (ssl.SSLError, ConnectionError):
                pass
            results.append({"client_port": me[1], "c2s": req.hex(), "s2c": (head + body).hex()})
        except Exception as e:
            errors.append(f"client {i}: {type(e).__name__}: {e}")
    await asyncio.wait_for(asyncio.gather(*(one(i) for i in range(args.conns))), 240)
    return results, errors


def cmd_many(args):
    raise_nofile()
    results, errors = asyncio.run(many_main(args))
    with open(args.out, "w") as f:
        for r in results:
            f.write(json.dumps(r) + "\n")
    for e in errors[:20]:
        print(e, file=sys.stderr)
    sys.exit(1 if errors else 0)


def main():
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("pair")
    p.add_argument("--mode", choices=["blocking", "asyncio"], required=True)
    p.add_argument("--addr", required=True)
    p.add_argument("--cert", required=True)
    p.add_argument("--key", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--sizes", default="1,5000,300000")
    for name in ("periodic", "hold", "fetch"):
        q = sub.add_parser(name)
        q.add_argument("--addr", default="127.0.0.1")
        q.add_argument("--port", type=int, required=True)
        q.add_argument("--cert", required=True)
        q.add_argument("--verify-name", default="localhost")
        if name == "periodic":
            q.add_argument("--interval", type=float, default=0.1)
            q.add_argument("--duration", type=float, default=6)
            q.add_argument("--log", required=True)
        if name == "fetch":
            q.add_argument("paths", nargs="+")
    q = sub.add_parser("holdserver")
    q.add_argument("--addr", default="127.0.0.1")
    q.add_argument("--cert", required=True)
    q.add_argument("--key", required=True)
    q.add_argument("--conns", type=int, required=True)
    q.add_argument("--port-file", required=True)
    q = sub.add_parser("stream")
    q.add_argument("--addr", default="127.0.0.1")
    q.add_argument("--port", type=int, required=True)
    q.add_argument("--cert", required=True)
    q.add_argument("--conns", type=int, required=True)
    q.add_argument("--duration", type=float, required=True)
    q = sub.add_parser("many")
    q.add_argument("--addr", default="127.0.0.1")
    q.add_argument("--port", type=int, required=True)
    q.add_argument("--cert", required=True)
    q.add_argument("--conns", type=int, required=True)
    q.add_argument("--out", required=True)
    args = ap.parse_args()
    {"pair": cmd_pair, "periodic": cmd_periodic, "hold": cmd_hold,
     "fetch": cmd_fetch, "stream": cmd_stream, "holdserver": cmd_holdserver, "many": cmd_many}[args.cmd](args)


if __name__ == "__main__":
    main()
