//! Login against the scripted fake: quoting and literals for any password, AUTHENTICATE
//! PLAIN with and without SASL-IR, STARTTLS required or optional, and no credential on the
//! wire when the connection is not as secure as the account requires.

use super::tests::{PASSWORD, account, fake, log};
use super::{ImapClient, ImapError};
use crate::config::{Password, TlsMode};
use crate::testkit::Split;
use crate::testkit::script::{Step, send};
use crate::testkit::tls::test_ca;

/// A server that offers what `capabilities` says and expects `login` lines after greeting.
async fn login_with(capabilities: &str, password: &str, login: Vec<Step>) -> Vec<String> {
    let mut script = vec![Step::Send(
        format!("* OK [CAPABILITY IMAP4rev1 {capabilities}] ready\r\n").into_bytes(),
    )];
    script.extend(login);
    script.push(Step::Hang);
    let fake = fake(script, Split::Whole, None).await;
    let mut acct = account(fake.addr(), TlsMode::None);
    acct.password = Password::new(password);
    let client = ImapClient::connect(&acct).await.unwrap();
    client.logout().await;
    fake.finish().await
}

#[tokio::test]
async fn login_quotes_and_escapes_special_characters() {
    let received = login_with(
        "",
        r#"<p> & 'q' "x" \y"#,
        vec![
            Step::Expect(r#"A1 LOGIN "alice" "<p> & 'q' \"x\" \\y""#),
            send("A1 OK [CAPABILITY IMAP4rev1] Logged in\r\n"),
        ],
    )
    .await;
    assert_eq!(received.last().unwrap(), "A2 LOGOUT");
}

#[tokio::test]
async fn login_sends_a_non_ascii_password_as_a_literal_after_the_go_ahead() {
    let password = "pässwörd€";
    let received = login_with(
        "",
        password,
        vec![
            Step::Expect("A1 LOGIN \"alice\" {13}"),
            send("+ Ready for literal data\r\n"),
            Step::Expect("pässwörd€"),
            send("A1 OK Logged in\r\n"),
            Step::Expect("A2 CAPABILITY"),
            send("* CAPABILITY IMAP4rev1 UIDPLUS\r\nA2 OK done\r\n"),
        ],
    )
    .await;
    assert_eq!(password.len(), 13);
    assert_eq!(received.len(), 4, "{received:?}");
}

#[tokio::test]
async fn login_uses_a_non_synchronizing_literal_with_literal_plus() {
    login_with(
        "LITERAL+",
        "grüße",
        vec![
            Step::Expect("A1 LOGIN \"alice\" {7+}"),
            Step::Expect("grüße"),
            send("A1 OK [CAPABILITY IMAP4rev1] Logged in\r\n"),
        ],
    )
    .await;
}

#[tokio::test]
async fn authenticate_plain_with_an_initial_response() {
    // base64("\0alice\0pässwörd")
    let received = login_with(
        "SASL-IR AUTH=PLAIN LOGINDISABLED",
        "pässwörd",
        vec![
            Step::Expect("A1 AUTHENTICATE PLAIN AGFsaWNlAHDDpHNzd8O2cmQ="),
            send("A1 OK [CAPABILITY IMAP4rev1] Logged in\r\n"),
        ],
    )
    .await;
    assert!(
        !received.iter().any(|l| l.contains("LOGIN ")),
        "{received:?}"
    );
}

#[tokio::test]
async fn authenticate_plain_waits_for_the_go_ahead_without_sasl_ir() {
    login_with(
        "AUTH=PLAIN",
        PASSWORD,
        vec![
            Step::Expect("A1 AUTHENTICATE PLAIN"),
            send("+ \r\n"),
            Step::Expect("AGFsaWNlAHMzY3JldA=="),
            send("A1 OK [CAPABILITY IMAP4rev1] Logged in\r\n"),
        ],
    )
    .await;
}

/// Connects with `tls` to a fake playing `script` (then waiting), expecting a refusal: the
/// error, and every line the client sent.
async fn refused(mut script: Vec<Step>, tls: TlsMode) -> (ImapError, Vec<String>) {
    script.push(Step::Hang);
    let fake = fake(script, Split::Whole, None).await;
    let err = ImapClient::connect(&account(fake.addr(), tls))
        .await
        .unwrap_err();
    (err, fake.finish().await)
}

#[tokio::test]
async fn login_disabled_without_plain_sends_nothing_secret() {
    let (err, received) = refused(
        vec![send(
            "* OK [CAPABILITY IMAP4rev1 LOGINDISABLED AUTH=GSSAPI] ready\r\n",
        )],
        TlsMode::None,
    )
    .await;
    assert!(matches!(err, ImapError::NoLoginMethod(_)), "{err}");
    assert!(received.is_empty());
}

#[tokio::test]
async fn a_refused_login_is_an_auth_failure_without_the_password() {
    let (err, _) = refused(
        vec![
            send("* OK ready\r\n"),
            Step::Expect("A1 CAPABILITY"),
            send("* CAPABILITY IMAP4rev1\r\nA1 OK\r\n"),
            Step::Expect("A2 LOGIN \"alice\" \"s3cret\""),
            send("A2 NO [AUTHENTICATIONFAILED] Bad password S3CRET\r\n"),
        ],
        TlsMode::None,
    )
    .await;
    let ImapError::AuthFailed {
        text, temporary, ..
    } = &err
    else {
        panic!("{err:?}")
    };
    assert!(!temporary);
    assert_eq!(text, "[AUTHENTICATIONFAILED] Bad password ***");
    assert!(!format!("{err} {err:?}").contains("s3cret"));
}

#[tokio::test]
async fn starttls_required_but_not_offered_sends_no_credential() {
    let (err, received) = refused(
        vec![send(
            "* OK [CAPABILITY IMAP4rev1 AUTH=PLAIN SASL-IR] ready\r\n",
        )],
        TlsMode::Starttls,
    )
    .await;
    assert!(matches!(err, ImapError::StarttlsNotOffered), "{err}");
    assert!(
        received.iter().all(|l| !l.contains("AUTHENTICATE")
            && !l.contains("LOGIN")
            && !l.contains(PASSWORD)
            && !l.contains("AGFsaWNlAHMzY3JldA")),
        "a credential went on the wire: {received:?}"
    );
}

#[tokio::test]
async fn starttls_if_available_without_it_refuses_a_plaintext_login() {
    let (err, received) = refused(
        vec![send("* OK [CAPABILITY IMAP4rev1] ready\r\n")],
        TlsMode::StarttlsIfAvailable,
    )
    .await;
    assert!(matches!(err, ImapError::PlaintextRefused), "{err}");
    assert!(received.is_empty());
}

#[tokio::test]
async fn starttls_upgrades_and_asks_the_capabilities_again() {
    log();
    let ca = test_ca();
    let fake = fake(
        vec![
            send("* OK [CAPABILITY IMAP4rev1 STARTTLS LOGINDISABLED] ready\r\n"),
            Step::Expect("A1 STARTTLS"),
            send("A1 OK Begin TLS negotiation now.\r\n"),
            Step::StartTls,
            Step::Expect("A2 CAPABILITY"),
            send("* CAPABILITY IMAP4rev1 AUTH=PLAIN\r\nA2 OK\r\n"),
            Step::Expect("A3 AUTHENTICATE PLAIN"),
            send("+\r\n"),
            Step::Expect("AGFsaWNlAHMzY3JldA=="),
            send("A3 OK [CAPABILITY IMAP4rev1 UIDPLUS] Logged in\r\n"),
            Step::Hang,
        ],
        Split::Whole,
        Some(ca.acceptor.clone()),
    )
    .await;
    let mut acct = account(fake.addr(), TlsMode::Starttls);
    acct.tls_options.ca_file = Some(ca.ca_pem.clone());
    let client = ImapClient::connect(&acct).await.unwrap();
    assert!(client.is_encrypted());
    assert!(client.capabilities().has("UIDPLUS"));
    client.logout().await;
    let received = fake.finish().await;
    assert_eq!(received[..2], ["A1 STARTTLS", "[TLS]"]);
}

#[tokio::test]
async fn data_injected_after_the_starttls_reply_is_refused() {
    let (err, received) = refused(
        vec![
            send("* OK [CAPABILITY IMAP4rev1 STARTTLS] ready\r\n"),
            Step::Expect("A1 STARTTLS"),
            send("A1 OK Begin TLS\r\n* CAPABILITY IMAP4rev1 AUTH=PLAIN\r\n"),
        ],
        TlsMode::Starttls,
    )
    .await;
    assert!(matches!(err, ImapError::Protocol(_)), "{err}");
    assert_eq!(received, ["A1 STARTTLS"]);
}

#[tokio::test]
async fn preauth_needs_no_login_but_cannot_be_upgraded() {
    // In the clear, as the account allows: no credential is sent at all.
    let fake = fake(
        vec![
            send("* PREAUTH [CAPABILITY IMAP4rev1 UIDPLUS] logged in as alice\r\n"),
            Step::Hang,
        ],
        Split::Whole,
        None,
    )
    .await;
    let client = ImapClient::connect(&account(fake.addr(), TlsMode::None))
        .await
        .unwrap();
    assert!(client.capabilities().has("UIDPLUS"));
    client.logout().await;
    assert_eq!(fake.finish().await, ["A1 LOGOUT"]);

    // STARTTLS is not allowed after authentication: a required one fails.
    let (err, received) = refused(
        vec![send("* PREAUTH [CAPABILITY IMAP4rev1 STARTTLS] hi\r\n")],
        TlsMode::Starttls,
    )
    .await;
    assert!(matches!(err, ImapError::StarttlsNotOffered), "{err}");
    assert!(received.is_empty());
}
