# Integration test 20: delivery sinks: -o IFACE (AF_PACKET on veth in namespaces), --vxlan, --pcap-over-ip, fan-out.
import os
import signal
import socket
import struct
import subprocess
import threading
import time

from netns import Netns
from tmlib import (TLSMIRROR, Agent, RecServer, Skip, assert_bytes, certs, check,
                   check_against_server, free_port, gen_bytes, judge, need_tool, short,
                   stat_int, timeout, tshark_fields, wait_until)

DST_MAC = "02:aa:bb:cc:dd:01"


def curl_args(srv, path, out, host="127.0.0.1"):
    c = certs()
    return [need_tool("curl"), "-sS", "--cacert", c["cert"], "--resolve",
            f"localhost:{srv.port}:{host}", f"https://localhost:{srv.port}{path}", "-o", out]


def body_file(env, n, seed):
    body = gen_bytes(n, seed)
    with open(env.path("body.bin"), "wb") as f:
        f.write(body)
    return body


def fetch(env, agent, srv, body, name="curl", ring=None):
    """One mirrored curl download of /body, checked byte-exact on the client."""
    out = env.path(name + ".bin")
    p = env.captured(name, agent.sock, curl_args(srv, "/body", out), ring=ring)
    rc = p.wait(120)
    check(rc == 0 and p.err() == b"", f"curl exited {rc}: {short(p.err())}")
    with open(out, "rb") as f:
        assert_bytes("curl output", body, f.read())


def pcap_frames(data):
    """Frames of a classic pcap byte string (records only, either byte order)."""
    order = "<" if data[0:4] in (b"\x4d\x3c\xb2\xa1", b"\xd4\xc3\xb2\xa1") else ">"
    out, pos = [], 24
    while pos + 16 <= len(data):
        incl = struct.unpack(order + "I", data[pos + 8:pos + 12])[0]
        out.append(data[pos + 16:pos + 16 + incl])
        pos += 16 + incl
    check(pos == len(data), f"pcap stream ends mid-record ({len(data) - pos} bytes left)")
    return out


def read_frames(path):
    with open(path, "rb") as f:
        return pcap_frames(f.read())


def sink_lines(text):
    """'sink name=.. target=..' lines of the agent's stats -> list of dicts."""
    import re
    return [dict(re.findall(r"(\w+)=(\S*)", l)) for l in text.splitlines()
            if l.startswith("sink ")]


def sink_stat(agent, name):
    lines = [s for s in sink_lines(agent.stderr_text) if s.get("name") == name]
    check(len(lines) == 1, f"want one 'sink name={name}' stats line at exit, got {lines}; "
          f"stderr: {short(agent.stderr_text, 800)}")
    return lines[0]


class Dumpcap:
    """dumpcap on an interface (inside a namespace or not); frames as nanosecond pcap."""

    def __init__(self, env, nets, ns, dev, bpf, name="dumpcap"):
        need_tool("dumpcap")
        self.env, self.ng, self.path = env, env.path(name + ".pcapng"), env.path(name + ".pcap")
        argv = ["dumpcap", "-i", dev, "-f", bpf, "-w", self.ng]
        self.proc = nets.spawn_in(ns, name, argv) if nets else env.spawn(name, argv)
        wait_until(lambda: b"Capturing on" in self.proc.err() or not self.proc.alive(), 15,
                   "dumpcap to start")
        check(self.proc.alive(), f"dumpcap failed: {short(self.proc.err())}")

    def stop(self):
        time.sleep(0.5)
        self.proc.signal(signal.SIGINT)
        self.proc.wait(15)
        r = subprocess.run(["editcap", "-F", "nsecpcap", self.ng, self.path],
                           capture_output=True, timeout=120)
        check(r.returncode == 0, f"editcap failed: {short(r.stderr)}")
        return self.path


class UdpListener:
    """Receives every datagram on 127.0.0.1:port in a thread."""

    def __init__(self):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            self.sock.setsockopt(socket.SOL_SOCKET, 33, 64 << 20)  # SO_RCVBUFFORCE
        except OSError:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16 << 20)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.sock.settimeout(0.2)
        self.got, self.stop_flag = [], False
        self.t = threading.Thread(target=self._run, daemon=True)
        self.t.start()

    def _run(self):
        while not self.stop_flag:
            try:
                self.got.append(self.sock.recv(70000))
            except socket.timeout:
                continue

    def stop(self):
        time.sleep(0.3)
        self.stop_flag = True
        self.t.join(5)
        self.sock.close()
        return self.got


class PoipClient:
    """A PCAP-over-IP reader: connects, keeps everything until EOF (or never reads)."""

    def __init__(self, port, read=True):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if not read:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        self.sock.connect(("127.0.0.1", port))
        self.data, self.done = bytearray(), False
        if read:
            self.t = threading.Thread(target=self._run, daemon=True)
            self.t.start()

    def _run(self):
        while True:
            try:
                b = self.sock.recv(1 << 16)
            except OSError:
                b = b""
            if not b:
                break
            self.data += b
        self.done = True

    def wait_header(self):
        wait_until(lambda: len(self.data) >= 24, 10, "the pcap header from the PCAP-over-IP server")

    def wait_eof(self):
        wait_until(lambda: self.done, 20, "EOF from the PCAP-over-IP server")
        self.sock.close()
        return bytes(self.data)


def check_same_frames(what, got, want):
    check(len(got) == len(want), f"{what}: {len(got)} frames, the -w file has {len(want)}")
    for i, (g, w) in enumerate(zip(got, want)):
        if g != w:
            assert_bytes(f"{what} frame {i + 1}", w, g)


# ---------------------------------------------------------------- -o IFACE

@timeout(180)
def test_iface_veth_namespaces(env):
    """-o onto a veth with no address: agent, app and server in one namespace, dumpcap on
    the peer in another. The frames on the wire are byte-identical to the -w file,
    segments fit the interface MTU (1400 -> MSS 1360), --dst-mac addresses every frame,
    -I gives the host's end the interface's MAC; payloads byte-exact."""
    body = body_file(env, 400000, 201)
    with Netns(env) as nets:
        app, capns = nets.ns("app"), nets.ns("cap")
        va, vb = nets.veth(app, capns, mtu=1400)
        va_mac = nets.sh(app, "cat", f"/sys/class/net/{va}/address").decode().strip()
        dc = Dumpcap(env, nets, capns, vb, "tcp")
        with nets.inside(app):
            srv = RecServer(env, body=env.path("body.bin"))
            agent = Agent(env, args=["-o", va, "--dst-mac", DST_MAC, "-I", va]).start()
            fetch(env, agent, srv, body)
        conns = srv.conns(1)
        procs, total = agent.final_stats()
        wire = dc.stop()
        cap = judge(wire, mss=1360)
        check_against_server(cap, conns)
        check_same_frames("frames on the veth", read_frames(wire), read_frames(agent.pcap))
        rows = tshark_fields(wire, ["eth.dst", "eth.src", "tcp.srcport"])
        client_port = conns[0].peer_port
        for dst, src, sport in rows:
            check(dst == DST_MAC, f"frame to {dst}, --dst-mac asked {DST_MAC}")
            if int(sport) == client_port:  # curl's end: the mirrored host
                check(src == va_mac, f"host frame from {src}, -I {va} has {va_mac}")
            else:
                check(src == "02:00:7f:00:00:01", f"server frame from {src}")
        s = sink_stat(agent, "interface")
        check(stat_int(s, "packets") == len(rows) and stat_int(s, "errors") == 0 and
              stat_int(s, "queue_drops") == 0, f"interface sink stats {s}, {len(rows)} on the wire")
        check(stat_int(total, "dropped_bytes") == 0, f"drops: {total}")


@timeout(120)
def test_iface_dummy(env):
    """-o onto a dummy interface with no address: every frame is sent, none refused."""
    body = body_file(env, 100000, 202)
    with Netns(env) as nets:
        app = nets.ns("app")
        dev = nets.dummy(app)
        if not dev:
            raise Skip("this kernel has no dummy interface driver (ip link add type dummy)")
        with nets.inside(app):
            srv = RecServer(env, body=env.path("body.bin"))
            agent = Agent(env, args=["-o", dev]).start()
            fetch(env, agent, srv, body)
        check_against_server(judge(agent.pcap), srv.conns(1))
        agent.final_stats()
        s = sink_stat(agent, "interface")
        check(stat_int(s, "packets") == len(read_frames(agent.pcap)) and
              stat_int(s, "errors") == 0, f"interface sink stats {s}")


@timeout(60)
def test_iface_errors(env):
    """A missing interface and missing privileges give clear errors and exit status 1."""
    rc, _, err = env.run("nosuch", [TLSMIRROR, "--socket", env.path("a.sock"), "-o", "tmnosuch9"])
    check(rc != 0 and b"cannot open tmnosuch9: no such interface (see 'ip link')" in err,
          f"missing interface: exit {rc}, stderr {short(err)}")
    setpriv = need_tool("setpriv")
    rc, _, err = env.run("noperm", [setpriv, "--reuid=65534", "--regid=65534", "--clear-groups",
                                    "--inh-caps=-all", TLSMIRROR, "--socket",
                                    "/tmp/tm-noperm.sock", "-o", "lo"])
    check(rc != 0 and b"needs root or CAP_NET_RAW" in err,
          f"without CAP_NET_RAW: exit {rc}, stderr {short(err)}")


# ---------------------------------------------------------------- VXLAN

@timeout(120)
def test_vxlan(env):
    """--vxlan to a UDP listener: every datagram is the VXLAN header (flags 0x08, VNI
    from --vni) + a frame identical to the -w file's; tshark decodes the captured
    datagrams as VXLAN and the payloads are byte-exact."""
    body = body_file(env, 300000, 203)
    srv = RecServer(env, body=env.path("body.bin"))
    lis = UdpListener()
    dc = Dumpcap(env, None, None, "lo", f"udp port {lis.port}")
    agent = Agent(env, args=["--vxlan", f"127.0.0.1:{lis.port}", "--vni", "4242"]).start()
    fetch(env, agent, srv, body)
    conns = srv.conns(1)
    procs, total = agent.final_stats()
    got = lis.stop()
    wire = dc.stop()
    want = read_frames(agent.pcap)
    hdr = bytes([8, 0, 0, 0]) + (4242 << 8).to_bytes(4, "big")
    for i, d in enumerate(got):
        check(d[:8] == hdr, f"datagram {i + 1}: VXLAN header {d[:8].hex()}, want {hdr.hex()}")
    check_same_frames("VXLAN inner frames", [d[8:] for d in got], want)
    rows = tshark_fields(wire, ["vxlan.vni", "tcp.srcport", "tcp.payload"],
                         extra=["-d", f"udp.port=={lis.port},vxlan"])
    check(len(rows) == len(want) and all(r[0] == "4242" for r in rows),
          f"tshark decoded {len(rows)} VXLAN datagrams (VNIs {set(r[0] for r in rows)}), "
          f"want {len(want)} with VNI 4242")
    c = conns[0]
    c2s = b"".join(bytes.fromhex(r[2].replace(":", "")) for r in rows if int(r[1]) == c.peer_port)
    s2c = b"".join(bytes.fromhex(r[2].replace(":", "")) for r in rows if int(r[1]) != c.peer_port)
    assert_bytes("VXLAN client->server payload", c.c2s, c2s)
    assert_bytes("VXLAN server->client payload", c.s2c, s2c)
    s = sink_stat(agent, "vxlan")
    check(stat_int(s, "packets") == len(want) and stat_int(s, "errors") == 0, f"vxlan stats {s}")


# ---------------------------------------------------------------- PCAP-over-IP

@timeout(120)
def test_pcap_over_ip_two_clients(env):
    """Two PCAP-over-IP clients at once: each receives a pcap stream that `tshark -r -`
    reads, with exactly the -w file's frames (byte-exact payloads)."""
    body = body_file(env, 300000, 204)
    srv = RecServer(env, body=env.path("body.bin"))
    port = free_port()
    agent = Agent(env, args=["--pcap-over-ip", f"127.0.0.1:{port}"]).start()
    clients = [PoipClient(port), PoipClient(port)]
    for c in clients:
        c.wait_header()
    fetch(env, agent, srv, body)
    conns = srv.conns(1)
    agent.final_stats()
    want = read_frames(agent.pcap)
    for i, c in enumerate(clients):
        data = c.wait_eof()
        path = env.path(f"client{i}.pcap")
        with open(path, "wb") as f:
            f.write(data)
        check_same_frames(f"client {i + 1}", pcap_frames(data), want)
        r = subprocess.run([need_tool("tshark"), "-n", "-r", "-", "-T", "fields", "-e",
                            "frame.number"], input=data, capture_output=True, timeout=120)
        check(r.returncode == 0 and len(r.stdout.split()) == len(want),
              f"`tshark -r -` on client {i + 1}'s stream: exit {r.returncode}, "
              f"{len(r.stdout.split())} frames, want {len(want)}: {short(r.stderr)}")
        check_against_server(judge(path), conns)
    s = sink_stat(agent, "pcap-over-ip")
    check(stat_int(s, "peers_dropped") == 0, f"pcap-over-ip stats {s}")


# ---------------------------------------------------------------- fan-out

@timeout(180)
def test_fanout_stalled_reader(env):
    """-w, --pcap-over-ip and --vxlan at once; one PCAP-over-IP client never reads.
    It is dropped (counted for that sink only); the file, the other client and the
    VXLAN sink get everything, and the capture loses nothing."""
    body = body_file(env, 24 << 20, 205)
    # paced (~3 s): the reading client, a Python thread, must keep up even when
    # other work loads the machine; the stalled one falls behind all the same
    srv = RecServer(env, body=env.path("body.bin"), rate=8 << 20)
    lis = UdpListener()
    port = free_port()
    # queues that hold the whole body: sending to loopback UDP costs the receiver's
    # work too, and on a 2-core host the VXLAN worker may trail the burst
    agent = Agent(env, args=["--pcap-over-ip", f"127.0.0.1:{port}", "--queue-size", "64M",
                             "--vxlan", f"127.0.0.1:{lis.port}"]).start()
    good, stalled = PoipClient(port), PoipClient(port, read=False)
    good.wait_header()
    t0 = time.time()
    # a ring as large as the body: the test is about the sinks, not a busy 2-core host
    fetch(env, agent, srv, body, ring="32M")
    took = time.time() - t0
    conns = srv.conns(1)
    procs, total = agent.final_stats()
    lis.stop()
    stalled.sock.close()
    check_against_server(judge(agent.pcap), conns)
    want = read_frames(agent.pcap)
    p, pi, vx = sink_stat(agent, "pcap"), sink_stat(agent, "pcap-over-ip"), sink_stat(agent, "vxlan")
    check(stat_int(pi, "peers_dropped") == 1, f"want exactly the stalled client dropped: {pi}")
    check_same_frames("the reading client", pcap_frames(good.wait_eof()), want)
    for s in (p, pi, vx):
        check(stat_int(s, "queue_drops") == 0 and stat_int(s, "errors") == 0,
              f"sink {s.get('name')} lost packets: {s}")
    check(stat_int(p, "packets") == len(want) == stat_int(vx, "packets"),
          f"pcap {p}, vxlan {vx}, {len(want)} frames in the file")
    check(stat_int(total, "dropped_bytes") == 0, f"the capture dropped: {total}")
    check(took < 60, f"the download (paced to ~3 s) took {took:.1f}s under a stalled reader")
