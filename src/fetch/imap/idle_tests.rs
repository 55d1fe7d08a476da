//! IDLE against the scripted fake: woken by EXISTS, ended by the window, and a server that
//! refuses it.

use std::time::{Duration, Instant};

use crate::testkit::script::{Step, send};

use super::Woken;
use super::tests::{account, fake, log, login_and_select};
use crate::config::TlsMode;
use crate::testkit::Split;

/// Login (IDLE offered) and SELECT, then `rest`; the client IDLEs for `window`.
async fn idle_with(
    rest: Vec<Step>,
    window: Duration,
) -> (Result<Woken, super::ImapError>, Duration) {
    log();
    let mut script = login_and_select("", "UIDPLUS IDLE");
    script.extend(rest);
    let fake = fake(script, Split::Whole, None).await;
    let mut client = super::ImapClient::connect(&account(fake.addr(), TlsMode::None))
        .await
        .unwrap();
    client.open_folder("INBOX").await.unwrap();
    assert!(client.can_idle());
    let started = Instant::now();
    let woken = client.idle(window).await;
    let took = started.elapsed();
    match woken {
        Ok(_) => client.logout().await,
        // A refused IDLE leaves the session usable; the test only hangs up.
        Err(_) => drop(client),
    }
    fake.finish().await;
    (woken, took)
}

#[tokio::test]
async fn new_mail_ends_idle_at_once() {
    let (woken, took) = idle_with(
        vec![
            Step::Expect("A3 IDLE"),
            send("+ idling\r\n"),
            Step::Sleep(Duration::from_millis(100)),
            send("* 1 RECENT\r\n* 3 EXISTS\r\n"),
            Step::Expect("DONE"),
            send("A3 OK Idle completed.\r\n"),
        ],
        Duration::from_secs(30),
    )
    .await;
    assert_eq!(woken.unwrap(), Woken::NewMail);
    assert!(took < Duration::from_secs(5), "{took:?}");
}

#[tokio::test]
async fn a_quiet_window_ends_with_done() {
    let (woken, took) = idle_with(
        vec![
            Step::Expect("A3 IDLE"),
            send("+ idling\r\n"),
            // Not mail: a flag change keeps the client idling.
            send("* 1 FETCH (FLAGS (\\Seen))\r\n"),
            Step::Expect("DONE"),
            send("A3 OK Idle completed.\r\n"),
        ],
        Duration::from_millis(300),
    )
    .await;
    assert_eq!(woken.unwrap(), Woken::Quiet);
    assert!(took >= Duration::from_millis(300), "{took:?}");
}

#[tokio::test]
async fn a_refused_idle_is_an_error_not_a_hang() {
    let (woken, _) = idle_with(
        vec![Step::Expect("A3 IDLE"), send("A3 BAD IDLE not now\r\n")],
        Duration::from_secs(30),
    )
    .await;
    let err = woken.unwrap_err();
    assert!(err.to_string().contains("IDLE"), "{err}");
}
