//! The IMAP session behind the `Mailbox` seam with the account's flag options, against the
//! scripted fake: FLAGS in the listing only when asked for, and `after_fetch: seen` sending
//! one `UID STORE ... (\Seen)` for a kept message not yet seen.

use crate::config::{AccountConfig, AfterFetch, Retention, TlsMode};
use crate::fetch::{Listed, Mailbox, Session, Source, Upstream};
use crate::testkit::Split;
use crate::testkit::script::{Scripted, Step, send};

use super::tests::{account, fake, log, login_and_select};

/// A session on the fake after login and SELECT, then `rest`, with the account as `set`
/// leaves it; and the listing.
async fn listed(
    rest: Vec<Step>,
    set: impl FnOnce(&mut AccountConfig),
) -> (Session, Vec<Listed>, Scripted) {
    log();
    let mut script = login_and_select("", "UIDPLUS");
    script.extend(rest);
    let fake = fake(script, Split::Whole, None).await;
    let mut acct = account(fake.addr(), TlsMode::None);
    set(&mut acct);
    let upstream = Upstream {
        account: &acct,
        max_message_size: 1000,
        token: None,
    };
    let mut session = upstream.open().await.unwrap();
    let listing = session.list().await.unwrap();
    (session, listing, fake)
}

/// Each message's UID and whether it is `\Seen`.
fn seen(listing: &[Listed]) -> Vec<(u32, bool)> {
    listing.iter().map(|l| (l.handle, l.seen)).collect()
}

#[tokio::test]
async fn after_fetch_seen_flags_a_kept_message_once() {
    let script = vec![
        Step::Expect("A3 UID FETCH 1:* (UID RFC822.SIZE FLAGS)"),
        send(
            "* 1 FETCH (UID 7 RFC822.SIZE 10 FLAGS (\\Seen \\Answered))\r\n\
             * 2 FETCH (UID 8 RFC822.SIZE 20 FLAGS ())\r\n\
             A3 OK Fetch completed.\r\n",
        ),
        Step::Expect("A4 UID STORE 8 +FLAGS.SILENT (\\Seen)"),
        send("A4 OK Store completed.\r\n"),
    ];
    let (mut session, listing, fake) = listed(script, |acct| {
        acct.retention = Retention::Keep;
        acct.after_fetch = AfterFetch::Seen;
    })
    .await;
    assert_eq!(seen(&listing), [(7, true), (8, false)]);
    // UID 7 is \Seen already: no command for it.
    for listed in &listing {
        session.settled(listed).await.unwrap();
    }
    session.commit().await.unwrap();
    fake.finish().await;
}

#[tokio::test]
async fn without_flag_options_the_listing_asks_no_flags_and_kept_mail_is_left_alone() {
    let script = vec![
        Step::Expect("A3 UID FETCH 1:* (UID RFC822.SIZE)"),
        send("* 1 FETCH (UID 7 RFC822.SIZE 10)\r\nA3 OK Fetch completed.\r\n"),
    ];
    let (mut session, listing, fake) =
        listed(script, |acct| acct.retention = Retention::Keep).await;
    assert_eq!(
        listing,
        [Listed {
            key: "1700000001:7".into(),
            handle: 7,
            size: Some(10),
            seen: false,
        }]
    );
    session.settled(&listing[0]).await.unwrap();
    session.commit().await.unwrap();
    fake.finish().await;
}

#[tokio::test]
async fn unseen_only_lists_with_flags() {
    let script = vec![
        Step::Expect("A3 UID FETCH 1:* (UID RFC822.SIZE FLAGS)"),
        send(
            "* 1 FETCH (UID 7 RFC822.SIZE 10 FLAGS (\\Seen))\r\n\
             * 2 FETCH (UID 8 FLAGS (\\Flagged) RFC822.SIZE 20)\r\n\
             A3 OK Fetch completed.\r\n",
        ),
    ];
    let (mut session, listing, fake) = listed(script, |acct| acct.unseen_only = true).await;
    assert_eq!(seen(&listing), [(7, true), (8, false)]);
    // Only after_fetch: seen flags kept mail.
    session.settled(&listing[1]).await.unwrap();
    session.commit().await.unwrap();
    fake.finish().await;
}
