//! No stall against a server that leaves Nagle's algorithm on (Courier-IMAP): the tagged
//! completion of a FETCH comes as a small segment of its own, which the server's kernel holds
//! until everything before it is acknowledged. Ours acknowledges at once, so each command
//! costs one round trip, not a delayed ACK (40 ms on Linux).

use std::time::Duration;

use super::ImapClient;
use super::tests::{account, fake};
use crate::config::TlsMode;
use crate::testkit::Split;
use crate::testkit::script::{Step, send};

/// Commands in the test: more than the first segments of a connection, which Linux
/// acknowledges at once anyway.
const COMMANDS: usize = 40;

/// The pause before the tagged line: long enough for a prompt ACK to arrive, shorter than
/// the shortest delayed ACK (40 ms).
const PAUSE: Duration = Duration::from_millis(15);

const MESSAGE: &str = "Subject: one\r\n\r\nbody\r\n";

/// A command line the fake expects; the tags change with every command.
fn expect(line: String) -> Step {
    Step::Expect(Box::leak(line.into_boxed_str()))
}

#[tokio::test]
async fn fetches_against_a_nagling_server_acknowledge_each_reply_at_once() {
    let mut script = vec![
        send("* OK [CAPABILITY IMAP4rev1] Courier-IMAP ready.\r\n"),
        Step::Expect("A1 LOGIN \"alice\" \"s3cret\""),
        send("A1 OK LOGIN Ok.\r\n"),
        Step::Expect("A2 CAPABILITY"),
        send("* CAPABILITY IMAP4rev1 UIDPLUS\r\nA2 OK CAPABILITY completed\r\n"),
        Step::Expect("A3 SELECT \"INBOX\""),
        send(
            "* FLAGS (\\Deleted \\Seen)\r\n* 1 EXISTS\r\n* 0 RECENT\r\n\
             * OK [UIDVALIDITY 796173557] Ok\r\nA3 OK [READ-WRITE] Ok\r\n",
        ),
    ];
    for i in 0..COMMANDS {
        let tag = format!("A{}", i + 4);
        script.extend([
            expect(format!("{tag} UID FETCH 1 BODY.PEEK[]<0.4194304>")),
            Step::Send(
                format!(
                    "* 1 FETCH (UID 1 BODY[] {{{}}}\r\n{MESSAGE})\r\n",
                    MESSAGE.len()
                )
                .into_bytes(),
            ),
            Step::Sleep(PAUSE),
            // Where Nagle would hold the tagged line: has the client acknowledged the rest?
            Step::ExpectAcked,
            Step::Send(format!("{tag} OK FETCH completed.\r\n").into_bytes()),
        ]);
    }
    let fake = fake(script, Split::Whole, None).await;
    let mut client = ImapClient::connect(&account(fake.addr(), TlsMode::None))
        .await
        .expect("login");
    client.select(b"INBOX").await.expect("select");
    for i in 0..COMMANDS {
        match client.fetch(1, None).await {
            Ok(body) => assert_eq!(body, MESSAGE.as_bytes()),
            // The fake stopped: its outcome below says why.
            Err(e) => {
                eprintln!("FETCH number {} failed: {e}", i + 1);
                break;
            }
        }
    }
    client.logout().await;
    if let Err(e) = fake.outcome().await {
        panic!("the server had to wait for an ACK: {e}");
    }
}
