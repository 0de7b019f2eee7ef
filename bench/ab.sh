#!/usr/bin/env bash
# A/B of two tandem builds (or one build with and without an environment
# setting) on 10,000 files of 4 KiB, folder to folder, the two alternated
# round by round, each with its source in the page cache and a target
# folder never used before. Prints the median and range of the wall time
# and the mean CPU (user + system) of each side.
#
#   bash bench/ab.sh OLD_BINARY NEW_BINARY [ROUNDS]
#   B_ENV=GOMAXPROCS=3 bash bench/ab.sh BINARY BINARY [ROUNDS]
#
# Build a side with: go build -o /tmp/tandem-new ./cmd/tandem
set -euo pipefail
[ $# -ge 2 ] || { echo "usage: bash bench/ab.sh A_BINARY B_BINARY [ROUNDS]" >&2; exit 2; }
A=$(realpath "$1") B=$(realpath "$2") R=${3:-10}
cd "$(dirname "$0")/.."
WORK=$(mktemp -d /tmp/tandem-ab.XXXXXX)
trap 'rm -rf "$WORK"' EXIT
go build -o "$WORK/genfiles" ./bench/genfiles
"$WORK/genfiles" -n 10000 -size 4096 "$WORK/src"
# New inodes right after many deletes cost more (see run.sh): nothing is
# deleted until the end.
sync; sleep 30
for r in $(seq "$R"); do
	for side in A B; do
		bin=$A env=X_UNUSED=1
		[ $side = B ] && bin=$B env=${B_ENV:-X_UNUSED=1}
		find "$WORK/src" -type f -print0 | xargs -0 cat >/dev/null
		sync; sleep 1
		env "$env" /usr/bin/time -f "$side %e %U %S" -a -o "$WORK/times" \
			"$bin" replicate --state "$WORK/st$side$r" "$WORK/src" "$WORK/d$side$r" >/dev/null
	done
done
for side in A B; do
	grep "^$side " "$WORK/times" | awk '{print $2}' | sort -n | awk -v s=$side '{a[NR]=$1} END {
		m = NR % 2 ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2
		printf "%s  median %.3f s  min %.3f  max %.3f\n", s, m, a[1], a[NR] }'
	grep "^$side " "$WORK/times" | awk -v s=$side '{c += $3 + $4} END { printf "%s  mean CPU %.3f s\n", s, c / NR }'
done
echo "every run (side, seconds, user, system):"; cat "$WORK/times"
