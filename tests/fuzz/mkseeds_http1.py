#!/usr/bin/env python3
"""Seeds for fuzz_http1 (tests/fuzz/fuzz_http1.c): both directions of HTTP/1.x connections, good and hostile."""
import os
import sys


def rec(d, b):
    return bytes([d, len(b) >> 8, len(b) & 0xff]) + b


def c(b):
    return rec(0, b)


def s(b):
    return rec(1, b)


GAP = bytes([2, 0, 0])
REQ = b"GET /a?x=1 HTTP/1.1\r\nHost: h\r\nUser-Agent: t\r\n\r\n"
OK = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\r\nhello"
SEEDS = {
    "get": b"\x03" + c(REQ) + s(OK),
    "pipelined": b"\x02" + c(REQ * 3) + s(OK * 3),
    "post_json": b"\x03" + c(b"POST /j HTTP/1.1\r\nHost: h\r\nContent-Type: application/json\r\n"
                             b"Content-Length: 11\r\n\r\n{\"a\":\"\xc3\xa9\"}") + s(OK),
    "chunked": b"\x01" + c(b"PUT /u HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
                           b"3;x=y\r\nabc\r\n0\r\nT: 1\r\n\r\n") +
               s(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n"),
    "continue": b"\x03" + c(b"POST /e HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n") +
                s(b"HTTP/1.1 100 Continue\r\n\r\n") + c(b"ok") + s(b"HTTP/1.1 204 No Content\r\n\r\n"),
    "head_304": b"\x03" + c(b"HEAD / HTTP/1.1\r\nHost: h\r\n\r\nGET / HTTP/1.1\r\nHost: h\r\n\r\n") +
                s(b"HTTP/1.1 200 OK\r\nContent-Length: 99\r\n\r\nHTTP/1.1 304 Not Modified\r\n\r\n"),
    "until_close": b"\x03" + c(b"GET / HTTP/1.0\r\n\r\n") + s(b"HTTP/1.0 200 OK\r\n\r\n\xff\xfebinary"),
    "websocket": b"\x03" + c(b"GET /ws HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\n\r\n") +
                 s(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n") + c(REQ),
    "refused_upgrade": b"\x03" + c(b"GET /ws HTTP/1.1\r\nHost: h\r\nUpgrade: x\r\n\r\n" + REQ) +
                       s(b"HTTP/1.1 400 Bad\r\nContent-Length: 1\r\n\r\nx" + OK),
    "connect": b"\x03" + c(b"CONNECT h:443 HTTP/1.1\r\nHost: h:443\r\n\r\n") +
               s(b"HTTP/1.1 200 OK\r\n\r\n") + c(b"\x16\x03\x01"),
    "bare_lf": b"\x03" + c(REQ + b"GET /b HTTP/1.1\r\nHost: h\r\nX: 1\nGET /admin HTTP/1.1\r\n\r\n") + s(OK),
    "nul": b"\x03" + c(b"GET /b HTTP/1.1\r\nHost: h\r\nX: a\x00b\r\n\r\n") + s(OK),
    "te_cl": b"\x03" + c(b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"),
    "space_target": b"\x03" + c(b"GET /a b HTTP/1.1\r\nHost: h\r\n\r\n"),
    "gap": b"\x03" + c(REQ) + s(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nab") + GAP + s(b"cdefghij"),
    "image_only_headers": b"\x03" + c(REQ) + s(b"HTTP/1.1 200 OK\r\nContent-Type: image/png\r\nContent-Length: 4\r\n\r\n\x89PNG"),
}

out = sys.argv[1]
os.makedirs(out, exist_ok=True)
for name, data in SEEDS.items():
    with open(os.path.join(out, name), "wb") as f:
        f.write(data)
