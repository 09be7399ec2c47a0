#!/usr/bin/env bash
# Installs the Debian packages tlsmirror's build, demo, tests and benchmarks use.
set -euo pipefail
pkgs=(build-essential pkg-config libssl-dev libnghttp2-dev libzstd-dev liblz4-dev openssl tshark nginx nghttp2-client
      curl python3 iproute2 procps psmisc time util-linux passwd postfix libtsan2
      php-cli php-curl php-pgsql postgresql
      libgnutls28-dev gnutls-bin wget git lighttpd lighttpd-mod-openssl lighttpd-mod-gnutls)
missing=()
for p in "${pkgs[@]}"; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
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
