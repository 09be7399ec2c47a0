#!/usr/bin/env bash
# Replays the fuzz corpus (regression tests); with --fuzz SECONDS runs libFuzzer first.
#
#   tests/fuzz/run.sh                 build the replay drivers ($CC), replay every
#                                     file of tests/fuzz/corpus/<target>/, one process each
#   tests/fuzz/run.sh --fuzz 60       build the libFuzzer targets (clang), fuzz each for
#                                     60 s from the corpus, then replay
#   tests/fuzz/run.sh --seeds         regenerate the ring seeds (tests/fuzz/mkseeds.c) and
#                                     the HTTP/2 seeds (tests/fuzz/mkseeds_h2.py)
# BUILD selects the build directory (default build). Last line: fuzz: N passed, N failed
set -uo pipefail
cd "$(dirname "$0")/../.."
BUILD=${BUILD:-build}
CORPUS=tests/fuzz/corpus
TARGETS=(ring h2 frame hpack record http1 har keylog tls tcp)
MAX_LEN=${FUZZ_MAX_LEN:-16384}

build() {
	if ! make -s BUILD="$BUILD" "$@" >&2; then
		echo "fuzz: build of $* failed" >&2
		echo "fuzz: 0 passed, 1 failed"
		exit 1
	fi
}

seeds() {
	local tmp
	tmp=$(mktemp -d)
	cc -std=gnu11 -O1 -Isrc -D_GNU_SOURCE -o "$tmp/mkseeds" tests/fuzz/mkseeds.c \
		src/transport/ring.c && mkdir -p "$CORPUS/ring" && "$tmp/mkseeds" "$CORPUS/ring" &&
		python3 tests/fuzz/mkseeds_h2.py "$CORPUS/h2" &&
		python3 tests/fuzz/mkseeds_frame.py "$CORPUS/frame" &&
		python3 tests/fuzz/mkseeds_record.py "$CORPUS/record" &&
		python3 tests/fuzz/mkseeds_http1.py "$CORPUS/http1"
	local rc=$?
	rm -rf "$tmp"
	return $rc
}

# fuzz TARGET SECONDS: new inputs go to a scratch corpus in $BUILD, crashes to $BUILD/fuzz/artifacts.
fuzz() {
	local t=$1 secs=$2 work="$BUILD/fuzz/work-$1" art="$BUILD/fuzz/artifacts/"
	mkdir -p "$work" "$art"
	echo "fuzz: running fuzz_$t for $secs s (scratch corpus $work)"
	"$BUILD/fuzz/fuzz_$t" -max_total_time="$secs" -max_len="$MAX_LEN" -timeout=10 \
		-rss_limit_mb=2048 -print_final_stats=1 -close_fd_mask=2 -artifact_prefix="$art" \
		"$work" "$CORPUS/$t" 2>"$BUILD/fuzz/fuzz_$t.log"
	local rc=$?
	grep -E '^(stat::number_of_executed_units|stat::new_units_added|#[0-9]+ +DONE)' \
		"$BUILD/fuzz/fuzz_$t.log" | sed 's/^/fuzz:   /'
	if [ $rc -ne 0 ]; then
		echo "fuzz: fuzz_$t found a problem (log $BUILD/fuzz/fuzz_$t.log):"
		grep -E 'ERROR|SUMMARY|Test unit written' "$BUILD/fuzz/fuzz_$t.log" | sed 's/^/fuzz:   /'
		echo "fuzz: add the crasher to $CORPUS/$t/ once fixed, so replay keeps testing it"
		fuzz_failed=$((fuzz_failed + 1))
	fi
}

mode=replay secs=0 fuzz_failed=0
case "${1:-}" in
--fuzz) mode=fuzz; secs=${2:-${FUZZ_SECONDS:-60}} ;;
--seeds) seeds; exit $? ;;
"") ;;
*) echo "usage: $0 [--fuzz SECONDS | --seeds]" >&2; exit 2 ;;
esac

for t in "${TARGETS[@]}"; do
	if [ $mode = fuzz ]; then
		build "$BUILD/fuzz/fuzz_$t"
		fuzz "$t" "$secs"
	fi
	build "$BUILD/fuzz/replay_$t"
done

pass=0 fail=$fuzz_failed
for t in "${TARGETS[@]}"; do
	for f in "$CORPUS/$t"/*; do
		[ -f "$f" ] || continue
		if out=$("$BUILD/fuzz/replay_$t" "$f" 2>&1); then
			pass=$((pass + 1))
		else
			fail=$((fail + 1))
			echo "fuzz: FAIL $f"
			printf '%s\n' "$out" | tail -n 15 | sed 's/^/fuzz:   /'
		fi
	done
done
echo "fuzz: $pass passed, $fail failed"
[ $fail -eq 0 ]
