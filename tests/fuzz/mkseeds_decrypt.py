#!/usr/bin/env python3
"""Seeds for fuzz_keylog, fuzz_tls and fuzz_tcp from a real capture.

usage: mkseeds_decrypt.py CAPTURE.pcap KEYS.log CORPUS_DIR
CAPTURE is a classic pcap (editcap -F pcap) of TLS connections on Ethernet;
KEYS their key log. Writes keylog/seed-*, tcp/seed-* (each frame with a
2-byte length before it) and tls/seed-* (each connection's payloads in the
chunk format fuzz_tls.c reads: a header byte, direction in bit 0, length
(h >> 3) * 37 + 1)."""
import os
import struct
import sys


def frames(path):
    with open(path, "rb") as f:
        hdr = f.read(24)
        end = "<" if hdr[:4] == b"\xd4\xc3\xb2\xa1" or hdr[:4] == b"\x4d\x3c\xb2\xa1" else ">"
        while True:
            h = f.read(16)
            if len(h) < 16:
                return
            _, _, incl, _ = struct.unpack(end + "IIII", h)
            yield f.read(incl)


def main():
    cap, keys, out = sys.argv[1:4]
    for d in ("keylog", "tcp", "tls"):
        os.makedirs(os.path.join(out, d), exist_ok=True)
    with open(keys, "rb") as f:
        open(os.path.join(out, "keylog", "seed-real"), "wb").write(f.read())
    open(os.path.join(out, "keylog", "seed-bad"), "wb").write(
        b"CLIENT_RANDOM zz 00\n# comment\nCLIENT_TRAFFIC_SECRET_0 " + b"01" * 32 + b" " + b"ab" * 48 +
        b"\r\nRSA 0011 2233\n" + b"x" * 1200 + b"\n")
    conns = {}
    tcp = bytearray()
    for fr in frames(cap):
        if len(tcp) < 14000:
            tcp += struct.pack(">H", len(fr)) + fr
        if len(fr) < 54 or fr[12:14] != b"\x08\x00" or fr[23] != 6:
            continue
        ihl = (fr[14] & 15) * 4
        t = 14 + ihl
        total = struct.unpack(">H", fr[16:18])[0]
        sport, dport = struct.unpack(">HH", fr[t:t + 4])
        doff = (fr[t + 12] >> 4) * 4
        payload = fr[t + doff:14 + total]
        if not payload:
            continue
        key = tuple(sorted((sport, dport)))
        conns.setdefault(key, [])
        conns[key].append((0 if sport != 443 and sport > dport else 1 if sport < dport else 0, payload))
    open(os.path.join(out, "tcp", "seed-real"), "wb").write(bytes(tcp))
    for i, (key, parts) in enumerate(sorted(conns.items())[:4]):
        first = parts[0][0]
        seed = bytearray()
        for d, p in parts:
            d ^= first  # the ClientHello's direction is 0
            while p:
                k = min(len(p), 31 * 37 + 1)
                h = (k - 1) // 37
                n = h * 37 + 1
                seed += bytes([(h << 3) | d]) + p[:n]
                p = p[n:]
        open(os.path.join(out, "tls", "seed-%d" % i), "wb").write(bytes(seed[:16000]))


main()
