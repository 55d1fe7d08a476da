//! SASL over IMAP against the scripted fake: SCRAM with and without SASL-IR, a server whose
//! final message carries a wrong signature refused (`*`, nothing selected), the client's
//! SASL lines kept out of the debug log, NTLM chosen by `spa`.

use super::tests::{PASSWORD, account, fake};
use super::{ImapClient, ImapError};
use crate::config::{AuthMethod, TlsMode};
use crate::fetch::pop3::sasl_tests::{
    Captured, NLMP_CHALLENGE, scram_right_final, scram_server_first, scram_wrong_final,
};
use crate::sasl::{Mechanism, Method, SaslError};
use crate::testkit::Split;
use crate::testkit::script::{Step, send};

/// The capabilities of a SCRAM-SHA-256 server, with SASL-IR and without.
const SCRAM_CAPABILITIES: [&str; 2] = [
    "AUTH=PLAIN AUTH=SCRAM-SHA-256 SASL-IR",
    "AUTH=PLAIN AUTH=SCRAM-SHA-256",
];

/// A server with `capabilities` that logs in with SCRAM-SHA-256 and proves it knows the
/// password.
fn proven_scram_session(capabilities: &str) -> Vec<Step> {
    let mut script = vec![Step::Send(
        format!("* OK [CAPABILITY IMAP4rev1 {capabilities}] ready\r\n").into_bytes(),
    )];
    if !capabilities.contains("SASL-IR") {
        script.extend([
            Step::Expect("A1 AUTHENTICATE SCRAM-SHA-256"),
            send("+ \r\n"),
        ]);
    }
    script.extend([
        Step::Reply(scram_server_first),
        Step::Reply(scram_right_final),
        Step::Expect(""),
        send("A1 OK [CAPABILITY IMAP4rev1 UIDPLUS] Logged in\r\n"),
        Step::Hang,
    ]);
    script
}

#[tokio::test]
async fn scram_sha_256_is_chosen_and_the_server_verified() {
    for capabilities in SCRAM_CAPABILITIES {
        let sasl_ir = capabilities.contains("SASL-IR");
        let script = proven_scram_session(capabilities);
        let fake = fake(script, Split::ByteByByte, None).await;
        let client = ImapClient::connect(&account(fake.addr(), TlsMode::None))
            .await
            .unwrap();
        assert_eq!(
            client.login_method(),
            Some(Method::Sasl(Mechanism::ScramSha256))
        );
        client.logout().await;
        let sent = fake.finish().await;
        assert_eq!(
            sent[0].starts_with("A1 AUTHENTICATE SCRAM-SHA-256 "),
            sasl_ir,
            "{sent:?}"
        );
        assert!(sent.iter().all(|l| !l.contains(PASSWORD)), "{sent:?}");
    }
}

#[tokio::test]
async fn continuation_lines_are_redacted_in_the_debug_log() {
    for capabilities in SCRAM_CAPABILITIES {
        let (captured, guard) = Captured::debug_log();
        let fake = fake(proven_scram_session(capabilities), Split::Whole, None).await;
        let client = ImapClient::connect(&account(fake.addr(), TlsMode::None))
            .await
            .unwrap();
        client.logout().await;
        let sent = fake.finish().await;
        drop(guard);
        let log = captured.text();
        assert!(
            log.contains("logged in with AUTHENTICATE SCRAM-SHA-256"),
            "{log}"
        );
        // The client's first message on the command line (SASL-IR) or as a continuation
        // line, then its final message (with the proof): in the log only as `***`.
        let (command, lines) = if capabilities.contains("SASL-IR") {
            ("C: A1 AUTHENTICATE SCRAM-SHA-256 ***", &sent[0..2])
        } else {
            ("C: A1 AUTHENTICATE SCRAM-SHA-256", &sent[1..3])
        };
        assert!(log.contains(command), "{log}");
        assert!(log.contains("C: ***"), "{log}");
        for line in lines {
            let encoded = line.rsplit(' ').next().unwrap();
            assert!(!log.contains(encoded), "{encoded} in {log}");
        }
    }
}

#[tokio::test]
async fn scram_with_a_wrong_server_signature_is_refused_and_nothing_selected() {
    let script = vec![
        send("* OK [CAPABILITY IMAP4rev1 AUTH=SCRAM-SHA-256 SASL-IR] ready\r\n"),
        Step::Reply(scram_server_first),
        Step::Reply(scram_wrong_final),
        Step::Expect("*"),
        // A server that cannot sign may still claim success.
        send("A1 OK Logged in\r\n"),
    ];
    let fake = fake(script, Split::Whole, None).await;
    let err = ImapClient::connect(&account(fake.addr(), TlsMode::None))
        .await
        .unwrap_err();
    assert!(
        matches!(err, ImapError::Sasl(SaslError::ServerNotVerified { .. })),
        "{err:?}"
    );
    let sent = fake.finish().await;
    assert!(
        !sent
            .iter()
            .any(|l| l.contains("SELECT") || l.contains("FETCH")),
        "{sent:?}"
    );
}

#[tokio::test]
async fn spa_logs_in_with_ntlm() {
    // The NEGOTIATE_MESSAGE without SASL-IR, then the AUTHENTICATE_MESSAGE for the
    // MS-NLMP 4.2.4 challenge (its content is checked by the sasl unit tests).
    let script = vec![
        send("* OK [CAPABILITY IMAP4rev1 AUTH=PLAIN AUTH=NTLM AUTH=SCRAM-SHA-256] ready\r\n"),
        Step::Expect("A1 AUTHENTICATE NTLM"),
        send("+ \r\n"),
        Step::Expect("TlRMTVNTUAABAAAAB4IIAAAAAAAAAAAAAAAAAAAAAAA="),
        Step::Send(format!("+ {NLMP_CHALLENGE}\r\n").into_bytes()),
        Step::Reply(|line| {
            let message = crate::sasl::decode_base64(line.as_bytes()).ok_or("not base64")?;
            if message.starts_with(b"NTLMSSP\0\x03\0\0\0") {
                Ok(b"A1 OK [CAPABILITY IMAP4rev1] Logged in\r\n".to_vec())
            } else {
                Err(format!("not an AUTHENTICATE_MESSAGE: {line}"))
            }
        }),
        Step::Hang,
    ];
    let fake = fake(script, Split::Whole, None).await;
    let mut acct = account(fake.addr(), TlsMode::None);
    acct.auth = AuthMethod::Only(vec![Method::Sasl(Mechanism::Ntlm)]);
    let client = ImapClient::connect(&acct).await.unwrap();
    assert_eq!(client.login_method(), Some(Method::Sasl(Mechanism::Ntlm)));
    client.logout().await;
    fake.finish().await;
}
