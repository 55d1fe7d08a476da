//! Kept mail and mail read upstream: `Mailbox::settled` is called for what retention keeps
//! (IMAP `after_fetch: seen` flags it there), and `unseen_only` takes up no message read
//! upstream while losing nothing it had begun or settled.

use std::time::SystemTime;

use super::{World, config_for, mail};
use crate::state::StateStore;

/// A world whose account is IMAP, with `account_extra`.
fn imap(account_extra: &str) -> World {
    World {
        config: config_for("imap", account_extra),
        ..World::new("")
    }
}

#[tokio::test]
async fn a_settled_message_that_retention_keeps_is_handed_to_settled_and_a_deleted_one_is_not() {
    let w = imap("    retention: 7d\n    initial: deliver_all\n    after_fetch: seen\n");
    let old = w.mailbox.add(&mail("a@example.com", "old"));
    let new = w.mailbox.add(&mail("b@example.com", "new"));
    let pending = w.mailbox.add(&mail("c@example.com", "pending"));
    w.relay.set_rcpt("c@example.com", 451, "4.3.0 try later");
    w.settled_days_ago(&old, 8).await;
    let report = w.pass().await.unwrap();
    assert_eq!(report.deleted, 1, "the old one's days are over");
    assert_eq!(
        w.mailbox.kept(),
        std::slice::from_ref(&new),
        "only the settled message that stays upstream"
    );
    assert!(w.mailbox.keys().contains(&pending));
    w.pass().await.unwrap();
    assert_eq!(
        w.mailbox.kept(),
        [new.clone(), new],
        "every pass, while kept"
    );
}

#[tokio::test]
async fn unseen_only_takes_up_no_message_read_upstream() {
    let w = imap("    unseen_only: true\n");
    let read = w.mailbox.add(&mail("a@example.com", "read"));
    w.mailbox.add(&mail("b@example.com", "unread"));
    w.mailbox.set_seen(&read, true);
    let report = w.pass().await.unwrap();
    assert_eq!((report.upstream, report.fetched), (2, 1));
    assert_eq!(
        (w.received("a@example.com"), w.received("b@example.com")),
        (0, 1)
    );
    assert_eq!(
        w.mailbox.keys(),
        [read],
        "the read message stays, untouched"
    );
}

#[tokio::test]
async fn unseen_only_finishes_a_message_begun_before_it_was_read_upstream() {
    let w = imap("    unseen_only: true\n");
    let key = w.mailbox.add(&mail("a@example.com, b@example.com", "m"));
    w.relay.set_rcpt("b@example.com", 451, "4.3.0 try later");
    w.pass().await.unwrap();
    assert_eq!(w.received("a@example.com"), 1);

    // Someone reads it upstream while b waits for its retry.
    w.mailbox.set_seen(&key, true);
    w.relay.set_rcpt("b@example.com", 250, "ok");
    w.store
        .record_failure("acct", &key, Some(SystemTime::now()), "", false)
        .await
        .unwrap();
    let report = w.pass().await.unwrap();
    assert_eq!(report.delivered, 1);
    assert_eq!(
        (w.received("a@example.com"), w.received("b@example.com")),
        (1, 1),
        "b still gets it, once; a not again"
    );
    assert!(
        w.mailbox.keys().is_empty(),
        "then deleted, as retention says"
    );
}

#[tokio::test]
async fn unseen_only_a_kept_message_read_and_marked_unread_again_is_not_delivered_again() {
    // dedup off: only the state store's memory of the key can prevent a second delivery.
    let mut w = imap("    retention: keep\n    initial: deliver_all\n    unseen_only: true\n");
    w.config.dedup_window = None;
    let key = w.mailbox.add(&mail("a@example.com", "m"));
    w.pass().await.unwrap();
    assert_eq!(w.received("a@example.com"), 1);

    w.mailbox.set_seen(&key, true);
    let report = w.pass().await.unwrap();
    assert_eq!(report.fetched, 0);
    assert!(
        w.store.message("acct", &key).is_some(),
        "read upstream is not gone: the store keeps it"
    );

    w.mailbox.set_seen(&key, false);
    let report = w.pass().await.unwrap();
    assert_eq!(report.fetched, 0);
    assert_eq!(w.received("a@example.com"), 1, "not delivered again");
}

#[tokio::test]
async fn unseen_only_with_only_read_mail_upstream_needs_no_initial_choice() {
    let w = imap("    retention: keep\n    unseen_only: true\n");
    let read = w.mailbox.add(&mail("a@example.com", "read"));
    w.mailbox.set_seen(&read, true);
    let report = w.pass().await.unwrap();
    assert_eq!((report.upstream, report.fetched), (1, 0));
    let new = w.mailbox.add(&mail("b@example.com", "new"));
    w.pass().await.unwrap();
    assert_eq!(w.received("b@example.com"), 1, "{new} delivered");
}
