//! End to end against Cyrus (IMAP and POP3, cyrus-imapd 3.6 unpacked from Debian), the third
//! real upstream: the catch-all tests that matter most (delete after delivery, keep with
//! retention) and the configured `folder` found whichever hierarchy separator the server uses
//! (`.` as Cyrus traditionally has it, `/` with `unixhierarchysep`) and the account writes.

mod support;

use support::{
    Cyrus, CyrusSeparator, SmtpSink, Tally, catchall_retention_delete, pop3_retention_keep,
    sample_catchall_mail, sample_catchall_pairs, upstream_config, upstream_pass,
};

/// A `user@domain` login: Cyrus's `virtdomains` maps it to the domain's mailboxes.
const USER: &str = "catchall@example.com";
/// Characters that break naive quoting in IMAP LOGIN, and non-ASCII.
const PASS: &str = r#"cyr<&>'"\pässwort"#;

#[test]
fn pop3_catchall_retention_delete() {
    if support::skip_e2e() {
        return;
    }
    catchall_retention_delete(&Cyrus::start(&[(USER, PASS)]), (USER, PASS), "pop3");
}

#[test]
fn imap_catchall_retention_delete() {
    if support::skip_e2e() {
        return;
    }
    catchall_retention_delete(&Cyrus::start(&[(USER, PASS)]), (USER, PASS), "imap");
}

#[test]
fn pop3_retention_keep_delivers_each_message_once_and_keeps_it() {
    if support::skip_e2e() {
        return;
    }
    // Cyrus's UIDLs (UIDVALIDITY.UID) are stable across sessions.
    pop3_retention_keep(&Cyrus::start(&[(USER, PASS)]), (USER, PASS));
}

/// The sample mail in INBOX and in the subfolder `Support` of a Cyrus with `separator`; the
/// account names the folder `configured`. The subfolder is collected and emptied, INBOX is
/// left alone.
fn subfolder_collected(separator: CyrusSeparator, configured: &str) {
    let cyrus = Cyrus::start_with(&[(USER, PASS)], separator);
    let folder = format!("INBOX{}Support", cyrus.separator());
    cyrus.create_folder(USER, &folder);
    let sink = SmtpSink::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    let mail = sample_catchall_mail();
    cyrus.deliver_all(USER, &mail);
    cyrus.deliver_all_to(USER, &folder, &mail);
    let folder_line = format!("folder: {configured}");
    let config = upstream_config(
        dir.path(),
        &cyrus,
        (USER, PASS),
        &sink,
        "imap",
        &[&folder_line],
    );
    upstream_pass(&config, &cyrus);
    let tally = Tally::of(&sample_catchall_pairs(), &sink.transactions());
    assert!(tally.exact(), "{configured} on {folder}: {tally}");
    assert_eq!(cyrus.count_in(USER, &folder), 0, "{folder} not emptied");
    assert_eq!(cyrus.count(USER), mail.len(), "INBOX must be left alone");
}

#[test]
fn imap_subfolder_on_a_dot_separator_server_given_with_a_slash() {
    if support::skip_e2e() {
        return;
    }
    subfolder_collected(CyrusSeparator::Dot, "INBOX/Support");
}

#[test]
fn imap_subfolder_on_a_slash_separator_server_given_with_a_dot() {
    if support::skip_e2e() {
        return;
    }
    subfolder_collected(CyrusSeparator::Slash, "INBOX.Support");
}

#[test]
fn imap_subfolder_on_a_slash_separator_server_given_as_the_server_spells_it() {
    if support::skip_e2e() {
        return;
    }
    subfolder_collected(CyrusSeparator::Slash, "INBOX/Support");
}
