# Integration test 21: the tunnel: agents (-t) -> collector (-C) over mutual TLS, judged against each agent's own pcap.
import os
import re
import signal
import socket
import ssl
import struct
import subprocess
import time

from tmlib import (nginx_conf, PYTHON, TLSMIRROR, Agent, RecServer, certs, check, check_against_server, free_port,
                   gen_bytes, judge, need_tool, short, timeout, tshark_fields, wait_until)


# ---------------------------------------------------------------- helpers

def pki(env):
    """A CA with agent1, agent2 and a collector for 127.0.0.1; a second CA with 'rogue'."""
    d, other = env.path("pki"), env.path("other-pki")
    steps = [["init", d], ["issue", d, "agent1", "--agent"], ["issue", d, "agent2", "--agent"],
             ["issue", d, "coll", "--collector", "--host", "127.0.0.1", "--host", "localhost"],
             ["init", other], ["issue", other, "rogue", "--agent"]]
    for s in steps:
        rc, out, err = env.run("pki", [TLSMIRROR, "pki"] + s, timeout_s=30)
        check(rc == 0, f"tlsmirror pki {' '.join(s)} exited {rc}: {short(err)}")
    return d, other


def tls_args(d, name):
    return ["--ca", f"{d}/ca.pem", "--cert", f"{d}/{name}.pem", "--key", f"{d}/{name}.key"]


def collector(env, d, port, extra=(), name="collector"):
    return Agent(env, name=name, args=["-C", "-l", f"127.0.0.1:{port}"] + tls_args(d, "coll")
                 + list(extra)).start()


def tunnel_agent(env, d, port, name="agent1", extra=()):
    return Agent(env, name=name, args=["-t", f"127.0.0.1:{port}"] + tls_args(d, name)
                 + list(extra)).start()


def stat_line(text, prefix):
    """key=value pairs of the first line starting with prefix (and name=... if given)."""
    for line in text.splitlines():
        if line.startswith(prefix):
            return dict(kv.split("=", 1) for kv in line.split()[1:] if "=" in kv)
    return None


def wait_connected(env, ag, what="the tunnel"):
    def up():
        _, _, raw = ag.stats()
        t = stat_line(raw, "tunnel ")
        return t if t and t.get("state") == "connected" else None
    return wait_until(up, 15, f"{what} connected")


def wait_collected(col, name, events, timeout_s=20):
    """Waits until the collector has taken `events` connection events from agent `name`."""
    def got():
        _, _, raw = col.stats()
        for line in raw.splitlines():
            if line.startswith("collector_agent ") and f" name={name} " in line + " ":
                d = dict(kv.split("=", 1) for kv in line.split()[1:])
                return int(d["events"]) >= events and d
        return None
    return wait_until(got, timeout_s, f"collector to receive {events} events from {name}")


def pcap_records(path):
    """[(ts_ns, frame bytes)] of a classic nanosecond pcap."""
    with open(path, "rb") as f:
        data = f.read()
    check(len(data) >= 24, f"{path}: no pcap header")
    out, off = [], 24
    while off + 16 <= len(data):
        sec, nsec, incl, _ = struct.unpack_from("<IIII", data, off)
        out.append((sec * 10**9 + nsec, data[off + 16:off + 16 + incl]))
        off += 16 + incl
    return out


def curl(env, ag, srv, path, out):
    c = certs()
    p = env.captured("curl", ag.sock, [need_tool("curl"), "-sS", "--cacert", c["cert"],
                                      "--resolve", f"localhost:{srv.port}:127.0.0.1",
                                      f"https://localhost:{srv.port}{path}", "-o", out])
    return p


def agent_sent(ag_stderr):
    t = stat_line(ag_stderr, "tunnel ")
    check(t is not None, f"agent printed no 'tunnel' stats line: {short(ag_stderr, 600)}")
    return t


# ---------------------------------------------------------------- tests

@timeout(90)
def test_tunnel_byte_exact(env):
    """agent -t -> collector -C -w over mutual TLS 1.3 (certificates from `tlsmirror pki`):
    the collector's pcap holds exactly the agent's packets (same bytes, same timestamps)
    and tshark finds the server's bytes in it."""
    d, _ = pki(env)
    port = free_port()
    col = collector(env, d, port)
    ag = tunnel_agent(env, d, port)
    wait_connected(env, ag)
    body = gen_bytes(300000, 2101)
    with open(env.path("body.bin"), "wb") as f:
        f.write(body)
    srv = RecServer(env, body=env.path("body.bin"))
    p = curl(env, ag, srv, "/body", env.path("got.bin"))
    check(p.wait(60) == 0, f"curl failed: {short(p.err())}")
    conns = srv.conns(1)
    ag.final_stats()
    mine = pcap_records(ag.pcap)
    wait_collected(col, "agent1", int(agent_sent(ag.stderr_text)["sent_events"]))
    col.final_stats()
    check("over TLS 1.3" in col.stderr_text and "agent1" in col.stderr_text,
          f"collector log does not name the TLS agent: {short(col.stderr_text, 600)}")
    # both ends prefer AES-128-GCM (the cheapest suite per byte with AES-NI) and say so
    for who, text in (("agent", ag.stderr_text), ("collector", col.stderr_text)):
        check("TLS_AES_128_GCM_SHA256" in text,
              f"{who} log does not name the tunnel's cipher AES-128-GCM: {short(text, 600)}")
    theirs = pcap_records(col.pcap)
    check(len(mine) > 200 and mine == theirs,
          f"collector pcap ({len(theirs)} packets) differs from the agent's ({len(mine)})")
    cap = judge(col.pcap)
    check_against_server(cap, conns)


@timeout(90)
def test_tunnel_zstd(env):
    """--compress zstd: compressible clear text crosses the tunnel in fewer wire bytes and
    arrives byte-exact."""
    compressed(env, "zstd")


@timeout(90)
def test_tunnel_lz4(env):
    """--compress lz4: the same with LZ4 blocks."""
    compressed(env, "lz4")


def compressed(env, algo):
    d, _ = pki(env)
    port = free_port()
    col = collector(env, d, port)
    ag = tunnel_agent(env, d, port, extra=["--compress", algo])
    wait_connected(env, ag)
    body = (b"GET /index.html HTTP/1.1 tlsmirror compressible line of text\n" * 8000)
    with open(env.path("body.bin"), "wb") as f:
        f.write(body)
    srv = RecServer(env, body=env.path("body.bin"))
    p = curl(env, ag, srv, "/body", env.path("got.bin"))
    check(p.wait(60) == 0, f"curl failed: {short(p.err())}")
    conns = srv.conns(1)

    def settled():
        _, _, raw = ag.stats()
        t = stat_line(raw, "tunnel ")
        return t if t and int(t["buffered_bytes"]) == 0 and int(t["sent_events"]) > 0 else None
    t = wait_until(settled, 15, "the agent to send everything")
    check(int(t["wire_bytes"]) * 3 < int(t["sent_bytes"]),
          f"{algo} did not shrink the tunnel: wire {t['wire_bytes']} for {t['sent_bytes']} bytes")
    ag.final_stats()
    mine = pcap_records(ag.pcap)
    wait_collected(col, "agent1", int(agent_sent(ag.stderr_text)["sent_events"]))
    col.final_stats()
    check(pcap_records(col.pcap) == mine, f"collector pcap differs from the agent's under {algo}")
    check(t["compress"] == algo, f"agent stats: {t}")
    check_against_server(judge(col.pcap), conns)


@timeout(120)
def test_two_agents_vlan(env):
    """Two agents into one collector at once with --tag-agents vlan: each agent's packets
    keep their own addresses and carry that agent's VLAN id (tshark vlan.id)."""
    d, _ = pki(env)
    port = free_port()
    col = collector(env, d, port, extra=["--tag-agents", "vlan"])
    ags = [tunnel_agent(env, d, port, name=n) for n in ("agent1", "agent2")]
    for ag in ags:
        wait_connected(env, ag)
    srv = RecServer(env)
    procs = [curl(env, ag, srv, f"/size/{100000 + i * 7}", env.path(f"o{i}.bin"))
             for i, ag in enumerate(ags) for _ in range(2)]
    for p in procs:
        check(p.wait(60) == 0, f"curl failed: {short(p.err())}")
    srv.conns(4)
    mine = {}
    for ag in ags:
        ag.final_stats()
        mine[ag.name] = pcap_records(ag.pcap)
    for ag in ags:
        wait_collected(col, ag.name, int(agent_sent(ag.stderr_text)["sent_events"]))
    _, _, raw = col.stats()
    vlans = {}
    for line in raw.splitlines():
        if line.startswith("collector_agent "):
            kv = dict(x.split("=", 1) for x in line.split()[1:])
            vlans[kv["name"]] = int(kv["vlan"])
    col.final_stats()
    check(sorted(vlans) == ["agent1", "agent2"] and vlans["agent1"] != vlans["agent2"],
          f"collector stats per agent: {vlans}")
    got = {}
    for ts, fr in pcap_records(col.pcap):
        check(fr[12:14] == b"\x81\x00", f"collector frame without an 802.1Q tag: {fr[:20].hex()}")
        vid = struct.unpack(">H", fr[14:16])[0] & 0xfff
        got.setdefault(vid, []).append((ts, fr[:12] + fr[16:]))
    for name, vid in vlans.items():
        check(got.get(vid) == mine[name], f"VLAN {vid}: collector frames differ from {name}'s "
              f"own pcap ({len(got.get(vid, []))} vs {len(mine[name])})")
    rows = tshark_fields(col.pcap, ["vlan.id", "tcp.srcport", "tcp.dstport"])
    ids = {int(r[0]) for r in rows if r[0]}
    check(ids == set(vlans.values()), f"tshark sees vlan ids {ids}, want {set(vlans.values())}")


def tls_client(d, name, port):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(f"{d}/ca.pem")
    if name:
        ctx.load_cert_chain(f"{d}/{name}.pem", f"{d}/{name}.key")
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    return ctx.wrap_socket(s, server_hostname="127.0.0.1")


def frame(ftype, payload, length=None, flags=0, version=2):
    n = len(payload) if length is None else length
    return struct.pack(">IBBBBII", 0x544d544e, version, ftype, flags, 0, n, n) + payload


def hello(name, version=2):
    return frame(1, struct.pack(">HB", version, len(name)) + name + b"\x00", version=version)


@timeout(90)
def test_bad_peers(env):
    """Unauthenticated peers (no certificate, another CA's certificate), plaintext garbage,
    an authenticated peer sending garbage, an oversized frame, a truncated frame, and one
    that stalls in the handshake: each is rejected with a log line naming the peer and the
    reason, the collector survives, and nothing reaches its pcap."""
    d, other = pki(env)
    port = free_port()
    col = collector(env, d, port)
    stall = socket.create_connection(("127.0.0.1", port))
    t_stall = time.time()
    # 1. no client certificate; 2. a certificate of another CA
    for cd, name in ((d, None), (other, "rogue")):
        try:
            s = tls_client(cd if name else d, name, port)
            s.sendall(hello(b"x"))
            s.recv(10)
            s.close()
        except (OSError, ssl.SSLError):
            pass
    # 3. plaintext garbage
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.sendall(b"GET / HTTP/1.0\r\n\r\n" * 10)
        try:
            s.recv(10)
        except OSError:
            pass
    # 4..7: authenticated, then bad frames
    bad = [b"\x00" * 64,                                           # garbage
           hello(b"agent1") + frame(5, b"", length=64 << 20),      # oversized
           hello(b"agent1") + frame(5, b"\x00\x00\x00\x01" + b"\x00" * 30, length=1000),  # truncated
           frame(5, b"\x00\x00\x00\x01" + b"\x00" * 60)]           # events before HELLO
    for payload in bad:
        s = tls_client(d, "agent1", port)
        s.sendall(payload)
        s.close()
    wait_until(lambda: b"handshake timed out" in col.proc.err(), 12,
               "the collector to drop the stalled peer")
    check(time.time() - t_stall < 11, "stalled peer held longer than the handshake timeout")
    stall.close()
    check(col.proc.alive(), f"collector died: {short(col.proc.err())}")
    _, _, raw = col.stats()
    c = stat_line(raw, "collector ")
    col.final_stats()
    log = col.stderr_text
    for why in ("no client certificate|certificate required|peer did not return",
                "unknown ca|certificate verify failed|unable to get",
                "bad magic|wrong version|http request|packet length",
                "oversized frame", "truncated frame", "first frame is not HELLO",
                "handshake timed out"):
        check(re.search(why, log, re.I), f"no log line matching {why!r}: {short(log, 1500)}")
    check(int(c["rejected"]) >= 3 and int(c["bad_frames"]) >= 4,
          f"collector counters: {c}")
    check(pcap_records(col.pcap) == [], "the collector wrote packets from bad peers")


NGINX_CONF = nginx_conf(1, """    server {{
        listen 127.0.0.1:{port} ssl;
        ssl_certificate {cert};
        ssl_certificate_key {key};
        root {prefix}/html;
    }}
""")


def h2load(env, port, n, name):
    argv = [need_tool("h2load"), "--h1", "-n", str(n), "-c", "4", "-H", ":authority: localhost",
            f"https://127.0.0.1:{port}/1k"]
    return env.spawn(name, argv)


def h2load_ok(p, n):
    rc = p.wait(120)
    text = p.out().decode("utf-8", "replace")
    m = re.search(r"(\d+) succeeded, (\d+) failed", text)
    check(rc == 0 and m and int(m.group(1)) == n and int(m.group(2)) == 0,
          f"h2load: rc {rc}: {short(text, 600)}")


@timeout(150)
def test_collector_restart(env):
    """nginx under capture serves h2load while the collector is killed (SIGKILL) and started
    again: every request succeeds, the agent reconnects, mirroring resumes (the new
    collector receives the later load whole) and the agent's counters show the outage."""
    d, _ = pki(env)
    port = free_port()
    col = collector(env, d, port, name="collector1")
    ag = tunnel_agent(env, d, port)
    wait_connected(env, ag)
    prefix = env.path("nginx")
    os.makedirs(os.path.join(prefix, "html"))
    os.makedirs(os.path.join(prefix, "tmp"))
    with open(os.path.join(prefix, "html", "1k"), "wb") as f:
        f.write(gen_bytes(1024, 2104))
    nport = free_port()
    c = certs()
    conf = os.path.join(prefix, "nginx.conf")
    with open(conf, "w") as f:
        f.write(NGINX_CONF.format(prefix=prefix, port=nport, cert=c["cert"], key=c["key"]))
    ngx = env.captured("nginx", ag.sock, [need_tool("nginx"), "-p", prefix, "-e",
                                          os.path.join(prefix, "error.log"), "-c", conf,
                                          "-g", "daemon off;"])
    wait_until(lambda: os.path.exists(os.path.join(prefix, "nginx.pid")) or not ngx.alive(),
               15, "nginx to start")
    check(ngx.alive(), f"nginx exited: {short(ngx.err())}")
    time.sleep(0.3)
    load = h2load(env, nport, 20000, "h2load-1")
    time.sleep(0.5)
    col.proc.signal(signal.SIGKILL)
    col.proc.wait(10)
    time.sleep(1.5)
    _, _, raw = ag.stats()
    down = stat_line(raw, "tunnel ")
    check(down["state"] == "disconnected", f"agent still reports connected: {down}")
    col2 = Agent(env, name="collector2", pcap=env.path("collector2.pcap"),
                 args=["-C", "-l", f"127.0.0.1:{port}"] + tls_args(d, "coll")).start()
    h2load_ok(load, 20000)
    t = wait_until(lambda: (lambda s: s if int(s["connects"]) >= 2 and s["state"] == "connected"
                            else None)(stat_line(ag.stats()[2], "tunnel ")), 20,
                   "the agent to reconnect")
    # mirroring resumes: a second round reaches the new collector whole
    wait_until(lambda: int(stat_line(ag.stats()[2], "tunnel ")["buffered_bytes"]) == 0, 20,
               "the agent's buffer to drain")
    before = int(stat_line(ag.stats()[2], "tunnel ")["sent_events"])
    load2 = h2load(env, nport, 200, "h2load-2")
    h2load_ok(load2, 200)
    ngx.signal(signal.SIGQUIT)
    ngx.wait(20)
    _, _, raw = ag.stats()
    t = wait_until(lambda: (lambda s: s if int(s["buffered_bytes"]) == 0 else None)(
        stat_line(ag.stats()[2], "tunnel ")), 20, "the agent's buffer to drain")
    after = int(t["sent_events"])
    check(after > before, f"nothing sent after the restart: {t}")
    wait_collected(col2, "agent1", 1)
    ag.final_stats()
    final = agent_sent(ag.stderr_text)
    time.sleep(0.5)
    col2.final_stats()
    a2 = stat_line(col2.stderr_text, "collector_agent ")
    check(int(a2["events"]) >= after - before,
          f"collector2 got {a2['events']} events, the agent sent {after - before} after "
          f"reconnecting")
    check(int(final["connects"]) >= 2, f"agent stats: {final}")
    # the new collector's capture parses; its streams are mirrored from real sockets
    rows = tshark_fields(env.path("collector2.pcap"), ["tcp.srcport"])
    check(len(rows) >= after - before, f"collector2.pcap holds {len(rows)} packets")


@timeout(60)
def test_plaintext_and_config_errors(env):
    """Without certificates both ends refuse to start and say what to give, so does -t
    without a port; with
    --insecure-plaintext-tunnel on both ends packets flow, and both ends warn loudly."""
    port = free_port()
    rc, _, err = env.run("nocert-agent", [TLSMIRROR, "--socket", env.path("n1.sock"),
                                          "-t", f"127.0.0.1:{port}"], timeout_s=20)
    check(rc == 1 and b"--cert, --key and --ca" in err and b"tlsmirror pki" in err,
          f"agent without certificates: exit {rc}, stderr {short(err)}")
    rc, _, err = env.run("nocert-col", [TLSMIRROR, "--socket", env.path("n2.sock"), "-C", "-l",
                                        f"127.0.0.1:{port}", "-w", env.path("n.pcap")],
                         timeout_s=20)
    check(rc == 1 and b"--cert, --key and --ca" in err,
          f"collector without certificates: exit {rc}, stderr {short(err)}")
    rc, _, err = env.run("badaddr", [TLSMIRROR, "--socket", env.path("n3.sock"), "-t",
                                     "collector-without-port", "--insecure-plaintext-tunnel"],
                         timeout_s=20)
    check(rc == 2 and b"HOST:PORT" in err, f"-t without a port: exit {rc}, stderr {short(err)}")
    col = Agent(env, name="collector", args=["-C", "-l", f"127.0.0.1:{port}",
                                             "--insecure-plaintext-tunnel"]).start()
    ag = Agent(env, name="agent1", args=["-t", f"127.0.0.1:{port}",
                                         "--insecure-plaintext-tunnel"]).start()
    t = wait_connected(env, ag)
    check(t["tls"] == "NO", f"plaintext tunnel stats: {t}")
    srv = RecServer(env)
    p = curl(env, ag, srv, "/size/50000", env.path("o.bin"))
    check(p.wait(60) == 0, f"curl failed: {short(p.err())}")
    srv.conns(1)
    ag.final_stats()
    mine = pcap_records(ag.pcap)
    c = stat_line(col.stats()[2], "collector ")
    check(c["tls"] == "NO", f"plaintext collector stats: {c}")
    name = stat_line(col.stats()[2], "collector_agent ")["name"]
    wait_collected(col, name, int(agent_sent(ag.stderr_text)["sent_events"]))
    col.final_stats()
    check(pcap_records(col.pcap) == mine, "plaintext: collector pcap differs from the agent's")
    for who, text in (("agent", ag.stderr_text), ("collector", col.stderr_text)):
        check("INSECURE" in text and "UNENCRYPTED" in text,
              f"{who} did not warn about the plaintext tunnel: {short(text, 600)}")


@timeout(90)
def test_stalled_collector(env):
    """A 'collector' that accepts and never reads: curl under capture still gets its
    20 MB at once, the tunnel buffers up to --queue-size (1M here) and counts the rest
    as dropped, and the agent still exits promptly on SIGTERM (the tunnel thread gets
    5 s, then its connection is shut down)."""
    lsock = socket.socket()
    lsock.bind(("127.0.0.1", 0))
    lsock.listen(8)
    port = lsock.getsockname()[1]
    ag = Agent(env, args=["-t", f"127.0.0.1:{port}", "--insecure-plaintext-tunnel",
                          "--queue-size", "1M"]).start()
    held = []
    lsock.settimeout(10)
    held.append(lsock.accept()[0])   # accepted, never read
    body = gen_bytes(20 << 20, 2107)
    with open(env.path("body.bin"), "wb") as f:
        f.write(body)
    srv = RecServer(env, body=env.path("body.bin"))
    t0 = time.time()
    p = curl(env, ag, srv, "/body", env.path("got.bin"))
    check(p.wait(60) == 0, f"curl failed: {short(p.err())}")
    took = time.time() - t0
    with open(env.path("got.bin"), "rb") as f:
        check(f.read() == body, "curl's download differs")
    srv.conns(1)
    t = stat_line(ag.stats()[2], "tunnel ")
    check(int(t["dropped_events"]) > 0 and int(t["buffered_bytes"]) <= 2 << 20,
          f"a stalled collector: the agent should buffer at most --queue-size and drop: {t}")
    t_stop = time.time()
    ag.final_stats()
    check(time.time() - t_stop < 10, f"agent took {time.time() - t_stop:.1f}s to exit")
    check(took < 30, f"curl took {took:.1f}s with a stalled collector")
    for s in held:
        s.close()
    lsock.close()


# ---------------------------------------------------------------- connection events (wire version 2)

def sent_events(ag):
    return int(agent_sent(ag.stderr_text)["sent_events"])


def tcp_rows(path, display_filter=None):
    """Sorted (ports, seq, ack, flags, len, checksum) of every TCP segment: the checksum covers
    the payload, so equal rows are equal segments."""
    rows = tshark_fields(path, ["tcp.srcport", "tcp.dstport", "tcp.seq_raw", "tcp.ack_raw",
                                "tcp.flags", "tcp.len", "tcp.checksum"], display_filter)
    return sorted(tuple(r) for r in rows)


@timeout(150)
def test_two_agents_pcapng_metadata(env):
    """Two agents into one collector writing pcapng: each agent is its own Interface
    Description (frame.interface_name = the agent's identity), and the first packet of each
    connection carries the metadata the agent saw (curl and Python on agent1, nginx on agent2:
    process, pid, side, SNI, ALPN, TLS version, host = the agent). The collector synthesizes
    the same segments each agent writes itself (ports, sequence numbers, checksums), judged
    byte-exact, checksums valid, no TCP analysis flags."""
    from test_25_pcapng import (PY_CLIENT, check_file, comments, curl_argv, first_only,
                                nginx, run_ok, want)
    d, _ = pki(env)
    port = free_port()
    col = Agent(env, name="collector", pcap=env.path("col.pcapng"),
                args=["-C", "-l", f"127.0.0.1:{port}"] + tls_args(d, "coll")).start()
    a1, a2 = (tunnel_agent(env, d, port, name=n) for n in ("agent1", "agent2"))
    for ag in (a1, a2):
        wait_connected(env, ag)
    body = gen_bytes(150000, 2111)
    plain_port, _ = nginx(env, "nginx-plain", body)
    cap_port, worker = nginx(env, "nginx-cap", body, sock=a2.sock)
    cu = env.captured("curl", a1.sock, curl_argv(plain_port, env.path("curl.out"), http2=False))
    run_ok(cu, "curl under capture (agent1)")
    py = env.captured("python", a1.sock, [PYTHON, "-c", PY_CLIENT, str(plain_port),
                                          env.path("py.out"), certs()["cert"]])
    run_ok(py, "python ssl client under capture (agent1)")
    pc = env.spawn("curl-plain", curl_argv(cap_port, env.path("curl-plain.out")))
    run_ok(pc, "curl against nginx under capture (agent2)")
    for what, path, http in (("curl", "curl.out", False), ("python", "py.out", True),
                             ("curl to nginx", "curl-plain.out", False)):
        check_file(what + "'s download", env.path(path), body, http)
    for ag in (a1, a2):
        ag.final_stats()
    for ag in (a1, a2):
        wait_collected(col, ag.name, sent_events(ag))
    col.final_stats()
    path = col.pcap
    cap = judge(path)
    check(len(cap.streams) == 3, f"3 connections at the collector: {cap.describe()}")
    streams = {s.idx: s for s in cap.streams}
    ifname = {}
    for num, stream, name in tshark_fields(path, ["frame.number", "tcp.stream",
                                                  "frame.interface_name"]):
        ifname.setdefault(int(stream), set()).add(name)
    got = {}
    for st, fields in first_only(comments(path)).items():
        check(ifname[st] == {fields.get("host")},
              f"stream {st}: interface {ifname[st]}, comment host {fields.get('host')}")
        got.setdefault(fields.get("process"), []).append((streams[st], fields))
    check(sorted(got) == sorted(["curl", os.path.basename(PYTHON)[:15], "nginx"]),
          f"processes in the comments: {sorted(got)}")
    (c_st, c), = got["curl"]
    want(c, process="curl", pid=cu.pid, side="client", sni="localhost", alpn="http/1.1",
         tls="TLSv1.3", source="capture", host="agent1")
    (p_st, p), = got[os.path.basename(PYTHON)[:15]]
    want(p, pid=py.pid, side="client", alpn="http/1.1", tls="TLSv1.2", host="agent1")
    (n_st, n), = got["nginx"]
    want(n, pid=worker, side="server", sni="localhost", alpn="h2", tls="TLSv1.3", host="agent2")
    check(c_st.bytes(1).endswith(body) and p_st.bytes(1).endswith(body),
          "the clients' streams at the collector do not end with the body")
    names = {r[0] for r in tshark_fields(path, ["frame.interface_name"])}
    check(names == {"agent1", "agent2"}, f"interface names {names}")
    # the collector shows each agent's segments exactly as the agent shows them itself
    for ag in (a1, a2):
        check(tcp_rows(ag.pcap) == tcp_rows(path, f'frame.interface_name == "{ag.name}"'),
              f"{ag.name}: the collector's segments differ from the agent's own capture")


@timeout(150)
def test_h2_to_h1_at_the_collector(env):
    """The agent does not convert HTTP/2 (its own pcap holds HTTP/2 frames); the collector
    runs --h2-to-h1 on the events it receives: tshark sees HTTP/1.1 requests and responses,
    each stream its own connection, the response body byte-exact, checksums valid."""
    from test_25_pcapng import check_file, curl_argv, nginx, run_ok
    d, _ = pki(env)
    port = free_port()
    col = collector(env, d, port, extra=["--h2-to-h1"])
    ag = tunnel_agent(env, d, port)
    wait_connected(env, ag)
    body = gen_bytes(120000, 2112)
    nport, _ = nginx(env, "nginx-plain", body)
    for i in range(2):
        cu = env.captured(f"curl{i}", ag.sock, curl_argv(nport, env.path(f"c{i}.out")))
        run_ok(cu, "curl --http2 under capture")
        check_file("curl's download", env.path(f"c{i}.out"), body)
    ag.final_stats()
    wait_collected(col, "agent1", sent_events(ag))
    _, _, raw = col.stats()
    col.final_stats()
    check(not tshark_fields(ag.pcap, ["frame.number"], display_filter="http.request"),
          "the agent converted (HTTP/1.1 in its own capture)")
    rows = tshark_fields(ag.pcap, ["http2.type"], display_filter="http2",
                         extra=["-d", f"tcp.port=={nport},http2"])
    check(rows, "the agent's own capture holds no HTTP/2")
    cap = judge(col.pcap)
    syn = cap.syn_streams()
    check(len(syn) == 2, f"two streams as two HTTP/1.1 connections: {cap.describe()}")
    rows = tshark_fields(col.pcap, ["http.request.method", "http.request.uri",
                                    "http.request.version"], display_filter="http.request")
    check(sorted(rows) == [["GET", "/body", "HTTP/1.1"]] * 2, f"tshark's requests: {rows}")
    resp = tshark_fields(col.pcap, ["http.response.version", "http.response.code"],
                         display_filter="http.response")
    check(resp == [["HTTP/1.1", "200"]] * 2, f"tshark's responses: {resp}")
    for st in syn:
        check(st.bytes(1).endswith(body), f"{st.name()}: the response does not end with the body")
    h2 = stat_line(raw, "stage name=http")
    check(h2 is not None, f"no h2 stage at the collector: {short(raw, 800)}")


@timeout(60)
def test_old_agent_gets_a_clear_error(env):
    """A version-1 agent (HELLO and PACKETS frames of the old format, made here) into this
    collector: the collector logs that the agent speaks version 1 and must be upgraded, closes
    the connection cleanly, counts a bad frame, stays up, and writes nothing."""
    d, _ = pki(env)
    port = free_port()
    col = collector(env, d, port)
    eth = bytes(range(12)) + b"\x08\x00" + b"E" * 60
    v1 = (hello(b"agent1", version=1) +
          frame(2, struct.pack(">IQI", 1, 1, len(eth)) + eth, version=1))
    s = tls_client(d, "agent1", port)
    s.sendall(v1)
    s.settimeout(10)
    try:
        got = s.recv(100)
    except (OSError, ssl.SSLError):
        got = b""
    s.close()
    check(got == b"", f"the collector answered an old agent with {got!r}")
    wait_until(lambda: b"version 1" in col.proc.err(), 10, "the collector's log line")
    check(col.proc.alive(), f"collector died: {short(col.proc.err())}")
    c = stat_line(col.stats()[2], "collector ")
    col.final_stats()
    check(re.search(r"agent1 \(127\.0\.0\.1:\d+\): bad input, closing: tunnel protocol version 1 "
                    r"\(an older agent.*upgrade the agent", col.stderr_text),
          f"no clear log line about the old agent: {short(col.stderr_text, 800)}")
    check(int(c["bad_frames"]) == 1, f"collector counters: {c}")
    check(pcap_records(col.pcap) == [], "the collector wrote packets from an old agent")


# A Python ssl client of the echo server: N connections at once, one message each per phase;
# between phases it waits for the file DIR/go<phase> and it announces DIR/done<phase>.
PY_PHASES = r"""
import os, socket, ssl, sys, time
port, d, ca, n, phases = int(sys.argv[1]), sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
ctx = ssl.create_default_context(cafile=ca)
conns = [ctx.wrap_socket(socket.create_connection(("127.0.0.1", port)),
                         server_hostname="localhost") for _ in range(n)]
def wait(name):
    while not os.path.exists(os.path.join(d, name)):
        time.sleep(0.05)
for ph in range(phases):
    if ph:
        wait("go%d" % ph)
    for i, t in enumerate(conns):
        msg = bytes([65 + ph]) * (3000 + 7 * i)
        t.sendall(b"LEN %d\n" % len(msg) + msg)
        want = b"ECHO %d\n" % len(msg) + msg[::-1]
        got = b""
        while len(got) < len(want):
            b = t.recv(65536)
            if not b:
                sys.exit("closed early")
            got += b
        if got != want:
            sys.exit("echo differs")
    open(os.path.join(d, "done%d" % ph), "w").close()
wait("go%d" % phases)
for t in conns:
    t.close()
"""


def phases_client(env, ag, srv, n, phases):
    d = env.path("phases")
    os.makedirs(d, exist_ok=True)
    p = env.captured("python", ag.sock, [PYTHON, "-c", PY_PHASES, str(srv.port), d,
                                         certs()["cert"], str(n), str(phases)])
    return p, d


def phase_wait(p, d, ph):
    def done():
        check(p.alive(), f"the client exited: {short(p.err())}")
        return os.path.exists(os.path.join(d, f"done{ph}"))
    wait_until(done, 30, f"the client's phase {ph}")


def phase_go(d, ph):
    open(os.path.join(d, f"go{ph}"), "w").close()


def col_agent(col):
    return stat_line(col.stats()[2], "collector_agent ") or {}


def live_sent(ag):
    return int(stat_line(ag.stats()[2], "tunnel ")["sent_events"])


@timeout(120)
def test_reconnect_reopens_midstream(env):
    """A connection open across a collector restart (SIGKILL): after reconnecting, the agent
    announces it again as a mid-stream OPEN, and the new collector continues it: its capture
    holds one connection carrying exactly the second exchange. Then the agent dies (SIGKILL):
    the collector ends the agent's connections with a FIN exchange (judge: handshake, data
    acknowledged, FIN both ways, checksums)."""
    d, _ = pki(env)
    port = free_port()
    col1 = collector(env, d, port, name="collector1")
    ag = tunnel_agent(env, d, port)
    wait_connected(env, ag)
    srv = RecServer(env, mode="echo")
    p, pd = phases_client(env, ag, srv, 1, 2)
    phase_wait(p, pd, 0)
    wait_until(lambda: int(col_agent(col1).get("events", 0)) >= live_sent(ag) > 0, 20,
               "collector1 to receive the first exchange")
    col1.proc.signal(signal.SIGKILL)
    col1.proc.wait(10)
    wait_until(lambda: stat_line(ag.stats()[2], "tunnel ")["state"] == "disconnected", 15,
               "the agent to notice")
    col2 = Agent(env, name="collector2", pcap=env.path("collector2.pcap"),
                 args=["-C", "-l", f"127.0.0.1:{port}"] + tls_args(d, "coll")).start()
    t = wait_until(lambda: (lambda s: s if s["state"] == "connected" and int(s["reopened"]) >= 1
                            else None)(stat_line(ag.stats()[2], "tunnel ")), 20,
                   "the agent to reconnect and announce its open connection")
    check(int(t["live_conns"]) == 1, f"agent tunnel stats: {t}")
    phase_go(pd, 1)
    phase_wait(p, pd, 1)
    wait_until(lambda: int(col_agent(col2).get("events", 0)) >= 2 and
               int(col_agent(col2).get("bytes", 0)) >= 2 * (3000 + 7), 20,
               "collector2 to receive the second exchange")
    ag.proc.signal(signal.SIGKILL)
    ag.proc.wait(10)
    wait_until(lambda: b"agent1" in col2.proc.err() and b"disconnected" in col2.proc.err(), 15,
               "collector2 to see the agent go")
    phase_go(pd, 2)
    check(p.wait(30) == 0, f"the client failed: {short(p.err())}")
    a2 = col_agent(col2)
    col2.final_stats()
    check(int(a2["conns"]) == 1 and int(a2["open_conns"]) == 0 and int(a2["orphan_events"]) == 0,
          f"collector2's counters for the agent: {a2}")
    cap = judge(col2.pcap)
    check(len(cap.streams) == 1, f"one connection at collector2: {cap.describe()}")
    st = cap.streams[0]
    msg = b"B" * 3000
    check(st.bytes(0) == b"LEN 3000\n" + msg and st.bytes(1) == b"ECHO 3000\n" + msg[::-1],
          f"collector2's stream is not exactly the second exchange: "
          f"{len(st.bytes(0))}/{len(st.bytes(1))} bytes")
    (conn,) = srv.conns(1)
    check(st.client == ("127.0.0.1", conn.peer_port) and st.server[1] == srv.port,
          f"stream {st.name()} is not the client's connection")


@timeout(90)
def test_collector_caps_each_peer(env):
    """--max-conns-per-proc at a collector caps each agent's connections: of two connections
    open at once, the second is refused and counted (refused_conns, orphan_events), the first
    reaches the capture whole."""
    d, _ = pki(env)
    port = free_port()
    col = collector(env, d, port, extra=["--max-conns-per-proc", "1"])
    ag = tunnel_agent(env, d, port)
    wait_connected(env, ag)
    srv = RecServer(env, mode="echo")
    p, pd = phases_client(env, ag, srv, 2, 1)
    phase_wait(p, pd, 0)
    phase_go(pd, 1)
    check(p.wait(30) == 0, f"the client failed: {short(p.err())}")
    conns = srv.conns(2)
    ag.final_stats()
    wait_collected(col, "agent1", sent_events(ag))
    a = col_agent(col)
    col.final_stats()
    check(int(a["conns"]) == 1 and int(a["refused_conns"]) == 1 and int(a["orphan_events"]) > 0,
          f"collector counters for the agent: {a}")
    check("cap --max-conns-per-proc 1" in col.stderr_text and "agent agent1" in col.stderr_text,
          f"the collector did not log the cap: {short(col.stderr_text, 800)}")
    cap = judge(col.pcap)
    check(len(cap.streams) == 1, f"one connection at the collector: {cap.describe()}")
    st = cap.streams[0]
    srv_conn = [c for c in conns if c.peer_port == st.client[1]]
    check(len(srv_conn) == 1 and st.bytes(0) == srv_conn[0].c2s and st.bytes(1) == srv_conn[0].s2c,
          "the admitted connection is not byte-exact")


@timeout(120)
def test_unauthenticated_flood_does_not_lock_out_an_agent(env):
    """300 idle TCP connections to the collector (more than --max-peers 256, all from
    127.0.0.1, never a byte sent), held open: a certified agent connects within 3 s (the
    handshake timeout alone would take 5 s) and its connection is mirrored; the flood
    holds at most the per-address share of unauthenticated slots; stats -C answers."""
    d, _ = pki(env)
    port = free_port()
    col = collector(env, d, port)
    flood = []
    for _ in range(300):
        s = socket.create_connection(("127.0.0.1", port), timeout=5)
        flood.append(s)
    time.sleep(0.3)
    _, _, raw = col.stats()
    c = stat_line(raw, "collector ")
    check(c and int(c["peers"]) <= 32, f"the flood holds {c and c['peers']} peers, want at most "
          f"32 unauthenticated ones from one address: {raw}")
    t0 = time.monotonic()
    ag = tunnel_agent(env, d, port)
    wait_connected(env, ag)
    dt = time.monotonic() - t0
    check(dt < 3, f"the agent got through the flood after {dt:.1f} s")
    srv = RecServer(env)
    p = curl(env, ag, srv, "/size/20000", env.path("got.bin"))
    check(p.wait(60) == 0, f"curl failed: {short(p.err())}")
    srv.conns(1)
    ag.final_stats()
    wait_collected(col, "agent1", int(agent_sent(ag.stderr_text)["sent_events"]))
    _, _, raw = col.stats()
    c = stat_line(raw, "collector ")
    check(int(c.get("unauth_evicted", 0)) >= 268, f"want the flood's oldest connections "
          f"evicted (unauth_evicted): {raw}")
    for s in flood:
        s.close()
    col.final_stats()


@timeout(90)
def test_collector_clamps_an_agents_clock(env):
    """An agent whose clock runs a day ahead (faketime +1d): its events reach the collector
    stamped ~23 h in the future (the agent's own window is 1 h behind its clock). The
    collector keeps every packet within 1 h before and 10 s after its own clock, counts the
    events it moved (clamped_ts on the agent's collector_agent line), logs it once, and the
    clear text is still byte-exact."""
    need_tool("faketime")  # the package; its library is preloaded into the agent directly
    ft = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1"
    d, _ = pki(env)
    port = free_port()
    col = collector(env, d, port)
    asan = os.environ.get("ASAN_OPTIONS", "")
    prefix = ["env", f"ASAN_OPTIONS={asan + ':' if asan else ''}verify_asan_link_order=0",
              f"LD_PRELOAD={ft}", "FAKETIME=+1d"]
    ag = Agent(env, name="agent1", prefix=prefix,
               args=["-t", f"127.0.0.1:{port}"] + tls_args(d, "agent1")).start()
    wait_connected(env, ag)
    t0 = time.time()
    srv = RecServer(env)
    p = curl(env, ag, srv, "/size/50000", env.path("got.bin"))
    check(p.wait(60) == 0, f"curl failed: {short(p.err())}")
    conns = srv.conns(1)
    ag.final_stats()
    wait_collected(col, "agent1", int(agent_sent(ag.stderr_text)["sent_events"]))
    _, _, raw = col.stats()
    a = stat_line(raw, "collector_agent ")
    check(a is not None and int(a.get("clamped_ts", 0)) >= 3,
          f"want the agent's events counted as clamped_ts (OPEN, DATA, CLOSE at least): {raw}")
    col.final_stats()
    t1 = time.time()
    recs = pcap_records(col.pcap)
    check(len(recs) > 10, f"collector pcap has {len(recs)} packets")
    lo, hi = (t0 - 3600 - 2) * 1e9, (t1 + 10 + 1) * 1e9
    bad = [i for i, (ts, _) in enumerate(recs) if not lo <= ts <= hi]
    check(not bad, f"packets {bad[:10]} outside 1 h before .. 10 s after the collector's clock")
    check(col.stderr_text.count("counted as clamped_ts") == 1,
          f"want one warning naming the agent: {short(col.stderr_text, 800)}")
    check_against_server(judge(col.pcap), conns)


@timeout(60)
def test_collector_clamps_forged_timestamps(env):
    """An authenticated agent sends events stamped 1970 and 1 day ahead (DATA and CLOSE of
    a connection it never opened): the collector counts each as clamped_ts (per agent
    identity, once logged) besides orphan_events, and survives."""
    d, _ = pki(env)
    port = free_port()
    col = collector(env, d, port)
    now = time.time_ns()
    evs = [struct.pack(">BQQBQI", 2, 7, 5, 0, 0, 4) + b"abcd",           # DATA, 1970
           struct.pack(">BQQB", 4, 7, now + 86400 * 10**9, 0)]           # CLOSE, 1 day ahead
    s = tls_client(d, "agent1", port)
    s.sendall(hello(b"agent1") + frame(5, struct.pack(">I", len(evs)) + b"".join(evs)))
    wait_until(lambda: b"counted as clamped_ts" in col.proc.err(), 10,
               "the collector to log a clamped timestamp")
    _, _, raw = col.stats()
    a = stat_line(raw, "collector_agent ")
    s.close()
    check(col.proc.alive(), f"collector died: {short(col.proc.err())}")
    col.final_stats()
    check(int(a["clamped_ts"]) == 2 and int(a["orphan_events"]) == 2, f"collector_agent: {a}")
    check(col.stderr_text.count("counted as clamped_ts") == 1,
          f"want one warning per agent: {short(col.stderr_text, 800)}")
