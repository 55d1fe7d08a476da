use std::time::Duration;

use super::*;
use crate::config::{RelayConfig, TlsMode};
use crate::recipient::{Recipient, Status};
use crate::testkit::Split;
use crate::testkit::smtp::{FakeSmtp, Script};
use crate::testkit::tls::{TestCa, test_ca};

pub(super) fn addr(s: &str) -> Address {
    Address::parse(s).unwrap()
}

pub(crate) fn config(port: u16, tls: TlsMode) -> RelayConfig {
    RelayConfig {
        host: "127.0.0.1".to_owned(),
        port,
        tls,
        helo: Some("gw.test".to_owned()),
        connections: 1,
        tls_options: Default::default(),
        timeout: Duration::from_secs(5),
        data_timeout: Duration::from_secs(5),
        retry: crate::config::RetryPolicy::default(),
        auth: None,
    }
}

pub(super) fn relay_for(script: Script) -> (FakeSmtp, SmtpRelay) {
    let server = FakeSmtp::start(script);
    let relay = SmtpRelay::new(config(server.port(), TlsMode::None));
    (server, relay)
}

pub(super) fn reply(code: u16, text: &str) -> Reply {
    Reply {
        code,
        text: text.to_owned(),
    }
}

const MESSAGE: &[u8] = b"Subject: hello\r\n\r\nbody\r\n";

#[tokio::test]
async fn each_rcpt_reply_is_kept() {
    let script = Script::default()
        .rcpt("later@example.com", "450 4.2.0 mailbox busy")
        .rcpt("nobody@example.com", "550 5.1.1 no such user");
    let (server, relay) = relay_for(script);
    let rcpts = [
        addr("bob@example.com"),
        addr("later@example.com"),
        addr("nobody@example.com"),
    ];
    let results = relay
        .send(Some(&addr("alice@sender.org")), &rcpts, MESSAGE)
        .await
        .unwrap();
    assert_eq!(
        results,
        vec![
            Recipient {
                address: rcpts[0].clone(),
                status: Status::Delivered(reply(250, "2.0.0 queued as 1234")),
            },
            Recipient {
                address: rcpts[1].clone(),
                status: Status::Temporary(reply(450, "4.2.0 mailbox busy")),
            },
            Recipient {
                address: rcpts[2].clone(),
                status: Status::Permanent(reply(550, "5.1.1 no such user")),
            },
        ]
    );
    assert_eq!(
        reply(550, "5.1.1 no such user").to_string(),
        "550 5.1.1 no such user"
    );
    assert_eq!(
        server.commands(),
        [
            "EHLO gw.test",
            "MAIL FROM:<alice@sender.org>",
            "RCPT TO:<bob@example.com>",
            "RCPT TO:<later@example.com>",
            "RCPT TO:<nobody@example.com>",
            "DATA",
        ]
    );
    assert_eq!(server.log().data(), vec![MESSAGE.to_vec()]);
}

/// Every reply written a byte at a time, and in two pieces at each position of a multi-line
/// EHLO reply: the outcomes are those of whole replies.
#[tokio::test]
async fn replies_split_across_reads_give_the_same_outcomes() {
    let splits = [Split::ByteByByte, Split::At(3), Split::At(4), Split::At(12)];
    for split in splits {
        let script = Script::default()
            .split(split)
            .rcpt("nobody@example.com", "550 5.1.1 no such user");
        let (server, relay) = relay_for(script);
        let rcpts = [addr("bob@example.com"), addr("nobody@example.com")];
        let results = relay.send(None, &rcpts, MESSAGE).await.unwrap();
        let outcomes: Vec<_> = results.into_iter().map(|r| r.status).collect();
        assert_eq!(
            outcomes,
            [
                Status::Delivered(reply(250, "2.0.0 queued as 1234")),
                Status::Permanent(reply(550, "5.1.1 no such user")),
            ],
            "{split:?}"
        );
        assert_eq!(server.log().data(), vec![MESSAGE.to_vec()], "{split:?}");
    }
}

#[tokio::test]
async fn all_rcpts_refused_sends_no_data() {
    let script = Script::default()
        .rcpt("a@example.com", "550 5.1.1 no")
        .rcpt("b@example.com", "451 4.3.0 later");
    let (server, relay) = relay_for(script);
    let results = relay
        .send(
            None,
            &[addr("a@example.com"), addr("b@example.com")],
            MESSAGE,
        )
        .await
        .unwrap();
    assert_eq!(results[0].status, Status::Permanent(reply(550, "5.1.1 no")));
    assert_eq!(
        results[1].status,
        Status::Temporary(reply(451, "4.3.0 later"))
    );
    let commands = server.commands();
    assert!(!commands.iter().any(|c| c == "DATA"), "{commands:?}");
    assert_eq!(commands.last().map(String::as_str), Some("RSET"));
    assert!(server.log().data().is_empty());
}

#[tokio::test]
async fn data_refused_with_554_is_a_permanent_error() {
    let script = Script::default().data_end("554 5.6.0 message rejected");
    let (server, relay) = relay_for(script);
    let err = relay
        .send(None, &[addr("a@example.com")], MESSAGE)
        .await
        .unwrap_err();
    match &err {
        RelayError::Data { reply: r } => assert_eq!(r, &reply(554, "5.6.0 message rejected")),
        other => panic!("expected Data, got {other:?}"),
    }
    assert!(err.is_permanent());
    // The session was ended (QUIT) and dropped.
    server.wait_closed(1).await;
    assert_eq!(server.commands().last().map(String::as_str), Some("QUIT"));
}

#[tokio::test]
async fn data_command_refused_with_451_is_a_temporary_error() {
    let script = Script::default().data("451 4.3.0 try later");
    let (server, relay) = relay_for(script);
    let err = relay
        .send(None, &[addr("a@example.com")], MESSAGE)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, RelayError::Data { reply: r } if r.code == 451),
        "{err:?}"
    );
    assert!(!err.is_permanent());
    assert!(server.log().data().is_empty());
}

#[tokio::test]
async fn mail_from_451_is_a_temporary_error_and_no_rcpt_follows() {
    let script = Script::default().mail("451 4.7.1 greylisted");
    let (server, relay) = relay_for(script);
    let err = relay
        .send(
            Some(&addr("x@sender.org")),
            &[addr("a@example.com")],
            MESSAGE,
        )
        .await
        .unwrap_err();
    match &err {
        RelayError::MailFrom { reply: r } => assert_eq!(r, &reply(451, "4.7.1 greylisted")),
        other => panic!("expected MailFrom, got {other:?}"),
    }
    assert!(!err.is_permanent());
    assert!(!server.commands().iter().any(|c| c.starts_with("RCPT")));
}

#[tokio::test]
async fn dots_are_stuffed_on_the_wire_and_the_body_is_otherwise_exact() {
    let (server, relay) = relay_for(Script::default());
    let rcpt = [addr("a@example.com")];
    let body = b".first\r\n\r\n.\r\n..\r\n.x\r\n8-bit \xe9\xff\r\nend\r\n";
    relay.send(None, &rcpt, body).await.unwrap();
    // No final CRLF: one is added before the final dot, nothing else changes.
    relay.send(None, &rcpt, b"a\r\n.b").await.unwrap();
    let log = server.log();
    assert_eq!(
        log.data()[0],
        b"..first\r\n\r\n..\r\n...\r\n..x\r\n8-bit \xe9\xff\r\nend\r\n".to_vec()
    );
    assert_eq!(log.data()[1], b"a\r\n..b\r\n".to_vec());
    assert!(
        log.commands
            .iter()
            .any(|c| c == "MAIL FROM:<> BODY=8BITMIME"),
        "{:?}",
        log.commands
    );
}

#[tokio::test]
async fn a_bare_lf_cannot_end_the_data_early() {
    let (server, relay) = relay_for(Script::default());
    relay
        .send(None, &[addr("a@example.com")], b"a\n.\nb\r\n")
        .await
        .unwrap();
    assert_eq!(server.log().data(), vec![b"a\r\n..\r\nb\r\n".to_vec()]);
}

#[tokio::test]
async fn null_reverse_path_is_sent_as_angle_brackets() {
    let (server, relay) = relay_for(Script::default());
    relay
        .send(None, &[addr("a@example.com")], MESSAGE)
        .await
        .unwrap();
    assert!(server.commands().iter().any(|c| c == "MAIL FROM:<>"));
}

#[tokio::test]
async fn the_session_is_reused_for_the_next_message() {
    // The same commands in lock-step and pipelined (in flights).
    for script in [
        Script::default(),
        Script::default().extensions(&["PIPELINING", "8BITMIME", "SMTPUTF8"]),
    ] {
        session_is_reused(script).await;
    }
}

async fn session_is_reused(script: Script) {
    let (server, relay) = relay_for(script);
    relay
        .send(None, &[addr("a@example.com")], MESSAGE)
        .await
        .unwrap();
    relay
        .send(None, &[addr("b@example.com")], MESSAGE)
        .await
        .unwrap();
    relay.close().await;
    server.wait_closed(1).await;
    assert_eq!(server.log().connections, 1);
    assert_eq!(
        server.commands(),
        [
            "EHLO gw.test",
            "MAIL FROM:<>",
            "RCPT TO:<a@example.com>",
            "DATA",
            // The transaction ended cleanly: no RSET round trip before the next one.
            "MAIL FROM:<>",
            "RCPT TO:<b@example.com>",
            "DATA",
            "QUIT",
        ]
    );
}

#[tokio::test]
async fn a_session_dropped_by_the_server_is_reopened() {
    let script = Script::default().close_after_data();
    let (server, relay) = relay_for(script);
    relay
        .send(None, &[addr("a@example.com")], MESSAGE)
        .await
        .unwrap();
    server.wait_closed(1).await;
    let results = relay
        .send(None, &[addr("b@example.com")], MESSAGE)
        .await
        .unwrap();
    assert!(matches!(results[0].status, Status::Delivered(_)));
    assert_eq!(server.log().connections, 2);
    assert_eq!(server.log().data().len(), 2);
}

#[tokio::test]
async fn starttls_required_but_not_offered_sends_nothing_after_ehlo() {
    let server = FakeSmtp::start(Script::default());
    let relay = SmtpRelay::new(config(server.port(), TlsMode::Starttls));
    let err = relay
        .send(None, &[addr("a@example.com")], MESSAGE)
        .await
        .unwrap_err();
    assert!(
        matches!(err, RelayError::StarttlsRequired { .. }),
        "{err:?}"
    );
    assert!(!err.is_permanent());
    server.wait_closed(1).await;
    assert_eq!(server.commands(), ["EHLO gw.test"]);
}

#[tokio::test]
async fn starttls_if_available_goes_on_in_plain_text_without_it() {
    let server = FakeSmtp::start(Script::default());
    let relay = SmtpRelay::new(config(server.port(), TlsMode::StarttlsIfAvailable));
    let results = relay
        .send(None, &[addr("a@example.com")], MESSAGE)
        .await
        .unwrap();
    assert!(matches!(results[0].status, Status::Delivered(_)));
}

#[tokio::test]
async fn an_address_the_server_cannot_take_is_permanent_for_that_recipient_only() {
    let (server, relay) = relay_for(Script::default());
    // Valid for our envelope rules (no SMTP syntax can be injected), but a local part over
    // RFC 5321's 64 octets.
    let long = "a".repeat(65);
    let odd = addr(&format!("{long}@example.com"));
    let results = relay
        .send(None, &[odd, addr("ok@example.com")], MESSAGE)
        .await
        .unwrap();
    match &results[0].status {
        Status::Permanent(r) => {
            assert_eq!(r.code, 553);
            assert!(r.text.contains("not sent by mailferry"), "{r}");
        }
        other => panic!("expected Permanent, got {other:?}"),
    }
    assert!(matches!(results[1].status, Status::Delivered(_)));
    assert!(!server.commands().iter().any(|c| c.contains(&long)));
}

#[tokio::test]
async fn non_ascii_recipient_without_smtputf8_is_permanent() {
    let script = Script::default().extensions(&["8BITMIME"]);
    let (server, relay) = relay_for(script);
    let results = relay
        .send(
            None,
            &[addr("jörg@example.com"), addr("ok@example.com")],
            MESSAGE,
        )
        .await
        .unwrap();
    assert!(matches!(&results[0].status, Status::Permanent(r) if r.code == 553));
    assert!(matches!(results[1].status, Status::Delivered(_)));
    assert!(server.commands().contains(&"MAIL FROM:<>".to_owned()));
}

#[tokio::test]
async fn non_ascii_recipient_with_smtputf8_is_sent_with_the_parameter() {
    let (server, relay) = relay_for(Script::default());
    let results = relay
        .send(None, &[addr("jörg@example.com")], MESSAGE)
        .await
        .unwrap();
    assert!(matches!(results[0].status, Status::Delivered(_)));
    let commands = server.commands();
    assert!(
        commands.contains(&"MAIL FROM:<> SMTPUTF8".to_owned()),
        "{commands:?}"
    );
    assert!(
        commands.contains(&"RCPT TO:<jörg@example.com>".to_owned()),
        "{commands:?}"
    );
}

#[tokio::test]
async fn no_reply_to_the_data_is_a_timeout_and_the_session_is_dropped() {
    let script = Script::default().no_data_end();
    let server = FakeSmtp::start(script);
    let mut cfg = config(server.port(), TlsMode::None);
    cfg.timeout = Duration::from_millis(300);
    let relay = SmtpRelay::new(cfg);
    let err = relay
        .send(None, &[addr("a@example.com")], MESSAGE)
        .await
        .unwrap_err();
    assert!(matches!(err, RelayError::Timeout { .. }), "{err:?}");
    assert!(!err.is_permanent());
    server.wait_closed(1).await;
}

#[tokio::test]
async fn a_closed_port_is_a_connect_error() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    let relay = SmtpRelay::new(config(port, TlsMode::None));
    let err = relay
        .send(None, &[addr("a@example.com")], MESSAGE)
        .await
        .unwrap_err();
    assert!(matches!(err, RelayError::Tcp { .. }), "{err:?}");
    assert!(err.is_unavailable());
}

#[tokio::test]
async fn no_recipients_touches_nothing() {
    let (server, relay) = relay_for(Script::default());
    assert!(relay.send(None, &[], MESSAGE).await.unwrap().is_empty());
    assert_eq!(server.log().connections, 0);
}

#[test]
fn helo_defaults_to_a_host_name() {
    let mut cfg = config(25, TlsMode::None);
    assert_eq!(SmtpRelay::new(cfg.clone()).helo_name(), "gw.test");
    cfg.helo = None;
    let name = SmtpRelay::new(cfg).helo_name();
    assert!(
        !name.is_empty() && !name.contains(char::is_whitespace),
        "{name:?}"
    );
}

#[test]
fn send_is_send() {
    fn assert_send<T: Send>(_: T) {}
    let relay = SmtpRelay::new(config(25, TlsMode::None));
    let rcpts = [addr("a@example.com")];
    assert_send(relay.send(None, &rcpts, MESSAGE));
}

// --- TLS: real handshakes against a test CA (crate::testkit::tls). ---

/// A relay config for `tls` to `server`, trusting `ca` if given.
fn tls_config(server: &FakeSmtp, tls: TlsMode, ca: Option<&TestCa>) -> RelayConfig {
    let mut cfg = config(server.port(), tls);
    cfg.tls_options.ca_file = ca.map(|ca| ca.ca_pem.clone());
    cfg
}

fn starttls_script(ca: &TestCa) -> Script {
    Script::default().starttls(ca.acceptor.clone())
}

/// The commands of one upgraded session: EHLO and STARTTLS in plain text, all else over TLS.
fn upgraded_session() -> Vec<(String, bool)> {
    [
        ("EHLO gw.test", false),
        ("STARTTLS", false),
        ("EHLO gw.test", true),
        ("MAIL FROM:<>", true),
        ("RCPT TO:<a@example.com>", true),
        ("DATA", true),
    ]
    .map(|(c, tls)| (c.to_owned(), tls))
    .to_vec()
}

#[tokio::test]
async fn implicit_tls_with_the_ca_delivers_over_tls() {
    let ca = test_ca();
    let script = Script::default().implicit_tls(ca.acceptor.clone());
    let server = FakeSmtp::start(script);
    let relay = SmtpRelay::new(tls_config(&server, TlsMode::Tls, Some(&ca)));
    let results = relay
        .send(None, &[addr("a@example.com")], MESSAGE)
        .await
        .unwrap();
    assert_eq!(
        results[0].status,
        Status::Delivered(reply(250, "2.0.0 queued as 1234"))
    );
    let log = server.log();
    assert_eq!(log.data(), vec![MESSAGE.to_vec()]);
    assert_eq!(log.data_tls(), [true]);
    assert!(log.commands_tls.iter().all(|&tls| tls), "{log:?}");
    assert_eq!(log.commands[0], "EHLO gw.test");
}

#[tokio::test]
async fn implicit_tls_without_the_ca_fails_before_any_command() {
    let ca = test_ca();
    let script = Script::default().implicit_tls(ca.acceptor.clone());
    let server = FakeSmtp::start(script);
    // No ca_file: the system trust store does not know the test CA.
    let relay = SmtpRelay::new(tls_config(&server, TlsMode::Tls, None));
    let err = relay
        .send(None, &[addr("a@example.com")], MESSAGE)
        .await
        .unwrap_err();
    assert!(err.is_unavailable(), "{err:?}");
    assert!(!err.is_permanent(), "{err:?}");
    server.wait_closed(1).await;
    let log = server.log();
    assert_eq!(log.failed_handshakes, 1, "{log:?}");
    assert!(log.commands.is_empty(), "{log:?}");
    assert!(log.data().is_empty());
}

#[tokio::test]
async fn starttls_with_the_ca_upgrades_before_mail_from() {
    let ca = test_ca();
    let server = FakeSmtp::start(starttls_script(&ca));
    let relay = SmtpRelay::new(tls_config(&server, TlsMode::Starttls, Some(&ca)));
    let results = relay
        .send(None, &[addr("a@example.com")], MESSAGE)
        .await
        .unwrap();
    assert_eq!(
        results[0].status,
        Status::Delivered(reply(250, "2.0.0 queued as 1234"))
    );
    assert_eq!(server.commands_tls(), upgraded_session());
    let log = server.log();
    assert_eq!(log.data(), vec![MESSAGE.to_vec()]);
    assert_eq!(log.data_tls(), [true]);
}

#[tokio::test]
async fn starttls_if_available_upgrades_when_offered() {
    let ca = test_ca();
    let server = FakeSmtp::start(starttls_script(&ca));
    let relay = SmtpRelay::new(tls_config(&server, TlsMode::StarttlsIfAvailable, Some(&ca)));
    let results = relay
        .send(None, &[addr("a@example.com")], MESSAGE)
        .await
        .unwrap();
    assert!(
        matches!(results[0].status, Status::Delivered(_)),
        "{results:?}"
    );
    assert_eq!(server.commands_tls(), upgraded_session());
    assert_eq!(server.log().data_tls(), [true]);
}

#[tokio::test]
async fn starttls_with_an_untrusted_certificate_sends_no_mail_from() {
    let ca = test_ca();
    let server = FakeSmtp::start(starttls_script(&ca));
    // No ca_file: the certificate offered after STARTTLS is not trusted.
    let relay = SmtpRelay::new(tls_config(&server, TlsMode::Starttls, None));
    let err = relay
        .send(None, &[addr("a@example.com")], MESSAGE)
        .await
        .unwrap_err();
    assert!(err.is_unavailable(), "{err:?}");
    server.wait_closed(1).await;
    let log = server.log();
    assert_eq!(log.commands, ["EHLO gw.test", "STARTTLS"]);
    assert_eq!(log.failed_handshakes, 1, "{log:?}");
    assert!(log.data().is_empty());
}

// --- The shared pool: a slot and a session only for one transaction. ---

/// A hang guard, not a speed check: what it wraps must finish, however slowly.
async fn finishes<T>(what: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(20), what)
        .await
        .expect("did not finish: waiting for a slot or a reply without end")
}

#[tokio::test]
async fn two_concurrent_senders_with_one_connection_both_complete() {
    let script = Script::default().data_end_delay(Duration::from_millis(100));
    let (server, relay) = relay_for(script);
    let (a, b) = (relay.clone(), relay.clone());
    let (to_a, to_b) = ([addr("a@example.com")], [addr("b@example.com")]);
    let (ra, rb) = finishes(async {
        tokio::join!(a.send(None, &to_a, MESSAGE), b.send(None, &to_b, MESSAGE))
    })
    .await;
    assert!(matches!(ra.unwrap()[0].status, Status::Delivered(_)));
    assert!(matches!(rb.unwrap()[0].status, Status::Delivered(_)));
    let log = server.log();
    assert_eq!(log.data().len(), 2);
    assert_eq!(log.connections, 1, "one session, taken in turn");
    assert_eq!(log.most_open, 1);
}

#[tokio::test]
async fn a_sender_that_is_not_sending_holds_no_connection() {
    let (server, relay) = relay_for(Script::default());
    // One account sends, then waits on its slow upstream server without closing anything.
    let waiting_account = relay.clone();
    waiting_account
        .send(None, &[addr("a@example.com")], MESSAGE)
        .await
        .unwrap();
    // Another account, with `connections: 1`, still gets the session.
    let other = relay.clone();
    finishes(other.send(None, &[addr("b@example.com")], MESSAGE))
        .await
        .unwrap();
    assert_eq!(server.log().data().len(), 2);
    assert_eq!(server.log().connections, 1);
    drop(waiting_account);
}

#[tokio::test]
async fn sessions_are_reused_across_senders_and_quit_at_close() {
    let (server, relay) = relay_for(Script::default());
    for rcpt in ["a@example.com", "b@example.com", "c@example.com"] {
        let sender = relay.clone();
        sender.send(None, &[addr(rcpt)], MESSAGE).await.unwrap();
    }
    relay.close().await;
    server.wait_closed(1).await;
    assert_eq!(server.log().connections, 1);
    let commands = server.commands();
    assert_eq!(
        commands,
        [
            "EHLO gw.test",
            "MAIL FROM:<>",
            "RCPT TO:<a@example.com>",
            "DATA",
            "MAIL FROM:<>",
            "RCPT TO:<b@example.com>",
            "DATA",
            "MAIL FROM:<>",
            "RCPT TO:<c@example.com>",
            "DATA",
            "QUIT",
        ]
    );
}

#[tokio::test]
async fn never_more_sessions_than_connections() {
    let script = Script::default().data_end_delay(Duration::from_millis(50));
    let server = FakeSmtp::start(script);
    let mut cfg = config(server.port(), TlsMode::None);
    cfg.connections = 2;
    let relay = SmtpRelay::new(cfg);
    let sends = (0..6).map(|i| {
        let relay = relay.clone();
        let rcpt = [addr(&format!("r{i}@example.com"))];
        async move { relay.send(None, &rcpt, MESSAGE).await }
    });
    let results = finishes(futures_join_all(sends)).await;
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    let log = server.log();
    assert_eq!(log.data().len(), 6);
    assert!(
        log.most_open <= 2,
        "{} sessions open at once",
        log.most_open
    );
    assert_eq!(log.connections, 2, "sessions are reused");
}

/// Runs the futures concurrently on tasks of their own; their outputs in order.
async fn futures_join_all<F>(futures: impl Iterator<Item = F>) -> Vec<F::Output>
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    let handles: Vec<_> = futures.map(tokio::spawn).collect();
    let mut outputs = Vec::new();
    for handle in handles {
        outputs.push(handle.await.unwrap());
    }
    outputs
}

#[tokio::test]
async fn a_slow_reply_to_the_data_within_data_timeout_is_awaited() {
    let script = Script::default().data_end_delay(Duration::from_millis(700));
    let server = FakeSmtp::start(script);
    let mut cfg = config(server.port(), TlsMode::None);
    // Every other reply must come within 100 ms; the one after the final dot may take long.
    cfg.timeout = Duration::from_millis(100);
    cfg.data_timeout = Duration::from_secs(30);
    let results = SmtpRelay::new(cfg)
        .send(None, &[addr("a@example.com")], MESSAGE)
        .await
        .unwrap();
    assert!(matches!(results[0].status, Status::Delivered(_)));
    assert_eq!(server.log().data().len(), 1);
}

#[tokio::test]
async fn no_reply_to_the_data_past_data_timeout_names_the_end_of_data() {
    let script = Script::default().no_data_end();
    let server = FakeSmtp::start(script);
    let mut cfg = config(server.port(), TlsMode::None);
    cfg.timeout = Duration::from_secs(60);
    cfg.data_timeout = Duration::from_millis(300);
    let err = finishes(SmtpRelay::new(cfg).send(None, &[addr("a@example.com")], MESSAGE))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            RelayError::Timeout {
                during: "the end of DATA",
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains("the end of DATA"), "{err}");
    server.wait_closed(1).await;
}

// --- What the receiver sees: no header line the sender did not write. ---

#[tokio::test]
async fn a_bare_cr_in_a_header_does_not_become_a_line_break_on_the_wire() {
    let (server, relay) = relay_for(Script::default());
    relay
        .send(
            None,
            &[addr("a@example.com")],
            b"Subject: hi\rBcc: evil@elsewhere.test\r\n\r\nbody\rmore\r\n",
        )
        .await
        .unwrap();
    assert_eq!(
        server.log().data(),
        vec![b"Subject: hi Bcc: evil@elsewhere.test\r\n\r\nbody\r\nmore\r\n".to_vec()]
    );
}

#[tokio::test]
async fn a_prepared_message_without_headers_reaches_the_wire_as_body() {
    let (server, relay) = relay_for(Script::default());
    let trace = b"Received: from pop.test by gw.test; Tue, 1 Dec 2026 08:00:00 +0000\r\n";
    let message = prepare(trace, b"Hello,\nfrom: me, not a header\n");
    relay
        .send(None, &[addr("a@example.com")], &message)
        .await
        .unwrap();
    let want = [&trace[..], b"\r\nHello,\r\nfrom: me, not a header\r\n"].concat();
    assert_eq!(server.log().data(), vec![want]);
}

#[tokio::test]
async fn dots_at_chunk_boundaries_are_stuffed() {
    let (server, relay) = relay_for(Script::default());
    let rcpt = [addr("a@example.com")];
    // The CRLF before a "." line split between two 64 KiB pieces, either way.
    for line in [65_535, 65_534] {
        let mut message = b"Subject: big\r\n\r\n".to_vec();
        message.resize(line, b'a');
        message.extend_from_slice(b"\r\n.x\r\n.\r\nend\r\n");
        relay.send(None, &rcpt, &message).await.unwrap();
        let mut want = message[..line].to_vec();
        want.extend_from_slice(b"\r\n..x\r\n..\r\nend\r\n");
        assert_eq!(server.log().data().last(), Some(&want), "line of {line}");
    }
}
