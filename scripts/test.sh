#!/usr/bin/env bash
# The whole test suite. It provisions what the tests need and fails loudly
# when it cannot; no test is skipped for a missing service.
#
# The S3 server (versitygw) runs inside the test process on loopback. The
# PostgreSQL tests start their own primary and standby servers on loopback
# ports from Debian's postgresql-15, the DNS tests a Knot server from
# Debian's knot, and the dashboard's tests a headless Chromium from Debian's
# chromium, all installed here when missing.
set -euo pipefail
cd "$(dirname "$0")/.."

command -v go >/dev/null || { echo "test.sh: Go is not installed (https://go.dev/dl)" >&2; exit 1; }

# Debian packages the tests run: PostgreSQL 15, the Knot DNS server, and
# Chromium for the dashboard's browser tests and report --pdf.
missing=()
[ -x /usr/lib/postgresql/15/bin/initdb ] || missing+=(postgresql-15)
[ -x /usr/sbin/knotd ] || missing+=(knot)
command -v chromium >/dev/null || missing+=(chromium)
if [ ${#missing[@]} -gt 0 ]; then
  echo "== installing ${missing[*]} (Debian packages)"
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -q || { echo "test.sh: apt-get update failed; ${missing[*]} are needed by the tests" >&2; exit 1; }
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q --no-install-recommends "${missing[@]}" ||
    { echo "test.sh: could not install ${missing[*]}, which the tests need" >&2; exit 1; }
fi

echo "== go vet"
go vet ./...

echo "== go test"
rc=0
go test -race -count=1 -timeout 20m ./... 2>&1 | grep -v -e '^No IAM service configured' -e 'INTERNAL ERROR\]: unexpected EOF' || rc=${PIPESTATUS[0]}
[ "$rc" -eq 0 ] || exit "$rc"

echo "== fuzz (briefly; bash scripts/fuzz.sh 10m for a longer run)"
bash scripts/fuzz.sh 3s
