#!/usr/bin/env bash
# Benchmarks (`make bench`): nginx overhead under the capture library, agent throughput, loss.
#
# a. nginx (1 worker, TLS, 127.0.0.1) serving 1 MiB and 4 KiB files to h2load, without
#    and with the capture library (tlsmirror run), runs interleaved A B A B ..., an agent
#    writing a ring of pcap files (--rotate-count) on /dev/shm throughout. Median req/s and MB/s, ratio B/A.
#    Layouts: "split" (the target figure: nginx and h2load on CPU 0, the agent on CPU 1,
#    i.e. the agent has a core of its own, as on a real server) and "shared" (all three
#    on both CPUs, for information: on 2 cores the agent's work then competes with
#    the application and its load generator, which already saturate both).
# b. ringgen pushes BENCH_RING_BYTES through an agent writing pcap to /dev/shm at MSS
#    1460: clear text Gbit/s per second of agent CPU (utime+stime). Target figure: a
#    ring of 4 files of 256 MiB (--rotate-count 4: pages overwritten in place). For
#    reference: new files with old ones deleted (fresh pages), /dev/null (the agent's
#    own work), user CPU alone, and dd of as many bytes (the kernel's write alone).
# c. `tlsmirror stats` after every run of (a) with the library: dropped bytes.
# Knobs (environment): BUILD (build), BENCH_SECONDS (10 per h2load run), BENCH_WARMUP (2),
# BENCH_PAIRS (3), BENCH_CLIENTS (16), BENCH_PROTO (h1 or h2), BENCH_RING_BYTES (4G),
# BENCH_SIZES ("1m 4k"), BENCH_RING_SIZE (nginx's ring, e.g. 64M),
# BENCH_LAYOUTS ("split shared"), BENCH_A_SINK (shm or null: the agent's output in part a).
# About 5 minutes.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
BUILD=${BUILD:-build}
TM=$ROOT/$BUILD/tlsmirror
LIB=$ROOT/$BUILD/libtlsmirror.so
RINGGEN=$ROOT/$BUILD/ringgen
SECS=${BENCH_SECONDS:-10}
WARMUP=${BENCH_WARMUP:-2}
PAIRS=${BENCH_PAIRS:-3}
CLIENTS=${BENCH_CLIENTS:-16}
PROTO=${BENCH_PROTO:-h1}
RING_BYTES=${BENCH_RING_BYTES:-4G}
RING_SIZE=${BENCH_RING_SIZE:-}   # TLSMIRROR_RING_SIZE for nginx; empty: the library's default
SIZES=${BENCH_SIZES:-1m 4k}
LAYOUTS=${BENCH_LAYOUTS:-split shared}
A_SINK=${BENCH_A_SINK:-shm}  # where the agent writes in part (a): shm (rotated pcap) or null
APP_PIN=()   # taskset prefix for nginx and h2load in the current layout
AGENT_PIN=() # taskset prefix for the agent
HZ=$(getconf CLK_TCK)

say() { printf 'bench: %s\n' "$*"; }
die() { printf 'bench: %s\n' "$*" >&2; exit 1; }

for f in "$TM" "$LIB" "$RINGGEN"; do
	[ -x "$f" ] || [ -f "$f" ] || die "missing $f (run 'make BUILD=$BUILD all $BUILD/ringgen')"
done
for c in nginx h2load openssl curl ss; do
	command -v "$c" >/dev/null || die "missing $c (run 'make deps')"
done

WORK=$(mktemp -d /tmp/tlsmirror-bench.XXXXXX)
SHM=$(mktemp -d /dev/shm/tlsmirror-bench.XXXXXX)
SOCK=$WORK/agent.sock
PIDS=()
cleanup() {
	local p
	for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
	for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
	rm -rf "$WORK" "$SHM"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# cpu_ticks PID: utime+stime of the whole process, in clock ticks.
cpu_ticks() {
	awk '{ sub(/^.*\) /, ""); print $12 + $13 }' "/proc/$1/stat"
}

free_port() {
	local p
	for p in $(seq 18443 18543); do
		ss -Hltn "sport = :$p" | grep -q . || { echo "$p"; return; }
	done
	die "no free TCP port in 18443..18543"
}

wait_for() { # wait_for SECONDS CMD...: retry CMD every 0.1 s
	local n=$(($1 * 10)); shift
	while ! "$@" 2>/dev/null; do
		n=$((n - 1)); [ $n -gt 0 ] || return 1; sleep 0.1
	done
}

# start_agent NAME ARGS...: agent on $SOCK, log in $WORK/agent-NAME.log; sets AGENT.
start_agent() {
	local name=$1; shift
	rm -f "$SOCK"
	"${AGENT_PIN[@]}" "$TM" --socket "$SOCK" "$@" 2>"$WORK/agent-$name.log" &
	AGENT=$!
	PIDS+=("$AGENT")
	wait_for 5 test -S "$SOCK" || { cat "$WORK/agent-$name.log" >&2; die "agent did not start"; }
}

stop_agent() {
	kill -TERM "$AGENT" 2>/dev/null || true
	local rc=0
	wait "$AGENT" || rc=$?
	[ $rc -eq 0 ] || say "agent exited with status $rc (log: $(tail -n 3 "$1" | tr '\n' ' '))"
}

# start_cleaner NAME: keeps only the newest two files of the agent's rotated output $SHM/NAME*.
start_cleaner() {
	( while sleep 0.2; do
		ls -1t "$SHM/$1"* 2>/dev/null | tail -n +3 | xargs -r rm -f
	done ) &
	CLEANER=$!
	PIDS+=("$CLEANER")
}

setup_nginx() {
	PORT=$(free_port)
	mkdir -p "$WORK/ngx/www" "$WORK/ngx/logs"
	openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
		-subj /CN=localhost -keyout "$WORK/ngx/key.pem" -out "$WORK/ngx/cert.pem" 2>/dev/null
	head -c 1048576 /dev/urandom >"$WORK/ngx/www/1m"
	head -c 4096 /dev/urandom >"$WORK/ngx/www/4k"
	local h2=""
	[ "$PROTO" = h2 ] && h2=" http2"
	cat >"$WORK/ngx/nginx.conf" <<-EOF
	worker_processes 1;
	user root;
	pid $WORK/ngx/nginx.pid;
	error_log $WORK/ngx/logs/error.log warn;
	events { worker_connections 1024; }
	http {
	    access_log off;
	    keepalive_requests 10000000;
	    server {
	        listen 127.0.0.1:$PORT ssl$h2;
	        ssl_certificate $WORK/ngx/cert.pem;
	        ssl_certificate_key $WORK/ngx/key.pem;
	        root $WORK/ngx/www;
	    }
	}
	EOF
}

# start_nginx with|without: sets NGINX (master pid).
start_nginx() {
	local ngx=(nginx -p "$WORK/ngx" -e "$WORK/ngx/logs/error.log" -c "$WORK/ngx/nginx.conf"
		-g 'daemon off;')
	if [ "$1" = with ]; then
		"${APP_PIN[@]}" env TLSMIRROR_SOCKET="$SOCK" ${RING_SIZE:+TLSMIRROR_RING_SIZE=$RING_SIZE} "$TM" run --socket "$SOCK" -- "${ngx[@]}" &
	else
		"${APP_PIN[@]}" "${ngx[@]}" &
	fi
	NGINX=$!
	PIDS+=("$NGINX")
	wait_for 5 curl -skf -o /dev/null "https://127.0.0.1:$PORT/4k" ||
		{ cat "$WORK/ngx/logs/error.log" >&2; die "nginx did not start"; }
}

stop_nginx() {
	local master
	master=$(cat "$WORK/ngx/nginx.pid" 2>/dev/null || echo "$NGINX")
	kill -QUIT "$master" "$NGINX" 2>/dev/null || true
	wait "$NGINX" 2>/dev/null || true
}

descendants() { # descendants PID: every process below PID
	local c
	for c in $(pgrep -P "$1"); do echo "$c"; descendants "$c"; done
}

# h2load_run SIZE OUT: prints "req_s mb_s" (MB = 10^6 bytes), failing runs are fatal.
h2load_run() {
	local flag=()
	[ "$PROTO" = h1 ] && flag=(--h1)
	"${APP_PIN[@]}" h2load "${flag[@]}" -c "$CLIENTS" -m 1 -D "$SECS" --warm-up-time "$WARMUP" \
		"https://127.0.0.1:$PORT/$1" >"$2" 2>&1 || die "h2load failed: $(tail -n 3 "$2")"
	awk -v secs="$SECS" '
		/^finished in/ { gsub(/,/, ""); rps = $4 }
		/^requests:/ { total = $2; ok = $8 }
		/^traffic:/ { gsub(/[()]/, "", $3); bytes = $3 }
		END {
			if (!total || ok != total) { print "ERR"; exit }
			printf "%.1f %.1f\n", rps, bytes / secs / 1e6
		}' "$2"
}

# loss_of STATS PIDS...: "dropped mirrored_s2c" for the stats lines of those pids.
loss_of() {
	local f=$1; shift
	awk -v pids=" $* " '
		$1 ~ /^pid=/ {
			split($1, a, "="); if (index(pids, " " a[2] " ") == 0) next
			for (i = 2; i <= NF; i++) {
				split($i, kv, "=")
				if (kv[1] ~ /^drop_/ || kv[1] == "gap_bytes") d += kv[2]
				if (kv[1] == "s2c_bytes") m += kv[2]
			}
		}
		END { printf "%.0f %.0f\n", d, m }' "$f"
}

median() { sort -g | awk '{ v[NR] = $1 } END { if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

sum_ticks() { # sum_ticks PID...: utime+stime of several processes
	local p t=0
	for p in "$@"; do t=$((t + $(cpu_ticks "$p" 2>/dev/null || echo 0))); done
	echo $t
}

# One run of part (a). Appends "LAYOUT SIZE MODE req_s mb_s worker_us_per_req" to $WORK/a.txt.
run_a() {
	local size=$1 mode=$2 i=$3 out="$WORK/h2load-$1-$2-$3.txt" r d m workers t0 t1 w0 w1 us z0 z1
	start_nginx "$mode"
	workers=$(descendants "$NGINX" | tr '\n' ' ')
	t0=$(cpu_ticks "$AGENT")
	z0=$(wakeups "$AGENT")
	w0=$(sum_ticks $workers)
	r=$(h2load_run "$size" "$out")
	w1=$(sum_ticks $workers)
	z1=$(wakeups "$AGENT")
	t1=$(cpu_ticks "$AGENT")
	[ "$r" != ERR ] || die "h2load saw failed requests: $(grep requests: "$out")"
	# nginx CPU per request (warm-up included on both sides of the division)
	us=$(awk -v t=$((w1 - w0)) -v hz="$HZ" -v r="${r%% *}" -v s=$((SECS + WARMUP)) \
		'BEGIN { printf "%.1f", (r > 0 ? t / hz * 1e6 / (r * s) : 0) }')
	if [ "$mode" = with ]; then
		sleep 0.5 # let the agent drain the ring
		"$TM" stats --socket "$SOCK" >"$WORK/stats-$size-$i.txt" 2>&1 || true
		read -r d m < <(loss_of "$WORK/stats-$size-$i.txt" "$NGINX" $workers)
		echo "$LAYOUT $d" >>"$WORK/dropped.txt"
		echo "$LAYOUT $m" >>"$WORK/mirrored.txt"
		say "  $size with    #$i: $r req/s MB/s, nginx $us us/req; mirrored s2c $m B," \
			"dropped $d B, agent CPU $(((t1 - t0) * 100 / HZ / (SECS + WARMUP)))%," \
			"$(((z1 - z0) / (SECS + WARMUP))) wakeups/s"
	else
		say "  $size without #$i: $r req/s MB/s, nginx $us us/req"
	fi
	echo "$LAYOUT $size $mode $r $us" >>"$WORK/a.txt"
	stop_nginx
}

set_layout() { # set_layout split|shared: CPU pinning of the application side and the agent
	LAYOUT=$1
	APP_PIN=()
	AGENT_PIN=()
	if [ "$1" = split ]; then
		[ "$(nproc)" -ge 2 ] || die "layout split needs 2 CPUs"
		APP_PIN=(taskset -c 0)
		AGENT_PIN=(taskset -c 1)
	fi
}

part_a() {
	say "a. nginx + h2load ($PROTO, -c $CLIENTS -m 1, ${SECS}s + ${WARMUP}s warm-up per run, $PAIRS pairs per size)"
	setup_nginx
	: >"$WORK/a.txt"
	: >"$WORK/dropped.txt"
	: >"$WORK/mirrored.txt"
	for layout in $LAYOUTS; do
		set_layout "$layout"
		case $layout in
		split) say " layout split: nginx and h2load on CPU 0, the agent on CPU 1" ;;
		shared) say " layout shared: nginx, h2load and the agent on both CPUs" ;;
		*) die "unknown layout $layout" ;;
		esac
		if [ "$A_SINK" = null ]; then
			start_agent a -w /dev/null
		else
			start_agent a --rotate-size 256M --rotate-count 4 -w "$SHM/a.pcap"
		fi
		for size in $SIZES; do
			for i in $(seq 1 "$PAIRS"); do
				run_a "$size" without "$i"
				run_a "$size" with "$i"
			done
		done
		stop_agent "$WORK/agent-a.log"
		rm -f "$SHM"/a*
	done
	set_layout none
}

# ringgen_through NAME TARGET [ROTATE]: RG_BYTES, RG_SECS, AGENT_CPU (s), USER_CPU (s) of one push.
ringgen_through() {
	local name=$1 target=$2 out="$WORK/ringgen-$1.txt" t0 t1 u0 prev cur
	if [ "${3:-}" = ring ]; then
		start_agent "$name" --mss 1460 --rotate-size 256M --rotate-count 4 -w "$target"
	elif [ "${3:-}" = fresh ]; then
		start_agent "$name" --mss 1460 --rotate-size 256M -w "$target"
		start_cleaner "$name"
	else
		start_agent "$name" --mss 1460 -w "$target"
	fi
	t0=$(cpu_ticks "$AGENT")
	u0=$(awk '{ sub(/^.*\) /, ""); print $12 }' "/proc/$AGENT/stat")
	"$RINGGEN" --socket "$SOCK" --bytes "$RING_BYTES" --conns 16 --chunk 16K >"$out" 2>&1 ||
		die "ringgen failed: $(cat "$out")"
	# wait until the agent has nothing left to do (its CPU time stops moving)
	prev=-1
	cur=$(cpu_ticks "$AGENT")
	while [ "$cur" != "$prev" ]; do prev=$cur; sleep 0.3; cur=$(cpu_ticks "$AGENT"); done
	t1=$cur
	USER_CPU=$(awk -v u0="$u0" -v hz="$HZ" '{ sub(/^.*\) /, ""); printf "%.2f", ($12 - u0) / hz }' \
		"/proc/$AGENT/stat")
	RG_BYTES=$(sed -n 's/^bytes=\([0-9]*\) .*/\1/p' "$out")
	RG_SECS=$(sed -n 's/.*elapsed_s=\([0-9.]*\).*/\1/p' "$out")
	AGENT_CPU=$(awk -v t=$((t1 - t0)) -v hz="$HZ" 'BEGIN { printf "%.2f", t / hz }')
	stop_agent "$WORK/agent-$name.log"
	[ "${3:-}" != fresh ] || kill "$CLEANER" 2>/dev/null || true
	rm -f "$SHM/$name"*
	say "  $(head -n 1 "$out")"
	say "  agent CPU ${AGENT_CPU}s (user ${USER_CPU}s) -> $(gbit "$RG_BYTES" "$AGENT_CPU") Gbit/s per CPU second"
	say "  agent exit: $(grep -E '^total' "$WORK/agent-$name.log" | tail -n 1 | cut -d' ' -f2-9)"
}

gbit() { awk -v b="$1" -v c="$2" 'BEGIN { printf "%.1f", (c > 0 ? b * 8 / 1e9 / c : 0) }'; }

part_b() {
	say "b. agent throughput: ringgen $RING_BYTES, 16 conns, 16 KiB chunks, MSS 1460"
	start_agent idle --mss 1460 -w "$SHM/idle.pcap"
	sleep 0.5
	local i0 i1
	i0=$(cpu_ticks "$AGENT"); sleep 2; i1=$(cpu_ticks "$AGENT")
	IDLE_PCT=$(((i1 - i0) * 100 / HZ / 2))
	stop_agent "$WORK/agent-idle.log"
	say "  idle agent: ${IDLE_PCT}% CPU"
	say "  pcap to /dev/null (the agent's own work):"
	ringgen_through null /dev/null
	NULL_GBPS=$(gbit "$RG_BYTES" "$AGENT_CPU")
	say "  pcap to /dev/shm, a ring of 4 files of 256 MiB (--rotate-count 4, pages reused):"
	ringgen_through b "$SHM/b.pcap" ring
	B_GBPS=$(gbit "$RG_BYTES" "$AGENT_CPU")
	B_USER_GBPS=$(gbit "$RG_BYTES" "$USER_CPU")
	say "  pcap to /dev/shm, new files of 256 MiB, old ones deleted (fresh pages every time):"
	ringgen_through f "$SHM/f.pcap" fresh
	F_GBPS=$(gbit "$RG_BYTES" "$AGENT_CPU")
	# What the kernel alone charges for writing that many bytes into tmpfs.
	/usr/bin/time -o "$WORK/dd.time" -f "%S %U" dd if=/dev/zero of="$SHM/dd.bin" bs=1M \
		count=$((RG_BYTES / 1048576)) 2>/dev/null
	rm -f "$SHM/dd.bin"
	local dd_cpu
	dd_cpu=$(awk 'END { print $1 + $2 }' "$WORK/dd.time")
	DD_GBPS=$(gbit "$RG_BYTES" "$dd_cpu")
	say "  dd of $RG_BYTES bytes to /dev/shm (1 MiB writes): ${dd_cpu}s CPU -> $DD_GBPS Gbit/s"
}

verdict() { # verdict VALUE OP TARGET -> PASS or SHORT
	awk -v v="$1" -v t="$3" -v op="$2" 'BEGIN {
		ok = (op == ">=") ? (v >= t) : (v == t); print ok ? "PASS" : "SHORT" }'
}

# wakeups PID: voluntary context switches so far (how often the agent slept and woke).
wakeups() { awk '/^voluntary_ctxt_switches/ { print $2 }' "/proc/$1/status"; }

col() { # col LAYOUT SIZE MODE FIELD: median of a column of $WORK/a.txt
	awk -v l="$1" -v s="$2" -v m="$3" -v f="$4" '$1 == l && $2 == s && $3 == m { print $f }' \
		"$WORK/a.txt" | median
}

sum_of() { # sum_of FILE LAYOUT: total of the second column for that layout
	awk -v l="$2" '$1 == l { s += $2 } END { printf "%.0f", s }' "$1"
}

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", (a > 0 ? b / a : 0) }'; }

row() { printf '%-48s %12s %9s  %s\n' "$@"; }

report() {
	local size ra rb ma mb ua ub t v dropped mirrored layout first
	first=${LAYOUTS%% *}
	for layout in $LAYOUTS; do
		echo
		say "layout $layout: medians of $PAIRS runs each (nginx us/req: worker CPU per request)"
		printf '%-5s %10s %10s %7s %9s %9s %7s %9s %9s\n' size "req/s w/o" "req/s with" ratio \
			"MB/s w/o" "MB/s with" ratio "us/req w/o" "us/req with"
		for size in $SIZES; do
			ra=$(col "$layout" "$size" without 4); rb=$(col "$layout" "$size" with 4)
			ma=$(col "$layout" "$size" without 5); mb=$(col "$layout" "$size" with 5)
			ua=$(col "$layout" "$size" without 6); ub=$(col "$layout" "$size" with 6)
			printf '%-5s %10s %10s %7s %9s %9s %7s %9s %9s\n' "$size" "$ra" "$rb" \
				"$(ratio "$ra" "$rb")" "$ma" "$mb" "$(ratio "$ma" "$mb")" "$ua" "$ub"
			eval "RATIO_${layout}_$size=$(ratio "$ra" "$rb")"
		done
	done
	echo
	row figure measured target result
	for layout in $LAYOUTS; do
		for size in $SIZES; do
			t=0.95
			[ "$size" = 1m ] && t=0.97
			v=$(eval echo "\$RATIO_${layout}_$size")
			if [ "$layout" = "$first" ]; then
				row "a. nginx $size req/s with/without, $layout" "$v" ">= $t" "$(verdict "$v" ">=" "$t")"
			else
				row "   nginx $size req/s with/without, $layout" "$v" "" info
			fi
		done
	done
	row "b. agent Gbit/s per CPU s, pcap ring on /dev/shm" "$B_GBPS" ">= 20" "$(verdict "$B_GBPS" ">=" 20)"
	row "   (same, fresh files on /dev/shm)" "$F_GBPS" "" info
	row "   (kernel alone: dd of as many bytes to /dev/shm)" "$DD_GBPS" "" info
	row "   (same, pcap to /dev/null: the agent alone)" "$NULL_GBPS" "" info
	row "   (same run, agent user CPU only)" "$B_USER_GBPS" "" info
	for layout in $LAYOUTS; do
		dropped=$(sum_of "$WORK/dropped.txt" "$layout")
		if [ "$layout" = "$first" ]; then
			row "c. dropped bytes, runs with library, $layout" "$dropped" "= 0" \
				"$(verdict "$dropped" "==" 0)"
		else
			row "   dropped bytes, runs with library, $layout" "$dropped" "" info
		fi
	done
	mirrored=$(awk '{ s += $2 } END { printf "%.0f", s }' "$WORK/mirrored.txt")
	v=PASS
	[ "$mirrored" != 0 ] || v=SHORT
	row "   bytes mirrored s2c (library active)" "$mirrored" "> 0" "$v"
	row "   idle agent CPU %" "$IDLE_PCT" "" info
}

say "build $BUILD, $(nproc) cores, $(uname -r), load average $(cut -d" " -f1-3 /proc/loadavg) (other work on the machine skews the ratios)"
part_a
part_b
report
