//! Tests of the pure parts (URLs, HTTP replies, form bodies, token and device replies) and
//! that no token or secret shows in a `Debug` or an error.

use std::time::Duration;

use super::http::{Endpoint, form, parse_response};
use super::reply::{TokenReply, device_reply, is_refusal, token_reply};
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
fn forms_are_url_encoded() {
    assert_eq!(
        form(&[
            ("scope", "https://x/.default offline_access"),
            ("k", "a&b=c~")
        ]),
        "scope=https%3A%2F%2Fx%2F.default+offline_access&k=a%26b%3Dc~"
    );
}

#[test]
fn token_replies_give_the_token_its_lifetime_and_a_rotated_refresh_token() {
    let body = br#"{"access_token":"AT-123","token_type":"Bearer","expires_in":"3599","refresh_token":"RT-9"}"#;
    let TokenReply::Granted(g) = token_reply(200, body).unwrap() else {
        panic!("not granted");
    };
    assert_eq!(g.access_token.expose(), "AT-123");
    assert_eq!(g.lifetime, Duration::from_secs(3599));
    assert_eq!(g.refresh_token.as_ref().map(|t| t.expose()), Some("RT-9"));
    // Debug of what holds tokens shows none of them.
    let shown = format!("{g:?}");
    assert!(
        !shown.contains("AT-123") && !shown.contains("RT-9"),
        "{shown}"
    );

    let TokenReply::Granted(g) = token_reply(200, br#"{"access_token":"A"}"#).unwrap() else {
        panic!("not granted");
    };
    assert_eq!(
        (g.lifetime, g.refresh_token.is_none()),
        (Duration::from_secs(3600), true)
    );

    let body = br#"{"error":"invalid_grant","error_description":"AADSTS70008: expired"}"#;
    match token_reply(400, body).unwrap() {
        TokenReply::Error { code, description } => {
            assert_eq!(code, "invalid_grant");
            assert_eq!(description, "AADSTS70008: expired");
            assert!(is_refusal(&code));
        }
        other => panic!("{other:?}"),
    }
    assert!(!is_refusal("temporarily_unavailable"));
    assert!(!is_refusal("authorization_pending"));
    let err = token_reply(502, b"<html>bad gateway AT-123</html>").unwrap_err();
    assert!(err.contains("502") && !err.contains("AT-123"), "{err}");
    assert!(token_reply(200, br#"{"token_type":"Bearer"}"#).is_err());
}

#[test]
fn device_replies_of_microsoft_and_google() {
    let ms = br#"{"device_code":"DC","user_code":"ABCD-EFGH","verification_uri":"https://microsoft.com/devicelogin","expires_in":900,"interval":5,"message":"To sign in, use a web browser"}"#;
    let d = device_reply(200, ms).unwrap();
    assert_eq!(d.user_code, "ABCD-EFGH");
    assert_eq!(d.verification_uri, "https://microsoft.com/devicelogin");
    assert_eq!(
        (d.interval, d.lifetime),
        (Duration::from_secs(5), Duration::from_secs(900))
    );
    assert!(d.message.is_some());
    assert!(!format!("{d:?}").contains("\"DC\""));
    let google = br#"{"device_code":"DC","user_code":"XYZ","verification_url":"https://www.google.com/device","expires_in":1800}"#;
    let d = device_reply(200, google).unwrap();
    assert_eq!(d.verification_uri, "https://www.google.com/device");
    assert_eq!(d.interval, Duration::from_secs(5));
    let err = device_reply(400, br#"{"error":"invalid_client"}"#).unwrap_err();
    assert!(err.contains("invalid_client"), "{err}");
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
