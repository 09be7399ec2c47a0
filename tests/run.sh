#!/usr/bin/env bash
# Runs every test suite (unit, golden, fuzz replay, integration) and prints one summary line.
#
# Called by `make test` after building. BUILD (default build) names the build
# directory. Each suite prints a last line 'NAME: N passed, N failed' which is
# summed; a suite that is missing where required, crashes, times out or ends
# without that line counts as one failure. The last line of this script is
# 'N passed, N failed' (+ ', N skipped' if any); exit status 1 if anything failed.
# Arguments are passed to the integration runner (e.g. -k curl).
set -u
cd "$(dirname "$0")/.." || exit 1
export BUILD="${BUILD:-build}"
PYTHON="${PYTHON:-python3}"

passed=0 failed=0 skipped=0
notes=()

# run_suite NAME SECONDS CMD... : runs CMD with a time limit, shows its
# output, and adds the counts of its last line.
run_suite() {
	local name=$1 limit=$2 log rc last
	shift 2
	log=$(mktemp "${TMPDIR:-/tmp}/tlsmirror-test-$name.XXXXXX") || exit 1
	echo "== $name"
	timeout -k 10 "$limit" "$@" 2>&1 | tee "$log"
	rc=${PIPESTATUS[0]}
	last=$(grep -v '^[[:space:]]*$' "$log" | tail -n 1)
	rm -f "$log"
	if [[ $last =~ ^$name:\ ([0-9]+)\ passed,\ ([0-9]+)\ failed(,\ ([0-9]+)\ skipped)?$ ]]; then
		passed=$((passed + BASH_REMATCH[1]))
		failed=$((failed + BASH_REMATCH[2]))
		skipped=$((skipped + ${BASH_REMATCH[4]:-0}))
		if [ "$rc" -ne 0 ] && [ "${BASH_REMATCH[2]}" -eq 0 ]; then
			failed=$((failed + 1))
			notes+=("$name: exited $rc but reported no failure")
		fi
	else
		failed=$((failed + 1))
		if [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then
			notes+=("$name: timed out after ${limit}s")
		else
			notes+=("$name: exited $rc without a '$name: N passed, N failed' line")
		fi
	fi
}

if [ -x "$BUILD/unit-tests" ]; then
	run_suite unit 120 "$BUILD/unit-tests"
else
	failed=$((failed + 1))
	notes+=("unit: $BUILD/unit-tests missing (make BUILD=$BUILD test builds it)")
fi

if [ -f tests/golden/run.sh ]; then
	run_suite golden 150 bash tests/golden/run.sh
fi

if [ -f tests/fuzz/run.sh ]; then
	run_suite fuzz 150 bash tests/fuzz/run.sh
fi

run_suite integration 1080 "$PYTHON" tests/integration/run.py "$@"

echo
for n in "${notes[@]+"${notes[@]}"}"; do
	echo "note: $n"
done
summary="$passed passed, $failed failed"
[ "$skipped" -gt 0 ] && summary+=", $skipped skipped"
echo "$summary"
[ "$failed" -eq 0 ]
