#!/usr/bin/env bash
# Benchmarks change data capture side by side with its peers on real
# PostgreSQL 15 servers (Debian's postgresql-15; scripts/test.sh installs
# it), in one run:
#   apply       rows applied by tandem from the slot  vs  COPY of the same rows
#   validate    tandem validate of two equal tables    vs  SELECT count(*) on both
#   gap repair  1,000 changed rows brought level       vs  TRUNCATE + COPY of the table
# Figures go in docs/BENCHMARKS.md.
#
#   bash bench/cdc.sh                       (200k applied, 10M validated, 1M repaired)
#   ROWS=100000 bash bench/cdc.sh           (every case at that size)
set -euo pipefail
cd "$(dirname "$0")/.."
COUNT=${COUNT:-2}
run() { TANDEM_BENCH_ROWS=${ROWS:-$2} go test ./internal/cdc -run '^$' -bench "$1" -benchtime "${COUNT}x" -timeout 60m | grep -E '^Benchmark'; }
run 'Apply' 200000
run 'Validate' 10000000
run 'GapRepair' 1000000
