//! The relay's own SMTP client against the scripted server: PIPELINING flights, BDAT, SIZE,
//! servers that misbehave mid-flight, no RSET between clean transactions, and AUTH.

use std::time::Duration;

use super::tests::{addr, config, relay_for, reply};
use super::*;
use crate::config::{Password, RelayAuth, TlsMode};
use crate::recipient::{Recipient, Status};
use crate::testkit::Split;
use crate::testkit::smtp::{FakeSmtp, Script};
use crate::testkit::tls::test_ca;

const MESSAGE: &[u8] = b"Subject: hello\r\n\r\n.dot line\r\nbody\r\n";
const PIPELINING: &[&str] = &["PIPELINING", "8BITMIME", "SMTPUTF8"];

fn outcomes(results: Vec<Recipient>) -> Vec<Status> {
    results.into_iter().map(|r| r.status).collect()
}

#[tokio::test]
async fn pipelined_mail_rcpts_and_data_go_in_one_flight_and_each_rcpt_keeps_its_reply() {
    let script = Script::default()
        .extensions(PIPELINING)
        .rcpt("later@example.com", "450 4.2.0 mailbox busy")
        .rcpt("nobody@example.com", "550 5.1.1 no such user");
    let (server, relay) = relay_for(script);
    let rcpts = [
        addr("later@example.com"),
        addr("bob@example.com"),
        addr("nobody@example.com"),
    ];
    let results = relay.send(None, &rcpts, MESSAGE).await.unwrap();
    assert_eq!(
        outcomes(results),
        [
            Status::Temporary(reply(450, "4.2.0 mailbox busy")),
            Status::Delivered(reply(250, "2.0.0 queued as 1234")),
            Status::Permanent(reply(550, "5.1.1 no such user")),
        ]
    );
    let log = server.log();
    let flight = [
        "MAIL FROM:<>",
        "RCPT TO:<later@example.com>",
        "RCPT TO:<bob@example.com>",
        "RCPT TO:<nobody@example.com>",
        "DATA",
    ];
    assert_eq!(log.commands[1..], flight);
    // Every command of the flight had the next one behind it when the server read it.
    assert_eq!(log.commands_waiting[1..5], [true; 4], "{log:?}");
    assert_eq!(log.transactions[0].rcpts, ["bob@example.com"]);
    assert_eq!(log.transactions[0].message(), MESSAGE);
}

#[tokio::test]
async fn pipelined_replies_split_across_reads_give_the_same_outcomes() {
    let ehlo = [
        "PIPELINING",
        "SIZE 10000000",
        "8BITMIME",
        "ENHANCEDSTATUSCODES",
    ];
    for split in [
        Split::ByteByByte,
        Split::At(1),
        Split::At(3),
        Split::At(4),
        Split::At(9),
    ] {
        let script = Script::default()
            .extensions(&ehlo)
            .split(split)
            .rcpt("nobody@example.com", "550-5.1.1 no such\r\n550 5.1.1 user");
        let (server, relay) = relay_for(script);
        let rcpts = [addr("bob@example.com"), addr("nobody@example.com")];
        let results = relay.send(None, &rcpts, MESSAGE).await.unwrap();
        assert_eq!(
            outcomes(results),
            [
                Status::Delivered(reply(250, "2.0.0 queued as 1234")),
                Status::Permanent(reply(550, "5.1.1 no such 5.1.1 user")),
            ],
            "{split:?}"
        );
        let log = server.log();
        assert_eq!(log.transactions.len(), 1, "{split:?}");
        let size = format!("MAIL FROM:<> SIZE={}", MESSAGE.len());
        assert_eq!(log.commands[1], size, "{split:?}");
    }
}

#[tokio::test]
async fn a_pipelined_response_cut_after_the_second_rcpt_delivers_nothing() {
    let script = Script::default().extensions(PIPELINING).drop_after_rcpts(2);
    let (server, relay) = relay_for(script);
    let rcpts = [
        addr("a@example.com"),
        addr("b@example.com"),
        addr("c@example.com"),
    ];
    let err = relay.send(None, &rcpts, MESSAGE).await.unwrap_err();
    assert!(matches!(err, RelayError::Io(_)), "{err:?}");
    assert!(!err.is_permanent() && !err.is_unavailable(), "{err:?}");
    assert!(server.log().transactions.is_empty());
    // The broken session is gone; the next message gets a new one.
    server.change(|_| Script::default().extensions(PIPELINING));
    let results = relay.send(None, &rcpts, MESSAGE).await.unwrap();
    assert!(
        results
            .iter()
            .all(|r| matches!(r.status, Status::Delivered(_)))
    );
    assert_eq!(server.log().connections, 2);
}

#[tokio::test]
async fn too_few_replies_put_the_session_out_of_step_and_nothing_is_delivered() {
    // No reply to b's RCPT: the 354 meant for DATA arrives where b's reply should be.
    let script = Script::default()
        .extensions(PIPELINING)
        .no_reply_to("b@example.com");
    let (server, relay) = relay_for(script);
    let rcpts = [addr("a@example.com"), addr("b@example.com")];
    let err = relay.send(None, &rcpts, MESSAGE).await.unwrap_err();
    assert!(
        matches!(&err, RelayError::OutOfStep { during: "RCPT TO", reply, .. } if reply.code == 354),
        "{err:?}"
    );
    assert!(!err.is_permanent());
    server.wait_closed(1).await;
    assert!(server.log().transactions.is_empty(), "no data was sent");
}

#[tokio::test]
async fn a_reply_out_of_turn_is_never_taken_for_a_delivery() {
    // Two replies to a's RCPT: every later reply is one behind, so DATA gets a 250.
    let script = Script::default()
        .extensions(PIPELINING)
        .rcpt("a@example.com", "250 2.1.5 ok\r\n250 2.1.5 again");
    let (server, relay) = relay_for(script);
    let rcpts = [addr("a@example.com"), addr("b@example.com")];
    let err = relay.send(None, &rcpts, MESSAGE).await.unwrap_err();
    assert!(
        matches!(&err, RelayError::OutOfStep { during: "DATA", reply, .. } if reply.code == 250),
        "{err:?}"
    );
    server.wait_closed(1).await;
    assert!(server.log().transactions.is_empty());
    // Lock-step too: a 354 to a RCPT is out of turn.
    let script = Script::default().rcpt("a@example.com", "354 go ahead");
    let (server, relay) = relay_for(script);
    let err = relay.send(None, &rcpts, MESSAGE).await.unwrap_err();
    assert!(matches!(err, RelayError::OutOfStep { .. }), "{err:?}");
    assert!(!server.commands().contains(&"DATA".to_owned()));
}

#[tokio::test]
async fn all_rcpts_refused_in_a_flight_ends_with_rset_and_the_session_stays() {
    let script = Script::default()
        .extensions(PIPELINING)
        .rcpt("a@example.com", "550 5.1.1 no")
        .rcpt("b@example.com", "451 4.3.0 later");
    let (server, relay) = relay_for(script);
    let rcpts = [addr("a@example.com"), addr("b@example.com")];
    let results = relay.send(None, &rcpts, MESSAGE).await.unwrap();
    assert_eq!(
        outcomes(results),
        [
            Status::Permanent(reply(550, "5.1.1 no")),
            Status::Temporary(reply(451, "4.3.0 later")),
        ]
    );
    // The fake answers DATA without recipients with 503; then RSET ends the transaction.
    server.change(|s| s.extensions(PIPELINING));
    relay
        .send(None, &[addr("c@example.com")], MESSAGE)
        .await
        .unwrap();
    let commands = server.commands();
    let rsets = commands.iter().filter(|c| *c == "RSET").count();
    assert_eq!(rsets, 1, "{commands:?}");
    assert_eq!(server.log().connections, 1);
    assert_eq!(server.log().transactions.len(), 1);
}

#[tokio::test]
async fn chunking_sends_the_message_by_bdat_last_unstuffed() {
    for extensions in [&["CHUNKING", "PIPELINING"][..], &["CHUNKING"]] {
        let (server, relay) = relay_for(Script::default().extensions(extensions));
        let rcpts = [addr("a@example.com"), addr("b@example.com")];
        let results = relay.send(None, &rcpts, MESSAGE).await.unwrap();
        assert!(
            results
                .iter()
                .all(|r| matches!(r.status, Status::Delivered(_)))
        );
        // Without a final CRLF, one is added (as DATA adds it).
        relay.send(None, &rcpts[..1], b"a\r\n.b").await.unwrap();
        let log = server.log();
        let bdat = format!("BDAT {} LAST", MESSAGE.len());
        assert!(log.commands.contains(&bdat), "{:?}", log.commands);
        assert!(
            log.commands.contains(&"BDAT 7 LAST".to_owned()),
            "{:?}",
            log.commands
        );
        assert!(
            !log.commands.contains(&"DATA".to_owned()),
            "{:?}",
            log.commands
        );
        assert!(log.transactions.iter().all(|t| t.chunked));
        assert_eq!(log.transactions[0].data, MESSAGE, "no dot-stuffing in BDAT");
        assert_eq!(log.transactions[1].data, b"a\r\n.b\r\n");
        assert_eq!(
            log.transactions[0].rcpts,
            ["a@example.com", "b@example.com"]
        );
        assert_eq!(log.connections, 1);
    }
}

#[tokio::test]
async fn a_message_over_the_servers_size_is_refused_for_good_before_mail_from() {
    let script = Script::default().extensions(&["PIPELINING", "SIZE 100"]);
    let (server, relay) = relay_for(script);
    let big = [b"Subject: big\r\n\r\n".as_slice(), &[b'a'; 200], b"\r\n"].concat();
    let err = relay
        .send(None, &[addr("a@example.com")], &big)
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            RelayError::TooBig {
                size: 218,
                limit: 100
            }
        ),
        "{err:?}"
    );
    assert!(err.is_permanent() && !err.is_unavailable());
    assert_eq!(server.log().mail_commands(), 0);
    // The session is still good for the next message.
    relay
        .send(None, &[addr("a@example.com")], MESSAGE)
        .await
        .unwrap();
    assert_eq!(server.log().connections, 1);
    assert_eq!(server.log().transactions.len(), 1);
}

#[tokio::test]
async fn a_session_the_server_closed_while_idle_is_replaced_without_a_failure() {
    let (server, relay) = relay_for(Script::default().close_after_data());
    relay
        .send(None, &[addr("a@example.com")], MESSAGE)
        .await
        .unwrap();
    server.wait_closed(1).await;
    relay
        .send(None, &[addr("b@example.com")], MESSAGE)
        .await
        .unwrap();
    assert_eq!(server.log().transactions.len(), 2);
    assert_eq!(server.log().connections, 2);
}

// --- AUTH ---

fn with_auth(mut cfg: crate::config::RelayConfig, password: &str) -> crate::config::RelayConfig {
    cfg.auth = Some(RelayAuth {
        username: "gateway".to_owned(),
        password: Password::new(password),
        mechanisms: Default::default(),
        oauth: None,
        state_dir: Default::default(),
    });
    cfg
}

#[tokio::test]
async fn auth_plain_then_login_log_in_before_mail() {
    for (offer, mechanism) in [("PLAIN LOGIN", "AUTH PLAIN "), ("LOGIN", "AUTH LOGIN")] {
        let script = Script::default()
            .extensions(PIPELINING)
            .auth("gateway", "s3cret")
            .auth_offer(offer);
        let server = FakeSmtp::start(script);
        let relay = SmtpRelay::new(with_auth(config(server.port(), TlsMode::None), "s3cret"));
        let results = relay
            .send(None, &[addr("a@example.com")], MESSAGE)
            .await
            .unwrap();
        assert!(matches!(results[0].status, Status::Delivered(_)));
        let log = server.log();
        assert_eq!(log.logins, ["gateway"]);
        assert!(log.commands[1].starts_with(mechanism), "{:?}", log.commands);
    }
}

#[tokio::test]
async fn a_refused_login_fails_the_relay_and_never_shows_the_password() {
    let script = Script::default().auth("gateway", "right");
    let server = FakeSmtp::start(script);
    let relay = SmtpRelay::new(with_auth(config(server.port(), TlsMode::None), "wrong-pw"));
    let err = relay
        .send(None, &[addr("a@example.com")], MESSAGE)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, RelayError::AuthRefused { reply, .. } if reply.code == 535),
        "{err:?}"
    );
    assert!(err.is_unavailable());
    let shown = format!("{err} {err:?}");
    assert!(!shown.contains("wrong-pw"), "{shown}");
    assert!(!shown.contains(&crate::sasl::encode_base64(b"\0gateway\0wrong-pw")));
    assert_eq!(server.log().mail_commands(), 0);
}

#[tokio::test]
async fn no_auth_over_plain_text_unless_tls_none_is_explicit() {
    // starttls-if-available, and the server offers no STARTTLS: the password stays home.
    let script = Script::default().auth("gateway", "s3cret");
    let server = FakeSmtp::start(script);
    let cfg = with_auth(
        config(server.port(), TlsMode::StarttlsIfAvailable),
        "s3cret",
    );
    let err = SmtpRelay::new(cfg)
        .send(None, &[addr("a@example.com")], MESSAGE)
        .await
        .unwrap_err();
    assert!(matches!(err, RelayError::AuthUnavailable { .. }), "{err:?}");
    assert!(err.is_unavailable());
    server.wait_closed(1).await;
    assert_eq!(server.commands(), ["EHLO gw.test"]);
}

#[tokio::test]
async fn auth_goes_over_starttls() {
    let ca = test_ca();
    let script = Script::default()
        .starttls(ca.acceptor.clone())
        .auth("gateway", "s3cret");
    let server = FakeSmtp::start(script);
    let mut cfg = with_auth(config(server.port(), TlsMode::Starttls), "s3cret");
    cfg.tls_options.ca_file = Some(ca.ca_pem.clone());
    let results = SmtpRelay::new(cfg)
        .send(None, &[addr("a@example.com")], MESSAGE)
        .await
        .unwrap();
    assert!(matches!(results[0].status, Status::Delivered(_)));
    let commands = server.commands_tls();
    let auth = commands
        .iter()
        .find(|(c, _)| c.starts_with("AUTH"))
        .unwrap();
    assert!(auth.1, "AUTH in plain text: {commands:?}");
    assert_eq!(server.log().logins, ["gateway"]);
}

#[tokio::test]
async fn a_server_without_a_known_mechanism_is_a_clear_error() {
    let script = Script::default()
        .auth("gateway", "s3cret")
        .auth_offer("GSSAPI");
    let server = FakeSmtp::start(script);
    let cfg = with_auth(config(server.port(), TlsMode::None), "s3cret");
    let err = SmtpRelay::new(cfg)
        .send(None, &[addr("a@example.com")], MESSAGE)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("AUTH GSSAPI"), "{err}");
    assert!(err.is_unavailable());
}

/// A hang guard for the idle-session check: a pooled session that got a 421 while idle is
/// not used.
#[tokio::test]
async fn an_idle_session_that_said_something_unasked_is_not_reused() {
    let (server, relay) = relay_for(Script::default().extensions(PIPELINING));
    relay
        .send(None, &[addr("a@example.com")], MESSAGE)
        .await
        .unwrap();
    // Make the server say more after the reply to the data next time.
    server.change(|s| s.data_end("250 2.0.0 queued\r\n421 4.4.2 idle timeout"));
    let err = relay
        .send(None, &[addr("b@example.com")], MESSAGE)
        .await
        .unwrap_err();
    // The extra reply arrives with the one to the data: out of step, so not delivered.
    assert!(matches!(err, RelayError::OutOfStep { .. }), "{err:?}");
    tokio::time::timeout(Duration::from_secs(10), async {
        server.change(|s| s.data_end("250 2.0.0 queued"));
        relay
            .send(None, &[addr("c@example.com")], MESSAGE)
            .await
            .unwrap();
    })
    .await
    .unwrap();
    assert_eq!(server.log().connections, 2);
}
