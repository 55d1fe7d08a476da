#!/usr/bin/env bash
# The test command: installs the test servers if needed, runs every test (unit, scripted fakes,
# end-to-end against a real Dovecot and smtp-sink), the end-to-end tests of delivery and state
# once more on PostgreSQL, then the format and lint checks.
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

# The end-to-end tests that deliver and record, again on the PostgreSQL state store: under
# MAILFERRY_TEST_STATE=postgres every configuration the harness writes names a database of
# its own on one private server per test binary (tests/support/state.rs). Left out: sigkill
# (a restarted process waits out the killed one's lease, lease_ttl, before it may poll;
# tests/postgres_instances.rs kills instances on PostgreSQL), and the tests of logins, TLS,
# proxies and relay timing, whose use of the store is the same as these.
pg_tests=(pop3_gateway imap_gateway reliability per_recipient faults malformed_mail open_relay
    operations reload status accounts_dir relay_headers)
pg_args=()
for t in "${pg_tests[@]}"; do
    pg_args+=(--test "$t")
done
echo "== the end-to-end tests again on PostgreSQL (MAILFERRY_TEST_STATE=postgres)"
pg_started=$SECONDS
MAILFERRY_TEST_STATE=postgres MAILFERRY_E2E=1 cargo test --no-fail-fast "${pg_args[@]}" 2>&1 |
    tee -a "$log"
pg_status=${PIPESTATUS[0]}
echo "== on PostgreSQL: $((SECONDS - pg_started)) s"
if [ "$pg_status" -ne 0 ]; then
    status=$pg_status
fi

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
