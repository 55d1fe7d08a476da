//! The relay's SMTP AUTH against a real internal server that demands it: a private Postfix
//! (`smtpd_sasl_type = dovecot`, unauthenticated mail refused) checking logins through a real
//! Dovecot's authentication socket, which offers PLAIN, LOGIN, CRAM-MD5 and SCRAM. The relay
//! runs in process (`SmtpRelay`), over plain text with `tls: none` as the test Postfix speaks
//! no TLS.

mod support;

use std::time::Duration;

use mailferry::address::Address;
use mailferry::config::{AuthMethod, Password, RelayAuth, RelayConfig, RetryPolicy, TlsMode};
use mailferry::relay::{Outcome, Relay, RelayError, SmtpRelay};
use mailferry::sasl::{Mechanism, Method};
use support::{Dovecot, Postfix};

const GATEWAY: &str = "gateway";
const GATEWAY_PASS: &str = "relay-s3cret";

fn relay(postfix: &Postfix, auth: Option<(&str, &str)>) -> SmtpRelay {
    relay_with(postfix, auth, AuthMethod::Auto)
}

/// With `relay.auth_mechanisms` (or `relay.spa`) as `mechanisms`.
fn relay_with(postfix: &Postfix, auth: Option<(&str, &str)>, mechanisms: AuthMethod) -> SmtpRelay {
    SmtpRelay::new(RelayConfig {
        host: "127.0.0.1".to_owned(),
        port: postfix.port(),
        tls: TlsMode::None,
        helo: Some("gw.test".to_owned()),
        connections: 1,
        tls_options: Default::default(),
        timeout: Duration::from_secs(30),
        data_timeout: Duration::from_secs(30),
        retry: RetryPolicy::default(),
        auth: auth.map(|(user, password)| RelayAuth {
            username: user.to_owned(),
            password: Password::new(password),
            mechanisms: mechanisms.clone(),
        }),
    })
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime")
}

/// Dovecot checking `gateway`'s password for a Postfix that takes mail for example.com only
/// from a logged-in client (keep the Dovecot alive as long as the Postfix).
fn servers() -> (Dovecot, Postfix) {
    let dovecot = Dovecot::start(&[(GATEWAY, GATEWAY_PASS)]);
    let postfix = Postfix::start_with_auth(&["example.com"], &dovecot.auth_socket());
    (dovecot, postfix)
}

#[test]
fn the_relay_logs_in_with_the_strongest_mechanism_and_a_wrong_password_is_refused() {
    if support::skip_e2e() {
        return;
    }
    let (_dovecot, postfix) = servers();
    let rt = runtime();
    let rcpt = [Address::parse("alice@example.com").expect("an address")];
    let message = b"Subject: through AUTH\r\n\r\nbody\r\n";

    // The control: without a login this Postfix takes nothing.
    let results = rt
        .block_on(relay(&postfix, None).send(None, &rcpt, message))
        .expect("a transaction");
    assert!(
        matches!(&results[0].outcome, Outcome::Permanent(r) if r.code == 554),
        "{results:?}"
    );

    let good = relay(&postfix, Some((GATEWAY, GATEWAY_PASS)));
    let results = rt
        .block_on(good.send(None, &rcpt, message))
        .unwrap_or_else(|e| panic!("{e}\n{}", postfix.log()));
    assert!(
        matches!(results[0].outcome, Outcome::Delivered(_)),
        "{results:?}\n{}",
        postfix.log()
    );
    // The session stays logged in for the next message.
    rt.block_on(good.send(None, &rcpt, message))
        .unwrap_or_else(|e| panic!("{e}"));
    rt.block_on(good.close());
    assert!(
        postfix.wait_queue_empty(Duration::from_secs(30)),
        "{}",
        postfix.log()
    );
    let delivered = postfix.inside.wait_for(2, Duration::from_secs(10));
    assert_eq!(delivered.len(), 2, "{}", postfix.log());
    assert_eq!(delivered[0].rcpts, ["alice@example.com"]);
    let log = postfix.log();
    assert!(
        log.contains("sasl_method=SCRAM-SHA-256, sasl_username=gateway"),
        "SCRAM-SHA-256 is the strongest offered:\n{log}"
    );

    let wrong = relay(&postfix, Some((GATEWAY, "not-the-password")));
    let err = rt
        .block_on(wrong.send(None, &rcpt, message))
        .expect_err("a wrong password must fail");
    assert!(
        matches!(&err, RelayError::AuthRefused { reply, .. } if reply.code == 535),
        "{err:?}"
    );
    assert!(err.is_unavailable());
    assert!(!format!("{err} {err:?}").contains("not-the-password"));
    assert_eq!(
        postfix.inside.transactions().len(),
        2,
        "nothing more delivered"
    );
}

#[test]
fn the_relay_logs_in_with_each_forced_mechanism_and_refuses_one_not_offered() {
    if support::skip_e2e() {
        return;
    }
    let (_dovecot, postfix) = servers();
    let rt = runtime();
    let rcpt = [Address::parse("alice@example.com").expect("an address")];
    let forced = [
        Mechanism::Plain,
        Mechanism::Login,
        Mechanism::CramMd5,
        Mechanism::ScramSha1,
        Mechanism::ScramSha256,
    ];
    for (i, mechanism) in forced.into_iter().enumerate() {
        let only = AuthMethod::Only(vec![Method::Sasl(mechanism)]);
        let relay = relay_with(&postfix, Some((GATEWAY, GATEWAY_PASS)), only);
        let message = format!("Subject: with {mechanism}\r\n\r\nbody\r\n");
        let results = rt
            .block_on(relay.send(None, &rcpt, message.as_bytes()))
            .unwrap_or_else(|e| panic!("{mechanism}: {e}\n{}", postfix.log()));
        assert!(
            matches!(results[0].outcome, Outcome::Delivered(_)),
            "{mechanism}: {results:?}\n{}",
            postfix.log()
        );
        rt.block_on(relay.close());
        let delivered = postfix.inside.wait_for(i + 1, Duration::from_secs(30));
        assert_eq!(delivered.len(), i + 1, "{mechanism}:\n{}", postfix.log());
        let subject = format!("Subject: with {mechanism}");
        assert!(
            String::from_utf8_lossy(&delivered[i].message).contains(&subject),
            "{mechanism}: the message that arrived is this one"
        );
        let log = postfix.log();
        assert!(
            log.contains(&format!("sasl_method={mechanism}, sasl_username=gateway")),
            "Postfix logs {mechanism}:\n{log}"
        );
    }

    // NTLM is not in this Dovecot's auth_mechanisms, so Postfix does not offer it.
    let spa = AuthMethod::Only(vec![Method::Sasl(Mechanism::Ntlm)]);
    let relay = relay_with(&postfix, Some((GATEWAY, GATEWAY_PASS)), spa);
    let err = rt
        .block_on(relay.send(None, &rcpt, b"Subject: never\r\n\r\nbody\r\n"))
        .expect_err("a mechanism the relay does not offer must fail");
    let shown = err.to_string();
    assert!(
        matches!(&err, RelayError::AuthUnavailable { .. }),
        "{err:?}"
    );
    assert!(shown.contains("ntlm"), "names what was forced: {shown}");
    assert!(shown.contains("relay.auth_mechanisms"), "{shown}");
    assert!(
        shown.contains("EHLO: AUTH"),
        "names what is offered: {shown}"
    );
    assert!(!shown.contains(GATEWAY_PASS));
    assert_eq!(
        postfix.inside.transactions().len(),
        forced.len(),
        "nothing sent"
    );
    assert!(
        !postfix.log().contains("authentication failed"),
        "no credential went out:\n{}",
        postfix.log()
    );
}
