# Self-test of the pcap judge (tmlib.judge): good synthetic captures pass, each kind of defect is caught.
"""usage: python3 tests/integration/selftest.py

Not part of `make test` (it tests the test code, not the product). Writes
captures with a small independent packet writer, runs them through the same
tshark-based judge the integration tests use, and checks that a correct
capture passes and every injected defect fails with a message naming it.
"""

import os
import socket
import struct
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import tmlib  # noqa: E402


def csum(data):
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return (~s) & 0xFFFF


def frame(p):
    """p: dict family, src, dst, sport, dport, seq, ack, flags, payload, opts, bad_ck."""
    opts = p.get("opts", b"")
    thl = 20 + len(opts)
    tcp = struct.pack("!HHIIBBHHH", p["sport"], p["dport"], p["seq"] & 0xFFFFFFFF,
                      p["ack"] & 0xFFFFFFFF, (thl // 4) << 4, p["flags"], 65535, 0, 0)
    tcp += opts + p["payload"]
    if p["family"] == 4:
        src, dst = socket.inet_pton(socket.AF_INET, p["src"]), socket.inet_pton(socket.AF_INET, p["dst"])
        pseudo = src + dst + struct.pack("!BBH", 0, 6, len(tcp))
    else:
        src, dst = socket.inet_pton(socket.AF_INET6, p["src"]), socket.inet_pton(socket.AF_INET6, p["dst"])
        pseudo = src + dst + struct.pack("!IxxxB", len(tcp), 6)
    ck = csum(pseudo + tcp) ^ (0x1234 if p.get("bad_ck") else 0)
    tcp = tcp[:16] + struct.pack("!H", ck) + tcp[18:]
    if p["family"] == 4:
        ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(tcp), 1, 0x4000, 64, 6, 0, src, dst)
        ip = ip[:10] + struct.pack("!H", csum(ip)) + ip[12:]
        eth_type = 0x0800
    else:
        ip = struct.pack("!IHBB16s16s", 6 << 28, len(tcp), 6, 64, src, dst)
        eth_type = 0x86DD
    return b"\x02\0\0\0\0\x01\x02\0\0\0\0\x02" + struct.pack("!H", eth_type) + ip + tcp


def conversation(family, client, server, c2s, s2c, mss=1460, t0=1_700_000_000 * 10**9,
                 isn=(1000, 5000000)):
    seg_mss = mss if family == 4 else mss - 20
    isn = list(isn)
    pos = [0, 0]
    ends = [client, server]
    pkts = []

    def pk(frm, flags, payload=b"", opts=b""):
        to = 1 - frm
        pkts.append(dict(family=family, src=ends[frm][0], dst=ends[to][0], sport=ends[frm][1],
                         dport=ends[to][1], seq=isn[frm] + (0 if flags & 2 else 1 + pos[frm]),
                         ack=(isn[to] + 1 + pos[to]) if flags & 0x10 else 0, flags=flags,
                         payload=payload, opts=opts))
    syn_opts = struct.pack("!BBH", 2, 4, seg_mss) + b"\x01\x03\x03\x07" + b"\x01\x01\x04\x02"
    pk(0, 0x02, opts=syn_opts)
    pk(1, 0x12, opts=syn_opts)
    pk(0, 0x10)
    for d, data in ((0, c2s), (1, s2c)):
        for i in range(0, len(data), seg_mss):
            part = data[i:i + seg_mss]
            pk(d, 0x18, part)
            pos[d] += len(part)
            pk(1 - d, 0x10)
    pk(0, 0x11)
    pos[0] += 1
    pk(1, 0x10)
    pk(1, 0x11)
    pos[1] += 1
    pk(0, 0x10)
    for i, p in enumerate(pkts):
        p["ts"] = t0 + i * 1000
    return pkts


def write_pcap(path, pkts, sort=True):
    with open(path, "wb") as f:
        f.write(struct.pack("<IHHiIII", 0xA1B23C4D, 2, 4, 0, 0, 262144, 1))
        for p in sorted(pkts, key=lambda p: p["ts"]) if sort else pkts:
            fr = frame(p)
            f.write(struct.pack("<IIII", p["ts"] // 10**9, p["ts"] % 10**9, len(fr), len(fr)))
            f.write(fr)


def main():
    d = tempfile.mkdtemp(prefix="tlsmirror-selftest-")
    c2s = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n" + tmlib.gen_bytes(5000, 1)
    s2c = b"HTTP/1.1 200 OK\r\n\r\n" + tmlib.gen_bytes(20000, 2)
    base4 = lambda: conversation(4, ("127.0.0.1", 40000), ("127.0.0.1", 4433), c2s, s2c)
    base6 = lambda: conversation(6, ("::1", 40001), ("::1", 4433), c2s, s2c)
    failures = 0

    def case(name, pkts, expect_fail, must_contain=None, sort=True, **judge_kw):
        nonlocal failures
        path = os.path.join(d, name + ".pcap")
        write_pcap(path, pkts, sort)
        msg = None
        try:
            cap = tmlib.judge(path, **judge_kw)
            for st in cap.streams:
                if st.client[1] != 40002:
                    tmlib.check_stream(st, c2s=c2s, s2c=s2c)
        except tmlib.Fail as e:
            msg = str(e)
        if not expect_fail and msg is None:
            print(f"ok   {name}: passes")
        elif expect_fail and msg is not None and (must_contain is None or must_contain in msg):
            lines = msg.splitlines()
            print(f"ok   {name}: rejected: {lines[1 if len(lines) > 1 else 0].strip()}")
        else:
            failures += 1
            print(f"FAIL {name}: " + (f"judge accepted it" if msg is None else f"rejected: {msg}"))

    case("good_v4", base4(), False)
    case("good_v6", base6(), False)
    case("good_both", base4() + conversation(4, ("127.0.0.1", 40002), ("127.0.0.1", 4433),
                                             b"x" * 3000, b"y" * 10, t0=1_700_000_000 * 10**9 + 500), False)
    p = base4(); p[10]["bad_ck"] = True
    case("bad_checksum", p, True, "checksum")
    p = base4(); del p[-2]
    case("no_server_fin", p, True, "no FIN from the server")
    p = base4(); p[5]["payload"] = b"\x17\x03\x03\x00\x10" + p[5]["payload"][5:]
    case("tls_bytes", p, True, "TLS record header")
    p = base4(); del p[7]
    case("gap", p, True, "sequence gaps")
    p = base4(); p.insert(8, dict(p[7], ts=p[7]["ts"] + 1))
    case("retransmission", p, True)
    p = base4(); p[-1]["flags"] = 0x14
    case("rst", p, True, "RST")
    p = base4(); del p[0]
    case("no_syn", p, True, "expected SYN")
    p = conversation(4, ("127.0.0.1", 40000), ("127.0.0.1", 4433), c2s, s2c, mss=1400)
    case("wrong_mss", p, True, "MSS option 1400")
    p = base4(); del p[-1]
    case("unacked", p, True, "never acknowledged")
    p = conversation(4, ("198.18.0.7", 40000), ("198.19.0.1", 4433), c2s, s2c)
    case("synthetic_addr", p, True, "synthetic address")
    p = base4(); p[20]["ts"] = p[19]["ts"]; p[21]["ts"] = p[19]["ts"] - 5000
    case("ts_backwards", p, True, "timestamp goes backwards", sort=False)
    # a kernel reusing a client port: a second connection, same ports, after the first ended
    again = lambda: conversation(4, ("127.0.0.1", 40000), ("127.0.0.1", 4433), c2s, s2c,
                                 t0=1_700_000_001 * 10**9, isn=(7000000, 9000000))
    case("port_reuse", base4() + again(), True, "same ports as an earlier session")
    case("port_reuse_allowed", base4() + again(), False, allow_port_reuse=True)
    p = again(); p.insert(8, dict(p[7], ts=p[7]["ts"] + 1))
    case("port_reuse_retransmission", base4() + p, True, "retransmission",
         allow_port_reuse=True)
    p = base4()[:-4]
    case("port_reuse_unended", p + again(), True, "had not ended", allow_port_reuse=True)
    # byte-exactness: content one byte off must fail check_stream
    p = conversation(4, ("127.0.0.1", 40000), ("127.0.0.1", 4433), c2s, s2c[:-1] + b"!")
    case("content_differs", p, True, "first difference")
    # a gap that is allowed: judge passes, gap totals are right
    p = base4(); gap_len = len(p[7]["payload"]); del p[7]
    path = os.path.join(d, "gap_allowed.pcap")
    write_pcap(path, p)
    try:
        cap = tmlib.judge(path, allow_gaps=True, allow_analysis=("not captured", "wasn't captured"))
        st = cap.streams[0]
        tmlib.check(st.gap_total() == gap_len, f"gap total {st.gap_total()} != {gap_len}")
        print("ok   gap_allowed: gap of", gap_len, "bytes measured")
    except tmlib.Fail as e:
        failures += 1
        print(f"FAIL gap_allowed: {e}")
    import shutil
    shutil.rmtree(d)
    print(f"selftest: {failures} failure(s)")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
