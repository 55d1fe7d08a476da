#!/usr/bin/env bash
# See the gateway work: installs the test servers if needed (Dovecot, Postfix's smtp-sink),
# builds mailferry, and runs examples/demo.rs, which moves a catch-all mailbox's mail from a
# real Dovecot to a real SMTP receiver with `mailferry run`. Needs root (or sudo).
set -euo pipefail
cd "$(dirname "$0")"
scripts/install-deps.sh
cargo build --bins --examples
exec target/debug/examples/demo
