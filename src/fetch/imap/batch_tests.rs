//! Several planned messages per `UID FETCH`, against the scripted server: one command over
//! their UID set, replies taken as asked for, a skipped one dropped, a long one continued in
//! pieces, a missing one reported alone, a batch refused as a whole fetched one by one.

use super::ImapError;
use super::client::CHUNK;
use super::tests::selected;
use crate::testkit::script::{Step, send};

fn message(uid: u32) -> Vec<u8> {
    format!("Subject: message {uid}\r\n\r\nbody of {uid}\r\n").into_bytes()
}

/// `* n FETCH (UID uid BODY[]<0> {..}...)`.
fn fetched(uid: u32, body: &[u8]) -> Vec<u8> {
    let mut r = format!("* {uid} FETCH (UID {uid} BODY[]<0> {{{}}}\r\n", body.len()).into_bytes();
    r.extend_from_slice(body);
    r.extend_from_slice(b")\r\n");
    r
}

fn size(uid: u32) -> Option<u64> {
    Some(message(uid).len() as u64)
}

#[tokio::test]
async fn planned_messages_come_in_one_uid_fetch_over_their_set() {
    let mut batch: Vec<u8> = [7, 8, 9, 12]
        .iter()
        .flat_map(|u| fetched(*u, &message(*u)))
        .collect();
    batch.extend_from_slice(b"A3 OK done\r\n");
    let (mut client, fake) = selected(
        vec![
            Step::Expect("A3 UID FETCH 7:9,12 BODY.PEEK[]<0.4194304>"),
            Step::Send(batch),
        ],
        1_000_000,
    )
    .await;
    client.plan([7, 8, 9, 12].map(|u| (u, size(u))));
    assert_eq!(client.fetch(7, size(7)).await.unwrap(), message(7));
    // 8 is skipped: its body is dropped, not returned later.
    assert_eq!(client.fetch(9, size(9)).await.unwrap(), message(9));
    assert_eq!(client.fetch(12, size(12)).await.unwrap(), message(12));
    client.logout().await;
    fake.finish().await;
}

#[tokio::test]
async fn a_batch_stops_at_a_message_of_unknown_or_large_size_which_comes_alone() {
    let big = vec![b'x'; CHUNK as usize + 5];
    let mut first: Vec<u8> = [1, 2]
        .iter()
        .flat_map(|u| fetched(*u, &message(*u)))
        .collect();
    first.extend_from_slice(b"A3 OK done\r\n");
    let mut alone = fetched(3, &big[..CHUNK as usize]);
    alone.extend_from_slice(b"A4 OK done\r\n");
    let mut rest = format!("* 3 FETCH (UID 3 BODY[]<{CHUNK}> {{5}}\r\n").into_bytes();
    rest.extend_from_slice(&big[CHUNK as usize..]);
    rest.extend_from_slice(b")\r\nA5 OK done\r\n");
    let mut last: Vec<u8> = [4, 5]
        .iter()
        .flat_map(|u| fetched(*u, &message(*u)))
        .collect();
    last.extend_from_slice(b"A6 OK done\r\n");
    let (mut client, fake) = selected(
        vec![
            Step::Expect("A3 UID FETCH 1:2 BODY.PEEK[]<0.4194304>"),
            Step::Send(first),
            Step::Expect("A4 UID FETCH 3 BODY.PEEK[]<0.4194304>"),
            Step::Send(alone),
            Step::Expect("A5 UID FETCH 3 BODY.PEEK[]<4194304.4194304>"),
            Step::Send(rest),
            Step::Expect("A6 UID FETCH 4:5 BODY.PEEK[]<0.4194304>"),
            Step::Send(last),
        ],
        50_000_000,
    )
    .await;
    let big_size = Some(big.len() as u64);
    client.plan([
        (1, size(1)),
        (2, size(2)),
        (3, big_size),
        (4, size(4)),
        (5, size(5)),
    ]);
    assert_eq!(client.fetch(1, size(1)).await.unwrap(), message(1));
    assert_eq!(client.fetch(2, size(2)).await.unwrap(), message(2));
    assert!(client.fetch(3, big_size).await.unwrap() == big);
    assert_eq!(client.fetch(4, size(4)).await.unwrap(), message(4));
    assert_eq!(client.fetch(5, size(5)).await.unwrap(), message(5));
    client.logout().await;
    fake.finish().await;
}

#[tokio::test]
async fn a_message_missing_from_the_batch_fails_alone() {
    let mut batch = fetched(1, &message(1));
    batch.extend_from_slice(&fetched(3, &message(3)));
    batch.extend_from_slice(b"A3 OK done\r\n");
    let (mut client, fake) = selected(
        vec![
            Step::Expect("A3 UID FETCH 1:3 BODY.PEEK[]<0.4194304>"),
            Step::Send(batch),
        ],
        1_000_000,
    )
    .await;
    client.plan([1, 2, 3].map(|u| (u, size(u))));
    assert_eq!(client.fetch(1, size(1)).await.unwrap(), message(1));
    let err = client.fetch(2, size(2)).await.unwrap_err();
    assert!(matches!(err, ImapError::MessageGone(2)), "{err:?}");
    assert_eq!(client.fetch(3, size(3)).await.unwrap(), message(3));
    client.logout().await;
    fake.finish().await;
}

#[tokio::test]
async fn a_batch_refused_as_a_whole_is_fetched_one_by_one() {
    let mut one = fetched(1, &message(1));
    one.extend_from_slice(b"A4 OK done\r\n");
    let mut two = fetched(2, &message(2));
    two.extend_from_slice(b"A5 OK done\r\n");
    let (mut client, fake) = selected(
        vec![
            Step::Expect("A3 UID FETCH 1:2 BODY.PEEK[]<0.4194304>"),
            send("A3 NO [SERVERBUG] cannot do that\r\n"),
            Step::Expect("A4 UID FETCH 1 BODY.PEEK[]<0.4194304>"),
            Step::Send(one),
            Step::Expect("A5 UID FETCH 2 BODY.PEEK[]<0.4194304>"),
            Step::Send(two),
        ],
        1_000_000,
    )
    .await;
    client.plan([1, 2].map(|u| (u, size(u))));
    assert_eq!(client.fetch(1, size(1)).await.unwrap(), message(1));
    assert_eq!(client.fetch(2, size(2)).await.unwrap(), message(2));
    client.logout().await;
    fake.finish().await;
}

#[tokio::test]
async fn deletions_are_flagged_in_one_uid_store_and_a_refusal_names_them() {
    let (mut client, fake) = selected(
        vec![
            Step::Expect("A3 UID STORE 7:9,12 +FLAGS.SILENT (\\Deleted)"),
            send("A3 OK\r\n"),
            Step::Expect("A4 UID EXPUNGE 7:9,12"),
            send("A4 OK\r\n"),
        ],
        1_000_000,
    )
    .await;
    assert!(
        client
            .mark_deleted_all(&[7, 8, 9, 12])
            .await
            .unwrap()
            .is_empty()
    );
    client.commit().await.unwrap();
    fake.finish().await;

    let (mut client, fake) = selected(
        vec![
            Step::Expect("A3 UID STORE 3:4 +FLAGS.SILENT (\\Deleted)"),
            send("A3 NO [CANNOT] Mailbox is read-only\r\n"),
        ],
        1_000_000,
    )
    .await;
    assert_eq!(client.mark_deleted_all(&[3, 4]).await.unwrap(), [3, 4]);
    // Nothing of ours is flagged: no expunge.
    client.commit().await.unwrap();
    fake.finish().await;
}
