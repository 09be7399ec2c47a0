# Integration test 24: a chrooted, environment-stripping service (Postfix smtpd, STARTTLS) reaches the agent.
import grp
import os
import pwd
import socket
import ssl
import time

from tmlib import (LIBRARY, Agent, certs, check, check_stream, free_port, judge, need_tool,
                   short, stat_int, timeout, wait_until)

DAEMONS = "/usr/lib/postfix/sbin"

MAIN_CF = """compatibility_level = 3.6
queue_directory = {d}/spool
data_directory = {d}/data
command_directory = /usr/sbin
daemon_directory = {daemons}
meta_directory = /etc/postfix
shlib_directory = /usr/lib/postfix
mail_owner = postfix
setgid_group = postdrop
myhostname = mx.tlsmirror.test
mydestination =
relayhost =
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
smtpd_tls_cert_file = {cert}
smtpd_tls_key_file = {key}
smtpd_tls_security_level = may
mynetworks = 127.0.0.0/8
smtpd_relay_restrictions = permit_mynetworks reject_unauth_destination
alias_maps =
alias_database =
local_recipient_maps =
default_transport = discard
maillog_file = {d}/maillog
maillog_file_prefixes = {d}
import_environment = MAIL_CONFIG MAIL_DEBUG MAIL_LOGTAG TZ LANG=C POSTLOG_SERVICE POSTLOG_HOSTNAME LD_PRELOAD={lib} TLSMIRROR_SOCKET={sock}
"""

# smtpd chrooted (5th column "y") in the queue directory, like Debian's default
MASTER_CF = """127.0.0.1:{port} inet n - y - - smtpd
cleanup   unix  n       -       y       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
rewrite   unix  -       -       y       -       -       trivial-rewrite
bounce    unix  -       -       y       -       0       bounce
defer     unix  -       -       y       -       0       bounce
trace     unix  -       -       y       -       0       bounce
verify    unix  -       -       y       -       1       verify
proxymap  unix  -       -       n       -       -       proxymap
error     unix  -       -       y       -       -       error
retry     unix  -       -       y       -       -       error
discard   unix  -       -       y       -       -       discard
anvil     unix  -       -       y       -       1       anvil
scache    unix  -       -       y       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
tlsmgr    unix  -       -       y       1000?   1       tlsmgr
"""

QUEUE_DIRS = ("pid", "private", "public", "incoming", "active", "deferred", "bounce", "defer",
              "flush", "hold", "corrupt", "maildrop", "saved", "trace", "etc")


def postfix_tree(env, port, sock):
    """A private Postfix instance (config, queue, data under the test dir; nothing in /etc)."""
    c = certs()
    d = env.path("pf")
    os.makedirs(os.path.join(d, "conf"))
    os.makedirs(os.path.join(d, "data"))
    for sub in QUEUE_DIRS:
        os.makedirs(os.path.join(d, "spool", sub))
    os.chmod(env.dir, 0o755)
    for x in (d, os.path.join(d, "spool")):
        os.chmod(x, 0o755)
    pf = pwd.getpwnam("postfix").pw_uid
    postdrop = grp.getgrnam("postdrop").gr_gid
    for sub in QUEUE_DIRS:
        if sub not in ("pid", "etc"):
            os.chown(os.path.join(d, "spool", sub), pf, postdrop if sub in ("public", "maildrop")
                     else -1)
    os.chown(os.path.join(d, "data"), pf, -1)
    with open(os.path.join(d, "conf", "main.cf"), "w") as f:
        f.write(MAIN_CF.format(d=d, daemons=DAEMONS, cert=c["cert"], key=c["key"], lib=LIBRARY,
                               sock=sock))
    with open(os.path.join(d, "conf", "master.cf"), "w") as f:
        f.write(MASTER_CF.format(port=port))
    return d


def smtp_session(port):
    """EHLO, STARTTLS, then a whole mail over TLS, from this uncaptured process.
    Returns (bytes sent after STARTTLS, bytes received after STARTTLS)."""
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    raw = socket.create_connection(("127.0.0.1", port), timeout=30)
    cport = raw.getsockname()[1]
    f = raw.makefile("rb")

    def reply(rd):
        out = b""
        while True:
            line = rd()
            check(line, f"SMTP server closed the connection after {out!r}")
            out += line
            if line[3:4] != b"-":
                return out
    check(reply(f.readline).startswith(b"220"), "no SMTP greeting")
    raw.sendall(b"EHLO client.test\r\n")
    check(b"STARTTLS" in reply(f.readline), "smtpd offers no STARTTLS")
    raw.sendall(b"STARTTLS\r\n")
    check(reply(f.readline).startswith(b"220"), "STARTTLS refused")
    s = ctx.wrap_socket(raw)
    buf = bytearray()

    def rdline():
        while b"\n" not in buf:
            d = s.recv(4096)
            if not d:
                return b""
            buf.extend(d)
        i = buf.index(b"\n") + 1
        line = bytes(buf[:i])
        del buf[:i]
        return line
    sent = received = b""
    cmds = [b"EHLO client.test\r\n", b"MAIL FROM:<alice@example.org>\r\n",
            b"RCPT TO:<bob@example.net>\r\n", b"DATA\r\n",
            b"Subject: mirrored\r\n\r\nThe clear text after STARTTLS.\r\n.\r\n", b"QUIT\r\n"]
    for cmd in cmds:
        s.sendall(cmd)
        sent += cmd
        r = reply(rdline)
        received += r
    try:
        while True:
            d = s.recv(4096)
            if not d:
                break
            received += d
    except (ssl.SSLError, OSError):
        pass
    s.close()
    return cport, sent, received


@timeout(150)
def test_postfix_chroot_starttls(env):
    """Postfix master under the capture library, smtpd chrooted in the queue directory as
    user postfix; the one import_environment line of main.cf keeps LD_PRELOAD and
    TLSMIRROR_SOCKET. smtpd cannot see the socket path from its chroot and reaches the agent
    (--allow-user postfix) on its abstract name: the SMTP dialogue after STARTTLS is in the
    pcap byte-exact, from smtpd's side."""
    need_tool("openssl")
    master = os.path.join(DAEMONS, "master")
    check(os.path.exists(master), "postfix is not installed (scripts/deps.sh installs it)")
    port = free_port()
    agent = Agent(env, args=["--allow-user", "postfix"])
    d = postfix_tree(env, port, agent.sock)
    agent.start()
    pf = env.spawn("postfix-master", [master, "-c", os.path.join(d, "conf"), "-d"],
                   extra_env={"LD_PRELOAD": LIBRARY, "TLSMIRROR_SOCKET": agent.sock})

    def listening():
        check(pf.alive(), f"postfix master exited: {short(pf.err())}")
        with socket.socket() as s:
            return s.connect_ex(("127.0.0.1", port)) == 0
    wait_until(listening, 20, f"postfix smtpd on 127.0.0.1:{port}")
    cport, sent, received = smtp_session(port)
    check(b"250 2.0.0 Ok: queued" in received, f"the mail was not accepted: {short(received)}")

    def smtpd_done():
        procs, _, _ = agent.stats()
        return [p for p in procs if p.get("comm") == "smtpd" and stat_int(p, "conns") == 1
                and stat_int(p, "open") == 0]
    smtpd = wait_until(smtpd_done, 20, "smtpd's connection in the agent's stats")
    check(smtpd[0].get("uid") == str(pwd.getpwnam("postfix").pw_uid),
          f"smtpd attached as {smtpd[0]}")
    pf.signal(15)
    pf.wait(20)
    time.sleep(0.2)
    agent.final_stats()
    cap = judge(agent.pcap)
    st = cap.one(client_port=cport, server_port=port)
    check_stream(st, c2s=sent, s2c=received)
