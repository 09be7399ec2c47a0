# Integration test 34: where tlsmirror decrypt's keys come from besides a key-log file: a server's RSA key (TLS 1.2 RSA key exchange, extended master secret, a ticket resumption), the Decryption Secrets Block of a pcapng file, and an agent in another network namespace sending its capture library's keys over the tunnel while decrypt captures the veth live.
import os
import signal
import subprocess
import time

from netns import Netns
from tmlib import (TLSMIRROR, Agent, RecServer, certs, check, check_against_server, free_port,
                   gen_bytes, judge, need_tool, short, timeout, wait_listening, wait_until)
from test_21_tunnel import stat_line, tls_args

APP_IP, SENSOR_IP = "10.231.4.1", "10.231.4.2"   # only inside the test's own namespace


def dumpcap(env, dev, port, path, ns_argv=()):
    p = env.spawn("dumpcap", list(ns_argv) + [need_tool("dumpcap"), "-q", "-i", dev, "-f",
                                              f"tcp port {port}", "-w", path])
    time.sleep(1.5)
    check(p.alive(), f"dumpcap: {short(p.err())}")

    def stop():
        time.sleep(0.5)
        p.signal(signal.SIGTERM)
        p.wait(10)
    return stop


def decrypt(env, args, name="decrypt", expect_rc=0):
    rc, out, err = env.run(name, [TLSMIRROR, "decrypt"] + args, timeout_s=120)
    text = err.decode("utf-8", "replace")
    check(expect_rc is None or rc == expect_rc,
          f"tlsmirror decrypt exited {rc}: {short(err, 800)}")
    return stat_line(text, "source decrypt") or {}, text


def rsa_server(env, port, root):
    key, cert = env.path("rsa.key"), env.path("rsa.pem")
    r = subprocess.run([need_tool("openssl"), "req", "-x509", "-newkey", "rsa:2048", "-nodes",
                        "-keyout", key, "-out", cert, "-days", "2", "-subj", "/CN=localhost"],
                       capture_output=True, timeout=60)
    check(r.returncode == 0, f"openssl req: {short(r.stderr)}")
    p = env.spawn("s_server", [need_tool("openssl"), "s_server", "-accept", str(port), "-cert",
                               cert, "-key", key, "-WWW", "-quiet", "-no_tls1_3", "-cipher",
                               "AES128-GCM-SHA256"], cwd=root)
    wait_listening(port, proc=p)
    return key


@timeout(90)
def test_rsa_key_exchange_with_the_server_key(env):
    """openssl s_server with TLS 1.2 RSA key exchange (AES128-GCM-SHA256, extended master
    secret as OpenSSL negotiates it) serving a file; s_client fetches it twice, the second
    time resuming with the ticket of the first. tlsmirror decrypt, given only the server's
    private key, decrypts both connections: each stream carries the file byte for byte,
    tshark finds no anomaly, and tshark's own RSA decryption of the ciphertext finds the
    same requests. Another key opens nothing (rsa_failures, nokey_conns)."""
    root = env.path("www")
    os.mkdir(root)
    body = gen_bytes(300000, 3401)
    with open(os.path.join(root, "f"), "wb") as f:
        f.write(body)
    port = free_port()
    cipher, clear = env.path("cipher.pcapng"), env.path("clear.pcap")
    stop = dumpcap(env, "lo", port, cipher)
    key = rsa_server(env, port, root)
    sess = env.path("sess.pem")
    outs = []
    for i, resume in enumerate((["-sess_out", sess], ["-sess_in", sess])):
        p = env.spawn(f"s_client{i}", [need_tool("openssl"), "s_client", "-connect",
                                       f"127.0.0.1:{port}", "-quiet", "-tls1_2"] + resume,
                      stdin=subprocess.PIPE)
        p.popen.stdin.write(b"GET /f HTTP/1.0\r\n\r\n")
        p.popen.stdin.close()
        check(p.wait(30) == 0, f"s_client {i} failed: {short(p.err())}")
        outs.append(p.out())
    stop()
    st, text = decrypt(env, ["-r", cipher, "--rsa-key", key, "-w", clear])
    check(st.get("decrypted_conns") == "2" and st.get("rsa_masters") == "2" and
          st.get("auth_failures") == "0" and st.get("gap_bytes") == "0",
          f"expected both connections decrypted with the server key: {st}")
    cap = judge(clear)
    streams = sorted(cap.syn_streams(), key=lambda s: s.idx)
    check(len(streams) == 2, f"{len(streams)} streams in the clear capture, expected 2")
    for st_, out in zip(streams, outs):
        s2c = st_.bytes(1)
        check(s2c.endswith(body) and out.endswith(body),
              f"{st_.name()}: the response does not end with the file's {len(body)} bytes")
        check(st_.bytes(0) == b"GET /f HTTP/1.0\r\n\r\n", f"{st_.name()}: request {st_.bytes(0)[:60]!r}")
        check(st_.server[1] == port, f"{st_.name()}: server port {st_.server}, expected {port}")
    r = subprocess.run([need_tool("tshark"), "-r", cipher, "-d", f"tcp.port=={port},tls", "-o",
                        f'uat:rsa_keys:"{key}",""', "-Y", "http.request", "-T", "fields", "-e",
                        "http.request.uri"], capture_output=True, timeout=120)
    check(r.stdout.split() == [b"/f", b"/f"], f"tshark with the key found {r.stdout!r}")
    other = env.path("other.key")
    subprocess.run([need_tool("openssl"), "genrsa", "-out", other, "2048"], capture_output=True,
                   timeout=60)
    st, _ = decrypt(env, ["-r", cipher, "--rsa-key", other, "--key-wait", "0", "-w",
                          env.path("none.pcap")], name="decrypt-other")
    check(st.get("decrypted_conns") == "0" and st.get("rsa_failures") == "1" and
          st.get("nokey_conns") == "2", f"another server's key must open nothing: {st}")


@timeout(90)
def test_keys_in_a_pcapng_decryption_secrets_block(env):
    """curl writes its key log (SSLKEYLOGFILE) while dumpcap records the ciphertext;
    editcap --inject-secrets puts the log into the pcapng file itself. tlsmirror decrypt
    reads that file alone (no --keys) and writes exactly the bytes the server logged."""
    body = gen_bytes(200000, 3402)
    with open(env.path("body.bin"), "wb") as f:
        f.write(body)
    srv = RecServer(env, body=env.path("body.bin"))
    cipher, withkeys, clear = (env.path("cipher.pcapng"), env.path("withkeys.pcapng"),
                               env.path("clear.pcap"))
    stop = dumpcap(env, "lo", srv.port, cipher)
    keys = env.path("curl.keys")
    c = certs()
    for v in ("--tlsv1.2", "--tlsv1.3"):
        p = env.spawn("curl" + v, [need_tool("curl"), "-sS", v, "--cacert", c["cert"],
                                   f"https://localhost:{srv.port}/body", "-o", "/dev/null"],
                      env=dict(os.environ, SSLKEYLOGFILE=keys))
        check(p.wait(30) == 0, f"curl {v}: {short(p.err())}")
    conns = srv.conns(2)
    stop()
    r = subprocess.run([need_tool("editcap"), "--inject-secrets", f"tls,{keys}", cipher, withkeys],
                       capture_output=True, timeout=60)
    check(r.returncode == 0, f"editcap --inject-secrets: {short(r.stderr)}")
    st, text = decrypt(env, ["-r", withkeys, "-w", clear])
    check(int(st.get("dsb_keys", 0)) >= 6 and st.get("decrypted_conns") == "2",
          f"the file's own secrets must decrypt both connections: {st}")
    check_against_server(judge(clear), conns)
    st, _ = decrypt(env, ["-r", cipher, "--key-wait", "0", "-w", env.path("none.pcap")],
                    name="decrypt-nokeys")
    check(st.get("dsb_keys") == "0" and st.get("nokey_conns") == "2",
          f"without the block, nothing decrypts: {st}")


@timeout(120)
def test_live_interface_keys_from_an_agent_over_the_tunnel(env):
    """Namespace app: curl under the capture library with an agent that sends only the
    keys (--send-keys-only) to the sensor's address over mutual TLS. The root namespace:
    the server (not under capture) and tlsmirror decrypt capturing the veth live (-i, a
    capture filter) and accepting the agent (-C). The ciphertext crossing the veth is
    decrypted with the agent's keys: the clear capture has exactly the server's bytes,
    and the agent sent no connection events."""
    d = env.path("pki")
    for s in (["init", d], ["issue", d, "web1", "--agent"],
              ["issue", d, "sensor", "--collector", "--host", SENSOR_IP]):
        rc, _, err = env.run("pki", [TLSMIRROR, "pki"] + s, timeout_s=30)
        check(rc == 0, f"tlsmirror pki {' '.join(s)}: {short(err)}")
    body = gen_bytes(500000, 3403)
    with open(env.path("body.bin"), "wb") as f:
        f.write(body)
    with Netns(env) as nets:
        app = nets.ns("app")
        va, vb = nets.veth(app, None, mtu=1500)
        nets.sh(app, "ip", "addr", "add", f"{APP_IP}/30", "dev", va)
        nets.sh(None, "ip", "addr", "add", f"{SENSOR_IP}/30", "dev", vb)
        srv = RecServer(env, addr=SENSOR_IP, body=env.path("body.bin"))
        clear, sock = env.path("clear.pcap"), env.path("decrypt.sock")
        dec = env.spawn("decrypt", [TLSMIRROR, "decrypt", "--socket", sock, "-i", vb, "--filter",
                                    f"tcp port {srv.port}", "-C", "-l", f"{SENSOR_IP}:7443",
                                    "-w", clear] + tls_args(d, "sensor"))
        wait_listening(7443, addr=SENSOR_IP, proc=dec)
        with nets.inside(app):
            ag = Agent(env, name="web1", args=["-t", f"{SENSOR_IP}:7443", "--send-keys-only"]
                       + tls_args(d, "web1"), out="--http-log", pcap="/dev/null").start()
            wait_until(lambda: (stat_line(ag.stats()[2], "tunnel ") or {}).get("state") ==
                       "connected", 15, "the agent's tunnel to the sensor")
            c = certs()
            p = env.captured("curl", ag.sock, [need_tool("curl"), "-sS", "-k", "--http1.1",
                                               f"https://{SENSOR_IP}:{srv.port}/body", "-o",
                                               env.path("got.bin")])
            check(p.wait(60) == 0, f"curl failed: {short(p.err())}")
        conns = srv.conns(1)
        with open(env.path("got.bin"), "rb") as f:
            check(f.read() == body, "curl did not get the body")

        def decrypted():
            r = subprocess.run([TLSMIRROR, "stats", "--socket", sock], capture_output=True,
                               timeout=10)
            s = stat_line(r.stdout.decode("utf-8", "replace"), "source decrypt") or {}
            return s.get("decrypted_conns") == "1" and s.get("waiting_conns") == "0"
        wait_until(decrypted, 20, "decrypt to decrypt the connection with the agent's keys")
        ag.final_stats()
        tun = stat_line(ag.stderr_text, "tunnel ")
        check(int(stat_line(ag.stderr_text, "total ").get("keys_sent", 0)) >= 4,
              f"the agent sent no keys: {short(ag.stderr_text, 600)}")
        check(tun and int(tun.get("sent_events", 0)) == int(
            stat_line(ag.stderr_text, "total ").get("keys_sent", 0)),
            f"with --send-keys-only the tunnel carries keys only: {tun}")
        dec.signal(signal.SIGTERM)
        check(dec.wait(20) == 0, f"decrypt exited badly: {short(dec.err(), 800)}")
        text = dec.err().decode("utf-8", "replace")
        st = stat_line(text, "source decrypt")
        check(int(st["tunnel_keys"]) >= 4 and st["nokey_conns"] == "0" and st["gap_bytes"] == "0",
              f"decrypt's counters: {st}")
        check_against_server(judge(clear), conns)


@timeout(60)
def test_tls13_early_data(env):
    """openssl s_server -early_data; s_client connects once for a ticket, then resumes
    with 0-RTT data (-early_data) that the server accepts. Both connections decrypt with
    the clients' key log; the 0-RTT bytes (encrypted with the early traffic secret, before
    the ServerHello) come out first on the second one, then its later data."""
    port = free_port()
    cipher, clear, keys = env.path("cipher.pcapng"), env.path("clear.pcap"), env.path("k.log")
    stop = dumpcap(env, "lo", port, cipher)
    c = certs()
    srv = env.spawn("s_server", [need_tool("openssl"), "s_server", "-accept", str(port), "-cert",
                                 c["cert"], "-key", c["key"], "-early_data", "-ign_eof"],
                    stdin=subprocess.PIPE)
    wait_listening(port, proc=srv)
    sess, early = env.path("sess.pem"), env.path("early.txt")
    with open(early, "wb") as f:
        f.write(b"EARLY DATA 0-RTT\n")
    outs = []
    for i, extra in enumerate((["-sess_out", sess], ["-sess_in", sess, "-early_data", early])):
        p = env.spawn(f"s_client{i}", [need_tool("openssl"), "s_client", "-connect",
                                       f"127.0.0.1:{port}", "-keylogfile", keys] + extra,
                      stdin=subprocess.PIPE)
        p.popen.stdin.write(b"after handshake %d\n" % i)
        p.popen.stdin.flush()
        time.sleep(1)
        p.popen.stdin.close()
        p.wait(15)
        outs.append(p.out())
    check(b"Early data was accepted" in outs[1], f"the server refused 0-RTT: {short(outs[1], 600)}")
    srv.popen.stdin.close()
    stop()
    st, _ = decrypt(env, ["-r", cipher, "--keys", keys, "-w", clear])
    check(st.get("decrypted_conns") == "2" and st.get("early_data") == "1" and
          st.get("auth_failures") == "0", f"0-RTT: {st}")
    cap = judge(clear)
    streams = sorted(cap.syn_streams(), key=lambda x: x.idx)
    check(len(streams) == 2, f"{len(streams)} streams")
    check(streams[0].bytes(0) == b"after handshake 0\n", f"first: {streams[0].bytes(0)!r}")
    check(streams[1].bytes(0) == b"EARLY DATA 0-RTT\nafter handshake 1\n",
          f"the resumed connection's client bytes: {streams[1].bytes(0)!r}")


@timeout(60)
def test_bad_input_is_refused_clearly(env):
    """A file that is not a capture, a missing one, a key file that is a directory, an RSA
    key that is not one, decrypt options given to the agent: exit 1 or 2 with a message
    naming the thing, never a crash."""
    junk = env.path("junk.pcap")
    with open(junk, "wb") as f:
        f.write(b"\xd4\xc3\xb2\xa1" + b"\x02\x00\x04\x00" + b"\x00" * 16 + b"\xff" * 100)
    notcap = env.path("notcap.txt")
    with open(notcap, "w") as f:
        f.write("hello\n")
    cases = [
        (["decrypt", "-r", notcap, "-w", "/dev/null"], 1, notcap),
        (["decrypt", "-r", env.path("missing.pcap"), "-w", "/dev/null"], 1, "missing.pcap"),
        (["decrypt", "-r", junk, "--keys", env.path(""), "-w", "/dev/null"], 1, "--keys"),
        (["decrypt", "-r", junk, "--rsa-key", notcap, "-w", "/dev/null"], 1, "--rsa-key"),
        (["decrypt", "-w", "/dev/null"], 2, "nothing to read"),
        (["-r", junk, "-w", "/dev/null"], 2, "options of tlsmirror decrypt"),
        (["decrypt", "-r", junk, "--key-wait", "soon", "-w", "/dev/null"], 2, "--key-wait"),
    ]
    for argv, want, says in cases:
        rc, _, err = env.run("bad", [TLSMIRROR] + argv, timeout_s=30)
        check(rc == want and says.encode() in err,
              f"tlsmirror {' '.join(argv)}: exit {rc} (want {want}), stderr {short(err)}")
    # a damaged record: the frames before it are read, the rest skipped with a warning
    rc, _, err = env.run("damaged", [TLSMIRROR, "decrypt", "-r", junk, "-w", "/dev/null"],
                         timeout_s=30)
    check(rc == 0 and b"skipped" in err, f"a damaged file: exit {rc}, {short(err)}")
