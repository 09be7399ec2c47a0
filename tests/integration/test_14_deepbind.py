# Integration test 14: libraries loaded with dlopen(RTLD_DEEPBIND) (PHP's curl and pgsql extensions, a C helper) mirrored; a bypass counted.
import glob
import os
import shutil
import signal
import subprocess
import tempfile
import time

from tmlib import (PROGS, Agent, RecServer, certs, check, check_against_server, free_port,
                   gen_bytes, judge, need_tool, prog, proc_stats, short, stat_int, timeout,
                   tshark_fields, wait_until)

PHP_CURL = r"""
$c = curl_init($argv[1]);
curl_setopt($c, CURLOPT_CAINFO, $argv[2]);
curl_setopt($c, CURLOPT_RETURNTRANSFER, true);
curl_setopt($c, CURLOPT_HTTP_VERSION, CURL_HTTP_VERSION_1_1);
$r = curl_exec($c);
if ($r === false) { fwrite(STDERR, curl_error($c)); exit(1); }
curl_close($c);
file_put_contents($argv[3], $r);
"""

PHP_PG = r"""
$db = pg_connect("host=127.0.0.1 port=$argv[1] dbname=postgres user=postgres sslmode=require");
if (!$db) { fwrite(STDERR, "pg_connect failed"); exit(1); }
$r = pg_query($db, $argv[2]);
if (!$r) { fwrite(STDERR, pg_last_error($db)); exit(1); }
$row = pg_fetch_row($r);
file_put_contents($argv[3], $row[0]);
pg_close($db);
"""


def no_bypass(ps, total, what):
    check(stat_int(ps, "bypassed_conns") == 0 and stat_int(total, "bypassed_conns") == 0,
          f"{what}: the library counted a bypass where every call was patched: {ps}")
    check(stat_int(total, "dropped_bytes") == 0 and stat_int(total, "gap_bytes") == 0,
          f"{what}: drops or gaps: {total}")


@timeout(120)
def test_php_curl(env):
    """PHP's curl extension (curl.so -> libcurl, loaded RTLD_DEEPBIND): 100 kB over HTTPS."""
    php = need_tool("php")
    body = gen_bytes(100 * 1000, 1401)
    with open(env.path("body.bin"), "wb") as f:
        f.write(body)
    srv = RecServer(env, body=env.path("body.bin"))
    agent = Agent(env).start()
    p = env.captured("php-curl", agent.sock,
                     [php, "-r", PHP_CURL, "--", f"https://localhost:{srv.port}/body",
                      certs()["cert"], env.path("got.bin")])
    rc = p.wait(60)
    check(rc == 0 and p.err() == b"", f"php curl_exec exited {rc}: {short(p.err())}")
    with open(env.path("got.bin"), "rb") as f:
        check(f.read() == body, "php's curl_exec did not return the served body")
    conns = srv.conns(1)
    procs, total = agent.final_stats()
    cap = judge(agent.pcap)
    check_against_server(cap, conns)
    ps = proc_stats(procs, p.pid)
    check(ps is not None and stat_int(ps, "s2c_bytes") == len(conns[0].s2c),
          f"php pid {p.pid} stats {ps}: s2c_bytes should be {len(conns[0].s2c)}")
    no_bypass(ps, total, "php curl")


def pg_bin(name):
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    check(found, f"no PostgreSQL {name} (scripts/deps.sh installs postgresql)")
    return found[-1]


class Postgres:
    """A private PostgreSQL cluster (ssl=on, trust) on 127.0.0.1:port, run as user postgres."""

    def __init__(self, env):
        self.dir = tempfile.mkdtemp(prefix="tlsmirror-pg-")
        self.data = os.path.join(self.dir, "data")
        shutil.chown(self.dir, "postgres", "postgres")
        c = certs()
        for src, dst in ((c["cert"], "server.crt"), (c["key"], "server.key")):
            shutil.copy(src, os.path.join(self.dir, dst))
            os.chmod(os.path.join(self.dir, dst), 0o600)
            shutil.chown(os.path.join(self.dir, dst), "postgres", "postgres")
        as_pg = [need_tool("runuser"), "-u", "postgres", "--"]
        rc, out, err = env.run("initdb", as_pg + [pg_bin("initdb"), "-D", self.data, "-A", "trust",
                                                   "-U", "postgres", "--no-sync", "-E", "UTF8"],
                               timeout_s=120, cwd=self.dir)
        check(rc == 0, f"initdb exited {rc}: {short(err)}")
        self.port = free_port()
        self.proc = env.spawn("postgres", as_pg + [
            pg_bin("postgres"), "-D", self.data, "-p", str(self.port), "-c", "listen_addresses=127.0.0.1",
            "-c", f"unix_socket_directories={self.dir}", "-c", "ssl=on", "-c", "fsync=off",
            "-c", f"ssl_cert_file={self.dir}/server.crt", "-c", f"ssl_key_file={self.dir}/server.key"],
            cwd=self.dir)

        def up():
            check(self.proc.alive(), f"postgres exited: {short(self.proc.err())}")
            return b"ready to accept connections" in self.proc.err()
        wait_until(up, 60, "postgres ready to accept connections")

    def stop(self):
        self.proc.signal(signal.SIGINT)  # runuser passes it on: fast shutdown
        try:
            os.killpg(self.proc.pid, signal.SIGINT)
        except ProcessLookupError:
            pass
        try:
            self.proc.popen.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill_group()
        shutil.rmtree(self.dir, ignore_errors=True)


@timeout(180)
def test_php_pgsql(env):
    """PHP's pgsql extension (pgsql.so -> libpq, RTLD_DEEPBIND) with sslmode=require."""
    php = need_tool("php")
    pg = Postgres(env)
    try:
        agent = Agent(env).start()
        query = ("SELECT (SELECT ssl::text FROM pg_stat_ssl WHERE pid = pg_backend_pid()) "
                 "|| ':tlsmirror-' || repeat('pq', 20000) || '-end'")
        want = b"true:tlsmirror-" + b"pq" * 20000 + b"-end"
        p = env.captured("php-pg", agent.sock, [php, "-r", PHP_PG, "--", str(pg.port), query,
                                                env.path("row.txt")])
        rc = p.wait(60)
        check(rc == 0 and p.err() == b"", f"php pg_query exited {rc}: {short(p.err())}")
        with open(env.path("row.txt"), "rb") as f:
            check(f.read() == want, "the query's result is not what PostgreSQL should return "
                  "(or the connection did not use TLS)")
        procs, total = agent.final_stats()
    finally:
        pg.stop()
    # the PostgreSQL protocol is binary: TLS-looking bytes may occur in it
    cap = judge(agent.pcap, binary=lambda st: True)
    st = cap.one(server_port=pg.port)
    c2s, s2c = st.bytes(0), st.bytes(1)
    qmsg = b"Q" + (4 + len(query) + 1).to_bytes(4, "big") + query.encode() + b"\0"
    check(qmsg in c2s, f"c2s ({len(c2s)} bytes) lacks the Query message: {short(c2s[:200])}")
    check(c2s.endswith(b"X\0\0\0\x04"), f"c2s does not end with Terminate: {c2s[-16:]!r}")
    row = b"D" + (4 + 2 + 4 + len(want)).to_bytes(4, "big") + b"\0\x01" + \
        len(want).to_bytes(4, "big") + want
    check(row in s2c, f"s2c ({len(s2c)} bytes) lacks the DataRow with the result")
    dec = ["-d", f"tcp.port=={pg.port},pgsql"]
    rows = tshark_fields(agent.pcap, ["pgsql.query"], "pgsql.query", extra=dec)
    check([r[0] for r in rows] == [query], f"tshark's pgsql dissector sees queries "
          f"{[short(r[0], 80) for r in rows]}, want the one query")
    bad = tshark_fields(agent.pcap, ["frame.number"], "_ws.malformed || _ws.expert.severity >= "
                        "warning", extra=dec)
    check(not bad, f"tshark flags frames {bad[:10]} of the pgsql stream")
    ps = proc_stats(procs, p.pid)
    check(ps is not None and stat_int(ps, "c2s_bytes") == len(c2s) and
          stat_int(ps, "s2c_bytes") == len(s2c), f"php pid {p.pid} stats {ps}")
    no_bypass(ps, total, "php pgsql")


def dbclient(env, agent, mode, srv, n):
    p = env.captured("dbclient-" + mode, agent.sock,
                     [prog("dbclient"), mode, os.path.join(PROGS, "dbhelper.so"), "127.0.0.1",
                      str(srv.port), certs()["cert"], str(n)])
    rc = p.wait(60)
    check(rc == 0 and p.err() == b"", f"dbclient {mode} exited {rc}: {short(p.err())}")
    return p


def c_deepbind(env, mode):
    srv = RecServer(env, mode="echo")
    agent = Agent(env).start()
    p = dbclient(env, agent, mode, srv, 100000)
    conns = srv.conns(1)
    procs, total = agent.final_stats()
    cap = judge(agent.pcap)
    check_against_server(cap, conns)
    no_bypass(proc_stats(procs, p.pid), total, "dbclient " + mode)


@timeout(90)
def test_c_deepbind(env):
    """A C helper loaded with dlopen(RTLD_NOW | RTLD_DEEPBIND) calling SSL_write/SSL_read: byte-exact."""
    c_deepbind(env, "deepbind")


@timeout(90)
def test_c_deepbind_lazy(env):
    """The same with RTLD_LAZY: PLT slots not bound yet are patched too."""
    c_deepbind(env, "lazy")


@timeout(90)
def test_c_deepbind_runpath(env):
    """dlopen("dbhelper.so", RTLD_DEEPBIND) found only through the caller's RUNPATH:
    the library must pass such a dlopen on untouched (the real dlopen must see the
    real caller), and the first handshake then patches the helper."""
    c_deepbind(env, "bare")


@timeout(90)
def test_bypass_counted(env):
    """SSL_write/SSL_read through dlsym pointers: nothing can patch that; the
    connection must show a hole, be counted in stats, and be logged by the agent."""
    srv = RecServer(env, mode="echo")
    agent = Agent(env, allow_bypass=True).start()
    n = 100000
    p = dbclient(env, agent, "dlsym", srv, n)
    conns = srv.conns(1)
    wait_until(lambda: stat_int(proc_stats(agent.stats()[0], p.pid) or {"bypassed_conns": "0"},
                                "bypassed_conns") == 1, 10, "bypassed_conns=1 in tlsmirror stats")
    procs, total = agent.final_stats()
    ps = proc_stats(procs, p.pid)
    check(stat_int(ps, "bypassed_conns") == 1 and stat_int(total, "bypassed_conns") == 1,
          f"stats after the bypass: {ps} / {total}")
    check("bypass the capture hooks" in agent.stderr_text,
          f"agent did not log the bypass: {short(agent.stderr_text, 600)}")
    check(agent.stderr_text.count("bypass the capture hooks") == 1, "bypass logged more than once")
    cap = judge(agent.pcap, allow_gaps=True, allow_analysis=("wasn't captured",))
    st = cap.one(client_port=conns[0].peer_port)
    c = conns[0]
    for d, real in ((0, c.c2s), (1, c.s2c)):
        r = st.direction(d)
        check(r["gaps"], f"{st.name()} {'c2s' if d == 0 else 's2c'}: no hole although "
              f"{len(real)} bytes bypassed the hooks")
        # the hole stands for about what was lost: plus what else the bypassed
        # SSL_read consumed (TLS 1.3 session tickets)
        check(len(real) <= r["end"] <= len(real) + 1024,
              f"{st.name()} dir {d}: stream ends at {r['end']}, the server saw {len(real)}")
    check(stat_int(total, "gap_bytes") > 0, f"gap_bytes in stats: {total}")
