# Integration test 31: HTTP records to Kafka (librdkafka's mock cluster, read back by kcat, a broker outage) and to an HTTPS collector (--http-post: batches, verified TLS, retries), with nginx under capture.
import json
import os
import signal
import ssl
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from test_13_h2 import run_nginx
from tmlib import (Agent, certs, check, free_port, gen_bytes, need_tool, nginx_conf, prog, short,
                   stat_int, timeout, wait_until)

CONF = nginx_conf(1, """    server {{
        listen 127.0.0.1:{port} ssl;
        ssl_certificate {cert};
        ssl_certificate_key {key};
        root {prefix}/html;
    }}
""")


def nginx(env, agent):
    prefix = env.path("nginx")
    for d in ("html", "tmp", "logs"):
        os.makedirs(os.path.join(prefix, d), exist_ok=True)
    with open(os.path.join(prefix, "html", "page"), "wb") as f:
        f.write(gen_bytes(2000, 3101).hex().encode())
    port = free_port()
    c = certs()
    ngx = run_nginx(env, agent, prefix, CONF.format(prefix=prefix, port=port, cert=c["cert"],
                                                    key=c["key"]))
    return ngx, port


def requests(env, port, n, tag):
    """n GETs on one connection; returns how long curl took."""
    args = [need_tool("curl"), "-sS", "--cacert", certs()["cert"], "--resolve",
            f"localhost:{port}:127.0.0.1"]
    for i in range(n):
        args += ["-o", "/dev/null", f"https://localhost:{port}/page?{tag}={i}"]
    t0 = time.time()
    rc, out, err = env.run("curl-" + tag, args, timeout_s=60)
    check(rc == 0, f"curl exited {rc}: {short(err)}")
    return time.time() - t0


def sink_line(agent, name):
    raw = agent.stats()[2]
    for line in raw.splitlines():
        if line.startswith(f"sink name={name} "):
            return dict(kv.split("=", 1) for kv in line.split()[1:] if "=" in kv)
    return {}


class Mock:
    """tests/progs/kafkamock: librdkafka's mock cluster with one topic."""

    def __init__(self, env, topic):
        self.p = subprocess.Popen([prog("kafkamock"), topic], stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        line = self.p.stdout.readline()
        check(line.startswith("bootstrap "), f"kafkamock: {line!r} {self.p.stderr.read() if not line else ''}")
        self.bootstrap = line.split()[1]
        self.topic = topic

    def cmd(self, what):
        self.p.stdin.write(what + "\n")
        self.p.stdin.flush()
        check(self.p.stdout.readline().strip() == "is " + what, f"kafkamock {what}")

    def consume(self, want, timeout_s=20):
        """The topic's messages, read by kcat (an independent consumer), once there are want."""
        deadline = time.time() + timeout_s
        while True:
            r = subprocess.run([need_tool("kcat"), "-b", self.bootstrap, "-C", "-t", self.topic,
                                "-o", "beginning", "-e", "-q", "-D", "\x1e"],
                               capture_output=True, timeout=30)
            msgs = [m for m in r.stdout.split(b"\x1e") if m]
            if len(msgs) >= want or time.time() > deadline:
                return msgs
            time.sleep(0.5)

    def close(self):
        self.p.stdin.close()
        self.p.wait(10)


@timeout(180)
def test_kafka_records_and_broker_outage(env):
    mock = Mock(env, "tlsmirror.http")
    try:
        log = env.path("records.jsonl")
        agent = Agent(env, args=["--http-log", log, "--kafka", mock.bootstrap,
                                 "--kafka-topic", mock.topic]).start()
        ngx, port = nginx(env, agent)
        requests(env, port, 20, "a")
        wait_until(lambda: sink_line(agent, "kafka").get("delivered") == "20", 15,
                   "20 records delivered to Kafka")
        # the brokers vanish: nginx does not notice, records wait in librdkafka's buffer
        mock.cmd("down")
        took = requests(env, port, 10, "b")
        check(took < 5, f"10 requests took {took:.1f} s with the brokers down")
        time.sleep(2)
        k = sink_line(agent, "kafka")
        check(k.get("delivered") == "20" and k.get("in_flight") == "10" and k.get("failed") == "0",
              f"while down: {k}")
        mock.cmd("up")
        wait_until(lambda: sink_line(agent, "kafka").get("delivered") == "30", 30,
                   "the 10 records delivered once the brokers are back")
        msgs = mock.consume(30)
        ngx.signal(signal.SIGQUIT)
        ngx.wait(20)
        time.sleep(0.3)
        procs, total = agent.final_stats()
        lines = [l for l in open(log, "rb").read().split(b"\n") if l]
        check(len(msgs) == 30 and sorted(msgs) == sorted(lines),
              f"kcat read {len(msgs)} messages, the file has {len(lines)} records; equal: "
              f"{sorted(msgs) == sorted(lines)}")
        paths = sorted(json.loads(m)["path"] + "?" + json.loads(m)["query"] for m in msgs)
        check(paths == sorted([f"/page?a={i}" for i in range(20)] + [f"/page?b={i}" for i in range(10)]),
              f"paths: {paths[:4]}")
        final = [l for l in agent.stderr_text.splitlines() if l.startswith("sink name=kafka ")]
        check(final and " broker_errors=0 " not in final[0] and " failed=0 " in final[0] and
              " lost_at_exit=0 " in final[0], f"the outage's counters at exit: {final}")
    finally:
        mock.close()


@timeout(120)
def test_kafka_outage_longer_than_the_timeout_is_counted(env):
    """Records that cannot be delivered within message.timeout.ms are counted
    as failed; the agent and nginx go on, and later records get through."""
    mock = Mock(env, "t2")
    try:
        agent = Agent(env, args=["--kafka", mock.bootstrap, "--kafka-topic", "t2",
                                 "--kafka-conf", "message.timeout.ms=1500",
                                 # back within the (short) timeout once the brokers are
                                 "--kafka-conf", "reconnect.backoff.max.ms=300"]).start()
        ngx, port = nginx(env, agent)
        mock.cmd("down")
        requests(env, port, 5, "lost")
        wait_until(lambda: sink_line(agent, "kafka").get("failed") == "5", 15,
                   "5 records counted as failed")
        mock.cmd("up")
        requests(env, port, 3, "later")
        try:
            wait_until(lambda: sink_line(agent, "kafka").get("delivered") == "3", 20,
                       "the records after the outage delivered")
        except AssertionError as e:
            raise AssertionError(f"{e}: {sink_line(agent, 'kafka')}")
        msgs = mock.consume(3)
        check(len(msgs) == 3 and all(b"later" in m for m in msgs), f"kcat: {msgs}")
        ngx.signal(signal.SIGQUIT)
        ngx.wait(20)
        agent.final_stats()
    finally:
        mock.close()


class Collector:
    """An HTTPS server that takes POSTs: the first `fail` get 503, the rest 200."""

    def __init__(self, fail=0):
        self.bodies, self.heads, self.lock, self.fail = [], [], threading.Lock(), fail
        outer = self

        class H(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                with outer.lock:
                    refuse = outer.fail > 0
                    outer.fail -= refuse
                    if not refuse:
                        outer.bodies.append(body)
                        outer.heads.append(dict(self.headers))
                self.send_response(503 if refuse else 200)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

        self.port = free_port()
        self.srv = ThreadingHTTPServer(("127.0.0.1", self.port), H)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(certs()["cert"], certs()["key"])
        self.srv.socket = ctx.wrap_socket(self.srv.socket, server_side=True)
        threading.Thread(target=self.srv.serve_forever, daemon=True).start()

    def close(self):
        self.srv.shutdown()


@timeout(120)
def test_http_post_akto_batches_verified_and_retried(env):
    col = Collector(fail=2)
    try:
        url = f"https://localhost:{col.port}/api/ingestData"
        agent = Agent(env, args=["--http-post", url, "--http-post-ca", certs()["cert"],
                                 "--http-format", "akto"]).start()
        ngx, port = nginx(env, agent)
        requests(env, port, 30, "p")
        wait_until(lambda: sink_line(agent, "http-post").get("records_sent") == "30", 30,
                   "30 records POSTed")
        p = sink_line(agent, "http-post")
        check(int(p["retries"]) >= 2 and p["failed_records"] == "0", f"post counters: {p}")
        ngx.signal(signal.SIGQUIT)
        ngx.wait(20)
        agent.final_stats()
    finally:
        col.close()
    recs = []
    for body, head in zip(col.bodies, col.heads):
        check(head.get("Content-Type") == "application/json", f"content type {head}")
        recs += json.loads(body)["batchData"]
    check(len(recs) == 30 and len(col.bodies) < 30, f"{len(recs)} records in {len(col.bodies)} POSTs")
    for r in recs:
        check(set(r) >= {"path", "method", "requestHeaders", "responseHeaders", "requestPayload",
                         "responsePayload", "ip", "time", "statusCode", "type", "status",
                         "akto_account_id", "akto_vxlan_id", "is_pending", "source"} and
              all(isinstance(v, str) for v in r.values()), f"Akto fields: {r}")
        check(r["method"] == "GET" and r["statusCode"] == "200" and r["status"] == "200 OK" and
              r["ip"] == "127.0.0.1" and r["type"] == "HTTP/1.1" and r["is_pending"] == "false",
              f"Akto record: {dict(r, responsePayload='...')}")
        h = json.loads(r["requestHeaders"])
        check(h.get("host") == f"localhost:{port}" and "user-agent" in h, f"requestHeaders: {h}")
        check(json.loads(r["responseHeaders"]).get("content-length") == "4000", "responseHeaders")
    check(sorted(r["path"] for r in recs) == sorted(f"/page?p={i}" for i in range(30)), "paths")


@timeout(60)
def test_http_post_unverified_collector_gets_nothing(env):
    """A collector whose certificate the CA given does not sign: no record is
    sent to it, every one is counted as failed."""
    col = Collector()
    try:
        other = env.path("other-ca.pem")
        subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
                        "-nodes", "-days", "1", "-subj", "/CN=localhost", "-keyout", env.path("other.key"),
                        "-out", other], capture_output=True, check=True)
        agent = Agent(env, args=["--http-post", f"https://localhost:{col.port}/x",
                                 "--http-post-ca", other]).start()
        ngx, port = nginx(env, agent)
        requests(env, port, 3, "u")
        wait_until(lambda: sink_line(agent, "http-post").get("failed_records") == "3", 30,
                   "3 records given up")
        ngx.signal(signal.SIGQUIT)
        ngx.wait(20)
        agent.final_stats()
        check("certificate" in agent.stderr_text, f"no certificate error logged: {short(agent.stderr_text)}")
    finally:
        col.close()
    check(not col.bodies, "records reached an unverified collector")


@timeout(120)
def test_records_at_the_collector(env):
    """Records where the agents' connections arrive: the collector writes them
    (records alone besides its pcap), the agent converts HTTP/2 and writes none;
    each record names the agent, HTTP/2 streams come as the agent's HTTP/1.1."""
    from test_21_tunnel import collector, pki, sent_events, tunnel_agent, wait_collected, wait_connected
    from test_25_pcapng import check_file, curl_argv, nginx as nginx25, run_ok
    d, _ = pki(env)
    port = free_port()
    log = env.path("col.jsonl")
    col = collector(env, d, port, extra=["--http-log", log])
    ag = tunnel_agent(env, d, port, extra=["--h2-to-h1"])
    wait_connected(env, ag)
    body = gen_bytes(30000, 3102)
    nport, _ = nginx25(env, "nginx-plain", body)
    for i, h2 in enumerate((True, False)):
        cu = env.captured(f"curl{i}", ag.sock, curl_argv(nport, env.path(f"c{i}.out"), http2=h2))
        run_ok(cu, "curl under capture")
        check_file("curl's download", env.path(f"c{i}.out"), body)
    ag.final_stats()
    wait_collected(col, "agent1", sent_events(ag))
    col.final_stats()
    recs = [json.loads(l) for l in open(log, "rb").read().split(b"\n") if l]
    got = sorted((r["method"], r["path"], r["response"]["status"], r["conn"]["agent_host"],
                  r["conn"]["source"], r["conn"]["alpn"]) for r in recs)
    check(got == [("GET", "/body", 200, "agent1", "capture", "http/1.1"),
                  ("GET", "/body", 200, "agent1", "synthetic", "h2")], f"collector's records: {got}")
    for r in recs:
        check(r["response"]["body_bytes"] == len(body) and r["conn"]["process"] == "curl" and
              r["end"] == "done", f"record: {dict(r, response='...')}")
