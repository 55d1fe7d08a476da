//! The relay's SMTP AUTH against a real internal server that demands it: a private Postfix
//! (`smtpd_sasl_type = dovecot`, unauthenticated mail refused) checking logins through a real
//! Dovecot's authentication socket, which offers PLAIN, LOGIN, CRAM-MD5 and SCRAM. The relay
//! runs in process (`SmtpRelay`), over plain text with `tls: none` as the test Postfix speaks
//! no TLS. With `relay.oauth`, the same Postfix checks XOAUTH2 through a Dovecot whose `oauth2`
//! passdb asks the test's token service; that test runs the real binary (`poll-once`,
//! `test-connection`) on a POP3 mailbox of that Dovecot.

mod support;

use std::time::Duration;

use mailferry::address::Address;
use mailferry::config::{AuthMethod, Password, RelayAuth, RelayConfig, RetryPolicy, TlsMode};
use mailferry::recipient::Status;
use mailferry::relay::{Relay, RelayError, SmtpRelay};
use mailferry::sasl::{Mechanism, Method};
use support::{
    AccountYaml, CLIENT_ID, CLIENT_SECRET, Dovecot, GatewayConfig, Postfix, Secret, TokenPolicy,
    TokenService, message, poll_once, run_mailferry,
};

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
            oauth: None,
            state_dir: Default::default(),
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
        matches!(&results[0].status, Status::Permanent(r) if r.code == 554),
        "{results:?}"
    );

    let good = relay(&postfix, Some((GATEWAY, GATEWAY_PASS)));
    let results = rt
        .block_on(good.send(None, &rcpt, message))
        .unwrap_or_else(|e| panic!("{e}\n{}", postfix.log()));
    assert!(
        matches!(results[0].status, Status::Delivered(_)),
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
            matches!(results[0].status, Status::Delivered(_)),
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

const RELAY_USER: &str = "gateway@corp.test";
const MAILBOX: &str = "box@remote.test";
const MAILBOX_PASS: &str = "box-pass";

/// `relay.oauth` with the refresh-token grant: the relay logs in with XOAUTH2 and delivers;
/// `test-connection` names the mechanism; once the refresh token is revoked at the token
/// service, the pass fails with the clear error and the message stays upstream.
#[test]
fn the_relay_logs_in_with_xoauth2_and_a_revoked_token_is_a_clear_error_that_deletes_nothing() {
    if support::skip_e2e() {
        return;
    }
    let service = TokenService::start(TokenPolicy {
        app_user: RELAY_USER.to_owned(),
        announced: Duration::from_secs(3600),
        valid_for: Duration::from_secs(600),
        interval: Duration::from_secs(1),
    });
    let dovecot = Dovecot::start_oauth(
        &[(MAILBOX, MAILBOX_PASS), (RELAY_USER, "no-password-login")],
        &service.url("/introspect"),
    );
    let postfix = Postfix::start_with_auth(&["example.com"], &dovecot.auth_socket());
    let dir = tempfile::tempdir().expect("a temporary directory");
    let state = dir.path().join("state");
    std::fs::create_dir_all(state.join("oauth")).expect("the oauth directory");
    let refresh_file = state.join("oauth/@relay.refresh_token");
    std::fs::write(&refresh_file, service.issue_refresh(RELAY_USER)).expect("a refresh token");
    let mut config = GatewayConfig::new(&state, postfix.port())
        .domains(&["example.com"])
        .postmaster("postmaster@example.com");
    for line in [
        format!("username: {RELAY_USER}"),
        "auth_mechanisms: [xoauth2]".to_owned(),
        "oauth:".to_owned(),
        "  provider: generic".to_owned(),
        format!("  client_id: {CLIENT_ID}"),
        format!("  client_secret: {CLIENT_SECRET}"),
        format!("  token_url: {}", service.url("/token")),
    ] {
        config = config.relay_line(&line);
    }
    let config = config
        .account(AccountYaml {
            name: "box".into(),
            port: dovecot.pop3s_port(),
            tls: "tls".into(),
            ca_file: Some(dovecot.ca_file()),
            username: MAILBOX.into(),
            password: Secret::Inline(MAILBOX_PASS.into()),
            extra_lines: vec![
                "mode: single-user".into(),
                "deliver_to: alice@example.com".into(),
            ],
            ..AccountYaml::default()
        })
        .write(dir.path())
        .display()
        .to_string();
    let deliver = |subject: &str| {
        dovecot.deliver(
            MAILBOX,
            &message(&[("From", "x@remote.test"), ("Subject", subject)], "hi\n"),
        )
    };

    // test-connection logs in as the relay would, and names the mechanism.
    let out = run_mailferry(&["test-connection", "--config", &config]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(out.status.code(), Some(0), "{text}\n{}", postfix.log());
    let auth_line = text
        .lines()
        .skip_while(|l| !l.starts_with("relay "))
        .find(|l| l.trim_start().starts_with("ok") && l.contains("authenticate"))
        .unwrap_or_else(|| panic!("no ok authenticate step for the relay:\n{text}"));
    assert!(
        auth_line.contains("AUTH XOAUTH2") && auth_line.contains(RELAY_USER),
        "{auth_line}"
    );

    deliver("through xoauth2");
    let out = poll_once(&config);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{stderr}\n{}", postfix.log());
    assert!(
        postfix.wait_queue_empty(Duration::from_secs(30)),
        "{}",
        postfix.log()
    );
    let delivered = postfix.inside.wait_for(1, Duration::from_secs(10));
    assert_eq!(delivered.len(), 1, "{}", postfix.log());
    assert_eq!(delivered[0].rcpts, ["alice@example.com"]);
    assert!(
        postfix
            .log()
            .contains(&format!("sasl_method=XOAUTH2, sasl_username={RELAY_USER}")),
        "Postfix logs the XOAUTH2 login:\n{}",
        postfix.log()
    );
    assert_eq!(dovecot.count(MAILBOX), 0, "deleted once delivered");
    assert!(stderr.contains("logged in with AUTH XOAUTH2"), "{stderr}");

    // Consent revoked: the token is refused, nothing is sent, nothing deleted upstream.
    service.revoke_refresh_tokens();
    deliver("after revocation");
    let out = poll_once(&config);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "{stderr}");
    let clear = "consent revoked or the token expired: run `mailferry oauth login --config <config file> --relay` again";
    assert!(
        stderr.contains(clear) || stdout.contains(clear),
        "{stdout}\n{stderr}"
    );
    assert_eq!(dovecot.count(MAILBOX), 1, "nothing deleted upstream");
    assert_eq!(
        postfix.inside.transactions().len(),
        1,
        "nothing more delivered"
    );
    for body in service.bodies() {
        for token in body
            .split(['&', '='])
            .filter(|t| t.starts_with("at-") || t.starts_with("rt-"))
        {
            assert!(
                !stderr.contains(token) && !stdout.contains(token),
                "{token} leaked"
            );
        }
    }
    assert!(!stderr.contains(CLIENT_SECRET) && !text.contains(CLIENT_SECRET));
}
