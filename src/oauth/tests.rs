//! Tests of the pure parts (URLs, HTTP replies, token and device replies as we read them),
//! of the `oauth2` crate's requests over our HTTP against a scripted endpoint (forms,
//! errors, rotation, refusals, the device-code polling), and that no token or secret shows
//! in a `Debug` or an error.

use std::time::Duration;

use oauth2::{DeviceAuthorizationResponse, TokenResponse};

use super::http::{Endpoint, parse_response};
use super::reply::{DeviceMessage, Granted, is_refusal};
use super::{OAuthError, login_command};

#[test]
fn endpoints_are_split_and_loopback_is_recognised() {
    let e = Endpoint::parse("https://login.microsoftonline.com/t/oauth2/v2.0/token").unwrap();
    assert_eq!(
        e,
        Endpoint {
            https: true,
            host: "login.microsoftonline.com".into(),
            port: 443,
            path: "/t/oauth2/v2.0/token".into(),
        }
    );
    assert!(!e.is_loopback());
    let e = Endpoint::parse("http://127.0.0.1:8080").unwrap();
    assert_eq!((e.port, e.path.as_str(), e.https), (8080, "/", false));
    assert!(e.is_loopback());
    let e = Endpoint::parse("http://[::1]:9/x?y=1").unwrap();
    assert_eq!(
        (e.host.as_str(), e.port, e.path.as_str()),
        ("::1", 9, "/x?y=1")
    );
    assert!(e.is_loopback());
    assert!(Endpoint::parse("http://localhost/t").unwrap().is_loopback());
    assert!(!Endpoint::parse("http://10.0.0.1/t").unwrap().is_loopback());
    for bad in [
        "ftp://x/",
        "https://",
        "https://x:0/",
        "https://x:99999/",
        "https://u:p@x/",
        "https://x/a b",
    ] {
        assert!(Endpoint::parse(bad).is_err(), "{bad}");
    }
}

#[test]
fn replies_are_read_by_length_chunks_or_to_the_end() {
    let r = parse_response(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}extra").unwrap();
    assert_eq!((r.status, r.body.as_slice()), (200, &b"{}"[..]));
    let r = parse_response(
        b"HTTP/1.1 400 Bad\r\nTransfer-Encoding: chunked\r\n\r\n3\r\n{\"a\r\n4;x=y\r\n\":1}\r\n0\r\n\r\n",
    )
    .unwrap();
    assert_eq!((r.status, r.body.as_slice()), (400, &b"{\"a\":1}"[..]));
    let r = parse_response(b"HTTP/1.0 200 OK\r\n\r\n{\"x\":2}").unwrap();
    assert_eq!(r.body, b"{\"x\":2}");
    assert!(parse_response(b"SSH-2.0-OpenSSH\r\n\r\n").is_err());
    assert!(parse_response(b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n{}").is_err());
    assert!(
        parse_response(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab").is_err()
    );
}

#[test]
fn token_replies_give_the_token_its_lifetime_and_a_rotated_refresh_token() {
    let read = |body: &[u8]| serde_json::from_slice::<Granted>(body);
    let body = br#"{"access_token":"AT-123","token_type":"Bearer","expires_in":"3599","refresh_token":"RT-9"}"#;
    let g = read(body).unwrap();
    assert_eq!(g.access().unwrap().expose(), "AT-123");
    assert_eq!(g.lifetime(), Duration::from_secs(3599));
    assert_eq!(g.refresh().as_ref().map(|t| t.expose()), Some("RT-9"));
    // Debug of what holds tokens shows none of them.
    let shown = format!("{g:?}");
    assert!(
        !shown.contains("AT-123") && !shown.contains("RT-9"),
        "{shown}"
    );

    // No token_type, no lifetime, an empty refresh token: a token all the same.
    let g = read(br#"{"access_token":"A","expires_in":3600,"refresh_token":""}"#).unwrap();
    assert_eq!(g.expires_in(), Some(Duration::from_secs(3600)));
    assert!(g.refresh().is_none());
    let g = read(br#"{"access_token":"A"}"#).unwrap();
    assert_eq!(
        (g.lifetime(), g.refresh().is_none()),
        (Duration::from_secs(3600), true)
    );
    assert!(read(br#"{"access_token":""}"#).unwrap().access().is_none());
    assert!(read(br#"{"token_type":"Bearer"}"#).is_err());
    assert!(is_refusal("invalid_grant"));
    assert!(!is_refusal("temporarily_unavailable"));
    assert!(!is_refusal("authorization_pending"));
}

#[test]
fn device_replies_of_microsoft_and_google() {
    let read =
        |body: &[u8]| serde_json::from_slice::<DeviceAuthorizationResponse<DeviceMessage>>(body);
    let ms = br#"{"device_code":"DC","user_code":"ABCD-EFGH","verification_uri":"https://microsoft.com/devicelogin","expires_in":900,"interval":5,"message":"To sign in, use a web browser"}"#;
    let d = read(ms).unwrap();
    assert_eq!(d.user_code().secret(), "ABCD-EFGH");
    assert_eq!(
        d.verification_uri().as_str(),
        "https://microsoft.com/devicelogin"
    );
    assert_eq!(
        (d.interval(), d.expires_in()),
        (Duration::from_secs(5), Duration::from_secs(900))
    );
    assert!(d.extra_fields().message.is_some());
    assert!(!format!("{d:?}").contains("\"DC\""));
    let google = br#"{"device_code":"DC","user_code":"XYZ","verification_url":"https://www.google.com/device","expires_in":1800}"#;
    let d = read(google).unwrap();
    assert_eq!(
        d.verification_uri().as_str(),
        "https://www.google.com/device"
    );
    assert_eq!(d.interval(), Duration::from_secs(5));
    assert!(d.extra_fields().message.is_none());
}

#[test]
fn a_refusal_says_what_to_run_and_counts_as_refused() {
    let e = OAuthError::NoRefreshToken {
        account: "gmail".into(),
        path: "/var/lib/mailferry/oauth/gmail.refresh_token".into(),
        command: login_command("gmail"),
    };
    assert!(e.is_refusal());
    assert!(
        e.to_string()
            .contains("run `mailferry oauth login --config <config file> --account gmail`"),
        "{e}"
    );
    let e = OAuthError::Unreachable {
        endpoint: "login.microsoftonline.com:443".into(),
        why: "no reply within 30s".into(),
    };
    assert!(!e.is_refusal());
}

/// A token endpoint on loopback that answers each request with the next of `replies`
/// (status, JSON), whatever its path, and records each request (head and body); after the
/// last it closes.
async fn endpoint(
    replies: Vec<(u16, &'static str)>,
) -> (String, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/token", listener.local_addr().unwrap());
    let bodies = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = bodies.clone();
    tokio::spawn(async move {
        for (status, json) in replies {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut raw = Vec::new();
            let mut buf = [0u8; 4096];
            // The whole request: headers, then Content-Length bytes.
            loop {
                let n = s.read(&mut buf).await.unwrap();
                raw.extend_from_slice(&buf[..n]);
                let text = String::from_utf8_lossy(&raw).into_owned();
                if let Some((head, body)) = text.split_once("\r\n\r\n") {
                    let len: usize = head
                        .lines()
                        .find_map(|l| l.strip_prefix("Content-Length: "))
                        .and_then(|v| v.trim().parse().ok())
                        .unwrap_or(0);
                    if body.len() >= len {
                        seen.lock().unwrap().push(text.clone());
                        break;
                    }
                }
            }
            let reply = format!(
                "HTTP/1.1 {status} X\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{json}",
                json.len()
            );
            s.write_all(reply.as_bytes()).await.unwrap();
        }
    });
    (url, bodies)
}

/// A refresh-token account `unit` whose token endpoint is `token_url`.
fn account(token_url: &str) -> crate::config::AccountConfig {
    let text = [
        "state_dir: /tmp/unused",
        "relay:",
        "  host: mail.corp.local",
        "domains: [example.com]",
        "postmaster: postmaster@corp.local",
        "accounts:",
        "  - name: unit",
        "    protocol: imap",
        "    host: imap.example.com",
        "    username: u@example.com",
        "    oauth:",
        "      provider: generic",
        "      client_id: cid",
        "      client_secret: CLIENT-SECRET",
        &format!("      token_url: {token_url}"),
        "",
    ]
    .join("\n");
    let config = crate::config::from_yaml_str(&text, "unit.yaml").unwrap_or_else(|e| panic!("{e}"));
    config.accounts[0].clone()
}

#[tokio::test]
async fn a_token_is_kept_until_near_expiry_and_a_rotated_refresh_token_is_saved() {
    use std::os::unix::fs::PermissionsExt;
    let (url, bodies) = endpoint(vec![
        (
            200,
            r#"{"access_token":"AT-1","expires_in":3600,"refresh_token":"RT-2"}"#,
        ),
        (200, r#"{"access_token":"AT-2","expires_in":30}"#),
        (200, r#"{"access_token":"AT-3","expires_in":3600}"#),
    ])
    .await;
    let dir = tempfile::tempdir().unwrap();
    let account = account(&url);
    let store = super::RefreshStore::new(dir.path(), "unit");
    store.save(&crate::config::Password::new("RT-1")).unwrap();
    let source = super::TokenSource::new(&account, dir.path()).unwrap();

    assert_eq!(source.access_token().await.unwrap().expose(), "AT-1");
    assert_eq!(
        store.load().unwrap().unwrap().expose(),
        "RT-2",
        "rotated and saved"
    );
    let mode = std::fs::metadata(store.path())
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600);
    // Kept: no second request.
    assert_eq!(source.access_token().await.unwrap().expose(), "AT-1");
    source.forget().await;
    // 30 s left is inside the renewal margin: the next call asks again.
    assert_eq!(source.access_token().await.unwrap().expose(), "AT-2");
    assert_eq!(source.access_token().await.unwrap().expose(), "AT-3");
    let bodies = bodies.lock().unwrap().clone();
    assert_eq!(bodies.len(), 3);
    assert!(
        bodies[0].contains("grant_type=refresh_token&refresh_token=RT-1"),
        "{}",
        bodies[0]
    );
    assert!(
        bodies[1].contains("refresh_token=RT-2"),
        "the saved token is used: {}",
        bodies[1]
    );
    assert!(!format!("{source:?}").contains("AT-3"));
}

#[tokio::test]
async fn a_refused_grant_is_not_asked_again_and_its_error_shows_no_secret() {
    let (url, bodies) = endpoint(vec![
        (
            400,
            r#"{"error":"invalid_grant","error_description":"token RT-OLD for client CLIENT-SECRET is revoked"}"#,
        ),
        (200, r#"{"access_token":"AT-9","expires_in":3600}"#),
    ])
    .await;
    let dir = tempfile::tempdir().unwrap();
    let account = account(&url);
    let store = super::RefreshStore::new(dir.path(), "unit");
    store.save(&crate::config::Password::new("RT-OLD")).unwrap();
    let source = super::TokenSource::new(&account, dir.path()).unwrap();

    for _ in 0..3 {
        let e = source.access_token().await.unwrap_err();
        assert!(e.is_refusal());
        let text = e.to_string();
        assert!(
            !text.contains("RT-OLD") && !text.contains("CLIENT-SECRET"),
            "{text}"
        );
        assert!(
            text.contains("invalid_grant") && text.contains("mailferry oauth login"),
            "{text}"
        );
    }
    assert_eq!(bodies.lock().unwrap().len(), 1, "asked once");
    // A new login's token lifts the refusal.
    std::thread::sleep(Duration::from_millis(20));
    store.save(&crate::config::Password::new("RT-NEW")).unwrap();
    assert_eq!(source.access_token().await.unwrap().expose(), "AT-9");
}

#[test]
fn a_refused_grant_waits_longer_after_each_refusal_up_to_an_hour() {
    let waits: Vec<u64> = (1..=13).map(|n| super::refused_wait(n).as_secs()).collect();
    assert_eq!(
        waits,
        [2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 3600, 3600]
    );
    assert_eq!(super::refused_wait(u32::MAX).as_secs(), 3600);
}

#[tokio::test]
async fn a_refused_grant_is_asked_again_once_its_wait_is_over() {
    let refused = r#"{"error":"invalid_grant"}"#;
    let (url, bodies) = endpoint(vec![(400, refused), (400, refused)]).await;
    let dir = tempfile::tempdir().unwrap();
    let store = super::RefreshStore::new(dir.path(), "unit");
    store.save(&crate::config::Password::new("RT-OLD")).unwrap();
    let source = super::TokenSource::new(&account(&url), dir.path()).unwrap();
    assert!(source.access_token().await.unwrap_err().is_refusal());
    assert!(source.access_token().await.unwrap_err().is_refusal());
    assert_eq!(bodies.lock().unwrap().len(), 1, "not within the first wait");
    tokio::time::sleep(super::refused_wait(1) + Duration::from_millis(100)).await;
    let e = source.access_token().await.unwrap_err();
    assert!(e.to_string().contains("mailferry oauth login"), "{e}");
    assert_eq!(
        bodies.lock().unwrap().len(),
        2,
        "asked again after the wait"
    );
}

/// `e` says `expected` and none of the `secrets`.
fn assert_says(e: &OAuthError, expected: &str, secrets: &[&str]) {
    let text = e.to_string();
    assert!(text.contains(expected), "{expected:?} in {text}");
    for secret in secrets {
        assert!(!text.contains(secret), "{secret} in {text}");
    }
}

/// [`account`] with the client-credentials grant and `scope`.
fn app_account(token_url: &str, scope: &str) -> crate::config::AccountConfig {
    let mut account = account(token_url);
    let oauth = account.oauth.as_mut().unwrap();
    oauth.grant = crate::config::OAuthGrant::ClientCredentials;
    oauth.scope = scope.to_owned();
    account
}

#[tokio::test]
async fn the_crate_sends_its_form_in_the_body_over_our_http() {
    let (url, requests) =
        endpoint(vec![(200, r#"{"access_token":"AT-1","expires_in":3600}"#)]).await;
    let dir = tempfile::tempdir().unwrap();
    let account = app_account(&url, "https://x/.default offline_access");
    let source = super::TokenSource::new(&account, dir.path()).unwrap();
    assert_eq!(source.access_token().await.unwrap().expose(), "AT-1");
    let request = requests.lock().unwrap()[0].clone();
    let port = url
        .trim_start_matches("http://127.0.0.1:")
        .trim_end_matches("/token");
    assert!(request.starts_with("POST /token HTTP/1.1\r\n"), "{request}");
    assert!(
        request.contains(&format!("\r\nHost: 127.0.0.1:{port}\r\n")),
        "{request}"
    );
    assert!(
        request.contains("\r\naccept: application/json\r\n"),
        "{request}"
    );
    assert!(
        !request.to_ascii_lowercase().contains("authorization:"),
        "{request}"
    );
    let body = request.split_once("\r\n\r\n").unwrap().1;
    for pair in [
        "grant_type=client_credentials",
        "client_id=cid",
        "client_secret=CLIENT-SECRET",
        "scope=https%3A%2F%2Fx%2F.default+offline_access",
    ] {
        assert!(body.split('&').any(|p| p == pair), "{pair} in {body}");
    }
}

#[tokio::test]
async fn a_reply_that_is_not_oauth_is_said_without_quoting_it() {
    let (url, requests) = endpoint(vec![
        (502, "<html>bad gateway AT-123</html>"),
        (
            400,
            r#"{"error":"temporarily_unavailable","error_description":"busy, CLIENT-SECRET"}"#,
        ),
        (200, r#"{"access_token":5,"note":"AT-123"}"#),
        (200, r#"{"access_token":"","expires_in":3600}"#),
    ])
    .await;
    let dir = tempfile::tempdir().unwrap();
    let source = super::TokenSource::new(&app_account(&url, ""), dir.path()).unwrap();
    for expected in [
        "HTTP 502 without a JSON token reply",
        "temporarily_unavailable busy, ***",
        "HTTP 200 without a JSON token reply",
        "HTTP 200 with an empty access token",
    ] {
        let e = source.access_token().await.unwrap_err();
        assert!(!e.is_refusal(), "{e}");
        assert_says(&e, expected, &["AT-123", "CLIENT-SECRET"]);
    }
    assert_eq!(
        requests.lock().unwrap().len(),
        4,
        "each asked again: none is a refusal"
    );
}

/// [`account`] with its device endpoint on the same scripted server.
fn device_account(url: &str) -> crate::config::AccountConfig {
    let mut account = account(url);
    account.oauth.as_mut().unwrap().device_url = Some(url.to_owned());
    account
}

const DEVICE: &str = r#"{"device_code":"DC-1","user_code":"UC-1","verification_uri":"https://idp.test/device","expires_in":60,"interval":0,"message":"Go there."}"#;

#[tokio::test]
async fn the_device_login_polls_until_consent_and_stores_the_refresh_token() {
    let (url, requests) = endpoint(vec![
        (200, DEVICE),
        (400, r#"{"error":"authorization_pending"}"#),
        (400, r#"{"error":"authorization_pending"}"#),
        (
            200,
            r#"{"access_token":"AT-D","refresh_token":"RT-D","expires_in":3600}"#,
        ),
    ])
    .await;
    let dir = tempfile::tempdir().unwrap();
    let mut out = Vec::new();
    let path = super::device::login(&device_account(&url), dir.path(), &mut out)
        .await
        .unwrap();
    let printed = String::from_utf8(out).unwrap();
    assert!(
        printed.contains("open  https://idp.test/device\n  enter UC-1\n"),
        "{printed}"
    );
    assert!(printed.contains("Go there."), "{printed}");
    assert!(
        !printed.contains("DC-1") && !printed.contains("RT-D"),
        "{printed}"
    );
    let store = super::RefreshStore::new(dir.path(), "unit");
    assert_eq!(path, store.path().display().to_string());
    assert_eq!(store.load().unwrap().unwrap().expose(), "RT-D");
    let requests = requests.lock().unwrap().clone();
    assert_eq!(requests.len(), 4);
    assert!(
        !requests[0].contains("client_secret"),
        "the device endpoint is asked with the client id alone: {}",
        requests[0]
    );
    for poll in &requests[1..] {
        assert!(
            poll.contains("grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Adevice_code")
                && poll.contains("device_code=DC-1")
                && poll.contains("client_secret=CLIENT-SECRET"),
            "{poll}"
        );
    }
}

#[tokio::test]
async fn the_device_login_ends_on_a_refusal_an_expiry_or_a_broken_endpoint() {
    let cases: [(Vec<(u16, &'static str)>, &str); 4] = [
        (
            vec![(200, DEVICE), (400, r#"{"error":"access_denied"}"#)],
            "oauth login: consent was refused",
        ),
        (
            vec![(200, DEVICE), (400, r#"{"error":"expired_token"}"#)],
            "the code expired before consent was given",
        ),
        (
            vec![
                (200, DEVICE),
                (
                    400,
                    r#"{"error":"invalid_client","error_description":"no CLIENT-SECRET"}"#,
                ),
            ],
            "the server refused: invalid_client no ***",
        ),
        // The device code, then nothing listens: the login ends at once, not at expiry.
        (
            vec![(200, DEVICE)],
            "cannot get an OAuth2 token from 127.0.0.1:",
        ),
    ];
    for (replies, expected) in cases {
        let (url, _) = endpoint(replies).await;
        let dir = tempfile::tempdir().unwrap();
        let (account, mut out) = (device_account(&url), Vec::new());
        let login = super::device::login(&account, dir.path(), &mut out);
        let e = tokio::time::timeout(Duration::from_secs(10), login)
            .await
            .expect("the login ends")
            .unwrap_err();
        assert_says(&e, expected, &["CLIENT-SECRET", "DC-1"]);
        assert!(
            super::RefreshStore::new(dir.path(), "unit")
                .load()
                .unwrap()
                .is_none()
        );
    }
    // The device endpoint refuses the client: said at once.
    let (url, _) = endpoint(vec![(400, r#"{"error":"invalid_client"}"#)]).await;
    let dir = tempfile::tempdir().unwrap();
    let e = super::device::login(&device_account(&url), dir.path(), &mut Vec::new())
        .await
        .unwrap_err();
    assert!(
        e.to_string().contains("the server refused: invalid_client"),
        "{e}"
    );
}
