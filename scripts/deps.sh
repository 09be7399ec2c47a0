#!/usr/bin/env bash
# Installs the Debian packages tlsmirror's build, demo, tests and benchmarks use.
set -euo pipefail
pkgs=(build-essential pkg-config libssl-dev libzstd-dev liblz4-dev openssl tshark nginx nghttp2-client
      curl python3 iproute2 procps psmisc time util-linux passwd postfix libtsan2
      php-cli php-curl php-pgsql postgresql nodejs golang-go wget strace
      lintian systemd  # make deb, systemd-analyze verify of the units (tests/integration/test_27_package.py)
      libgnutls28-dev gnutls-bin git lighttpd lighttpd-mod-openssl lighttpd-mod-gnutls
      faketime  # an agent with a clock a day ahead (tests/integration/test_21_tunnel.py)
      librdkafka-dev kcat  # --kafka (src/sinks/sink_kafka.c); kcat reads it back in the tests
      libcapstone-dev  # the capture library relocates prologues of a program's own SSL_read... (src/capture/reloc.c)
      libpcap-dev  # tlsmirror decrypt reads captures and interfaces (src/sources/decrypt.c)
      ssldump  # a peer to benchmark decryption against (bench/decrypt.sh)
      tcpreplay ethtool)  # bench/decrypt.sh replays ciphertext at 2 Gbit/s into a veth
missing=()
for p in "${pkgs[@]}"; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
# promtool (tests/integration/test_26_ops.py checks the metrics with it): taken out of
# Debian's prometheus package, not installed (that would start a Prometheus server)
promtool_fetch() {
	local dir=/var/cache/tlsmirror-deps
	[ -x "$dir/promtool" ] || command -v promtool >/dev/null && return 0
	[ "$(id -u)" -eq 0 ] || return 0
	local tmp
	tmp=$(mktemp -d)
	if (cd "$tmp" && apt-get download -q prometheus >/dev/null 2>&1 && dpkg-deb -x prometheus_*.deb x); then
		mkdir -p "$dir" && install -m 0755 "$tmp/x/usr/bin/promtool" "$dir/promtool"
	else
		echo "deps: could not fetch promtool (the test uses its own strict parser)" >&2
	fi
	rm -rf "$tmp"
}
if [ ${#missing[@]} -eq 0 ]; then
	promtool_fetch
	exit 0
fi
echo "installing: ${missing[*]}"
if [ "$(id -u)" -ne 0 ]; then
	echo "deps: need root to apt-get install ${missing[*]}" >&2
	exit 1
fi
export DEBIAN_FRONTEND=noninteractive
echo "wireshark-common wireshark-common/install-setuid boolean false" | debconf-set-selections
# postfix for the chroot test (tests/integration/test_24_chroot.py runs a private instance):
# no system configuration, no MTA started on port 25
echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections
apt-get update -q >/dev/null
apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
promtool_fetch
