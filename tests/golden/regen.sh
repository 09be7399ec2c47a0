#!/usr/bin/env bash
# Rewrites tests/golden/*.expected from the current flowreplay and tshark; review the diff after.
# usage: tests/golden/regen.sh [CASE...]   (BUILD=dir picks the build, default build)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
replay=${FLOWREPLAY:-$root/${BUILD:-build}/flowreplay}
[ -x "$replay" ] || { echo "regen: $replay missing (make ${BUILD:-build}/flowreplay)" >&2; exit 1; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
export WIRESHARK_CONFIG_DIR=$tmp/wireshark
mkdir -p "$WIRESHARK_CONFIG_DIR"
cases=("$@")
[ ${#cases[@]} -eq 0 ] && for f in "$here"/*.events; do cases+=("$(basename "$f" .events)"); done
for name in "${cases[@]}"; do
	"$here/render.sh" "$here/$name.events" "$replay" "$tmp/$name.pcap" >"$here/$name.expected"
	echo "regen: $name.expected ($(wc -l <"$here/$name.expected") lines)"
done
