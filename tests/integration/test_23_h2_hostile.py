# Integration test 23: --h2-to-h1 against hostile HTTP/2 (no invented request) and a real connection on a synthetic stream's port (from another netns).
import os
import subprocess

from netns import Netns
from test_13_h2 import parse_h1, run_nginx, stop_all
from tmlib import (HELPERS, PYTHON, Agent, certs, check, check_stream, free_port, gen_bytes,
                   judge, need_tool, nginx_conf, short, stat_int, timeout, tshark_fields,
                   wait_until)

H2RAW = os.path.join(HELPERS, "h2raw.py")
CLI_IP, SRV_IP = "10.232.0.1", "10.232.0.2"   # only inside the test's own namespace pair

CONF = nginx_conf(1, """    server {{
        listen {addr}:{port} ssl http2;
        ssl_certificate {cert};
        ssl_certificate_key {key};
        root {prefix}/html;
    }}
""")


def start_nginx(env, agent, addr, port, files):
    prefix = env.path("nginx")
    for d in ("html", "tmp", "logs"):
        os.makedirs(os.path.join(prefix, d))
    for name, data in files.items():
        with open(os.path.join(prefix, "html", name), "wb") as f:
            f.write(data)
    c = certs()
    return run_nginx(env, agent, prefix, CONF.format(prefix=prefix, addr=addr, port=port,
                                                     cert=c["cert"], key=c["key"]))


@timeout(120)
def test_h2_hostile_fields_invent_no_request(env):
    """A :path carrying CR/LF and a second request line, a header value with
    CR/LF, and a body past its content-length: 0, each on its own connection,
    then a good GET. tshark's HTTP/1.1 view has the requests sent (the GET,
    the POST's head) and no GET /admin; each hostile connection is counted as malformed and falls
    back to its raw HTTP/2 bytes on its real 4-tuple."""
    small = gen_bytes(100, 2301)
    agent = Agent(env, args=["--h2-to-h1"]).start()
    port = free_port()
    ngx = start_nginx(env, agent, "127.0.0.1", port, {"small": small})
    rc, out, err = env.run("h2raw", [PYTHON, H2RAW, "127.0.0.1", str(port), "localhost",
                                     certs()["cert"], "hostile"], timeout_s=60)
    check(rc == 0, f"h2raw exited {rc}: {short(err)}")
    lines = out.decode().split("\n")
    check(f"good response {len(small)}" in lines, f"the good GET failed: {lines}")
    total = stop_all(env, ngx, agent)[1]
    rows = tshark_fields(agent.pcap, ["tcp.stream", "http.request.method", "http.request.uri"],
                         display_filter="http.request")
    check(sorted(tuple(r[1:]) for r in rows) == [("GET", "/small"), ("POST", "/small")],
          f"tshark's HTTP/1.1 requests, want only GET /small and POST /small: {rows}")
    whole = subprocess.run([need_tool("tshark"), "-r", agent.pcap, "-o", "tcp.desegment_tcp_streams:TRUE",
                            "-Y", "http", "-T", "fields", "-e", "http.request.line",
                            "-e", "http.request.uri"], capture_output=True, timeout=60)
    check(b"admin" not in whole.stdout, f"tshark sees /admin: {short(whole.stdout)}")
    cap = judge(agent.pcap, binary=lambda st: not (10000 <= st.client[1] <= 32767),
                allow_gaps=True)
    raw = [st for st in cap.streams if not 10000 <= st.client[1] <= 32767]
    check(len(raw) == 3, f"want the 3 hostile connections raw on their real ports: {cap.describe()}")
    for st in raw:
        check(st.server == ("127.0.0.1", port) and b"admin" in st.direction(0)["data"],
              f"{st.name()}: not the hostile HTTP/2 bytes")
    # what the sensor gets instead is the real HTTP/2: decoded as such, the request's
    # :path is the hostile one, in one field
    h2 = tshark_fields(agent.pcap, ["http2.headers.path"], display_filter="http2.type == 1",
                       extra=["-d", f"tcp.port=={port},http2"])
    check(any(r[0].startswith("/a HTTP/1.1") and "GET /admin" in r[0] for r in h2),
          f"tshark decoding the fallback as HTTP/2 does not show the hostile :path: {h2}")
    check(stat_int(total, "h2_malformed") == 3 and stat_int(total, "h2_errors") == 3 and
          stat_int(total, "h2_fallbacks") == 3 and stat_int(total, "h2_streams") == 2 and
          stat_int(total, "h2_flow_errors") == 0,
          f"want 3 malformed connections fallen back, 2 streams converted (the good GET, the "
          f"POST head before its body broke the length): {total}")


@timeout(150)
def test_real_connection_on_a_synthetic_port(env):
    """nginx (h2, --h2-to-h1) in the root namespace; in namespace cli an h2
    client holds a stream open (flow control) while its synthetic connection
    uses client port 10000 (the agent's first), and a real HTTP/1.1 client
    connects from that very port. Both appear complete and byte-exact: the
    real connection on its own 4-tuple, the stream's HTTP/1.1 exchange moved
    on to another port."""
    big, small = gen_bytes(50000, 2302), gen_bytes(300, 2303)
    with Netns(env) as nets:
        cli = nets.ns("cli")
        vc, vr = nets.veth(cli, None)
        nets.sh(cli, "ip", "addr", "add", f"{CLI_IP}/30", "dev", vc)
        nets.sh(None, "ip", "addr", "add", f"{SRV_IP}/30", "dev", vr)
        agent = Agent(env, args=["--h2-to-h1"]).start()
        port = free_port()
        ngx = start_nginx(env, agent, SRV_IP, port, {"big": big, "small": small})
        hold = nets.spawn_in(cli, "h2hold", [PYTHON, H2RAW, SRV_IP, str(port), "localhost",
                                             certs()["cert"], "hold"], stdin=subprocess.PIPE)
        wait_until(lambda: b"held" in hold.out() or not hold.alive(), 20, "the held stream")
        check(hold.alive(), f"h2 client: {short(hold.out() + hold.err())}")
        wait_until(lambda: stat_int(agent.stats()[1], "h2_streams") == 1, 10,
                   "the agent to open the stream's synthetic connection")
        out = env.path("real")
        rc = nets.spawn_in(cli, "h1real", [PYTHON, H2RAW, SRV_IP, str(port), "localhost",
                                           certs()["cert"], "h1", "10000", out]).wait(30)
        check(rc == 0, "the real client on port 10000 failed")
        hold.popen.stdin.write(b"go\n")
        hold.popen.stdin.close()
        check(hold.wait(30) == 0 and f"done {len(big)}".encode() in hold.out(),
              f"h2 client: {short(hold.out() + hold.err())}")
        total = stop_all(env, ngx, agent)[1]
    cap = judge(agent.pcap, allow_analysis=("same ports",))
    with open(out + ".c2s", "rb") as f:
        c2s = f.read()
    with open(out + ".s2c", "rb") as f:
        s2c = f.read()
    check(s2c.endswith(small), "the real client did not get /small")
    on_port = cap.find(client_port=10000, server_port=port)
    check(len(on_port) == 2, f"want the synthetic then the real connection on port 10000: "
          f"{cap.describe()}")
    real = [st for st in on_port if st.bytes(0) == c2s]
    check(len(real) == 1, f"no connection on port 10000 with the real client's bytes: {cap.describe()}")
    check_stream(real[0], c2s=c2s, s2c=s2c, client=(CLI_IP, 10000), server=(SRV_IP, port))
    # the stream: begun on 10000, its FIN there, the rest on the port it moved to
    syn = sorted((st for st in cap.streams if st is not real[0] and st.server == (SRV_IP, port)
                  and st.client[0] == CLI_IP), key=lambda st: st.segs[0].frame)
    check(len(syn) == 2 and syn[0].client[1] == 10000 and syn[1].client[1] != 10000,
          f"want the stream's connection on 10000, then on another port: {cap.describe()}")
    (rl, _, _, _), = parse_h1(syn[0].bytes(0) + syn[1].bytes(0), responses=False)
    check(rl == b"GET /big HTTP/1.1", f"the stream's request line: {rl!r}")
    (sl, _, body, _), = parse_h1(syn[0].bytes(1) + syn[1].bytes(1), responses=True)
    check(sl.startswith(b"HTTP/1.1 200") and body == big,
          f"the stream's response: {sl!r}, body {len(body)} of {len(big)} bytes")
    rows = tshark_fields(agent.pcap, ["http.request.method", "http.request.uri"],
                         display_filter="http.request")
    check(sorted(tuple(r) for r in rows) == [("GET", "/big"), ("GET", "/small")],
          f"tshark's requests: {rows}")
    check(stat_int(total, "synthetic_moved") == 1 and stat_int(total, "duplicate_conns") == 0 and
          stat_int(total, "orphan_records") == 0 and stat_int(total, "h2_flow_errors") == 0,
          f"counters: {total}")
