# Integration test 32: --keylog: the TLS secrets of nginx and curl under capture as an NSS key log; tshark, given only the ciphertext dumpcap saw on the wire and that file, decrypts the same requests; an application's own key-log callback (curl's SSLKEYLOGFILE) keeps getting every line; the # TUPLE lines let tlsmirror decrypt open connections whose capture starts mid-stream.
import os
import re
import signal
import stat
import sys
import time

from test_13_h2 import run_nginx
from tmlib import (HELPERS, TLSMIRROR, Agent, certs, check, free_port, gen_bytes, judge,
                   need_build, need_tool, nginx_conf, short, timeout, tshark_fields)

sys.path.insert(0, HELPERS)
import pcapedit  # noqa: E402

CONF = nginx_conf(1, """    server {{
        listen 127.0.0.1:{port} ssl;
        ssl_certificate {cert};
        ssl_certificate_key {key};
        ssl_protocols TLSv1.2 TLSv1.3;
        root {prefix}/html;
    }}
""")

LABELS13 = {"CLIENT_HANDSHAKE_TRAFFIC_SECRET", "SERVER_HANDSHAKE_TRAFFIC_SECRET",
            "CLIENT_TRAFFIC_SECRET_0", "SERVER_TRAFFIC_SECRET_0", "EXPORTER_SECRET"}


def keylines(path):
    with open(path) as f:
        return [l.split() for l in f.read().splitlines() if l and not l.startswith("#")]


def dumpcap_start(env, port, path, buffer_mb=None):
    cap = env.spawn("dumpcap", [need_tool("dumpcap"), "-q", "-i", "lo", "-f", f"tcp port {port}",
                                "-w", path] + (["-B", str(buffer_mb)] if buffer_mb else []))
    time.sleep(1.5)  # until it captures
    check(cap.alive(), f"dumpcap: {short(cap.err())}")
    return cap


def dumpcap_stop(cap):
    time.sleep(0.5)
    cap.signal(signal.SIGTERM)
    cap.wait(10)


def nginx_with(env, agent, body):
    """nginx under capture serving /f (body) on a free port; (nginx, port)."""
    prefix = env.path("nginx")
    for d in ("html", "logs", "tmp"):
        os.makedirs(os.path.join(prefix, d))
    with open(os.path.join(prefix, "html", "f"), "wb") as f:
        f.write(body)
    port = free_port()
    c = certs()
    return run_nginx(env, agent, prefix, CONF.format(prefix=prefix, port=port, cert=c["cert"],
                                                     key=c["key"])), port


def decrypted_uris(cipher, keys):
    rows = tshark_fields(cipher, ["http.request.uri"], display_filter="http.request",
                         extra=["-o", f"tls.keylog_file:{keys}"] if keys else [])
    return sorted(r[0] for r in rows)


@timeout(180)
def test_keylog_decrypts_what_the_wire_saw(env):
    keys = env.path("keys.log")
    # an existing file others could read is made 0600
    with open(keys, "w") as f:
        f.write("# keys\n")
    os.chmod(keys, 0o644)
    agent = Agent(env, args=["--keylog", keys]).start()
    ngx, port = nginx_with(env, agent, gen_bytes(3000, 3201))
    c = certs()
    cipher = env.path("cipher.pcapng")
    cap = dumpcap_start(env, port, cipher)
    curl = need_tool("curl")
    base = ["-sS", "-o", "/dev/null", "--cacert", c["cert"], "--resolve", f"localhost:{port}:127.0.0.1"]
    url = f"https://localhost:{port}/f"
    for args in (["--tlsv1.3"], ["--tlsv1.2", "--tls-max", "1.2"]):
        rc, out, err = env.run("curl", [curl] + base + args + [url + "?v=" + args[0][-3:]], timeout_s=30)
        check(rc == 0, f"curl {args}: {short(err)}")
    # curl under capture, with its own key log (SSLKEYLOGFILE): both files get its keys
    applog = env.path("curl-keys.log")
    cc = env.captured("curl-cap", agent.sock, [curl] + base + ["--tlsv1.3", url + "?v=app"],
                      extra_env={"SSLKEYLOGFILE": applog})
    check(cc.wait(30) == 0, f"curl under capture: {short(cc.err())}")
    check(not cc.err(), f"curl under capture wrote to its stderr: {short(cc.err())}")
    dumpcap_stop(cap)
    time.sleep(0.3)
    ngx.signal(signal.SIGQUIT)
    ngx.wait(20)
    procs, total = agent.final_stats()

    mode = stat.S_IMODE(os.stat(keys).st_mode)
    check(mode == 0o600, f"--keylog file mode {oct(mode)}")
    lines = keylines(keys)
    labels = {l[0] for l in lines}
    check(LABELS13 <= labels and "CLIENT_RANDOM" in labels,
          f"key log labels: {sorted(labels)}")
    check(all(len(l) == 3 and len(l[1]) == 64 and len(l[2]) in (64, 96) and
              all(ch in "0123456789abcdef" for ch in l[1] + l[2]) for l in lines),
          f"key log lines malformed: {lines[:3]}")
    check(f" keys={len(lines)} " in agent.stderr_text and " keys_lost=0 " in agent.stderr_text,
          f"agent key counters: {short(agent.stderr_text, 1200)}")
    # the judge: the ciphertext alone is opaque, with the key log it decrypts
    check(decrypted_uris(cipher, None) == [], "tshark decrypted the capture without keys")
    want = sorted(["/f?v=1.3", "/f?v=1.2", "/f?v=app"])
    got = decrypted_uris(cipher, keys)
    check(got == want, f"tshark with --keylog's file decrypted {got}, want {want}")
    # the application's own callback still ran: its lines are ours too
    app = {tuple(l) for l in keylines(applog)}
    check(app and app <= {tuple(l) for l in lines},
          f"curl's SSLKEYLOGFILE: {len(app)} lines, not all in --keylog's file")


@timeout(60)
def test_no_keylog_no_keys(env):
    """Without --keylog the libraries send no key (nothing asked, nothing rejected)."""
    agent = Agent(env).start()
    ngx, port = nginx_with(env, agent, b"x" * 100)
    c = certs()
    rc, out, err = env.run("curl", [need_tool("curl"), "-sS", "-o", "/dev/null", "--cacert",
                                    c["cert"], "--resolve", f"localhost:{port}:127.0.0.1",
                                    f"https://localhost:{port}/f"], timeout_s=30)
    check(rc == 0, f"curl: {short(err)}")
    time.sleep(0.3)
    ngx.signal(signal.SIGQUIT)
    ngx.wait(20)
    procs, total = agent.final_stats()
    st = agent.stderr_text
    check(" bad_records=0 " in st and " keys=" not in st and " conns=1 " in st,
          f"agent without --keylog: {short(st, 1200)}")


def tuple_lines(path):
    with open(path) as f:
        return [l.split()[2:] for l in f.read().splitlines() if l.startswith("# TUPLE ")]


@timeout(180)
def test_tuples_place_connections_seen_midstream(env):
    """nginx under capture with --keylog serves 2 MiB over TLS 1.3 and TLS 1.2 to curl;
    the capture is cut so that each connection starts in the middle of its response
    (no SYN, no handshake, mid-record). tlsmirror decrypt finds each connection by the
    # TUPLE line, its record boundary and sequence number, and hands on exactly the
    response's tail: byte-exact, both directions, valid TCP that tshark reads."""
    keys = env.path("keys.log")
    agent = Agent(env, args=["--keylog", keys]).start()
    body = gen_bytes(2 << 20, 3202)
    ngx, port = nginx_with(env, agent, body)
    c = certs()
    cipher = env.path("cipher.pcapng")
    cap = dumpcap_start(env, port, cipher, buffer_mb=256)  # no frame lost on lo
    curl = need_tool("curl")
    base = ["-sS", "-o", "/dev/null", "--cacert", c["cert"], "--resolve",
            f"localhost:{port}:127.0.0.1", "--limit-rate", "50M"]
    url = f"https://localhost:{port}/f"
    versions = (["--tlsv1.3"], ["--tlsv1.2", "--tls-max", "1.2"])
    for args in versions:
        rc, out, err = env.run("curl", [curl] + base + args + [url], timeout_s=30)
        check(rc == 0, f"curl {args}: {short(err)}")
    dumpcap_stop(cap)
    ngx.signal(signal.SIGQUIT)
    ngx.wait(20)
    agent.final_stats()

    # the export: one line per handshake, before its keys, naming the real ends
    tl = tuple_lines(keys)
    check(len(tl) == 2, f"# TUPLE lines in --keylog's file: {tl}")
    lines = open(keys).read().splitlines()
    for t in tl:
        check(len(t) == 6 and t[1] == f"127.0.0.1:{port}" and re.fullmatch(r"127\.0\.0\.1:\d+", t[0])
              and re.fullmatch(r"[0-9a-f]{64}", t[2]) and re.fullmatch(r"[0-9a-f]{64}", t[3])
              and t[4] in ("0303", "0304") and re.fullmatch(r"[0-9a-f]{4}", t[5]),
              f"# TUPLE line malformed: {t}")
        at = [i for i, l in enumerate(lines) if t[2] in l]
        check(lines[at[0]].startswith("# TUPLE ") and len(at) > 1,
              f"the # TUPLE line of {t[2][:16]}... is not before its keys: {at}")
    check(sorted(t[4] for t in tl) == ["0303", "0304"], f"TUPLE versions: {tl}")
    check(f" key_tuples=2 " in agent.stderr_text, f"agent counters: {short(agent.stderr_text, 900)}")

    # the capture cut: every packet of a connection before the middle of its response goes
    pc = pcapedit.read(cipher)
    keep, cut_at = [], {}
    conns = {}
    for i, p in enumerate(pc.packets):
        t = p.tcp
        if t is None:
            continue
        cport = t.sport if t.dport == port else t.dport
        conns.setdefault(cport, []).append(i)
    check(len(conns) == 2, f"connections in the capture: {sorted(conns)}")
    for cport, idx in conns.items():
        s2c = [i for i in idx if pc.packets[i].tcp.sport == port and pc.packets[i].tcp.payload_len]
        cut_at[cport] = s2c[len(s2c) // 2]
    for i, p in enumerate(pc.packets):
        t = p.tcp
        if t is None:
            continue
        cport = t.sport if t.dport == port else t.dport
        if i >= cut_at[cport]:
            keep.append(p)
    midcap = env.path("midstream.pcap")
    pc.write(midcap, keep)

    clear = env.path("clear.pcap")
    argv = [need_build(TLSMIRROR), "decrypt", "-r", midcap, "--keys", keys, "-w", clear,
            "--key-wait", "1s"]
    rc, out, err = env.run("decrypt", argv, timeout_s=60)
    err = err.decode("utf-8", "replace") if isinstance(err, bytes) else err
    check(rc == 0, f"tlsmirror decrypt exited {rc}: {short(err, 900)}")
    line = next((l for l in err.splitlines() if l.strip().startswith("source decrypt")), "")
    st = dict(re.findall(r"(\w+)=(\d+)", line))
    check(st.get("tcp_gap_bytes") == "0", f"the capture itself lost frames (dumpcap): {line}")
    check(st.get("placed_conns") == "2" and st.get("decrypted_conns") == "2" and
          st.get("auth_failures") == "0" and st.get("place_failures") == "0" and
          st.get("key_tuples") == "2", f"decrypt counters: {line}")
    out = judge(clear)
    for cport in conns:
        sm = out.one(client_port=cport, server_port=port)
        got = sm.direction(1)["data"]
        check(len(got) > (1 << 20) * 0.8, f"client port {cport}: {len(got)} bytes of the "
              f"response decrypted, want the second half of 2 MiB")
        check(body.endswith(got), f"client port {cport}: the {len(got)} bytes decrypted are not "
              f"the response's tail")
        c2s = sm.direction(0)["data"]
        check(c2s == b"", f"client port {cport}: {len(c2s)} bytes client to server after the cut")
