#!/usr/bin/env bash
# Golden tests: replays tests/golden/*.events, diffs with *.expected, checks tshark's verdicts.
# usage: tests/golden/run.sh [CASE...]   (BUILD=dir picks the build, default build)
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
replay=${FLOWREPLAY:-$root/${BUILD:-build}/flowreplay}
if [ ! -x "$replay" ]; then
	echo "golden: $replay missing (make BUILD=${BUILD:-build} ${BUILD:-build}/flowreplay)" >&2
	exit 1
fi
command -v tshark >/dev/null || { echo "golden: tshark missing (make deps)" >&2; exit 1; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
export WIRESHARK_CONFIG_DIR=$tmp/wireshark
mkdir -p "$WIRESHARK_CONFIG_DIR"

count() { # count PCAP FILTER: packets matching a display filter
	tshark -nn -r "$1" -o tcp.check_checksum:TRUE -o ip.check_checksum:TRUE \
		-o tcp.analyze_sequence_numbers:TRUE -Y "$2" 2>/dev/null | wc -l
}

cases=("$@")
[ ${#cases[@]} -eq 0 ] && for f in "$here"/*.events; do cases+=("$(basename "$f" .events)"); done
pass=0 fail=0
for name in "${cases[@]}"; do
	ev=$here/$name.events pcap=$tmp/$name.pcap why=()
	if ! "$here/render.sh" "$ev" "$replay" "$pcap" >"$tmp/$name.out"; then
		why+=("replay failed")
	elif [ ! -f "$here/$name.expected" ]; then
		why+=("no $name.expected (tests/golden/regen.sh $name)")
	elif ! diff -u "$here/$name.expected" "$tmp/$name.out" >"$tmp/$name.diff"; then
		why+=("output differs")
		head -40 "$tmp/$name.diff"
	fi
	if [ -f "$pcap" ]; then
		[ "$(count "$pcap" tcp)" -gt 0 ] || why+=("no TCP packets")
		n=$(count "$pcap" 'tcp.checksum.status != 1 || (ip && ip.checksum.status != 1)')
		[ "$n" -eq 0 ] || why+=("$n packets without a good checksum")
		if grep -q '^#! gaps' "$ev"; then
			# a gap may show as lost segment + ACK of it, nothing else
			n=$(count "$pcap" 'tcp.analysis.flags && !tcp.analysis.lost_segment && !tcp.analysis.ack_lost_segment')
			[ "$(count "$pcap" tcp.analysis.lost_segment)" -gt 0 ] || why+=("gap not visible")
		else
			n=$(count "$pcap" tcp.analysis.flags)
		fi
		[ "$n" -eq 0 ] || why+=("$n packets with unexpected tcp.analysis.flags")
	fi
	if [ ${#why[@]} -eq 0 ]; then
		pass=$((pass + 1))
	else
		fail=$((fail + 1))
		echo "FAIL $name: ${why[*]}"
	fi
done
echo "golden: $pass passed, $fail failed"
[ "$fail" -eq 0 ]
