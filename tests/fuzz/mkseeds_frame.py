#!/usr/bin/env python3
# Writes the tunnel-frame fuzz seeds (tests/fuzz/corpus/frame/): valid streams and one of each malformation.
import os
import struct
import subprocess
import sys

MAGIC = 0x544d544e


def frame(ftype, payload, flags=0, length=None, raw=None):
    n = len(payload) if length is None else length
    return struct.pack(">IBBBBII", MAGIC, 1, ftype, flags, 0, n, n if raw is None else raw) + payload


def hello(name=b"agent1", host=b"web-1"):
    return frame(1, struct.pack(">HB", 1, len(name)) + name + bytes([len(host)]) + host)


def packets(pkts):
    body = struct.pack(">I", len(pkts))
    for ts, data in pkts:
        body += struct.pack(">QI", ts, len(data)) + data
    return body


ETH = bytes(range(12)) + b"\x08\x00" + b"E" * 60
PK = packets([(1, ETH), (2, ETH[:14]), (3, ETH * 3)])


def lz4_literals(data):
    """An LZ4 block holding data as one literal run (valid, uncompressed)."""
    n, ext = len(data), b""
    if n >= 15:
        rest = n - 15
        ext = b"\xff" * (rest // 255) + bytes([rest % 255])
    return bytes([min(n, 15) << 4]) + ext + data


def zstd(data):
    try:
        return subprocess.run(["zstd", "-q", "-c", "-1"], input=data, capture_output=True,
                              check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return None


def main(out):
    os.makedirs(out, exist_ok=True)
    seeds = {
        "seed-session": hello() + frame(2, PK) + frame(3, b"\x00" * 15 + b"\x07") + frame(4, b""),
        "seed-hello-only": hello(b"x", b""),
        "seed-oversized": hello() + frame(2, b"", length=64 << 20),
        "seed-truncated": hello() + frame(2, PK)[:-5],
        "seed-bad-count": hello() + frame(2, struct.pack(">I", 9) + PK[4:]),
        "seed-short-packet": hello() + frame(2, packets([(1, b"\x00" * 13)])),
        "seed-trailing": hello() + frame(2, PK + b"\x00"),
        "seed-garbage": b"\x16\x03\x01\x00\xa5GET / HTTP/1.1\r\n",
        "seed-bad-lz4": hello() + frame(2, b"\xf0" + b"\x00" * 30, flags=2, raw=len(PK)),
        "seed-lz4-literals": hello() + frame(2, lz4_literals(PK), flags=2, raw=len(PK)),
        "seed-bad-zstd": hello() + frame(2, b"\x28\xb5\x2f\xfd" + b"\x00" * 20, flags=1, raw=len(PK)),
    }
    z = zstd(PK * 20)
    if z:
        pk = packets([(i, ETH) for i in range(60)])
        z = zstd(pk)
        seeds["seed-zstd"] = hello() + frame(2, z, flags=1, raw=len(pk))
    for name, data in seeds.items():
        with open(os.path.join(out, name), "wb") as f:
            f.write(data)


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "tests/fuzz/corpus/frame")
