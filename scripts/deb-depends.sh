#!/usr/bin/env bash
# The Depends: of the package from the ELF files' libraries (dpkg-shlibdeps,
# run in a scratch directory with the minimal debian/control it wants).
set -euo pipefail
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$tmp/debian"
printf 'Source: tlsmirror\n\nPackage: tlsmirror\nArchitecture: any\n' > "$tmp/debian/control"
files=()
for f in "$@"; do files+=("$(readlink -f "$f")"); done
(cd "$tmp" && dpkg-shlibdeps -O "${files[@]}" 2>/dev/null) | sed -n 's/^shlibs:Depends=//p'
