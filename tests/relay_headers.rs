//! End to end, Dovecot → mailferry → smtp-sink: the relay never makes a header line the sender
//! did not write, keeps header-less text as body, and leaves an oversized message upstream.

mod support;

use std::path::Path;

use support::{AccountYaml, Dovecot, GatewayConfig, Secret, SmtpSink, poll_once};

const USER: &str = "catchall@example.com";
const PASS: &str = "pop-secret";

/// A configuration for one plain-text catch-all account on `dovecot`, relaying to `sink`.
fn write_config(dir: &Path, dovecot: &Dovecot, sink: &SmtpSink, top_lines: &[&str]) -> String {
    let mut gateway = GatewayConfig::new(dir.join("state"), sink.port())
        .domains(&["example.com"])
        .postmaster("postmaster@corp.local");
    for line in top_lines {
        gateway = gateway.extra_line(line);
    }
    let account = AccountYaml {
        name: "test-account".into(),
        port: dovecot.pop3_port(),
        tls: "none".into(),
        ca_file: Some(dovecot.ca_file()),
        username: USER.into(),
        password: Secret::Inline(PASS.into()),
        ..AccountYaml::default()
    };
    gateway.account(account).write(dir).display().to_string()
}

#[test]
fn a_bare_cr_in_a_header_line_does_not_become_a_header_at_the_receiver() {
    if support::skip_e2e() {
        return;
    }
    let dovecot = Dovecot::start(&[(USER, PASS)]);
    let sink = SmtpSink::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    dovecot.deliver(
        USER,
        b"From: a@remote.test\nTo: bob@example.com\nSubject: hello\rBcc: evil@elsewhere.test\n\
          \nbody\n",
    );
    let config = write_config(dir.path(), &dovecot, &sink, &[]);
    let out = poll_once(&config);
    assert!(out.status.success(), "poll-once failed: {}", dovecot.log());

    let txs = sink.transactions();
    assert_eq!(txs.len(), 1, "{} transactions", txs.len());
    let tx = &txs[0];
    assert_eq!(tx.rcpts, ["bob@example.com"]);
    assert!(
        tx.headers("Bcc").is_empty(),
        "a header the sender did not write: {}",
        String::from_utf8_lossy(tx.header_section())
    );
    assert_eq!(tx.subject(), "hello Bcc: evil@elsewhere.test");
    assert_eq!(tx.body(), b"body\n");
}

#[test]
fn a_message_without_a_header_section_keeps_its_text_as_body() {
    if support::skip_e2e() {
        return;
    }
    let dovecot = Dovecot::start(&[(USER, PASS)]);
    let sink = SmtpSink::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    // Delivered to the postmaster (no recipient in any header): its text must stay body.
    dovecot.deliver(
        USER,
        b"Hello,\nTo: bob@example.com is what I meant\n\nBye\n",
    );
    let config = write_config(dir.path(), &dovecot, &sink, &[]);
    let out = poll_once(&config);
    assert!(out.status.success(), "poll-once failed: {}", dovecot.log());

    let txs = sink.transactions();
    assert_eq!(txs.len(), 1, "{} transactions", txs.len());
    let tx = &txs[0];
    assert_eq!(tx.rcpts, ["postmaster@corp.local"]);
    assert!(tx.headers("To").is_empty(), "{:?}", tx.headers("To"));
    assert_eq!(
        tx.body(),
        b"Hello,\nTo: bob@example.com is what I meant\n\nBye\n"
    );
    assert!(tx.header_section().starts_with(b"Received: from "));
}

#[test]
fn a_message_over_max_message_size_is_left_upstream_and_the_rest_delivered() {
    if support::skip_e2e() {
        return;
    }
    let dovecot = Dovecot::start(&[(USER, PASS)]);
    let sink = SmtpSink::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    let mut big = b"To: bob@example.com\nSubject: big\n\n".to_vec();
    big.extend(std::iter::repeat_n(b"x".repeat(70).into_iter().chain([b'\n']), 100).flatten());
    dovecot.deliver(USER, &big);
    dovecot.deliver(USER, b"To: bob@example.com\nSubject: small\n\nhi\n");
    let config = write_config(dir.path(), &dovecot, &sink, &["max_message_size: 2KiB"]);
    poll_once(&config);

    let txs = sink.transactions();
    let to_bob: Vec<_> = txs
        .iter()
        .filter(|t| t.rcpts == ["bob@example.com"])
        .collect();
    let subjects: Vec<String> = txs.iter().map(|t| t.subject()).collect();
    assert_eq!(to_bob.len(), 1, "subjects relayed: {subjects:?}");
    assert_eq!(to_bob[0].subject(), "small");
    // The big one is still upstream, the small one gone.
    assert_eq!(dovecot.count(USER), 1);
}
