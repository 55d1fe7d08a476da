//! Acceptance for issue 6, items 1 and 2: nothing may leave for a foreign domain.
//!
//! The internal server is a real, private Postfix whose `mynetworks` trusts loopback and that
//! takes `%`, `!` and a quoted `@` in a local part as routing, as a default Postfix does
//! ([`Postfix`]): its "outside" smtp-sink receives whatever it would relay to the Internet.
//! Upstream is a real Dovecot; mailferry is the real binary.

mod support;

use std::time::Duration;

use support::{AccountYaml, Dovecot, GatewayConfig, Postfix, Secret, message, poll_once};

const USER: &str = "catchall@example.com";
const PASS: &str = "pop-secret";
const POSTMASTER: &str = "postmaster@example.com";

/// The addresses that a default Postfix relays outside when given them as RCPT.
const SOURCE_ROUTED: [&str; 3] = [
    "evil%x.com@example.com",
    "x.com!evil@example.com",
    "\"evil@x.com\"@example.com",
];

fn account(dovecot: &Dovecot) -> AccountYaml {
    AccountYaml {
        name: "catchall".into(),
        port: dovecot.pop3_port(),
        tls: "none".into(),
        username: USER.into(),
        password: Secret::Inline(PASS.into()),
        ..AccountYaml::default()
    }
}

/// The message `n` of the mailbox: `headers` plus a subject naming it.
fn mail(n: usize, headers: &[(&str, &str)]) -> Vec<u8> {
    let subject = format!("case {n}");
    let mut all = vec![
        ("Return-Path", "<sender@remote.test>"),
        ("From", "Sender <sender@remote.test>"),
        ("Subject", subject.as_str()),
    ];
    all.extend_from_slice(headers);
    message(&all, &format!("body of case {n}\n"))
}

/// The control: this Postfix really relays such addresses outside when given them directly,
/// so the test below would see the bug.
#[test]
fn control_postfix_relays_source_routed_addresses_outside() {
    if support::skip_e2e() {
        return;
    }
    let postfix = Postfix::start(&["example.com"]);
    let replies = postfix.send_direct(
        "sender@remote.test",
        &SOURCE_ROUTED,
        "Subject: control\r\n\r\nbody\r\n",
    );
    assert!(replies.iter().all(|r| r.starts_with("250")), "{replies:?}");
    assert!(
        postfix.wait_queue_empty(Duration::from_secs(30)),
        "{}",
        postfix.log()
    );
    let mut outside: Vec<String> = postfix
        .outside
        .transactions()
        .into_iter()
        .flat_map(|tx| tx.rcpts)
        .collect();
    outside.sort();
    assert_eq!(
        outside,
        ["evil@x.com", "evil@x.com", "evil@x.com"],
        "{}",
        postfix.log()
    );
}

/// The mailbox: source-routed addresses in every form, next to rightful recipients.
fn mailbox() -> Vec<Vec<u8>> {
    let mut invalid_utf8 = mail(6, &[("Cc", "erin@example.com")]);
    // An address with a byte that is not UTF-8 (item 2): refused, never guessed at.
    let to = b"To: b\xffd@example.com\n";
    invalid_utf8.splice(0..0, to.iter().copied());
    vec![
        mail(0, &[("To", "evil%x.com@example.com, alice@example.com")]),
        mail(1, &[("To", "x.com!evil@example.com")]),
        mail(2, &[("Cc", "\"evil@x.com\"@example.com, bob@example.com")]),
        mail(3, &[("To", "Eve <@example.com:evil@x.com>")]),
        mail(
            4,
            &[
                ("X-Original-To", "evil%x.com@example.com"),
                (
                    "Received",
                    "from mx.remote.test by pop.provider.net; Mon, 2 Nov 2026 10:00:00 +0000",
                ),
                ("To", "carol@example.com"),
            ],
        ),
        // Item 2: a valid quoted local part is a proper recipient, quoted on the wire.
        mail(5, &[("To", "\"john doe\"@example.com, dave@example.com")]),
        invalid_utf8,
    ]
}

/// Delivers [`mailbox`] through mailferry (with `extra` top-level config lines) to a private
/// Postfix; asserts that nothing left for the outside and the mailbox was emptied; returns
/// `(recipient, subject)` of every copy the inside received, sorted, and mailferry's output.
fn deliver_mailbox(extra: Option<&str>) -> (Vec<(String, String)>, String) {
    let postfix = Postfix::start(&["example.com"]);
    let dovecot = Dovecot::start(&[(USER, PASS)]);
    let dir = tempfile::tempdir().unwrap();
    dovecot.deliver_all(USER, &mailbox());
    let mut config = GatewayConfig::new(dir.path().join("state"), postfix.port())
        .postmaster(POSTMASTER)
        .account(account(&dovecot));
    if let Some(line) = extra {
        config = config.extra_line(line);
    }
    let out = poll_once(&config.write(dir.path()).display().to_string());
    assert!(out.status.success(), "poll-once failed");
    assert!(
        postfix.wait_queue_empty(Duration::from_secs(30)),
        "{}",
        postfix.log()
    );

    let outside = postfix.outside.transactions();
    assert!(
        outside.is_empty(),
        "relayed outside: {:?}\n{}",
        outside.iter().map(|t| &t.rcpts).collect::<Vec<_>>(),
        postfix.log()
    );
    assert_eq!(dovecot.count(USER), 0, "mailbox not emptied");

    let mut got: Vec<(String, String)> = postfix
        .inside
        .transactions()
        .into_iter()
        .flat_map(|tx| {
            let subject = tx.subject();
            tx.rcpts.into_iter().map(move |r| (r, subject.clone()))
        })
        .collect();
    got.sort();
    let log =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (got, log)
}

fn pairs(want: &[(&str, &str)]) -> Vec<(String, String)> {
    want.iter()
        .map(|(r, s)| (r.to_string(), s.to_string()))
        .collect()
}

#[test]
fn nothing_leaves_for_a_foreign_domain_and_the_postmaster_gets_the_refused() {
    if support::skip_e2e() {
        return;
    }
    let (got, log) = deliver_mailbox(None);
    // Every rightful recipient once; the postmaster once for each message with a refused
    // address; nobody else.
    let want = pairs(&[
        ("\"john doe\"@example.com", "case 5"),
        ("alice@example.com", "case 0"),
        ("bob@example.com", "case 2"),
        ("carol@example.com", "case 4"),
        ("dave@example.com", "case 5"),
        ("erin@example.com", "case 6"),
        (POSTMASTER, "case 0"),
        (POSTMASTER, "case 1"),
        (POSTMASTER, "case 2"),
        (POSTMASTER, "case 3"),
        (POSTMASTER, "case 4"),
        (POSTMASTER, "case 6"),
    ]);
    assert_eq!(got, want);
    // The reason is logged with the refused address.
    for refused in ["evil%x.com@example.com", "x.com!evil@example.com"] {
        assert!(
            log.lines()
                .any(|l| l.contains(refused) && l.contains("refused address")),
            "{refused} not named as refused in:\n{log}"
        );
    }
}

#[test]
fn with_source_routed_reject_the_refused_are_dropped_and_nothing_leaves() {
    if support::skip_e2e() {
        return;
    }
    let (got, _log) = deliver_mailbox(Some("source_routed: reject"));
    // The postmaster only where nobody else was left (1, 3) and for the undecodable (6).
    let want = pairs(&[
        ("\"john doe\"@example.com", "case 5"),
        ("alice@example.com", "case 0"),
        ("bob@example.com", "case 2"),
        ("carol@example.com", "case 4"),
        ("dave@example.com", "case 5"),
        ("erin@example.com", "case 6"),
        (POSTMASTER, "case 1"),
        (POSTMASTER, "case 3"),
        (POSTMASTER, "case 6"),
    ]);
    assert_eq!(got, want);
}
