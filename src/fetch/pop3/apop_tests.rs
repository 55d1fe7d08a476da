//! APOP (`auth: apop`) against the scripted fake: the digest in place of the password, and
//! nothing at all sent when the greeting offers no APOP.

use super::tests::{PASSWORD, account, login_steps};
use super::{Pop3Client, Pop3Error};
use crate::config::{AccountConfig, AuthMethod, TlsMode};
use crate::sasl::Method;
use crate::testkit::Split;
use crate::testkit::script::{Scripted, Step, send};

const GREETING: &str = "+OK POP3 ready <4711.1@pop.example>\r\n";
/// MD5("<4711.1@pop.example>s3cret"), computed with Python's hashlib.
const DIGEST: &str = "8cdf51be9d8bd70d75c0343b248483bc";

/// The APOP command line the fake expects for user `alice`.
const APOP_LINE: &str = "APOP alice 8cdf51be9d8bd70d75c0343b248483bc";

fn apop_account(fake: &Scripted) -> AccountConfig {
    AccountConfig {
        auth: AuthMethod::Only(vec![Method::Apop]),
        ..account(fake.addr(), TlsMode::None)
    }
}

#[tokio::test]
async fn apop_sends_the_digest_and_never_the_password() {
    let script = vec![
        send(GREETING),
        Step::Expect("CAPA"),
        send("+OK\r\nUSER\r\nUIDL\r\n.\r\n"),
        Step::Expect(APOP_LINE),
        send("+OK logged in\r\n"),
        Step::Expect("QUIT"),
        send("+OK\r\n"),
        Step::Close,
    ];
    let fake = Scripted::start(script, Split::Whole, None).await;
    let client = Pop3Client::connect(&apop_account(&fake)).await.unwrap();
    client.quit().await.unwrap();
    let sent = fake.finish().await;
    assert!(sent.iter().all(|l| !l.contains(PASSWORD)), "{sent:?}");
}

#[tokio::test]
async fn apop_without_a_timestamp_in_the_greeting_sends_nothing() {
    let script = vec![send("+OK POP3 ready\r\n"), Step::Hang];
    let fake = Scripted::start(script, Split::Whole, None).await;
    let err = Pop3Client::connect(&apop_account(&fake)).await.unwrap_err();
    assert!(matches!(err, Pop3Error::ApopNotOffered), "{err:?}");
    assert!(!err.connection_lost());
    assert!(fake.finish().await.is_empty(), "a command was sent");
}

#[tokio::test]
async fn a_refused_apop_shows_neither_password_nor_digest() {
    let script = vec![
        send(GREETING),
        Step::Expect("CAPA"),
        send("-ERR unknown\r\n"),
        Step::Expect(APOP_LINE),
        send(&format!(
            "-ERR [AUTH] bad digest {DIGEST} for {PASSWORD}\r\n"
        )),
        Step::Hang,
    ];
    let fake = Scripted::start(script, Split::Whole, None).await;
    let err = Pop3Client::connect(&apop_account(&fake)).await.unwrap_err();
    let Pop3Error::AuthFailed { text, .. } = &err else {
        panic!("{err:?}");
    };
    assert_eq!(text, "[AUTH] bad digest *** for ***");
    fake.finish().await;
}

#[tokio::test]
async fn without_auth_apop_a_timestamp_changes_nothing() {
    let mut script = login_steps("+OK\r\nUSER\r\n.\r\n");
    script[0] = send(GREETING);
    script.extend([Step::Expect("QUIT"), send("+OK\r\n"), Step::Close]);
    let fake = Scripted::start(script, Split::Whole, None).await;
    let client = Pop3Client::connect(&account(fake.addr(), TlsMode::None))
        .await
        .unwrap();
    client.quit().await.unwrap();
    fake.finish().await;
}
