//! The state store's rules, checked once and run against both backends through the
//! `StateStore` trait: SQLite in a temporary directory, and PostgreSQL on a private server
//! (`support::Postgres`, an end-to-end test: it needs root and Debian's `postgresql`).
//! Each check is written once (`async fn` below) and the macro at the bottom makes a
//! `sqlite::NAME` and a `postgres::NAME` test of it. The expectations are those of the SQLite
//! store's unit tests (`src/state/sqlite/tests.rs`) and of the in-memory store.

mod support;

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::time::{Duration, SystemTime};

use mailferry::address::Address;
use mailferry::recipient::{Recipient, Status};
use mailferry::relay::Reply;
use mailferry::state::status::{self, AccountSummary};
use mailferry::state::{
    Claim, Headline, PG_SCHEMA_VERSION, PassDone, PassEnded, SCHEMA_VERSION, StateError, StateLock,
    StateStore, Store,
};

use support::Postgres;

/// Where a check's store lives; kept alive for the whole check.
enum Backend {
    Sqlite(tempfile::TempDir),
    Postgres(Postgres),
}

impl Backend {
    fn sqlite() -> Backend {
        Backend::Sqlite(tempfile::tempdir().expect("a temporary directory"))
    }

    fn postgres() -> Backend {
        Backend::Postgres(Postgres::start())
    }

    /// The configuration's `state` lines.
    fn state_yaml(&self) -> String {
        match self {
            Backend::Sqlite(_) => "state: {sqlite: {}}".to_owned(),
            Backend::Postgres(pg) => format!("state: {{postgres: {{url: \"{}\"}}}}", pg.url()),
        }
    }

    fn state_dir(&self) -> &Path {
        match self {
            Backend::Sqlite(dir) => dir.path(),
            Backend::Postgres(pg) => pg.dir(),
        }
    }

    /// Opens the store the way the daemon does: from a configuration, with `Store::open`.
    async fn open(&self) -> Store {
        self.try_open().await.expect("open the store")
    }

    async fn try_open(&self) -> Result<Store, StateError> {
        Store::open(&self.config(), false)
            .await
            .map(|(store, _)| store)
    }

    /// A configuration on this store with one account, `acct`.
    fn config(&self) -> mailferry::config::Config {
        let yaml = format!(
            "state_dir: {}\n{}\nrelay: {{host: 127.0.0.1, port: 25, tls: none}}\n\
             domains: [example.com]\npostmaster: postmaster@example.com\n\
             accounts:\n  - {{name: acct, protocol: pop3, host: localhost, port: 110, tls: none, \
             username: u, password: p, initial: deliver_all}}\n",
            self.state_dir().join("state").display(),
            self.state_yaml()
        );
        mailferry::config::from_yaml_str(&yaml, "test.yaml")
            .unwrap_or_else(|e| panic!("the test configuration: {e}\n{yaml}"))
    }
}

fn at(secs: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
}

fn addr(s: &str) -> Address {
    Address::parse(s).expect("a valid address")
}

fn reply(code: u16, text: &str) -> Reply {
    Reply {
        code,
        text: text.to_owned(),
    }
}

fn rcpt(address: &str, status: Status) -> Recipient {
    Recipient {
        address: addr(address),
        status,
    }
}

fn keys(list: &[&str]) -> HashSet<String> {
    list.iter().map(|s| s.to_string()).collect()
}

/// A pass's lease on `account` (PostgreSQL fences every write with it; SQLite grants it).
async fn claim(store: &Store, account: &str) {
    let claim = Claim {
        ttl: Duration::from_secs(60),
        interval: Duration::from_secs(60),
        due_only: false,
    };
    assert!(
        store.claim(account, claim).await.unwrap(),
        "claim {account}"
    );
}

async fn attempts_are_counted_and_failures_wait(backend: &Backend) {
    let store = backend.open().await;
    claim(&store, "acct").await;
    let first = store.begin_attempt("acct", "u1", at(1000)).await.unwrap();
    let second = store.begin_attempt("acct", "u1", at(1001)).await.unwrap();
    assert_eq!((first.attempts, second.attempts), (1, 2));
    assert_eq!(second.first_seen, at(1000), "the first first_seen stays");
    assert_eq!((second.settled_at, second.retry_at), (None, None));

    store
        .record_failure("acct", "u1", Some(at(2000)), "451 later", false)
        .await
        .unwrap();
    let state = &store.load_account("acct").await.unwrap()["u1"];
    assert_eq!((state.attempts, state.retry_at), (2, Some(at(2000))));
    // A failure that is not the message's fault does not count against it.
    store
        .record_failure("acct", "u1", Some(at(3000)), "relay down", true)
        .await
        .unwrap();
    let state = &store.load_account("acct").await.unwrap()["u1"];
    assert_eq!((state.attempts, state.retry_at), (1, Some(at(3000))));
    store
        .record_failure("acct", "u1", None, "relay down", true)
        .await
        .unwrap();
    store
        .record_failure("acct", "u1", None, "relay down", true)
        .await
        .unwrap();
    let state = &store.load_account("acct").await.unwrap()["u1"];
    assert_eq!((state.attempts, state.retry_at), (0, None), "never below 0");
    // Settling clears retry_at.
    store
        .record_failure("acct", "u1", Some(at(4000)), "451", false)
        .await
        .unwrap();
    let ok = Status::Delivered(reply(250, "2.0.0 ok"));
    let settled = store
        .record_recipients(
            "acct",
            "u1",
            None,
            &[rcpt("a@example.com", ok)],
            true,
            at(4001),
        )
        .await
        .unwrap();
    assert_eq!(
        (settled.settled_at, settled.retry_at),
        (Some(at(4001)), None)
    );
    assert!(store.ensure_writable().await.is_ok());
}

async fn every_recipient_status_reads_back(backend: &Backend) {
    let store = backend.open().await;
    claim(&store, "acct").await;
    let written = [
        rcpt("a@example.com", Status::Delivered(reply(250, "2.0.0 ok"))),
        rcpt("B@Example.com", Status::Duplicate("sha256:ab".to_owned())),
        rcpt(
            "c@example.com",
            Status::Rerouted(reply(550, "5.1.1 unknown")),
        ),
        rcpt(
            "d@example.com",
            Status::Temporary(reply(451, "4.3.0 later")),
        ),
        rcpt(
            "e@example.com",
            Status::Permanent(reply(552, "5.3.4 too big")),
        ),
        rcpt("f@example.com", Status::Pending),
    ];
    let state = store
        .record_recipients("acct", "u1", None, &written, false, at(10))
        .await
        .unwrap();
    let expected: HashMap<String, Status> = written[..5]
        .iter()
        .map(|r| (r.address.dedup_key(), r.status.clone()))
        .collect();
    assert_eq!(
        state.recipients, expected,
        "as returned by record_recipients"
    );
    assert_eq!(state.first_seen, at(10), "recording creates the message");
    assert_eq!(state.settled_at, None);
    assert_eq!(
        state.settled_recipients(),
        keys(&["a@example.com", "b@example.com", "c@example.com"])
    );
    assert_eq!(
        store.load_account("acct").await.unwrap()["u1"].recipients,
        expected
    );
    let begun = store.begin_attempt("acct", "u1", at(11)).await.unwrap();
    assert_eq!(begun.recipients, expected, "the same through begin_attempt");

    // A settled recipient stays settled; a pending (temporary or permanent) one can settle;
    // a Pending one is not written at all.
    let later = [
        rcpt("a@example.com", Status::Temporary(reply(451, "later"))),
        rcpt("c@example.com", Status::Delivered(reply(250, "ok"))),
        rcpt("d@example.com", Status::Rerouted(reply(550, "5.1.1 gone"))),
        rcpt(
            "e@example.com",
            Status::Delivered(reply(250, "2.0.0 at last")),
        ),
        rcpt("f@example.com", Status::Pending),
    ];
    let state = store
        .record_recipients("acct", "u1", None, &later, true, at(12))
        .await
        .unwrap();
    let mut now_expected = expected.clone();
    now_expected.insert(
        "d@example.com".into(),
        Status::Rerouted(reply(550, "5.1.1 gone")),
    );
    now_expected.insert(
        "e@example.com".into(),
        Status::Delivered(reply(250, "2.0.0 at last")),
    );
    assert_eq!(state.recipients, now_expected);
    assert_eq!(state.settled_at, Some(at(12)));
    let reread = &store.load_account("acct").await.unwrap()["u1"];
    assert_eq!(reread.recipients, now_expected);
    assert_eq!(reread.settled_at, Some(at(12)));
    // Settled once: the first time stays.
    let again = store
        .record_recipients("acct", "u1", None, &[], true, at(13))
        .await
        .unwrap();
    assert_eq!(again.settled_at, Some(at(12)));
    // Another account's message of the same key is another message.
    claim(&store, "other").await;
    let other = store.begin_attempt("other", "u1", at(14)).await.unwrap();
    assert!(other.recipients.is_empty());
    assert_eq!(other.attempts, 1);
}

async fn quarantine_list_retry_and_forget(backend: &Backend) {
    let store = backend.open().await;
    claim(&store, "acct").await;
    let headline = Headline::of(
        "From: =?utf-8?q?Ev=C3=A9?= <eve@x.test>\nSubject: =?utf-8?q?caf=C3=A9?=\nMessage-ID: <m1@x.test>\n",
    );
    store.begin_attempt("acct", "u1", at(1)).await.unwrap();
    store.begin_attempt("acct", "u1", at(2)).await.unwrap();
    let first = store
        .quarantine("acct", "u1", "loop", &headline, at(5))
        .await
        .unwrap();
    assert_eq!(
        (first.reason.as_str(), first.notified, first.forgotten),
        ("loop", false, false)
    );
    // Quarantined again: the first record stays.
    let again = store
        .quarantine("acct", "u1", "again", &Headline::default(), at(6))
        .await
        .unwrap();
    assert_eq!(again, first);
    // A message never seen is stored by its quarantine.
    let second = store
        .quarantine("acct", "u2", "too_large", &Headline::default(), at(7))
        .await
        .unwrap();
    assert_ne!(second.id, first.id);

    let list = store.quarantined().await.unwrap();
    assert_eq!(list.len(), 2);
    assert_eq!((list[0].id, list[0].uidl.as_str()), (first.id, "u1"));
    assert_eq!(
        (list[0].account.as_str(), list[0].reason.as_str()),
        ("acct", "loop")
    );
    assert_eq!((list[0].since, list[0].attempts), (at(5), 2));
    assert_eq!(list[0].headline, headline);
    assert_eq!(list[1].headline, Headline::default());
    let loaded = store.load_account("acct").await.unwrap();
    assert_eq!(loaded["u1"].quarantine.as_ref(), Some(&first));
    assert_eq!(loaded["u2"].first_seen, at(7));

    store.mark_notified(first.id, at(8)).await.unwrap();
    assert!(store.quarantined().await.unwrap()[0].notified);

    // `mailferry state forget ID`: off the list, still quarantined (never tried again).
    assert!(store.forget(first.id, at(9)).await.unwrap());
    assert!(
        !store.forget(first.id, at(10)).await.unwrap(),
        "forgotten once"
    );
    let list = store.quarantined().await.unwrap();
    assert_eq!(list.iter().map(|e| e.id).collect::<Vec<_>>(), [second.id]);
    let q = store.load_account("acct").await.unwrap()["u1"]
        .quarantine
        .clone();
    assert!(q.is_some_and(|q| q.forgotten && q.notified));

    // `mailferry state retry ID`: out of quarantine, attempts from zero.
    assert!(store.retry(second.id).await.unwrap());
    assert!(
        !store.retry(second.id).await.unwrap(),
        "no longer quarantined"
    );
    assert!(!store.retry(999_999).await.unwrap());
    assert!(store.quarantined().await.unwrap().is_empty());
    let u2 = &store.load_account("acct").await.unwrap()["u2"];
    assert_eq!(
        (u2.quarantine.as_ref(), u2.attempts, u2.retry_at),
        (None, 0, None)
    );
}

async fn who_got_a_message_is_remembered_for_the_window(backend: &Backend) {
    let store = backend.open().await;
    claim(&store, "acct").await;
    claim(&store, "other").await;
    let (a, b) = (addr("a@example.com"), addr("b@example.com"));
    let outcomes = [
        rcpt("a@example.com", Status::Delivered(reply(250, "ok"))),
        rcpt("b@example.com", Status::Temporary(reply(451, "later"))),
    ];
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
    assert!(
        (store
            .delivered_before("mid:other", &keys, at(50))
            .await
            .unwrap())
        .is_empty()
    );
    // Another account's copy of the same message settles b too.
    let b_done = [rcpt("b@example.com", Status::Duplicate("mid:x@y".into()))];
    store
        .record_recipients("other", "v1", Some("mid:x@y"), &b_done, true, at(200))
        .await
        .unwrap();
    let got = store
        .delivered_before("mid:x@y", &keys, at(50))
        .await
        .unwrap();
    assert_eq!(got, keys.iter().cloned().collect::<HashSet<_>>());
    // Outside the window: not a duplicate; forgotten once the window is over.
    let recent = store
        .delivered_before("mid:x@y", &keys, at(101))
        .await
        .unwrap();
    assert_eq!(recent, HashSet::from([b.dedup_key()]));
    assert_eq!(store.forget_deliveries(at(101)).await.unwrap(), 1);
    let left = store
        .delivered_before("mid:x@y", &keys, at(0))
        .await
        .unwrap();
    assert_eq!(left, HashSet::from([b.dedup_key()]));
}

async fn deleted_and_pruned(backend: &Backend) {
    let store = backend.open().await;
    claim(&store, "acct").await;
    claim(&store, "other").await;
    let ok = || [rcpt("a@example.com", Status::Delivered(reply(250, "ok")))];
    for uidl in ["settled-gone", "settled-here", "unsettled-gone"] {
        store.begin_attempt("acct", uidl, at(10)).await.unwrap();
    }
    for uidl in ["settled-gone", "settled-here"] {
        store
            .record_recipients("acct", uidl, None, &ok(), true, at(11))
            .await
            .unwrap();
    }
    // What a session does before its deletions: the outcomes made durable.
    store.sync().await.expect("sync");
    store
        .quarantine(
            "acct",
            "quarantined-gone",
            "loop",
            &Headline::default(),
            at(12),
        )
        .await
        .unwrap();
    store
        .record_recipients("other", "settled-gone", None, &ok(), true, at(11))
        .await
        .unwrap();

    let gone = ["settled-gone".to_owned(), "unsettled-gone".to_owned()];
    store.mark_deleted("acct", &gone, at(20)).await.unwrap();
    store.mark_deleted("acct", &gone, at(30)).await.unwrap();
    let all = store.load_account("acct").await.unwrap();
    assert_eq!(
        all["settled-gone"].deleted_at,
        Some(at(20)),
        "the first time stays"
    );
    assert_eq!(all["unsettled-gone"].deleted_at, Some(at(20)));
    assert_eq!(all["settled-here"].deleted_at, None);

    let pruned = store.prune("acct", &keys(&["settled-here"])).await.unwrap();
    assert_eq!(pruned, 2, "settled-gone and quarantined-gone");
    let mut left: Vec<String> = store
        .load_account("acct")
        .await
        .unwrap()
        .into_keys()
        .collect();
    left.sort();
    assert_eq!(left, ["settled-here", "unsettled-gone"]);
    assert!(
        store.quarantined().await.unwrap().is_empty(),
        "its quarantine went with it"
    );
    // Another account's message of the same key is untouched.
    assert_eq!(store.load_account("other").await.unwrap().len(), 1);
    assert_eq!(
        store.prune("acct", &keys(&["settled-here"])).await.unwrap(),
        0
    );
}

async fn accounts_are_known_and_renamed_by_mailbox(backend: &Backend) {
    let store = backend.open().await;
    let mailbox = "pop3://u@pop.test";
    claim(&store, "old").await;
    assert!(!store.account_known("old", mailbox).await.unwrap());
    let skip = ["s1".to_owned(), "s2".to_owned()];
    store
        .initialize_account("old", mailbox, &skip, at(1))
        .await
        .unwrap();
    assert!(store.account_known("old", mailbox).await.unwrap());
    let state = store.load_account("old").await.unwrap();
    assert_eq!(state.len(), 2);
    for s in state.values() {
        assert_eq!((s.settled_at, s.first_seen), (Some(at(1)), at(1)));
        assert!(
            s.recipients.is_empty(),
            "skipped: settled without a recipient"
        );
    }
    let ok = [rcpt("a@example.com", Status::Delivered(reply(250, "ok")))];
    store
        .record_recipients("old", "u1", None, &ok, true, at(2))
        .await
        .unwrap();
    let q = store
        .quarantine("old", "u2", "bad", &Headline::default(), at(3))
        .await
        .unwrap();

    // Another mailbox under a new name is a new account.
    claim(&store, "other").await;
    assert!(
        !store
            .account_known("other", "pop3://v@pop.test")
            .await
            .unwrap()
    );
    // The same mailbox under a new name is the old account, renamed, with all it knew.
    claim(&store, "new").await;
    assert!(store.account_known("new", mailbox).await.unwrap());
    let state = store.load_account("new").await.unwrap();
    assert_eq!(state.len(), 4);
    assert!(state["u1"].settled_recipients().contains("a@example.com"));
    assert_eq!(state["u2"].quarantine.as_ref(), Some(&q));
    assert!(store.load_account("old").await.unwrap().is_empty());
    assert_eq!(store.quarantined().await.unwrap()[0].account, "new");
    assert!(
        !store
            .account_known("old", "pop3://w@pop.test")
            .await
            .unwrap()
    );
    assert!(store.account_known("new", mailbox).await.unwrap());
}

async fn reopening_migrates_nothing_and_keeps_everything(backend: &Backend) {
    {
        let store = backend.open().await;
        claim(&store, "acct").await;
        let ok = [rcpt("a@example.com", Status::Delivered(reply(250, "ok")))];
        store
            .record_recipients("acct", "u1", Some("mid:1"), &ok, true, at(5))
            .await
            .unwrap();
        store.begin_attempt("acct", "u2", at(6)).await.unwrap();
        store
            .initialize_account("acct", "pop3://u@pop.test", &[], at(7))
            .await
            .unwrap();
        store
            .quarantine("acct", "u3", "loop", &Headline::default(), at(8))
            .await
            .unwrap();
        // As a pass ends (with PostgreSQL, a dropped store's lease would stay taken until
        // it expires).
        store.release("acct", PassDone::default()).await.unwrap();
    }
    let version_before = schema_version(backend);
    let store = backend.open().await;
    assert_eq!(schema_version(backend), version_before, "nothing migrated");
    let all = store.load_account("acct").await.unwrap();
    assert_eq!(all.len(), 3);
    assert_eq!(all["u1"].settled_at, Some(at(5)));
    assert!(all["u1"].settled_recipients().contains("a@example.com"));
    assert_eq!((all["u2"].attempts, all["u2"].first_seen), (1, at(6)));
    assert_eq!(store.quarantined().await.unwrap().len(), 1);
    let got = store
        .delivered_before("mid:1", &["a@example.com".to_owned()], at(0))
        .await
        .unwrap();
    assert_eq!(got.len(), 1);
    claim(&store, "acct").await;
    assert!(
        store
            .account_known("acct", "pop3://u@pop.test")
            .await
            .unwrap()
    );

    // A database written by a newer mailferry is refused, not migrated down.
    set_schema_version(backend, version_before + 1);
    match backend.try_open().await {
        Err(StateError::NewerSchema { found, supported }) => {
            assert_eq!((found, supported), (version_before + 1, version_before));
        }
        other => panic!("expected NewerSchema, got {other:?}"),
    }
}

/// `mailferry status`: nothing known of a new account; then who holds it (PostgreSQL: this
/// process's lease; SQLite: the daemon holding the lock), the messages waiting and
/// quarantined, how the last pass ended, the failures in a row and the next pass due.
async fn status_reads_each_accounts_standing(backend: &Backend) {
    let config = backend.config();
    let read = || async { status::read(&config).await.unwrap().accounts };
    assert_eq!(
        read().await,
        [("acct".to_owned(), AccountSummary::default())]
    );

    let store = backend.open().await;
    // SQLite: a daemon's lock (here this process's) makes the account held, and due.
    let _lock = match backend {
        Backend::Sqlite(_) => Some(StateLock::acquire(&config.state_dir).unwrap()),
        Backend::Postgres(_) => None,
    };
    claim(&store, "acct").await;
    store.begin_attempt("acct", "u1", at(1)).await.unwrap();
    let ok = [rcpt("a@example.com", Status::Delivered(reply(250, "ok")))];
    (store.record_recipients("acct", "u2", None, &ok, true, at(2)))
        .await
        .unwrap();
    (store.quarantine("acct", "u3", "loop", &Headline::default(), at(3)))
        .await
        .unwrap();
    let now = read().await;
    let holder = match backend {
        Backend::Sqlite(_) => format!("PID {} (this host)", std::process::id()),
        Backend::Postgres(_) => mailferry::state::instance_id(),
    };
    assert_eq!(now[0].1.holder.as_deref(), Some(holder.as_str()));
    assert_eq!((now[0].1.waiting, now[0].1.quarantined), (1, 1));
    assert_eq!(now[0].1.last_pass, None);

    // Two passes fail (the second backs off 10 minutes), then one works.
    let next = SystemTime::now() + Duration::from_secs(600);
    let passes = [
        (Some("cannot connect"), false),
        (Some("cannot connect"), true),
        (None, false),
    ];
    for (i, (error, backing_off)) in passes.into_iter().enumerate() {
        // The first pass holds the lease taken above.
        if i > 0 {
            claim(&store, "acct").await;
        }
        let done = PassDone {
            error: error.map(str::to_owned),
            waiting: 1,
        };
        store.release("acct", done).await.unwrap();
        let pass = PassEnded {
            at: SystemTime::now(),
            error: error.map(str::to_owned),
            next_at: Some(next),
            backing_off,
        };
        store.record_pass("acct", &pass).await.unwrap();
        let s = read().await.remove(0).1;
        let since = SystemTime::now().duration_since(s.last_pass.unwrap());
        assert!(since.is_ok_and(|d| d < Duration::from_secs(5)), "{s:?}");
        assert_eq!(s.last_error.as_deref(), error, "{s:?}");
        let failures = match (error, backing_off) {
            (None, _) => 0,
            (Some(_), false) => 1,
            (Some(_), true) => 2,
        };
        assert_eq!(s.failures, failures, "{s:?}");
        if backing_off {
            // Stored to the millisecond.
            let due = s.next_pass.unwrap();
            let off = due
                .duration_since(next)
                .or_else(|_| next.duration_since(due));
            assert!(
                off.is_ok_and(|d| d < Duration::from_secs(1)),
                "the back-off: {s:?}"
            );
        }
    }
    // Released: nobody holds it with PostgreSQL.
    if let Backend::Postgres(_) = backend {
        store.release("acct", PassDone::default()).await.unwrap();
        assert_eq!(read().await[0].1.holder, None);
    }
}

/// The schema version stored in the database (and it is the one this build writes).
fn schema_version(backend: &Backend) -> i64 {
    match backend {
        Backend::Sqlite(dir) => {
            let conn = rusqlite::Connection::open(
                dir.path().join("state").join(mailferry::state::DB_FILE),
            )
            .unwrap();
            let v: i64 = conn
                .pragma_query_value(None, "user_version", |r| r.get(0))
                .unwrap();
            assert_eq!(v, SCHEMA_VERSION);
            v
        }
        Backend::Postgres(pg) => {
            let rows = pg.query("SELECT version FROM schema_version");
            assert_eq!(rows.lines().count(), 1, "one row: {rows:?}");
            let v: i64 = rows.parse().unwrap();
            assert_eq!(v, i64::from(PG_SCHEMA_VERSION));
            v
        }
    }
}

fn set_schema_version(backend: &Backend, version: i64) {
    match backend {
        Backend::Sqlite(dir) => {
            let conn = rusqlite::Connection::open(
                dir.path().join("state").join(mailferry::state::DB_FILE),
            )
            .unwrap();
            conn.pragma_update(None, "user_version", version).unwrap();
        }
        Backend::Postgres(pg) => {
            pg.query(&format!("UPDATE schema_version SET version = {version}"));
        }
    }
}

/// For each check, `sqlite::CHECK` and `postgres::CHECK` (the latter an end-to-end test).
macro_rules! on_both_backends {
    ($($check:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test]
                async fn $check() {
                    super::$check(&super::Backend::sqlite()).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test]
                async fn $check() {
                    if crate::support::skip_e2e() {
                        return;
                    }
                    let backend = super::Backend::postgres();
                    super::$check(&backend).await;
                }
            )*
        }
    };
}

on_both_backends!(
    attempts_are_counted_and_failures_wait,
    every_recipient_status_reads_back,
    quarantine_list_retry_and_forget,
    who_got_a_message_is_remembered_for_the_window,
    deleted_and_pruned,
    accounts_are_known_and_renamed_by_mailbox,
    reopening_migrates_nothing_and_keeps_everything,
    status_reads_each_accounts_standing,
);

/// What the configuration's URL can get wrong: every error says what, never the password.
/// (The test server offers no TLS, so `sslmode=require` is refused here for that reason.)
#[tokio::test]
async fn postgres_errors_never_show_the_password() {
    if support::skip_e2e() {
        return;
    }
    let pg = Postgres::start();
    let wrong = pg.url().replace(support::PG_PASSWORD, "Wrong-Pass-77");
    let tls = format!("{}?sslmode=require", pg.url());
    let closed = pg
        .url()
        .replace(&pg.port().to_string(), &support::free_port().to_string());
    for (url, secret, says) in [
        (
            wrong.as_str(),
            "Wrong-Pass-77",
            "password authentication failed",
        ),
        (tls.as_str(), support::PG_PASSWORD, "TLS"),
        (closed.as_str(), support::PG_PASSWORD, "connect"),
        ("postgres://u:Se%cret@[::1", "Se%cret", "not a valid"),
    ] {
        let err = match mailferry::state::PgStore::open(url).await {
            Ok(_) => panic!("{url} opened"),
            Err(e) => e.to_string(),
        };
        eprintln!("{url}: {err}");
        assert!(!err.contains(secret), "{err}");
        assert!(err.contains(says), "{url}: {err}");
    }
    // A query's error is the server's message too, not tokio-postgres's bare "db error".
    let store = mailferry::state::PgStore::open(&pg.url()).await.unwrap();
    pg.query("DROP TABLE deliveries");
    let err = store
        .delivered_before("mid:1", &["a@example.com".to_owned()], at(0))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("relation \"deliveries\" does not exist (SQLSTATE 42P01)"),
        "{err}"
    );
}
