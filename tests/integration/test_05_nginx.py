# Integration test 5: nginx master + 2 workers under capture, h2load HTTP/1.1 and h2 load; every response mirrored.
import os
import re
import signal
import time

from tmlib import (nginx_conf, start_nginx, Agent, Skip, certs, check, free_port, gen_bytes, h2_data, have_ipv6, judge,
                   need_tool, parse_h1_messages, parse_h2_frames, short, stat_int, timeout)

REQUESTS, CLIENTS, BODY = 2000, 20, 1024

CONF = nginx_conf(2, """    server {{
        # reuseport: the kernel spreads connections over both workers (without it
        # one worker of a loaded machine may accept them all)
        listen 127.0.0.1:{port} ssl http2 reuseport;
        listen [::1]:{port} ssl http2 reuseport;
        ssl_certificate {cert};
        ssl_certificate_key {key};
        root {prefix}/html;
    }}
""")


def h2load(env, url, h1):
    # h2load's own authority for [::1] is rejected by nginx (400): name the host
    argv = [need_tool("h2load"), "-n", str(REQUESTS), "-c", str(CLIENTS),
            "-H", ":authority: localhost"]
    if h1:
        argv.append("--h1")
    rc, out, err = env.run("h2load-h1" if h1 else "h2load-h2", argv + [url], timeout_s=120)
    text = out.decode("utf-8", "replace")
    m = re.search(r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, "
                  r"(\d+) failed", text)
    check(rc == 0 and m, f"h2load {'--h1 ' if h1 else ''}{url} exited {rc}: {short(text + err.decode(), 800)}")
    check(int(m.group(4)) == REQUESTS and int(m.group(5)) == 0,
          f"h2load against nginx under capture: {m.group(0)}")
    traffic = int(re.search(r"traffic: \S+ \((\d+)\) total", text).group(1))
    return traffic


def check_h1(streams, body):
    reqs = resps = s2c = 0
    for st in streams:
        msgs = parse_h1_messages(st.bytes(0), responses=False)
        check(all(m[0].startswith(b"GET /1k HTTP/1.1") for m in msgs),
              f"{st.name()}: unexpected request lines {[m[0] for m in msgs[:3]]}")
        reqs += len(msgs)
        data = st.bytes(1)
        s2c += len(data)
        for line, hdrs, b in parse_h1_messages(data, responses=True):
            check(line.startswith(b"HTTP/1.1 200"), f"{st.name()}: response {line!r}")
            check(b == body, f"{st.name()}: a response body differs from the served file")
            resps += 1
    return reqs, resps, s2c


def check_h2(streams, body):
    reqs = resps = s2c = 0
    for st in streams:
        cf = parse_h2_frames(st.bytes(0), client=True)
        reqs += sum(1 for f in cf if f[0] == 1)
        data = st.bytes(1)
        s2c += len(data)
        sf = parse_h2_frames(data, client=False)
        resps += sum(1 for f in sf if f[0] == 1 and f[2] != 0)
        for sid, b in h2_data(sf).items():
            check(b == body, f"{st.name()}: h2 stream {sid} DATA ({len(b)} bytes) differs from "
                  f"the served file")
    return reqs, resps, s2c


@timeout(240)
def test_nginx_h1_h2(env):
    if not have_ipv6():
        raise Skip("no IPv6 loopback (::1) on this host")
    c = certs()
    prefix = env.path("nginx")
    for d in ("html", "tmp", "logs"):
        os.makedirs(os.path.join(prefix, d))
    body = gen_bytes(BODY, 51)
    with open(os.path.join(prefix, "html", "1k"), "wb") as f:
        f.write(body)
    port = free_port()
    agent = Agent(env).start()
    ngx, _ = start_nginx(env, agent.sock, prefix,
                         CONF.format(prefix=prefix, port=port, cert=c["cert"], key=c["key"]), 2)
    time.sleep(0.3)
    tr1 = h2load(env, f"https://127.0.0.1:{port}/1k", h1=True)
    tr2 = h2load(env, f"https://[::1]:{port}/1k", h1=False)
    procs, total, raw = agent.stats()
    ngx_procs = [p for p in procs if p.get("comm") == "nginx"]
    conns = sum(stat_int(p, "conns") for p in ngx_procs)
    check(conns == 2 * CLIENTS, f"nginx processes in stats report {conns} connections, h2load "
          f"made {2 * CLIENTS}:\n{raw}")
    check(len([p for p in ngx_procs if stat_int(p, "conns") > 0]) == 2,
          f"expected both workers to serve connections:\n{raw}")
    ngx.signal(signal.SIGQUIT)
    rc = ngx.wait(20)
    check(rc == 0, f"nginx exited {rc}: {short(ngx.err())}")
    time.sleep(0.3)
    procs, total = agent.final_stats()
    for k in ("dropped_bytes", "gap_bytes", "bad_records"):
        check(stat_int(total, k) == 0, f"agent exit stats: {k}={total.get(k)}, want 0: {total}")
    # h2 framing is binary: TLS-looking byte pairs may occur; h2 parsing checks those streams
    cap = judge(agent.pcap, binary=lambda st: st.server == ("::1", port))
    syn = cap.syn_streams()
    check(len(syn) == 2 * CLIENTS, f"capture has {len(syn)} TCP connections, h2load made "
          f"{2 * CLIENTS} TLS connections: {cap.describe()}")
    v4 = [s for s in syn if s.server == ("127.0.0.1", port)]
    v6 = [s for s in syn if s.server == ("::1", port)]
    check(len(v4) == CLIENTS and len(v6) == CLIENTS, f"{len(v4)} connections to "
          f"127.0.0.1:{port} and {len(v6)} to [::1]:{port}, want {CLIENTS} each")
    reqs, resps, s2c = check_h1(v4, body)
    check(reqs == REQUESTS and resps == REQUESTS, f"HTTP/1.1 streams carry {reqs} requests and "
          f"{resps} responses, h2load completed {REQUESTS}")
    check(s2c >= tr1, f"HTTP/1.1 s2c clear text {s2c} bytes < h2load's {tr1} bytes received")
    reqs, resps, s2c = check_h2(v6, body)
    check(reqs == REQUESTS and resps == REQUESTS, f"h2 streams carry {reqs} request HEADERS and "
          f"{resps} response HEADERS, h2load completed {REQUESTS}")
    check(s2c >= tr2, f"h2 s2c clear text {s2c} bytes < h2load's {tr2} bytes received")
