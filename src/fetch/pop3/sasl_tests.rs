//! SASL over POP3 against the scripted fake: a SCRAM server that proves it knows the
//! password is accepted; one whose final message carries a wrong signature, or none, is
//! refused and nothing is fetched. The SCRAM server side here is shared with IMAP's tests.

use ring::{hmac, pbkdf2};

use super::tests::{PASSWORD, account};
use super::{Pop3Client, Pop3Error};
use crate::config::TlsMode;
use crate::sasl::{self, SaslError};
use crate::testkit::Split;
use crate::testkit::script::{Scripted, Step, send};

/// What the fake SCRAM server appends to the client's nonce, its salt and iterations.
const SERVER_NONCE: &str = "srvNONCE";
const SALT: &[u8] = b"mailferry-salt";
const ITERATIONS: u32 = 4096;

/// The last word of a command or continuation line, base64-decoded, as text.
fn last_word_decoded(line: &str) -> Result<String, String> {
    let word = line.rsplit(' ').next().unwrap_or(line);
    let bytes = sasl::decode_base64(word.as_bytes()).ok_or("not base64")?;
    String::from_utf8(bytes).map_err(|e| e.to_string())
}

/// The client's nonce in a client-first (`n,,n=alice,r=...`) or client-final message.
fn nonce(message: &str) -> Result<&str, String> {
    message
        .split(',')
        .find_map(|a| a.strip_prefix("r="))
        .ok_or_else(|| format!("no nonce in {message:?}"))
}

fn server_first(client_nonce: &str) -> String {
    format!(
        "r={client_nonce}{SERVER_NONCE},s={},i={ITERATIONS}",
        sasl::encode_base64(SALT)
    )
}

/// `+ server-first` for the client-first line (SCRAM-SHA-256).
pub(crate) fn scram_server_first(line: &str) -> Result<Vec<u8>, String> {
    let client_first = last_word_decoded(line)?;
    let first = server_first(nonce(&client_first)?);
    Ok(format!("+ {}\r\n", sasl::encode_base64(first.as_bytes())).into_bytes())
}

/// The server signature for the client-final line, computed as a server that knows
/// [`PASSWORD`] would (user `alice`).
fn signature(client_final_line: &str) -> Result<Vec<u8>, String> {
    let client_final = last_word_decoded(client_final_line)?;
    let full = nonce(&client_final)?;
    let client_nonce = full
        .strip_suffix(SERVER_NONCE)
        .ok_or("nonce not extended")?;
    let without_proof = client_final
        .rsplit_once(",p=")
        .ok_or("no proof")?
        .0
        .to_owned();
    let auth_message = format!(
        "n=alice,r={client_nonce},{},{without_proof}",
        server_first(client_nonce)
    );
    let mut salted = [0u8; 32];
    pbkdf2::derive(
        pbkdf2::PBKDF2_HMAC_SHA256,
        std::num::NonZeroU32::new(ITERATIONS).ok_or("zero")?,
        SALT,
        PASSWORD.as_bytes(),
        &mut salted,
    );
    let server_key = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, &salted), b"Server Key");
    let key = hmac::Key::new(hmac::HMAC_SHA256, server_key.as_ref());
    Ok(hmac::sign(&key, auth_message.as_bytes()).as_ref().to_vec())
}

/// `+ v=<the right signature>` for the client-final line.
pub(crate) fn scram_right_final(line: &str) -> Result<Vec<u8>, String> {
    let v = format!("v={}", sasl::encode_base64(&signature(line)?));
    Ok(format!("+ {}\r\n", sasl::encode_base64(v.as_bytes())).into_bytes())
}

/// `+ v=<a signature with one bit flipped>`: a server that does not know the password.
pub(crate) fn scram_wrong_final(line: &str) -> Result<Vec<u8>, String> {
    let mut signature = signature(line)?;
    signature[0] ^= 1;
    let v = format!("v={}", sasl::encode_base64(&signature));
    Ok(format!("+ {}\r\n", sasl::encode_base64(v.as_bytes())).into_bytes())
}

/// MS-NLMP 4.2.4.3's CHALLENGE_MESSAGE in base64.
pub(crate) const NLMP_CHALLENGE: &str = "TlRMTVNTUAACAAAADAAMADgAAAAzgoriASNFZ4mrze8AAAAAAAAAACQAJABEAAAABgBwFwAAAA9TAGUAcgB2AGUAcgACAAwARABvAG0AYQBpAG4AAQAMAFMAZQByAHYAZQByAAAAAAA=";

fn greeting_and_capa() -> Vec<Step> {
    vec![
        send("+OK POP3 ready\r\n"),
        Step::Expect("CAPA"),
        send("+OK\r\nUSER\r\nUIDL\r\nSASL PLAIN SCRAM-SHA-256\r\n.\r\n"),
    ]
}

/// A server that offers SCRAM-SHA-256 and proves it knows the password, then QUIT.
fn proven_scram_session() -> Vec<Step> {
    let mut script = greeting_and_capa();
    script.extend([
        Step::Reply(scram_server_first),
        Step::Reply(scram_right_final),
        Step::Expect(""),
        send("+OK logged in\r\n"),
        Step::Expect("QUIT"),
        send("+OK\r\n"),
        Step::Close,
    ]);
    script
}

#[tokio::test]
async fn scram_with_a_proven_server_logs_in() {
    let script = proven_scram_session();
    let fake = Scripted::start(script, Split::ByteByByte, None).await;
    let client = Pop3Client::connect(&account(fake.addr(), TlsMode::None))
        .await
        .unwrap();
    assert_eq!(
        client.login_method(),
        Some(sasl::Method::Sasl(sasl::Mechanism::ScramSha256))
    );
    client.quit().await.unwrap();
    let sent = fake.finish().await;
    assert!(sent[1].starts_with("AUTH SCRAM-SHA-256 "), "{sent:?}");
    assert!(sent.iter().all(|l| !l.contains(PASSWORD)), "{sent:?}");
}

#[tokio::test]
async fn scram_with_a_wrong_server_signature_is_refused_and_nothing_fetched() {
    let mut script = greeting_and_capa();
    script.extend([
        Step::Reply(scram_server_first),
        Step::Reply(scram_wrong_final),
        Step::Expect("*"),
        send("-ERR authentication cancelled\r\n"),
    ]);
    let fake = Scripted::start(script, Split::Whole, None).await;
    let err = Pop3Client::connect(&account(fake.addr(), TlsMode::None))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            Pop3Error::Sasl(SaslError::ServerNotVerified {
                what: "wrong server signature",
                ..
            })
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains("SCRAM-SHA-256"), "{err}");
    let sent = fake.finish().await;
    assert_eq!(sent.len(), 4, "nothing after the cancel: {sent:?}");
}

#[tokio::test]
async fn scram_with_a_server_that_skips_its_signature_is_refused() {
    // The server says +OK without the server-final message: it may not know the password.
    let mut script = greeting_and_capa();
    script.extend([
        Step::Reply(scram_server_first),
        Step::Reply(|_| Ok(b"+OK logged in\r\n".to_vec())),
    ]);
    let fake = Scripted::start(script, Split::Whole, None).await;
    let err = Pop3Client::connect(&account(fake.addr(), TlsMode::None))
        .await
        .unwrap_err();
    assert!(
        matches!(err, Pop3Error::Sasl(SaslError::ServerNotVerified { .. })),
        "{err:?}"
    );
    let sent = fake.finish().await;
    assert!(
        !sent
            .iter()
            .any(|l| l.starts_with("UIDL") || l.starts_with("RETR")),
        "{sent:?}"
    );
}

#[tokio::test]
async fn auth_mechanisms_picks_among_the_offered_and_names_the_failure() {
    // Restricted to LOGIN: two continuation lines, shown to nobody; the refusal names it.
    let script = vec![
        send("+OK POP3 ready\r\n"),
        Step::Expect("CAPA"),
        send("+OK\r\nUSER\r\nSASL PLAIN LOGIN SCRAM-SHA-256\r\n.\r\n"),
        Step::Expect("AUTH LOGIN"),
        send("+ VXNlcm5hbWU6\r\n"),
        Step::Expect("YWxpY2U="),
        send("+ UGFzc3dvcmQ6\r\n"),
        Step::Expect("czNjcmV0"),
        send("-ERR [AUTH] no\r\n"),
    ];
    let fake = Scripted::start(script, Split::Whole, None).await;
    let mut acct = account(fake.addr(), TlsMode::None);
    acct.auth = crate::config::AuthMethod::Only(vec![sasl::Method::Sasl(sasl::Mechanism::Login)]);
    let err = Pop3Client::connect(&acct).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        "authentication failed (AUTH LOGIN): [AUTH] no"
    );
    fake.finish().await;

    // Nothing offered fits: nothing is sent after CAPA.
    let script = vec![
        send("+OK POP3 ready\r\n"),
        Step::Expect("CAPA"),
        send("+OK\r\nSASL PLAIN\r\n.\r\n"),
    ];
    let fake = Scripted::start(script, Split::Whole, None).await;
    let mut acct = account(fake.addr(), TlsMode::None);
    acct.auth = crate::config::AuthMethod::Only(vec![sasl::Method::Sasl(sasl::Mechanism::Ntlm)]);
    let err = Pop3Client::connect(&acct).await.unwrap_err();
    assert!(matches!(err, Pop3Error::NoLoginMethod(_)), "{err:?}");
    assert_eq!(fake.finish().await, ["CAPA"]);
}

/// Collects what the tracing subscriber writes (shared with IMAP's tests).
#[derive(Clone, Default)]
pub(crate) struct Captured(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl Captured {
    /// Captures the debug log of this thread until the guard is dropped.
    pub(crate) fn debug_log() -> (Captured, tracing::subscriber::DefaultGuard) {
        let captured = Captured::default();
        let writer = captured.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::DEBUG)
            .with_writer(move || writer.clone())
            .finish();
        (captured, tracing::subscriber::set_default(subscriber))
    }

    /// What was logged so far.
    pub(crate) fn text(&self) -> String {
        let bytes = self.0.lock().unwrap_or_else(|e| e.into_inner());
        String::from_utf8_lossy(&bytes).into_owned()
    }
}

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn continuation_lines_are_redacted_in_the_debug_log() {
    let (captured, _guard) = Captured::debug_log();
    let script = proven_scram_session();
    let fake = Scripted::start(script, Split::Whole, None).await;
    let client = Pop3Client::connect(&account(fake.addr(), TlsMode::None))
        .await
        .unwrap();
    client.quit().await.unwrap();
    let sent = fake.finish().await;
    let log = captured.text();
    assert!(log.contains("C: AUTH SCRAM-SHA-256 ***"), "{log}");
    assert!(log.contains("C: ***"), "{log}");
    assert!(log.contains("logged in with AUTH SCRAM-SHA-256"), "{log}");
    // Neither the client's first nor its final message (with the proof) is in the log.
    for line in &sent[1..3] {
        let encoded = line.rsplit(' ').next().unwrap();
        assert!(!log.contains(encoded), "{encoded} in {log}");
    }
}

#[tokio::test]
async fn spa_logs_in_with_ntlm_over_pop3() {
    // The NEGOTIATE_MESSAGE as the initial response, then the AUTHENTICATE_MESSAGE for the
    // MS-NLMP 4.2.4 challenge (its content is checked by the sasl unit tests).
    let script = vec![
        send("+OK POP3 ready\r\n"),
        Step::Expect("CAPA"),
        send("+OK\r\nUSER\r\nSASL PLAIN NTLM SCRAM-SHA-256\r\n.\r\n"),
        Step::Expect("AUTH NTLM TlRMTVNTUAABAAAAB4IIAAAAAAAAAAAAAAAAAAAAAAA="),
        Step::Send(
            format!(
                "+ {NLMP_CHALLENGE}
"
            )
            .into_bytes(),
        ),
        Step::Reply(|line| {
            let message = sasl::decode_base64(line.as_bytes()).ok_or("not base64")?;
            if message.starts_with(b"NTLMSSP\0\x03\0\0\0") {
                Ok(b"+OK logged in\r\n".to_vec())
            } else {
                Err(format!("not an AUTHENTICATE_MESSAGE: {line}"))
            }
        }),
        Step::Expect("QUIT"),
        send("+OK\r\n"),
        Step::Close,
    ];
    let fake = Scripted::start(script, Split::Whole, None).await;
    let mut acct = account(fake.addr(), TlsMode::None);
    acct.auth = crate::config::AuthMethod::Only(vec![sasl::Method::Sasl(sasl::Mechanism::Ntlm)]);
    let client = Pop3Client::connect(&acct).await.unwrap();
    assert_eq!(
        client.login_method(),
        Some(sasl::Method::Sasl(sasl::Mechanism::Ntlm))
    );
    client.quit().await.unwrap();
    fake.finish().await;
}
