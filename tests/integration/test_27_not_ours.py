# Integration test 27: never destroy what is not ours: the --socket path, links planted in shared directories, capture mode.
import os
import socket
import stat
import subprocess
import tempfile

from tmlib import (TLSMIRROR, Agent, RecServer, check, certs, judge, need_tool, short,
                   timeout, wait_until)
from test_23_access import temp_user


def start_fails(env, name, argv):
    p = env.spawn(name, [TLSMIRROR] + argv)
    try:
        rc = p.popen.wait(timeout=10)
    except subprocess.TimeoutExpired:
        p.kill_group()
        raise AssertionError(f"`tlsmirror {' '.join(argv)}` still runs after 10 s") from None
    return rc, p.err().decode("utf-8", "replace")


@timeout(90)
def test_socket_path_not_ours(env):
    """--socket over a regular file: refused with a clear error, the file untouched; over
    a live agent's socket: refused, the live agent still answers; over a stale socket (an
    agent that died): reused."""
    path = env.path("precious")
    with open(path, "wb") as f:
        f.write(b"not a socket\n")
    rc, err = start_fails(env, "onfile", ["--socket", path, "-w", env.path("a.pcap")])
    check(rc != 0 and "not a socket" in err and path in err,
          f"--socket over a regular file: exit {rc}, stderr {short(err)!r}")
    with open(path, "rb") as f:
        check(f.read() == b"not a socket\n", "--socket replaced or changed a regular file")
    live = Agent(env, name="live").start()
    ino = os.stat(live.sock).st_ino
    rc, err = start_fails(env, "onlive", ["--socket", live.sock, "-w", env.path("b.pcap")])
    check(rc != 0 and "another agent" in err, f"--socket over a live agent's socket: exit {rc}, "
          f"stderr {short(err)!r}")
    check(os.stat(live.sock).st_ino == ino, "the live agent's socket file was replaced")
    live.stats()
    live.final_stats()
    # a stale socket: bound, never listened on, its owner gone
    stale = env.path("stale.sock")
    s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    s.bind(stale)
    s.close()
    check(stat.S_ISSOCK(os.lstat(stale).st_mode), "the stale socket is not there")
    a = Agent(env, name="reuse", sock=stale).start()
    a.stats()
    a.final_stats()


@timeout(90)
def test_links_in_shared_dir(env):
    """-w into a sticky world-writable directory where another user planted a symbolic
    link (or a file of theirs) at the name: refused with a clear error, the link's target
    untouched. A capture file created there, or one of ours made before, is mode 0600."""
    shared = tempfile.mkdtemp(prefix="tlsmirror-sticky-", dir=env.dir)
    os.chmod(env.dir, 0o755)
    os.chmod(shared, 0o1777)
    victim = env.path("victim")
    with open(victim, "wb") as f:
        f.write(b"keep me\n")
    os.chmod(victim, 0o644)
    with temp_user() as pw:
        link = os.path.join(shared, "cap.pcap")
        r = subprocess.run([need_tool("setpriv"), f"--reuid={pw.pw_uid}", f"--regid={pw.pw_gid}",
                            "--clear-groups", "--", "ln", "-s", victim, link],
                           capture_output=True, timeout=30)
        check(r.returncode == 0, f"cannot plant the link as {pw.pw_name}: {short(r.stderr)}")
        rc, err = start_fails(env, "onlink", ["--socket", env.path("l.sock"), "-w", link])
        check(rc != 0 and "symbolic link" in err and link in err,
              f"-w over a planted symbolic link: exit {rc}, stderr {short(err)!r}")
        with open(victim, "rb") as f:
            check(f.read() == b"keep me\n", "the link's target was written")
        theirs = os.path.join(shared, "theirs.pcap")
        r = subprocess.run([need_tool("setpriv"), f"--reuid={pw.pw_uid}", f"--regid={pw.pw_gid}",
                            "--clear-groups", "--", "sh", "-c", f"umask 0; echo x > {theirs}"],
                           capture_output=True, timeout=30)
        check(r.returncode == 0, f"cannot plant a file as {pw.pw_name}: {short(r.stderr)}")
        rc, err = start_fails(env, "ontheirs", ["--socket", env.path("t.sock"), "-w", theirs])
        check(rc != 0 and theirs in err and "refusing" in err,
              f"-w over another user's file in a shared directory: exit {rc}, {short(err)!r}")
        with open(theirs, "rb") as f:
            check(f.read() == b"x\n", "another user's file was written")
    # a fresh capture in the shared directory, and one of ours made 0644 before
    mine = os.path.join(shared, "mine.pcap")
    with open(mine, "wb") as f:
        f.write(b"old")
    os.chmod(mine, 0o644)
    fresh = os.path.join(shared, "fresh.pcap")
    srv = RecServer(env)
    for path in (fresh, mine):
        a = Agent(env, name="agent-" + os.path.basename(path)[:4], pcap=path).start()
        c = certs()
        p = env.captured("curl", a.sock, [need_tool("curl"), "-sS", "--cacert", c["cert"],
                                          "--resolve", f"localhost:{srv.port}:127.0.0.1",
                                          f"https://localhost:{srv.port}/size/1000", "-o",
                                          env.path("got.bin")])
        check(p.wait(60) == 0, f"curl failed: {short(p.err())}")
        mode = stat.S_IMODE(os.stat(path).st_mode)
        check(mode == 0o600, f"capture {path} is mode {mode:o}, want 600")
        a.final_stats()
        judge(path)


@timeout(60)
def test_capture_mode_0600(env):
    """Under a permissive umask the capture file is still 0600."""
    a = Agent(env)
    old = os.umask(0)
    try:
        a.start()
    finally:
        os.umask(old)
    mode = stat.S_IMODE(os.stat(a.pcap).st_mode)
    check(mode == 0o600, f"capture file mode {mode:o}, want 600")
    wait_until(lambda: a.proc.alive(), 1, "agent")
    a.final_stats()
