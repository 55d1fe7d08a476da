#!/usr/bin/env bash
# Benchmark mailferry against fetchmail (multidrop) on the same catch-all mailbox: installs the
# test servers and the peers if needed (Dovecot, Postfix's smtp-sink, fetchmail, GNU time),
# builds in release mode, and runs examples/bench.rs. Needs root (or sudo).
#
#   ./bench.sh                              # 2000 messages, 3 runs per tool, loopback
#   ./bench.sh --messages 300 --delay-ms 10 # through a proxy adding 10 ms each way
#   ./bench.sh --runs 5 --tools mailferry   # options: see examples/bench.rs
#   ./bench.sh --accounts 200 --messages 50 # 200 mailboxes of 50 messages, one config
#   ./bench.sh --size-mb 50                 # one 50 MB message (and 3 small ones)
#   ./bench.sh --kept 50000 --messages 100  # mailferry, retention keep: 50,000 seen + 100 new
#   MAILFERRY_PIPELINING=off ./bench.sh --server courier  # mailferry's POP3 lock-step path
set -euo pipefail
cd "$(dirname "$0")"
scripts/install-deps.sh

extra=()
command -v fetchmail >/dev/null 2>&1 || extra+=(fetchmail)
[ -x /usr/bin/time ] || extra+=(time)
if [ ${#extra[@]} -gt 0 ]; then
    if [ "$(id -u)" -ne 0 ]; then
        echo "bench: missing ${extra[*]}: run as root: sudo $0" >&2
        exit 1
    fi
    echo "bench: apt-get install ${extra[*]}"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${extra[@]}" ||
        { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${extra[@]}"; }
fi

cargo build --release --bins --examples
exec target/release/examples/bench "$@"
