#!/usr/bin/env bash
# The test command: installs the test servers if needed, runs every test (unit, scripted fakes,
# end-to-end against a real Dovecot and smtp-sink), then the format and lint checks.
# Ends with one line "tests: N passed, M failed"; the exit status is non-zero if anything failed.
set -uo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh || exit $?

log=$(mktemp)
trap 'rm -f "$log"' EXIT
# MAILFERRY_E2E=1: here a missing server fails the end-to-end tests; a plain `cargo test`
# without root or the servers skips them (tests/support/e2e.rs).
MAILFERRY_E2E=1 cargo test --all-targets --no-fail-fast 2>&1 | tee "$log"
status=${PIPESTATUS[0]}

if [ "$status" -eq 0 ] && cargo fmt --version >/dev/null 2>&1; then
    echo "== cargo fmt --check"
    cargo fmt --check || status=1
fi
if [ "$status" -eq 0 ] && cargo clippy --version >/dev/null 2>&1; then
    echo "== cargo clippy --all-targets -- -D warnings"
    cargo clippy --all-targets -- -D warnings || status=1
fi

# cargo prints one "test result" line per test binary; add them up for one closing line.
awk '/^test result:/ { for (i = 1; i < NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i } }
     END { printf "tests: %d passed, %d failed\n", p, f }' "$log"
exit "$status"
