# A raw HTTP/2 client (frames and HPACK literals by hand over Python's ssl, ALPN h2) that can send what nghttp2 refuses to.
"""Usage: h2raw.py HOST PORT SNI CAFILE MODE

MODE hostile: one connection per hostile request (a :path with CR/LF and a
second request line, a header value with CR/LF, a body longer than its
content-length: 0), then one good GET /small; prints one line per request
("<name> <status or reset/closed>").

MODE h1 SRCPORT OUT: one HTTP/1.1 GET /small (ALPN http/1.1) from source
port SRCPORT; writes what it sent and what it received to OUT.c2s, OUT.s2c.

MODE hold: GET /big with SETTINGS_INITIAL_WINDOW_SIZE 1000: the server
sends 1000 bytes of the body and waits; prints "held" once they are in,
waits for a line on stdin, then opens the window, reads the whole
response, prints "done <body length>" and ends the connection.

Every header field is a literal without indexing (RFC 7541 §6.2.2), so
each block decodes on its own.
"""
import socket
import ssl
import sys

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
DATA, HEADERS, RST_STREAM, SETTINGS, GOAWAY, WINDOW_UPDATE = 0, 1, 3, 4, 7, 8
END_STREAM, END_HEADERS, ACK = 0x1, 0x4, 0x1


def hpack_int(v, bits, first=0):
    """RFC 7541 §5.1 integer with a bits-bit prefix; first holds the pattern bits."""
    top = (1 << bits) - 1
    if v < top:
        return bytes([first | v])
    out, v = bytearray([first | top]), v - top
    while v >= 128:
        out.append(0x80 | (v & 0x7f))
        v >>= 7
    out.append(v)
    return bytes(out)


def literal(name, value):
    """Literal header field without indexing, new name, no Huffman coding."""
    return (b"\x00" + hpack_int(len(name), 7) + name + hpack_int(len(value), 7) + value)


def block(fields):
    return b"".join(literal(n, v) for n, v in fields)


def frame(typ, flags, sid, payload):
    return len(payload).to_bytes(3, "big") + bytes([typ, flags]) + sid.to_bytes(4, "big") + payload


def settings(pairs):
    return frame(SETTINGS, 0, 0, b"".join(k.to_bytes(2, "big") + v.to_bytes(4, "big")
                                          for k, v in pairs))


class Conn:
    def __init__(self, host, port, sni, cafile, window=None):
        ctx = ssl.create_default_context(cafile=cafile)
        ctx.set_alpn_protocols(["h2"])
        raw = socket.create_connection((host, port), timeout=20)
        self.s = ctx.wrap_socket(raw, server_hostname=sni)
        if self.s.selected_alpn_protocol() != "h2":
            raise SystemExit(f"ALPN gave {self.s.selected_alpn_protocol()!r}, not h2")
        self.buf = b""
        init = [(4, window)] if window else []
        self.s.sendall(PREFACE + settings([(2, 0)] + init))

    def send(self, data):
        self.s.sendall(data)

    def next_frame(self):
        """(type, flags, stream, payload), or None at the end of the connection."""
        while True:
            if len(self.buf) >= 9:
                n = int.from_bytes(self.buf[:3], "big")
                if len(self.buf) >= 9 + n:
                    h, self.buf = self.buf[:9 + n], self.buf[9 + n:]
                    sid = int.from_bytes(h[5:9], "big") & 0x7fffffff
                    if h[3] == SETTINGS and not h[4] & ACK:
                        self.s.sendall(frame(SETTINGS, ACK, 0, b""))
                    return h[3], h[4], sid, h[9:]
            try:
                d = self.s.recv(65536)
            except (OSError, ssl.SSLError):
                d = b""
            if not d:
                return None
            self.buf += d

    def response(self, sid, want_body=None):
        """Reads until stream sid ends: (status or 'reset'/'closed', body). With
        want_body, returns as soon as that many body bytes are in."""
        status, body = None, b""
        while True:
            f = self.next_frame()
            if f is None:
                return status or "closed", body
            typ, flags, fsid, p = f
            if typ == GOAWAY and status is None:
                return "goaway", body
            if fsid != sid:
                continue
            if typ == RST_STREAM:
                return "reset", body
            if typ == HEADERS and status is None:
                status = "response"
            if typ == DATA:
                body += p
                if want_body is not None and len(body) >= want_body:
                    return status, body
            if flags & END_STREAM:
                return status, body

    def close(self):
        try:
            self.s.sendall(frame(GOAWAY, 0, 0, b"\x00" * 8))
            self.s.close()
        except OSError:
            pass


def req(method, path, sni, extra=()):
    return [(b":method", method), (b":scheme", b"https"), (b":path", path),
            (b":authority", sni.encode())] + list(extra)


def hostile(host, port, sni, cafile):
    cases = [
        ("path-crlf", req(b"GET", b"/a HTTP/1.1\r\nX: 1\r\n\r\nGET /admin", sni), None),
        ("value-crlf", req(b"GET", b"/small", sni,
                           [(b"x-a", b"1\r\n\r\nGET /admin HTTP/1.1\r\nHost: evil")]), None),
        ("body-past-length", req(b"POST", b"/small", sni, [(b"content-length", b"0")]),
         b"GET /admin HTTP/1.1\r\nHost: evil\r\n\r\n"),
        ("good", req(b"GET", b"/small", sni), None),
    ]
    for name, fields, body in cases:
        c = Conn(host, port, sni, cafile)
        flags = END_HEADERS | (0 if body else END_STREAM)
        out = frame(HEADERS, flags, 1, block(fields))
        if body:
            out += frame(DATA, END_STREAM, 1, body)
        c.send(out)
        status, got = c.response(1)
        print(name, status, len(got), flush=True)
        c.close()


def hold(host, port, sni, cafile):
    c = Conn(host, port, sni, cafile, window=1000)
    c.send(frame(HEADERS, END_HEADERS | END_STREAM, 1, block(req(b"GET", b"/big", sni))))
    status, got = c.response(1, want_body=1000)
    print("held", status, len(got), flush=True)
    sys.stdin.readline()
    c.send(frame(WINDOW_UPDATE, 0, 1, (1 << 20).to_bytes(4, "big")) +
           frame(WINDOW_UPDATE, 0, 0, (1 << 20).to_bytes(4, "big")))
    status, rest = c.response(1)
    print("done", len(got + rest), flush=True)
    c.close()


def h1(host, port, sni, cafile, sport, out):
    ctx = ssl.create_default_context(cafile=cafile)
    ctx.set_alpn_protocols(["http/1.1"])
    raw = socket.create_connection((host, port), timeout=20, source_address=("", int(sport)))
    s = ctx.wrap_socket(raw, server_hostname=sni)
    sent = f"GET /small HTTP/1.1\r\nHost: {sni}\r\nConnection: close\r\n\r\n".encode()
    s.sendall(sent)
    got = b""
    while True:
        try:
            d = s.recv(65536)
        except ssl.SSLError:
            break
        if not d:
            break
        got += d
    s.close()
    for ext, data in (("c2s", sent), ("s2c", got)):
        with open(f"{out}.{ext}", "wb") as f:
            f.write(data)
    print("h1", len(got), flush=True)


def main():
    host, port, sni, cafile, mode = sys.argv[1:6]
    if mode == "h1":
        h1(host, int(port), sni, cafile, *sys.argv[6:8])
        return
    {"hostile": hostile, "hold": hold}[mode](host, int(port), sni, cafile)


main()
