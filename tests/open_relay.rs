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

#[test]
fn nothing_leaves_for_a_foreign_domain_and_the_postmaster_gets_the_refused() {
    let postfix = Postfix::start(&["example.com"]);
    let dovecot = Dovecot::start(&[(USER, PASS)]);
    let dir = tempfile::tempdir().unwrap();
    let mails = [
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
    ];
    dovecot.deliver_all(USER, &mails);
    let config = GatewayConfig::new(dir.path().join("state"), postfix.port())
        .postmaster(POSTMASTER)
        .account(account(&dovecot))
        .write(dir.path());
    let out = poll_once(&config.display().to_string());
    assert!(out.status.success(), "poll-once failed");
    assert!(
        postfix.wait_queue_empty(Duration::from_secs(30)),
        "{}",
        postfix.log()
    );

    // Nothing went outside.
    let outside = postfix.outside.transactions();
    assert!(
        outside.is_empty(),
        "relayed outside: {:?}\n{}",
        outside.iter().map(|t| &t.rcpts).collect::<Vec<_>>(),
        postfix.log()
    );

    // Every rightful recipient once; the postmaster once for each message with a refused
    // address; nobody else.
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
    let want = [
        ("\"john doe\"@example.com", "case 5"),
        ("alice@example.com", "case 0"),
        ("bob@example.com", "case 2"),
        ("carol@example.com", "case 4"),
        ("dave@example.com", "case 5"),
        (POSTMASTER, "case 0"),
        (POSTMASTER, "case 1"),
        (POSTMASTER, "case 2"),
        (POSTMASTER, "case 3"),
        (POSTMASTER, "case 4"),
    ];
    let want: Vec<(String, String)> = want
        .iter()
        .map(|(r, s)| (r.to_string(), s.to_string()))
        .collect();
    assert_eq!(got, want, "{}", postfix.log());

    // The reason is logged with the refused address.
    let log =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    for refused in ["evil%x.com@example.com", "x.com!evil@example.com"] {
        assert!(
            log.contains(refused) && log.contains("refused address"),
            "{refused} not named as refused in:\n{log}"
        );
    }
    assert_eq!(dovecot.count(USER), 0, "mailbox not emptied");
}
