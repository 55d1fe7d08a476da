//! Whether the end-to-end tests can run here, and the one message that says how to run them
//! when they cannot.
//!
//! They need root (Dovecot switches to the mail user, smtp-sink runs with `-u`), the system
//! user [`MAIL_USER`](super::MAIL_USER) and the servers that `scripts/install-deps.sh`
//! installs. A plain `cargo test` without them skips these tests; `scripts/test.sh` sets
//! `MAILFERRY_E2E=1`, and then anything missing is a failure, never a skip.

use std::io::Write;
use std::path::Path;
use std::sync::Once;

use super::{MAIL_USER, is_root, user_ids};

/// The variable that makes the end-to-end tests compulsory (`MAILFERRY_E2E=1`).
pub const E2E_VAR: &str = "MAILFERRY_E2E";

/// True when the calling end-to-end test should return at once: what it needs is missing
/// and `MAILFERRY_E2E` is not `1`. Says so once per test binary, on stderr past the test
/// harness's capture (a skipped test still shows "ok"). Panics, naming what is missing,
/// when `MAILFERRY_E2E=1`.
///
/// Every test that starts a real server begins with:
///
/// ```ignore
/// if support::skip_e2e() {
///     return;
/// }
/// ```
pub fn skip_e2e() -> bool {
    let missing = missing();
    if missing.is_empty() {
        return false;
    }
    let missing = missing.join(", ");
    if std::env::var(E2E_VAR).as_deref() == Ok("1") {
        panic!("{E2E_VAR}=1 but the end-to-end tests cannot run here: {missing}");
    }
    static SAID: Once = Once::new();
    SAID.call_once(|| {
        // Straight to stderr: eprintln! output of a passing test is swallowed.
        let _ = writeln!(
            std::io::stderr(),
            "\nskipping the end-to-end tests (real Dovecot and smtp-sink): {missing}.\n\
             Run them with `sudo scripts/test.sh` (installs the servers and runs every test), \
             or `cargo test` as root after `scripts/install-deps.sh`.\n"
        );
    });
    true
}

/// What the end-to-end tests need and this machine lacks, in words.
fn missing() -> Vec<String> {
    let mut missing = Vec::new();
    if !is_root() {
        missing.push("not running as root".to_owned());
    }
    if user_ids(MAIL_USER).is_none() {
        missing.push(format!("no system user {MAIL_USER}"));
    }
    let servers = [
        ("dovecot", in_path("dovecot")),
        ("smtp-sink", Path::new("/usr/sbin/smtp-sink").exists()),
        ("postfix", Path::new("/usr/sbin/postfix").exists()),
        ("postgresql", super::postgres_bin_dir().is_some()),
        (
            "Courier (unpacked) and courier-authdaemon",
            Path::new(super::courier::COURIER_ROOT)
                .join("usr/sbin/couriertcpd")
                .exists()
                && in_path("makeuserdb"),
        ),
    ];
    for (name, found) in servers {
        if !found {
            missing.push(format!("{name} not installed"));
        }
    }
    missing
}

/// Whether `program` is in a directory of PATH (or /usr/sbin, missing from some users' PATH
/// but where Debian puts dovecot).
fn in_path(program: &str) -> bool {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([Path::new("/usr/sbin").to_path_buf()])
        .any(|dir| dir.join(program).is_file())
}
