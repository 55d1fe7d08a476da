//! The client against a scripted in-process fake server on 127.0.0.1: what Dovecot will not
//! do on demand (split reads, a connection dropped mid-literal, no STARTTLS, odd untagged
//! responses, servers without UIDPLUS or SASL-IR).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;

use super::{ImapClient, ImapError, Listed};
use crate::config::{AccountConfig, Mode, Password, Protocol, Retention, TlsMode};
use crate::testutil::test_ca;

const PASSWORD: &str = "s3cret";

/// The client's log on stderr (shown for a failing test).
fn log() {
    let _ = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::DEBUG)
        .with_test_writer()
        .try_init();
}

/// One step of the fake server's side of the conversation.
enum Step {
    /// Write these bytes (split as the run says).
    Send(Vec<u8>),
    /// Read one line from the client; it must be exactly this (without CRLF).
    Expect(&'static str),
    /// TLS handshake as the server; recorded as "[TLS]".
    StartTls,
    /// Close the connection at once.
    Close,
    /// Stop answering, keep the connection open until the client goes.
    Hang,
}

fn send(s: &str) -> Step {
    Step::Send(s.as_bytes().to_vec())
}

/// How each `Send` is written.
#[derive(Clone, Copy, Debug)]
enum Split {
    Whole,
    /// One byte per write.
    ByteByByte,
    /// Two writes, the first of this many bytes.
    At(usize),
}

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

struct Fake {
    addr: SocketAddr,
    /// Every line the client sent, in order, plus "[TLS]" where the handshake happened.
    received: Arc<Mutex<Vec<String>>>,
    task: JoinHandle<Result<(), String>>,
}

impl Fake {
    async fn start(script: Vec<Step>, split: Split, tls: Option<TlsAcceptor>) -> Fake {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let received = Arc::new(Mutex::new(Vec::new()));
        let log = received.clone();
        let task = tokio::spawn(async move {
            let (tcp, _) = listener.accept().await.map_err(|e| e.to_string())?;
            tcp.set_nodelay(true).unwrap();
            serve(Box::new(tcp), script, split, tls, log).await
        });
        Fake {
            addr,
            received,
            task,
        }
    }

    /// Waits for the server to finish its script and the client to hang up.
    async fn finish(self) -> Vec<String> {
        tokio::time::timeout(Duration::from_secs(10), self.task)
            .await
            .expect("fake server did not finish")
            .unwrap()
            .unwrap();
        self.received.lock().unwrap().clone()
    }
}

async fn serve(
    stream: Box<dyn Io>,
    script: Vec<Step>,
    split: Split,
    tls: Option<TlsAcceptor>,
    log: Arc<Mutex<Vec<String>>>,
) -> Result<(), String> {
    let mut io = BufReader::new(stream);
    for step in script {
        match step {
            Step::Send(bytes) => write_split(io.get_mut(), &bytes, split).await?,
            Step::Expect(want) => {
                let line = read_line(&mut io).await?;
                log.lock().unwrap().push(line.clone());
                if line != want {
                    return Err(format!("expected {want:?}, got {line:?}"));
                }
            }
            Step::StartTls => {
                if !io.buffer().is_empty() {
                    return Err("client sent data before the handshake".into());
                }
                let acceptor = tls.clone().ok_or("no TLS acceptor")?;
                let tls = acceptor
                    .accept(io.into_inner())
                    .await
                    .map_err(|e| format!("server handshake: {e}"))?;
                log.lock().unwrap().push("[TLS]".into());
                io = BufReader::new(Box::new(tls));
            }
            Step::Close => return Ok(()),
            Step::Hang => break,
        }
    }
    // Record whatever else the client says until it hangs up; answer a LOGOUT.
    loop {
        match tokio::time::timeout(Duration::from_secs(10), read_line(&mut io)).await {
            Ok(Ok(line)) => {
                if let Some(tag) = line.strip_suffix(" LOGOUT") {
                    let bye = format!("* BYE Logging out\r\n{tag} OK Logout completed.\r\n");
                    write_split(io.get_mut(), bye.as_bytes(), Split::Whole).await?;
                }
                log.lock().unwrap().push(line);
            }
            Ok(Err(_)) => return Ok(()),
            Err(_) => return Err("client neither spoke nor hung up".into()),
        }
    }
}

async fn read_line(io: &mut BufReader<Box<dyn Io>>) -> Result<String, String> {
    let mut line = Vec::new();
    let n = io
        .read_until(b'\n', &mut line)
        .await
        .map_err(|e| e.to_string())?;
    if n == 0 {
        return Err("client closed".into());
    }
    let line = String::from_utf8(line).map_err(|e| e.to_string())?;
    Ok(line.trim_end_matches("\r\n").to_owned())
}

async fn write_split(io: &mut Box<dyn Io>, bytes: &[u8], split: Split) -> Result<(), String> {
    let pause = || tokio::time::sleep(Duration::from_millis(1));
    let result = async {
        match split {
            Split::Whole => io.write_all(bytes).await?,
            Split::ByteByByte => {
                for b in bytes {
                    io.write_all(&[*b]).await?;
                    io.flush().await?;
                    pause().await;
                }
            }
            Split::At(k) if k < bytes.len() => {
                io.write_all(&bytes[..k]).await?;
                io.flush().await?;
                pause().await;
                io.write_all(&bytes[k..]).await?;
            }
            Split::At(_) => io.write_all(bytes).await?,
        }
        io.flush().await
    };
    result.await.map_err(|e| e.to_string())
}

fn account(addr: SocketAddr, tls: TlsMode) -> AccountConfig {
    AccountConfig {
        name: "test".into(),
        protocol: Protocol::Imap,
        host: addr.ip().to_string(),
        port: addr.port(),
        tls,
        ca_file: None,
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
    }
}

/// Greeting with capabilities `before`, LOGIN (its reply announcing `after`), and the
/// SELECT of INBOX (two messages).
fn login_and_select(before: &str, after: &str) -> Vec<Step> {
    vec![
        Step::Send(format!("* OK [CAPABILITY IMAP4rev1 {before}] ready\r\n").into_bytes()),
        Step::Expect("A1 LOGIN \"alice\" \"s3cret\""),
        Step::Send(format!("A1 OK [CAPABILITY IMAP4rev1 {after}] Logged in\r\n").into_bytes()),
        Step::Expect("A2 SELECT \"INBOX\""),
        send(
            "* FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft)\r\n\
             * OK [PERMANENTFLAGS (\\Deleted \\Seen \\*)] Flags permitted.\r\n\
             * 2 EXISTS\r\n* 0 RECENT\r\n\
             * OK [UIDVALIDITY 1700000001] UIDs valid\r\n\
             * OK [UIDNEXT 12] Predicted next UID\r\n\
             A2 OK [READ-WRITE] Select completed.\r\n",
        ),
    ]
}

/// A message whose lines look like IMAP: a literal marker, a closing parenthesis, a tag.
const MESSAGE: &[u8] = b"Subject: caf\xc3\xa9\r\nFrom: a@b.example\r\n\r\n\
    ) {5}\r\nA4 OK fake\r\n* BYE not really\r\n\xff\xfe raw \x00 bytes\r\n";

fn body_response(uid: u32, message: &[u8]) -> Vec<u8> {
    let mut r = format!("* 1 FETCH (UID {uid} BODY[] {{{}}}\r\n", message.len()).into_bytes();
    r.extend_from_slice(message);
    r.extend_from_slice(b")\r\n");
    r
}

fn full_session_script() -> Vec<Step> {
    let mut fetch = b"* 2 FETCH (FLAGS (\\Seen))\r\n".to_vec();
    fetch.extend(body_response(7, MESSAGE));
    fetch.extend_from_slice(b"* 3 EXISTS\r\nA4 OK Fetch completed.\r\n");
    let mut script = login_and_select("LITERAL+", "UIDPLUS");
    script.extend([
        Step::Expect("A3 UID FETCH 1:* (UID RFC822.SIZE)"),
        send(
            "* 2 FETCH (UID 11 RFC822.SIZE 10)\r\n\
             * 1 FETCH (UID 7 RFC822.SIZE 103)\r\n\
             * 1 EXPUNGE\r\n\
             A3 OK Fetch completed.\r\n",
        ),
        Step::Expect("A4 UID FETCH 7 BODY.PEEK[]"),
        Step::Send(fetch),
        Step::Expect("A5 UID STORE 7 +FLAGS.SILENT (\\Deleted)"),
        send("* 1 FETCH (FLAGS (\\Deleted))\r\nA5 OK Store completed.\r\n"),
        Step::Expect("A6 UID EXPUNGE 7"),
        send("* 1 EXPUNGE\r\nA6 OK Expunge completed.\r\n"),
        Step::Expect("A7 LOGOUT"),
        send("* BYE Logging out\r\nA7 OK Logout completed.\r\n"),
        Step::Close,
    ]);
    script
}

async fn run_full_session(split: Split) {
    log();
    let fake = Fake::start(full_session_script(), split, None).await;
    let mut client = ImapClient::connect(&account(fake.addr, TlsMode::None))
        .await
        .unwrap_or_else(|e| panic!("{split:?}: {e}"));
    assert!(!client.is_encrypted());
    assert!(
        client.capabilities().has("UIDPLUS"),
        "capabilities after login"
    );
    assert_eq!(client.open_folder("inbox").await.unwrap(), 1_700_000_001);
    assert_eq!(
        client.listing().await.unwrap(),
        vec![
            Listed {
                uid: 7,
                size: Some(103)
            },
            Listed {
                uid: 11,
                size: Some(10)
            }
        ],
        "oldest first, {split:?}"
    );
    assert_eq!(
        client.fetch(7, Some(103)).await.unwrap(),
        MESSAGE,
        "{split:?}"
    );
    client.mark_deleted(7).await.unwrap();
    client.commit().await.unwrap();
    fake.finish().await;
}

#[tokio::test]
async fn full_session_whole_writes() {
    run_full_session(Split::Whole).await;
}

#[tokio::test]
async fn full_session_byte_by_byte() {
    run_full_session(Split::ByteByByte).await;
}

#[tokio::test]
async fn full_session_split_inside_every_kind_of_token() {
    // Inside a tag, a literal marker, a literal's octets, a line end.
    for at in [1, 3, 17, 38, 41, 60, 100, 150] {
        run_full_session(Split::At(at)).await;
    }
}

/// A server that offers what `capabilities` says and expects `login` lines after greeting.
async fn login_with(capabilities: &str, password: &str, login: Vec<Step>) -> Vec<String> {
    let mut script = vec![Step::Send(
        format!("* OK [CAPABILITY IMAP4rev1 {capabilities}] ready\r\n").into_bytes(),
    )];
    script.extend(login);
    script.push(Step::Hang);
    let fake = Fake::start(script, Split::Whole, None).await;
    let mut acct = account(fake.addr, TlsMode::None);
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

#[tokio::test]
async fn login_disabled_without_plain_sends_nothing_secret() {
    let fake = Fake::start(
        vec![
            send("* OK [CAPABILITY IMAP4rev1 LOGINDISABLED AUTH=GSSAPI] ready\r\n"),
            Step::Hang,
        ],
        Split::Whole,
        None,
    )
    .await;
    let err = ImapClient::connect(&account(fake.addr, TlsMode::None))
        .await
        .unwrap_err();
    assert!(matches!(err, ImapError::NoLoginMethod), "{err}");
    assert!(fake.finish().await.is_empty());
}

#[tokio::test]
async fn a_refused_login_is_an_auth_failure_without_the_password() {
    let fake = Fake::start(
        vec![
            send("* OK ready\r\n"),
            Step::Expect("A1 CAPABILITY"),
            send("* CAPABILITY IMAP4rev1\r\nA1 OK\r\n"),
            Step::Expect("A2 LOGIN \"alice\" \"s3cret\""),
            send("A2 NO [AUTHENTICATIONFAILED] Bad password S3CRET\r\n"),
            Step::Hang,
        ],
        Split::Whole,
        None,
    )
    .await;
    let err = ImapClient::connect(&account(fake.addr, TlsMode::None))
        .await
        .unwrap_err();
    let ImapError::AuthFailed { text, temporary } = &err else {
        panic!("{err:?}")
    };
    assert!(!temporary);
    assert_eq!(text, "[AUTHENTICATIONFAILED] Bad password ***");
    assert!(!format!("{err} {err:?}").contains("s3cret"));
}

#[tokio::test]
async fn starttls_required_but_not_offered_sends_no_credential() {
    let fake = Fake::start(
        vec![
            send("* OK [CAPABILITY IMAP4rev1 AUTH=PLAIN SASL-IR] ready\r\n"),
            Step::Hang,
        ],
        Split::Whole,
        None,
    )
    .await;
    let err = ImapClient::connect(&account(fake.addr, TlsMode::Starttls))
        .await
        .unwrap_err();
    assert!(matches!(err, ImapError::StarttlsNotOffered), "{err}");
    let received = fake.finish().await;
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
    let fake = Fake::start(
        vec![send("* OK [CAPABILITY IMAP4rev1] ready\r\n"), Step::Hang],
        Split::Whole,
        None,
    )
    .await;
    let err = ImapClient::connect(&account(fake.addr, TlsMode::StarttlsIfAvailable))
        .await
        .unwrap_err();
    assert!(matches!(err, ImapError::PlaintextRefused), "{err}");
    assert!(fake.finish().await.is_empty());
}

#[tokio::test]
async fn starttls_upgrades_and_asks_the_capabilities_again() {
    log();
    let ca = test_ca();
    let fake = Fake::start(
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
    let mut acct = account(fake.addr, TlsMode::Starttls);
    acct.ca_file = Some(ca.ca_pem.clone());
    let client = ImapClient::connect(&acct).await.unwrap();
    assert!(client.is_encrypted());
    assert!(client.capabilities().has("UIDPLUS"));
    client.logout().await;
    let received = fake.finish().await;
    assert_eq!(received[..2], ["A1 STARTTLS", "[TLS]"]);
}

#[tokio::test]
async fn data_injected_after_the_starttls_reply_is_refused() {
    let fake = Fake::start(
        vec![
            send("* OK [CAPABILITY IMAP4rev1 STARTTLS] ready\r\n"),
            Step::Expect("A1 STARTTLS"),
            send("A1 OK Begin TLS\r\n* CAPABILITY IMAP4rev1 AUTH=PLAIN\r\n"),
            Step::Hang,
        ],
        Split::Whole,
        None,
    )
    .await;
    let err = ImapClient::connect(&account(fake.addr, TlsMode::Starttls))
        .await
        .unwrap_err();
    assert!(matches!(err, ImapError::Protocol(_)), "{err}");
    fake.finish().await;
}

/// A session logged in (UIDPLUS) and with INBOX selected, then `rest`.
async fn selected(rest: Vec<Step>, max: u64) -> (ImapClient, Fake) {
    selected_with(rest, max, "UIDPLUS", Duration::from_secs(10)).await
}

/// [`selected`] with these capabilities after login and this timeout.
async fn selected_with(
    rest: Vec<Step>,
    max: u64,
    capabilities: &str,
    timeout: Duration,
) -> (ImapClient, Fake) {
    let mut script = login_and_select("", capabilities);
    script.extend(rest);
    let fake = Fake::start(script, Split::Whole, None).await;
    let mut acct = account(fake.addr, TlsMode::None);
    acct.timeout = timeout;
    let mut client = ImapClient::connect(&acct).await.unwrap();
    client.set_max_message_size(max);
    client.open_folder("INBOX").await.unwrap();
    (client, fake)
}

#[tokio::test]
async fn a_connection_dropped_mid_literal_loses_the_session() {
    let mut partial = b"* 1 FETCH (UID 7 BODY[] {103}\r\n".to_vec();
    partial.extend_from_slice(&MESSAGE[..40]);
    let (mut client, fake) = selected(
        vec![
            Step::Expect("A3 UID FETCH 7 BODY.PEEK[]"),
            Step::Send(partial),
            Step::Close,
        ],
        1_000_000,
    )
    .await;
    let err = client.fetch(7, Some(103)).await.unwrap_err();
    assert!(matches!(err, ImapError::ConnectionClosed), "{err:?}");
    assert!(err.connection_lost());
    // Nothing more is tried on a lost session.
    let again = client.mark_deleted(7).await.unwrap_err();
    assert!(again.connection_lost(), "{again:?}");
    client.logout().await;
    fake.finish().await;
}

#[tokio::test]
async fn a_message_announced_too_large_is_not_asked_for() {
    let (mut client, fake) = selected(
        vec![
            Step::Expect("A3 UID FETCH 9 BODY.PEEK[]"),
            Step::Send(body_response(9, b"small\r\n")),
            send("A3 OK done\r\n"),
        ],
        100,
    )
    .await;
    let err = client.fetch(7, Some(101)).await.unwrap_err();
    assert!(matches!(
        err,
        ImapError::MessageTooLarge {
            uid: 7,
            limit: 100,
            announced: Some(101)
        }
    ));
    assert!(!err.connection_lost());
    assert_eq!(client.fetch(9, Some(7)).await.unwrap(), b"small\r\n");
    client.logout().await;
    let received = fake.finish().await;
    assert!(
        !received.iter().any(|l| l.contains("FETCH 7")),
        "{received:?}"
    );
}

#[tokio::test]
async fn a_literal_over_the_limit_is_dropped_and_the_session_goes_on() {
    let big = vec![b'x'; 5000];
    let (mut client, fake) = selected(
        vec![
            Step::Expect("A3 UID FETCH 7 BODY.PEEK[]"),
            Step::Send(body_response(7, &big)),
            send("A3 OK done\r\n"),
            Step::Expect("A4 UID STORE 8 +FLAGS.SILENT (\\Deleted)"),
            send("A4 OK\r\n"),
        ],
        4096,
    )
    .await;
    // The listing understated it (or gave no size): found out from the literal.
    let err = client.fetch(7, None).await.unwrap_err();
    assert!(
        matches!(
            err,
            ImapError::MessageTooLarge {
                announced: Some(5000),
                ..
            }
        ),
        "{err:?}"
    );
    assert!(
        err.to_string().contains("larger than max_message_size"),
        "{err}"
    );
    client.mark_deleted(8).await.unwrap();
    client.logout().await;
    fake.finish().await;
}

#[tokio::test]
async fn a_message_expunged_meanwhile_is_gone_not_a_lost_session() {
    let (mut client, fake) = selected(
        vec![
            Step::Expect("A3 UID FETCH 7 BODY.PEEK[]"),
            send("* 1 EXPUNGE\r\nA3 OK done\r\n"),
        ],
        1000,
    )
    .await;
    let err = client.fetch(7, Some(10)).await.unwrap_err();
    assert!(matches!(err, ImapError::MessageGone(7)), "{err:?}");
    assert!(!err.connection_lost());
    client.logout().await;
    fake.finish().await;
}

#[tokio::test]
async fn a_silent_server_times_out() {
    let (mut client, fake) = selected_with(
        vec![Step::Expect("A3 UID FETCH 7 BODY.PEEK[]"), Step::Hang],
        1000,
        "UIDPLUS",
        Duration::from_millis(300),
    )
    .await;
    let started = std::time::Instant::now();
    let err = client.fetch(7, Some(10)).await.unwrap_err();
    assert!(matches!(err, ImapError::Timeout(_)), "{err:?}");
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(err.connection_lost());
    client.logout().await;
    fake.finish().await;
}

#[tokio::test]
async fn bye_in_the_middle_ends_the_session() {
    let (mut client, fake) = selected(
        vec![
            Step::Expect("A3 UID FETCH 1:* (UID RFC822.SIZE)"),
            send("* BYE Server shutting down\r\n"),
            Step::Close,
        ],
        1000,
    )
    .await;
    let err = client.listing().await.unwrap_err();
    assert!(
        matches!(err, ImapError::Bye(ref t) if t == "Server shutting down"),
        "{err:?}"
    );
    assert!(err.connection_lost());
    client.logout().await;
    fake.finish().await;
}

#[tokio::test]
async fn a_subfolder_is_selected_by_the_servers_delimiter() {
    let script = vec![
        send("* OK [CAPABILITY IMAP4rev1] ready\r\n"),
        Step::Expect("A1 LOGIN \"alice\" \"s3cret\""),
        send("A1 OK [CAPABILITY IMAP4rev1] Logged in\r\n"),
        Step::Expect("A2 LIST \"\" \"*\""),
        send(
            "* LIST (\\HasChildren) \".\" INBOX\r\n\
             * LIST (\\HasNoChildren) \".\" \"INBOX.Support\"\r\n\
             * LIST (\\HasNoChildren) \".\" {13}\r\nINBOX.Archive\r\n\
             A2 OK List completed.\r\n",
        ),
        Step::Expect("A3 SELECT \"INBOX.Support\""),
        send("* 0 EXISTS\r\n* OK [UIDVALIDITY 5] x\r\nA3 OK [READ-WRITE] done\r\n"),
        Step::Expect("A4 LIST \"\" \"*\""),
        send("* LIST () \".\" INBOX\r\nA4 OK done\r\n"),
        Step::Hang,
    ];
    let fake = Fake::start(script, Split::Whole, None).await;
    let mut client = ImapClient::connect(&account(fake.addr, TlsMode::None))
        .await
        .unwrap();
    assert_eq!(client.open_folder("INBOX/Support").await.unwrap(), 5);
    // An empty folder needs no FETCH.
    assert_eq!(client.listing().await.unwrap(), vec![]);
    let err = client.open_folder("INBOX/Sales").await.unwrap_err();
    assert!(
        err.to_string()
            .contains("folder \"INBOX/Sales\" does not exist on the server; it has: INBOX"),
        "{err}"
    );
    assert!(!err.connection_lost());
    client.logout().await;
    fake.finish().await;
}

#[tokio::test]
async fn without_uidplus_expunge_only_when_nothing_else_is_flagged() {
    // Ours only: EXPUNGE.
    let (mut client, fake) = selected_with(
        vec![
            Step::Expect("A3 UID STORE 7 +FLAGS.SILENT (\\Deleted)"),
            send("A3 OK\r\n"),
            Step::Expect("A4 UID SEARCH DELETED"),
            send("* SEARCH 7\r\nA4 OK\r\n"),
            Step::Expect("A5 EXPUNGE"),
            send("* 1 EXPUNGE\r\nA5 OK\r\n"),
            Step::Expect("A6 LOGOUT"),
            send("* BYE\r\nA6 OK\r\n"),
        ],
        1000,
        "",
        Duration::from_secs(10),
    )
    .await;
    client.mark_deleted(7).await.unwrap();
    client.commit().await.unwrap();
    fake.finish().await;

    // Someone else's message flagged too: no EXPUNGE, ours stay flagged.
    let (mut client, fake) = selected_with(
        vec![
            Step::Expect("A3 UID STORE 7 +FLAGS.SILENT (\\Deleted)"),
            send("A3 OK\r\n"),
            Step::Expect("A4 UID SEARCH DELETED"),
            send("* SEARCH 3 7\r\nA4 OK\r\n"),
            Step::Expect("A5 LOGOUT"),
            send("* BYE\r\nA5 OK\r\n"),
        ],
        1000,
        "",
        Duration::from_secs(10),
    )
    .await;
    client.mark_deleted(7).await.unwrap();
    client.commit().await.unwrap();
    fake.finish().await;
}

#[test]
fn uid_sets_are_ranges_split_to_fit_a_command() {
    use super::command::{UID_SET_MAX, uid_sets};
    assert_eq!(uid_sets(&[5, 1, 2, 3, 9, 10, 7, 3]), ["1:3,5,7,9:10"]);
    assert!(uid_sets(&[]).is_empty());
    let every_other: Vec<u32> = (0..20_000).map(|i| 100_000 + 2 * i).collect();
    let sets = uid_sets(&every_other);
    assert!(sets.len() > 1);
    assert!(sets.iter().all(|s| s.len() <= UID_SET_MAX));
    let back: usize = sets.iter().map(|s| s.split(',').count()).sum();
    assert_eq!(back, 20_000);
}
