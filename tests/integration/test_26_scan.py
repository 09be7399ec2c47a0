# Integration test 26 (scan): tlsmirror scan on a mixed set of processes (nginx mirrored, python, node, Go, Java, wget) and on corrupted ELF files.
import os
import re
import shutil
import struct
import subprocess

from tmlib import (BUILD, LIBRARY, PYTHON, ROOT, TLSMIRROR, Agent, Fail, RecServer, Skip,
                   certs, check, free_port, gen_bytes, nginx_conf, short, start_nginx, timeout,
                   wait_until, need_tool)

GO_SRC = os.path.join(ROOT, "tests", "progs", "gotls", "main.go")
JAVA_SRC = os.path.join(ROOT, "tests", "progs", "JsseIdle.java")


def scan(sock, pids=()):
    """Runs tlsmirror scan; returns ({pid: {stack: fields}}, raw text)."""
    r = subprocess.run([TLSMIRROR, "scan", "--socket", sock] + [str(p) for p in pids],
                       capture_output=True, timeout=60)
    text = r.stdout.decode("utf-8", "replace")
    check(r.returncode == 0, f"scan exited {r.returncode}: {short(r.stderr)} {short(text)}")
    out = {}
    for line in text.splitlines():
        if not line.startswith("pid="):
            continue
        head, _, reason = line.partition(" reason=")
        kv = dict(re.findall(r"(\w+)=(\S*)", head))
        kv["reason"] = reason
        out.setdefault(int(kv["pid"]), {})[kv.get("stack", "?")] = kv
    return out, text


def expect(res, text, pid, stack, mirrored, reason_part=None):
    got = res.get(pid, {}).get(stack)
    check(got is not None, f"scan shows no {stack} for pid {pid}:\n{text}")
    check(got["mirrored"] == mirrored, f"pid {pid} {stack}: mirrored={got['mirrored']}, want "
          f"{mirrored}: {got}")
    if reason_part:
        check(reason_part in got["reason"], f"pid {pid} {stack}: reason {got['reason']!r} "
              f"lacks {reason_part!r}")


def ready(p, what):
    wait_until(lambda: b"ready" in p.out() or not p.alive(), 60, what)
    check(p.alive(), f"{what} exited: {short(p.out() + p.err())}")


def go_binaries(env):
    """The Go test program, built once per source change under build/progs/ (plain and stripped)."""
    go = shutil.which("go")
    if not go:
        raise Fail("go not installed (scripts/deps.sh installs golang-go)")
    out = []
    for name, flags in (("gotls", []), ("gotls-stripped", ["-ldflags=-s -w"])):
        dst = os.path.join(BUILD, "progs", name)
        if not os.path.exists(dst) or os.path.getmtime(dst) < os.path.getmtime(GO_SRC):
            os.makedirs(os.path.dirname(dst), exist_ok=True)
            e = dict(os.environ, GOCACHE=os.path.join(BUILD, "go-cache"),
                     GOPATH=os.path.join(BUILD, "go-path"), GOFLAGS="-mod=mod", GOTOOLCHAIN="local")
            r = subprocess.run([go, "build"] + flags + ["-o", dst, "main.go"], env=e,
                               cwd=os.path.dirname(GO_SRC), capture_output=True, timeout=300)
            check(r.returncode == 0, f"go build: {short(r.stderr, 600)}")
        out.append(dst)
    return out


def lib_has_gnutls():
    r = subprocess.run(["nm", "-D", "--defined-only", LIBRARY], capture_output=True)
    return b" gnutls_record_recv" in r.stdout


@timeout(240)
def test_scan_mixed(env):
    c = certs()
    agent = Agent(env).start()
    server = RecServer(env, body=_body(env), rate=4000)
    url = f"https://127.0.0.1:{server.port}/body"
    # nginx under the library, one request served: its worker is mirrored
    prefix = env.path("nginx")
    for d in ("html", "tmp", "logs"):
        os.makedirs(os.path.join(prefix, d))
    with open(os.path.join(prefix, "html", "x"), "wb") as f:
        f.write(b"x" * 100)
    port = free_port()
    ngx, workers = start_nginx(env, agent.sock, prefix, nginx_conf(1, """    server {{
        listen 127.0.0.1:{port} ssl;
        ssl_certificate {cert};
        ssl_certificate_key {key};
        root {prefix}/html;
    }}
""").format(prefix=prefix, port=port, cert=c["cert"], key=c["key"]), 1)
    rc, _, err = env.run("curl", [need_tool("curl"), "-sk", "-o", os.devnull,
                                  f"https://127.0.0.1:{port}/x"])
    check(rc == 0, f"curl: {err}")
    wait_until(lambda: str(workers[0]) in " ".join(p.get("pid", "") for p in agent.stats()[0]),
               10, "the agent sees the nginx worker")
    py = env.spawn("python", [PYTHON, "-c", "import ssl, time\nprint('ready', flush=True)\n"
                                          "time.sleep(120)"])
    node = env.spawn("node", [need_tool("node"), "-e", "require('https'); console.log('ready'); "
                                                      "setInterval(() => {}, 1000)"])
    wget = env.spawn("wget", [need_tool("wget"), "-q", "--no-check-certificate", "-O", os.devnull,
                              url])
    wget_run = env.spawn("wget-run", [TLSMIRROR, "run", "--socket", agent.sock, "--",
                                      need_tool("wget"), "-q", "--no-check-certificate", "-O",
                                      os.devnull, url])
    gos = [env.spawn(os.path.basename(b), [b, url]) for b in go_binaries(env)]
    java = None
    if shutil.which("java"):
        java = env.spawn("java", [shutil.which("java"), JAVA_SRC])
    for p, what in [(py, "python"), (node, "node")] + [(g, "go") for g in gos] + \
            ([(java, "java")] if java else []):
        ready(p, what)
    # wget is mid-download (the server sends 4 kB/s): its TLS library is loaded
    for w in (wget, wget_run):
        wait_until(lambda: any("libgnutls" in l for l in open(f"/proc/{w.pid}/maps")), 10,
                   "wget with GnuTLS loaded")
    pids = [ngx.pid, workers[0], py.pid, node.pid, wget.pid, wget_run.pid] + \
        [g.pid for g in gos] + ([java.pid] if java else [])
    res, text = scan(agent.sock, pids)
    print("  " + text.replace("\n", "\n  ").rstrip())
    expect(res, text, workers[0], "openssl", "yes", "hooks installed")
    expect(res, text, ngx.pid, "openssl", "waiting", "not seen it yet")
    expect(res, text, py.pid, "openssl", "no", f"tlsmirror attach {py.pid}")
    expect(res, text, node.pid, "static-openssl", "no", "key log")
    expect(res, text, wget.pid, "gnutls", "no", f"tlsmirror attach {wget.pid}")
    if lib_has_gnutls():
        check(res.get(wget_run.pid, {}).get("gnutls", {}).get("mirrored") in ("yes", "waiting"),
              f"wget under tlsmirror run:\n{text}")
    else:
        expect(res, text, wget_run.pid, "gnutls", "no", "no gnutls back-end")
    for g in gos:
        expect(res, text, g.pid, "go-crypto/tls", "no", "KeyLogWriter")
    if java:
        expect(res, text, java.pid, "java-jsse", "no", "JVM")
    # all processes: the same verdicts among the rest, and a summary line
    res_all, text_all = scan(agent.sock)
    check(re.search(r"^scanned=\d+ unreadable=\d+ agent=" + re.escape(agent.sock), text_all, re.M),
          f"scan of all processes: no summary line:\n{short(text_all, 800)}")
    for pid in (workers[0], node.pid):
        check(res_all.get(pid) == res.get(pid), f"pid {pid}: {res_all.get(pid)} vs {res.get(pid)}")
    if not java:
        raise Skip("java not installed: the JSSE case was not run (all others passed)")


def _body(env):
    p = env.path("body")
    with open(p, "wb") as f:
        f.write(gen_bytes(400000, 7))
    return p


def corrupt(src, dst, how):
    with open(src, "rb") as f:
        b = bytearray(f.read())
    shoff, = struct.unpack_from("<Q", b, 0x28)
    shnum, shstrndx = struct.unpack_from("<HH", b, 0x3c)
    for i in range(shnum):
        at = shoff + i * 64
        if how == "sizes":     # every table claims to be huge and far away
            struct.pack_into("<QQ", b, at + 0x18, 0x7ffffffffff0, 0xfffffffffff0)
        elif how == "names":   # names and links out of range
            struct.pack_into("<I", b, at, 0xfffffff0)
            struct.pack_into("<I", b, at + 0x28, 0xffff)
        elif how == "strtab":  # string tables of 1 byte, no NUL, symbols past them
            if struct.unpack_from("<I", b, at + 4)[0] == 3:
                struct.pack_into("<Q", b, at + 0x20, 1)
    if how == "shoff":
        struct.pack_into("<Q", b, 0x28, len(b) - 10)
    if how == "shstrndx":
        struct.pack_into("<H", b, 0x3e, 0x7fff)
    with open(dst, "wb") as f:
        f.write(b)
    os.chmod(dst, 0o755)


@timeout(60)
def test_scan_corrupted_elf(env):
    """Programs whose section headers and tables lie (the kernel runs them from
    their program headers alone): scan reads them in bounds and carries on."""
    src = shutil.which("sleep")
    agent = Agent(env).start()
    procs = []
    for how in ("sizes", "names", "strtab", "shoff", "shstrndx"):
        dst = env.path(f"sleep-{how}")
        corrupt(src, dst, how)
        procs.append(env.spawn(f"sleep-{how}", [dst, "60"]))
    wait_until(lambda: all(os.path.exists(f"/proc/{p.pid}/exe") and
                           os.readlink(f"/proc/{p.pid}/exe").startswith(env.dir) for p in procs),
               10, "corrupted programs running")
    res, text = scan(agent.sock, [p.pid for p in procs])
    for p in procs:
        check(res.get(p.pid, {}).get("none") is not None, f"pid {p.pid}: {res.get(p.pid)}:\n{text}")
        check(p.alive(), "a corrupted program died")
