//! The PostgreSQL store's account leases against a real server (`support::Postgres`): two
//! stores opened on one database stand for two instances. Both live in this process and so
//! share one `instance_id` (`hostname:pid`): what tells their leases apart here is the
//! generation that every take bumps and every write checks (`PgStore::fence`), the very
//! thing that refuses the old holder after a takeover.

mod support;

use std::time::Duration;

use mailferry::address::Address;
use mailferry::recipient::{Recipient, Status};
use mailferry::relay::Reply;
use mailferry::state::{Claim, Headline, PassDone, PgStore, StateError, StateStore};

use support::Postgres;

const MAILBOX: &str = "pop3://u@pop.test";

/// A lease of `ttl`, any time (`poll-once`).
fn lease(ttl: Duration) -> Claim {
    Claim {
        ttl,
        interval: Duration::from_secs(60),
        due_only: false,
    }
}

fn secs(s: f64) -> Duration {
    Duration::from_secs_f64(s)
}

/// Two instances on one fresh database.
async fn two_instances() -> (Postgres, PgStore, PgStore) {
    let pg = Postgres::start();
    let a = PgStore::open(&pg.url())
        .await
        .expect("open the first store");
    let b = PgStore::open(&pg.url())
        .await
        .expect("open the second store");
    (pg, a, b)
}

fn delivered(address: &str) -> Recipient {
    Recipient {
        address: Address::parse(address).unwrap(),
        status: Status::Delivered(Reply {
            code: 250,
            text: "2.0.0 ok".into(),
        }),
    }
}

fn is_lease_lost<T: std::fmt::Debug>(result: Result<T, StateError>) -> bool {
    matches!(result, Err(StateError::LeaseLost { ref account }) if account == "acct")
}

/// The lease row: holder, generation, whether it is unexpired.
fn lease_row(pg: &Postgres) -> String {
    pg.query(
        "SELECT coalesce(holder, '-'), generation, coalesce(expires_at > now(), false)
         FROM leases WHERE account = 'acct'",
    )
}

#[tokio::test]
async fn exactly_one_instance_gets_an_account() {
    if support::skip_e2e() {
        return;
    }
    let (pg, a, b) = two_instances().await;
    // At the same moment, on two connections.
    let ttl = lease(secs(60.0));
    let (got_a, got_b) = tokio::join!(a.claim("acct", ttl), b.claim("acct", ttl));
    let (got_a, got_b) = (got_a.unwrap(), got_b.unwrap());
    assert!(got_a ^ got_b, "exactly one: a {got_a}, b {got_b}");
    let (holder, other) = if got_a { (&a, &b) } else { (&b, &a) };
    // The other asks again: still held.
    assert!(!other.claim("acct", ttl).await.unwrap());
    assert!(holder.renew("acct", secs(60.0)).await.unwrap());
    assert!(
        !other.renew("acct", secs(60.0)).await.unwrap(),
        "renews only its own"
    );
    // Only the holder writes.
    holder
        .begin_attempt("acct", "u1", std::time::SystemTime::now())
        .await
        .unwrap();
    assert!(is_lease_lost(
        other
            .begin_attempt("acct", "u1", std::time::SystemTime::now())
            .await
    ));
    assert_eq!(holder.load_account("acct").await.unwrap()["u1"].attempts, 1);
    // Another account is free for the other.
    assert!(other.claim("acct2", ttl).await.unwrap());
    assert!(lease_row(&pg).ends_with("|1|t"), "{}", lease_row(&pg));
}

#[tokio::test]
async fn renewing_keeps_the_lease_past_its_first_ttl() {
    if support::skip_e2e() {
        return;
    }
    let (pg, a, b) = two_instances().await;
    assert!(a.claim("acct", lease(secs(2.0))).await.unwrap());
    for _ in 0..3 {
        tokio::time::sleep(secs(1.0)).await;
        assert!(a.renew("acct", secs(2.0)).await.unwrap());
    }
    // 3 s after a claim of 2 s: held because renewed.
    assert!(!b.claim("acct", lease(secs(2.0))).await.unwrap());
    a.begin_attempt("acct", "u1", std::time::SystemTime::now())
        .await
        .expect("the renewed holder still writes");
    assert!(lease_row(&pg).ends_with("|1|t"), "{}", lease_row(&pg));
}

#[tokio::test]
async fn a_released_lease_is_free_at_once_and_says_how_the_pass_went() {
    if support::skip_e2e() {
        return;
    }
    let (pg, a, b) = two_instances().await;
    assert!(a.claim("acct", lease(secs(60.0))).await.unwrap());
    let done = PassDone {
        error: Some("relay down".into()),
        waiting: 3,
    };
    a.release("acct", done).await.unwrap();
    assert_eq!(
        pg.query("SELECT coalesce(holder, '-'), last_error, failures, waiting FROM leases"),
        "-|relay down|1|3"
    );
    assert!(b.claim("acct", lease(secs(60.0))).await.unwrap());
    b.release("acct", PassDone::default()).await.unwrap();
    assert_eq!(
        pg.query("SELECT coalesce(last_error, '-'), failures, waiting, generation FROM leases"),
        "-|0|0|2"
    );
    // Released: a write without a lease is refused.
    assert!(is_lease_lost(
        a.begin_attempt("acct", "u1", std::time::SystemTime::now())
            .await
    ));
    assert_eq!(pg.query("SELECT count(*) FROM messages"), "0");
}

#[tokio::test]
async fn due_only_waits_for_the_poll_interval() {
    if support::skip_e2e() {
        return;
    }
    let (_pg, a, b) = two_instances().await;
    let hourly = Claim {
        ttl: secs(60.0),
        interval: Duration::from_secs(3600),
        due_only: true,
    };
    assert!(a.claim("acct", hourly).await.unwrap(), "never polled: due");
    a.release("acct", PassDone::default()).await.unwrap();
    assert!(
        !b.claim("acct", hourly).await.unwrap(),
        "polled a moment ago"
    );
    // `poll-once` does not wait for the schedule.
    assert!(
        b.claim(
            "acct",
            Claim {
                due_only: false,
                ..hourly
            }
        )
        .await
        .unwrap()
    );
}

#[tokio::test]
async fn an_expired_lease_is_taken_over_and_the_old_holder_is_fenced() {
    if support::skip_e2e() {
        return;
    }
    let (pg, a, b) = two_instances().await;
    let now = std::time::SystemTime::now;
    assert!(a.claim("acct", lease(secs(1.0))).await.unwrap());
    a.initialize_account("acct", MAILBOX, &[], now())
        .await
        .unwrap();
    a.begin_attempt("acct", "u1", now()).await.unwrap();
    // Not yet expired: not taken.
    assert!(!b.claim("acct", lease(secs(60.0))).await.unwrap());
    // A stops renewing (killed, paused, cut off): after lease_ttl B takes the account over.
    tokio::time::sleep(secs(1.5)).await;
    assert!(b.claim("acct", lease(secs(60.0))).await.unwrap());
    assert!(lease_row(&pg).ends_with("|2|t"), "{}", lease_row(&pg));

    // A wakes up and writes as if it still held the account: every write is refused, and
    // nothing it tried is recorded.
    let before = pg.query("SELECT account, uidl, attempts, settled_at IS NULL FROM messages");
    assert!(is_lease_lost(a.begin_attempt("acct", "u1", now()).await));
    assert!(is_lease_lost(
        a.record_recipients(
            "acct",
            "u1",
            Some("mid:1"),
            &[delivered("x@example.com")],
            true,
            now()
        )
        .await
    ));
    assert!(is_lease_lost(
        a.record_failure("acct", "u1", None, "x", false).await
    ));
    assert!(is_lease_lost(
        a.mark_deleted("acct", &["u1".to_owned()], now()).await
    ));
    assert!(is_lease_lost(a.prune("acct", &Default::default()).await));
    assert!(is_lease_lost(
        a.quarantine("acct", "u1", "loop", &Headline::default(), now())
            .await
    ));
    assert!(is_lease_lost(
        a.initialize_account("acct", MAILBOX, &["s".to_owned()], now())
            .await
    ));
    assert!(is_lease_lost(a.account_known("acct", MAILBOX).await));
    assert!(
        !a.renew("acct", secs(60.0)).await.unwrap(),
        "lost: not renewed"
    );
    // Its release leaves B's lease alone.
    a.release("acct", PassDone::default()).await.unwrap();
    assert!(lease_row(&pg).ends_with("|2|t"), "{}", lease_row(&pg));

    assert_eq!(
        pg.query("SELECT account, uidl, attempts, settled_at IS NULL FROM messages"),
        before
    );
    assert_eq!(pg.query("SELECT count(*) FROM recipients"), "0");
    assert_eq!(pg.query("SELECT count(*) FROM deliveries"), "0");
    assert_eq!(pg.query("SELECT count(*) FROM quarantine"), "0");
    // Even after A claims again (a new generation), its old pass's writes stay fenced only
    // while B holds the account: A cannot claim it.
    assert!(!a.claim("acct", lease(secs(60.0))).await.unwrap());

    // B carries on where A left off.
    assert!(b.account_known("acct", MAILBOX).await.unwrap());
    let state = b.begin_attempt("acct", "u1", now()).await.unwrap();
    assert_eq!(state.attempts, 2, "A's attempt counted, then B's");
    b.record_recipients(
        "acct",
        "u1",
        None,
        &[delivered("x@example.com")],
        true,
        now(),
    )
    .await
    .unwrap();
}
