#!/usr/bin/env python3
"""Seeds for fuzz_record (tests/fuzz/fuzz_record.c): scripts of sealed records, raw bytes and flushes."""
import os
import sys


def piece(op, b):
    return bytes([op, len(b) & 0xff, len(b) >> 8]) + b


def sealed(ctype, b):
    return piece(ctype << 2, b)


def raw(b):
    return piece(1, b)


FLUSH = piece(2, b"")
SEEDS = {
    "data": b"\x07" + sealed(23, b"hello") + sealed(23, b"x" * 3000) + FLUSH,
    "key_updates": b"\x00" + b"".join(sealed(23, bytes([i]) * 200) for i in range(12)),
    "close_notify": b"\x10" + sealed(23, b"bye") + sealed(21, b"\x01\x00"),
    "fatal_alert": b"\x10" + sealed(21, b"\x02\x28"),
    "keyupdate_requested": b"\x03" + sealed(22, b"\x18\x00\x00\x01\x01"),
    "keyupdate_ok": b"\x03" + sealed(22, b"\x18\x00\x00\x01\x00") + sealed(23, b"after"),
    "ticket": b"\x03" + sealed(22, b"\x04\x00\x00\x01\x00"),
    "no_type": b"\x01" + sealed(0, b"\x00" * 16),
    "unknown_type": b"\x01" + sealed(50, b"z"),
    "forged_header": b"\x01" + sealed(23, b"ok") + raw(b"\x17\x03\x03\xff\xff" + b"\x00" * 40),
    "outer_handshake": b"\x01" + raw(b"\x16\x03\x03\x00\x20" + b"\x01" * 32),
    "cut_record": b"\x01" + raw(b"\x17\x03\x03\x00\x40" + b"\xaa" * 20),
    "big_record": b"\xff" + sealed(23, b"B" * 16384),
    "empty_records": b"\x02" + sealed(23, b"") * 5 + sealed(23, b"end"),
}


def main():
    d = sys.argv[1]
    os.makedirs(d, exist_ok=True)
    for name, b in SEEDS.items():
        with open(os.path.join(d, name), "wb") as f:
            f.write(b)


if __name__ == "__main__":
    main()
