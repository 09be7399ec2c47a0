# Integration test 33: tlsmirror decrypt: ciphertext dumpcap recorded on loopback while real programs (s_client/s_server, curl, Python ssl, node, nginx h2) wrote their own NSS key logs becomes clear-text TCP, byte-exact against what they sent and got and against tshark's own decryption: TLS 1.2 and 1.3 suites, HRR, KeyUpdate, resumption, late keys, no keys, loss and reordering, bad input.
"""Every case records real ciphertext with dumpcap on lo (a UDP probe to a
socket of ours says when dumpcap records and when it has written everything;
classic pcap captures have the probes taken out, pcapng ones keep them as the
unrelated traffic a real capture has), then runs

    tlsmirror decrypt -r CIPHER --keys KEYLOG -w CLEAR

and judges CLEAR with tmlib.judge (checksums, handshake, ACKs, FINs, no TCP
anomaly, timestamps within the capture's) and byte for byte: per connection,
at its real 4-tuple, what the programs sent and received, and what tshark
itself decrypts from CIPHER with the same key log (follow,tls,yaml).

The command's counters are read from its stderr line starting with
`source decrypt` (STAT below names the counters this test relies on).
"""

import base64
import json
import os
import random
import re
import signal
import socket
import subprocess
import sys
import time

from tmlib import (HELPERS, PYTHON, TLSMIRROR, Fail, RecServer, certs, check, check_stream,
                   diff_msg, digits, feed, free_port, gen_bytes, have_ipv6, judge, need_build,
                   need_tool,
                   nginx_conf, parse_h1_messages, short, timeout, tshark_fields, wait_listening,
                   wait_until)

sys.path.insert(0, HELPERS)
import pcapedit  # noqa: E402

# the counters of the `source decrypt` stats line this test reads
STAT = dict(conns="tcp_conns", tls="tls_conns", decrypted="decrypted_conns", nokey="nokey_conns",
            clear="clear_bytes", gap="gap_bytes", bad="bad_records", auth="auth_failures",
            keybad="key_bad_lines", hrr="hrr", key_updates="key_updates")

SUITES12 = {"ECDHE-RSA-AES128-GCM-SHA256": 0xC02F, "AES256-GCM-SHA384": 0x009D,
            "ECDHE-RSA-CHACHA20-POLY1305": 0xCCA8, "ECDHE-RSA-AES128-SHA": 0xC013,
            "ECDHE-RSA-AES256-SHA384": 0xC028, "AES128-SHA256": 0x003C}
SUITES13 = {"TLS_AES_128_GCM_SHA256": 0x1301, "TLS_AES_256_GCM_SHA384": 0x1302,
            "TLS_CHACHA20_POLY1305_SHA256": 0x1303, "TLS_AES_128_CCM_SHA256": 0x1304,
            "TLS_AES_128_CCM_8_SHA256": 0x1305}
EXT_ETM, EXT_PSK, EXT_VERSIONS = 22, 41, 43


# ---------------------------------------------------------------- the wire

class CStream:
    """One TCP connection of the cipher capture: its real ends and its frames."""

    def __init__(self, idx, a, b):
        self.idx, self.client, self.server = idx, a, b
        self.pkts = []  # (frame number, Packet)

    def name(self):
        return f"{self.client[0]}:{self.client[1]} -> {self.server[0]}:{self.server[1]}"

    def side(self, p):
        return 0 if (p.tcp.src, p.tcp.sport) == self.client else 1

    def data_pkts(self, d):
        return [(n, p) for n, p in self.pkts if self.side(p) == d and p.tcp.payload_len]

    def holes(self, d):
        """Sequence ranges of direction d no packet of the capture carries."""
        isn = next((p.tcp.seq for _, p in self.pkts if p.tcp.flags & 0x02 and self.side(p) == d),
                   None)
        if isn is None:
            return []
        spans = sorted(((p.tcp.seq - isn - 1) & 0xFFFFFFFF, p.tcp.payload_len)
                       for _, p in self.data_pkts(d))
        out, pos = [], 0
        for off, n in spans:
            if off > pos:
                out.append((pos, off - pos))
            pos = max(pos, off + n)
        return out


class Cipher:
    """The cipher capture as the test reads it (pcapedit): TCP connections in
    tshark's tcp.stream order, frame numbers as tshark's."""

    def __init__(self, path):
        cap = pcapedit.read(path)
        self.path, self.fmt, self.pcap = path, cap.fmt, cap
        self.streams, by = [], {}
        ts = []
        for n, p in enumerate(cap.packets, 1):
            t = p.tcp
            if t is None:
                continue
            a, b = (t.src, t.sport), (t.dst, t.dport)
            k = (a, b) if a < b else (b, a)
            s = by.get(k)
            if s is None:
                s = by[k] = CStream(len(self.streams), a, b)
                self.streams.append(s)
            if t.flags & 0x12 == 0x02:
                s.client, s.server = a, b
            s.pkts.append((n, p))
            ts.append(p.ts)
        check(ts, f"the cipher capture {path} has no TCP packet")
        self.tmin, self.tmax = min(ts), max(ts)
        self.frame = {n: (s, s.side(p)) for s in self.streams for n, p in s.pkts}

    def window(self):
        return (self.tmin - 10**6, self.tmax + 10**6)

    def one(self, server_port, client_port=None):
        out = [s for s in self.streams if s.server[1] == server_port and
               (client_port is None or s.client[1] == client_port)]
        check(len(out) == 1, f"the cipher capture has {len(out)} connections to port "
              f"{server_port}" + (f" from port {client_port}" if client_port else "") +
              f", want 1: {[s.name() for s in self.streams]}")
        return out[0]


class Wire:
    """dumpcap on lo recording TCP of the given ports (pcapng, or classic pcap
    with -P). A UDP probe to our own socket tells when it records and, at
    stop, that everything before it is in the file (dumpcap writes with a
    delay and loses what it had not written when stopped)."""

    def __init__(self, env, ports, pcapng=False, name="cipher"):
        self.env, self.pcapng, self.name = env, pcapng, name
        self.token = b"t33-probe-" + os.urandom(12).hex().encode()
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.pport = self.sock.getsockname()[1]
        filt = " or ".join(f"tcp port {p}" for p in ports) + f" or udp port {self.pport}"
        self.raw = env.path(f"{name}-raw." + ("pcapng" if pcapng else "pcap"))
        argv = [need_tool("dumpcap"), "-q", "-i", "lo", "-B", "64", "-f", filt, "-w", self.raw]
        for attempt in (1, 2):  # once in a while dumpcap ends right at its start
            self.proc = env.spawn("dumpcap", argv + ([] if pcapng else ["-P"]))
            try:
                self._probe("dumpcap to record")
                break
            except Fail:
                if attempt == 2 or self.proc.alive():
                    raise
        self.path, self.cipher = None, None

    def _count(self):
        try:
            with open(self.raw, "rb") as f:
                return f.read().count(self.token)
        except OSError:
            return 0

    def _probe(self, what):
        n0, deadline = self._count(), time.monotonic() + 15
        while self._count() <= n0:
            check(self.proc.alive(), f"dumpcap exited: {short(self.proc.err())}")
            check(time.monotonic() < deadline, f"timed out after 15s waiting for {what}")
            self.sock.sendto(self.token, ("127.0.0.1", self.pport))
            time.sleep(0.05)

    def stop(self):
        """Stops dumpcap once it wrote everything; returns the path of the capture
        to decrypt (pcap: TCP only; pcapng: as dumpcap wrote it, probes kept)."""
        self._probe("dumpcap to write the last packets")
        self.proc.signal(signal.SIGTERM)
        self.proc.wait(10)
        self.sock.close()
        m = re.search(rb"received/dropped on interface .*: (\d+)/(\d+)", self.proc.err())
        check(m and m.group(2) == b"0", f"dumpcap dropped packets, the capture is incomplete "
              f"(not the decryptor's fault): {short(self.proc.err())}")
        if self.pcapng:
            self.path = self.raw
        else:
            self.path = self.env.path(self.name + ".pcap")
            cap = pcapedit.read(self.raw)
            cap.write(self.path, [p for p in cap.packets if p.tcp])
        self.cipher = Cipher(self.path)
        holes = [(s.name(), d, s.holes(d)) for s in self.cipher.streams for d in (0, 1)
                 if s.holes(d)]
        check(not holes, f"the capture misses ciphertext (not the decryptor's fault): {holes}")
        return self.path


def rsa_certs():
    """An RSA certificate for the ECDHE-RSA and RSA suites, made once per run next to certs()."""
    d = certs()["dir"]
    cert, key = os.path.join(d, "rsa-cert.pem"), os.path.join(d, "rsa-key.pem")
    if not os.path.exists(cert):
        r = subprocess.run([need_tool("openssl"), "req", "-x509", "-newkey", "rsa:2048", "-nodes",
                            "-keyout", key, "-out", cert, "-days", "2", "-subj", "/CN=localhost",
                            "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"],
                           capture_output=True, timeout=60)
        check(r.returncode == 0, f"openssl req (RSA): {short(r.stderr)}")
    return {"cert": cert, "key": key}


def server_hellos(path):
    """The ServerHellos of a capture (plain text): dicts stream, suite, exts, versions."""
    rows = tshark_fields(path, ["tcp.stream", "tls.handshake.type", "tls.handshake.ciphersuite",
                                "tls.handshake.extension.type",
                                "tls.handshake.extensions.supported_version"],
                         display_filter="tls.handshake.type == 2")
    out = []
    for r in rows:
        n = r[1].split(",").count("2")
        for _ in range(max(n, 1)):
            out.append(dict(stream=int(r[0]),
                            suite=int(r[2].split(",")[0], 0) if r[2] else None,
                            exts={int(x, 0) for x in r[3].split(",") if x},
                            versions={int(x, 0) for x in r[4].split(",") if x}))
    return out


def handshake_types(path, keys):
    """Handshake message types tshark sees (decrypting with keys) per frame: [(frame, [types])]."""
    rows = tshark_fields(path, ["frame.number", "tls.handshake.type"],
                         display_filter="tls.handshake.type",
                         extra=["-o", f"tls.keylog_file:{keys}"])
    return [(int(r[0]), [int(x) for x in r[1].split(",") if x]) for r in rows]


def tshark_decrypt(cipher, keys):
    """tshark's own decryption of every connection of the cipher capture with
    the key log: {stream index: [c2s bytes, s2c bytes]}; directions from the
    frame each piece completes in."""
    # dumpcap on lo (two CPUs) sometimes records two segments out of order: tshark
    # reassembles those only when told to (its default stopped short of a
    # connection's last records); TLS named on each server port
    argv = [need_tool("tshark"), "-n", "-r", cipher.path, "-o", f"tls.keylog_file:{keys}",
            "-o", "tcp.reassemble_out_of_order:TRUE", "-q"]
    for port in sorted({s.server[1] for s in cipher.streams}):
        argv += ["-d", f"tcp.port=={port},tls"]
    for s in cipher.streams:
        argv += ["-z", f"follow,tls,yaml,{s.idx}"]
    r = subprocess.run(argv, capture_output=True, timeout=120)
    check(r.returncode == 0, f"tshark follow,tls on {cipher.path}: {short(r.stderr)}")
    out = {s.idx: [bytearray(), bytearray()] for s in cipher.streams}
    frame, b64 = None, None

    def flush():
        if frame is not None and b64:
            s, d = cipher.frame[frame]
            out[s.idx][d] += base64.b64decode("".join(b64))
    for line in r.stdout.decode("utf-8", "replace").splitlines():
        m = re.match(r"\s*- packet: (\d+)", line)
        if m or line.startswith("peers:"):
            flush()
            frame, b64 = (int(m.group(1)) if m else None), None
        elif line.strip() == "data: !!binary |":
            b64 = []
        elif b64 is not None and line.startswith("      "):
            b64.append(line.strip())
    flush()
    return {k: [bytes(v[0]), bytes(v[1])] for k, v in out.items()}


# ---------------------------------------------------------------- the command

def decrypt_argv(inputs, keys=(), out=None, key_wait=None, extra=()):
    argv = [need_build(TLSMIRROR), "decrypt"]
    for f in inputs:
        argv += ["-r", f]
    for k in keys:
        argv += ["--keys", k]
    if key_wait is not None:
        argv += ["--key-wait", key_wait]
    return argv + list(extra) + (["-w", out] if out else [])


class Run:
    def __init__(self, argv, rc, err, secs):
        self.argv, self.rc, self.err, self.secs = argv, rc, err, secs

    def cmd(self):
        return " ".join(os.path.basename(a) if a.startswith("/") else a for a in self.argv[1:])

    def stats(self):
        """The `source decrypt` line's counters."""
        for line in self.err.splitlines():
            if line.strip().startswith("source decrypt"):
                return dict(re.findall(r"(\w+)=(\S*)", line))
        raise Fail(f"`tlsmirror {self.cmd()}` printed no line starting with `source decrypt` "
                   f"on stderr: {short(self.err, 800)}")

    def stat(self, key):
        d = self.stats()
        name = STAT.get(key, key)
        check(name in d, f"`source decrypt` stats lack {name}=: {d}")
        try:
            return int(d[name])
        except ValueError:
            raise Fail(f"`source decrypt` {name}={d[name]!r} is not a number") from None


def finish(proc, argv, t0, timeout_s, expect_rc):
    rc = proc.wait(timeout_s)
    r = Run(argv, rc, proc.err().decode("utf-8", "replace"), time.monotonic() - t0)
    check(rc >= 0, f"`tlsmirror {r.cmd()}` was killed by signal {-rc}: {short(r.err, 800)}")
    if expect_rc is not None:
        check(rc == expect_rc, f"`tlsmirror {r.cmd()}` exited {rc}, want {expect_rc}: "
              f"{short(r.err, 800)}")
    return r


def decrypt(env, inputs, keys=(), out=None, key_wait=None, extra=(), expect_rc=0, timeout_s=60,
            name="decrypt"):
    argv = decrypt_argv(inputs, keys, out, key_wait, extra)
    t0 = time.monotonic()
    return finish(env.spawn(name, argv), argv, t0, timeout_s, expect_rc)


# ---------------------------------------------------------------- judging

class Exp:
    """A connection the test knows: server port (client port when known), the
    bytes the client sent (c2s) and received (s2c)."""

    def __init__(self, name, server_port, c2s, s2c, client_port=None):
        self.name, self.server_port, self.client_port = name, server_port, client_port
        self.c2s, self.s2c = c2s, s2c


def gather(problems, what, fn, /, *a, **kw):
    """Runs one check of one connection; a failure is noted, the others still run."""
    try:
        return fn(*a, **kw)
    except Fail as e:
        problems.append(f"{what}: {e}")
        return None


def raise_all(problems, run):
    if problems:
        raise Fail(f"`tlsmirror {run.cmd()}`:\n  " + "\n  ".join(problems)
                   + f"\n  stderr: {short(run.err, 600)}")


def judge_clear(wire, keys, exps, run, clear, tls_conns=None, nokey=0, tshark=True, plain=0):
    """The decrypted capture against what the programs sent and got and against
    tshark's own decryption, connection by connection, then the counters. plain:
    TCP connections in the capture that are not TLS (in the output or not)."""
    cipher = wire.cipher
    cap = judge(clear, ts_window=cipher.window())
    problems = []
    ts = tshark_decrypt(cipher, keys) if tshark else {}
    for e in exps:
        cs = gather(problems, e.name, cipher.one, e.server_port, e.client_port)
        if cs is None:
            continue
        st = gather(problems, e.name, cap.one, client_port=cs.client[1],
                    server_port=cs.server[1])
        if st is None:
            continue
        # the real 4-tuple, and what the application sent and received
        gather(problems, e.name, check_stream, st, c2s=e.c2s, s2c=e.s2c, client=cs.client,
               server=cs.server)
        if tshark:
            for d, dn in ((0, "c2s"), (1, "s2c")):
                m = diff_msg(f"tshark's decryption vs tlsmirror decrypt {dn}", ts[cs.idx][d],
                             st.direction(d)["data"])
                if m:
                    problems.append(f"{e.name}: {m}")
    syn = cap.syn_streams()
    if not len(exps) <= len(syn) <= len(exps) + plain:
        problems.append(f"{len(syn)} TCP connections in {os.path.basename(clear)}, want "
                        f"{len(exps)}" + (f" (+ up to {plain} not TLS)" if plain else "") +
                        f": {cap.describe()}")
    clear_bytes = sum(len(e.c2s) + len(e.s2c) for e in exps)
    n = tls_conns if tls_conns is not None else len(exps)
    # (a connection that is not TLS is also counted in bad_records: its first bytes are
    # no record header; not judged here)
    gather(problems, "counters", check_counters, run, conns=n + plain, tls=n,
           decrypted=n - nokey, nokey=nokey, clear=clear_bytes, gap=0,
           bad=None if plain else 0, not_tls_conns=plain)
    raise_all(problems, run)
    return cap


def check_counters(run, **want):
    got = {k: run.stat(k) for k in want}
    bad = {STAT.get(k, k): (got[k], v) for k, v in want.items()
           if v is not None and got[k] != v}
    check(not bad, "`source decrypt` counters (got, want): " +
          ", ".join(f"{k}={g} want {w}" for k, (g, w) in bad.items())
          + f"; line: {run.stats()}")


def decrypt_and_judge(env, wire, keys, exps, **kw):
    clear = env.path("clear.pcap")
    run = decrypt(env, [wire.path], [keys], clear)
    judge_clear(wire, keys, exps, run, clear, **kw)
    return run


def offsets_match(what, orig, direction, invented):
    """Every byte the output has, at its offset, is the original's (gaps aside)."""
    for off, data in direction["chunks"]:
        if off + len(data) > len(orig) or orig[off:off + len(data)] != data:
            j = next((i for i in range(len(data)) if off + i >= len(orig)
                      or orig[off + i] != data[i]), 0)
            where = orig.find(data[:64]) if len(data) >= 64 else -1
            invented.append(f"{what}: {len(data)} bytes at offset {off} differ from the original "
                            f"from offset {off + j}"
                            + (f" (they are the original's bytes at offset {where}: shifted by "
                               f"{off - where})" if where >= 0 else " (not found in the original)"))
            return


# ---------------------------------------------------------------- programs

def s_pair(env, port, c2s, s2c, srv_args=(), cli_args=(), rsa=False, keys_cli=None,
           keys_srv=None, keyupdate=False):
    """openssl s_server (echoing stdin) and s_client on 127.0.0.1:port; c2s is
    fed to s_client, s2c to s_server, each side's own -keylogfile where given.
    keyupdate: s_client sends a KeyUpdate asking for one back ('K') after the
    first half of c2s and s2c; the second halves follow under the new keys.
    Returns s_client's stdout."""
    c = rsa_certs() if rsa else certs()
    openssl = need_tool("openssl")
    srv = env.spawn("s_server", [openssl, "s_server", "-accept", f"127.0.0.1:{port}",
                                 "-cert", c["cert"], "-key", c["key"], "-naccept", "1"]
                    + (["-keylogfile", keys_srv] if keys_srv else []) + list(srv_args),
                    stdin=subprocess.PIPE)
    wait_until(lambda: b"ACCEPT" in srv.out() or not srv.alive(), 15, "s_server ACCEPT")
    check(srv.alive(), f"s_server {srv_args} exited: {short(srv.err())}")
    cli = env.spawn("s_client", [openssl, "s_client", "-connect", f"127.0.0.1:{port}",
                                 "-servername", "localhost", "-CAfile", c["cert"]]
                    + ([] if keyupdate else ["-nocommands"])
                    + (["-keylogfile", keys_cli] if keys_cli else []) + list(cli_args),
                    stdin=subprocess.PIPE)

    def arrived(a, b):
        # each half on its own: s_server prints "Read BLOCK" between them after a KeyUpdate
        def ok():
            check(srv.alive() and cli.alive(), f"s_server or s_client exited early: "
                  f"{short(srv.err())} / {short(cli.err())}")
            so, co = srv.out(), cli.out()
            return all(x in so for x in a) and all(x in co for x in b)
        wait_until(ok, 30, "both payloads to arrive (s_server's stdout has the client's, "
                   "s_client's the server's)")
    if keyupdate:
        h1, h2 = c2s.index(b"\n", len(c2s) // 2) + 1, s2c.index(b"\n", len(s2c) // 2) + 1
        for t in (feed(cli, c2s[:h1]), feed(srv, s2c[:h2])):
            t.join(10)
        arrived([c2s[:h1]], [s2c[:h2]])
        cli.popen.stdin.write(b"K\n")  # s_client: SSL_key_update(SSL_KEY_UPDATE_REQUESTED)
        cli.popen.stdin.flush()
        time.sleep(0.5)  # read alone: a command takes the whole read
        feed(cli, c2s[h1:]).join(10)
        arrived([c2s[h1:]], [])  # the server read the KeyUpdate before: it answers with new keys
        feed(srv, s2c[h2:]).join(10)
        arrived([c2s[:h1], c2s[h1:]], [s2c[:h2], s2c[h2:]])
    else:
        t1, t2 = feed(cli, c2s), feed(srv, s2c)
        t1.join(10)
        t2.join(10)
        arrived([c2s], [s2c])
    cli.popen.stdin.close()
    check(cli.wait(15) == 0, f"s_client {cli_args} exited {cli.popen.returncode}: "
          f"{short(cli.err())}")
    srv.popen.stdin.close()
    check(srv.wait(15) == 0, f"s_server exited {srv.popen.returncode}: {short(srv.err())}")
    return cli.out()


def openssl_case(env, srv_args=(), cli_args=(), rsa=False, keys_by="client",
                 sizes=(120_000, 200_000), seed=0, **kw):
    """One s_client/s_server connection on the wire; (wire, keys, Exp)."""
    port = free_port()
    wire = Wire(env, [port])
    keys = env.path("keys.log")
    c2s, s2c = digits(sizes[0], 3300 + seed), digits(sizes[1], 3400 + seed)
    s_pair(env, port, c2s, s2c, srv_args, cli_args, rsa,
           keys_cli=keys if keys_by == "client" else None,
           keys_srv=keys if keys_by == "server" else None, **kw)
    wire.stop()
    return wire, keys, Exp(f"s_client {' '.join(cli_args)}", port, c2s, s2c)


def check_hello(wire, suite, version, etm=None, n=1):
    hs = server_hellos(wire.path)
    check(len(hs) == n, f"{len(hs)} ServerHellos on the wire, want {n}: {hs}")
    h = hs[-1]
    v13 = 0x0304 in h["versions"]
    check(h["suite"] == suite and v13 == (version == "1.3"),
          f"the connection negotiated suite {h['suite']:#06x} "
          f"{'TLS 1.3' if v13 else 'TLS 1.2'}, want {suite:#06x} TLS {version}: {h}")
    if etm is not None:
        check((EXT_ETM in h["exts"]) == etm, f"encrypt_then_mac {'not ' if etm else ''}"
              f"negotiated, want {'it' if etm else 'none'}: ServerHello extensions {h['exts']}")
    return hs


def tls12(env, cipher, etm=None, extra=()):
    wire, keys, exp = openssl_case(env, cli_args=["-tls1_2", "-cipher", cipher] + list(extra),
                                   rsa=True, seed=len(cipher))
    check_hello(wire, SUITES12[cipher], "1.2", etm)
    decrypt_and_judge(env, wire, keys, [exp])


def tls13(env, suite, keys_by="client"):
    a = ["-ciphersuites", suite]
    wire, keys, exp = openssl_case(env, srv_args=a, cli_args=a + ["-tls1_3"], keys_by=keys_by,
                                   seed=SUITES13[suite])
    check_hello(wire, SUITES13[suite], "1.3")
    decrypt_and_judge(env, wire, keys, [exp])


PYCLIENT = r"""
import socket, ssl, sys
port, cafile, keys, tls, method, path, bodyfile = sys.argv[1:8]
ctx = ssl.create_default_context(cafile=cafile)
ctx.keylog_filename = keys
if tls == "1.2":
    ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    ctx.set_ciphers("ECDHE-ECDSA-AES256-GCM-SHA384")
body = open(bodyfile, "rb").read() if bodyfile != "-" else b""
with socket.create_connection(("127.0.0.1", int(port))) as raw:
    with ctx.wrap_socket(raw, server_hostname="localhost") as s:
        s.sendall(f"{method} {path} HTTP/1.1\r\nHost: localhost\r\nContent-Length: {len(body)}"
                  f"\r\n\r\n".encode() + body)
        got = b""
        while True:
            d = s.recv(65536)
            if not d:
                break
            got += d
sys.stdout.buffer.write(got)
"""


def pyclient(env, port, keys, tls, method, path, body=None, name="pyclient"):
    bf = "-"
    if body is not None:
        bf = env.path(name + ".body")
        with open(bf, "wb") as f:
            f.write(body)
    rc, out, err = env.run(name, [PYTHON, "-c", PYCLIENT, str(port), certs()["cert"], keys, tls,
                                  method, path, bf], timeout_s=60)
    check(rc == 0, f"python client {tls} {method} {path}: {short(err)}")
    return out


def server_exps(srv, n, what):
    return [Exp(f"{what} #{c.meta['n']} from port {c.peer_port}", c.local_port, c.c2s, c.s2c,
                client_port=c.peer_port) for c in srv.conns(n)]


# ---------------------------------------------------------------- TLS 1.2

@timeout(60)
def test_tls12_ecdhe_rsa_aes128_gcm(env):
    tls12(env, "ECDHE-RSA-AES128-GCM-SHA256")


@timeout(60)
def test_tls12_rsa_aes256_gcm_sha384(env):
    tls12(env, "AES256-GCM-SHA384")


@timeout(60)
def test_tls12_ecdhe_rsa_chacha20(env):
    tls12(env, "ECDHE-RSA-CHACHA20-POLY1305")


@timeout(60)
def test_tls12_cbc_sha1_etm(env):
    tls12(env, "ECDHE-RSA-AES128-SHA", etm=True)


@timeout(60)
def test_tls12_cbc_sha1_no_etm(env):
    tls12(env, "ECDHE-RSA-AES128-SHA", etm=False, extra=["-no_etm"])


@timeout(60)
def test_tls12_cbc_sha384_etm(env):
    tls12(env, "ECDHE-RSA-AES256-SHA384", etm=True)


@timeout(60)
def test_tls12_cbc_sha256_no_etm(env):
    tls12(env, "AES128-SHA256", etm=False, extra=["-no_etm"])


# ---------------------------------------------------------------- TLS 1.3

@timeout(60)
def test_tls13_aes128_gcm(env):
    tls13(env, "TLS_AES_128_GCM_SHA256")


@timeout(60)
def test_tls13_aes256_gcm(env):
    tls13(env, "TLS_AES_256_GCM_SHA384", keys_by="server")


@timeout(60)
def test_tls13_chacha20(env):
    tls13(env, "TLS_CHACHA20_POLY1305_SHA256")


@timeout(60)
def test_tls13_aes128_ccm(env):
    tls13(env, "TLS_AES_128_CCM_SHA256", keys_by="server")


@timeout(60)
def test_tls13_aes128_ccm8(env):
    tls13(env, "TLS_AES_128_CCM_8_SHA256")


@timeout(60)
def test_tls13_hello_retry_request(env):
    """The client's key share is X25519, the server takes only P-256: a HelloRetryRequest."""
    wire, keys, exp = openssl_case(env, srv_args=["-groups", "P-256"],
                                   cli_args=["-tls1_3", "-groups", "X25519:P-256"], seed=1)
    hs = check_hello(wire, 0x1302, "1.3", n=2)
    check(len({h["stream"] for h in hs}) == 1,
          f"the two ServerHellos are not of one connection: {hs}")
    run = decrypt_and_judge(env, wire, keys, [exp])
    check_counters(run, hrr=1)


@timeout(60)
def test_tls13_key_update(env):
    """s_client sends a KeyUpdate asking for one back; the second halves travel under new keys."""
    wire, keys, exp = openssl_case(env, cli_args=["-tls1_3"], keyupdate=True, seed=2)
    updates = [f for f, types in handshake_types(wire.path, keys) if 24 in types]
    check(len(updates) == 2, f"tshark sees {len(updates)} KeyUpdate messages (frames {updates}), "
          "want 2 (the client's and the server's answer)")
    run = decrypt_and_judge(env, wire, keys, [exp])
    check_counters(run, key_updates=2)


def resumption(env, tls):
    """s_client -sess_out, then -sess_in: the second connection resumes by ticket
    (keys under its own client random); both decrypt."""
    srv = RecServer(env)
    wire = Wire(env, [srv.port])
    c = certs()
    keys, sess = env.path("keys.log"), env.path("sess.pem")
    outs = []
    for i, sarg in enumerate((["-sess_out", sess], ["-sess_in", sess])):
        req = f"GET /size/{60_000 + i * 20_000} HTTP/1.1\r\nHost: localhost\r\n\r\n".encode()
        with open_bytes(env, f"req{i}", req) as stdin:
            rc, out, err = env.run(f"s_client-{i}", [need_tool("openssl"), "s_client", "-connect",
                                                     f"127.0.0.1:{srv.port}", "-servername",
                                                     "localhost", "-CAfile", c["cert"],
                                                     "-keylogfile", keys, "-ign_eof",
                                                     f"-tls{tls.replace('.', '_')}"] + sarg,
                                   stdin=stdin, timeout_s=30)
        check(rc == 0, f"s_client {sarg}: {short(err)}")
        outs.append(out)
    check(b"Reused, " in outs[1] and b"Reused, " not in outs[0],
          f"the second s_client did not resume: {short(outs[1][-1500:], 600)}")
    exps = server_exps(srv, 2, f"TLS {tls} s_client")
    wire.stop()
    hs = server_hellos(wire.path)
    check(len(hs) == 2, f"{len(hs)} ServerHellos, want 2")
    if tls == "1.3":
        check(EXT_PSK in hs[1]["exts"] and EXT_PSK not in hs[0]["exts"],
              f"only the second ServerHello should take a pre_shared_key: {hs}")
    decrypt_and_judge(env, wire, keys, exps)


def open_bytes(env, name, data):
    p = env.path(name + ".in")
    with open(p, "wb") as f:
        f.write(data)
    return open(p, "rb")


@timeout(60)
def test_tls13_resumption_by_ticket(env):
    resumption(env, "1.3")


@timeout(60)
def test_tls12_resumption_by_ticket(env):
    resumption(env, "1.2")


# ---------------------------------------------------------------- applications' own key logs

@timeout(60)
def test_curl_sslkeylogfile_pcapng(env):
    """curl (TLS 1.3 GET, TLS 1.2 POST) with SSLKEYLOGFILE; dumpcap's own pcapng, probes kept."""
    srv = RecServer(env)
    wire = Wire(env, [srv.port], pcapng=True)
    c = certs()
    keys = env.path("curl-keys.log")
    body = env.path("post.bin")
    with open(body, "wb") as f:
        f.write(gen_bytes(200_000, 3301))
    base = [need_tool("curl"), "-sS", "-o", "/dev/null", "--cacert", c["cert"], "--resolve",
            f"localhost:{srv.port}:127.0.0.1"]
    url = f"https://localhost:{srv.port}"
    for i, a in enumerate((["--tlsv1.3", f"{url}/size/400000"],
                           ["--tlsv1.2", "--tls-max", "1.2", "--data-binary", f"@{body}",
                            "-H", "Content-Type: application/octet-stream", f"{url}/echo"])):
        rc, out, err = env.run(f"curl{i}", base + a, timeout_s=30,
                               extra_env={"SSLKEYLOGFILE": keys})
        check(rc == 0, f"curl {a}: {short(err)}")
    exps = server_exps(srv, 2, "curl")
    wire.stop()
    check(wire.cipher.fmt == "pcapng", "dumpcap did not write pcapng")
    clear, meta = env.path("clear.pcap"), env.path("clear.pcapng")
    run = decrypt(env, [wire.path], [keys], clear, extra=["--pcapng", meta])
    judge_clear(wire, keys, exps, run, clear)
    # the pcapng output's comment on each connection's first packet: its TLS facts
    cap = judge(meta, ts_window=wire.cipher.window())
    rows = tshark_fields(meta, ["tcp.stream", "frame.comment"], display_filter="frame.comment")
    got = {}
    for st, c in rows:
        s = next(x for x in cap.streams if x.idx == int(st))
        check(c.startswith("tlsmirror: ") and s.client[1] not in got,
              f"{s.name()}: comment {c!r} (one per connection, 'tlsmirror: ...')")
        got[s.client[1]] = dict(kv.split("=", 1) for kv in c[len("tlsmirror: "):].split(" ")
                                if "=" in kv)
    for e, tls in zip(exps, ("TLSv1.3", "TLSv1.2")):  # in the order curl ran
        f = got.get(e.client_port, {})
        check(f.get("source") == "decrypt" and f.get("sni") == "localhost" and
              f.get("tls") == tls and f.get("cipher", "").startswith(
                  "TLS_AES_" if tls == "TLSv1.3" else "ECDHE-"),
              f"{e.name}: pcapng comment fields {f}, want source=decrypt sni=localhost "
              f"tls={tls} and its cipher")


@timeout(60)
def test_python_keylog_filename(env):
    """Python's ssl (keylog_filename): TLS 1.3 and TLS 1.2 ECDHE-ECDSA-AES256-GCM, POSTs
    echoed, each client its own key log: two --keys."""
    srv = RecServer(env)
    wire = Wire(env, [srv.port], pcapng=True)
    keys = [env.path("py13-keys.log"), env.path("py12-keys.log")]
    for i, tls in enumerate(("1.3", "1.2")):
        pyclient(env, srv.port, keys[i], tls, "POST", "/echo", gen_bytes(150_000 + i, 3310 + i),
                 name=f"py{tls}")
    exps = server_exps(srv, 2, "python")
    wire.stop()
    both = env.path("both-keys.log")  # for tshark, which takes one file
    with open(both, "wb") as f:
        for k in keys:
            with open(k, "rb") as g:
                f.write(g.read())
    clear = env.path("clear.pcap")
    run = decrypt(env, [wire.path], keys, clear)
    judge_clear(wire, both, exps, run, clear)


NODECLIENT = r"""
const https = require('https'), fs = require('fs');
const [port, ca, bodyfile] = process.argv.slice(2);
const body = fs.readFileSync(bodyfile);
const req = https.request({host: '127.0.0.1', port: +port, servername: 'localhost', agent: false,
                           ca: fs.readFileSync(ca), method: 'POST', path: '/echo',
                           headers: {'Content-Length': body.length}}, res => {
  const parts = [];
  res.on('data', d => parts.push(d));
  res.on('end', () => process.stdout.write(Buffer.concat(parts)));
});
req.on('error', e => { console.error(e); process.exit(1); });
req.end(body);
"""


@timeout(60)
def test_node_tls_keylog(env):
    """node --tls-keylog (OpenSSL linked into node): a POST echoed over TLS 1.3."""
    node = need_tool("node")
    srv = RecServer(env)
    wire = Wire(env, [srv.port], pcapng=True)
    keys = env.path("node-keys.log")
    script, body = env.path("client.js"), env.path("node.body")
    with open(script, "w") as f:
        f.write(NODECLIENT)
    data = gen_bytes(250_000, 3320)
    with open(body, "wb") as f:
        f.write(data)
    rc, out, err = env.run("node", [node, f"--tls-keylog={keys}", script, str(srv.port),
                                    certs()["cert"], body], timeout_s=30)
    check(rc == 0 and out == data, f"node client: rc {rc}, {len(out)} bytes back of {len(data)}: "
          f"{short(err)}")
    exps = server_exps(srv, 1, "node")
    wire.stop()
    decrypt_and_judge(env, wire, keys, exps)


H2CONF = nginx_conf(1, """    server {{
        listen 127.0.0.1:{port} ssl http2;
        ssl_certificate {cert};
        ssl_certificate_key {key};
        root {prefix}/html;
    }}
""")


@timeout(90)
def test_h2_nginx_curl_h2_to_h1(env):
    """nginx (h2, not under capture) and curl --http2 with SSLKEYLOGFILE, two requests on one
    connection: mirrored as it is, it equals tshark's decryption; with --h2-to-h1 (and
    --http-log) tshark sees the two HTTP/1.1 exchanges with the files' bytes."""
    prefix = env.path("nginx")
    for d in ("html", "logs", "tmp"):
        os.makedirs(os.path.join(prefix, d))
    files = {"a": gen_bytes(120_000, 3330), "b": gen_bytes(40_000, 3331)}
    for k, v in files.items():
        with open(os.path.join(prefix, "html", k), "wb") as f:
            f.write(v)
    port = free_port()
    c = certs()
    conf = os.path.join(prefix, "nginx.conf")
    with open(conf, "w") as f:
        f.write(H2CONF.format(prefix=prefix, port=port, cert=c["cert"], key=c["key"]))
    ngx = env.spawn("nginx", [need_tool("nginx"), "-p", prefix, "-e",
                              os.path.join(prefix, "error.log"), "-c", conf, "-g", "daemon off;"])
    wait_listening(port, proc=ngx)
    wire = Wire(env, [port])
    keys = env.path("keys.log")
    outs = [env.path("a.out"), env.path("b.out")]
    rc, out, err = env.run("curl", [need_tool("curl"), "-sS", "--http2", "--cacert", c["cert"],
                                    "--resolve", f"localhost:{port}:127.0.0.1",
                                    f"https://localhost:{port}/a", "-o", outs[0],
                                    f"https://localhost:{port}/b", "-o", outs[1]],
                           timeout_s=30, extra_env={"SSLKEYLOGFILE": keys})
    check(rc == 0, f"curl --http2: {short(err)}")
    for p, k in zip(outs, "ab"):
        with open(p, "rb") as f:
            check(f.read() == files[k], f"curl got other bytes for /{k}")
    time.sleep(0.3)
    ngx.signal(signal.SIGQUIT)
    ngx.wait(20)
    wire.stop()
    cipher = wire.cipher
    check(len(cipher.streams) == 1, f"curl used {len(cipher.streams)} connections, want 1")
    # as it is: the HTTP/2 bytes tshark decrypts
    ts = tshark_decrypt(cipher, keys)[0]
    check(ts[0].startswith(b"PRI * HTTP/2.0") and len(ts[1]) > 160_000,
          f"tshark's decryption is not HTTP/2 with both bodies: c2s {ts[0][:24]!r}, "
          f"s2c {len(ts[1])} bytes")
    clear = env.path("clear.pcap")
    run = decrypt(env, [wire.path], [keys], clear)
    cap = judge(clear, ts_window=cipher.window(), binary=lambda st: True)
    st = cap.one(client_port=cipher.streams[0].client[1], server_port=port)
    check_stream(st, c2s=ts[0], s2c=ts[1], client=cipher.streams[0].client,
                 server=cipher.streams[0].server)
    check_counters(run, conns=1, tls=1, decrypted=1, nokey=0, clear=len(ts[0]) + len(ts[1]),
                   gap=0, bad=0)
    # as HTTP/1.1
    h1, recs = env.path("h1.pcap"), env.path("records.jsonl")
    run = decrypt(env, [wire.path], [keys], h1, extra=["--h2-to-h1", "--http-log", recs],
                  name="decrypt-h1")
    cap = judge(h1)
    rows = tshark_fields(h1, ["http.request.method", "http.request.uri", "http.request.version"],
                         display_filter="http.request")
    got = sorted((r[0], r[1], r[2]) for r in rows)
    check(got == [("GET", "/a", "HTTP/1.1"), ("GET", "/b", "HTTP/1.1")],
          f"tshark's HTTP/1.1 requests in the --h2-to-h1 output: {got}")
    syn = cap.syn_streams()
    check(len(syn) == 2, f"--h2-to-h1: {len(syn)} connections, want one per stream: "
          f"{cap.describe()}")
    for s in syn:
        (rl, _, _), = parse_h1_messages(s.bytes(0), responses=False)
        resp = parse_h1_messages(s.bytes(1), responses=True)
        uri = rl.split(b" ")[1].decode()
        check(len(resp) == 1 and resp[0][0].startswith(b"HTTP/1.1 200") and
              resp[0][2] == files[uri[1:]],
              f"{s.name()} {uri}: response {resp[0][0] if resp else None!r} with a body "
              f"of {len(resp[0][2]) if resp else 0} bytes, want 200 and /{uri[1:]}'s bytes")
        check(s.server == ("127.0.0.1", port), f"{s.name()}: not to nginx's address")
    with open(recs) as f:
        lines = [json.loads(l) for l in f if l.strip()]
    paths = sorted((r.get("method"), r.get("path"), (r.get("response") or {}).get("status"))
                   for r in lines)
    check(paths == [("GET", "/a", 200), ("GET", "/b", 200)],
          f"--http-log records (method, path, status): {paths}")


@timeout(60)
def test_concurrent_ipv4_ipv6_and_plain_tcp(env):
    """Eight curl processes at once, TLS 1.3 and 1.2, over 127.0.0.1 and ::1, one
    key log for all, beside a plain-TCP connection on another port: each TLS
    connection decrypts at its own 4-tuple, the plain one is counted as not TLS."""
    servers = [RecServer(env)]
    if have_ipv6():
        servers.append(RecServer(env, addr="::1", name="server6"))
    plain = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    plain.bind(("127.0.0.1", 0))
    plain.listen(1)
    pport = plain.getsockname()[1]
    wire = Wire(env, [s.port for s in servers] + [pport])
    c = certs()
    keys = env.path("keys.log")
    procs = []
    for i in range(8):
        srv = servers[i % len(servers)]
        host = "[::1]" if srv.addr == "::1" else "127.0.0.1"
        tls = ["--tlsv1.3"] if i % 4 < 2 else ["--tlsv1.2", "--tls-max", "1.2"]
        procs.append(env.spawn(f"curl{i}", [need_tool("curl"), "-sS", "-o", "/dev/null", "-g",
                                            "--cacert", c["cert"]] + tls +
                               [f"https://{host}:{srv.port}/size/{30_000 + 7_001 * i}"],
                               extra_env={"SSLKEYLOGFILE": keys}))
    with socket.create_connection(("127.0.0.1", pport)) as cl:
        sv, _ = plain.accept()
        cl.sendall(b"GET / HTTP/1.0\r\n\r\n")
        sv.recv(100)
        sv.sendall(b"HTTP/1.0 200 OK\r\n\r\nplain\n")
        cl.recv(100)
        sv.close()
    plain.close()
    for p in procs:
        check(p.wait(30) == 0, f"{p.name}: {short(p.err())}")
    exps = []
    for srv in servers:
        exps += server_exps(srv, 8 // len(servers), f"curl to {srv.addr}")
    wire.stop()
    clear = env.path("clear.pcap")
    run = decrypt(env, [wire.path], [keys], clear)
    judge_clear(wire, keys, exps, run, clear, plain=1)


# ---------------------------------------------------------------- keys late or missing

@timeout(60)
def test_keys_after_the_ciphertext(env):
    """decrypt starts with an empty key file (--key-wait 10s); the key lines are
    appended 1.5 s later, one line cut in two writes: it still decrypts."""
    wire, keys, exp = openssl_case(env, cli_args=["-tls1_3"], seed=4)
    with open(keys, "rb") as f:
        lines = f.read()
    late = env.path("late.log")
    open(late, "wb").close()
    clear = env.path("clear.pcap")
    argv = decrypt_argv([wire.path], [late], clear, key_wait="10s")
    t0 = time.monotonic()
    p = env.spawn("decrypt", argv)
    time.sleep(1.5)
    check(p.alive(), f"decrypt exited before the keys came (after {time.monotonic() - t0:.1f}s, "
          f"--key-wait 10s): {short(p.err(), 600)}")
    cut = lines.index(b"\n", len(lines) // 2) - 20
    with open(late, "ab") as f:
        f.write(lines[:cut])
        f.flush()
        time.sleep(0.3)
        f.write(lines[cut:])
    run = finish(p, argv, t0, 30, 0)
    check(run.secs < 6, f"decrypt took {run.secs:.1f}s: the keys were all there after 1.8 s "
          "(--key-wait 10s); it should exit once no connection waits any more (man page)")
    judge_clear(wire, keys, [exp], run, clear)


@timeout(60)
def test_connection_without_keys(env):
    """Two connections, keys for the first only: it decrypts, the second is
    counted (nokey) and gives no clear text; decrypt waits --key-wait 1s for it."""
    p1, p2 = free_port(), free_port()
    wire = Wire(env, [p1, p2])
    keys = env.path("keys.log")
    exps = []
    for i, (port, k) in enumerate(((p1, keys), (p2, None))):
        c2s, s2c = digits(50_000, 3350 + i), digits(70_000, 3360 + i)
        s_pair(env, port, c2s, s2c, cli_args=["-tls1_3"], keys_cli=k)
        exps.append(Exp(f"connection {i + 1}" + ("" if k else " (no keys)"), port, c2s, s2c))
    wire.stop()
    clear = env.path("clear.pcap")
    run = decrypt(env, [wire.path], [keys], clear, key_wait="1s")
    check(run.secs >= 0.9, f"decrypt exited after {run.secs:.2f}s, before --key-wait 1s "
          "for the connection without keys")
    cap = judge(clear, ts_window=wire.cipher.window())
    problems = []
    cs = wire.cipher.one(p1)
    st = gather(problems, exps[0].name, cap.one, client_port=cs.client[1], server_port=p1)
    if st:
        gather(problems, exps[0].name, check_stream, st, c2s=exps[0].c2s, s2c=exps[0].s2c,
               client=cs.client, server=cs.server)
    for s in cap.find(server_port=p2):
        n = sum(len(x.payload) for x in s.segs)
        problems.append(f"{exps[1].name}: {s.name()} is in the output ({len(s.segs)} packets, "
                        f"{n} payload bytes), want no output at all (docs/decrypt.md)")
    c2 = wire.cipher.one(p2)
    if f"{c2.client[0]}:{c2.client[1]}" not in run.err:
        problems.append(f"{exps[1].name}: stderr does not name {c2.name()}: {short(run.err, 300)}")
    gather(problems, "counters", check_counters, run, conns=2, tls=2, decrypted=1, nokey=1,
           clear=len(exps[0].c2s) + len(exps[0].s2c), bad=0)
    raise_all(problems, run)


# ---------------------------------------------------------------- several files, loss, reordering

def large_response(env, size, tls, seed):
    srv = RecServer(env)
    wire = Wire(env, [srv.port])
    keys = env.path("keys.log")
    pyclient(env, srv.port, keys, tls, "GET", f"/size/{size}", name=f"py{seed}")
    exps = server_exps(srv, 1, f"python TLS {tls} GET /size/{size}")
    wire.stop()
    return wire, keys, exps[0]


@timeout(60)
def test_two_input_files(env):
    """One connection split across two capture files (-r A -r B, in order), the cut in
    the middle of the response: the same clear text as from one file."""
    wire, keys, exp = large_response(env, 300_000, "1.2", 1)
    pk = wire.cipher.pcap.packets
    cs = wire.cipher.one(exp.server_port)
    mid = cs.data_pkts(1)[len(cs.data_pkts(1)) // 2][0]  # frame number: B starts there
    a, b = env.path("part-a.pcap"), env.path("part-b.pcap")
    wire.cipher.pcap.write(a, pk[:mid - 1])
    wire.cipher.pcap.write(b, pk[mid - 1:])
    clear = env.path("clear.pcap")
    run = decrypt(env, [a, b], [keys], clear)
    judge_clear(wire, keys, [exp], run, clear)
    # B alone: the connection first seen after its handshake (no client random to find
    # keys by) is counted, nothing is made up
    run = decrypt(env, [b], [keys], env.path("clear-b.pcap"), key_wait="1s", name="decrypt-b")
    check_counters(run, conns=1, decrypted=0, clear=0)
    why = run.stat("midstream_conns") + run.stat("not_tls_conns")
    check(why == 1, f"part B alone: midstream_conns + not_tls_conns = {why}, want 1 (the "
          f"connection is counted as started before the capture): {run.stats()}")


@timeout(60)
def test_loss_and_reordering(env):
    """A 1 MiB response (TLS 1.3) with one packet of the middle left out and two
    earlier ones swapped: the swapped bytes come out in place, the lost part is a
    gap, and every byte that is there is the original's at its offset."""
    loss_and_reordering(env, "1.3")


@timeout(60)
def test_loss_and_reordering_tls12(env):
    """The same with TLS 1.2 AES-256-GCM (explicit nonces: the gap is exact)."""
    loss_and_reordering(env, "1.2")


def loss_and_reordering(env, tls):
    wire, keys, exp = large_response(env, 1 << 20, tls, 2)
    cs = wire.cipher.one(exp.server_port)
    data = cs.data_pkts(1)
    check(len(data) >= 8, f"only {len(data)} data packets in the response: too few to edit")
    m = len(data) // 2
    drop_frame, drop_len = data[m][0], data[m][1].tcp.payload_len
    # two consecutive response packets before it, with no acknowledgement between them
    # (an ACK past a hole declares it lost: the receiver had the bytes, the capture missed them)
    j = next((j for j in range(m - 2, 0, -1) if data[j][0] == data[j - 1][0] + 1), m - 2)
    sa, sb = data[j - 1][0], data[j][0]
    pk = list(wire.cipher.pcap.packets)
    gone = pk[drop_frame - 1]
    pcapedit.swap(pk, sa - 1, sb - 1)
    edited = env.path("edited.pcap")
    wire.cipher.pcap.write(edited, [p for p in pk if p is not gone])
    clear = env.path("clear.pcap")
    run = decrypt(env, [edited], [keys], clear)
    cap = judge(clear, allow_gaps=True, ts_window=wire.cipher.window(),
                allow_analysis=("not captured", "wasn't captured"))
    st = cap.one(client_port=cs.client[1], server_port=cs.server[1])
    problems = []
    gather(problems, "c2s", check_stream, st, c2s=exp.c2s)
    r = st.direction(1)
    invented = []
    offsets_match("s2c", exp.s2c, r, invented)
    problems += invented
    gaps = r["gaps"]
    total = sum(n for _, n in gaps)
    edit = (f"(edit: frame {drop_frame}, {drop_len} ciphertext bytes, left out; frames {sa} and "
            f"{sb} swapped)")
    if not gaps:
        problems.append(f"s2c has no gap where the lost packet was {edit}")
    elif len(gaps) > 1 or total > drop_len + 2 * (16384 + 256):
        problems.append(f"s2c gaps {gaps[:5]} ({total} bytes): more than the lost packet and the "
                        f"two records it cuts {edit}")
    if r["end"] != len(exp.s2c):
        problems.append(f"s2c ends at offset {r['end']}, the response has {len(exp.s2c)} bytes "
                        f"{edit}")
    got = gather(problems, "counters", run.stat, "gap")
    if got is not None and got <= 0:
        problems.append(f"counters: {STAT['gap']}={got}, want > 0 {edit}")
    gather(problems, "counters", check_counters, run, tcp_gap_bytes=drop_len, auth=0, bad=0)
    got = gather(problems, "counters", run.stat, "tcp_reordered")
    if got is not None and got < 1:
        problems.append(f"counters: tcp_reordered={got}, want >= 1 {edit}")
    raise_all(problems, run)


# ---------------------------------------------------------------- bad input

@timeout(60)
def test_bad_arguments_and_garbage_capture(env):
    """Bad arguments: exit 2 and a message; a missing file or one that is no
    capture: exit 1 naming it; none of them a crash."""
    junk = env.path("junk.pcap")
    with open(junk, "wb") as f:
        f.write(random.Random(3390).randbytes(5000))
    empty = env.path("empty.pcap")
    pcapedit.Pcap("pcap", []).write(empty)
    keys = env.path("keys.log")
    open(keys, "w").close()
    out = env.path("out.pcap")
    problems = []
    missing = env.path("missing.pcap")
    argv = decrypt_argv([missing], [keys], out)
    t0 = time.monotonic()
    try:
        run = finish(env.spawn("missing", argv), argv, t0, 20, None)
        if run.rc != 1 or missing not in run.err or "No such file or directory" not in run.err:
            problems.append(f"-r of a missing file: `tlsmirror {run.cmd()}` exited {run.rc} with "
                            f"{short(run.err, 300)!r}, want 1 and a message naming the file and "
                            "its error (man page: a missing or unreadable one fails at once)")
    except Fail as e:
        problems.append(f"-r of a missing file: {e}")
    cases = [("no -r", decrypt_argv([], [keys], out)),
             ("--key-wait soon", decrypt_argv([empty], [keys], out, key_wait="soon")),
             ("an unknown option", decrypt_argv([empty], [keys], out, extra=["--no-such-option"])),
             ("-r without its file", decrypt_argv([], [keys], out) + ["-r"])]
    for what, argv in cases:
        t0 = time.monotonic()
        try:
            run = finish(env.spawn("bad", argv), argv, t0, 20, None)
        except Fail as e:
            problems.append(f"{what}: {e}")
            continue
        if run.rc != 2 or not run.err.strip():
            problems.append(f"{what}: `tlsmirror {run.cmd()}` exited {run.rc} with "
                            f"{short(run.err, 200)!r}, want 2 and a message")
    t0 = time.monotonic()
    argv = decrypt_argv([junk], [keys], out, key_wait="1s")
    try:
        run = finish(env.spawn("junk", argv), argv, t0, 20, None)
        if run.rc == 0 or "junk.pcap" not in run.err:
            problems.append(f"a garbage file: `tlsmirror {run.cmd()}` exited {run.rc}: "
                            f"{short(run.err, 300)!r}, want an error naming junk.pcap")
    except Fail as e:
        problems.append(f"a garbage file: {e}")
    # a capture whose frames are garbage: random bytes behind Ethernet, IPv4 and TCP headers
    r = random.Random(3391)
    frames = []
    for i in range(300):
        body = r.randbytes(r.randint(0, 200))
        if i % 3:
            ip = bytes([0x45, 0, 0, r.randint(0, 255), 0, 0, 0x40, 0, 64, 6, 0, 0, 127, 0, 0, 1,
                        127, 0, 0, 1])
            body = ip + (b"\x01\xbb\xc0\x00" if i % 2 else b"") + body
        frames.append(pcapedit.Packet(10**18 + i * 10**6, 14 + len(body),
                                      b"\x00" * 12 + b"\x08\x00" + body))
    frames_pcap = env.path("garbage-frames.pcap")
    pcapedit.Pcap("pcap", frames).write(frames_pcap)
    argv = decrypt_argv([frames_pcap], [keys], out, key_wait="1s")
    try:
        run = finish(env.spawn("frames", argv), argv, time.monotonic(), 20, None)
        if run.rc != 0:
            problems.append(f"garbage frames in a valid pcap: `tlsmirror {run.cmd()}` exited "
                            f"{run.rc}, want 0 (frames counted): {short(run.err, 300)}")
        else:
            run.stats()
    except Fail as e:
        problems.append(f"garbage frames in a valid pcap: {e}")
    check(not problems, "\n  ".join(problems))


@timeout(60)
def test_garbage_keys_corrupt_and_cut_capture(env):
    """A key log with garbage lines among the good ones still decrypts (the bad
    lines counted and named, never a crash), also when lines of impossible
    length for the connection's own client random come after the good ones;
    one flipped ciphertext byte is an authentication failure and a gap, never
    wrong bytes; a capture cut mid-record decrypts what is there, nothing invented."""
    wire, keys, exp = openssl_case(env, cli_args=["-tls1_3"], sizes=(60_000, 400_000), seed=5)
    with open(keys, "rb") as f:
        good = f.read()
    cr = next(l.split()[1] for l in good.splitlines() if l.startswith(b"CLIENT_TRAFFIC_SECRET_0"))
    r = random.Random(3395)
    malformed = [b"hello world", b"CLIENT_RANDOM zz 11", b"CLIENT_RANDOM " + b"ab" * 32,
                 b"SERVER_TRAFFIC_SECRET_0 " + cr + b" " + b"zz" * 32,
                 b"SERVER_TRAFFIC_SECRET_0 " + b"00" * 32 + b" " + b"11" * 200,
                 b"CLIENT_TRAFFIC_SECRET_0 " + cr[:40] + b" " + b"11" * 32]
    other = [b"NO_SUCH_LABEL " + b"00" * 32 + b" " + b"11" * 32, r.randbytes(300), b"\x00" * 40,
             b"#" + b"x" * 5000, b" " * 10]
    problems = []
    bad_keys = env.path("garbage-keys.log")
    with open(bad_keys, "wb") as f:
        f.write(b"\n".join(malformed[:3]) + b"\n" + good + b"\n".join(malformed[3:] + other)
                + b"\n")
    clear = env.path("clear.pcap")
    run = gather(problems, "garbage key lines", decrypt, env, [wire.path], [bad_keys], clear)
    if run:
        gather(problems, "garbage key lines", judge_clear, wire, keys, [exp], run, clear)
        n = gather(problems, "garbage key lines", run.stat, "keybad")
        if n is not None and n < len(malformed):
            problems.append(f"garbage key lines: {STAT['keybad']}={n}, want >= {len(malformed)} "
                            f"(the malformed lines)")
        if "garbage-keys.log" not in run.err or "line" not in run.err:
            problems.append(f"garbage key lines: stderr names neither the file nor a line: "
                            f"{short(run.err, 300)}")
    # after the good lines, secrets no suite has for this very connection: a TLS 1.3
    # traffic secret of 20 bytes (32 or 48 only) and a TLS 1.2 master secret of 47 (48 only)
    late_bad = [b"CLIENT_TRAFFIC_SECRET_0 " + cr + b" " + b"12" * 20,
                b"SERVER_TRAFFIC_SECRET_0 " + cr + b" " + b"34" * 20,
                b"CLIENT_RANDOM " + cr + b" " + b"cd" * 47]
    bad_len = env.path("bad-length-keys.log")
    with open(bad_len, "wb") as f:
        f.write(good + b"\n".join(late_bad) + b"\n")
    clear1 = env.path("clear-bad-length.pcap")
    run1 = gather(problems, "impossible secret lengths after the good lines", decrypt, env,
                  [wire.path], [bad_len], clear1, name="decrypt-bad-length")
    if run1:
        gather(problems, "impossible secret lengths after the good lines (20-byte TLS 1.3 "
               "secrets replaced the good ones?)", judge_clear, wire, keys, [exp], run1, clear1)
    # one flipped byte in the middle of a response packet (loopback checksums are not
    # computed: nothing tells the packet apart but the record's authentication)
    cs = wire.cipher.one(exp.server_port)
    data = cs.data_pkts(1)
    n, p = data[len(data) // 2]
    t = p.tcp
    flipped = bytearray(p.data)
    flipped[t.payload_off + t.payload_len // 2] ^= 0x40
    pk = list(wire.cipher.pcap.packets)
    pk[n - 1] = pcapedit.Packet(p.ts, p.orig_len, bytes(flipped))
    corrupt = env.path("corrupt.pcap")
    wire.cipher.pcap.write(corrupt, pk)
    clear2 = env.path("clear-corrupt.pcap")
    what = f"flipped byte (frame {n})"
    run2 = gather(problems, what, decrypt, env, [corrupt], [keys], clear2, name="decrypt-corrupt")
    if run2:
        cap = gather(problems, what, judge, clear2, allow_gaps=True,
                     allow_analysis=("not captured", "wasn't captured"))
        st = cap and gather(problems, what, cap.one, client_port=cs.client[1],
                            server_port=cs.server[1])
        if st:
            offsets_match(f"{what} s2c", exp.s2c, st.direction(1), problems)
            gather(problems, f"{what} c2s", check_stream, st, c2s=exp.c2s)
            if not st.direction(1)["gaps"]:
                problems.append(f"{what}: no gap in s2c")
        bad = gather(problems, what, run2.stat, "auth")
        if bad is not None and bad < 1:
            problems.append(f"{what}: {STAT['auth']}={bad}, want >= 1")
    # the capture cut in the middle of a packet record, 3/4 into the response
    with open(wire.path, "rb") as f:
        whole = f.read()
    n3, p3 = data[len(data) * 3 // 4]
    pos = whole.find(p3.data)
    cut = env.path("cut.pcap")
    with open(cut, "wb") as f:
        f.write(whole[:pos + len(p3.data) // 2])
    clear3 = env.path("clear-cut.pcap")
    run3 = gather(problems, "cut capture", decrypt, env, [cut], [keys], clear3, key_wait="1s",
                  expect_rc=None, name="decrypt-cut")
    if run3 and run3.rc != 0:
        problems.append(f"cut capture: exited {run3.rc}, want 0 (a capture still being written "
                        f"is read up to its last whole record): {short(run3.err, 300)}")
    elif run3:
        cap = gather(problems, "cut capture", judge, clear3, allow_gaps=True,
                     allow_analysis=("not captured", "wasn't captured"))
        for s3 in cap.find(server_port=cs.server[1]) if cap else []:
            offsets_match("cut capture c2s", exp.c2s, s3.direction(0), problems)
            offsets_match("cut capture s2c", exp.s2c, s3.direction(1), problems)
    check(not problems, "\n  ".join(problems))


# ------------------------------------------------- mid-stream, placed by # TUPLE lines

def hello_randoms(path):
    """(client random, server random) of the one handshake of a capture, as hex."""
    out = []
    for t in (1, 2):
        rows = tshark_fields(path, ["tls.handshake.random"],
                             display_filter=f"tls.handshake.type == {t}")
        check(len(rows) == 1 and len(rows[0][0].replace(":", "")) == 64,
              f"handshake type {t} randoms: {rows}")
        out.append(rows[0][0].replace(":", ""))
    return out


def midstream_case(env, version, cli_args, srv_args=(), suite=None, tuple_suite=True):
    """One s_client/s_server connection; the capture cut to start in the middle of the
    server's data (no SYN, no handshake, mid-record); a # TUPLE line naming it (the
    suite left out with tuple_suite False: '-'). decrypt must hand on exactly the tail
    of each direction from a record boundary on."""
    wire, keys, exp = openssl_case(env, srv_args=srv_args, cli_args=cli_args,
                                   sizes=(90_000, 600_000), seed=7, rsa=version == "1.2")
    cs = wire.cipher.one(exp.server_port)
    cr, sr = hello_randoms(wire.path)
    hs = server_hellos(wire.path)
    sid = suite if suite is not None else hs[0]["suite"]
    with open(keys, "a") as f:
        f.write(f"# TUPLE {cs.client[0]}:{cs.client[1]} {cs.server[0]}:{cs.server[1]} {cr} {sr} "
                f"{'0304' if version == '1.3' else '0303'} "
                f"{format(sid, '04x') if tuple_suite else '-'}\n")
    s2c = cs.data_pkts(1)
    cut = s2c[len(s2c) // 2][0]  # frame number: everything of the connection before it goes
    mid = env.path("midstream.pcap")
    wire.cipher.pcap.write(mid, wire.cipher.pcap.packets[cut - 1:])
    clear = env.path("clear.pcap")
    run = decrypt(env, [mid], [keys], clear, key_wait="1s")
    check_counters(run, conns=1, decrypted=1, auth=0, gap=0)
    check(run.stat("placed_conns") == 1 and run.stat("place_failures") == 0 and
          run.stat("key_tuples") == 1, f"placement counters: {run.stats()}")
    cap = judge(clear, ts_window=wire.cipher.window())
    st = cap.one(client_port=cs.client[1], server_port=cs.server[1])
    check(st.client == cs.client and st.server == cs.server,
          f"ends {st.client} {st.server}, want {cs.client} {cs.server}")
    got = st.direction(1)["data"]
    check(len(got) >= len(exp.s2c) // 3 and exp.s2c.endswith(got),
          f"{len(got)} bytes server to client: not the tail of the {len(exp.s2c)} it sent")
    c2s = st.direction(0)["data"]
    check(exp.c2s.endswith(c2s), f"{len(c2s)} bytes client to server: not the tail of what "
          f"it sent")
    return run


@timeout(90)
def test_midstream_tls12_chacha20_searches_the_sequence(env):
    """ChaCha20-Poly1305 has no explicit nonce: the sequence number is found by trial."""
    midstream_case(env, "1.2", ["-tls1_2", "-cipher", "ECDHE-RSA-CHACHA20-POLY1305"])


@timeout(90)
def test_midstream_tls12_gcm(env):
    """AES-GCM: its explicit nonce is the sequence number, tried first."""
    midstream_case(env, "1.2", ["-tls1_2", "-cipher", "ECDHE-RSA-AES128-GCM-SHA256"])


@timeout(90)
def test_midstream_tls12_cbc_etm(env):
    """AES-CBC with encrypt-then-MAC, which the TUPLE line does not say: both are tried."""
    run = midstream_case(env, "1.2", ["-tls1_2", "-cipher", "ECDHE-RSA-AES256-SHA384"])


@timeout(90)
def test_midstream_tls13_without_suite(env):
    """A TUPLE line without its suite (GnuTLS writes none): TLS 1.3 ChaCha20 is found
    among the SHA-256 suites."""
    a = ["-ciphersuites", "TLS_CHACHA20_POLY1305_SHA256"]
    midstream_case(env, "1.3", a + ["-tls1_3"], srv_args=a, tuple_suite=False)
