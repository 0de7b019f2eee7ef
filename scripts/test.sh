#!/usr/bin/env bash
# The whole test suite. It provisions what the tests need and fails loudly
# when it cannot; no test is skipped for a missing service.
#
# Today the tests need only Go modules (the S3 server, versitygw, runs inside
# the test process on loopback). Later capabilities add their services here
# (PostgreSQL from Debian packages).
set -euo pipefail
cd "$(dirname "$0")/.."

command -v go >/dev/null || { echo "test.sh: Go is not installed (https://go.dev/dl)" >&2; exit 1; }

echo "== go vet"
go vet ./...

echo "== go test"
go test -race -count=1 -timeout 20m ./... 2>&1 | grep -v -e '^No IAM service configured' -e 'INTERNAL ERROR\]: unexpected EOF'
exit "${PIPESTATUS[0]}"
