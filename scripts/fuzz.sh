#!/usr/bin/env bash
# Fuzz the readers of what tandem reads from stores and files it does not
# control: Delta commits, checkpoints and log names, the path resolver, the
# replication index, the config loader. Each target runs for the time given
# (default 1m); the test command runs them for a few seconds each.
#
#   bash scripts/fuzz.sh 10m     # a longer run
#
# A failing input is saved under the package's testdata/fuzz/ and rerun by
# every later `go test` of that package.
set -euo pipefail
cd "$(dirname "$0")/.."
time="${1:-1m}"
targets=(
  "./internal/delta FuzzCommit"
  "./internal/delta FuzzCheckpoint"
  "./internal/delta FuzzLogName"
  "./internal/delta FuzzDecodePath"
  "./internal/replicate FuzzIndexChunk"
  "./internal/member/all FuzzParse"
)
# fuzz PKG TARGET TIME runs one target for TIME.
fuzz() { go test "$1" -run '^$' -fuzz "^$2\$" -fuzztime "$3" -parallel 2 2>&1; }
for t in "${targets[@]}"; do
  set -- $t
  echo "== fuzz $2 ($1, $time)"
  rc=0
  out=$(fuzz "$1" "$2" "$time") || rc=$?
  if [ "$rc" -ne 0 ] && ! grep -q 'Failing input written' <<<"$out" && grep -q 'context deadline exceeded' <<<"$out"; then
    # The engine's time ran out before fuzzing began (its baseline run of
    # the corpus, on a loaded machine): no input failed. Once more, longer.
    echo "fuzz.sh: $2 ran out of time before fuzzing began; once more for 30s"
    rc=0
    out=$(fuzz "$1" "$2" 30s) || rc=$?
  fi
  printf '%s\n' "$out" | grep -v -e '^fuzz: elapsed' -e '^No IAM service configured' || true
  [ "$rc" -eq 0 ] || { echo "fuzz.sh: $2 failed; the input is saved under $1/testdata/fuzz/$2" >&2; exit 1; }
done
