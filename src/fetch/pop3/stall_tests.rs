//! No stall against a server that leaves Nagle's algorithm on (Courier): it writes the end
//! of a reply as a small segment of its own, which its kernel holds until everything before
//! it is acknowledged. A client that delays its ACK (40 ms on Linux) pays that on every
//! command; ours acknowledges at once, so each command costs one round trip.

use std::time::Duration;

use super::Pop3Client;
use super::tests::account;
use crate::config::TlsMode;
use crate::testkit::Split;
use crate::testkit::script::{Scripted, Step, send};

/// Commands in the test: more than the first segments of a connection, which Linux
/// acknowledges at once anyway (quick-ACK mode at the start of a connection).
const COMMANDS: usize = 40;

/// The pause before the last line of each reply: long enough for a prompt ACK to arrive,
/// shorter than the shortest delayed ACK (40 ms).
const PAUSE: Duration = Duration::from_millis(15);

const MESSAGE: &str = "Subject: one\r\n\r\nbody\r\n";

#[tokio::test]
async fn lock_step_retr_against_a_nagling_server_acknowledges_each_reply_at_once() {
    let mut script = vec![
        send("+OK ready\r\n"),
        Step::Expect("CAPA"),
        // No PIPELINING: the lock-step path, one command at a time.
        send("+OK\r\nUSER\r\nUIDL\r\n.\r\n"),
        Step::Expect("USER alice"),
        send("+OK\r\n"),
        Step::Expect("PASS s3cret"),
        send("+OK logged in.\r\n"),
    ];
    for _ in 0..COMMANDS {
        script.extend([
            Step::Expect("RETR 1"),
            Step::Send(format!("+OK {} octets follow.\r\n{MESSAGE}", MESSAGE.len()).into_bytes()),
            Step::Sleep(PAUSE),
            // Where Nagle would hold the last line: has the client acknowledged the rest?
            Step::ExpectAcked,
            send(".\r\n"),
        ]);
    }
    script.extend([Step::Expect("QUIT"), send("+OK Bye-bye.\r\n"), Step::Close]);
    let fake = Scripted::start(script, Split::Whole, None).await;
    let mut client = Pop3Client::connect(&account(fake.addr(), TlsMode::None))
        .await
        .expect("login");
    for i in 0..COMMANDS {
        match client.retr(1).await {
            Ok(body) => assert_eq!(body, MESSAGE.as_bytes()),
            // The fake stopped: its outcome below says why.
            Err(e) => {
                eprintln!("RETR number {} failed: {e}", i + 1);
                break;
            }
        }
    }
    let _ = client.quit().await;
    if let Err(e) = fake.outcome().await {
        panic!("the server had to wait for an ACK: {e}");
    }
}
