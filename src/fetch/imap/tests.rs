//! The client against a scripted in-process fake server on 127.0.0.1, for what Dovecot will
//! not do on demand: split reads, a connection dropped mid-literal, odd untagged responses, a
//! server without UIDPLUS. Login is in `login_tests.rs`.

use std::net::SocketAddr;
use std::time::Duration;

use tokio_rustls::TlsAcceptor;

use super::{ImapClient, ImapError, Listed};
use crate::config::{AccountConfig, Mode, Password, Protocol, Retention, TlsMode};
use crate::fetch::TransportError;
use crate::testkit::Split;
use crate::testkit::script::{Scripted as Fake, Step, send};

pub(super) const PASSWORD: &str = "s3cret";

/// The client's log on stderr (shown for a failing test).
pub(super) fn log() {
    let _ = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::DEBUG)
        .with_test_writer()
        .try_init();
}

/// The fake's answer to a LOGOUT after its script: BYE, then the tagged OK.
pub(super) fn answer_logout(line: &str) -> Option<String> {
    let tag = line.strip_suffix(" LOGOUT")?;
    Some(format!(
        "* BYE Logging out\r\n{tag} OK Logout completed.\r\n"
    ))
}

/// A fake IMAP server playing `script`.
pub(super) async fn fake(script: Vec<Step>, split: Split, tls: Option<TlsAcceptor>) -> Fake {
    Fake::answering(script, split, tls, answer_logout).await
}

pub(super) fn account(addr: SocketAddr, tls: TlsMode) -> AccountConfig {
    AccountConfig {
        name: "test".into(),
        protocol: Protocol::Imap,
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

/// Greeting with capabilities `before`, LOGIN (its reply announcing `after`), and the
/// SELECT of INBOX (two messages).
pub(super) fn login_and_select(before: &str, after: &str) -> Vec<Step> {
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
        Step::Expect("A4 UID FETCH 7 BODY.PEEK[]<0.4194304>"),
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
    let fake = fake(full_session_script(), split, None).await;
    let mut client = ImapClient::connect(&account(fake.addr(), TlsMode::None))
        .await
        .unwrap_or_else(|e| panic!("{split:?}: {e}"));
    assert!(!client.is_encrypted());
    assert!(
        client.capabilities().has("UIDPLUS"),
        "capabilities after login"
    );
    assert_eq!(client.open_folder("inbox").await.unwrap(), 1_700_000_001);
    assert_eq!(
        client.listing(false).await.unwrap(),
        vec![
            Listed {
                uid: 7,
                size: Some(103),
                seen: false,
            },
            Listed {
                uid: 11,
                size: Some(10),
                seen: false,
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

/// A session logged in (UIDPLUS) and with INBOX selected, then `rest`.
pub(super) async fn selected(rest: Vec<Step>, max: u64) -> (ImapClient, Fake) {
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
    let fake = fake(script, Split::Whole, None).await;
    let mut acct = account(fake.addr(), TlsMode::None);
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
            Step::Expect("A3 UID FETCH 7 BODY.PEEK[]<0.4194304>"),
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
            Step::Expect("A3 UID FETCH 9 BODY.PEEK[]<0.4194304>"),
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
            Step::Expect("A3 UID FETCH 7 BODY.PEEK[]<0.4194304>"),
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
            Step::Expect("A3 UID FETCH 7 BODY.PEEK[]<0.4194304>"),
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
        vec![
            Step::Expect("A3 UID FETCH 7 BODY.PEEK[]<0.4194304>"),
            Step::Hang,
        ],
        1000,
        "UIDPLUS",
        Duration::from_millis(300),
    )
    .await;
    let started = std::time::Instant::now();
    let err = client.fetch(7, Some(10)).await.unwrap_err();
    assert!(
        matches!(err, ImapError::Transport(TransportError::Timeout(_))),
        "{err:?}"
    );
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
    let err = client.listing(false).await.unwrap_err();
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
    let fake = fake(script, Split::Whole, None).await;
    let mut client = ImapClient::connect(&account(fake.addr(), TlsMode::None))
        .await
        .unwrap();
    assert_eq!(client.open_folder("INBOX/Support").await.unwrap(), 5);
    // An empty folder needs no FETCH.
    assert_eq!(client.listing(false).await.unwrap(), vec![]);
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

#[tokio::test]
async fn a_message_is_moved_instead_of_deleted_with_move_or_copy() {
    let list = || {
        vec![
            Step::Expect("A3 LIST \"\" \"*\""),
            send("* LIST () \".\" INBOX\r\n* LIST () \".\" INBOX.Done\r\nA3 OK\r\n"),
        ]
    };
    // With MOVE: one command, and nothing left to expunge.
    let mut script = list();
    script.extend([
        Step::Expect("A4 UID MOVE 7 \"INBOX.Done\""),
        send("* OK [COPYUID 9 7 1] Moved\r\n* 1 EXPUNGE\r\nA4 OK Move completed.\r\n"),
        Step::Expect("A5 LOGOUT"),
        send("* BYE\r\nA5 OK\r\n"),
    ]);
    let (mut client, fake) =
        selected_with(script, 1000, "UIDPLUS MOVE", Duration::from_secs(10)).await;
    client.move_instead_of_delete("INBOX/Done").await.unwrap();
    client.mark_deleted(7).await.unwrap();
    client.commit().await.unwrap();
    fake.finish().await;

    // Without: COPY there, then flagged and expunged like a deletion.
    let mut script = list();
    script.extend([
        Step::Expect("A4 UID COPY 7 \"INBOX.Done\""),
        send("A4 OK [COPYUID 9 7 1] Copied\r\n"),
        Step::Expect("A5 UID STORE 7 +FLAGS.SILENT (\\Deleted)"),
        send("A5 OK\r\n"),
        Step::Expect("A6 UID EXPUNGE 7"),
        send("* 1 EXPUNGE\r\nA6 OK\r\n"),
    ]);
    let (mut client, fake) = selected(script, 1000).await;
    client.move_instead_of_delete("INBOX.Done").await.unwrap();
    client.mark_deleted(7).await.unwrap();
    client.commit().await.unwrap();
    fake.finish().await;
}

#[tokio::test]
async fn a_refused_store_fails_that_message_only() {
    let (mut client, fake) = selected(
        vec![
            Step::Expect("A3 UID STORE 7 +FLAGS.SILENT (\\Deleted)"),
            send("A3 NO [CANNOT] Mailbox is read-only\r\n"),
            Step::Expect("A4 UID STORE 8 +FLAGS.SILENT (\\Deleted)"),
            send("A4 OK\r\n"),
            Step::Expect("A5 UID EXPUNGE 8"),
            send("A5 OK\r\n"),
        ],
        1000,
    )
    .await;
    let err = client.mark_deleted(7).await.unwrap_err();
    assert!(!err.connection_lost(), "{err:?}");
    assert!(
        err.to_string().contains("[CANNOT] Mailbox is read-only"),
        "{err}"
    );
    client.mark_deleted(8).await.unwrap();
    // Only what was flagged is expunged.
    client.commit().await.unwrap();
    fake.finish().await;
}

#[tokio::test]
async fn a_message_larger_than_a_chunk_arrives_in_pieces() {
    let chunk = super::client::CHUNK as usize;
    let mut message = vec![b'x'; chunk + 10];
    message[..8].copy_from_slice(b"Subject:");
    let piece = |offset: usize, bytes: &[u8]| {
        let mut r =
            format!("* 1 FETCH (UID 7 BODY[]<{offset}> {{{}}}\r\n", bytes.len()).into_bytes();
        r.extend_from_slice(bytes);
        r.extend_from_slice(b")\r\n");
        r
    };
    let mut first = piece(0, &message[..chunk]);
    first.extend_from_slice(b"A3 OK done\r\n");
    let mut rest = piece(chunk, &message[chunk..]);
    rest.extend_from_slice(b"A4 OK done\r\n");
    let (mut client, fake) = selected(
        vec![
            Step::Expect("A3 UID FETCH 7 BODY.PEEK[]<0.4194304>"),
            Step::Send(first),
            Step::Expect("A4 UID FETCH 7 BODY.PEEK[]<4194304.4194304>"),
            Step::Send(rest),
        ],
        50_000_000,
    )
    .await;
    let got = client.fetch(7, Some(message.len() as u64)).await.unwrap();
    assert!(got == message, "the pieces joined are the message");
    client.logout().await;
    fake.finish().await;
}
