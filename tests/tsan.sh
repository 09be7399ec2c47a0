#!/usr/bin/env bash
# ThreadSanitizer run (make tsan-test): the unit tests and the agent's threaded integration cases, built with SANITIZER=thread in BUILD.
#
# The agent runs the output queues (sink_queue.c: one thread per output when
# there are several) and the tunnel's sender thread; the capture library is
# not instrumented (TSan cannot be preloaded into a running program).
# halt_on_error: the first race report ends the process with status 66, which
# the tests see as a failed agent. Ends with 'N passed, N failed'.
set -u
cd "$(dirname "$0")/.." || exit 1
export BUILD="${BUILD:-build-tsan}"
export TSAN_OPTIONS="halt_on_error=1 exitcode=66 second_deadlock_stack=1 ${TSAN_OPTIONS:-}"
PYTHON="${PYTHON:-python3}"
if ! nm -D "$BUILD/tlsmirror" 2>/dev/null | grep -q __tsan_init; then
	echo "tsan: $BUILD/tlsmirror is not built with ThreadSanitizer (make tsan-test builds it)"
	exit 1
fi
fail=0 pass=0
echo "== unit (ThreadSanitizer)"
if "$BUILD/unit-tests"; then pass=$((pass + 1)); else fail=$((fail + 1)); fi
# the threaded integration cases: queued sinks under the concurrent hostile
# producer, fan-out with a stalled reader, the tunnel and the collector
echo "== integration (ThreadSanitizer agent)"
"$PYTHON" tests/integration/run.py -k badring.flipping_producer -k 20_delivery.fanout \
	-k 21_tunnel.tunnel_byte_exact -k 21_tunnel.stalled_collector -k 21_tunnel.two_agents \
	| tee /tmp/tsan-integration.$$
last=$(tail -n 1 /tmp/tsan-integration.$$)
rm -f /tmp/tsan-integration.$$
if [[ $last =~ ^integration:\ ([0-9]+)\ passed,\ ([0-9]+)\ failed ]]; then
	pass=$((pass + BASH_REMATCH[1]))
	fail=$((fail + BASH_REMATCH[2]))
else
	fail=$((fail + 1))
fi
echo "tsan: $pass passed, $fail failed"
[ "$fail" -eq 0 ]
