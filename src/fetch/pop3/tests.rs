//! The client against a scripted in-process fake server on 127.0.0.1.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::protocol::{DATA_LINE_MAX, STATUS_LINE_MAX, dot_stuff};
use super::{Pop3Client, Pop3Error};
use crate::config::{AccountConfig, Mode, Password, Protocol, Retention, TlsMode};
use crate::fetch::TransportError;
use crate::testkit::Split;
use crate::testkit::script::{Scripted, Step, send};
use crate::testkit::tls::test_ca;

pub(super) const PASSWORD: &str = "s3cret";

pub(super) fn account(addr: SocketAddr, tls: TlsMode) -> AccountConfig {
    AccountConfig {
        name: "test".into(),
        protocol: Protocol::Pop3,
        host: addr.ip().to_string(),
        port: addr.port(),
        tls,
        tls_options: Default::default(),
        username: "alice".into(),
        password: Password::new(PASSWORD),
        mode: Mode::CatchAll,
        folder: "INBOX".into(),
        poll_interval: Duration::from_secs(60),
        max_per_pass: 100,
        retention: Retention::Delete,
        timeout: Duration::from_secs(10),
        pass_deadline: Duration::from_secs(1800),
        initial: None,
        expunge_every: 50,
        fetch_order: Default::default(),
        after_fetch: Default::default(),
        unseen_only: false,
        auth: Default::default(),
        idle: false,
        oauth: None,
        proxy: None,
        auth_backoff_max: crate::config::DEFAULT_AUTH_BACKOFF_MAX,
        backoff_max: crate::config::DEFAULT_BACKOFF_MAX,
        routing: Default::default(),
    }
}

/// A message with lines that need stuffing, a lone "." line, 8-bit bytes and a NUL.
const MESSAGE: &[u8] = b"Subject: caf\xc3\xa9\r\nFrom: a@b.example\r\n\r\n.\r\n..two\r\n\
    .hidden\r\nline with . inside\r\n\xff\xfe raw \x00 bytes\r\n\r\n.\r\n";

pub(super) fn login_steps(capa: &'static str) -> Vec<Step> {
    vec![
        send("+OK POP3 ready\r\n"),
        Step::Expect("CAPA"),
        send(capa),
        Step::Expect("USER alice"),
        send("+OK\r\n"),
        Step::Expect("PASS s3cret"),
        send("+OK logged in\r\n"),
    ]
}

fn full_session_script() -> Vec<Step> {
    let mut retr = b"+OK 93 octets\r\n".to_vec();
    retr.extend_from_slice(&dot_stuff(MESSAGE));
    let mut script = login_steps("+OK Capability list follows\r\nUSER\r\nUIDL\r\nTOP\r\n.\r\n");
    script.extend([
        Step::Expect("UIDL"),
        send("+OK\r\n1 uid-one\r\n2 uid-two\r\n.\r\n"),
        Step::Expect("LIST"),
        send("+OK 2 messages\r\n1 93\r\n2 10\r\n.\r\n"),
        Step::Expect("RETR 1"),
        Step::Send(retr),
        Step::Expect("DELE 1"),
        send("+OK marked\r\n"),
        Step::Expect("QUIT"),
        send("+OK bye\r\n"),
        Step::Close,
    ]);
    script
}

async fn run_full_session(split: Split) {
    let fake = Scripted::start(full_session_script(), split, None).await;
    let mut client = Pop3Client::connect(&account(fake.addr(), TlsMode::None))
        .await
        .unwrap_or_else(|e| panic!("{split:?}: {e}"));
    assert!(!client.is_encrypted());
    assert!(client.capabilities().unwrap().uidl);
    assert_eq!(
        client.uidl().await.unwrap(),
        vec![(1, "uid-one".to_string()), (2, "uid-two".to_string())],
        "{split:?}"
    );
    assert_eq!(client.list().await.unwrap(), vec![(1, 93), (2, 10)]);
    let raw = client.retr(1).await.unwrap();
    assert_eq!(
        raw,
        MESSAGE,
        "{split:?}: {:?}",
        String::from_utf8_lossy(&raw)
    );
    client.dele(1).await.unwrap();
    client.quit().await.unwrap();
    let received = fake.finish().await;
    assert_eq!(
        received,
        [
            "CAPA",
            "USER alice",
            "PASS s3cret",
            "UIDL",
            "LIST",
            "RETR 1",
            "DELE 1",
            "QUIT"
        ]
    );
}

#[tokio::test]
async fn full_session() {
    run_full_session(Split::Whole).await;
}

#[tokio::test]
async fn full_session_byte_by_byte() {
    run_full_session(Split::ByteByByte).await;
}

#[tokio::test]
async fn full_session_split_at_every_position() {
    let longest = full_session_script()
        .iter()
        .map(|s| match s {
            Step::Send(b) => b.len(),
            _ => 0,
        })
        .max()
        .unwrap();
    for k in 1..longest {
        run_full_session(Split::At(k)).await;
    }
}

#[tokio::test]
async fn server_closing_mid_retr_is_an_error_not_a_hang() {
    let mut script = login_steps("+OK\r\nUSER\r\n.\r\n");
    script.extend([
        Step::Expect("RETR 1"),
        send("+OK\r\nSubject: x\r\n\r\nhalf a mes"),
        Step::Close,
    ]);
    let fake = Scripted::start(script, Split::Whole, None).await;
    let mut acct = account(fake.addr(), TlsMode::None);
    acct.timeout = Duration::from_secs(30);
    let mut client = Pop3Client::connect(&acct).await.unwrap();
    let started = Instant::now();
    let err = tokio::time::timeout(Duration::from_secs(5), client.retr(1))
        .await
        .expect("retr hung after EOF")
        .unwrap_err();
    assert!(matches!(err, Pop3Error::ConnectionClosed), "{err:?}");
    assert!(err.connection_lost());
    assert!(started.elapsed() < Duration::from_secs(5));
    // The session is dead: nothing more goes out.
    let again = client.dele(1).await.unwrap_err();
    assert!(again.connection_lost(), "{again:?}");
    fake.finish().await;
}

#[tokio::test]
async fn server_closing_at_a_dot_line_is_not_the_end() {
    // "..\r\n" and then EOF: the message is not complete.
    let mut script = login_steps("+OK\r\nUSER\r\n.\r\n");
    script.extend([
        Step::Expect("RETR 1"),
        send("+OK\r\nx\r\n..\r\n"),
        Step::Close,
    ]);
    let fake = Scripted::start(script, Split::Whole, None).await;
    let mut client = Pop3Client::connect(&account(fake.addr(), TlsMode::None))
        .await
        .unwrap();
    let err = client.retr(1).await.unwrap_err();
    assert!(matches!(err, Pop3Error::ConnectionClosed), "{err:?}");
    fake.finish().await;
}

#[tokio::test]
async fn server_that_stops_answering_times_out() {
    let mut script = login_steps("+OK\r\nUSER\r\n.\r\n");
    script.extend([
        Step::Expect("RETR 1"),
        send("+OK\r\npartial line\r\n"),
        Step::Hang,
    ]);
    let fake = Scripted::start(script, Split::Whole, None).await;
    let mut acct = account(fake.addr(), TlsMode::None);
    acct.timeout = Duration::from_millis(300);
    let mut client = Pop3Client::connect(&acct).await.unwrap();
    let started = Instant::now();
    let err = client.retr(1).await.unwrap_err();
    assert!(
        matches!(err, Pop3Error::Transport(TransportError::Timeout(_))),
        "{err:?}"
    );
    assert!(err.connection_lost());
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(300) && waited < Duration::from_secs(3),
        "{waited:?}"
    );
    drop(client);
    fake.finish().await;
}

#[tokio::test]
async fn silent_server_times_out_at_the_greeting() {
    let fake = Scripted::start(vec![Step::Hang], Split::Whole, None).await;
    let mut acct = account(fake.addr(), TlsMode::None);
    acct.timeout = Duration::from_millis(200);
    let err = Pop3Client::connect(&acct).await.unwrap_err();
    assert!(
        matches!(err, Pop3Error::Transport(TransportError::Timeout(_))),
        "{err:?}"
    );
    assert!(fake.finish().await.is_empty());
}

#[tokio::test]
async fn starttls_required_but_not_offered_sends_no_credentials() {
    let script = vec![
        send("+OK ready\r\n"),
        Step::Expect("CAPA"),
        send("+OK\r\nUSER\r\nUIDL\r\n.\r\n"),
        Step::Hang,
    ];
    let fake = Scripted::start(script, Split::Whole, None).await;
    let err = Pop3Client::connect(&account(fake.addr(), TlsMode::Starttls))
        .await
        .unwrap_err();
    assert!(matches!(err, Pop3Error::StlsNotOffered), "{err:?}");
    assert_eq!(fake.finish().await, ["CAPA"]);
}

#[tokio::test]
async fn starttls_if_available_without_stls_refuses_plaintext_login() {
    let script = vec![
        send("+OK ready\r\n"),
        Step::Expect("CAPA"),
        send("+OK\r\nUSER\r\n.\r\n"),
        Step::Hang,
    ];
    let fake = Scripted::start(script, Split::Whole, None).await;
    let err = Pop3Client::connect(&account(fake.addr(), TlsMode::StarttlsIfAvailable))
        .await
        .unwrap_err();
    assert!(matches!(err, Pop3Error::PlaintextRefused), "{err:?}");
    assert!(!err.to_string().contains(PASSWORD));
    assert_eq!(fake.finish().await, ["CAPA"]);
}

#[tokio::test]
async fn server_without_capa_is_asked_for_stls_and_still_refused_plaintext() {
    let script = vec![
        send("+OK ready\r\n"),
        Step::Expect("CAPA"),
        send("-ERR unknown command\r\n"),
        Step::Expect("STLS"),
        send("-ERR unknown command\r\n"),
        Step::Hang,
    ];
    let fake = Scripted::start(script, Split::Whole, None).await;
    let err = Pop3Client::connect(&account(fake.addr(), TlsMode::StarttlsIfAvailable))
        .await
        .unwrap_err();
    assert!(matches!(err, Pop3Error::PlaintextRefused), "{err:?}");
    assert_eq!(fake.finish().await, ["CAPA", "STLS"]);
}

#[tokio::test]
async fn server_without_capa_logs_in_with_user_pass_when_plaintext_allowed() {
    let mut script = login_steps("-ERR what?\r\n");
    script.extend([Step::Expect("QUIT"), send("+OK\r\n"), Step::Close]);
    let fake = Scripted::start(script, Split::Whole, None).await;
    let client = Pop3Client::connect(&account(fake.addr(), TlsMode::None))
        .await
        .unwrap();
    assert!(client.capabilities().is_none());
    client.quit().await.unwrap();
    fake.finish().await;
}

#[tokio::test]
async fn auth_failure_never_shows_the_password() {
    let script = vec![
        send("+OK ready\r\n"),
        Step::Expect("CAPA"),
        send("+OK\r\nUSER\r\n.\r\n"),
        Step::Expect("USER alice"),
        send("+OK\r\n"),
        Step::Expect("PASS s3cret"),
        send("-ERR [AUTH] wrong password s3cret for alice\r\n"),
        Step::Hang,
    ];
    let fake = Scripted::start(script, Split::Whole, None).await;
    let err = Pop3Client::connect(&account(fake.addr(), TlsMode::None))
        .await
        .unwrap_err();
    let Pop3Error::AuthFailed {
        text, temporary, ..
    } = &err
    else {
        panic!("{err:?}");
    };
    assert!(!temporary);
    assert_eq!(text, "[AUTH] wrong password *** for alice");
    assert!(!err.to_string().contains(PASSWORD));
    assert!(!format!("{err:?}").contains(PASSWORD));
    fake.finish().await;
}

#[tokio::test]
async fn mailbox_in_use_is_a_temporary_auth_failure() {
    let script = vec![
        send("+OK ready\r\n"),
        Step::Expect("CAPA"),
        send("+OK\r\nUSER\r\nRESP-CODES\r\n.\r\n"),
        Step::Expect("USER alice"),
        send("+OK\r\n"),
        Step::Expect("PASS s3cret"),
        send("-ERR [IN-USE] mailbox locked by another session\r\n"),
        Step::Hang,
    ];
    let fake = Scripted::start(script, Split::Whole, None).await;
    let err = Pop3Client::connect(&account(fake.addr(), TlsMode::None))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            Pop3Error::AuthFailed {
                temporary: true,
                ..
            }
        ),
        "{err:?}"
    );
    fake.finish().await;
}

#[tokio::test]
async fn auth_plain_when_user_is_not_offered() {
    let script = vec![
        send("+OK ready\r\n"),
        Step::Expect("CAPA"),
        send("+OK\r\nSASL PLAIN\r\n.\r\n"),
        Step::Expect("AUTH PLAIN AGFsaWNlAHMzY3JldA=="),
        send("+OK welcome\r\n"),
        Step::Expect("QUIT"),
        send("+OK\r\n"),
        Step::Close,
    ];
    let fake = Scripted::start(script, Split::Whole, None).await;
    let client = Pop3Client::connect(&account(fake.addr(), TlsMode::None))
        .await
        .unwrap();
    client.quit().await.unwrap();
    fake.finish().await;
}

#[tokio::test]
async fn err_reply_leaves_the_session_usable() {
    let mut script = login_steps("+OK\r\nUSER\r\n.\r\n");
    script.extend([
        Step::Expect("RETR 9"),
        send("-ERR no such message\r\n"),
        Step::Expect("DELE 1"),
        send("+OK\r\n"),
        Step::Expect("QUIT"),
        send("-ERR some deleted messages not removed\r\n"),
        Step::Close,
    ]);
    let fake = Scripted::start(script, Split::Whole, None).await;
    let mut client = Pop3Client::connect(&account(fake.addr(), TlsMode::None))
        .await
        .unwrap();
    let err = client.retr(9).await.unwrap_err();
    let Pop3Error::ServerError { command, text } = &err else {
        panic!("{err:?}");
    };
    assert_eq!(
        (command.as_str(), text.as_str()),
        ("RETR 9", "no such message")
    );
    assert!(!err.connection_lost());
    client.dele(1).await.unwrap();
    let err = client.quit().await.unwrap_err();
    assert!(matches!(err, Pop3Error::ServerError { .. }), "{err:?}");
    fake.finish().await;
}

#[tokio::test]
async fn bad_uidl_lines_are_skipped_not_fatal() {
    let mut script = login_steps("+OK\r\nUSER\r\n.\r\n");
    script.extend([
        Step::Expect("UIDL"),
        send("+OK\r\n1 good-1\r\ngarbage\r\n3 has space\r\n4 caf\u{e9}\r\n5 good-5\r\n.\r\n"),
        Step::Expect("QUIT"),
        send("+OK\r\n"),
        Step::Close,
    ]);
    let fake = Scripted::start(script, Split::Whole, None).await;
    let mut client = Pop3Client::connect(&account(fake.addr(), TlsMode::None))
        .await
        .unwrap();
    assert_eq!(
        client.uidl().await.unwrap(),
        vec![(1, "good-1".to_string()), (5, "good-5".to_string())]
    );
    client.quit().await.unwrap();
    fake.finish().await;
}

#[tokio::test]
async fn a_message_line_longer_than_a_listing_line_is_kept_whole() {
    let mut long = b"+OK\r\nSubject: big\r\n\r\n".to_vec();
    long.extend(std::iter::repeat_n(b'a', DATA_LINE_MAX + 1));
    long.extend_from_slice(b"\r\nend\r\n.\r\n");
    let mut script = login_steps("+OK\r\nUSER\r\n.\r\n");
    script.extend([
        Step::Expect("RETR 1"),
        Step::Send(long),
        Step::Expect("NOOP"),
        send("+OK\r\n"),
        Step::Close,
    ]);
    let fake = Scripted::start(script, Split::Whole, None).await;
    let mut client = Pop3Client::connect(&account(fake.addr(), TlsMode::None))
        .await
        .unwrap();
    let raw = client.retr(1).await.unwrap();
    assert_eq!(
        raw.len(),
        b"Subject: big\r\n\r\n".len() + DATA_LINE_MAX + 1 + b"\r\nend\r\n".len()
    );
    assert!(raw.ends_with(b"aaa\r\nend\r\n"));
    client.noop().await.unwrap();
    fake.finish().await;
}

#[tokio::test]
async fn overlong_status_line_fails_cleanly() {
    let greeting = format!("+OK {}", "x".repeat(STATUS_LINE_MAX + 10));
    let fake = Scripted::start(
        vec![Step::Send(greeting.into_bytes()), Step::Hang],
        Split::Whole,
        None,
    )
    .await;
    let err = Pop3Client::connect(&account(fake.addr(), TlsMode::None))
        .await
        .unwrap_err();
    assert!(matches!(err, Pop3Error::LineTooLong { .. }), "{err:?}");
    assert!(err.connection_lost());
    fake.finish().await;
}

#[tokio::test]
async fn malformed_status_line_is_a_protocol_error() {
    let fake = Scripted::start(
        vec![send("* OK IMAP4rev1 ready\r\n"), Step::Hang],
        Split::Whole,
        None,
    )
    .await;
    let err = Pop3Client::connect(&account(fake.addr(), TlsMode::None))
        .await
        .unwrap_err();
    assert!(matches!(err, Pop3Error::Protocol(_)), "{err:?}");
    fake.finish().await;
}

#[tokio::test]
async fn credential_with_crlf_is_refused_before_connecting() {
    let fake = Scripted::start(vec![send("+OK\r\n"), Step::Hang], Split::Whole, None).await;
    let mut acct = account(fake.addr(), TlsMode::None);
    acct.password = Password::new("x\r\nDELE 1");
    let err = Pop3Client::connect(&acct).await.unwrap_err();
    assert!(
        matches!(err, Pop3Error::InvalidCredential("password")),
        "{err:?}"
    );
    assert!(fake.received().is_empty());
    fake.abort();
}

#[tokio::test]
async fn pass_is_logged_as_stars() {
    use tracing_subscriber::fmt::MakeWriter;

    #[derive(Clone, Default)]
    struct Capture(Arc<Mutex<Vec<u8>>>);
    impl std::io::Write for Capture {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    impl<'a> MakeWriter<'a> for Capture {
        type Writer = Capture;
        fn make_writer(&'a self) -> Capture {
            self.clone()
        }
    }

    let capture = Capture::default();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(capture.clone())
        .with_ansi(false)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let mut script = login_steps("+OK\r\nUSER\r\n.\r\n");
    script.extend([Step::Expect("QUIT"), send("+OK\r\n"), Step::Close]);
    let fake = Scripted::start(script, Split::Whole, None).await;
    let client = Pop3Client::connect(&account(fake.addr(), TlsMode::None))
        .await
        .unwrap();
    client.quit().await.unwrap();
    fake.finish().await;

    let logs = String::from_utf8(capture.0.lock().unwrap().clone()).unwrap();
    assert!(logs.contains("C: PASS ***"), "{logs}");
    assert!(logs.contains("C: USER alice"), "{logs}");
    assert!(!logs.contains(PASSWORD), "{logs}");
}

// --- TLS: a real handshake against a test CA (crate::testkit::tls). ---

#[tokio::test]
async fn stls_upgrades_before_login_and_recapas() {
    let ca = test_ca();
    let script = vec![
        send("+OK ready\r\n"),
        Step::Expect("CAPA"),
        send("+OK\r\nSTLS\r\nUSER\r\n.\r\n"),
        Step::Expect("STLS"),
        send("+OK Begin TLS negotiation\r\n"),
        Step::StartTls,
        Step::Expect("CAPA"),
        send("+OK\r\nUSER\r\nPIPELINING\r\n.\r\n"),
        Step::Expect("USER alice"),
        send("+OK\r\n"),
        Step::Expect("PASS s3cret"),
        send("+OK\r\n"),
        Step::Expect("QUIT"),
        send("+OK\r\n"),
        Step::Close,
    ];
    let fake = Scripted::start(script, Split::Whole, Some(ca.acceptor.clone())).await;
    let mut acct = account(fake.addr(), TlsMode::StarttlsIfAvailable);
    acct.tls_options.ca_file = Some(ca.ca_pem.clone());
    let client = Pop3Client::connect(&acct).await.unwrap();
    assert!(client.is_encrypted());
    let capa = client.capabilities().unwrap();
    assert!(
        capa.pipelining && !capa.stls,
        "capabilities must come from after STLS"
    );
    client.quit().await.unwrap();
    assert_eq!(
        fake.finish().await,
        [
            "CAPA",
            "STLS",
            "[TLS]",
            "CAPA",
            "USER alice",
            "PASS s3cret",
            "QUIT"
        ]
    );
}

#[tokio::test]
async fn implicit_tls() {
    let ca = test_ca();
    let mut script = vec![Step::StartTls];
    script.extend(login_steps("+OK\r\nUSER\r\n.\r\n"));
    script.extend([Step::Expect("QUIT"), send("+OK\r\n"), Step::Close]);
    let fake = Scripted::start(script, Split::ByteByByte, Some(ca.acceptor.clone())).await;
    let mut acct = account(fake.addr(), TlsMode::Tls);
    acct.tls_options.ca_file = Some(ca.ca_pem.clone());
    let client = Pop3Client::connect(&acct).await.unwrap();
    assert!(client.is_encrypted());
    client.quit().await.unwrap();
    assert_eq!(fake.finish().await[0], "[TLS]");
}

#[tokio::test]
async fn untrusted_certificate_fails_and_sends_no_credentials() {
    let ca = test_ca();
    let script = vec![
        send("+OK ready\r\n"),
        Step::Expect("CAPA"),
        send("+OK\r\nSTLS\r\nUSER\r\n.\r\n"),
        Step::Expect("STLS"),
        send("+OK\r\n"),
        Step::StartTls,
    ];
    let fake = Scripted::start(script, Split::Whole, Some(ca.acceptor.clone())).await;
    // No ca_file: the system store does not know the test CA.
    let err = Pop3Client::connect(&account(fake.addr(), TlsMode::Starttls))
        .await
        .unwrap_err();
    assert!(matches!(err, Pop3Error::Tls(_)), "{err:?}");
    let received = fake.received();
    assert!(
        fake.outcome().await.is_err(),
        "the server handshake must fail too"
    );
    assert_eq!(received, ["CAPA", "STLS"]);
}

#[tokio::test]
async fn data_injected_after_stls_reply_is_refused() {
    let ca = test_ca();
    let script = vec![
        send("+OK ready\r\n"),
        Step::Expect("CAPA"),
        send("+OK\r\nSTLS\r\nUSER\r\n.\r\n"),
        Step::Expect("STLS"),
        send("+OK Begin TLS\r\n+OK injected\r\n"),
        Step::Hang,
    ];
    let fake = Scripted::start(script, Split::Whole, Some(ca.acceptor.clone())).await;
    let mut acct = account(fake.addr(), TlsMode::Starttls);
    acct.tls_options.ca_file = Some(ca.ca_pem.clone());
    let err = Pop3Client::connect(&acct).await.unwrap_err();
    assert!(matches!(err, Pop3Error::Protocol(_)), "{err:?}");
    assert_eq!(fake.finish().await, ["CAPA", "STLS"]);
}

#[tokio::test]
async fn server_with_bare_lf_line_ends() {
    let script = vec![
        send("+OK ready\n"),
        Step::Expect("CAPA"),
        send("+OK\nUSER\nUIDL\n.\n"),
        Step::Expect("USER alice"),
        send("+OK\n"),
        Step::Expect("PASS s3cret"),
        send("+OK\n"),
        Step::Expect("UIDL"),
        send("+OK\n1 a\n2 b\n.\n"),
        Step::Expect("RETR 2"),
        send("+OK\nSubject: lf\n\n..dot\n.\n"),
        Step::Expect("QUIT"),
        send("+OK\n"),
        Step::Close,
    ];
    let fake = Scripted::start(script, Split::ByteByByte, None).await;
    let mut client = Pop3Client::connect(&account(fake.addr(), TlsMode::None))
        .await
        .unwrap();
    assert_eq!(
        client.uidl().await.unwrap(),
        vec![(1, "a".to_string()), (2, "b".to_string())]
    );
    // Line ends are kept as the server sent them.
    assert_eq!(client.retr(2).await.unwrap(), b"Subject: lf\n\n.dot\n");
    client.quit().await.unwrap();
    fake.finish().await;
}

#[test]
fn client_and_connect_future_are_send() {
    // The pipeline runs each poller in its own task.
    fn is_send<T: Send>(_: &T) {}
    let acct = account("127.0.0.1:1".parse().unwrap(), TlsMode::None);
    is_send(&Pop3Client::connect(&acct));
}

// --- Overall deadlines and the size cap. ---

/// A hang guard, not a speed check: what it wraps must finish, however slowly.
async fn finishes<T>(what: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(20), what)
        .await
        .expect("did not finish: a RETR held without end")
}

#[tokio::test]
async fn a_server_trickling_bytes_under_the_read_timeout_fails_at_the_deadline() {
    let timeout = Duration::from_millis(400);
    let mut script = login_steps("+OK\r\nUSER\r\n.\r\n");
    script.extend([
        Step::Expect("LIST"),
        send("+OK\r\n1 100\r\n.\r\n"),
        Step::Expect("RETR 1"),
        send("+OK\r\n"),
        // One byte every timeout/2: no read ever times out, and 100 bytes take 20 s.
        Step::Trickle(vec![b'x'; 100], timeout / 2),
    ]);
    let fake = Scripted::start(script, Split::Whole, None).await;
    let mut acct = account(fake.addr(), TlsMode::None);
    acct.timeout = timeout;
    let mut client = Pop3Client::connect(&acct).await.unwrap();
    client.list().await.unwrap();
    let err = finishes(client.retr(1)).await.unwrap_err();
    assert!(
        matches!(&err, Pop3Error::Transport(TransportError::Deadline { command, limit })
            if command == "RETR 1" && *limit <= super::fetch_deadline(timeout, 100)),
        "{err:?}"
    );
    assert!(err.connection_lost());
    assert!(
        err.to_string()
            .contains("RETR 1 did not finish within its deadline")
    );
    // The session is given up: nothing more goes out.
    let again = client.noop().await.unwrap_err();
    assert!(again.connection_lost(), "{again:?}");
}

#[tokio::test]
async fn a_trickling_server_is_cut_without_a_list_size_too() {
    let timeout = Duration::from_millis(400);
    let mut script = login_steps("+OK\r\nUSER\r\n.\r\n");
    script.extend([
        Step::Expect("RETR 1"),
        send("+OK\r\nSubject: x\r\n\r\n"),
        Step::Trickle(vec![b'x'; 100], timeout / 2),
    ]);
    let fake = Scripted::start(script, Split::Whole, None).await;
    let mut acct = account(fake.addr(), TlsMode::None);
    acct.timeout = timeout;
    let mut client = Pop3Client::connect(&acct).await.unwrap();
    let err = finishes(client.retr(1)).await.unwrap_err();
    assert!(
        matches!(err, Pop3Error::Transport(TransportError::Deadline { .. })),
        "{err:?}"
    );
}

#[tokio::test]
async fn a_big_message_on_a_slow_steady_link_is_not_cut() {
    // 120 KiB in 12 KiB pieces 300 ms apart (40 KiB/s), far longer than the 400 ms timeout:
    // the deadline moves on with the bytes received, whatever LIST said.
    let timeout = Duration::from_millis(400);
    let line = [b"x".repeat(1022), b"\r\n".to_vec()].concat();
    let piece = line.repeat(12);
    let mut script = login_steps("+OK\r\nUSER\r\n.\r\n");
    script.extend([
        Step::Expect("LIST"),
        send("+OK\r\n1 10\r\n.\r\n"),
        Step::Expect("RETR 1"),
        send("+OK\r\n"),
    ]);
    for _ in 0..10 {
        script.push(Step::Send(piece.clone()));
        script.push(Step::Sleep(Duration::from_millis(300)));
    }
    script.push(send(".\r\n"));
    let fake = Scripted::start(script, Split::Whole, None).await;
    let mut acct = account(fake.addr(), TlsMode::None);
    acct.timeout = timeout;
    let mut client = Pop3Client::connect(&acct).await.unwrap();
    client.list().await.unwrap();
    let raw = finishes(client.retr(1)).await.unwrap();
    assert_eq!(raw.len(), piece.len() * 10);
}

#[tokio::test]
async fn retr_within_keeps_to_the_deadline_given() {
    let mut script = login_steps("+OK\r\nUSER\r\n.\r\n");
    script.extend([
        Step::Expect("RETR 1"),
        send("+OK\r\n"),
        Step::Trickle(vec![b'x'; 100], Duration::from_millis(100)),
    ]);
    let fake = Scripted::start(script, Split::Whole, None).await;
    let mut client = Pop3Client::connect(&account(fake.addr(), TlsMode::None))
        .await
        .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_millis(500);
    let err = finishes(client.retr_within(1, deadline)).await.unwrap_err();
    assert!(
        matches!(err, Pop3Error::Transport(TransportError::Deadline { .. })),
        "{err:?}"
    );
}

#[test]
fn the_fetch_deadline_grows_with_the_size() {
    let t = Duration::from_secs(180);
    assert_eq!(super::fetch_deadline(t, 0), 2 * t);
    assert_eq!(
        super::fetch_deadline(t, 50 * 1024 * 1024),
        2 * t + Duration::from_secs(3200)
    );
}

#[tokio::test]
async fn a_message_list_announces_larger_than_the_cap_is_not_retrieved() {
    let mut script = login_steps("+OK\r\nUSER\r\nUIDL\r\n.\r\n");
    script.extend([
        Step::Expect("UIDL"),
        send("+OK\r\n1 uid-big\r\n2 uid-small\r\n.\r\n"),
        Step::Expect("LIST"),
        send("+OK\r\n1 5000\r\n2 20\r\n.\r\n"),
        Step::Expect("RETR 2"),
        send("+OK\r\nSubject: s\r\n\r\nhi\r\n.\r\n"),
        Step::Expect("QUIT"),
        send("+OK\r\n"),
        Step::Close,
    ]);
    let fake = Scripted::start(script, Split::Whole, None).await;
    let mut client = Pop3Client::connect(&account(fake.addr(), TlsMode::None))
        .await
        .unwrap();
    client.set_max_message_size(4096);
    let listing = client.listing().await.unwrap();
    assert_eq!(
        listing,
        [
            super::Listed {
                number: 1,
                uid: "uid-big".into(),
                size: Some(5000)
            },
            super::Listed {
                number: 2,
                uid: "uid-small".into(),
                size: Some(20)
            },
        ]
    );
    let err = client.retr(1).await.unwrap_err();
    assert!(
        matches!(
            err,
            Pop3Error::MessageTooLarge {
                msg: 1,
                limit: 4096,
                announced: Some(5000)
            }
        ),
        "{err:?}"
    );
    assert!(!err.connection_lost());
    assert_eq!(client.retr(2).await.unwrap(), b"Subject: s\r\n\r\nhi\r\n");
    client.quit().await.unwrap();
    // The fake expects no "RETR 1": it would have failed the script.
    let received = fake.finish().await;
    assert!(!received.iter().any(|c| c == "RETR 1"), "{received:?}");
}

#[tokio::test]
async fn a_message_larger_than_list_said_is_dropped_at_the_cap_and_the_session_goes_on() {
    let mut big = b"+OK\r\nSubject: big\r\n\r\n".to_vec();
    for _ in 0..200 {
        big.extend_from_slice(b"0123456789012345678901234567890123456789\r\n");
    }
    big.extend_from_slice(b".\r\n");
    let mut script = login_steps("+OK\r\nUSER\r\n.\r\n");
    script.extend([
        Step::Expect("LIST"),
        send("+OK\r\n1 10\r\n.\r\n"),
        Step::Expect("RETR 1"),
        Step::Send(big),
        Step::Expect("NOOP"),
        send("+OK\r\n"),
        Step::Close,
    ]);
    let fake = Scripted::start(script, Split::Whole, None).await;
    let mut client = Pop3Client::connect(&account(fake.addr(), TlsMode::None))
        .await
        .unwrap();
    client.set_max_message_size(2048);
    client.list().await.unwrap();
    let err = client.retr(1).await.unwrap_err();
    assert!(
        matches!(
            err,
            Pop3Error::MessageTooLarge {
                msg: 1,
                limit: 2048,
                announced: Some(10)
            }
        ),
        "{err:?}"
    );
    assert!(!err.connection_lost());
    client.noop().await.unwrap();
    fake.finish().await;
}

#[test]
fn the_buffer_does_not_grow_past_the_cap() {
    let mut out = vec![0u8; 1000];
    super::conn::reserve_within(&mut out, 500, 1200);
    assert!(
        out.capacity() >= 1500 && out.capacity() < 2000,
        "{}",
        out.capacity()
    );
    let mut out = Vec::new();
    super::conn::reserve_within(&mut out, 10, 1 << 30);
    assert!(out.capacity() >= 10);
}
