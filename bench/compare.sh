#!/usr/bin/env bash
# Old against new in one run: `bench/compare.sh REV` builds REV (a commit, default main)
# in a temporary worktree, then runs bench/run.sh for REV and for this tree in turn,
# BENCH_ROUNDS (default 2) times (A B A B: both see the same machine), and prints each
# figure of the reports with the median of each side and the ratio new/old.
# Every bench/run.sh knob (BENCH_PARTS, BENCH_SECONDS, ...) applies to both sides.
# bench/run.sh is taken from this tree for both, so both measure the same way.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
REV=${1:-main}
ROUNDS=${BENCH_ROUNDS:-2}
OLD=$(mktemp -d "${TMPDIR:-/tmp}/tlsmirror-bench-old.XXXXXX")
OUT=$(mktemp -d "${TMPDIR:-/tmp}/tlsmirror-bench-out.XXXXXX")
cleanup() { git -C "$ROOT" worktree remove --force "$OLD" >/dev/null 2>&1 || rm -rf "$OLD"; }
trap cleanup EXIT

say() { printf 'compare: %s\n' "$*"; }
git -C "$ROOT" worktree add -q --detach "$OLD" "$REV"
say "building $REV in $OLD and this tree"
make -C "$OLD" -s -j2 all build/ringgen >/dev/null
make -s -j2 all build/ringgen >/dev/null

# bench/run.sh of this tree, pointed at each side's build (BUILD is relative to ROOT
# of the script's tree, so the old side runs a copy placed in its own tree)
cp bench/run.sh "$OLD/bench/run-compare.sh"
cp bench/floor.py "$OLD/bench/floor.py" # run.sh's helper, looked up beside it
for r in $(seq 1 "$ROUNDS"); do
	say "round $r/$ROUNDS: $REV"
	bash "$OLD/bench/run-compare.sh" >"$OUT/old.$r" 2>&1 || say "(old side exited $?)"
	say "round $r/$ROUNDS: this tree"
	bash bench/run.sh >"$OUT/new.$r" 2>&1 || say "(new side exited $?)"
done

# The figure rows: 'NAME  VALUE  TARGET  RESULT' as report() prints them (row()).
figures() { awk 'length($0) > 50 {
	name = substr($0, 1, 48); v = substr($0, 50, 12); gsub(/^ +| +$/, "", v); gsub(/ +$/, "", name)
	if (name != "" && name !~ /^bench:/ && v ~ /^-?[0-9]+(\.[0-9]+)?$/) print name "\t" v }' "$1"; }
for f in "$OUT"/old.* "$OUT"/new.*; do figures "$f" >"$f.fig"; done
echo
say "figures: median of $ROUNDS rounds each; ratio = this tree / $REV"
printf '%-48s %12s %12s %8s\n' figure "$REV" "this tree" ratio
cut -f1 "$OUT/new.1.fig" | while IFS= read -r name; do
	o=$(cat "$OUT"/old.*.fig | awk -F'\t' -v n="$name" '$1 == n { print $2 }' | sort -g |
	    awk '{ v[NR] = $1 } END { if (NR) print (NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2) }')
	n=$(cat "$OUT"/new.*.fig | awk -F'\t' -v n="$name" '$1 == n { print $2 }' | sort -g |
	    awk '{ v[NR] = $1 } END { if (NR) print (NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2) }')
	printf '%-48s %12s %12s %8s\n' "$name" "${o:--}" "${n:--}" \
		"$(awk -v a="${o:-0}" -v b="${n:-0}" 'BEGIN { if (a > 0) printf "%.3f", b / a; else print "-" }')"
done
say "full reports in $OUT"
