# Shared helpers for the integration tests: processes, agent, servers, and the tshark-based pcap judge.
"""Helpers for tests/integration (standard library only).

A test is a function test_NAME(env) in a module test_*.py; `env` is an Env
giving a private temp dir and tracking every process the test starts, so the
runner can kill them all however the test ends. Captures are judged by tshark
(read_capture) and compared byte-exact with what the programs really sent and
received (the recording server logs, or the programs' own output files).
"""

import errno
import hashlib
import json
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
BUILD = os.path.join(ROOT, os.environ.get("BUILD", "build"))
TLSMIRROR = os.path.join(BUILD, "tlsmirror")
LIBRARY = os.path.join(BUILD, "libtlsmirror.so")
PROGS = os.path.join(BUILD, "progs")
HELPERS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "helpers")
PYTHON = sys.executable


def _sanitized():
    """The build under test was made with SANITIZER=... (its agent links ASan/UBSan)."""
    if os.environ.get("SANITIZER"):
        return True
    try:
        with open(TLSMIRROR, "rb") as f:
            data = f.read()
    except OSError:
        return False
    return b"__asan_init" in data or b"__ubsan_handle" in data


# Figures that sanitizers change by design (ASan's shadow memory and quarantine in
# the agent's RSS, UBSan's runtime and libstdc++ staying mapped after the capture
# library's dlclose) are not judged under a sanitizer build.
SANITIZED = _sanitized()

TSHARK_OPTS = ["-o", "tcp.check_checksum:TRUE", "-o", "ip.check_checksum:TRUE",
               "-o", "tcp.relative_sequence_numbers:FALSE"]

TLS_PATTERNS = (b"\x16\x03", b"\x17\x03")


class Fail(AssertionError):
    """A test assertion failed; the message says what was expected and seen."""


class Skip(Exception):
    """The test cannot run here for a reason outside the product (e.g. no IPv6)."""


def check(cond, msg):
    if not cond:
        raise Fail(msg)


def timeout(seconds):
    """Decorator: the runner aborts the test after this many seconds."""
    def deco(fn):
        fn.timeout = seconds
        return fn
    return deco


def need_tool(name):
    path = shutil.which(name)
    check(path is not None, f"missing tool {name!r} (scripts/deps.sh installs it)")
    return path


def need_build(path):
    check(os.path.exists(path), f"missing build output {os.path.relpath(path, ROOT)} "
          f"(run make BUILD={os.path.relpath(BUILD, ROOT)} all)")
    return path


def prog(name):
    return need_build(os.path.join(PROGS, name))


def gen_bytes(n, seed):
    """Deterministic pseudo-random bytes without any 0x03 byte, so no TLS
    record header (0x16 0x03 / 0x17 0x03) can appear in test data, reversed or not."""
    return random.Random(seed).randbytes(n).replace(b"\x03", b"\xfc")


def digits(n, seed):
    """n bytes of digit lines: s_server/s_client treat some leading letters as commands."""
    r = random.Random(seed)
    lines, total = [], 0
    while total < n:
        line = "".join(r.choice("0123456789") for _ in range(r.randint(10, 120))) + "\n"
        lines.append(line)
        total += len(line)
    return "".join(lines).encode()[:n - 1] + b"\n"


def feed(proc, data):
    """Writes data to proc's stdin (a pipe) from a daemon thread; returns the thread."""
    def run():
        try:
            proc.popen.stdin.write(data)
            proc.popen.stdin.flush()
        except (BrokenPipeError, ValueError, OSError):
            pass
    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t


def free_port(family=socket.AF_INET):
    addr = "::1" if family == socket.AF_INET6 else "127.0.0.1"
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.bind((addr, 0))
        return s.getsockname()[1]


def have_ipv6():
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


def wait_until(pred, timeout_s, what, interval=0.05):
    """Polls pred() until truthy; raises Fail naming `what` after timeout_s."""
    deadline = time.monotonic() + timeout_s
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() > deadline:
            raise Fail(f"timed out after {timeout_s}s waiting for {what}")
        time.sleep(interval)


def wait_listening(port, timeout_s=10, addr="127.0.0.1", proc=None):
    """Waits until something accepts TCP connections on addr:port (a server
    started in the background); fails early if proc (a Proc) exited."""
    def up():
        if proc is not None and not proc.alive():
            raise Fail(f"{proc.name} exited before listening on {addr}:{port}: {short(proc.err())}")
        try:
            with socket.create_connection((addr, port), timeout=0.5):
                return True
        except OSError:
            return False
    wait_until(up, timeout_s, f"a listener on {addr}:{port}")


def short(b, n=300):
    """Printable excerpt of bytes or text for failure messages."""
    if isinstance(b, bytes):
        b = b.decode("utf-8", "replace")
    b = b.strip()
    return b if len(b) <= n else b[:n] + f"... ({len(b)} chars)"


# ---------------------------------------------------------------- certificates

_CERTS = {}


def certs():
    """Self-signed certificate for localhost/127.0.0.1/::1, made once per run
    in a temp dir (never committed). Returns dict cert, key."""
    if _CERTS:
        return _CERTS
    d = tempfile.mkdtemp(prefix="tlsmirror-certs-")
    cert, key = os.path.join(d, "cert.pem"), os.path.join(d, "key.pem")
    r = subprocess.run([need_tool("openssl"), "req", "-x509", "-newkey", "ec",
                        "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                        "-keyout", key, "-out", cert, "-days", "2", "-subj", "/CN=localhost",
                        "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1,IP:::1"],
                       capture_output=True, timeout=30)
    check(r.returncode == 0, f"openssl req failed: {short(r.stderr)}")
    _CERTS.update(dir=d, cert=cert, key=key)
    return _CERTS


def remove_certs():
    if _CERTS:
        shutil.rmtree(_CERTS["dir"], ignore_errors=True)
        _CERTS.clear()


# ---------------------------------------------------------------- processes

class Proc:
    """A process the test started, in its own session (pgid == pid)."""

    def __init__(self, name, popen, out_path, err_path):
        self.name, self.popen = name, popen
        self.pid = popen.pid
        self.out_path, self.err_path = out_path, err_path

    def alive(self):
        return self.popen.poll() is None

    def wait(self, timeout_s):
        try:
            return self.popen.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            raise Fail(f"{self.name} (pid {self.pid}) still running after {timeout_s}s; "
                       f"stderr: {short(self.err())}") from None

    def signal(self, sig):
        try:
            os.kill(self.pid, sig)
        except ProcessLookupError:
            pass

    def kill_group(self):
        try:
            os.killpg(self.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass

    def out(self):
        return _read(self.out_path)

    def err(self):
        return _read(self.err_path)


def _read(path):
    if not path or not os.path.exists(path):
        return b""
    with open(path, "rb") as f:
        return f.read()


class Env:
    """Per-test temp dir and process registry; cleanup() kills everything."""

    def __init__(self, name):
        self.name = name
        self.dir = tempfile.mkdtemp(prefix=f"tlsmirror-it-{name[:20]}-")
        self.procs = []
        self.agents = []
        self.t0 = time.time()
        self.n = 0

    def path(self, *parts):
        return os.path.join(self.dir, *parts)

    def spawn(self, name, argv, env=None, stdin=subprocess.DEVNULL, stdout=None,
              cwd=None, extra_env=None):
        """Starts argv; stdout/stderr go to files NAME.out/NAME.err unless
        stdout=subprocess.PIPE. Returns a Proc."""
        self.n += 1
        tag = f"{self.n:02d}-{name}"
        out_path, err_path = self.path(tag + ".out"), self.path(tag + ".err")
        if env is None:
            # the test runner's own environment, minus anything that would
            # capture or configure a capture behind the test's back
            e = {k: v for k, v in os.environ.items()
                 if k != "LD_PRELOAD" and not k.startswith("TLSMIRROR_")}
        else:
            e = dict(env)
        e.update(extra_env or {})
        out_f = open(out_path, "wb") if stdout is None else stdout
        err_f = open(err_path, "wb")
        try:
            p = subprocess.Popen(argv, stdin=stdin, stdout=out_f, stderr=err_f, env=e,
                                 cwd=cwd or self.dir, start_new_session=True)
        except FileNotFoundError:
            raise Fail(f"cannot start {argv[0]}: not found") from None
        finally:
            if stdout is None:
                out_f.close()
            err_f.close()
        pr = Proc(name, p, out_path if stdout is None else None, err_path)
        self.procs.append(pr)
        return pr

    def run(self, name, argv, timeout_s=60, **kw):
        """spawn + wait; returns (rc, stdout bytes, stderr bytes)."""
        p = self.spawn(name, argv, **kw)
        rc = p.wait(timeout_s)
        return rc, p.out(), p.err()

    def captured(self, name, sock, argv, ring=None, **kw):
        """Starts argv under the capture library via `tlsmirror run`."""
        need_build(TLSMIRROR)
        need_build(LIBRARY)
        extra = dict(kw.pop("extra_env", None) or {})
        if ring:
            extra["TLSMIRROR_RING_SIZE"] = ring
        return self.spawn(name, [TLSMIRROR, "run", "--socket", sock, "--"] + argv,
                          extra_env=extra, **kw)

    def cleanup(self, keep=False):
        for p in reversed(self.procs):
            p.kill_group()
        for p in self.procs:
            try:
                p.popen.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass
            for s in (p.popen.stdin, p.popen.stdout):
                if s:
                    try:
                        s.close()
                    except OSError:
                        pass
        if not keep:
            shutil.rmtree(self.dir, ignore_errors=True)


# ---------------------------------------------------------------- nginx

NGINX_PREAMBLE = """
worker_processes {workers};
master_process on;
user root;
pid {{prefix}}/nginx.pid;
error_log {{prefix}}/error.log warn;
events {{{{ worker_connections 1024; }}}}
http {{{{
    access_log off;
    client_body_temp_path {{prefix}}/tmp/body;
    proxy_temp_path {{prefix}}/tmp/proxy;
    fastcgi_temp_path {{prefix}}/tmp/fastcgi;
    uwsgi_temp_path {{prefix}}/tmp/uwsgi;
    scgi_temp_path {{prefix}}/tmp/scgi;
    keepalive_requests 100000;
"""


def nginx_conf(workers, http_body):
    """An nginx.conf template for a test prefix: `workers` worker processes as root,
    pid, logs and temp paths inside {prefix}, no access log; http_body (the server
    blocks and any extra http directives, itself a str.format template using
    {prefix}, {port}, ...) is appended and the http block closed."""
    return NGINX_PREAMBLE.format(workers=workers) + http_body + "}}\n"


def start_nginx(env, sock, prefix, conf_text, workers):
    """Writes conf_text (formatted) to PREFIX/nginx.conf, starts nginx under the capture
    library (agent socket sock) and waits for its `workers` workers. Returns (Proc, worker pids)."""
    conf = os.path.join(prefix, "nginx.conf")
    with open(conf, "w") as f:
        f.write(conf_text)
    ngx = env.captured("nginx", sock, [need_tool("nginx"), "-p", prefix, "-e",
                                        os.path.join(prefix, "error.log"), "-c", conf,
                                        "-g", "daemon off;"])

    def workers_up():
        check(ngx.alive(), f"nginx exited: {short(ngx.err())}")
        try:
            with open(f"/proc/{ngx.pid}/task/{ngx.pid}/children") as f:
                kids = [int(k) for k in f.read().split()]
        except OSError:
            return None
        up = os.path.exists(os.path.join(prefix, "nginx.pid")) and len(kids) >= workers
        return kids if up else None
    return ngx, wait_until(workers_up, 15, f"nginx master with {workers} workers")


# ---------------------------------------------------------------- agent

def run_three_ways(env, name, argv, nosock):
    """Runs argv plain, with LD_PRELOAD of the library and under `tlsmirror run`,
    with no agent on nosock (fail-open tests). "OUT" in argv becomes a file of
    each run's own (env.path(NAME-MODE.out)). Returns [(rc, stdout, stderr)] in
    that order, as the programs printed them."""
    res = []
    for mode in ("plain", "preload", "run"):
        a = [x.replace("OUT", env.path(f"{name}-{mode}.out")) for x in argv]
        if mode == "plain":
            p = env.spawn(f"{name}-{mode}", a)
        elif mode == "preload":
            p = env.spawn(f"{name}-{mode}", a, extra_env={"LD_PRELOAD": LIBRARY,
                                                         "TLSMIRROR_SOCKET": nosock})
        else:
            p = env.spawn(f"{name}-{mode}", [TLSMIRROR, "run", "--socket", nosock, "--"] + a)
        rc = p.wait(60)
        res.append((rc, p.out(), p.err()))
    return res


def parse_stats(text):
    """'pid=.. k=v ..' lines and the 'total k=v ..' line -> (list of dicts, dict or None)."""
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    procs, total = [], None
    for line in text.splitlines():
        line = line.strip()
        kv = dict(re.findall(r"(\w+)=(\S*)", line))
        if line.startswith("pid="):
            procs.append(kv)
        elif line.startswith("total "):
            total = kv
    return procs, total


def stat_int(d, key):
    check(d is not None and key in d, f"stats line lacks {key}=: {d}")
    try:
        return int(d[key])
    except ValueError:
        raise Fail(f"stats {key}={d[key]!r} is not a number") from None


def proc_stats(procs, pid):
    for p in procs:
        if p.get("pid") == str(pid):
            return p
    return None


class Agent:
    """A tlsmirror agent writing to pcap (or stdout when pcap == '-') with -w, or
    with the output option out (--pcapng)."""

    def __init__(self, env, name="agent", pcap=None, args=(), sock=None, out="-w",
                 allow_bypass=False, prefix=()):
        self.env, self.out = env, out
        self.prefix = list(prefix)  # e.g. ["prlimit", "--nofile=1024:1024", "--"]
        self.allow_bypass = allow_bypass
        self.name = name
        self.sock = sock or env.path(name + ".sock")
        self.pcap = pcap or env.path(name + ".pcap")
        self.args = list(args)
        self.proc = None
        self.stderr_text = ""
        env.agents.append(self)

    def start(self, stdout=None):
        need_build(TLSMIRROR)
        argv = self.prefix + [TLSMIRROR, "--socket", self.sock] + self.args + [self.out, self.pcap]
        self.proc = self.env.spawn(self.name, argv, stdout=stdout)
        self.t_start = time.time()

        def ready():
            if not self.proc.alive():
                raise Fail(f"agent exited at start with {self.proc.popen.returncode}: "
                           f"argv {argv}; stderr: {short(self.proc.err())}")
            if not os.path.exists(self.sock):
                return False
            with socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET) as s:
                try:
                    s.connect(self.sock)
                    return True
                except OSError:
                    return False
        wait_until(ready, 10, f"agent socket {self.sock}")
        return self

    def stats(self):
        """Runs `tlsmirror stats`; returns (procs, total, raw text)."""
        r = subprocess.run([TLSMIRROR, "stats", "--socket", self.sock],
                           capture_output=True, timeout=10)
        check(r.returncode == 0, f"`tlsmirror stats` exited {r.returncode}: {short(r.stderr)}")
        procs, total = parse_stats(r.stdout)
        check(total is not None, f"`tlsmirror stats` printed no 'total' line: {short(r.stdout)}")
        return procs, total, r.stdout.decode("utf-8", "replace")

    def stop(self, sig=signal.SIGTERM, timeout_s=15, expect_rc=0):
        """Signals the agent, waits; returns (procs, total) parsed from its stderr."""
        self.proc.signal(sig)
        rc = self.proc.wait(timeout_s)
        self.stderr_text = self.proc.err().decode("utf-8", "replace")
        if expect_rc is not None:
            check(rc == expect_rc, f"agent exited {rc} after {signal.Signals(sig).name}, "
                  f"expected {expect_rc}; stderr: {short(self.stderr_text, 600)}")
        return parse_stats(self.stderr_text)

    def final_stats(self):
        procs, total = self.stop()
        check(total is not None, "agent printed no 'total' stats line on stderr at exit; "
              f"stderr: {short(self.stderr_text, 600)}")
        # every test doubles as a test that the bypass detector sees no ghosts
        check(self.allow_bypass or total.get("bypassed_conns", "0") == "0",
              f"the library counted connections that bypassed its hooks: {total}")
        return procs, total


# ---------------------------------------------------------------- recording server

class SrvConn:
    def __init__(self, meta, c2s, s2c):
        self.meta = meta
        self.peer, self.peer_port = meta["peer"], meta["peer_port"]
        self.local, self.local_port = meta["local"], meta["local_port"]
        self.c2s, self.s2c = c2s, s2c
        self.error = meta.get("error")


class RecServer:
    """helpers/recserver.py: a TLS server NOT under capture that logs the exact
    bytes of every connection (what the client sent, what it was sent)."""

    def __init__(self, env, mode="http", addr="127.0.0.1", body=None, rate=0, name="server"):
        c = certs()
        self.env, self.addr = env, addr
        self.logdir = env.path(name + "-log")
        os.mkdir(self.logdir)
        argv = [PYTHON, os.path.join(HELPERS, "recserver.py"), "--cert", c["cert"],
                "--key", c["key"], "--addr", addr, "--mode", mode, "--logdir", self.logdir]
        if body:
            argv += ["--body", body]
        if rate:
            argv += ["--rate", str(rate)]
        self.proc = env.spawn(name, argv)

        def ready():
            if not self.proc.alive():
                raise Fail(f"recserver exited: {short(self.proc.err())}")
            m = re.search(rb"READY (\d+)", self.proc.out())
            return int(m.group(1)) if m else None
        self.port = wait_until(ready, 15, "recserver READY")

    def conns(self, n=None, timeout_s=20):
        """The logged connections (sorted by number); with n, waits until n are logged."""
        def count():
            return len([f for f in os.listdir(self.logdir) if f.endswith(".json")])
        if n is not None:
            wait_until(lambda: count() >= n, timeout_s,
                       f"{n} connections logged by the server (have {count()})")
        out = []
        for f in sorted(os.listdir(self.logdir)):
            if not f.endswith(".json"):
                continue
            with open(os.path.join(self.logdir, f)) as fh:
                meta = json.load(fh)
            base = os.path.join(self.logdir, f[:-5])
            out.append(SrvConn(meta, _read(base + ".c2s"), _read(base + ".s2c")))
        out.sort(key=lambda c: c.meta["n"])
        for c in out:
            check(c.error is None, f"server connection {c.meta['n']} from port {c.peer_port} "
                  f"failed on the server side: {c.error}")
        return out


# ---------------------------------------------------------------- pcap judge

FIELDS = ["frame.number", "frame.time_epoch", "frame.len", "frame.cap_len", "eth.type",
          "tcp.stream", "ip.src", "ip.dst", "ipv6.src", "ipv6.dst", "ip.len", "ipv6.plen",
          "tcp.srcport", "tcp.dstport", "tcp.flags", "tcp.seq", "tcp.ack", "tcp.len",
          "tcp.checksum.status", "ip.checksum.status", "tcp.options.mss_val", "tcp.option_kind",
          "tcp.window_size_value", "tcp.payload"]

F = {name: i for i, name in enumerate(FIELDS)}
SYN, ACK, FIN, RST = 0x02, 0x10, 0x01, 0x04
M32 = 0xFFFFFFFF


class Seg:
    __slots__ = ("frame", "ts", "src", "sport", "dst", "dport", "flags", "seq", "ack",
                 "payload", "tcp_ck", "ip_ck", "mss", "opts", "family", "win",
                 "_stream", "_flen", "_caplen", "_iplen", "_ethtype")


class Stream:
    """One TCP stream of a capture, oriented by its SYN (client -> server)."""

    def __init__(self, idx, segs):
        self.idx, self.segs = idx, segs
        first = segs[0]
        self.client = (first.src, first.sport)
        self.server = (first.dst, first.dport)
        self.family = first.family
        self._dirs = {}

    def name(self):
        return (f"stream {self.idx} ({self.client[0]}:{self.client[1]} -> "
                f"{self.server[0]}:{self.server[1]})")

    def side(self, seg):
        return 0 if (seg.src, seg.sport) == self.client else 1

    def isn(self, d):
        for s in self.segs:
            if s.flags & SYN and self.side(s) == d:
                return s.seq
        return None

    def direction(self, d):
        """Reassembles direction d (0 c2s, 1 s2c) from payloads ordered by seq.
        Returns dict data (bytes present, in order), chunks [(offset, bytes)],
        gaps [(offset, length)], end (offset of FIN or end of data), problems."""
        if d in self._dirs:
            return self._dirs[d]
        isn = self.isn(d)
        problems, pieces, fin_off = [], [], None
        base = (isn + 1) & M32 if isn is not None else None
        for s in self.segs:
            if self.side(s) != d:
                continue
            if base is None:
                base = s.seq
            off = (s.seq - base) & M32
            if s.payload:
                pieces.append((off, s.payload, s.frame))
            if s.flags & FIN:
                fo = (off + len(s.payload)) & M32
                if fin_off is not None:
                    problems.append(f"second FIN in frame {s.frame}")
                fin_off = fo
        pieces.sort(key=lambda p: p[0])
        chunks, gaps, pos = [], [], 0
        for off, data, frame in pieces:
            if off > pos:
                gaps.append((pos, off - pos))
            elif off < pos:
                problems.append(f"frame {frame}: segment at offset {off} overlaps data "
                                f"up to {pos} (retransmission/overlap)")
                continue
            chunks.append((off, data))
            pos = off + len(data)
        if fin_off is not None and fin_off > pos:
            gaps.append((pos, fin_off - pos))
            pos = fin_off
        elif fin_off is not None and fin_off < pos:
            problems.append(f"FIN at offset {fin_off} is before the end of data {pos}")
        res = dict(data=b"".join(c[1] for c in chunks), chunks=chunks, gaps=gaps,
                   end=pos, fin=fin_off, problems=problems)
        self._dirs[d] = res
        return res

    def bytes(self, d):
        r = self.direction(d)
        check(not r["gaps"], f"{self.name()} {'c2s' if d == 0 else 's2c'}: unexpected "
              f"sequence gaps {r['gaps'][:5]}")
        return r["data"]

    def gap_total(self):
        return sum(n for d in (0, 1) for _, n in self.direction(d)["gaps"])


class Capture:
    def __init__(self, path, segs, analysis, header):
        self.path, self.segs, self.analysis, self.header = path, segs, analysis, header
        by = {}
        for s in segs:
            by.setdefault(s._stream, []).append(s)
        self.streams = [Stream(i, v) for i, v in sorted(by.items())]

    def syn_streams(self):
        return [s for s in self.streams if s.segs[0].flags & (SYN | ACK) == SYN]

    def find(self, client_port=None, server_port=None, client_addr=None):
        out = [s for s in self.streams
               if (client_port is None or s.client[1] == client_port)
               and (server_port is None or s.server[1] == server_port)
               and (client_addr is None or s.client[0] == client_addr)]
        return out

    def one(self, **kw):
        out = self.find(**kw)
        check(len(out) == 1, f"expected exactly one stream with {kw} in {self.path}, found "
              f"{len(out)}: {[s.name() for s in out]}; all streams: {self.describe()}")
        return out[0]

    def describe(self, n=12):
        d = [f"{s.client[0]}:{s.client[1]}->{s.server[0]}:{s.server[1]}"
             f"(c2s {s.direction(0)['end']}B, s2c {s.direction(1)['end']}B)"
             for s in self.streams[:n]]
        more = f" ... {len(self.streams) - n} more" if len(self.streams) > n else ""
        return f"{len(self.streams)} streams: " + ", ".join(d) + more


def pcapng_header(data, path):
    """(nanosecond, linktype, snaplen) of a pcapng file's first interface (if_tsresol 9 = ns)."""
    order = "little" if data[8:12] == b"\x4d\x3c\x2b\x1a" else "big"
    check(data[8:12] in (b"\x4d\x3c\x2b\x1a", b"\x1a\x2b\x3c\x4d"),
          f"{path}: pcapng without its byte-order magic ({data[8:12].hex()})")
    u32 = lambda at: int.from_bytes(data[at:at + 4], order)
    idb = u32(4)
    check(len(data) >= idb + 20 and u32(idb) == 1,
          f"{path}: the Section Header is not followed by an Interface Description")
    linktype = int.from_bytes(data[idb + 8:idb + 10], order)
    snaplen, end, at, tsresol = u32(idb + 12), idb + u32(idb + 4) - 4, idb + 16, 6
    while at + 4 <= end:
        code = int.from_bytes(data[at:at + 2], order)
        n = int.from_bytes(data[at + 2:at + 4], order)
        if code == 0:
            break
        if code == 9 and n == 1:
            tsresol = data[at + 4]
        at += 4 + (n + 3) // 4 * 4
    return tsresol == 9, linktype, snaplen


def pcap_header(path):
    """Checks the classic pcap global header (or a pcapng Section Header and
    first Interface Description) and returns (nanosecond, linktype, snaplen)."""
    with open(path, "rb") as f:
        h = f.read(65536)
    check(len(h) >= 24, f"{path}: {len(h)} bytes, no complete pcap header")
    if h[0:4] == b"\x0a\x0d\x0d\x0a":
        return pcapng_header(h, path)
    magic = int.from_bytes(h[0:4], "little")
    order = "little"
    if magic in (0xd4c3b2a1, 0x4d3cb2a1):
        order = "big"
        magic = int.from_bytes(h[0:4], "big")
    check(magic in (0xa1b2c3d4, 0xa1b23c4d),
          f"{path}: neither classic pcap nor pcapng (magic {h[0:4].hex()})")
    snaplen = int.from_bytes(h[16:20], order)
    linktype = int.from_bytes(h[20:24], order)
    return magic == 0xa1b23c4d, linktype, snaplen


def pcap_complete_prefix(data):
    """Length of the longest prefix of a classic pcap byte string made of whole records."""
    if len(data) < 24:
        return 0
    order = "big" if data[0:4] in (b"\xa1\xb2\xc3\xd4", b"\xa1\xb2\x3c\x4d") else "little"
    pos = 24
    while pos + 16 <= len(data):
        incl = int.from_bytes(data[pos + 8:pos + 12], order)
        if pos + 16 + incl > len(data):
            break
        pos += 16 + incl
    return pos


def _ts_ns(s):
    if "." in s:
        a, b = s.split(".", 1)
        return int(a) * 10**9 + int((b + "000000000")[:9])
    return int(s) * 10**9


def _int(v, default=None):
    if v == "":
        return default
    return int(v, 0)


def tshark_fields(path, fields, display_filter=None, extra=()):
    argv = [need_tool("tshark"), "-n", "-r", path] + TSHARK_OPTS + list(extra)
    if display_filter:
        argv += ["-Y", display_filter]
    argv += ["-T", "fields", "-E", "separator=\t", "-E", "occurrence=a", "-E", "aggregator=,"]
    for f in fields:
        argv += ["-e", f]
    r = subprocess.run(argv, capture_output=True, timeout=300)
    err = r.stderr.decode("utf-8", "replace")
    err = "\n".join(l for l in err.splitlines() if "Running as user" not in l
                    and "could be dangerous" not in l).strip()
    check(r.returncode == 0 and not err, f"tshark could not read {path} cleanly "
          f"(exit {r.returncode}): {short(err, 600)}")
    return [line.split("\t") for line in r.stdout.decode("utf-8", "replace").splitlines()]


def read_capture(path):
    """Reads a pcap with tshark into a Capture (no judging yet)."""
    check(os.path.exists(path), f"capture file {path} does not exist")
    header = pcap_header(path)
    rows = tshark_fields(path, FIELDS)
    segs = []
    for r in rows:
        check(len(r) == len(FIELDS), f"tshark row with {len(r)} fields: {r[:6]}")
        check(r[F["tcp.stream"]] != "", f"{path} frame {r[0]} is not TCP (eth.type "
              f"{r[F['eth.type']]})")
        s = Seg()
        s._stream = int(r[F["tcp.stream"]])
        s.frame = int(r[F["frame.number"]])
        s.ts = _ts_ns(r[F["frame.time_epoch"]])
        if r[F["ip.src"]]:
            s.family, s.src, s.dst = 4, r[F["ip.src"]], r[F["ip.dst"]]
        else:
            s.family, s.src, s.dst = 6, r[F["ipv6.src"]], r[F["ipv6.dst"]]
        s.sport, s.dport = int(r[F["tcp.srcport"]]), int(r[F["tcp.dstport"]])
        s.flags = int(r[F["tcp.flags"]], 16)
        s.seq, s.ack = int(r[F["tcp.seq"]]), int(r[F["tcp.ack"]])
        s.payload = bytes.fromhex(r[F["tcp.payload"]].replace(":", ""))
        check(len(s.payload) == int(r[F["tcp.len"]]), f"frame {s.frame} (flags "
              f"{s.flags:#x}): tcp.len {r[F['tcp.len']]} but tshark shows {len(s.payload)} "
              f"payload bytes")
        s.tcp_ck = _int(r[F["tcp.checksum.status"]])
        s.ip_ck = _int(r[F["ip.checksum.status"]])
        s.mss = _int(r[F["tcp.options.mss_val"]])
        s.opts = [int(x) for x in r[F["tcp.option_kind"]].split(",") if x]
        s.win = _int(r[F["tcp.window_size_value"]])
        s._flen = int(r[F["frame.len"]])
        s._caplen = int(r[F["frame.cap_len"]])
        s._iplen = _int(r[F["ip.len"]]) if s.family == 4 else _int(r[F["ipv6.plen"]])
        s._ethtype = r[F["eth.type"]]
        segs.append(s)
    analysis = []
    for r in tshark_fields(path, ["frame.number", "tcp.stream", "_ws.expert.message"],
                           display_filter="tcp.analysis.flags"):
        analysis.append((int(r[0]), int(r[1]) if r[1] else -1, r[2]))
    return Capture(path, segs, analysis, header)


CAPTURE_FMT = "classic pcap or pcapng, nanosecond timestamps, Ethernet"


REUSED_PORTS = "A new tcp session is started with the same ports as an earlier session"
SYN_CHAT = "Connection establish request (SYN)"  # chat-level, on every SYN; shown with a flag


def _port_reuse_problems(path, cap):
    """For judge(allow_port_reuse=True): the frames tshark flags
    tcp.analysis.reused_ports, each checked to be a real kernel reuse: the
    opening SYN of its own tcp.stream, with an earlier stream of the same
    address/port pair that ended (FIN both ways) before it. Returns (frames
    whose reuse message is excused, problems)."""
    flagged = {int(r[0]) for r in tshark_fields(path, ["frame.number"],
                                                display_filter="tcp.analysis.reused_ports")}
    first = {st.segs[0].frame: st for st in cap.streams}
    excused, problems = set(), []
    for frame in sorted(flagged):
        st = first.get(frame)
        if st is None or st.segs[0].flags & (SYN | ACK | FIN | RST) != SYN:
            problems.append(f"frame {frame}: ports reused by a packet that is not the opening "
                            f"SYN of a new tcp.stream")
            continue
        ends = {(st.client, st.server), (st.server, st.client)}
        earlier = [e for e in cap.streams if e.idx < st.idx
                   and (e.client, e.server) in ends]
        done = [e for e in earlier
                if all(any(s.flags & FIN and e.side(s) == d for s in e.segs) for d in (0, 1))
                and max(s.ts for s in e.segs) <= st.segs[0].ts]
        if not earlier or len(done) != len(earlier):
            problems.append(f"{st.name()}: SYN in frame {frame} reuses the ports of a "
                            f"connection that had not ended (FIN both ways) before it")
            continue
        excused.add(frame)
    return excused, problems


def judge(path, mss=1460, allow_analysis=(), allow_gaps=False, binary=None,
          ts_window=None, synthetic_ok=False, allow_port_reuse=False):
    """Reads and judges a capture produced by the agent. Checks the whole
    file: pcap format, checksums, frame lengths, and per stream: 3-way
    handshake with MSS/wscale/SACK-permitted, segments <= MSS, every data
    segment acknowledged, FIN from both sides at the end, no RST,
    nondecreasing timestamps, no TLS record header bytes in the clear text
    (except streams for which binary(stream) is true), no tcp.analysis flags
    other than the expert messages containing a string of allow_analysis,
    no sequence gaps unless allow_gaps, no synthetic 198.18.0.0/15 address
    (every test connection has a real socket) unless synthetic_ok. With
    allow_port_reuse, tshark's "same ports as an earlier session" is not an
    anomaly where it is a kernel reusing a client port: the frame is the
    opening SYN of a new tcp.stream and every earlier stream of that pair
    had ended (FIN both ways); any other flag on that frame still counts,
    and every stream is still judged on its own. Returns the Capture; raises Fail
    listing every problem found (up to 30)."""
    cap = read_capture(path)
    nano, linktype, snaplen = cap.header
    problems = []
    if not nano:
        problems.append(f"timestamps are not in nanoseconds, expected {CAPTURE_FMT}")
    if linktype != 1:
        problems.append(f"pcap linktype {linktype}, expected 1 (Ethernet)")
    for s in cap.segs:
        where = f"frame {s.frame}"
        if s.tcp_ck != 1:
            problems.append(f"{where}: TCP checksum status {s.tcp_ck} (1 = good)")
        if s.family == 4 and s.ip_ck != 1:
            problems.append(f"{where}: IPv4 header checksum status {s.ip_ck} (1 = good)")
        want_eth = "0x0800" if s.family == 4 else "0x86dd"
        if s._ethtype != want_eth:
            problems.append(f"{where}: eth.type {s._ethtype}, expected {want_eth}")
        iphdr = 0 if s.family == 4 else 40
        if s._iplen is not None and 14 + iphdr + s._iplen != s._flen:
            problems.append(f"{where}: IP length {s._iplen} does not match frame length {s._flen}")
        if s._caplen != s._flen:
            problems.append(f"{where}: frame truncated ({s._caplen} of {s._flen} bytes)")
        if ts_window and not (ts_window[0] <= s.ts <= ts_window[1]):
            problems.append(f"{where}: timestamp {s.ts / 1e9:.3f} outside the test's run "
                            f"{ts_window[0] / 1e9:.3f}..{ts_window[1] / 1e9:.3f}")
    for st in cap.streams:
        problems += _judge_stream(st, mss, allow_gaps, not (binary and binary(st)))
        if not synthetic_ok and any(a.startswith(("198.18.", "198.19.")) for a in
                                    (st.client[0], st.server[0])):
            problems.append(f"{st.name()}: synthetic address: the real socket was not found")
    excused = set()
    if allow_port_reuse:
        excused, reuse = _port_reuse_problems(path, cap)
        problems += reuse
    for frame, stream, msg in cap.analysis:
        if frame in excused:
            msg = ",".join(m for m in msg.split(",")
                           if not m.startswith((REUSED_PORTS, SYN_CHAT)))
            if not msg:
                continue
        if not any(a in msg for a in allow_analysis):
            problems.append(f"frame {frame} (stream {stream}): tshark analysis flag: {msg}")
    if problems:
        more = f"\n  ... {len(problems) - 30} more" if len(problems) > 30 else ""
        raise Fail(f"capture {path} has {len(problems)} problem(s):\n  "
                   + "\n  ".join(problems[:30]) + more + "\n  capture: " + cap.describe())
    return cap


def _judge_stream(st, mss, allow_gaps, check_tls):
    p = []
    n = st.name()
    segs = st.segs
    if len(segs) < 3:
        return [f"{n}: only {len(segs)} packets"]
    a, b, c = segs[0], segs[1], segs[2]
    if a.flags & (SYN | ACK | FIN | RST) != SYN:
        p.append(f"{n}: first packet (frame {a.frame}) flags {a.flags:#x}, expected SYN")
    if st.side(b) != 1 or b.flags & (SYN | ACK | FIN | RST) != SYN | ACK or \
            b.ack != (a.seq + 1) & M32:
        p.append(f"{n}: second packet (frame {b.frame}) is not the SYN/ACK for the SYN")
    if st.side(c) != 0 or c.flags & (SYN | ACK | FIN | RST) != ACK or \
            c.seq != (a.seq + 1) & M32 or c.ack != (b.seq + 1) & M32:
        p.append(f"{n}: third packet (frame {c.frame}) is not the handshake's ACK")
    fam_mss = mss if st.family == 4 else mss - 20
    for s in (a, b):
        if s.flags & SYN:
            if s.mss != fam_mss:
                p.append(f"{n}: SYN frame {s.frame} MSS option {s.mss}, expected {fam_mss}")
            for kind, what in ((3, "window scale"), (4, "SACK permitted")):
                if kind not in s.opts:
                    p.append(f"{n}: SYN frame {s.frame} lacks the {what} option")
    last_ts = 0
    fins = [0, 0]
    for s in segs:
        if s.ts < last_ts:
            p.append(f"{n}: frame {s.frame} timestamp goes backwards")
        last_ts = max(last_ts, s.ts)
        if s.flags & RST:
            p.append(f"{n}: RST in frame {s.frame}")
        if len(s.payload) > fam_mss:
            p.append(f"{n}: frame {s.frame} carries {len(s.payload)} bytes > MSS {fam_mss}")
        if s.flags & SYN and s is not a and s is not b:
            p.append(f"{n}: extra SYN in frame {s.frame}")
        if s.flags & FIN:
            fins[st.side(s)] += 1
        elif fins[st.side(s)] and s.payload:
            p.append(f"{n}: data after FIN in frame {s.frame}")
    for d, dn in ((0, "c2s"), (1, "s2c")):
        r = st.direction(d)
        p += [f"{n} {dn}: {x}" for x in r["problems"]]
        if r["fin"] is None:
            p.append(f"{n}: no FIN from the {'client' if d == 0 else 'server'}")
        if r["gaps"] and not allow_gaps:
            p.append(f"{n} {dn}: sequence gaps (offset, length) {r['gaps'][:5]}")
        if check_tls:
            for pat in TLS_PATTERNS:
                i = r["data"].find(pat)
                if i >= 0:
                    p.append(f"{n} {dn}: TLS record header bytes {pat.hex()} at offset {i} "
                             f"of the clear text")
                    break
    p += _judge_acks(st)
    return p


def _judge_acks(st):
    """Every data segment and FIN must be acknowledged by a later packet of the other side."""
    p = []
    isn = [st.isn(0), st.isn(1)]
    if None in isn:
        return p
    best_ack = [None, None]  # highest ack seen so far from side d (as offset into the other dir)
    pending = [[], []]       # (end offset, frame) sent by side d not yet acked
    for s in st.segs:
        d = st.side(s)
        o = 1 - d
        if s.flags & ACK:
            a = (s.ack - isn[o] - 1) & M32
            pending[o] = [(e, f) for e, f in pending[o] if e > a]
        if s.payload or s.flags & FIN:
            end = ((s.seq - isn[d] - 1) & M32) + len(s.payload) + (1 if s.flags & FIN else 0)
            pending[d].append((end, s.frame))
    for d in (0, 1):
        for e, f in pending[d][:3]:
            p.append(f"{st.name()}: {'client' if d == 0 else 'server'} segment in frame {f} "
                     f"(up to offset {e}) never acknowledged")
    return p


def first_diff(a, b):
    n = min(len(a), len(b))
    for i in range(0, n, 4096):
        if a[i:i + 4096] != b[i:i + 4096]:
            for j in range(i, min(i + 4096, n)):
                if a[j] != b[j]:
                    return j
    return n if len(a) != len(b) else -1


def diff_msg(what, expected, got):
    i = first_diff(expected, got)
    if i < 0:
        return None
    return (f"{what}: expected {len(expected)} bytes, capture has {len(got)}; first difference "
            f"at offset {i}: expected {expected[i:i + 24]!r}, got {got[i:i + 24]!r}"
            + (f" (capture = expected repeated?)" if got == expected * 2 else ""))


def assert_bytes(what, expected, got):
    m = diff_msg(what, expected, got)
    check(m is None, m)


def check_stream(st, c2s=None, s2c=None, client=None, server=None):
    """Byte-exact comparison of a stream's two directions and its addresses."""
    if client is not None:
        check(st.client == tuple(client), f"{st.name()}: client end {st.client}, "
              f"expected {tuple(client)}")
    if server is not None:
        check(st.server == tuple(server), f"{st.name()}: server end {st.server}, "
              f"expected {tuple(server)}")
    if c2s is not None:
        assert_bytes(f"{st.name()} c2s", c2s, st.bytes(0))
    if s2c is not None:
        assert_bytes(f"{st.name()} s2c", s2c, st.bytes(1))


def check_against_server(cap, conns, exact_count=True):
    """Each server-logged connection must be one stream with the real
    addresses and exactly the bytes the server received and sent. A client
    port the kernel handed out again (judge(allow_port_reuse=True)) is
    several server connections and as many streams of that pair: paired in
    order (server accept order, tcp.stream order)."""
    pair = {}
    for c in conns:
        pair.setdefault((c.peer_port, c.local_port), []).append(c)
    for c in conns:
        same = pair[(c.peer_port, c.local_port)]
        if len(same) == 1:
            st = cap.one(client_port=c.peer_port, server_port=c.local_port)
        else:
            sts = cap.find(client_port=c.peer_port, server_port=c.local_port)
            check(len(sts) == len(same), f"the server saw {len(same)} connections from port "
                  f"{c.peer_port} to {c.local_port}, the capture has {len(sts)} streams of "
                  f"that pair: {[s.name() for s in sts]}")
            st = sts[next(i for i, o in enumerate(same) if o is c)]
        check_stream(st, c2s=c.c2s, s2c=c.s2c, client=(c.peer, c.peer_port),
                     server=(c.local, c.local_port))
    if exact_count:
        syn = cap.syn_streams()
        check(len(syn) == len(conns), f"capture has {len(syn)} TCP connections, the server "
              f"saw {len(conns)}; {cap.describe()}")


# ---------------------------------------------------------------- HTTP parsing

def parse_h1_messages(data, responses):
    """Splits an HTTP/1.1 byte stream into (start line, headers dict, body) by
    Content-Length (no chunked support needed for these tests)."""
    out, pos = [], 0
    while pos < len(data):
        end = data.find(b"\r\n\r\n", pos)
        check(end >= 0, f"incomplete HTTP header at offset {pos}: {data[pos:pos + 60]!r}")
        lines = data[pos:end].split(b"\r\n")
        hdrs = {}
        for l in lines[1:]:
            k, _, v = l.partition(b":")
            hdrs[k.strip().lower()] = v.strip()
        n = int(hdrs.get(b"content-length", b"0"))
        if responses and lines[0].split(b" ")[1:2] == [b"100"]:
            n = 0
        body = data[end + 4:end + 4 + n]
        check(len(body) == n, f"HTTP body at offset {end + 4} cut: {len(body)} of {n} bytes")
        out.append((lines[0], hdrs, body))
        pos = end + 4 + n
    return out


H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"


def parse_h2_frames(data, client):
    """Splits an HTTP/2 byte stream into frames (type, flags, stream id, payload)."""
    pos = 0
    if client:
        check(data.startswith(H2_PREFACE), f"c2s does not start with the HTTP/2 preface: "
              f"{data[:24]!r}")
        pos = len(H2_PREFACE)
    frames = []
    while pos < len(data):
        check(pos + 9 <= len(data), f"HTTP/2 frame header cut at offset {pos}")
        ln = int.from_bytes(data[pos:pos + 3], "big")
        typ, flags = data[pos + 3], data[pos + 4]
        sid = int.from_bytes(data[pos + 5:pos + 9], "big") & 0x7FFFFFFF
        payload = data[pos + 9:pos + 9 + ln]
        check(len(payload) == ln, f"HTTP/2 frame at offset {pos} cut: {len(payload)} of {ln}")
        frames.append((typ, flags, sid, payload))
        pos += 9 + ln
    return frames


def h2_data(frames):
    """DATA payloads per stream id, with padding removed."""
    out = {}
    for typ, flags, sid, payload in frames:
        if typ != 0:
            continue
        if flags & 0x8:
            pad = payload[0]
            payload = payload[1:len(payload) - pad]
        out[sid] = out.get(sid, b"") + payload
    return out


def sha(b):
    return hashlib.sha256(b).hexdigest()[:16]
