# Integration test 22: app+agent in one netns, collector in a second replaying onto a veth into a third (dumpcap).
import signal
import subprocess
import time

from netns import Netns
from tmlib import (TLSMIRROR, Agent, RecServer, assert_bytes, certs, check, check_against_server,
                   gen_bytes, judge, need_tool, short, timeout, wait_until)
from test_21_tunnel import pcap_records, stat_line, tls_args

APP_IP, COL_IP = "10.231.0.1", "10.231.0.2"   # only inside the test's own namespaces


def pki(env):
    d = env.path("pki")
    for s in (["init", d], ["issue", d, "agent1", "--agent"],
              ["issue", d, "coll", "--collector", "--host", COL_IP]):
        rc, _, err = env.run("pki", [TLSMIRROR, "pki"] + s, timeout_s=30)
        check(rc == 0, f"tlsmirror pki {' '.join(s)} exited {rc}: {short(err)}")
    return d


def dumpcap(env, nets, ns, dev):
    need_tool("dumpcap")
    ng = env.path("wire.pcapng")
    p = nets.spawn_in(ns, "dumpcap", ["dumpcap", "-i", dev, "-f", "tcp", "-w", ng])
    wait_until(lambda: b"Capturing on" in p.err() or not p.alive(), 15, "dumpcap to start")
    check(p.alive(), f"dumpcap failed: {short(p.err())}")

    def stop():
        time.sleep(0.5)
        p.signal(signal.SIGINT)
        p.wait(15)
        out = env.path("wire.pcap")
        r = subprocess.run(["editcap", "-F", "nsecpcap", ng, out], capture_output=True,
                           timeout=120)
        check(r.returncode == 0, f"editcap failed: {short(r.stderr)}")
        return out
    return stop


@timeout(120)
def test_tunnel_across_namespaces(env):
    """Namespace app: RecServer, curl under capture, the agent with -t to the collector's
    address; namespace col: the collector (-C, mutual TLS) replaying with -o onto a veth
    with no address; namespace cap: dumpcap on the veth's peer. The frames on that wire
    are the agent's own frames, byte for byte, and tshark finds the server's bytes."""
    d = pki(env)
    body = gen_bytes(400000, 2201)
    with open(env.path("body.bin"), "wb") as f:
        f.write(body)
    with Netns(env) as nets:
        app, col_ns, cap = nets.ns("app"), nets.ns("col"), nets.ns("cap")
        va, vb = nets.veth(app, col_ns)
        nets.sh(app, "ip", "addr", "add", f"{APP_IP}/30", "dev", va)
        nets.sh(col_ns, "ip", "addr", "add", f"{COL_IP}/30", "dev", vb)
        vc, vd = nets.veth(col_ns, cap, mtu=1500)
        stop_wire = dumpcap(env, nets, cap, vd)
        with nets.inside(col_ns):
            col = Agent(env, name="collector", args=["-C", "-l", f"{COL_IP}:7443", "-o", vc]
                        + tls_args(d, "coll")).start()
        with nets.inside(app):
            srv = RecServer(env, body=env.path("body.bin"))
            ag = Agent(env, name="agent1", args=["-t", f"{COL_IP}:7443"]
                       + tls_args(d, "agent1")).start()
            wait_until(lambda: (stat_line(ag.stats()[2], "tunnel ") or {}).get("state") ==
                       "connected", 15, "the tunnel across namespaces")
            c = certs()
            out = env.path("got.bin")
            p = env.captured("curl", ag.sock, [need_tool("curl"), "-sS", "--cacert", c["cert"],
                                               "--resolve", f"localhost:{srv.port}:127.0.0.1",
                                               f"https://localhost:{srv.port}/body", "-o", out])
            check(p.wait(60) == 0, f"curl failed: {short(p.err())}")
        with open(out, "rb") as f:
            assert_bytes("curl output", body, f.read())
        conns = srv.conns(1)
        ag.final_stats()
        mine = pcap_records(ag.pcap)

        sent = int(stat_line(ag.stderr_text, "tunnel ")["sent_events"])

        def collected():
            a = stat_line(col.stats()[2], "collector_agent ")
            return a and int(a["events"]) >= sent
        wait_until(collected, 20, f"the collector to receive {sent} events")
        col.final_stats()
        wire = stop_wire()
        got = [fr for _, fr in pcap_records(wire)]
        want = [fr for _, fr in mine]
        check(len(got) == len(want), f"{len(got)} frames on the veth, the agent wrote {len(want)}")
        for i, (g, w) in enumerate(zip(got, want)):
            if g != w:
                assert_bytes(f"frame {i + 1} on the veth", w, g)
        check_against_server(judge(wire), conns)
