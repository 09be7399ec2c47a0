# Pcap/pcapng reader and classic-pcap writer/editor for the tests (standard library only): list, drop, swap, split, filter packets.
"""Usage: pcapedit.py IN OUT [--drop N]... [--swap A,B]... [--only-tcp] [--list]

IN is classic pcap or pcapng; OUT is written as classic pcap (IN's time
resolution, or microseconds for pcapng input). Packets are numbered from 1
in file order, as tshark's frame.number.
--drop N    leaves packet N out
--swap A,B  exchanges packets A and B, each taking the other's timestamp
            (the file stays in time order: B arrived first, as on a wire
            that reordered them)
--only-tcp  leaves out everything that is not TCP over IPv4/IPv6
--list      prints one line per packet of IN (give '-' as OUT)

Importable: read(path) -> Pcap (.packets: list of Packet with .ts in ns,
.data, and .tcp (TcpInfo) or .udp when parsed); Pcap.write(path, packets).
A record cut at the end of a file (a capture still being written) is ignored.
Only Ethernet (linktype 1) frames are parsed; others are kept as they are.
"""

import ipaddress
import struct
import sys

MAGIC_US, MAGIC_NS = 0xA1B2C3D4, 0xA1B23C4D
PCAPNG_SHB = 0x0A0D0D0A


class TcpInfo:
    __slots__ = ("family", "src", "dst", "sport", "dport", "seq", "ack", "flags", "payload_off",
                 "payload_len")

    def payload(self, pkt):
        return pkt.data[self.payload_off:self.payload_off + self.payload_len]


class Packet:
    __slots__ = ("ts", "orig_len", "data", "tcp", "udp")

    def __init__(self, ts, orig_len, data, linktype=1):
        self.ts, self.orig_len, self.data = ts, orig_len, data
        self.tcp, self.udp = None, None
        if linktype == 1:
            self._parse()

    def _parse(self):
        d = self.data
        if len(d) < 14:
            return
        eth, off = struct.unpack("!H", d[12:14])[0], 14
        if eth == 0x8100 and len(d) >= 18:
            eth, off = struct.unpack("!H", d[16:18])[0], 18
        if eth == 0x0800 and len(d) >= off + 20:
            ihl = (d[off] & 0x0F) * 4
            total = struct.unpack("!H", d[off + 2:off + 4])[0]
            proto = d[off + 9]
            src = str(ipaddress.IPv4Address(d[off + 12:off + 16]))
            dst = str(ipaddress.IPv4Address(d[off + 16:off + 20]))
            fam, l4, end = 4, off + ihl, off + total
        elif eth == 0x86DD and len(d) >= off + 40:
            plen = struct.unpack("!H", d[off + 4:off + 6])[0]
            proto = d[off + 6]
            src = str(ipaddress.IPv6Address(d[off + 8:off + 24]))
            dst = str(ipaddress.IPv6Address(d[off + 24:off + 40]))
            fam, l4, end = 6, off + 40, off + 40 + plen
        else:
            return
        end = min(end, len(d))
        if proto == 6 and end >= l4 + 20:
            t = TcpInfo()
            t.family, t.src, t.dst = fam, src, dst
            t.sport, t.dport, t.seq, t.ack = struct.unpack("!HHII", d[l4:l4 + 12])
            t.flags = d[l4 + 13]
            t.payload_off = l4 + (d[l4 + 12] >> 4) * 4
            t.payload_len = max(0, end - t.payload_off)
            self.tcp = t
        elif proto == 17 and end >= l4 + 8:
            self.udp = (src, dst) + struct.unpack("!HH", d[l4:l4 + 4])


class Pcap:
    def __init__(self, fmt, packets, nano=False, linktype=1, snaplen=262144):
        self.fmt, self.packets, self.nano = fmt, packets, nano
        self.linktype, self.snaplen = linktype, snaplen

    def write(self, path, packets=None):
        """Writes classic pcap (little-endian; ns or us as read)."""
        with open(path, "wb") as f:
            f.write(struct.pack("<IHHiIII", MAGIC_NS if self.nano else MAGIC_US, 2, 4, 0, 0,
                                self.snaplen, self.linktype))
            for p in self.packets if packets is None else packets:
                sec, ns = divmod(p.ts, 10**9)
                f.write(struct.pack("<IIII", sec, ns if self.nano else ns // 1000,
                                    len(p.data), p.orig_len))
                f.write(p.data)


def read(path):
    with open(path, "rb") as f:
        data = f.read()
    if len(data) < 24:
        raise ValueError(f"{path}: {len(data)} bytes, no pcap header")
    if struct.unpack("<I", data[:4])[0] == PCAPNG_SHB:
        return _read_pcapng(data, path)
    for order in ("<", ">"):
        magic = struct.unpack(order + "I", data[:4])[0]
        if magic in (MAGIC_US, MAGIC_NS):
            break
    else:
        raise ValueError(f"{path}: neither pcap nor pcapng (magic {data[:4].hex()})")
    nano = magic == MAGIC_NS
    snaplen, linktype = struct.unpack(order + "II", data[16:24])
    packets, pos = [], 24
    while pos + 16 <= len(data):
        sec, frac, incl, orig = struct.unpack(order + "IIII", data[pos:pos + 16])
        if pos + 16 + incl > len(data):
            break
        packets.append(Packet(sec * 10**9 + (frac if nano else frac * 1000), orig,
                              data[pos + 16:pos + 16 + incl], linktype))
        pos += 16 + incl
    return Pcap("pcap", packets, nano, linktype, snaplen)


def _read_pcapng(data, path):
    order, ifaces, packets, pos = "<", [], [], 0
    while pos + 12 <= len(data):
        btype = struct.unpack(order + "I", data[pos:pos + 4])[0]
        if btype == PCAPNG_SHB or struct.unpack(">I", data[pos:pos + 4])[0] == PCAPNG_SHB:
            order = "<" if data[pos + 8:pos + 12] == b"\x4d\x3c\x2b\x1a" else ">"
            btype, ifaces = PCAPNG_SHB, []
        blen = struct.unpack(order + "I", data[pos + 4:pos + 8])[0]
        if blen < 12 or pos + blen > len(data):
            break
        body = data[pos + 8:pos + blen - 4]
        if btype == 1 and len(body) >= 8:
            linktype = struct.unpack(order + "H", body[:2])[0]
            res, at = 10**6, 8
            while at + 4 <= len(body):
                code, n = struct.unpack(order + "HH", body[at:at + 4])
                if code == 0:
                    break
                if code == 9 and n == 1:
                    v = body[at + 4]
                    res = 2 ** (v & 0x7F) if v & 0x80 else 10 ** v
                at += 4 + (n + 3) // 4 * 4
            ifaces.append((linktype, res))
        elif btype == 6 and len(body) >= 20:
            iface, hi, lo, cap, orig = struct.unpack(order + "IIIII", body[:20])
            linktype, res = ifaces[iface] if iface < len(ifaces) else (1, 10**6)
            packets.append(Packet(((hi << 32) | lo) * 10**9 // res, orig, body[20:20 + cap],
                                  linktype))
        elif btype == 3 and len(body) >= 4:
            orig = struct.unpack(order + "I", body[:4])[0]
            linktype = ifaces[0][0] if ifaces else 1
            packets.append(Packet(0, orig, body[4:4 + orig], linktype))
        pos += blen
    linktype = ifaces[0][0] if ifaces else 1
    return Pcap("pcapng", packets, False, linktype)


def swap(packets, a, b):
    """Exchanges packets at list indexes a and b; each takes the timestamp of its new place."""
    pa, pb = packets[a], packets[b]
    pa.ts, pb.ts = pb.ts, pa.ts
    packets[a], packets[b] = pb, pa


def main(argv):
    args = list(argv)
    if len(args) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    src, dst = args[0], args[1]
    drops, swaps, only_tcp, listing = set(), [], False, False
    i = 2
    while i < len(args):
        a = args[i]
        if a == "--drop" and i + 1 < len(args):
            drops.add(int(args[i + 1]))
            i += 2
        elif a == "--swap" and i + 1 < len(args):
            x, y = args[i + 1].split(",")
            swaps.append((int(x), int(y)))
            i += 2
        elif a == "--only-tcp":
            only_tcp, i = True, i + 1
        elif a == "--list":
            listing, i = True, i + 1
        else:
            print(f"pcapedit: bad argument {a!r}", file=sys.stderr)
            return 2
    cap = read(src)
    if listing:
        for n, p in enumerate(cap.packets, 1):
            t = p.tcp
            desc = (f"tcp {t.src}:{t.sport} > {t.dst}:{t.dport} flags {t.flags:#04x} seq {t.seq} "
                    f"len {t.payload_len}" if t else ("udp" if p.udp else "other"))
            print(f"{n} {p.ts} {desc}")
        return 0
    pk = list(cap.packets)
    gone = {id(pk[n - 1]) for n in drops}  # numbers of IN, before any swap
    for x, y in swaps:
        swap(pk, x - 1, y - 1)
    cap.write(dst, [p for p in pk if id(p) not in gone and (p.tcp or not only_tcp)])
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except BrokenPipeError:
        sys.exit(0)
