//! End to end against Cyrus (IMAP and POP3, cyrus-imapd 3.6 unpacked from Debian), the third
//! real upstream: the catch-all tests that matter most (delete after delivery, keep with
//! retention), the configured `folder` found whichever hierarchy separator the server uses
//! (`.` as Cyrus traditionally has it, `/` with `unixhierarchysep`) and the account writes,
//! and NTLM (`spa: true`): Cyrus SASL's NTLM server is the real server that checks
//! mailferry's NTLMv2 here (Debian's Dovecot has NTLM only through Samba's winbind).

mod support;

use support::{
    Cyrus, CyrusSeparator, SmtpSink, Tally, catchall_retention_delete,
    catchall_retention_delete_with, poll_once, pop3_retention_keep, sample_catchall_mail,
    sample_catchall_pairs, upstream_config, upstream_pass,
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

/// What the NTLM tests' Cyrus offers: NTLM, the strongest of these, and the plain-text pair.
const NTLM_OFFER: &[&str] = &["PLAIN", "LOGIN", "NTLM"];
/// An ASCII password for NTLM: Cyrus SASL turns the stored password into UTF-16 a byte at a
/// time, so a non-ASCII one never matches an NTLM answer (MS-NLMP's UTF-16 of the text).
const NTLM_PASS: &str = r#"ntlm<&>'"\secret"#;

/// How mailferry names the NTLM login over `protocol`.
fn ntlm_shown(protocol: &str) -> &'static str {
    match protocol {
        "imap" => "AUTHENTICATE NTLM",
        _ => "AUTH NTLM",
    }
}

/// The sample catch-all mailbox delivered from a Cyrus that offers NTLM, with the account's
/// `restriction` line (none: the strongest offered), and every login of both passes made
/// with NTLM (mailferry logs the method once per connection).
fn ntlm_catchall(protocol: &str, restriction: Option<&str>) {
    let cyrus = Cyrus::start_offering(&[(USER, NTLM_PASS)], NTLM_OFFER);
    let extra: Vec<&str> = restriction.into_iter().collect();
    let logs = catchall_retention_delete_with(&cyrus, (USER, NTLM_PASS), protocol, &extra);
    let shown = format!("logged in with {}", ntlm_shown(protocol));
    for log in logs {
        let logins = log.matches("logged in with ").count();
        assert!(logins >= 1, "no login logged: {log}");
        assert_eq!(
            log.matches(&shown).count(),
            logins,
            "{restriction:?}: {log}"
        );
    }
}

#[test]
fn pop3_spa_delivers_with_ntlm() {
    if support::skip_e2e() {
        return;
    }
    ntlm_catchall("pop3", Some("spa: true"));
}

#[test]
fn imap_spa_delivers_with_ntlm() {
    if support::skip_e2e() {
        return;
    }
    ntlm_catchall("imap", Some("spa: true"));
}

#[test]
fn pop3_auth_mechanisms_ntlm_delivers() {
    if support::skip_e2e() {
        return;
    }
    ntlm_catchall("pop3", Some("auth_mechanisms: [ntlm]"));
}

#[test]
fn imap_auth_mechanisms_ntlm_delivers() {
    if support::skip_e2e() {
        return;
    }
    ntlm_catchall("imap", Some("auth_mechanisms: [ntlm]"));
}

#[test]
fn without_a_restriction_ntlm_is_chosen_over_plain() {
    if support::skip_e2e() {
        return;
    }
    for protocol in ["pop3", "imap"] {
        ntlm_catchall(protocol, None);
    }
}

#[test]
fn a_wrong_password_over_ntlm_is_refused_and_nothing_deleted() {
    if support::skip_e2e() {
        return;
    }
    let cyrus = Cyrus::start_offering(&[(USER, NTLM_PASS)], NTLM_OFFER);
    let mail = sample_catchall_mail();
    cyrus.deliver_all(USER, &mail);
    for protocol in ["pop3", "imap"] {
        let sink = SmtpSink::start(&[]);
        let dir = tempfile::tempdir().unwrap();
        let login = (USER, "not-the-password");
        let config = upstream_config(dir.path(), &cyrus, login, &sink, protocol, &["spa: true"]);
        let out = poll_once(&config);
        let output = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(!out.status.success(), "{protocol}: {output}");
        let refused = format!("authentication failed ({})", ntlm_shown(protocol));
        assert!(output.contains(&refused), "{protocol}: {output}");
        assert!(!output.contains("logged in with"), "{protocol}: {output}");
        assert!(sink.transactions().is_empty(), "{protocol}: relayed");
        assert_eq!(
            cyrus.count(USER),
            mail.len(),
            "{protocol}: deleted upstream"
        );
    }
}
