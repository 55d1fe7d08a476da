//! PIPELINING against the scripted server: RETRs sent ahead and matched in order, replies
//! split across reads, DELEs without waiting, nothing before the login completes, lock-step
//! when not offered, and what a connection lost or a server that does not keep to its
//! PIPELINING does.

use std::time::Duration;

use super::pipeline::WINDOW_COUNT;
use super::protocol::dot_stuff;
use super::tests::{account, login_steps};
use super::{Pop3Client, Pop3Error};
use crate::config::TlsMode;
use crate::fetch::{Mailbox, Source, Upstream};
use crate::testkit::Split;
use crate::testkit::script::{Scripted, Step, send};

const PIPELINING: &str = "+OK\r\nUSER\r\nUIDL\r\nPIPELINING\r\n.\r\n";
const NO_PIPELINING: &str = "+OK\r\nUSER\r\nUIDL\r\n.\r\n";

/// Message `n` of the tests.
fn message(n: u32) -> Vec<u8> {
    format!("Subject: message {n}\r\n\r\n.dotted line of {n}\r\n").into_bytes()
}

/// The server's reply to `RETR n`.
fn retr_reply(n: u32) -> Vec<u8> {
    let mut reply = b"+OK message follows\r\n".to_vec();
    reply.extend_from_slice(&dot_stuff(&message(n)));
    reply
}

fn expect_retrs(numbers: impl IntoIterator<Item = u32>) -> Vec<Step> {
    // Step::Expect wants a 'static line: a few bytes leaked per test.
    (numbers.into_iter())
        .map(|n| Step::Expect(format!("RETR {n}").leak()))
        .collect()
}

async fn connect(fake: &Scripted) -> Pop3Client {
    Pop3Client::connect(&account(fake.addr(), TlsMode::None))
        .await
        .unwrap()
}

/// Connects to `fake` (LIST first with `list`), plans `planned`, RETRs each of `fetched`
/// (each must come back whole), QUITs, and checks that the fake's script was kept.
async fn plan_and_fetch(fake: Scripted, list: bool, planned: &[u32], fetched: &[u32]) {
    let mut client = connect(&fake).await;
    if list {
        client.list().await.unwrap();
    }
    client.plan(planned.iter().copied());
    for n in fetched {
        assert_eq!(client.retr(*n).await.unwrap(), message(*n));
    }
    client.quit().await.unwrap();
    fake.finish().await;
}

#[tokio::test]
async fn planned_retrs_go_out_together_and_replies_split_across_reads_match_in_order() {
    for split in [Split::ByteByByte, Split::At(30), Split::Whole] {
        let mut script = login_steps(PIPELINING);
        script.extend(expect_retrs(1..=3));
        script.push(Step::Send(
            [retr_reply(1), retr_reply(2), retr_reply(3)].concat(),
        ));
        // The DELEs go out without waiting for each other's reply.
        script.extend([
            Step::Expect("DELE 1"),
            Step::Expect("DELE 2"),
            Step::Expect("DELE 3"),
            Step::Expect("QUIT"),
            send("+OK\r\n-ERR message 2 is locked\r\n+OK\r\n+OK bye\r\n"),
            Step::Close,
        ]);
        let fake = Scripted::start(script, split, None).await;
        let mut client = connect(&fake).await;
        assert!(client.pipelining());
        client.plan([1, 2, 3]);
        for n in 1..=3 {
            assert_eq!(client.retr(n).await.unwrap(), message(n), "{split:?}");
            client.dele_pipelined(n).await.unwrap();
        }
        assert_eq!(client.quit_reporting().await.unwrap(), [2], "{split:?}");
        fake.finish().await;
    }
}

#[tokio::test]
async fn a_planned_message_skipped_has_its_reply_read_and_dropped() {
    let mut script = login_steps(PIPELINING);
    script.extend(expect_retrs(1..=3));
    script.push(Step::Send(
        [retr_reply(1), retr_reply(2), retr_reply(3)].concat(),
    ));
    script.extend([Step::Expect("QUIT"), send("+OK bye\r\n"), Step::Close]);
    let fake = Scripted::start(script, Split::At(40), None).await;
    plan_and_fetch(fake, false, &[1, 2, 3], &[1, 3]).await;
}

#[tokio::test]
async fn the_window_is_bounded_by_count_and_by_the_sizes_list_announced() {
    // By count: the first RETR sends WINDOW_COUNT, each later one one more (LIST says they
    // are small: a size not listed counts for more, and the bytes would bound the window).
    let total = WINDOW_COUNT as u32 + 2;
    let listing: String = (1..=total).map(|n| format!("{n} 100\r\n")).collect();
    let mut script = login_steps(PIPELINING);
    script.extend([
        Step::Expect("LIST"),
        Step::Send(format!("+OK\r\n{listing}.\r\n").into_bytes()),
    ]);
    script.extend(expect_retrs(1..=WINDOW_COUNT as u32));
    script.push(Step::Send(retr_reply(1)));
    script.extend(expect_retrs([WINDOW_COUNT as u32 + 1]));
    script.push(Step::Hang);
    let fake = Scripted::start(script, Split::Whole, None).await;
    let mut client = connect(&fake).await;
    client.list().await.unwrap();
    client.plan(1..=total);
    assert_eq!(client.retr(1).await.unwrap(), message(1));
    // Sends RETR WINDOW_COUNT+1 before reading (and waiting for) message 2.
    let second = tokio::time::timeout(Duration::from_millis(300), client.retr(2)).await;
    assert!(second.is_err(), "the fake never answers RETR 2");
    drop(client);
    fake.finish().await;

    // By size: two messages LIST says are 1.5 MiB each are not in flight together.
    let mut script = login_steps(PIPELINING);
    script.extend([
        Step::Expect("LIST"),
        send("+OK\r\n1 1572864\r\n2 1572864\r\n.\r\n"),
        Step::Expect("RETR 1"),
        Step::Send(retr_reply(1)),
        Step::Expect("RETR 2"),
        Step::Send(retr_reply(2)),
        Step::Expect("QUIT"),
        send("+OK bye\r\n"),
        Step::Close,
    ]);
    let fake = Scripted::start(script, Split::Whole, None).await;
    plan_and_fetch(fake, true, &[1, 2], &[1, 2]).await;
}

#[tokio::test]
async fn nothing_is_sent_before_the_login_completes_even_with_pipelining_offered() {
    // Courier loses what arrives before "+OK logged in.": the client waits for it.
    let mut script = login_steps(PIPELINING);
    let logged_in = script.pop();
    script.push(Step::Quiet(Duration::from_millis(200)));
    script.extend(logged_in);
    script.extend(expect_retrs(1..=2));
    script.push(Step::Send([retr_reply(1), retr_reply(2)].concat()));
    script.extend([Step::Expect("QUIT"), send("+OK bye\r\n"), Step::Close]);
    let fake = Scripted::start(script, Split::Whole, None).await;
    plan_and_fetch(fake, false, &[1, 2], &[1, 2]).await;
}

#[tokio::test]
async fn lock_step_when_the_server_does_not_offer_pipelining() {
    let mut script = login_steps(NO_PIPELINING);
    script.extend([
        Step::Expect("RETR 1"),
        Step::Send(retr_reply(1)),
        Step::Expect("DELE 1"),
        send("+OK\r\n"),
        Step::Expect("RETR 2"),
        Step::Send(retr_reply(2)),
        Step::Expect("DELE 2"),
        send("+OK\r\n"),
        Step::Expect("QUIT"),
        send("+OK bye\r\n"),
        Step::Close,
    ]);
    let fake = Scripted::start(script, Split::Whole, None).await;
    let mut client = connect(&fake).await;
    assert!(!client.pipelining());
    client.plan([1, 2]);
    for n in 1..=2 {
        assert_eq!(client.retr(n).await.unwrap(), message(n));
        client.dele_pipelined(n).await.unwrap();
    }
    assert!(client.quit_reporting().await.unwrap().is_empty());
    fake.finish().await;
}

#[tokio::test]
async fn a_connection_dropped_in_the_third_of_five_pipelined_retrs_keeps_the_first_two() {
    let mut script = login_steps(PIPELINING);
    script.extend(expect_retrs(1..=5));
    let third = retr_reply(3);
    script.push(Step::Send(
        [
            retr_reply(1),
            retr_reply(2),
            third[..third.len() / 2].to_vec(),
        ]
        .concat(),
    ));
    script.push(Step::Close);
    let fake = Scripted::start(script, Split::Whole, None).await;
    let mut client = connect(&fake).await;
    client.plan(1..=5);
    assert_eq!(client.retr(1).await.unwrap(), message(1));
    assert_eq!(client.retr(2).await.unwrap(), message(2));
    let err = client.retr(3).await.unwrap_err();
    assert!(err.connection_lost(), "{err:?}");
    // The network's doing, not pipelining's.
    assert!(!client.pipelining_failed());
    assert!(client.retr(4).await.unwrap_err().connection_lost());
    drop(client);
    fake.finish().await;
}

/// The listing steps of a session through [`Upstream`]: UIDL and LIST of `n` messages.
fn listing_steps(n: u32) -> Vec<Step> {
    let uidl: String = (1..=n).map(|i| format!("{i} uid-{i}\r\n")).collect();
    let list: String = (1..=n)
        .map(|i| format!("{i} {}\r\n", message(i).len()))
        .collect();
    vec![
        Step::Expect("UIDL"),
        Step::Send(format!("+OK\r\n{uidl}.\r\n").into_bytes()),
        Step::Expect("LIST"),
        Step::Send(format!("+OK\r\n{list}.\r\n").into_bytes()),
    ]
}

#[tokio::test]
async fn a_server_that_advertises_pipelining_and_drops_pipelined_commands_gets_lock_step_next() {
    // It answers the first RETR and drops the ones sent with it.
    let mut script = login_steps(PIPELINING);
    script.extend(listing_steps(2));
    script.extend(expect_retrs(1..=2));
    script.extend([Step::Send(retr_reply(1)), Step::Hang]);
    let fake = Scripted::start(script, Split::Whole, None).await;
    let mut acct = account(fake.addr(), TlsMode::None);
    // LOCK_STEP is per process: a name of this test's own.
    acct.name = "pipelining-misbehaves".into();
    acct.timeout = Duration::from_millis(300);
    let upstream = Upstream {
        account: &acct,
        max_message_size: 1 << 20,
        token: None,
    };
    let mut session = upstream.open().await.unwrap();
    let listing = session.list().await.unwrap();
    session.plan(&listing);
    assert_eq!(session.fetch(&listing[0]).await.unwrap(), message(1));
    let err = session.fetch(&listing[1]).await.unwrap_err();
    assert!(err.connection_lost(), "{err:?}");
    assert!(matches!(
        err,
        crate::fetch::FetchError::Pop3(Pop3Error::Transport(
            crate::fetch::TransportError::Timeout(_)
        ))
    ));
    drop(session);
    fake.finish().await;

    // The next session of the account waits for each reply.
    let mut script = login_steps(PIPELINING);
    script.extend(listing_steps(2));
    script.extend([
        Step::Expect("RETR 2"),
        Step::Send(retr_reply(2)),
        Step::Expect("QUIT"),
        send("+OK bye\r\n"),
        Step::Close,
    ]);
    let fake = Scripted::start(script, Split::Whole, None).await;
    acct.port = fake.addr().port();
    let upstream = Upstream {
        account: &acct,
        max_message_size: 1 << 20,
        token: None,
    };
    let mut session = upstream.open().await.unwrap();
    let listing = session.list().await.unwrap();
    session.plan(&listing[1..]);
    assert_eq!(session.fetch(&listing[1]).await.unwrap(), message(2));
    session.commit().await.unwrap();
    fake.finish().await;
}

#[tokio::test]
async fn uidl_and_list_go_out_together() {
    let mut script = login_steps(PIPELINING);
    script.extend([
        Step::Expect("UIDL"),
        Step::Expect("LIST"),
        send("+OK\r\n1 uid-a\r\n2 uid-b\r\n.\r\n+OK\r\n1 120\r\n2 340\r\n.\r\n"),
        Step::Expect("QUIT"),
        send("+OK bye\r\n"),
        Step::Close,
    ]);
    let fake = Scripted::start(script, Split::At(9), None).await;
    let mut client = connect(&fake).await;
    let listing = client.listing().await.unwrap();
    let got: Vec<(u32, &str, Option<u64>)> = (listing.iter())
        .map(|l| (l.number, l.uid.as_str(), l.size))
        .collect();
    assert_eq!(got, [(1, "uid-a", Some(120)), (2, "uid-b", Some(340))]);
    client.quit().await.unwrap();
    fake.finish().await;
}
