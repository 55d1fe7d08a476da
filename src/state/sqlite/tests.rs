use super::*;
use crate::address::Address;
use crate::recipient::Status;
use crate::relay::Reply;
use crate::state::SCHEMA_VERSION;

fn at(secs: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
}

fn addr(s: &str) -> Address {
    Address::parse(s).unwrap()
}

/// A recipient whose status the store would write as `status` and `detail`.
fn rcpt(address: &Address, status: &str, detail: &str) -> Recipient {
    Recipient {
        address: address.clone(),
        status: Status::from_stored(status, detail),
    }
}

fn keys(list: &[&str]) -> HashSet<String> {
    list.iter().map(|s| s.to_string()).collect()
}

#[tokio::test]
async fn open_creates_the_directory_and_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let state_dir = dir.path().join("a/b");
    SqliteStore::open(&state_dir).unwrap();
    assert!(state_dir.join(DB_FILE).is_file());
}

#[tokio::test]
async fn reopen_after_drop_keeps_everything() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = SqliteStore::open(dir.path()).unwrap();
        store.seen("acct", "u1", at(1000)).await.unwrap();
        record_one(
            &store,
            "acct",
            "u1",
            &addr("Bob@Example.com"),
            "delivered",
            "250 ok",
            at(1001),
        )
        .await
        .unwrap();
        record_one(
            &store,
            "acct",
            "u1",
            &addr("carol@example.com"),
            "pending",
            "450 later",
            at(1001),
        )
        .await
        .unwrap();
        store.seen("acct", "u2", at(2000)).await.unwrap();
        store.mark_settled("acct", "u2", at(2001)).await.unwrap();
        store
            .mark_deleted("acct", &["u2".to_string()], at(2002))
            .await
            .unwrap();
        store.seen("other", "u1", at(3000)).await.unwrap();
    }
    let store = SqliteStore::open(dir.path()).unwrap();
    let acct = store.load_account("acct").await.unwrap();
    assert_eq!(acct.len(), 2);
    let u1 = &acct["u1"];
    assert_eq!(u1.first_seen, at(1000));
    assert_eq!(u1.settled_at, None);
    assert_eq!(
        u1.settled_recipients(),
        keys(&["bob@example.com"]),
        "pending carol is not done"
    );
    let u2 = &acct["u2"];
    assert_eq!(u2.first_seen, at(2000));
    assert_eq!(u2.settled_at, Some(at(2001)));
    assert_eq!(u2.deleted_at, Some(at(2002)));
    assert!(u2.settled_recipients().is_empty());
    let other = store.load_account("other").await.unwrap();
    assert_eq!(other.keys().collect::<Vec<_>>(), vec!["u1"]);
}

#[tokio::test]
async fn an_attempt_is_counted_and_committed() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path()).unwrap();
    let first = store.begin_attempt("a", "u1", at(1000)).await.unwrap();
    let second = store.begin_attempt("a", "u1", at(1001)).await.unwrap();
    assert_eq!((first.attempts, second.attempts), (1, 2));
    // Read back by another connection: the count is committed, not only in this one's cache.
    drop(store);
    let again = SqliteStore::open(dir.path()).unwrap();
    assert_eq!(again.load_account("a").await.unwrap()["u1"].attempts, 2);
}

#[tokio::test]
async fn sync_writes_the_log_to_disk_only_after_something_was_written() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path()).unwrap();
    let syncs = || store.syncs.load(Ordering::Relaxed);
    store.sync().await.unwrap();
    let after_open = syncs();
    store.load_account("a").await.unwrap();
    store.sync().await.unwrap();
    assert_eq!(syncs(), after_open, "a read leaves nothing to sync");
    store.begin_attempt("a", "u1", at(1000)).await.unwrap();
    store.sync().await.unwrap();
    assert_eq!(syncs(), after_open + 1, "a write is synced");
    store.sync().await.unwrap();
    assert_eq!(syncs(), after_open + 1, "once");
    assert!(
        wal_path(&store.path).exists(),
        "the log synced is SQLite's own"
    );
}

#[tokio::test]
async fn pragmas_are_in_force() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path()).unwrap();
    let conn = store.conn.lock().unwrap();
    let journal: String = conn
        .pragma_query_value(None, "journal_mode", |r| r.get(0))
        .unwrap();
    assert_eq!(journal, "wal");
    let sync: i64 = conn
        .pragma_query_value(None, "synchronous", |r| r.get(0))
        .unwrap();
    assert_eq!(
        sync, 1,
        "synchronous=NORMAL: a commit waits for no fsync, `sync` does"
    );
    let busy: i64 = conn
        .pragma_query_value(None, "busy_timeout", |r| r.get(0))
        .unwrap();
    assert_eq!(busy, BUSY_TIMEOUT.as_millis() as i64);
    let fk: i64 = conn
        .pragma_query_value(None, "foreign_keys", |r| r.get(0))
        .unwrap();
    assert_eq!(fk, 1);
    let version: i64 = conn
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .unwrap();
    assert_eq!(version, SCHEMA_VERSION);
    drop(conn);
    // WAL is a property of the file: a second connection sees it too.
    let other = Connection::open(dir.path().join(DB_FILE)).unwrap();
    let journal: String = other
        .pragma_query_value(None, "journal_mode", |r| r.get(0))
        .unwrap();
    assert_eq!(journal, "wal");
}

#[tokio::test]
async fn a_newer_schema_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    drop(SqliteStore::open(dir.path()).unwrap());
    let conn = Connection::open(dir.path().join(DB_FILE)).unwrap();
    conn.pragma_update(None, "user_version", SCHEMA_VERSION + 1)
        .unwrap();
    drop(conn);
    match SqliteStore::open(dir.path()) {
        Err(StateError::NewerSchema { found, supported }) => {
            assert_eq!((found, supported), (SCHEMA_VERSION + 1, SCHEMA_VERSION));
        }
        other => panic!("expected NewerSchema, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_use_from_two_tasks() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path()).unwrap();
    let mut tasks = Vec::new();
    for account in ["a", "b"] {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..40 {
                let uidl = format!("m{i}");
                store.seen(account, &uidl, at(100)).await.unwrap();
                let to = addr(&format!("r{i}@example.com"));
                store
                    .record_recipients(
                        account,
                        &uidl,
                        None,
                        &[rcpt(&to, "delivered", "250")],
                        true,
                        at(101),
                    )
                    .await
                    .unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    for account in ["a", "b"] {
        let all = store.load_account(account).await.unwrap();
        assert_eq!(all.len(), 40);
        for i in 0..40 {
            let s = &all[&format!("m{i}")];
            assert_eq!(s.settled_at, Some(at(101)));
            assert_eq!(
                s.settled_recipients(),
                keys(&[&format!("r{i}@example.com")])
            );
        }
    }
}

// The guard is held across awaits on purpose: it is the commit the others queue behind.
#[allow(clippy::await_holding_lock)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outcomes_that_finish_while_the_store_is_busy_are_committed_together() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path()).unwrap();
    // The connection busy (as during another commit): the outcomes queue up.
    let busy = lock(&store.conn);
    let mut tasks = Vec::new();
    for i in 0..10 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let to = addr(&format!("r{i}@example.com"));
            let delivered = [rcpt(&to, "delivered", "250")];
            (store.record_recipients("a", &format!("m{i}"), None, &delivered, true, at(5))).await
        }));
    }
    let all_queued = tokio::time::timeout(Duration::from_secs(10), async {
        while lock(&store.queued).len() < 10 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    });
    let all_queued = all_queued.await.is_ok();
    drop(busy);
    assert!(
        all_queued,
        "the outcomes queue while the connection is busy"
    );
    for (i, task) in tasks.into_iter().enumerate() {
        let state = task.await.unwrap().unwrap();
        assert_eq!(
            state.settled_at,
            Some(at(5)),
            "each caller gets its own state"
        );
        assert_eq!(
            state.settled_recipients(),
            keys(&[&format!("r{i}@example.com")])
        );
    }
    assert!(lock(&store.queued).is_empty());
    assert_eq!(store.load_account("a").await.unwrap().len(), 10);
}

#[tokio::test]
async fn prune_keeps_unsettled_and_present_messages() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path()).unwrap();
    for uidl in ["settled-gone", "settled-here", "unsettled-gone"] {
        store.seen("acct", uidl, at(10)).await.unwrap();
    }
    store.seen("other", "settled-gone", at(10)).await.unwrap();
    store
        .record_recipients(
            "acct",
            "settled-gone",
            None,
            &[rcpt(&addr("a@example.com"), "delivered", "250")],
            true,
            at(11),
        )
        .await
        .unwrap();
    store
        .mark_settled("acct", "settled-here", at(11))
        .await
        .unwrap();
    store
        .mark_settled("other", "settled-gone", at(11))
        .await
        .unwrap();

    let pruned = store.prune("acct", &keys(&["settled-here"])).await.unwrap();
    assert_eq!(pruned, 1);
    let left = store.load_account("acct").await.unwrap();
    let mut names: Vec<_> = left.keys().cloned().collect();
    names.sort();
    assert_eq!(names, ["settled-here", "unsettled-gone"]);
    // Another account's message of the same UIDL is untouched.
    assert_eq!(store.load_account("other").await.unwrap().len(), 1);
    // The pruned message's recipients went with it.
    let conn = store.conn.lock().unwrap();
    let n: i64 = conn
        .query_row(
            "SELECT count(*) FROM recipients WHERE account = 'acct'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(n, 0);
}

#[tokio::test]
async fn seen_keeps_the_first_first_seen() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path()).unwrap();
    let first = store.seen("acct", "u", at(100)).await.unwrap();
    assert_eq!(first.first_seen, at(100));
    assert_eq!(first.settled_at, None);
    record_one(
        &store,
        "acct",
        "u",
        &addr("x@example.com"),
        "rerouted",
        "550 no",
        at(150),
    )
    .await
    .unwrap();
    let again = store.seen("acct", "u", at(200)).await.unwrap();
    assert_eq!(again.first_seen, at(100));
    assert_eq!(again.settled_recipients(), keys(&["x@example.com"]));
}

#[tokio::test]
async fn a_settled_recipient_stays_settled_and_pending_can_settle() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path()).unwrap();
    let bob = addr("bob@example.com");
    let carol = addr("carol@example.com");
    record_one(&store, "acct", "u", &bob, "delivered", "250 ok", at(1))
        .await
        .unwrap();
    record_one(&store, "acct", "u", &bob, "pending", "450 later", at(2))
        .await
        .unwrap();
    record_one(&store, "acct", "u", &carol, "pending", "450 later", at(2))
        .await
        .unwrap();
    let s = store.seen("acct", "u", at(3)).await.unwrap();
    assert_eq!(s.settled_recipients(), keys(&["bob@example.com"]));
    record_one(&store, "acct", "u", &carol, "delivered", "250 ok", at(4))
        .await
        .unwrap();
    let s = store.seen("acct", "u", at(5)).await.unwrap();
    assert_eq!(
        s.settled_recipients(),
        keys(&["bob@example.com", "carol@example.com"])
    );
    assert_eq!(
        s.first_seen,
        at(1),
        "recording an outcome creates the message row"
    );
    let conn = store.conn.lock().unwrap();
    let (detail, attempts): (String, i64) = conn
        .query_row(
            "SELECT detail, attempts FROM recipients WHERE recipient = 'carol@example.com'",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert_eq!((detail.as_str(), attempts), ("250 ok", 2));
    let detail: String = conn
        .query_row(
            "SELECT detail FROM recipients WHERE recipient = 'bob@example.com'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(detail, "250 ok");
}

#[tokio::test]
async fn mark_settled_keeps_the_first_time() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path()).unwrap();
    store.seen("acct", "u", at(1)).await.unwrap();
    store.mark_settled("acct", "u", at(5)).await.unwrap();
    store.mark_settled("acct", "u", at(9)).await.unwrap();
    assert_eq!(
        store.seen("acct", "u", at(10)).await.unwrap().settled_at,
        Some(at(5))
    );
}

/// One recipient's outcome, recorded the way the pipeline records a message's outcomes.
async fn record_one(
    store: &SqliteStore,
    account: &str,
    uidl: &str,
    recipient: &Address,
    status: &str,
    detail: &str,
    now: SystemTime,
) -> Result<(), StateError> {
    let outcome = [rcpt(recipient, status, detail)];
    store
        .record_recipients(account, uidl, None, &outcome, false, now)
        .await
        .map(drop)
}

#[tokio::test]
async fn a_renamed_account_keeps_its_state_by_its_mailbox() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path()).unwrap();
    let mailbox = "pop3://u@pop.test";
    assert!(!store.account_known("old", mailbox).await.unwrap());
    store
        .initialize_account("old", mailbox, &[], at(1))
        .await
        .unwrap();
    record_one(
        &store,
        "old",
        "u1",
        &addr("a@example.com"),
        "delivered",
        "250",
        at(2),
    )
    .await
    .unwrap();
    store
        .add_quarantine("old", "u2", "bad", &Headline::default(), at(3))
        .await
        .unwrap();

    // Another mailbox under a new name is a new account.
    assert!(
        !store
            .account_known("other", "pop3://v@pop.test")
            .await
            .unwrap()
    );
    // The same mailbox under a new name is the old account, renamed.
    assert!(store.account_known("new", mailbox).await.unwrap());
    let state = store.load_account("new").await.unwrap();
    assert!(
        state["u1"]
            .settled_recipients()
            .contains(&addr("a@example.com").dedup_key())
    );
    assert!(state["u2"].quarantine.is_some());
    assert!(store.load_account("old").await.unwrap().is_empty());
    assert!(
        !store
            .account_known("old", "pop3://w@pop.test")
            .await
            .unwrap()
    );
    assert!(store.account_known("new", mailbox).await.unwrap());
}

#[tokio::test]
async fn who_got_a_message_is_remembered_across_accounts_for_the_window() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path()).unwrap();
    let (a, b) = (addr("a@example.com"), addr("b@example.com"));
    let outcomes = [rcpt(&a, "delivered", "250"), rcpt(&b, "pending", "451")];
    store
        .record_recipients("acct", "u1", Some("mid:x@y"), &outcomes, false, at(100))
        .await
        .unwrap();
    let keys = [a.dedup_key(), b.dedup_key()];
    let got = store
        .delivered_before("mid:x@y", &keys, at(50))
        .await
        .unwrap();
    assert_eq!(got, HashSet::from([a.dedup_key()]), "only what was settled");
    let other = store
        .delivered_before("mid:other", &keys, at(50))
        .await
        .unwrap();
    assert!(other.is_empty());
    // Outside the window: not a duplicate; forgotten once the window is over.
    assert!(
        store
            .delivered_before("mid:x@y", &keys, at(101))
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(store.forget_deliveries(at(101)).await.unwrap(), 1);
    assert!(
        store
            .delivered_before("mid:x@y", &keys, at(50))
            .await
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
async fn a_state_file_written_before_the_recipient_type_reads_back_with_every_status() {
    let dir = tempfile::tempdir().unwrap();
    drop(SqliteStore::open(dir.path()).unwrap());
    // Rows as an earlier mailferry wrote them: a whole-message refusal re-routed with the
    // relay's error as its detail, a duplicate, a deferred and a refused-but-not-re-routed
    // recipient.
    {
        let conn = Connection::open(dir.path().join(DB_FILE)).unwrap();
        conn.execute_batch(
            "INSERT INTO messages (account, uidl, first_seen) VALUES ('acct', 'u1', 1000);
             INSERT INTO recipients (account, uidl, recipient, address, status, detail, updated_at) VALUES
               ('acct', 'u1', 'a@example.com', 'a@example.com', 'rerouted',
                'the relay refused MAIL FROM: 550 5.7.1 no', 1001),
               ('acct', 'u1', 'b@example.com', 'B@example.com', 'delivered',
                'duplicate of an earlier delivery (sha256:ab)', 1001),
               ('acct', 'u1', 'c@example.com', 'c@example.com', 'pending', '451 4.3.0 later', 1001),
               ('acct', 'u1', 'd@example.com', 'd@example.com', 'pending', '550 5.1.1 unknown', 1001),
               ('acct', 'u1', 'e@example.com', 'e@example.com', 'delivered', '250 2.0.0 ok', 1001);",
        )
        .unwrap();
    }
    let store = SqliteStore::open(dir.path()).unwrap();
    let reply = |code, text: &str| Reply {
        code,
        text: text.to_owned(),
    };
    let expected = HashMap::from([
        (
            "a@example.com".to_owned(),
            Status::Rerouted(reply(0, "the relay refused MAIL FROM: 550 5.7.1 no")),
        ),
        (
            "b@example.com".to_owned(),
            Status::Duplicate("sha256:ab".to_owned()),
        ),
        (
            "c@example.com".to_owned(),
            Status::Temporary(reply(451, "4.3.0 later")),
        ),
        (
            "d@example.com".to_owned(),
            Status::Permanent(reply(550, "5.1.1 unknown")),
        ),
        (
            "e@example.com".to_owned(),
            Status::Delivered(reply(250, "2.0.0 ok")),
        ),
    ]);
    let loaded = store.load_account("acct").await.unwrap();
    assert_eq!(loaded["u1"].recipients, expected);
    let begun = store.begin_attempt("acct", "u1", at(2)).await.unwrap();
    assert_eq!(begun.recipients, expected, "the same through begin_attempt");
    assert_eq!(
        begun.settled_recipients(),
        keys(&["a@example.com", "b@example.com", "e@example.com"])
    );
    // Written again by this build, each row reads back the same.
    let again: Vec<Recipient> = ["c@example.com", "d@example.com"]
        .iter()
        .map(|a| Recipient {
            address: addr(a),
            status: expected[*a].clone(),
        })
        .collect();
    let state = store
        .record_recipients("acct", "u1", None, &again, false, at(3))
        .await
        .unwrap();
    assert_eq!(state.recipients, expected);
}

#[tokio::test]
async fn a_pending_recipient_is_not_written_and_a_settled_one_is_not_overwritten() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path()).unwrap();
    let a = addr("a@example.com");
    let record = |r: Recipient, now| {
        let store = store.clone();
        async move {
            store
                .record_recipients("acct", "u", None, &[r], false, now)
                .await
        }
    };
    let state = record(Recipient::pending(a.clone()), at(1)).await.unwrap();
    assert!(state.recipients.is_empty());
    record(rcpt(&a, "rerouted", "550 no"), at(2)).await.unwrap();
    let state = record(rcpt(&a, "pending", "451 later"), at(3))
        .await
        .unwrap();
    assert_eq!(
        state.status_of(&a),
        Some(&Status::from_stored("rerouted", "550 no"))
    );
}

#[tokio::test]
async fn a_quarantined_message_keeps_its_subject_from_and_message_id() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path()).unwrap();
    let headline = Headline::of(
        "From: =?utf-8?q?Ev=C3=A9?= <eve@x.test>\nSubject: =?utf-8?q?caf=C3=A9?= <script>\nMessage-ID: <m1@x.test>\n",
    );
    assert_eq!(headline.subject.as_deref(), Some("café <script>"));
    assert_eq!(headline.from.as_deref(), Some("Evé <eve@x.test>"));
    assert_eq!(headline.message_id.as_deref(), Some("m1@x.test"));
    store
        .quarantine("acct", "u1", "loop", &headline, at(5))
        .await
        .unwrap();
    // A second quarantine of the same message keeps the first record.
    store
        .quarantine("acct", "u1", "again", &Headline::default(), at(6))
        .await
        .unwrap();
    store
        .quarantine("acct", "u2", "too_large", &Headline::default(), at(7))
        .await
        .unwrap();
    let list = store.quarantined().await.unwrap();
    assert_eq!(list.len(), 2);
    assert_eq!(list[0].headline, headline);
    assert_eq!(list[0].reason, "loop");
    assert_eq!(list[1].headline, Headline::default());
}

use crate::testkit::error_chain as chain;

#[test]
fn a_state_dir_that_is_a_file_is_named_with_its_cause_once() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("state");
    std::fs::write(&file, b"not a directory").unwrap();
    let e = SqliteStore::open(&file).unwrap_err();
    let StateError::CreateDir { error, .. } = &e else {
        panic!("{e:?}");
    };
    let text = chain(&e);
    assert_eq!(text.matches("cannot create the state directory").count(), 1);
    assert_eq!(text.matches(&error.to_string()).count(), 1, "{text}");
}

#[test]
fn no_state_error_with_a_cause_in_its_message_exposes_it_again() {
    use std::error::Error;
    let io = || std::io::Error::other("disk on fire");
    for e in [
        StateError::CreateDir {
            path: "/x".into(),
            error: io(),
        },
        StateError::Lock {
            path: "/x/lock".into(),
            error: io(),
        },
        StateError::Sync {
            path: "/x/db-wal".into(),
            error: io(),
        },
        StateError::Open {
            path: "/x/db".into(),
            error: rusqlite::Error::InvalidQuery,
        },
        StateError::from(rusqlite::Error::InvalidQuery),
    ] {
        assert!(e.source().is_none(), "{e:?}");
        assert_eq!(chain(&e), e.to_string());
    }
}
