#!/usr/bin/env bash
# Installs what the tests and the demo need on a Debian machine: Dovecot (POP3/IMAP),
# Postfix (for smtp-sink), openssl, and the unprivileged mail user the test servers store
# mail as. Idempotent: when everything is there it changes nothing and takes a moment.
set -euo pipefail

packages=(dovecot-pop3d dovecot-imapd postfix openssl ca-certificates curl)
test_user=mailferry-test

missing=()
for p in "${packages[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q '^install ok installed$'; then
        missing+=("$p")
    fi
done
need_user=0
if ! id -u "$test_user" >/dev/null 2>&1; then
    need_user=1
fi

if [ ${#missing[@]} -eq 0 ] && [ $need_user -eq 0 ]; then
    echo "install-deps: all packages present (${packages[*]}); user $test_user exists"
    exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
    echo "install-deps: missing:" >&2
    [ ${#missing[@]} -gt 0 ] && echo "  packages: ${missing[*]}" >&2
    [ $need_user -eq 1 ] && echo "  user: $test_user" >&2
    echo "install-deps: run as root: sudo $0" >&2
    exit 1
fi

if [ ${#missing[@]} -gt 0 ]; then
    export DEBIAN_FRONTEND=noninteractive
    echo "install-deps: preseeding postfix (main_mailer_type = No configuration)"
    echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections
    echo "install-deps: apt-get update"
    apt-get update -q
    echo "install-deps: apt-get install ${missing[*]}"
    apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

if [ $need_user -eq 1 ]; then
    echo "install-deps: creating system user $test_user"
    useradd -r -M -s /usr/sbin/nologin "$test_user"
fi

echo "install-deps: done"
