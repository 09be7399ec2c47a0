# Integration test 26: operations: --metrics (Prometheus) and stats --json under nginx load, the HTTP server's limits, --config, enable/disable/status.
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import threading
import time

from tmlib import (HELPERS, PYTHON, TLSMIRROR, Agent, Fail, RecServer, Skip, certs, check, free_port, judge,
                   need_tool, nginx_conf, parse_stats, proc_stats, short, start_nginx,
                   stat_int, timeout, wait_listening, wait_until, gen_bytes)

CONF = nginx_conf(2, """    server {{
        listen 127.0.0.1:{port} ssl;
        ssl_certificate {cert};
        ssl_certificate_key {key};
        root {prefix}/html;
    }}
""")

NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\\n]|\\[\\"n])*)"')


def parse_prometheus(text):
    """A strict reader of the text exposition format 0.0.4 as tlsmirror writes it:
    HELP and TYPE before a family's samples, a family's samples together, valid
    names, escaped label values, no duplicate series, counters named *_total.
    Returns {(name, frozenset(labels.items())): value} and {name: type}."""
    check(text.endswith("\n"), "the exposition does not end with a newline")
    samples, types, seen_families, current = {}, {}, set(), None
    for n, line in enumerate(text.split("\n")[:-1], 1):
        where = f"line {n}: {line[:120]!r}"
        check(line != "", f"{where}: empty line")
        if line.startswith("#"):
            m = re.fullmatch(r"# (HELP|TYPE) (\S+) (.*)", line)
            check(m and NAME.fullmatch(m.group(2)), f"{where}: bad comment line")
            if m.group(1) == "TYPE":
                check(m.group(3) in ("counter", "gauge"), f"{where}: type {m.group(3)}")
                check(m.group(2) not in types, f"{where}: second TYPE for the family")
                check(m.group(3) != "counter" or m.group(2).endswith("_total"),
                      f"{where}: a counter not named *_total")
                types[m.group(2)] = m.group(3)
            continue
        m = re.fullmatch(r"([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})? (\S+)", line)
        check(m, f"{where}: not a sample line")
        name, labels_text, value = m.group(1), m.group(3), m.group(4)
        check(name in types, f"{where}: sample before its TYPE line")
        if name != current:
            check(name not in seen_families, f"{where}: the family's samples are not together")
            seen_families.add(name)
            current = name
        labels = {}
        if labels_text is not None:
            rest = labels_text
            while rest:
                lm = LABEL.match(rest)
                check(lm, f"{where}: bad label syntax at {rest[:40]!r}")
                check(lm.group(1) not in labels, f"{where}: label {lm.group(1)} twice")
                labels[lm.group(1)] = re.sub(r"\\(.)", lambda x: "\n" if x.group(1) == "n"
                                             else x.group(1), lm.group(2))
                rest = rest[lm.end():]
                if rest:
                    check(rest.startswith(","), f"{where}: labels not separated by ','")
                    rest = rest[1:]
        check(re.fullmatch(r"[0-9]+", value), f"{where}: value {value!r} is not a count")
        key = (name, frozenset(labels.items()))
        check(key not in samples, f"{where}: duplicate series")
        samples[key] = int(value)
    return samples, types


def scrape(port, path="/metrics", prefix=()):
    """GET of the metrics (prefix: e.g. ip netns exec NS, for an agent in a namespace)."""
    r = subprocess.run(list(prefix) + [need_tool("curl"), "-sS", "-i", "--max-time", "10",
                                       f"http://127.0.0.1:{port}{path}"], capture_output=True,
                       timeout=20)
    check(r.returncode == 0, f"curl of the metrics exited {r.returncode}: {short(r.stderr)}")
    head, _, body = r.stdout.partition(b"\r\n\r\n")
    return head.decode(), body.decode()


def promtool():
    for p in (shutil.which("promtool"), "/var/cache/tlsmirror-deps/promtool"):
        if p and os.access(p, os.X_OK):
            return p
    return None


def stats_json(agent):
    r = subprocess.run([TLSMIRROR, "stats", "--json", "--socket", agent.sock],
                       capture_output=True, timeout=10)
    check(r.returncode == 0, f"`tlsmirror stats --json` exited {r.returncode}: {short(r.stderr)}")
    try:
        doc = json.loads(r.stdout)
    except ValueError as e:
        raise Fail(f"stats --json is not JSON ({e}): {short(r.stdout)}") from None
    return {(m["name"], frozenset(m["labels"].items())): m["value"] for m in doc["metrics"]}, doc


def series(samples, metric, **labels):
    return [v for (n, ls), v in samples.items() if n == metric and set(labels.items()) <= ls]


def one(samples, metric, **labels):
    v = series(samples, metric, **labels)
    check(len(v) == 1, f"{metric}{labels}: {len(v)} series, want 1")
    return v[0]


@timeout(180)
def test_metrics_under_load(env):
    c = certs()
    prefix = env.path("nginx")
    for d in ("html", "tmp", "logs"):
        os.makedirs(os.path.join(prefix, d))
    body = gen_bytes(20000, 26)
    with open(os.path.join(prefix, "html", "b"), "wb") as f:
        f.write(body)
    port, mport = free_port(), free_port()
    agent = Agent(env, args=["--metrics", f"127.0.0.1:{mport}"]).start()
    ngx, workers = start_nginx(env, agent.sock, prefix,
                               CONF.format(prefix=prefix, port=port, cert=c["cert"], key=c["key"]), 2)
    # load: 4 curl loops (not under capture) while the metrics are scraped
    url = f"https://localhost:{port}/b"
    loops = [env.spawn(f"load{i}", ["sh", "-c", f"for i in $(seq 40); do curl -sS --cacert {c['cert']} "
                                    f"--resolve localhost:{port}:127.0.0.1 {url} -o /dev/null "
                                    f"-o /dev/null {url} || exit 1; done"]) for i in range(4)]
    scrapes = 0
    while any(p.alive() for p in loops):
        head, text = scrape(mport)
        check(head.startswith("HTTP/1.1 200") and "text/plain; version=0.0.4" in head,
              f"scrape: {head}")
        parse_prometheus(text)
        scrapes += 1
    for p in loops:
        check(p.wait(5) == 0, f"a curl loop failed: {short(p.err())}")
    check(scrapes >= 2, f"only {scrapes} scrapes during the load")
    want_conns = 4 * 40

    def settled():
        procs, total, _ = agent.stats()
        return stat_int(total, "open_conns") == 0 and \
            sum(stat_int(p, "conns") for p in procs if p.get("comm") == "nginx") == want_conns
    wait_until(settled, 20, "every nginx connection seen and closed")
    head, text = scrape(mport)
    prom, types = parse_prometheus(text)
    procs, total, raw = agent.stats()
    js, doc = stats_json(agent)
    # stats --json holds the same samples as /metrics (the scrape counter aside)
    def strip(d):
        return {k: v for k, v in d.items() if not k[0].startswith("tlsmirror_metrics_")
                and k[0] != "tlsmirror_agent_uptime_seconds"}
    check(strip(js) == strip(prom), "stats --json and /metrics differ: "
          f"{sorted(set(strip(js).items()) ^ set(strip(prom).items()))[:6]}")
    check(one(prom, "tlsmirror_metrics_scrapes_total") >= scrapes,
          f"tlsmirror_metrics_scrapes_total < {scrapes}")
    # each process: its series equal its line of `tlsmirror stats`
    ngx_procs = [p for p in procs if p.get("comm") == "nginx"]
    check(len(ngx_procs) == 2, f"expected the 2 nginx workers in stats:\n{raw}")
    for p in ngx_procs:
        pid = p["pid"]
        for d in ("c2s", "s2c"):
            check(one(prom, "tlsmirror_process_bytes_total", pid=pid, comm="nginx", direction=d) ==
                  stat_int(p, f"{d}_bytes"), f"pid {pid} {d} bytes: metrics vs stats")
        check(one(prom, "tlsmirror_process_conns_total", pid=pid) == stat_int(p, "conns"),
              f"pid {pid} conns")
        check(one(prom, "tlsmirror_dropped_bytes_total", pid=pid, reason="ring_full") ==
              stat_int(p, "drop_full_bytes"), f"pid {pid} dropped")
        check(one(prom, "tlsmirror_process_attached", pid=pid) == 1, f"pid {pid} attached")
    check(types["tlsmirror_process_open_conns"] == "gauge", "open_conns is a gauge")
    for k in ("conns", "c2s_bytes", "s2c_bytes", "packets", "dropped_bytes"):
        check(one(prom, f"tlsmirror_agent_{k}_total") == stat_int(total, k), f"total {k}")
    sink_line = [l for l in raw.splitlines() if l.startswith("sink name=pcap")][0]
    sk = dict(re.findall(r"(\w+)=(\S*)", sink_line))
    check(one(prom, "tlsmirror_sink_packets_total", name="pcap") == int(sk["packets"]),
          "sink packets")
    check(one(prom, "tlsmirror_sink_queued_bytes", name="pcap") == int(sk["queued_bytes"]),
          "sink queue depth")
    check(one(prom, "tlsmirror_stage_open", name="flows") == 0, "flows open")
    pt = promtool()
    if pt:
        r = subprocess.run([pt, "check", "metrics"], input=text.encode(), capture_output=True,
                           timeout=30)
        check(r.returncode == 0, f"promtool check metrics: {short(r.stdout + r.stderr, 1500)}")
    ngx.signal(signal.SIGQUIT)
    check(ngx.wait(20) == 0, f"nginx exited badly: {short(ngx.err())}")
    fprocs, ftotal = agent.final_stats()
    # 160 connections from one client address to one port: the kernel may
    # hand a client port out again within the trace (a new tcp.stream)
    cap = judge(agent.pcap, allow_port_reuse=True)
    syn = cap.syn_streams()
    check(len(syn) == want_conns, f"{len(syn)} connections in the pcap, want {want_conns}")
    b = [sum(len(st.bytes(d)) for st in syn) for d in (0, 1)]
    check(b[0] == one(prom, "tlsmirror_agent_c2s_bytes_total") and
          b[1] == one(prom, "tlsmirror_agent_s2c_bytes_total"),
          f"pcap payload {b} bytes, metrics say c2s {one(prom, 'tlsmirror_agent_c2s_bytes_total')}"
          f" s2c {one(prom, 'tlsmirror_agent_s2c_bytes_total')}")
    check(b[1] >= want_conns * len(body), "the responses are in the pcap")


def raw_http(port, data, read=True):
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    s.sendall(data)
    out = b""
    if read:
        while True:
            d = s.recv(65536)
            if not d:
                break
            out += d
    s.close()
    return out.decode("latin-1")


@timeout(120)
def test_metrics_http_limits(env):
    mport = free_port()
    agent = Agent(env, args=["--metrics", f"127.0.0.1:{mport}"]).start()
    check(raw_http(mport, b"POST /metrics HTTP/1.1\r\nHost: x\r\n\r\n").startswith(
        "HTTP/1.1 405"), "POST: want 405")
    check(raw_http(mport, b"GET / HTTP/1.1\r\n\r\n").startswith("HTTP/1.1 404"), "GET /: want 404")
    check(raw_http(mport, b"GET /metrics HTTP/2.0\r\n\r\n").startswith("HTTP/1.1 505"),
          "HTTP/2.0: want 505")
    check(raw_http(mport, b"GET /metrics\r\n\r\n").startswith("HTTP/1.1 400"),
          "HTTP/0.9 request line: want 400")
    check(raw_http(mport, b"GET /metrics HTTP/1.1\r\n" + b"X: " + b"a" * 5000 + b"\r\n\r\n")
          .startswith("HTTP/1.1 431"), "a 5 kB request head: want 431")
    r = raw_http(mport, b"GET /metrics?x=1 HTTP/1.0\n\n")
    check(r.startswith("HTTP/1.1 200") and "tlsmirror_agent_conns_total 0" in r,
          f"HTTP/1.0 with bare LF: {short(r.encode())}")
    # eight silent connections take every slot: a ninth is closed at once,
    # and the agent goes on mirroring and answering `tlsmirror stats`
    silent = [socket.create_connection(("127.0.0.1", mport)) for _ in range(8)]
    silent[0].sendall(b"GET /metr")
    t0 = time.time()
    # the agent has accepted them all once the ninth is refused
    def ninth_refused():
        try:
            return raw_http(mport, b"GET /metrics HTTP/1.1\r\n\r\n") == ""
        except OSError:
            return True
    wait_until(ninth_refused, 5, "a ninth metrics connection closed at once")
    c = certs()
    srv_port = free_port()
    srv = env.spawn("s_server", ["openssl", "s_server", "-accept", str(srv_port), "-cert",
                                 c["cert"], "-key", c["key"], "-www", "-quiet"])
    wait_listening(srv_port, proc=srv)
    cl = env.captured("curl", agent.sock, [need_tool("curl"), "-sk", f"https://127.0.0.1:{srv_port}/",
                                           "-o", env.path("got")])
    check(cl.wait(20) == 0, f"curl under capture: {short(cl.err())}")
    wait_until(lambda: stat_int(agent.stats()[1], "conns") == 1, 10,
               "the curl connection counted while the metrics slots are held")
    check(time.time() - t0 < 9, "the agent was slow while scrapers held every slot")
    # after the deadline (10 s) the silent ones are closed and counted
    wait_until(lambda: "timeouts=8" in agent.stats()[2], 20, "the silent scrapers timed out")
    _, text = scrape(mport)
    prom, _ = parse_prometheus(text)
    check(one(prom, "tlsmirror_metrics_rejected_total") >= 1, "rejected counted")
    check(one(prom, "tlsmirror_metrics_bad_requests_total") == 5, "bad requests counted")
    for s in silent:
        s.close()
    srv.signal(signal.SIGTERM)
    agent.final_stats()


def row_lines(text, kind):
    """'KIND name=.. [target=..] k=N ..' lines of the stats text -> {labels: {key: value}}."""
    out = {}
    for line in text.splitlines():
        if not line.startswith(kind + " "):
            continue
        kv = re.findall(r"(\w+)=(\S*)", line)
        labels = frozenset((k, v) for k, v in kv if k in ("name", "target"))
        check(labels not in out, f"two stats lines for {sorted(labels)}")
        out[labels] = [(k, int(v)) for k, v in kv if k not in ("name", "target")]
    return out


def rows_as_samples(lines, kind, types):
    """The samples the rows of the stats text must be: tlsmirror_KIND_KEY_total
    (or the gauge tlsmirror_KIND_KEY) with the line's labels."""
    want = {}
    for labels, rows in lines.items():
        for k, v in rows:
            name = f"tlsmirror_{kind}_{k}"
            if types.get(name) != "gauge":
                name += "_total"
            check((name, labels) not in want, f"{kind} {sorted(labels)}: {k} twice")
            want[(name, labels)] = v
    return want


@timeout(120)
def test_sink_rows_everywhere(env):
    """Every kind of sink and every stage: each counter row of its stats
    line is the same sample, with the same value, in `stats --json` and /metrics,
    and they have no sink or stage sample that its line lacks."""
    from netns import Netns
    body = gen_bytes(60000, 27)
    with open(env.path("body.bin"), "wb") as f:
        f.write(body)
    with Netns(env) as nets:
        app, sensor = nets.ns("app"), nets.ns("sensor")
        dev, _ = nets.veth(app, sensor)  # -o: frames to a namespace that only receives
        with nets.inside(app):
            srv = RecServer(env, body=env.path("body.bin"))
            mport, pport, dead, vport = free_port(), free_port(), free_port(), free_port()
            agent = Agent(env, args=[
                "--pcapng", env.path("m.pcapng"), "-o", dev, "--vxlan", f"127.0.0.1:{vport}",
                "--pcap-over-ip", f"127.0.0.1:{pport}", "-t", f"127.0.0.1:{dead}",
                "--insecure-plaintext-tunnel", "--metrics", f"127.0.0.1:{mport}",
                "--h2-to-h1", "--port-map", "443:80"]).start()  # every stage too
            reader = env.spawn("poip", [PYTHON, "-c", (
                "import socket, sys\n"
                f"s = socket.create_connection(('127.0.0.1', {pport}))\n"
                "print('up', flush=True)\n"
                "while s.recv(65536): pass\n")])
            wait_until(lambda: b"up" in reader.out(), 10, "a PCAP-over-IP reader")
            out = env.path("got.bin")
            p = env.captured("curl", agent.sock, [need_tool("curl"), "-sS", "--cacert", certs()["cert"],
                                                  "--resolve", f"localhost:{srv.port}:127.0.0.1",
                                                  f"https://localhost:{srv.port}/body", "-o", out])
            check(p.wait(60) == 0, f"curl: {short(p.err())}")
            wait_until(lambda: stat_int(agent.stats()[1], "packets") > 0 and
                       stat_int(agent.stats()[1], "open_conns") == 0, 20, "the connection mirrored")
            kinds = {"pcap", "pcapng", "interface", "vxlan", "pcap-over-ip", "tunnel"}

            def same():
                _, _, text = agent.stats()
                js, _ = stats_json(agent)
                _, body_text = scrape(mport, prefix=nets.argv_in(app, []))
                prom, types = parse_prometheus(body_text)
                res = []
                for kind in ("sink", "stage"):
                    lines = row_lines(text, kind)
                    if kind == "sink":
                        got = {dict(l)["name"] for l in lines}
                        check(got == kinds, f"sink lines for {sorted(got)}, want {sorted(kinds)}")
                        pkts = [dict(r)["packets"] for l, r in lines.items()
                                if dict(l)["name"] != "tunnel"]
                        check(all(pkts), f"a packet sink wrote nothing: {lines}")
                    want = rows_as_samples(lines, kind, types)
                    pre = f"tlsmirror_{kind}_"
                    for what, got in (("stats --json", js), ("/metrics", prom)):
                        have = {k: v for k, v in got.items() if k[0].startswith(pre)}
                        res.append((what, kind, want, have))
                return res
            diff = None
            for _ in range(20):  # the counters may move between the three reads: until they agree
                res = same()
                diff = [(w, k, sorted(set(want.items()) ^ set(have.items()))[:6])
                        for w, k, want, have in res if want != have]
                if not diff:
                    break
                time.sleep(0.3)
            check(not diff, f"rows of the stats text differ from the samples: {diff}")
            agent.final_stats()
            reader.wait(10)


@timeout(60)
def test_config_file(env):
    conf = env.path("agent.conf")
    pcap = env.path("c.pcap")
    mport = free_port()
    with open(conf, "w") as f:
        f.write(f"# comment\n\n  socket {env.path('c.sock')}\nwrite={pcap}\n--mss 1000\n"
                f"metrics 127.0.0.1:{mport}\nquiet\n")
    p = env.spawn("agent", [TLSMIRROR, "--config", conf])
    wait_until(lambda: os.path.exists(env.path("c.sock")), 10, "agent from --config")
    _, text = scrape(mport)
    check("tlsmirror_agent_conns_total 0" in text, "metrics configured by the file")
    r = subprocess.run([TLSMIRROR, "stats", "--socket", env.path("c.sock")], capture_output=True)
    check(f"target={pcap}" in r.stdout.decode(), f"the file's -w: {short(r.stdout)}")
    p.signal(signal.SIGTERM)
    check(p.wait(10) == 0, "agent from --config exits 0")
    check(b"listening on" not in p.err(), f"quiet from the file: stderr {short(p.err())}")
    # errors name the file and the line
    for text, want in (("mss 10\n", ":1: invalid --mss '10'"),
                       ("write /tmp/x\nbogus-option 3\n", ":2: unknown option '--bogus-option=3'"),
                       ("write /tmp/x\n\n-w /tmp/y\n", ":3: not an option"),
                       ("config /etc/x\n", ":1: a configuration file cannot include another"),
                       ("write /tmp/x\nquiet yes\n", ":2: unknown option '--quiet=yes'")):
        with open(conf, "w") as f:
            f.write(text)
        rc, out, err = env.run("bad", [TLSMIRROR, "--socket", env.path("x.sock"), "--config", conf])
        check(rc == 2 and (conf + want).encode() in err,
              f"config {text!r}: exit {rc}, stderr {short(err)}; want '{conf}{want}'")
    rc, out, err = env.run("missing", [TLSMIRROR, "--config", env.path("none.conf")])
    check(rc == 2 and b"none.conf: No such file" in err, f"missing file: {rc} {short(err)}")
    # the command line wins over the file for an option given once
    with open(conf, "w") as f:
        f.write(f"write {env.path('file.pcap')}\nsocket {env.path('d.sock')}\n")
    p = env.spawn("agent2", [TLSMIRROR, "--config", conf, "-w", env.path("cli.pcap")])
    wait_until(lambda: os.path.exists(env.path("d.sock")), 10, "second agent")
    r = subprocess.run([TLSMIRROR, "stats", "--socket", env.path("d.sock")], capture_output=True)
    check(b"cli.pcap" in r.stdout and b"file.pcap" not in r.stdout, f"{short(r.stdout)}")
    p.signal(signal.SIGTERM)
    p.wait(10)


@timeout(60)
def test_enable_disable_status(env):
    units = env.path("systemd")
    os.makedirs(units)
    e = {"TLSMIRROR_SYSTEMD_DIR": units}
    agent = Agent(env).start()
    rc, out, err = env.run("enable", [TLSMIRROR, "enable", "--socket", agent.sock, "nginx.service"],
                           extra_env=e)
    check(rc == 0, f"enable: {rc} {short(err)}")
    dropin = os.path.join(units, "nginx.service.d", "tlsmirror.conf")
    text = open(dropin).read()
    lib = os.path.realpath(os.path.join(os.path.dirname(TLSMIRROR), "libtlsmirror.so"))
    check(f"[Service]\nEnvironment=LD_PRELOAD={lib}\nEnvironment=TLSMIRROR_SOCKET={agent.sock}\n"
          in text, f"drop-in content:\n{text}")
    check(b"systemctl daemon-reload" in out and b"systemctl restart nginx.service" in out,
          f"enable prints the commands: {short(out)}")
    # a bare name is a .service; bad names are refused, nothing written
    rc, out, err = env.run("enable2", [TLSMIRROR, "enable", "--socket", agent.sock, "web"],
                           extra_env=e)
    check(rc == 0 and os.path.exists(os.path.join(units, "web.service.d", "tlsmirror.conf")),
          f"enable web: {rc} {short(err)}")
    for bad in ("../etc", "a/b.service", "x.socket", "", "-x", "@.service", "a b", "x" * 300):
        rc, out, err = env.run("bad", [TLSMIRROR, "enable", bad], extra_env=e)
        check(rc == 2 and b"not a service unit name" in err or (bad == "-x" and rc == 2),
              f"enable {bad!r}: exit {rc} {short(err)}")
    check(sorted(os.listdir(units)) == ["nginx.service.d", "web.service.d"],
          f"only the good units have drop-ins: {os.listdir(units)}")
    # status: the enabled units, and the attached processes by their cgroup's unit
    c = certs()
    srv = RecServer(env, mode="echo")
    hold = env.captured("hold", agent.sock, [PYTHON, os.path.join(HELPERS, "pyprogs.py"), "hold",
                                             "--port", str(srv.port), "--cert", c["cert"]],
                        stdin=subprocess.PIPE)
    wait_until(lambda: any(p.get("pid") == str(hold.pid) and p.get("state") == "attached"
                           for p in agent.stats()[0]), 10, "the held process attached")
    rc, out, err = env.run("status", [TLSMIRROR, "status", "--socket", agent.sock], extra_env=e)
    o = out.decode()
    check(rc == 0 and "agent: running" in o and re.search(r"nginx\.service\s+enabled", o) and
          re.search(r"web\.service\s+enabled", o) and f"pid {hold.pid} " in o,
          f"status:\n{o}{short(err)}")
    with open(f"/proc/{hold.pid}/cgroup") as f:
        cg = f.read().strip().split("\n")[-1].split(":", 2)[2].rstrip("/").split("/")[-1] or "/"
    check(re.search(rf"{re.escape(cg)}\s+-\s+pid {hold.pid} ", o),
          f"the held process is shown with its cgroup ({cg}):\n{o}")
    rc, out, err = env.run("disable", [TLSMIRROR, "disable", "nginx.service"], extra_env=e)
    check(rc == 0 and not os.path.exists(os.path.join(units, "nginx.service.d")) and
          b"systemctl restart nginx.service" in out, f"disable: {rc} {short(out + err)}")
    rc, out, err = env.run("disable-again", [TLSMIRROR, "disable", "nginx"], extra_env=e)
    check(rc == 0 and b"was not enabled" in out, f"disable twice: {rc} {short(out)}")
    # a drop-in directory with other files of the admin's keeps them
    with open(os.path.join(units, "web.service.d", "local.conf"), "w") as f:
        f.write("[Service]\n")
    rc, out, err = env.run("disable-all", [TLSMIRROR, "disable", "--all"], extra_env=e)
    check(rc == 0 and os.listdir(os.path.join(units, "web.service.d")) == ["local.conf"],
          f"disable --all: {rc} {short(out + err)}")
    rc, out, err = env.run("status2", [TLSMIRROR, "status", "--socket", env.path("none")],
                           extra_env=e)
    check(rc == 0 and b"agent: not answering" in out and b"no unit enabled" in out,
          f"status without agent: {short(out)}")
    hold.popen.stdin.close()
    check(hold.wait(20) == 0, f"the held client: {short(hold.err())}")
    agent.final_stats()


@timeout(120)
def test_metrics_process_cardinality(env):
    """More processes than the metrics show one by one (docs/operations.md,
    "Cardinality": the newest 64): the others are folded into pid="other",
    and a sum over pid stays the agent's total, while they run and after
    they exited."""
    from tmlib import prog
    fc = prog("forkclient")
    nchild, shown = 80, 64
    mport = free_port()
    srv = RecServer(env, mode="echo")
    agent = Agent(env, args=["--metrics", f"127.0.0.1:{mport}"]).start()
    p = env.captured("forkclient", agent.sock,
                     [fc, "127.0.0.1", str(srv.port), certs()["cert"], str(nchild), "1000"],
                     stdin=subprocess.PIPE)
    wait_until(lambda: b"READY" in p.out() or not p.alive(), 60, "forkclient READY")
    check(p.alive(), f"forkclient exited early: {short(p.err())}")
    pids = {int(x) for x in re.findall(rb"^conn (\d+) ", p.out(), re.M)}
    check(len(pids) == nchild + 1, f"{len(pids)} processes made connections, want {nchild + 1}")

    def check_folded(when):
        def settled():
            procs, total, _ = agent.stats()
            return stat_int(total, "conns") == 2 * (nchild + 1) and stat_int(total, "open_conns") == 0
        wait_until(settled, 30, f"every connection seen and closed ({when})")
        head, text = scrape(mport)
        prom, types = parse_prometheus(text)
        procs, total, raw = agent.stats()
        att = {dict(ls)["pid"]: v for (n, ls), v in prom.items() if n == "tlsmirror_process_attached"}
        check(len(att) == shown + 1 and "other" in att,
              f"{when}: {len(att)} process series ({sorted(att)[:5]}...), want {shown} + other")
        check(one(prom, "tlsmirror_process_attached", pid="other", comm="other", uid="other") == 0,
              f"{when}: the folded series is no process's")
        stat_pids = {int(x["pid"]) for x in procs if x.get("comm") == "forkclient"}
        check(stat_pids == pids, f"{when}: `tlsmirror stats` still lists every process")
        for k, d in (("c2s_bytes", "c2s"), ("s2c_bytes", "s2c")):
            s = sum(series(prom, "tlsmirror_process_bytes_total", direction=d))
            check(s == stat_int(total, k) == one(prom, f"tlsmirror_agent_{k}_total") and s > 0,
                  f"{when}: sum over pid of {d} bytes {s}, the agent's total {stat_int(total, k)}")
        s = sum(series(prom, "tlsmirror_process_conns_total"))
        check(s == 2 * (nchild + 1), f"{when}: sum over pid of conns {s}")
        folded = pids - {int(x) for x in att if x != "other"}
        check(len(folded) == nchild + 1 - shown, f"{when}: folded {sorted(folded)}")
        return prom
    check_folded("running")
    p.popen.stdin.write(b"go\n")
    p.popen.stdin.close()
    check(p.wait(30) == 0, f"forkclient: {short(p.err())}")
    wait_until(lambda: all(x.get("state") != "attached" for x in agent.stats()[0]
                           if x.get("comm") == "forkclient"), 20, "every forkclient process gone")
    prom = check_folded("after exit")
    check(all(v == 0 for v in series(prom, "tlsmirror_process_attached")),
          "after exit, a process series still says attached")
    agent.final_stats()


def cap_sets(pid):
    with open(f"/proc/{pid}/status") as f:
        st = dict(l.split(":\t", 1) for l in f.read().splitlines() if ":\t" in l)
    return int(st["CapPrm"], 16), int(st["CapEff"], 16)


@timeout(60)
def test_caps_kept_for_outputs(env):
    """Run by hand as root, the agent gives up CAP_NET_RAW and
    CAP_NET_BIND_SERVICE unless its outputs need them, and keeps the rest
    (the packaged units allow only those two: test_28_installed)."""
    if os.geteuid() != 0:
        raise Skip("needs root")
    raw, bind, admin = 1 << 13, 1 << 10, 1 << 21
    prm0, _ = cap_sets(os.getpid())
    check(prm0 & raw and prm0 & bind and prm0 & admin, f"the test runs without the capabilities: {prm0:x}")
    a = Agent(env, "plain").start()
    prm, eff = cap_sets(a.proc.pid)
    check(not prm & (raw | bind) and not eff & (raw | bind) and prm & admin and eff & admin,
          f"-w only: CapPrm {prm:x} CapEff {eff:x}: want NET_RAW and NET_BIND_SERVICE gone, the rest kept")
    a.final_stats()
    # a port below 1024 keeps CAP_NET_BIND_SERVICE (and the listener works)
    for port in range(900, 1000):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
                break
            except OSError:
                continue
    b = Agent(env, "low", args=["--pcap-over-ip", f"127.0.0.1:{port}"]).start()
    prm, eff = cap_sets(b.proc.pid)
    check(prm & bind and eff & bind and not prm & raw, f"--pcap-over-ip :{port}: CapPrm {prm:x}")
    wait_listening(port, proc=b.proc)
    b.final_stats()
