# Integration test 25: --port-map shows the clear text of a TLS port on a clear-text port, so port-based dissectors (tshark's HTTP on 80) parse it.
import time

from tmlib import (Agent, RecServer, certs, check, judge, need_tool, short, timeout,
                   tshark_fields)


@timeout(120)
def test_port_map_http_on_80(env):
    """curl (captured) GETs from a TLS server on a random port; --port-map PORT:80 puts
    the clear text on port 80: tshark's HTTP dissector sees the request there (by
    port alone), the stream is whole, and no packet shows the real port."""
    srv = RecServer(env)
    agent = Agent(env, args=["--port-map", f"{srv.port}:80,8443:8080"]).start()
    c = certs()
    url = f"https://localhost:{srv.port}/portmap-probe"
    p = env.captured("curl", agent.sock, [need_tool("curl"), "-sS", "--cacert", c["cert"],
                                          "--resolve", f"localhost:{srv.port}:127.0.0.1",
                                          "-o", env.path("got.bin"), url])
    rc = p.wait(60)
    check(rc == 0, f"curl exited {rc}: {short(p.err())}")
    conns = srv.conns(1)
    _, total, raw = agent.stats()
    check("stage name=portmap" in raw and " mapped=1" in raw,
          f"stats should count one mapped connection:\n{raw}")
    agent.final_stats()
    cap = judge(agent.pcap)
    syn = cap.syn_streams()
    check(len(syn) == 1, f"want one connection: {cap.describe()}")
    st = syn[0]
    check(st.server == ("127.0.0.1", 80), f"{st.name()}: the server end must be on port 80")
    check(st.bytes(0) == conns[0].c2s and st.bytes(1) == conns[0].s2c,
          "the mapped stream must carry exactly what the server saw")
    # tshark's defaults, HTTP by port: the request and the response are parsed
    req = tshark_fields(agent.pcap, ["tcp.dstport", "http.request.method", "http.request.uri"],
                        "http.request")
    check(req == [["80", "GET", "/portmap-probe"]], f"tshark -Y http.request on the pcap: {req}")
    resp = tshark_fields(agent.pcap, ["tcp.srcport", "http.response.code"], "http.response")
    check(len(resp) == 1 and resp[0][0] == "80", f"tshark -Y http.response: {resp}")
    ports = tshark_fields(agent.pcap, ["tcp.srcport", "tcp.dstport"])
    check(all(str(srv.port) not in row for row in ports),
          f"the real port {srv.port} must not appear in any packet")


@timeout(30)
def test_port_map_bad_argument(env):
    """A malformed map is a command-line error (exit 2) that says what is wanted."""
    import subprocess
    from tmlib import TLSMIRROR
    for bad in ("443", "443:80,443:81", "443:0", "x:80", "443:80,"):
        r = subprocess.run([TLSMIRROR, "--port-map", bad, "-w", env.path("x.pcap")],
                           capture_output=True, timeout=10)
        check(r.returncode == 2 and b"--port-map" in r.stderr and b"P:Q" in r.stderr,
              f"--port-map {bad}: exit {r.returncode}, stderr {short(r.stderr)}")
