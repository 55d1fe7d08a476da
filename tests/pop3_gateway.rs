//! End to end: a real Dovecot (POP3) upstream, a real SMTP receiver (Postfix's smtp-sink),
//! the real `mailferry` binary in between.

mod support;

use std::collections::BTreeMap;
use std::path::Path;

use support::{
    AccountYaml, Dovecot, GatewayConfig, Mailferry, Secret, SmtpSink, as_sink_stores, message,
    poll_once,
};

const USER: &str = "catchall@example.com";
const PASS: &str = "pop-secret";

/// How the account reaches Dovecot.
#[derive(Clone, Copy)]
enum Link {
    Plain,
    Stls,
    Implicit,
}

/// The catch-all account `test-account` on `dovecot` (poll interval 5 s, `extra_lines` after).
fn account(dovecot: &Dovecot, link: Link, extra_lines: &[&str]) -> AccountYaml {
    let (port, tls) = match link {
        Link::Plain => (dovecot.pop3_port(), "none"),
        Link::Stls => (dovecot.pop3_port(), "starttls"),
        Link::Implicit => (dovecot.pop3s_port(), "tls"),
    };
    let mut extra = vec!["poll_interval: 5s".to_owned()];
    extra.extend(extra_lines.iter().map(|l| l.to_string()));
    AccountYaml {
        name: "test-account".into(),
        port,
        tls: tls.into(),
        ca_file: Some(dovecot.ca_file()),
        username: USER.into(),
        password: Secret::Inline(PASS.into()),
        extra_lines: extra,
        ..AccountYaml::default()
    }
}

/// A configuration relaying to `sink`, without accounts, its state under `dir`.
fn gateway(dir: &Path, sink: &SmtpSink) -> GatewayConfig {
    GatewayConfig::new(dir.join("state"), sink.port())
        .domains(&["example.com", "*.example.org"])
        .postmaster("postmaster@corp.local")
}

/// Writes a configuration for one account into `dir` and returns its path.
fn write_config(
    dir: &Path,
    dovecot: &Dovecot,
    sink: &SmtpSink,
    link: Link,
    account_extra: &[&str],
) -> String {
    let path = gateway(dir, sink)
        .account(account(dovecot, link, account_extra))
        .write(dir);
    path.display().to_string()
}

/// Removes mailferry's own trace header (the first header of every relayed copy).
fn strip_trace(message: &[u8]) -> &[u8] {
    assert!(
        message.starts_with(b"Received: from "),
        "no trace header on top"
    );
    let mut pos = 0;
    loop {
        let end = pos + message[pos..].iter().position(|&b| b == b'\n').unwrap() + 1;
        pos = end;
        if !matches!(message.get(pos), Some(b' ') | Some(b'\t')) {
            return &message[pos..];
        }
    }
}

/// recipient -> every message body it received.
fn received_by(sink: &SmtpSink) -> BTreeMap<String, Vec<Vec<u8>>> {
    let mut map: BTreeMap<String, Vec<Vec<u8>>> = BTreeMap::new();
    for tx in sink.transactions() {
        for rcpt in &tx.rcpts {
            map.entry(rcpt.clone())
                .or_default()
                .push(strip_trace(&tx.message).to_vec());
        }
    }
    map
}

fn envelope_copy(rcpt: &str, header: &str, subject: &str, body: &str) -> Vec<u8> {
    message(
        &[
            ("Return-Path", "<sender@remote.test>"),
            (header, rcpt),
            (
                "Received",
                "from mx.remote.test by pop.provider.net; Mon, 2 Nov 2026 10:00:00 +0000",
            ),
            ("From", "Sender <sender@remote.test>"),
            ("To", "team@example.com, boss@example.com"),
            ("Subject", subject),
            ("Message-ID", "<one@remote.test>"),
        ],
        body,
    )
}

fn catchall_with_envelope_copies(link: Link) {
    let dovecot = Dovecot::start(&[(USER, PASS)]);
    let sink = SmtpSink::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    let body = "Hello.\n.leading dot\n..two dots\n.\nUTF-8: Grüße, 日本\n";
    let copies = [
        envelope_copy("alice@example.com", "X-Original-To", "to alice", body),
        envelope_copy("bob@Example.COM", "Delivered-To", "to bob", body),
        envelope_copy("carol@sales.example.org", "X-Original-To", "to carol", body),
    ];
    for c in &copies {
        dovecot.deliver(USER, c);
    }
    let config = write_config(dir.path(), &dovecot, &sink, link, &[]);
    let out = poll_once(&config);
    assert!(out.status.success(), "poll-once failed: {}", dovecot.log());

    let got = received_by(&sink);
    let expected: BTreeMap<String, Vec<Vec<u8>>> = [
        ("alice@example.com", &copies[0]),
        ("bob@example.com", &copies[1]),
        ("carol@sales.example.org", &copies[2]),
    ]
    .into_iter()
    .map(|(r, m)| (r.to_string(), vec![as_sink_stores(m)]))
    .collect();
    assert_eq!(
        got.keys().collect::<Vec<_>>(),
        expected.keys().collect::<Vec<_>>()
    );
    for (rcpt, bodies) in &expected {
        assert_eq!(got[rcpt], *bodies, "{rcpt} got other bytes than were sent");
    }
    for tx in sink.transactions() {
        assert_eq!(tx.mail_from, "sender@remote.test");
        assert_eq!(tx.rcpts.len(), 1, "one recipient per envelope copy");
    }
    assert_eq!(dovecot.count(USER), 0, "mailbox not emptied");
}

#[test]
fn catchall_envelope_copies_plain() {
    if support::skip_e2e() {
        return;
    }
    catchall_with_envelope_copies(Link::Plain);
}

#[test]
fn catchall_envelope_copies_stls() {
    if support::skip_e2e() {
        return;
    }
    catchall_with_envelope_copies(Link::Stls);
}

#[test]
fn catchall_envelope_copies_implicit_tls() {
    if support::skip_e2e() {
        return;
    }
    catchall_with_envelope_copies(Link::Implicit);
}

#[test]
fn catchall_without_envelope_headers_uses_to_and_cc_once_each() {
    if support::skip_e2e() {
        return;
    }
    let dovecot = Dovecot::start(&[(USER, PASS)]);
    let sink = SmtpSink::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    let m = message(
        &[
            ("Return-Path", "<>"),
            ("From", "Partner <p@partner.test>"),
            ("To", "Alice <alice@example.com>, outsider@partner.test"),
            ("Cc", "ALICE@example.com, \"Bob B.\" <bob@example.com>"),
            ("Subject", "no envelope"),
        ],
        "body\n",
    );
    dovecot.deliver(USER, &m);
    let config = write_config(dir.path(), &dovecot, &sink, Link::Stls, &[]);
    assert!(poll_once(&config).status.success());

    let txs = sink.transactions();
    assert_eq!(txs.len(), 1, "one transaction for one message");
    let mut rcpts: Vec<String> = txs[0].rcpts.iter().map(|r| r.to_lowercase()).collect();
    rcpts.sort();
    assert_eq!(rcpts, ["alice@example.com", "bob@example.com"]);
    assert_eq!(txs[0].mail_from, "", "<> stays <>");
    assert_eq!(strip_trace(&txs[0].message), &as_sink_stores(&m)[..]);
    assert_eq!(dovecot.count(USER), 0);
}

#[test]
fn single_user_mailbox_and_postmaster_fallback() {
    if support::skip_e2e() {
        return;
    }
    let dovecot = Dovecot::start(&[(USER, PASS), ("jane", "jane-pw")]);
    let sink = SmtpSink::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    let for_jane = message(
        &[
            ("From", "x@remote.test"),
            ("To", "someone@elsewhere.test"),
            ("Subject", "for jane"),
        ],
        "hi jane\n",
    );
    let foreign = message(
        &[
            ("From", "x@remote.test"),
            ("To", "nobody@elsewhere.test"),
            ("Subject", "foreign"),
        ],
        "nobody local\n",
    );
    dovecot.deliver("jane", &for_jane);
    dovecot.deliver(USER, &foreign);

    // A second account: single-user, on the same Dovecot.
    let jane = AccountYaml {
        name: "jane".into(),
        port: dovecot.pop3_port(),
        tls: "starttls".into(),
        ca_file: Some(dovecot.ca_file()),
        username: "jane".into(),
        password: Secret::Inline("jane-pw".into()),
        extra_lines: vec![
            "mode: single-user".into(),
            "deliver_to: jane.doe@corp.local".into(),
        ],
        ..AccountYaml::default()
    };
    let config = gateway(dir.path(), &sink)
        .account(account(&dovecot, Link::Stls, &[]))
        .account(jane)
        .write(dir.path());
    let config = config.display().to_string();
    assert!(poll_once(&config).status.success());

    let got = received_by(&sink);
    assert_eq!(got.len(), 2, "{:?}", got.keys());
    assert_eq!(got["jane.doe@corp.local"], vec![as_sink_stores(&for_jane)]);
    assert_eq!(got["postmaster@corp.local"], vec![as_sink_stores(&foreign)]);
    assert_eq!(dovecot.count(USER), 0);
    assert_eq!(dovecot.count("jane"), 0);
}

fn numbered(i: usize) -> Vec<u8> {
    message(
        &[
            ("X-Original-To", &format!("user{i}@example.com")),
            ("Received", "from a by b; Mon, 2 Nov 2026 10:00:00 +0000"),
            ("From", "s@remote.test"),
            ("Subject", &format!("message {i}")),
        ],
        &format!("body {i}\n"),
    )
}

#[test]
fn max_per_pass_caps_each_pass() {
    if support::skip_e2e() {
        return;
    }
    let dovecot = Dovecot::start(&[(USER, PASS)]);
    let sink = SmtpSink::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    for i in 0..120 {
        dovecot.deliver(USER, &numbered(i));
    }
    let config = write_config(
        dir.path(),
        &dovecot,
        &sink,
        Link::Plain,
        &["max_per_pass: 50"],
    );
    assert!(poll_once(&config).status.success());
    assert_eq!(dovecot.count(USER), 70);
    assert_eq!(sink.transactions().len(), 50);
    assert!(poll_once(&config).status.success());
    assert_eq!(dovecot.count(USER), 20);
    assert!(poll_once(&config).status.success());
    assert_eq!(dovecot.count(USER), 0);

    // Every message reached its own recipient exactly once.
    let got = received_by(&sink);
    assert_eq!(got.len(), 120);
    assert!(got.values().all(|v| v.len() == 1));
}

#[test]
fn retention_days_keeps_mail_upstream_and_never_delivers_twice() {
    if support::skip_e2e() {
        return;
    }
    let dovecot = Dovecot::start(&[(USER, PASS)]);
    let sink = SmtpSink::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    for i in 0..5 {
        dovecot.deliver(USER, &numbered(i));
    }
    let config = write_config(
        dir.path(),
        &dovecot,
        &sink,
        Link::Stls,
        &["retention: 14d", "initial: deliver_all"],
    );
    for _ in 0..3 {
        assert!(poll_once(&config).status.success());
    }
    assert_eq!(sink.transactions().len(), 5);
    assert_eq!(
        dovecot.count(USER),
        5,
        "retention 14d must keep everything upstream"
    );

    // A new message arrives; the daemon (a restart: a new process) delivers only that one.
    dovecot.deliver(USER, &numbered(5));
    let daemon = Mailferry::spawn(&["run", "--config", &config]);
    // The daemon itself must deliver it: the poll-once below would otherwise hide a daemon
    // that delivered nothing.
    let by_daemon = sink.wait_for(6, std::time::Duration::from_secs(30));
    assert_eq!(
        by_daemon.len(),
        6,
        "the daemon did not deliver the new message within 30 s"
    );
    let out = daemon
        .terminate(std::time::Duration::from_secs(30))
        .expect("the daemon did not stop on SIGTERM");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(poll_once(&config).status.success());

    let got = received_by(&sink);
    assert_eq!(got.len(), 6);
    assert!(
        got.values().all(|v| v.len() == 1),
        "a message was delivered twice"
    );
    assert_eq!(dovecot.count(USER), 6);
}

#[test]
fn refused_data_deletes_nothing_upstream_and_quarantines() {
    if support::skip_e2e() {
        return;
    }
    let dovecot = Dovecot::start(&[(USER, PASS)]);
    // Every DATA refused for good: the messages, then their copies to the postmaster.
    let sink = SmtpSink::start(&["-f", "data"]);
    let dir = tempfile::tempdir().unwrap();
    for i in 0..3 {
        dovecot.deliver(USER, &numbered(i));
    }
    let config = write_config(dir.path(), &dovecot, &sink, Link::Stls, &[]);
    let out = poll_once(&config);
    assert_eq!(
        out.status.code(),
        Some(0),
        "refused for good everywhere: settled in quarantine, not a failure to retry"
    );
    assert_eq!(
        dovecot.count(USER),
        3,
        "a refused message was deleted upstream"
    );
    let listed = support::run_mailferry(&["state", "list", "--config", &config]);
    let listed = String::from_utf8_lossy(&listed.stdout).into_owned();
    assert_eq!(listed.lines().count(), 3, "three in quarantine: {listed}");
    // A second pass neither tries them again nor deletes them.
    assert_eq!(poll_once(&config).status.code(), Some(0));
    assert_eq!(dovecot.count(USER), 3);
    assert_eq!(sink.transactions().len(), 0);
}

#[test]
fn wrong_password_fails_the_pass_without_leaking_it() {
    if support::skip_e2e() {
        return;
    }
    let dovecot = Dovecot::start(&[(USER, PASS)]);
    let sink = SmtpSink::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    dovecot.deliver(USER, &numbered(0));
    // The password must appear in no output, whatever fails.
    let config = gateway(dir.path(), &sink)
        .account(AccountYaml {
            tls: "starttls-if-available".into(),
            password: Secret::Inline("wrong-password".into()),
            ..account(&dovecot, Link::Stls, &[])
        })
        .write(dir.path());
    let config = config.display().to_string();
    let out = poll_once(&config);
    assert_eq!(out.status.code(), Some(1));
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!all.contains("wrong-password"), "password leaked: {all}");
    assert_eq!(dovecot.count(USER), 1);
}

#[test]
fn auth_apop_logs_in_with_the_digest_over_plain_text_and_stls() {
    if support::skip_e2e() {
        return;
    }
    // Dovecot offers APOP (`auth_mechanisms = ... apop`, plaintext passwords in its passdb):
    // its greeting carries the timestamp.
    let dovecot = Dovecot::start(&[(USER, PASS)]);
    for (i, link) in [Link::Plain, Link::Stls].into_iter().enumerate() {
        let sink = SmtpSink::start(&[]);
        let dir = tempfile::tempdir().unwrap();
        dovecot.deliver(USER, &numbered(i));
        let config = write_config(dir.path(), &dovecot, &sink, link, &["auth: apop"]);
        let out = poll_once(&config);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{stderr}\n{}", dovecot.log());
        assert_eq!(sink.transactions().len(), 1);
        assert_eq!(dovecot.count(USER), 0);
        assert!(!stderr.contains(PASS), "password leaked: {stderr}");
    }
    // Both logins were APOP (Dovecot names the mechanism), none USER/PASS.
    let log = dovecot.log();
    let logins: Vec<&str> = log.lines().filter(|l| l.contains("Login: user=")).collect();
    assert_eq!(logins.len(), 2, "{log}");
    assert!(
        logins.iter().all(|l| l.contains("method=APOP")),
        "{logins:#?}"
    );
}
