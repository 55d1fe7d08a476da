//! How envelope addresses go on the wire, and that each recipient keeps its own outcome
//! whatever happens to the others (issue 6, item 2).

use std::time::Duration;

use super::*;
use crate::config::{RelayConfig, TlsMode};
use crate::recipient::Status;
use crate::testkit::smtp::{FakeSmtp, Script};

fn addr(s: &str) -> Address {
    Address::parse(s).unwrap()
}

fn relay_for(script: Script) -> (FakeSmtp, SmtpRelay) {
    let server = FakeSmtp::start(script);
    let relay = SmtpRelay::new(RelayConfig {
        host: "127.0.0.1".to_owned(),
        port: server.port(),
        tls: TlsMode::None,
        helo: Some("gw.test".to_owned()),
        connections: 1,
        tls_options: Default::default(),
        timeout: Duration::from_secs(5),
        retry: crate::config::RetryPolicy::default(),
        auth: None,
        data_timeout: Duration::from_secs(5),
    });
    (server, relay)
}

const MESSAGE: &[u8] = b"Subject: hello\r\n\r\nbody\r\n";

#[tokio::test]
async fn a_quoted_local_part_is_sent_quoted() {
    let (server, relay) = relay_for(Script::default());
    let john = addr("\"john doe\"@example.com");
    let results = relay
        .send(None, &[john.clone(), addr("bob@example.com")], MESSAGE)
        .await
        .unwrap();
    assert_eq!(results[0].address, john);
    assert!(matches!(results[0].status, Status::Delivered(_)));
    assert!(matches!(results[1].status, Status::Delivered(_)));
    let commands = server.commands();
    assert!(
        commands.contains(&"RCPT TO:<\"john doe\"@example.com>".to_owned()),
        "{commands:?}"
    );
    // Nothing needed SMTPUTF8.
    assert!(
        commands.contains(&"MAIL FROM:<>".to_owned()),
        "{commands:?}"
    );
}

#[tokio::test]
async fn a_non_ascii_quoted_local_part_uses_smtputf8() {
    let (server, relay) = relay_for(Script::default());
    let jorg = addr("\"jörg müller\"@example.com");
    let results = relay.send(None, &[jorg], MESSAGE).await.unwrap();
    assert!(matches!(results[0].status, Status::Delivered(_)));
    let commands = server.commands();
    assert!(
        commands
            .iter()
            .any(|c| c.starts_with("MAIL FROM:<>") && c.contains("SMTPUTF8")),
        "{commands:?}"
    );
    assert!(
        commands.contains(&"RCPT TO:<\"jörg müller\"@example.com>".to_owned()),
        "{commands:?}"
    );
}

/// One result per recipient, in order, each naming its recipient: an unsendable recipient
/// (non-ASCII to a server without SMTPUTF8) and refused ones never shift the outcome of
/// another, wherever they stand in the list.
#[tokio::test]
async fn an_unsendable_or_refused_recipient_never_shifts_another_outcome() {
    let script = Script::default()
        .extensions(&["8BITMIME"])
        .rcpt("gone@example.com", "550 5.1.1 no such user")
        .rcpt("busy@example.com", "450 4.2.1 try later");
    let (server, relay) = relay_for(script);
    let recipients = [
        addr("jörg@example.com"),
        addr("alice@example.com"),
        addr("gone@example.com"),
        addr("\"john doe\"@example.com"),
        addr("zoë@example.com"),
        addr("busy@example.com"),
        addr("bob@example.com"),
    ];
    let results = relay.send(None, &recipients, MESSAGE).await.unwrap();
    assert_eq!(results.len(), recipients.len());
    let got: Vec<(String, u16, &str)> = results
        .iter()
        .map(|r| {
            let (kind, reply) = match &r.status {
                Status::Delivered(reply) => ("delivered", reply),
                Status::Temporary(reply) => ("temporary", reply),
                Status::Permanent(reply) => ("permanent", reply),
                other => panic!("a status the relay never gives: {other:?}"),
            };
            (r.address.to_string(), reply.code, kind)
        })
        .collect();
    assert_eq!(
        got,
        [
            ("jörg@example.com".to_owned(), 553, "permanent"),
            ("alice@example.com".to_owned(), 250, "delivered"),
            ("gone@example.com".to_owned(), 550, "permanent"),
            ("\"john doe\"@example.com".to_owned(), 250, "delivered"),
            ("zoë@example.com".to_owned(), 553, "permanent"),
            ("busy@example.com".to_owned(), 450, "temporary"),
            ("bob@example.com".to_owned(), 250, "delivered"),
        ]
    );
    // The unsendable ones never reached the wire; the others did, in order.
    let rcpts: Vec<String> = server
        .commands()
        .into_iter()
        .filter(|c| c.starts_with("RCPT TO:"))
        .collect();
    assert_eq!(
        rcpts,
        [
            "RCPT TO:<alice@example.com>",
            "RCPT TO:<gone@example.com>",
            "RCPT TO:<\"john doe\"@example.com>",
            "RCPT TO:<busy@example.com>",
            "RCPT TO:<bob@example.com>",
        ]
    );
}
