#!/usr/bin/env python3
# Writes the tunnel-frame fuzz seeds (tests/fuzz/corpus/frame/): valid streams and one of each malformation.
import os
import struct
import subprocess
import sys

MAGIC = 0x544d544e


def frame(ftype, payload, flags=0, length=None, raw=None, version=2):
    n = len(payload) if length is None else length
    return struct.pack(">IBBBBII", MAGIC, version, ftype, flags, 0, n,
                       n if raw is None else raw) + payload


def hello(name=b"agent1", host=b"web-1", version=2):
    return frame(1, struct.pack(">HB", version, len(name)) + name + bytes([len(host)]) + host,
                 version=version)


def s8(b):
    return bytes([len(b)]) + b


def ev_open(conn, ts=1, flags=0, off=(0, 0), comm=b"curl", sni=b"localhost", alpn=b"h2",
            cipher=b"TLS_AES_128_GCM_SHA256", family=4):
    return (struct.pack(">BQQBBHH", 1, conn, ts, flags, family, 40000, 443) +
            b"\x7f\x00\x00\x01" + b"\x00" * 12 + b"\x7f\x00\x00\x01" + b"\x00" * 12 +
            struct.pack(">QQQBBHHII", off[0], off[1], conn, 1, 1, 0x0304, 443, 1234, 1000) +
            s8(comm) + s8(sni) + s8(alpn) + s8(cipher))


def ev_data(conn, dir, off, data, ts=2):
    return struct.pack(">BQQBQI", 2, conn, ts, dir, off, len(data)) + data


def ev_gap(conn, dir, off, n, exact=1, ts=3):
    return struct.pack(">BQQBBQQ", 3, conn, ts, dir, exact, off, n)


def ev_close(conn, how=0, ts=4):
    return struct.pack(">BQQB", 4, conn, ts, how)


def events(evs):
    return struct.pack(">I", len(evs)) + b"".join(evs)


REQ = b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n"
EV = events([ev_open(7), ev_data(7, 0, 0, REQ), ev_data(7, 1, 0, b"HTTP/1.1 200 OK\r\n\r\n" * 3),
             ev_gap(7, 1, 57, 100), ev_close(7)])
PK = EV


def lz4_literals(data):
    """An LZ4 block holding data as one literal run (valid, uncompressed)."""
    n, ext = len(data), b""
    if n >= 15:
        rest = n - 15
        ext = b"\xff" * (rest // 255) + bytes([rest % 255])
    return bytes([min(n, 15) << 4]) + ext + data


def zstd(data):
    """A zstd frame that declares its content size (compressed from a file, not a pipe)."""
    import tempfile
    with tempfile.NamedTemporaryFile() as f:
        f.write(data)
        f.flush()
        try:
            return subprocess.run(["zstd", "-q", "-c", "-1", f.name], capture_output=True,
                                  check=True).stdout
        except (OSError, subprocess.CalledProcessError):
            return None


def main(out):
    os.makedirs(out, exist_ok=True)
    v1_eth = bytes(range(12)) + b"\x08\x00" + b"E" * 60
    v1_packets = struct.pack(">IQI", 1, 1, len(v1_eth)) + v1_eth
    seeds = {
        "seed-session": hello() + frame(5, EV) + frame(3, b"\x00" * 15 + b"\x07") + frame(4, b""),
        "seed-hello-only": hello(b"x", b""),
        "seed-oversized": hello() + frame(5, b"", length=64 << 20),
        "seed-truncated": hello() + frame(5, EV)[:-5],
        "seed-bad-count": hello() + frame(5, struct.pack(">I", 9) + EV[4:]),
        "seed-trailing": hello() + frame(5, EV + b"\x00"),
        "seed-garbage": b"\x16\x03\x01\x00\xa5GET / HTTP/1.1\r\n",
        "seed-bad-lz4": hello() + frame(5, b"\xf0" + b"\x00" * 30, flags=2, raw=len(EV)),
        "seed-lz4-literals": hello() + frame(5, lz4_literals(EV), flags=2, raw=len(EV)),
        "seed-bad-zstd": hello() + frame(5, b"\x28\xb5\x2f\xfd" + b"\x00" * 20, flags=1, raw=len(EV)),
        "seed-v1-agent": hello(version=1) + frame(2, v1_packets, version=1),
        "seed-v1-packets-in-v2": hello() + frame(2, v1_packets),
        "seed-midstream-reopen": hello() + frame(5, events([
            ev_open(3, flags=3, off=(100, 5000), comm=b"nginx: worker", alpn=b""),
            ev_data(3, 1, 5000, b"x" * 300), ev_close(3, how=1)])),
        "seed-ipv6-synthetic": hello() + frame(5, events([
            ev_open(4, flags=4, family=6, sni=b"a" * 255), ev_data(4, 0, 0, REQ)])),
        "seed-bad-string": hello() + frame(5, events([ev_open(5, comm=b"cu\x01rl")])),
        "seed-long-comm": hello() + frame(5, events([ev_open(5, comm=b"c" * 16)])),
        "seed-conn-zero": hello() + frame(5, events([ev_data(0, 0, 0, b"x")])),
        "seed-bad-dir": hello() + frame(5, events([ev_data(1, 2, 0, b"x")])),
        "seed-empty-data": hello() + frame(5, events([ev_data(1, 0, 0, b"")])),
        "seed-gap-flags": hello() + frame(5, events([ev_gap(1, 0, 0, 5, exact=3)])),
        "seed-close-how": hello() + frame(5, events([ev_close(1, how=9)])),
        "seed-bad-family": hello() + frame(5, events([ev_open(1, family=5)])),
        "seed-offsets-not-midstream": hello() + frame(5, events([ev_open(1, off=(1, 0))])),
    }
    z = zstd(EV * 20)
    if z:
        big = events([ev_open(8)] + [ev_data(8, 1, i * 1000, b"abc" * 333 + b"d")
                                     for i in range(60)])
        z = zstd(big)
        seeds["seed-zstd"] = hello() + frame(5, z, flags=1, raw=len(big))
    for name, data in seeds.items():
        with open(os.path.join(out, name), "wb") as f:
            f.write(data)


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "tests/fuzz/corpus/frame")
