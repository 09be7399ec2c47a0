#!/usr/bin/env bash
# `make run`: a two-minute tour — mirror a local HTTPS server and curl, then read the capture.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
BUILD=${BUILD:-build}
TM=$ROOT/$BUILD/tlsmirror

if [ -t 1 ]; then B=$'\033[1m' N=$'\033[0m'; else B='' N=''; fi
say() { printf '\n%s==> %s%s\n' "$B" "$*" "$N"; }
die() { printf 'demo: %s\n' "$*" >&2; exit 1; }

[ -x "$TM" ] && [ -f "$ROOT/$BUILD/libtlsmirror.so" ] || die "build first: make BUILD=$BUILD all"
for c in nginx curl openssl tshark; do
	command -v "$c" >/dev/null || die "missing $c (run 'make deps')"
done

T=$(mktemp -d /tmp/tlsmirror-demo.XXXXXX)
chmod 755 "$T"
SOCK=$T/agent.sock
PCAP=$T/demo.pcap
PCAPNG=$T/demo.pcapng
COLNG=$T/collector.pcapng
HTTPLOG=$T/http.jsonl
KEYLOG=$T/keys.log
CIPHER=$T/wire.pcapng
AGENT='' NGINX='' COLLECTOR='' DUMPCAP=''
cleanup() {
	[ -z "$NGINX" ] || { kill -QUIT "$NGINX" 2>/dev/null || true; wait "$NGINX" 2>/dev/null || true; }
	[ -z "$DUMPCAP" ] || { kill -TERM "$DUMPCAP" 2>/dev/null || true; wait "$DUMPCAP" 2>/dev/null || true; }
	[ -z "$AGENT" ] || { kill -TERM "$AGENT" 2>/dev/null || true; wait "$AGENT" 2>/dev/null || true; }
	[ -z "$COLLECTOR" ] || { kill -TERM "$COLLECTOR" 2>/dev/null || true; wait "$COLLECTOR" 2>/dev/null || true; }
	if [ -n "${DEMO_KEEP:-}" ]; then echo "demo: kept $T"; else rm -rf "$T"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

wait_for() { # wait_for SECONDS CMD...
	local n=$(($1 * 10)); shift
	while ! "$@" >/dev/null 2>&1; do
		n=$((n - 1)); [ $n -gt 0 ] || return 1; sleep 0.1
	done
}

PORT=''
for p in $(seq 28443 28543); do
	ss -Hltn "sport = :$p" | grep -q . || { PORT=$p; break; }
done
[ -n "$PORT" ] || die "no free TCP port in 28443..28543"
CPORT=''
for p in $(seq 28544 28644); do
	ss -Hltn "sport = :$p" | grep -q . || { CPORT=$p; break; }
done
[ -n "$CPORT" ] || die "no free TCP port in 28544..28644"

say "Starting a collector on 127.0.0.1:$CPORT (certificates from tlsmirror pki): it writes $COLNG"
"$TM" pki init "$T/pki" >/dev/null && "$TM" pki issue "$T/pki" web-1 --agent >/dev/null &&
	"$TM" pki issue "$T/pki" sensor --collector --host 127.0.0.1 >/dev/null || die "tlsmirror pki failed"
"$TM" --socket "$T/collector.sock" -C -l "127.0.0.1:$CPORT" --ca "$T/pki/ca.pem" \
	--cert "$T/pki/sensor.pem" --key "$T/pki/sensor.key" -w "$COLNG" 2>"$T/collector.log" &
COLLECTOR=$!
wait_for 5 test -S "$T/collector.sock" || { cat "$T/collector.log" >&2; die "the collector did not start"; }
echo "    $TM -C -l 127.0.0.1:$CPORT --ca ca.pem --cert sensor.pem --key sensor.key -w $COLNG"

say "Starting the agent: it listens on $SOCK, writes $PCAP (pcap), $PCAPNG (pcapng), $HTTPLOG (HTTP records) and $KEYLOG (the TLS secrets), and sends the connections to the collector (-t)"
"$TM" --socket "$SOCK" -w "$PCAP" --pcapng "$PCAPNG" --http-log "$HTTPLOG" --keylog "$KEYLOG" -t "127.0.0.1:$CPORT" \
	--ca "$T/pki/ca.pem" --cert "$T/pki/web-1.pem" --key "$T/pki/web-1.key" 2>"$T/agent.log" &
AGENT=$!
wait_for 5 test -S "$SOCK" || { cat "$T/agent.log" >&2; die "the agent did not start"; }
echo "    $TM --socket $SOCK -w $PCAP --pcapng $PCAPNG --http-log $HTTPLOG --keylog $KEYLOG -t 127.0.0.1:$CPORT --ca ca.pem --cert web-1.pem --key web-1.key"

say "Starting nginx on https://127.0.0.1:$PORT under the capture library (self-signed certificate)"
mkdir -p "$T/www" "$T/logs"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 \
	-subj /CN=localhost -keyout "$T/key.pem" -out "$T/cert.pem" 2>/dev/null
cat >"$T/www/index.html" <<'EOF'
<!doctype html>
<title>tlsmirror demo</title>
<p>Hello from behind TLS. The mirror shows this page in clear text.</p>
EOF
cat >"$T/nginx.conf" <<EOF
worker_processes 1;
user root;
pid $T/nginx.pid;
error_log $T/logs/error.log warn;
events { worker_connections 64; }
http {
    access_log off;
    server {
        listen 127.0.0.1:$PORT ssl;
        ssl_certificate $T/cert.pem;
        ssl_certificate_key $T/key.pem;
        root $T/www;
        location = /api/echo {
            default_type application/json;
            return 200 '{"status":"received"}\n';
        }
    }
}
EOF
"$TM" run --socket "$SOCK" -- nginx -p "$T" -e "$T/logs/error.log" -c "$T/nginx.conf" \
	-g 'daemon off;' 2>>"$T/logs/error.log" &
NGINX=$!
listening() { ss -Hltn "sport = :$PORT" | grep -q .; }
wait_for 5 listening || die "nginx did not start: $(cat "$T/logs/error.log")"
echo "    $TM run -- nginx -c $T/nginx.conf"

say "dumpcap records what the wire carries meanwhile (ciphertext): $CIPHER"
dumpcap -q -i lo -f "tcp port $PORT" -w "$CIPHER" 2>"$T/dumpcap.log" &
DUMPCAP=$!
sleep 1.5

say "curl, also under the capture library: a GET and a POST"
echo "    \$ tlsmirror run -- curl -k https://127.0.0.1:$PORT/"
"$TM" run --socket "$SOCK" -- curl -sk --http1.1 "https://127.0.0.1:$PORT/" | sed 's/^/    /'
echo "    \$ tlsmirror run -- curl -k -d 'name=newcomer&message=hello' https://127.0.0.1:$PORT/api/echo"
"$TM" run --socket "$SOCK" -- curl -sk --http1.1 -d 'name=newcomer&message=hello' \
	"https://127.0.0.1:$PORT/api/echo" | sed 's/^/    /'
echo "    Both ends of these connections are mirrored: the agent writes each one once."

sleep 0.3
kill -TERM "$DUMPCAP" 2>/dev/null || true
wait "$DUMPCAP" 2>/dev/null || true
DUMPCAP=''

say "What tlsmirror scan says about nginx: its TLS stack and whether it is mirrored"
echo "    \$ tlsmirror scan $NGINX $(cat /proc/$NGINX/task/$NGINX/children 2>/dev/null)"
"$TM" scan --socket "$SOCK" "$NGINX" $(cat /proc/$NGINX/task/$NGINX/children 2>/dev/null) | sed 's/^/    /'
echo "    (tlsmirror scan without a PID lists every process; tlsmirror attach PID reaches one already running)"

say "Stopping nginx and the agent (the agent drains its rings and closes the file)"
kill -QUIT "$NGINX" 2>/dev/null || true
wait "$NGINX" 2>/dev/null || true
NGINX=''
kill -TERM "$AGENT"
wait "$AGENT" || die "the agent exited with an error: $(tail -n 5 "$T/agent.log")"
AGENT=''
echo "    $(stat -c %s "$PCAP") bytes in $PCAP"

say "What a sensor on the mirror sees: HTTP in clear text (tshark -r demo.pcap -Y http)"
tshark -r "$PCAP" -Y http 2>/dev/null | sed 's/^/    /'

say "The first connection, reassembled (tshark -q -z follow,tcp,ascii,0)"
tshark -r "$PCAP" -q -z follow,tcp,ascii,0 2>/dev/null | sed 's/^/    /'

say "Who saw each connection: the pcapng comment on its first packet (tshark -r demo.pcapng -Y frame.comment)"
tshark -r "$PCAPNG" -Y frame.comment -T fields -e frame.number -e tcp.stream -e frame.comment 2>/dev/null |
	sed 's/^/    /'

say "The same exchanges as JSON records, one line each, for API-security and WAF tools (--http-log; docs/http.md)"
python3 - "$HTTPLOG" <<'PY' | sed 's/^/    /'
import json, sys
recs = [json.loads(l) for l in open(sys.argv[1])]
for r in recs:
    rs = r["response"] or {}
    print(f'{r["method"]:5} {r["path"]:10} -> {rs.get("status")}  {rs.get("body_bytes")} body bytes  '
          f'process={r["conn"].get("process")} pid={r["conn"].get("pid")} side={r["conn"]["side"]} '
          f'tls={r["conn"].get("tls_version")} end={r["end"]}')
post = [r for r in recs if r["method"] == "POST"][:1]
if post:
    r = post[0]
    print("the POST, some of its fields:")
    print(json.dumps({k: r[k] for k in ("time_request_ns", "client", "server", "method", "path")}))
    print(json.dumps({"request": {k: r["request"][k] for k in ("headers", "body", "body_bytes")},
                      "response": {k: r["response"][k] for k in ("status", "body")}}))
PY

say "The records as a HAR 1.2 document, for HAR viewers and importers (tlsmirror har http.jsonl)"
"$TM" har "$HTTPLOG" | python3 -c 'import json, sys
for e in json.load(sys.stdin)["log"]["entries"]:
    print(e["startedDateTime"], e["request"]["method"], e["request"]["url"], "->", e["response"]["status"],
          e["response"]["content"]["mimeType"])' | sed 's/^/    /'

say "Passive decryption's input: the secrets the library saw ($KEYLOG, mode $(stat -c %a "$KEYLOG"), an NSS key log)"
cut -c1-100 "$KEYLOG" | sed 's/$/.../; s/^/    /' | head -n 5
echo "    $(wc -l <"$KEYLOG") lines; keys decrypt the traffic: off unless --keylog is given"
echo "    The ciphertext dumpcap saw, decrypted by tshark with that file (tshark -o tls.keylog_file:keys.log):"
tshark -r "$CIPHER" -o "tls.keylog_file:$KEYLOG" -Y http.request 2>/dev/null | sed 's/^/    /'
echo "    Without the key log: $(tshark -r "$CIPHER" -Y http.request 2>/dev/null | wc -l) HTTP requests readable"

say "Passive decryption by tlsmirror itself: ciphertext and key log in, clear-text TCP out (docs/decrypt.md)"
DECRYPTED="$T/decrypted.pcapng"
echo "    \$ tlsmirror decrypt -r cipher.pcapng --keys keys.log --pcapng decrypted.pcapng --http-log decrypted.jsonl"
"$TM" decrypt -q -r "$CIPHER" --keys "$KEYLOG" --pcapng "$DECRYPTED" --http-log "$T/decrypted.jsonl" \
	2>"$T/decrypt.log" || die "tlsmirror decrypt failed: $(cat "$T/decrypt.log")"
grep '^source decrypt' "$T/decrypt.log" | tr ' ' '\n' |
	grep -E '^(tls_conns|decrypted_conns|nokey_conns|clear_bytes|gap_bytes|auth_failures)=' |
	tr '\n' ' ' | sed 's/^/    /; s/$/\n/'
echo "    What a sensor reads from it (the real ports, the capture's timestamps; tshark -Y http):"
tshark -r "$DECRYPTED" -Y http 2>/dev/null | sed 's/^/    /'
echo "    Who saw it (pcapng comment): $(tshark -r "$DECRYPTED" -Y frame.comment -T fields -e frame.comment \
	2>/dev/null | head -n 1)"
echo "    and $(wc -l <"$T/decrypted.jsonl") HTTP records from the decrypted connections"

say "A capture that starts after the handshakes: the key log's # TUPLE lines place those connections"
grep '^# TUPLE' "$KEYLOG" | cut -c1-110 | sed 's/$/.../; s/^/    /'
python3 - "$CIPHER" "$KEYLOG" "$T/late.pcap" <<'PY'
# every packet of each connection before its first HTTP request goes (tshark finds it)
import subprocess, sys
sys.path.insert(0, "tests/integration/helpers")
import pcapedit
cipher, keys, out = sys.argv[1:4]
rows = subprocess.run(["tshark", "-r", cipher, "-o", f"tls.keylog_file:{keys}", "-Y", "http.request",
                       "-T", "fields", "-e", "frame.number", "-e", "tcp.srcport"],
                      capture_output=True, text=True).stdout.split()
first = {}
for n, port in zip(rows[::2], rows[1::2]):
    first.setdefault(int(port), int(n))
cap = pcapedit.read(cipher)
keep = [p for i, p in enumerate(cap.packets, 1) if p.tcp and
        i >= first.get(p.tcp.sport, first.get(p.tcp.dport, 0))]
cap.write(out, keep)
PY
echo "    \$ tlsmirror decrypt -r late.pcap --keys keys.log --http-log late.jsonl   (no SYN, no handshake in late.pcap)"
"$TM" decrypt -q -r "$T/late.pcap" --keys "$KEYLOG" -w /dev/null --http-log "$T/late.jsonl" \
	2>"$T/late.log" || die "tlsmirror decrypt failed: $(cat "$T/late.log")"
grep '^source decrypt' "$T/late.log" | tr ' ' '\n' |
	grep -E '^(tcp_conns|placed_conns|decrypted_conns|clear_bytes|auth_failures)=' |
	tr '\n' ' ' | sed 's/^/    /; s/$/\n/'
python3 -c 'import json, sys
for l in open(sys.argv[1]):
    r = json.loads(l)
    print("   ", r["method"], r["path"], "->", (r["response"] or {}).get("status"), " start=midstream" if r["conn"].get("midstream") else "")' "$T/late.jsonl"

say "At the collector: the same connections, synthesized from the agent's connection events, on the agent's own interface (tshark -r collector.pcapng)"
kill -TERM "$COLLECTOR"
wait "$COLLECTOR" || die "the collector exited with an error: $(tail -n 5 "$T/collector.log")"
COLLECTOR=''
tshark -r "$COLNG" -Y frame.comment -T fields -e frame.interface_name -e tcp.stream -e frame.comment \
	2>/dev/null | sed 's/^/    /'
echo "    $(tshark -r "$COLNG" -Y http.request 2>/dev/null | wc -l) HTTP requests there, as in the agent's own capture"

say "The agent's statistics (printed when it exits)"
grep -E '^(pid=|total )' "$T/agent.log" | sed 's/^/    /' || tail -n 5 "$T/agent.log" | sed 's/^/    /'

say "Done. Try it yourself:"
cat <<EOF
    $BUILD/tlsmirror --socket /tmp/tm.sock -w mirror.pcap &
    $BUILD/tlsmirror run --socket /tmp/tm.sock -- YOUR-PROGRAM ARGS...
    tshark -r mirror.pcap -Y http      (or open mirror.pcap in Wireshark)
EOF
