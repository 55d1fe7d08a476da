//! End to end against Courier (POP3 and IMAP, courier-pop 1.0.16 unpacked from Debian), the
//! second real upstream: the catch-all checks of `support/upstream.rs` that matter most
//! (delete after delivery, keep with retention) against a server with other habits than
//! Dovecot's. Plain text: Courier runs here without its TLS wrapper.

mod support;

use support::{Courier, catchall_retention_delete, pop3_retention_keep};

const USER: &str = "catchall@example.com";
/// Characters that break naive quoting in IMAP LOGIN, and non-ASCII.
const PASS: &str = r#"cour<&>'"\pässwort"#;

#[test]
fn pop3_catchall_retention_delete() {
    if support::skip_e2e() {
        return;
    }
    catchall_retention_delete(&Courier::start(&[(USER, PASS)]), (USER, PASS), "pop3");
}

#[test]
fn imap_catchall_retention_delete() {
    if support::skip_e2e() {
        return;
    }
    catchall_retention_delete(&Courier::start(&[(USER, PASS)]), (USER, PASS), "imap");
}

#[test]
fn pop3_retention_keep_delivers_each_message_once_and_keeps_it() {
    if support::skip_e2e() {
        return;
    }
    pop3_retention_keep(&Courier::start(&[(USER, PASS)]), (USER, PASS));
}
