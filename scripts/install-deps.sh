#!/usr/bin/env bash
# Installs what the tests and the demo need on a Debian machine: Dovecot (POP3/IMAP),
# Cyrus (IMAP/POP3, unpacked),
# Courier (POP3/IMAP, unpacked: see below), Postfix (for smtp-sink), openssl, microsocks and
# tinyproxy (the proxy tests), PostgreSQL's server binaries (tests/support/postgres.rs runs a
# private server from /usr/lib/postgresql/VERSION/bin; the system cluster is left stopped),
# systemd's systemd-analyze, binutils and cargo-deb (tests/deploy.rs:
# the unit, the Debian package, the container image), Cyrus SASL's
# sample server with its NTLM module (tests/sasl.rs: Debian's Dovecot has no NTLM), chromium
# (tests/operations.rs loads the status page in it, headless), and the unprivileged mail user
# the test servers store mail as. Idempotent: when everything is there
# it changes nothing and takes a moment.
set -euo pipefail

# Courier's authentication daemon (with its userdb module) and the libraries Courier's POP3 and
# IMAP servers link against. The servers themselves conflict with Dovecot's packages in apt,
# so they are unpacked into $courier_dir instead (tests/support/courier.rs runs them there).
courier_packages=(courier-authdaemon courier-authlib-userdb libcourier-unicode4 libidn12 libgamin0
    libgdbm6 libpcre3)
# The libraries Cyrus's servers link against beyond the ones already here. cyrus-imapd and
# cyrus-pop3d conflict with Dovecot's packages (imap-server, pop3-server): they are unpacked
# with cyrus-common into $cyrus_dir (tests/support/cyrus.rs runs them there, with sasldb
# logins made by saslpasswd2 from sasl2-bin).
cyrus_packages=(libxapian30 libical3 libsasl2-modules-db)
# microsocks (SOCKS5) and tinyproxy (HTTP CONNECT): the real proxies of tests/proxy.rs,
# started in the foreground by tests/support/proxy.rs (their own services are not needed).
packages=(dovecot-pop3d dovecot-imapd postfix openssl ca-certificates curl sasl2-bin
    libsasl2-modules microsocks tinyproxy postgresql systemd binutils chromium "${courier_packages[@]}" "${cyrus_packages[@]}")
test_user=mailferry-test
courier_dir=/var/cache/mailferry-tests/courier
courier_unpacked=(courier-base courier-pop courier-imap)
cyrus_dir=/var/cache/mailferry-tests/cyrus
cyrus_unpacked=(cyrus-common cyrus-imapd cyrus-pop3d)
# The Debian package's builder (`cargo deb`), pinned to a version that builds on rustc 1.95;
# compiled once (a few minutes on two cores) into ~/.cargo/bin, kept there.
cargo_deb_version=3.8.0

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
# The unpacked servers, and authdaemond asking the userdb (where the harness puts its users).
need_courier=0
if [ ! -x "$courier_dir/root/usr/sbin/couriertcpd" ] || [ ! -x "$courier_dir/root/usr/bin/imapd" ] ||
    ! grep -q '^authmodulelist=".*authuserdb' /etc/courier/authdaemonrc 2>/dev/null; then
    need_courier=1
fi

need_cargo_deb=0
if ! cargo deb --version 2>/dev/null | grep -qx "cargo-deb $cargo_deb_version"; then
    need_cargo_deb=1
fi

need_cyrus=0
if [ ! -x "$cyrus_dir/root/usr/lib/cyrus/bin/master" ] || [ ! -x "$cyrus_dir/root/usr/lib/cyrus/bin/pop3d" ]; then
    need_cyrus=1
fi

if [ ${#missing[@]} -eq 0 ] && [ $need_user -eq 0 ] && [ $need_courier -eq 0 ] &&
    [ $need_cargo_deb -eq 0 ] && [ $need_cyrus -eq 0 ]; then
    echo "install-deps: all packages present (${packages[*]}); user $test_user exists;" \
        "Courier unpacked in $courier_dir, Cyrus in $cyrus_dir; cargo-deb $cargo_deb_version"
    exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
    echo "install-deps: missing:" >&2
    [ ${#missing[@]} -gt 0 ] && echo "  packages: ${missing[*]}" >&2
    [ $need_user -eq 1 ] && echo "  user: $test_user" >&2
    [ $need_courier -eq 1 ] && echo "  Courier servers in $courier_dir" >&2
    [ $need_cargo_deb -eq 1 ] && echo "  cargo-deb $cargo_deb_version" >&2
    [ $need_cyrus -eq 1 ] && echo "  Cyrus servers in $cyrus_dir" >&2
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
    # The package starts a tinyproxy on 8888 where there is an init system: not wanted here.
    if [[ " ${missing[*]} " == *" tinyproxy "* ]]; then
        service tinyproxy stop >/dev/null 2>&1 || true
    fi
    # Likewise the cluster `main` on 5432: the tests start servers of their own.
    if [[ " ${missing[*]} " == *" postgresql "* ]]; then
        service postgresql stop >/dev/null 2>&1 || true
    fi
fi

if [ $need_user -eq 1 ]; then
    echo "install-deps: creating system user $test_user"
    useradd -r -M -s /usr/sbin/nologin "$test_user"
fi

if [ $need_courier -eq 1 ]; then
    echo "install-deps: unpacking ${courier_unpacked[*]} into $courier_dir/root"
    mkdir -p "$courier_dir/debs"
    rm -rf "$courier_dir/root" "$courier_dir"/debs/*.deb
    # apt-get download writes into the current directory, as the _apt user where it can.
    (cd "$courier_dir/debs" && apt-get download "${courier_unpacked[@]}" 2>&1 ||
        { apt-get update -q && apt-get download "${courier_unpacked[@]}"; })
    for deb in "$courier_dir"/debs/*.deb; do
        dpkg -x "$deb" "$courier_dir/root"
    done
    # authuserdb first: the test users live in /etc/courier/userdb (tests/support/courier.rs);
    # authpam stays for the system's own users.
    sed -i 's/^authmodulelist=.*/authmodulelist="authuserdb authpam"/' /etc/courier/authdaemonrc
    echo "install-deps: restarting courier-authdaemon"
    service courier-authdaemon restart >/dev/null || true
fi

if [ $need_cyrus -eq 1 ]; then
    echo "install-deps: unpacking ${cyrus_unpacked[*]} into $cyrus_dir/root"
    mkdir -p "$cyrus_dir/debs"
    rm -rf "$cyrus_dir/root" "$cyrus_dir"/debs/*.deb
    (cd "$cyrus_dir/debs" && apt-get download "${cyrus_unpacked[@]}" 2>&1 ||
        { apt-get update -q && apt-get download "${cyrus_unpacked[@]}"; })
    for deb in "$cyrus_dir"/debs/*.deb; do
        dpkg -x "$deb" "$cyrus_dir/root"
    done
fi

if [ $need_cargo_deb -eq 1 ]; then
    echo "install-deps: cargo install cargo-deb --version $cargo_deb_version --locked"
    cargo install cargo-deb --version "$cargo_deb_version" --locked
fi

echo "install-deps: done"
