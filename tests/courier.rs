//! End to end against Courier (POP3 and IMAP, courier-pop 1.0.16 unpacked from Debian), the
//! second real upstream: the catch-all tests of `pop3_gateway.rs` and `imap_gateway.rs` that
//! matter most (delete after delivery, keep with retention) against a server with other
//! habits than Dovecot's. Plain text: Courier runs here without its TLS wrapper.

mod support;

use std::path::Path;

use support::{
    AccountYaml, Courier, GatewayConfig, Secret, SmtpSink, Tally, numbered_message, numbered_pairs,
    poll_once, sample_catchall_mail, sample_catchall_pairs,
};

const USER: &str = "catchall@example.com";
/// Characters that break naive quoting in IMAP LOGIN, and non-ASCII.
const PASS: &str = r#"cour<&>'"\pässwort"#;

/// A configuration with the catch-all account on Courier over `protocol` (`pop3` or `imap`),
/// then `extra_lines`, relaying to `sink`; returns its path.
fn write_config(
    dir: &Path,
    courier: &Courier,
    sink: &SmtpSink,
    protocol: &str,
    extra_lines: &[&str],
) -> String {
    let port = match protocol {
        "imap" => courier.imap_port(),
        _ => courier.pop3_port(),
    };
    let mut extra = vec!["poll_interval: 5s".to_owned()];
    extra.extend(extra_lines.iter().map(|l| l.to_string()));
    let account = AccountYaml {
        name: format!("courier-{protocol}"),
        protocol: protocol.into(),
        port,
        tls: "none".into(),
        username: USER.into(),
        // The YAML single-quoted form: only ' needs doubling.
        password: Secret::Inline(format!("'{}'", PASS.replace('\'', "''"))),
        extra_lines: extra,
        ..AccountYaml::default()
    };
    GatewayConfig::new(dir.join("state"), sink.port())
        .account(account)
        .write(dir)
        .display()
        .to_string()
}

/// One pass; panics with mailferry's and Courier's output when it fails.
fn pass(config: &str, courier: &Courier) {
    let out = poll_once(config);
    assert!(
        out.status.success(),
        "poll-once failed\n{}\n--- Courier\n{}",
        String::from_utf8_lossy(&out.stderr),
        courier.log()
    );
}

/// The sample catch-all mailbox: every copy reaches exactly its recipients, the mailbox is
/// emptied, and a second pass relays nothing.
fn catchall_retention_delete(protocol: &str) {
    let courier = Courier::start(&[(USER, PASS)]);
    let sink = SmtpSink::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    courier.deliver_all(USER, &sample_catchall_mail());
    let config = write_config(dir.path(), &courier, &sink, protocol, &[]);
    pass(&config, &courier);
    let tally = Tally::of(&sample_catchall_pairs(), &sink.transactions());
    assert!(tally.exact(), "{protocol}: {tally}");
    assert_eq!(courier.count(USER), 0, "{protocol}: mailbox not emptied");
    let before = sink.transactions().len();
    pass(&config, &courier);
    assert_eq!(
        sink.transactions().len(),
        before,
        "{protocol}: the second pass relayed again"
    );
}

#[test]
fn pop3_catchall_retention_delete() {
    if support::skip_e2e() {
        return;
    }
    catchall_retention_delete("pop3");
}

#[test]
fn imap_catchall_retention_delete() {
    if support::skip_e2e() {
        return;
    }
    catchall_retention_delete("imap");
}

#[test]
fn pop3_retention_keep_delivers_each_message_once_and_keeps_it() {
    if support::skip_e2e() {
        return;
    }
    let courier = Courier::start(&[(USER, PASS)]);
    let sink = SmtpSink::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    for i in 0..5 {
        courier.deliver(USER, &numbered_message(i));
    }
    let config = write_config(
        dir.path(),
        &courier,
        &sink,
        "pop3",
        &["retention: keep", "initial: deliver_all"],
    );
    for _ in 0..3 {
        pass(&config, &courier);
    }
    assert_eq!(sink.transactions().len(), 5);
    assert_eq!(
        courier.count(USER),
        5,
        "retention keep must keep everything"
    );

    // A new message arrives: the next pass delivers only that one (Courier's UIDLs are
    // stable across sessions).
    courier.deliver(USER, &numbered_message(5));
    pass(&config, &courier);
    let tally = Tally::of(&numbered_pairs(6), &sink.transactions());
    assert!(tally.exact(), "{tally}");
    assert_eq!(courier.count(USER), 6);
}
