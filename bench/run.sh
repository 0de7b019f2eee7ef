#!/usr/bin/env bash
# Benchmarks tandem side by side with rclone, alternating runs on the same
# data. Prints a markdown table of medians (figures go in docs/BENCHMARKS.md).
#
#   bash bench/run.sh            all cases, 3 rounds each
#   ROUNDS=1 CASES="small noop" bash bench/run.sh
#   COLD=1 CASES=files10k bash bench/run.sh    every tool reads from the disk
#
# Cases: small (10,000 x 4 KiB, folder to folder), files10k and files100k
# (10,000 and 100,000 x 4 KiB folder to folder: rclone, rclone followed by
# sync, cp -r followed by sync as the machine's floor, tandem), s3files10k and
# s3files100k (the same S3 to S3), big (one 1 GiB file,
# folder to folder, next to cp), s3small and s3big (the same between two S3
# servers on loopback), noop (reruns over unchanged objects, folders and S3),
# mem (1,000,000 objects listed and compared: peak RSS), tablecopy (table sync
# against bucket replication on the same bytes).
# Needs rclone (apt-get install rclone) and /usr/bin/time.
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${ROUNDS:-3}
CASES=${CASES:-"small noop big s3small s3big mem"}
WORK=$(mktemp -d /tmp/tandem-bench.XXXXXX)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$WORK"' EXIT
command -v rclone >/dev/null || { echo "bench: rclone is missing (apt-get install rclone)" >&2; exit 1; }

mkdir -p "$WORK/bin"
go build -o "$WORK/bin/tandem" ./cmd/tandem
go build -o "$WORK/bin/s3server" ./bench/s3server
go build -o "$WORK/bin/genfiles" ./bench/genfiles
go build -o "$WORK/bin/mktable" ./bench/mktable
T="$WORK/bin/tandem"
RCLONE=(rclone sync --checksum --fast-list --transfers 16 --checkers 16)
RESULTS="$WORK/results.tsv"

# measure NAME TOOL CMD...: runs CMD, appends "name tool seconds maxrss_kb
# cpu_seconds server_cpu_seconds" (the tool's user and system time; with
# S3CPU=1, the two S3 servers' CPU time during the run, else 0).
measure() {
	local name=$1 tool=$2; shift 2
	local c0=0
	[ -n "${S3CPU:-}" ] && c0=$(servers_cpu)
	/usr/bin/time -f "%e %M %U %S" -o "$WORK/time" "$@" >"$WORK/out" 2>"$WORK/err" || {
		echo "bench: $tool failed in $name:" >&2; cat "$WORK/err" >&2; exit 1; }
	local srv=0
	[ -n "${S3CPU:-}" ] && srv=$(awk -v a="$c0" -v b="$(servers_cpu)" 'BEGIN { printf "%.2f", (b - a) / 100 }')
	read -r secs rss usr sys <"$WORK/time"
	cpu=$(awk -v u="$usr" -v s="$sys" 'BEGIN { printf "%.2f", u + s }')
	printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$name" "$tool" "$secs" "$rss" "$cpu" "$srv" >>"$RESULTS"
	printf '  %-12s %-11s %8.2fs %8d KiB  cpu %6.2fs  servers %6.2fs\n' "$name" "$tool" "$secs" "$rss" "$cpu" "$srv" >&2
}

# servers_cpu: the CPU time (in clock ticks) the S3 servers used so far.
servers_cpu() {
	local t=0 p
	for p in $S3PIDS; do
		t=$((t + $(awk '{ print $14 + $15 }' "/proc/$p/stat")))
	done
	echo "$t"
}

# Every run writes into a folder never used before, and folders are deleted
# only after a case, followed by a wait of 40 seconds. This machine's ext4
# has no journal: a new file's inode is never one freed in the last 30
# seconds (the kernel's dirty_expire_centisecs, plus 5), and the allocator
# looks at every such inode before it finds a free one, so creating files
# right after deleting thousands costs several times more (perf shows
# ext4's recently_deleted), which would charge one tool for another's
# cleanup.
#
# fresh SRC also reads SRC's files once, so that every tool starts with them
# in the page cache: rclone drops what it read from the cache
# (posix_fadvise DONTNEED, two calls per file), and the tool after it would
# otherwise read from the disk and be charged for rclone's choice (it made
# the tool that ran after rclone 1.6 times slower at 10,000 files). With
# COLD=1 it empties the page cache instead (as root), so that every tool
# reads SRC from the disk.
RUN=0
fresh() {
	RUN=$((RUN + 1)); DST="$WORK/dst/$RUN"; mkdir -p "$DST"
	if [ -n "${COLD:-}" ]; then
		sync; echo 3 >/proc/sys/vm/drop_caches || { echo "bench: COLD=1 needs root to empty the page cache" >&2; exit 1; }
	elif [ -n "${1:-}" ]; then
		find "$1" -type f -print0 | xargs -0 cat >/dev/null
	fi
	sync; sleep 2
}
cleanup() { rm -rf "$WORK/dst"; sync; sleep 40; }

# Two S3 servers on loopback, one per region.
start_s3() {
	[ -n "${SRC_EP:-}" ] && return
	"$WORK/bin/s3server" -root "$WORK/s3a" -bucket src >"$WORK/s3a.ep" 2>"$WORK/s3a.log" &
	S3PIDS=$!
	"$WORK/bin/s3server" -root "$WORK/s3b" >"$WORK/s3b.ep" 2>"$WORK/s3b.log" &
	S3PIDS="$S3PIDS $!"
	for _ in $(seq 400); do grep -q '^http' "$WORK/s3a.ep" && grep -q '^http' "$WORK/s3b.ep" && break; sleep 0.05; done
	SRC_EP=$(grep '^http' "$WORK/s3a.ep"); DST_EP=$(grep '^http' "$WORK/s3b.ep")
	# Plain HTTP on loopback: a CA bundle from the environment only gets in
	# rclone's way.
	unset AWS_CA_BUNDLE
	export AWS_ACCESS_KEY_ID=tandem-test AWS_SECRET_ACCESS_KEY=tandem-test-secret AWS_REGION=us-east-1
	for r in A B; do
		ep=$SRC_EP; [ $r = B ] && ep=$DST_EP
		export RCLONE_CONFIG_${r}_TYPE=s3 RCLONE_CONFIG_${r}_PROVIDER=Other RCLONE_CONFIG_${r}_ENDPOINT=$ep \
			RCLONE_CONFIG_${r}_ACCESS_KEY_ID=tandem-test RCLONE_CONFIG_${r}_SECRET_ACCESS_KEY=tandem-test-secret \
			RCLONE_CONFIG_${r}_FORCE_PATH_STYLE=true RCLONE_CONFIG_${r}_REGION=us-east-1
	done
	TS3=("$T" replicate --from-endpoint "$SRC_EP" --to-endpoint "$DST_EP" --path-style)
}

gen_small() { [ -d "$WORK/small" ] || "$WORK/bin/genfiles" -n 10000 -size 4096 "$WORK/small"; }
gen_files() { [ -d "$WORK/files$1" ] || "$WORK/bin/genfiles" -n "$1" -size 4096 "$WORK/files$1"; }
# upload_files N: the N files into the source S3 server, once.
upload_files() {
	[ -f "$WORK/up$1" ] && return
	"${TS3[@]}" --to-endpoint "$SRC_EP" "$WORK/files$1" "s3://src/files$1" >/dev/null
	touch "$WORK/up$1"
}
gen_big() { [ -f "$WORK/big/one.bin" ] || { mkdir -p "$WORK/big"; head -c 1073741824 /dev/urandom >"$WORK/big/one.bin"; }; }

for c in $CASES; do
	echo "== $c" >&2
	case $c in
	small)
		gen_small
		for r in $(seq "$ROUNDS"); do
			fresh "$WORK/small"; measure small rclone "${RCLONE[@]}" "$WORK/small" "$DST"
			fresh "$WORK/small"; measure small tandem "$T" replicate --state "$DST.state" "$WORK/small" "$DST"
		done
		cleanup ;;
	files10k | files100k)
		n=${c#files}; n=${n%k}000; gen_files "$n"
		rounds=$ROUNDS; [ "$n" -ge 100000 ] && rounds=${ROUNDS100:-1}
		# Which tool goes first turns round by round; nothing is deleted
		# until the case ends (see cleanup).
		tools=(cp+sync rclone rclone+sync tandem)
		for r in $(seq "$rounds"); do
			for k in 0 1 2 3; do
				tool=${tools[$(((k + r) % 4))]}; fresh "$WORK/files$n"
				case $tool in
				cp+sync) measure "$c" cp+sync sh -c "cp -r '$WORK/files$n' '$DST/c' && sync" ;;
				rclone) measure "$c" rclone "${RCLONE[@]}" "$WORK/files$n" "$DST" ;;
				rclone+sync) measure "$c" rclone+sync sh -c "$(printf '%q ' "${RCLONE[@]}") '$WORK/files$n' '$DST' && sync" ;;
				tandem) measure "$c" tandem "$T" replicate --state "$DST.state" "$WORK/files$n" "$DST" ;;
				esac
			done
		done
		cleanup ;;
	s3files10k | s3files100k)
		n=${c#s3files}; n=${n%k}000; gen_files "$n"; start_s3; upload_files "$n"
		rounds=$ROUNDS; [ "$n" -ge 100000 ] && rounds=${ROUNDS100:-1}
		for r in $(seq "$rounds"); do
			for k in 0 1; do
				sync; sleep 2
				if [ $(((k + r) % 2)) = 0 ]; then
					rclone mkdir "B:fr$n-$r"; S3CPU=1 measure "$c" rclone "${RCLONE[@]}" "A:src/files$n" "B:fr$n-$r"
				else
					rclone mkdir "B:ft$n-$r"; S3CPU=1 measure "$c" tandem "${TS3[@]}" --state "$WORK/state-$c-$r" "s3://src/files$n" "s3://ft$n-$r"
				fi
			done
		done ;;
	noop)
		gen_small
		fresh; DR=$DST; "${RCLONE[@]}" "$WORK/small" "$DR"
		fresh; DT=$DST; "$T" replicate --state "$DT.state" "$WORK/small" "$DT" >/dev/null
		sync; sleep 1
		for r in $(seq "$ROUNDS"); do
			measure noop rclone "${RCLONE[@]}" "$WORK/small" "$DR"
			measure noop tandem "$T" replicate --state "$DT.state" "$WORK/small" "$DT"
		done
		cleanup
		start_s3
		rclone mkdir B:noopr; rclone mkdir B:noopt
		[ -n "${S3SMALL_UP:-}" ] || { "${TS3[@]}" --to-endpoint "$SRC_EP" "$WORK/small" s3://src/small >/dev/null; S3SMALL_UP=1; }
		"${RCLONE[@]}" A:src/small B:noopr
		rm -rf "$WORK/state-noop-s3"; "${TS3[@]}" --state "$WORK/state-noop-s3" s3://src/small s3://noopt >/dev/null
		for r in $(seq "$ROUNDS"); do
			measure noop-s3 rclone "${RCLONE[@]}" A:src/small B:noopr
			measure noop-s3 tandem "${TS3[@]}" --state "$WORK/state-noop-s3" s3://src/small s3://noopt
		done ;;
	big)
		gen_big
		for r in $(seq "$ROUNDS"); do
			# cp does not sync; tandem syncs before it returns. Both are
			# timed as they are, and cp+sync is timed too.
			fresh "$WORK/big"; measure big cp cp "$WORK/big/one.bin" "$DST/one.bin"
			fresh "$WORK/big"; measure big cp+sync sh -c "cp '$WORK/big/one.bin' '$DST/one.bin' && sync '$DST/one.bin'"
			fresh "$WORK/big"; measure big rclone "${RCLONE[@]}" "$WORK/big" "$DST"
			fresh "$WORK/big"; measure big tandem "$T" replicate --state "$DST.state" "$WORK/big" "$DST"
			cleanup
		done ;;
	s3small)
		gen_small; start_s3
		[ -n "${S3SMALL_UP:-}" ] || { "${TS3[@]}" --to-endpoint "$SRC_EP" "$WORK/small" s3://src/small >/dev/null; S3SMALL_UP=1; }
		for r in $(seq "$ROUNDS"); do
			rclone mkdir "B:sr$r"; measure s3small rclone "${RCLONE[@]}" A:src/small "B:sr$r"
			rclone mkdir "B:st$r"; measure s3small tandem "${TS3[@]}" --state "$WORK/state-s3small-$r" s3://src/small "s3://st$r"
		done ;;
	s3big)
		gen_big; start_s3
		"${TS3[@]}" --to-endpoint "$SRC_EP" "$WORK/big" s3://src/big >/dev/null
		for r in $(seq "$ROUNDS"); do
			rclone mkdir "B:br$r"; measure s3big rclone "${RCLONE[@]}" A:src/big "B:br$r"
			rclone mkdir "B:bt$r"; measure s3big tandem "${TS3[@]}" --state "$WORK/state-s3big-$r" s3://src/big "s3://bt$r"
			rclone purge "B:br$r"; rclone purge "B:bt$r"
		done ;;
	tablecopy)
		# Table sync and bucket replication on the same bytes: 400 files of
		# 1 MiB and 2,000 of 64 KiB in one Delta table.
		if [ ! -d "$WORK/tbl" ]; then
			"$WORK/bin/genfiles" -n 400 -size 1048576 "$WORK/tbl/big"
			"$WORK/bin/genfiles" -n 2000 -size 65536 "$WORK/tbl/small"
			"$WORK/bin/mktable" "$WORK/tbl"
		fi
		for r in $(seq "$ROUNDS"); do
			# Which tool goes first alternates: the second one of a round
			# runs on a disk still busy with the first one's writes.
			if [ $((r % 2)) = 1 ]; then
				fresh "$WORK/tbl"; measure tablecopy replicate "$T" replicate --exclude _delta_log/ "$WORK/tbl" "$DST"
				fresh "$WORK/tbl"; measure tablecopy table-sync "$T" table sync "$WORK/tbl" "$DST"
			else
				fresh "$WORK/tbl"; measure tablecopy table-sync "$T" table sync "$WORK/tbl" "$DST"
				fresh "$WORK/tbl"; measure tablecopy replicate "$T" replicate --exclude _delta_log/ "$WORK/tbl" "$DST"
			fi
		done
		cleanup ;;
	mem)
		N=${MEM_OBJECTS:-1000000}
		[ -d "$WORK/m1" ] || "$WORK/bin/genfiles" -n "$N" -size 0 "$WORK/m1" "$WORK/m2"
		rm -rf "$WORK/state-mem"
		measure "mem-$N" tandem-first "$T" replicate --state "$WORK/state-mem" "$WORK/m1" "$WORK/m2"
		measure "mem-$N" tandem "$T" replicate --state "$WORK/state-mem" "$WORK/m1" "$WORK/m2"
		measure "mem-$N" rclone "${RCLONE[@]}" "$WORK/m1" "$WORK/m2" ;;
	*) echo "bench: unknown case $c" >&2; exit 2 ;;
	esac
done

echo
echo "| case | tool | median seconds | every run (s) | median peak RSS (KiB) | median CPU of the tool (s) | median CPU of the S3 servers (s) |"
echo "|---|---|---|---|---|---|---|"
median() { sort -n | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }
cut -f1,2 "$RESULTS" | awk '!seen[$0]++' | while IFS=$'\t' read -r name tool; do
	rows=$(awk -F'\t' -v n="$name" -v t="$tool" '$1 == n && $2 == t' "$RESULTS")
	printf '| %s | %s | %s | %s | %s | %s | %s |\n' "$name" "$tool" "$(cut -f3 <<<"$rows" | median)" \
		"$(cut -f3 <<<"$rows" | paste -sd' ')" "$(cut -f4 <<<"$rows" | median)" "$(cut -f5 <<<"$rows" | median)" "$(cut -f6 <<<"$rows" | median)"
done
