#!/usr/bin/env bash
# Renders one golden case as text: flowreplay's report and what tshark sees in the pcap.
# usage: render.sh EVENTS FLOWREPLAY PCAP_OUT   (run.sh and regen.sh call it)
set -euo pipefail
events=$1 replay=$2 pcap=$3

# tshark with default preferences only, TCP analysis and checksum validation on;
# the payload stays plain TCP data (no TLS/HTTP dissection of the clear text).
: "${WIRESHARK_CONFIG_DIR:=$(mktemp -d)}"
export WIRESHARK_CONFIG_DIR
ts() {
	tshark -nn -r "$pcap" -o tcp.relative_sequence_numbers:FALSE \
		-o tcp.check_checksum:TRUE -o ip.check_checksum:TRUE \
		-o tcp.analyze_sequence_numbers:TRUE \
		--disable-protocol tls --disable-protocol http "$@" 2>/dev/null
}

args=$(sed -n 's/^#! args: //p' "$events")
echo "# flowreplay ${args:+$args }$(basename "$events")"
# shellcheck disable=SC2086 # args is a list of options
if ! report=$("$replay" $args "$events" "$pcap" 2>&1); then
	echo "$report" >&2
	echo "render: flowreplay failed on $events" >&2
	exit 1
fi
echo "$report" | sed 's/^/# /'
echo "# packets"
ts -T fields -E header=y \
	-e frame.number -e frame.time_epoch -e eth.src -e eth.dst \
	-e ip.src -e ipv6.src -e tcp.srcport -e ip.dst -e ipv6.dst -e tcp.dstport \
	-e ip.id -e ip.flags.df -e ip.ttl -e ipv6.hlim \
	-e tcp.flags.str -e tcp.seq -e tcp.ack -e tcp.len \
	-e tcp.window_size_value -e tcp.window_size \
	-e tcp.options.mss_val -e tcp.options.wscale.shift -e tcp.options.sack_perm \
	-e ip.checksum.status -e tcp.checksum.status -e _ws.expert.message
echo "# streams"
for s in $(ts -T fields -e tcp.stream | sort -nu); do
	ts -q -z "follow,tcp,ascii,$s"
done
