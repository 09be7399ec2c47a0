# Writes the seed inputs of fuzz_h2 (tests/fuzz/fuzz_h2.c describes the layout) into a directory.
import os
import sys

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"


def frame(typ, flags, sid, payload):
    return len(payload).to_bytes(3, "big") + bytes([typ, flags]) + sid.to_bytes(4, "big") + payload


def rec(direction, data, kind=0):
    return bytes([direction | kind << 1]) + len(data).to_bytes(2, "big") + data


SETTINGS = frame(4, 0, 0, b"\x00\x01\x00\x00\x10\x00" + b"\x00\x03\x00\x00\x00\x64")
GET = b"\x82\x87\x84\x41\x09localhost"            # GET https / :authority localhost (indexed)
POST = b"\x83\x87\x04\x05/echo\xbe"               # POST https /echo, authority from the table
RESP = b"\x88\x40\x04x-id\x03abc"                 # 200, x-id: abc (indexed)
LEN5 = b"\x0f\x0d\x015"                           # content-length: 5


def lit(name, value):
    """Literal field without indexing, new name (lengths < 127)."""
    return b"\x00" + bytes([len(name)]) + name + bytes([len(value)]) + value


def req(path=b"/", extra=b"", method=b"GET"):
    return (lit(b":method", method) + lit(b":scheme", b"https") + lit(b":path", path) +
            lit(b":authority", b"h") + extra)


def seeds():
    s = {}
    base = rec(0, PREFACE + SETTINGS) + rec(1, SETTINGS)
    s["get-post"] = bytes([1]) + base + rec(0, frame(1, 5, 1, GET)) + \
        rec(1, frame(1, 4, 1, RESP + LEN5) + frame(0, 1, 1, b"hello")) + \
        rec(0, frame(1, 4, 3, POST) + frame(0, 0, 3, b"ab") + frame(0, 1, 3, b"c")) + \
        rec(1, frame(1, 4, 3, b"\x88\xbe") + frame(0, 1, 3, b"abc") +
            frame(1, 5, 3, b"\x00\x02tr\x011"))
    s["continuation-padding"] = bytes([1]) + base + \
        rec(0, frame(1, 0x28, 1, b"\x02\x00\x00\x00\x01\x10\x82\x87\x00\x00")) + \
        rec(0, frame(9, 4, 1, b"\x84\x41\x01h")) + \
        rec(1, frame(1, 0x0c, 1, b"\x01\x88\x00") + frame(0, 0x09, 1, b"\x03body\x00\x00\x00"))
    s["push-1xx-rst-goaway"] = bytes([3]) + base + rec(0, frame(1, 5, 1, GET)) + \
        rec(1, frame(5, 4, 1, b"\x00\x00\x00\x02\x82\x87\x04\x02/p\xbe") +
            frame(1, 4, 1, b"\x08\x03100") + frame(1, 5, 1, b"\x88") +
            frame(1, 4, 2, b"\x88") + frame(3, 0, 2, b"\x00\x00\x00\x08") +
            frame(7, 0, 0, b"\x00\x00\x00\x01\x00\x00\x00\x00"))
    s["detect-preface-split"] = bytes([0]) + rec(0, PREFACE[:5]) + rec(0, PREFACE[5:]) + \
        rec(0, frame(1, 5, 1, GET))
    s["not-h2"] = bytes([0]) + rec(1, b"220 smtp ready\r\n") + rec(0, b"EHLO x\r\n")
    s["bad-frame-fallback"] = bytes([1]) + base + rec(0, frame(1, 4, 1, GET)) + \
        rec(0, frame(4, 0, 0, b"\x00\x01\x00")) + rec(0, b"raw after")
    s["hpack-error"] = bytes([1]) + base + rec(0, frame(1, 5, 1, b"\xff\xff\xff\xff"))
    s["gap-and-exit"] = bytes([1]) + base + rec(0, frame(1, 4, 1, GET)) + \
        rec(1, b"xyz", kind=1) + rec(0, b"\x00" * 4, kind=2) + bytes([6])
    s["table-size"] = bytes([1]) + rec(0, PREFACE + frame(4, 0, 0, b"\x00\x01\x00\x01\x00\x00")) + \
        rec(1, frame(1, 5, 1, b"\x3f\xe1\x1f\x88")) + rec(0, frame(1, 5, 1, b"\x20" + GET))
    # RFC 9113 §8 violations: each connection falls back, nothing invented
    s["path-crlf"] = bytes([1]) + base + rec(0, frame(1, 5, 1, req(
        b"/a HTTP/1.1\r\nX: 1\r\n\r\nGET /admin")))
    s["value-crlf-nul-space"] = bytes([1]) + base + rec(0, frame(1, 5, 1, req(
        extra=lit(b"x-a", b"1\r\nx-b: 2")))) + rec(0, frame(1, 5, 3, req(
            extra=lit(b"x-a", b"a\0b") + lit(b"x-c", b" lead"))))
    s["names-pseudo-order"] = bytes([1]) + base + rec(0, frame(1, 5, 1, req(
        extra=lit(b"X-Up", b"1")) + lit(b":path", b"/late"))) + \
        rec(0, frame(1, 5, 3, lit(b":method", b"GET") + lit(b":foo", b"1")))
    s["connection-specific"] = bytes([1]) + base + rec(0, frame(1, 5, 1, req(
        extra=lit(b"connection", b"close") + lit(b"te", b"gzip"))))
    s["body-past-length"] = bytes([1]) + base + rec(0, frame(1, 4, 1, req(
        extra=lit(b"content-length", b"0"), method=b"POST")) +
        frame(0, 1, 1, b"GET /admin HTTP/1.1\r\n\r\n"))
    s["response-rules"] = bytes([1]) + base + rec(0, frame(1, 5, 1, GET)) + \
        rec(1, frame(1, 4, 1, lit(b":status", b"200") + lit(b"content-length", b"2")) +
            frame(0, 1, 1, b"hiHTTP/1.1 200 OK\r\n\r\n")) + \
        rec(0, frame(1, 5, 3, GET)) + rec(1, frame(1, 5, 3, lit(b":status", b"101")))
    s["trailers-pseudo"] = bytes([1]) + base + rec(0, frame(1, 5, 1, GET)) + \
        rec(1, frame(1, 4, 1, b"\x88") + frame(0, 0, 1, b"body") +
            frame(1, 5, 1, lit(b":status", b"200") + lit(b"x-t", b"1\r\n")))
    s["connect-and-options"] = bytes([1]) + base + rec(0, frame(1, 5, 1, lit(
        b":method", b"CONNECT") + lit(b":authority", b"h:443"))) + \
        rec(0, frame(1, 5, 3, lit(b":method", b"OPTIONS") + lit(b":scheme", b"https") +
                     lit(b":path", b"*"))) + \
        rec(0, frame(1, 5, 5, lit(b":method", b"GET") + lit(b":scheme", b"https") +
                     lit(b":path", b"/") + lit(b":authority", b"u@h")))
    # the same with HTTP records: converted and recorded (byte 0 bit 2), and
    # only tapped for the records (bit 3)
    for name in ("continuation-padding", "push-1xx-rst-goaway", "detect-preface-split", "not-h2",
                 "bad-frame-fallback", "gap-and-exit", "path-crlf", "body-past-length",
                 "response-rules", "trailers-pseudo"):
        d = s[name]
        s[name + "-records"] = bytes([d[0] | 4]) + d[1:]
        s[name + "-records-tap"] = bytes([d[0] | 12]) + d[1:]
    s["h1-records-tap"] = bytes([12]) + rec(0, b"GET / HTTP/1.1\r\nHost: h\r\n\r\n") + \
        rec(1, b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
    return s


def main():
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    for name, data in seeds().items():
        with open(os.path.join(out, "seed-" + name), "wb") as f:
            f.write(data)


main()
