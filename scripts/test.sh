#!/usr/bin/env bash
# The test command: installs the test servers if needed, then runs every test.
# The exit code is cargo's.
set -uo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh || exit $?
cargo test --all-targets
