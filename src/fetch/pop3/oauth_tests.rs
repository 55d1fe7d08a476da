//! An OAuth2 account over POP3 against the scripted fake: XOAUTH2 goes as `AUTH XOAUTH2` and
//! the token on a line of its own (what Office 365 takes); without a token nothing is sent.

use super::tests::account;
use super::{Pop3Client, Pop3Error};
use crate::config::{AccountConfig, OAuthConfig, OAuthGrant, OAuthProvider, Password, TlsMode};
use crate::sasl::{Mechanism, Method};
use crate::testkit::Split;
use crate::testkit::script::{Scripted, Step, send};

/// `user=alice^Aauth=Bearer tok-123^A^A` in base64.
const XOAUTH2_LINE: &str = "dXNlcj1hbGljZQFhdXRoPUJlYXJlciB0b2stMTIzAQE=";

fn oauth_account(fake: &Scripted) -> AccountConfig {
    AccountConfig {
        password: Password::new(""),
        oauth: Some(OAuthConfig {
            provider: OAuthProvider::Generic,
            grant: OAuthGrant::ClientCredentials,
            client_id: "cid".into(),
            client_secret: None,
            scope: String::new(),
            token_url: "http://127.0.0.1:1/token".into(),
            device_url: None,
            ca_file: None,
        }),
        ..account(fake.addr(), TlsMode::None)
    }
}

fn greeting_and_capa() -> Vec<Step> {
    vec![
        send("+OK POP3 ready\r\n"),
        Step::Expect("CAPA"),
        send("+OK\r\nUSER\r\nSASL PLAIN XOAUTH2\r\n.\r\n"),
    ]
}

#[tokio::test]
async fn xoauth2_sends_the_token_on_a_line_of_its_own() {
    let mut script = greeting_and_capa();
    script.extend([
        Step::Expect("AUTH XOAUTH2"),
        send("+ \r\n"),
        Step::Expect(XOAUTH2_LINE),
        send("+OK logged in\r\n"),
        Step::Expect("QUIT"),
        send("+OK\r\n"),
        Step::Close,
    ]);
    let fake = Scripted::start(script, Split::Whole, None).await;
    let token = Password::new("tok-123");
    let client = Pop3Client::connect_with_token(&oauth_account(&fake), None, Some(&token))
        .await
        .unwrap();
    assert_eq!(
        client.login_method(),
        Some(Method::Sasl(Mechanism::XOAuth2))
    );
    client.quit().await.unwrap();
    fake.finish().await;
}

#[tokio::test]
async fn an_oauth_account_without_its_token_sends_no_login() {
    let fake = Scripted::start(greeting_and_capa(), Split::Whole, None).await;
    let err = Pop3Client::connect_with_token(&oauth_account(&fake), None, None)
        .await
        .unwrap_err();
    assert!(matches!(err, Pop3Error::Sasl(_)), "{err}");
    assert!(err.to_string().contains("needs an OAuth2 token"), "{err}");
    let sent = fake.finish().await;
    assert!(
        sent.iter()
            .all(|l| !l.starts_with("AUTH") && !l.starts_with("USER")),
        "{sent:?}"
    );
}
