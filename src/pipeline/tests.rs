//! The pipeline against the in-memory mailbox, relay and store: every delivery and retention
//! rule without a socket, the poller's cadence and shutdown in virtual time. What becomes of
//! kept mail and mail read upstream (IMAP `after_fetch: seen`, `unseen_only`) is in
//! `tests/kept.rs`.

mod auth;
mod kept;
mod looped;
mod pipelined;
mod schedule;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::watch;

use super::pass::{PassError, PassReport, run_pass};
use super::{Mailboxes, run_with};
use crate::config::{AccountConfig, Config};
use crate::fetch::memory::MemoryMailbox;
use crate::recipient::Status;
use crate::relay::Reply;
use crate::relay::memory::{Failure, MemoryRelay};
use crate::state::memory::MemoryStore;
use crate::state::{StateError, StateStore};

/// The configuration of the tests: one catch-all account `acct` on `example.com`, with
/// `account_extra` (indented YAML lines) added to the account.
fn config(account_extra: &str) -> Config {
    config_for("pop3", account_extra)
}

/// [`config`] with the account's `protocol`.
fn config_for(protocol: &str, account_extra: &str) -> Config {
    let yaml = format!(
        "state_dir: /nonexistent/state
relay:
  host: relay.test
  tls: none
  retry:
    max_attempts: 3
    initial: 1m
    max: 1h
domains: [example.com]
postmaster: postmaster@example.com
accounts:
  - name: acct
    protocol: {protocol}
    host: pop.test
    tls: none
    username: u
    password: p
    poll_interval: 60s
{account_extra}"
    );
    crate::config::from_yaml_str(&yaml, "test.yaml").expect("test configuration")
}

/// A message to `to` (comma-separated), with `subject`.
fn mail(to: &str, subject: &str) -> Vec<u8> {
    format!("From: someone@elsewhere.test\r\nTo: {to}\r\nSubject: {subject}\r\n\r\nbody\r\n")
        .into_bytes()
}

/// The mailbox, relay and store of one test.
struct World {
    config: Config,
    mailbox: MemoryMailbox,
    relay: MemoryRelay,
    store: MemoryStore,
}

impl World {
    fn new(account_extra: &str) -> World {
        World {
            config: config(account_extra),
            mailbox: MemoryMailbox::new(),
            relay: MemoryRelay::new(),
            store: MemoryStore::new(),
        }
    }

    /// `relay.connections: n`, and the relay as busy as the real pool would be.
    fn relay_connections(&mut self, n: u32) {
        self.config.relay.connections = n;
        self.relay.set_sessions(n as usize);
    }

    fn account(&self) -> &AccountConfig {
        &self.config.accounts[0]
    }

    async fn pass(&self) -> Result<PassReport, PassError> {
        let (_stop_tx, stop) = watch::channel(false);
        run_pass(
            &self.mailbox,
            &self.config,
            self.account(),
            &self.store,
            &self.relay,
            &stop,
        )
        .await
    }

    /// Records the message `key` as first seen `days` ago, and settled then.
    async fn settled_days_ago(&self, key: &str, days: u64) {
        let then = SystemTime::now() - Duration::from_secs(days * 86_400);
        self.store.begin_attempt("acct", key, then).await.unwrap();
        (self
            .store
            .record_recipients("acct", key, None, &[], true, then))
        .await
        .unwrap();
    }

    fn received(&self, address: &str) -> usize {
        self.relay.received().get(address).copied().unwrap_or(0)
    }
}

#[tokio::test]
async fn each_recipient_is_delivered_once_and_the_upstream_copy_deleted() {
    let w = World::new("");
    w.mailbox
        .add(&mail("a@example.com, b@example.com, x@outside.test", "one"));
    w.mailbox.add(&mail("b@example.com", "two"));
    let report = w.pass().await.unwrap();
    assert_eq!(
        (report.fetched, report.settled, report.delivered),
        (2, 2, 3)
    );
    assert_eq!(
        (w.received("a@example.com"), w.received("b@example.com")),
        (1, 2)
    );
    assert_eq!(w.received("x@outside.test"), 0, "not an accepted domain");
    assert!(w.mailbox.keys().is_empty(), "retention delete");
    assert_eq!(report.deleted, 2);
}

#[tokio::test]
async fn a_temporary_refusal_retries_only_that_recipient_after_its_back_off() {
    let w = World::new("");
    let key = w.mailbox.add(&mail("a@example.com, b@example.com", "m"));
    w.relay.set_rcpt("b@example.com", 451, "4.3.0 try later");
    let report = w.pass().await.unwrap();
    assert_eq!((report.delivered, report.failed, report.deleted), (1, 1, 0));
    assert_eq!(
        w.mailbox.keys(),
        std::slice::from_ref(&key),
        "not deleted while b is pending"
    );
    let state = w.store.message("acct", &key).unwrap();
    assert!(state.retry_at.is_some(), "a back-off is set");
    assert!(state.settled_at.is_none());

    // Within the back-off: not tried.
    w.relay.set_rcpt("b@example.com", 250, "ok");
    let report = w.pass().await.unwrap();
    assert_eq!((report.waiting, report.fetched), (1, 0));

    // Back-off over (as the store says): only b is sent to.
    w.store
        .record_failure("acct", &key, Some(SystemTime::now()), "", false)
        .await
        .unwrap();
    let report = w.pass().await.unwrap();
    assert_eq!((report.delivered, report.deleted), (1, 1));
    assert_eq!(
        (w.received("a@example.com"), w.received("b@example.com")),
        (1, 1)
    );
    assert!(w.mailbox.keys().is_empty());
}

#[tokio::test]
async fn a_recipient_refused_for_good_is_rerouted_to_the_postmaster_with_the_reason() {
    let w = World::new("");
    w.mailbox.add(&mail("a@example.com, gone@example.com", "m"));
    w.relay
        .set_rcpt("gone@example.com", 550, "5.1.1 no such user");
    let report = w.pass().await.unwrap();
    assert_eq!(
        (report.delivered, report.rerouted, report.settled),
        (1, 1, 1)
    );
    assert_eq!(w.received("postmaster@example.com"), 1);
    assert_eq!(w.received("gone@example.com"), 0);
    let copy = w
        .relay
        .sent()
        .into_iter()
        .find(|s| s.recipients[0].as_str() == "postmaster@example.com")
        .unwrap();
    let text = String::from_utf8_lossy(&copy.message);
    assert!(
        text.starts_with(
            "X-Mailferry-Rerouted: for <gone@example.com> refused by the internal server: 550 5.1.1 no such user\r\n"
        ),
        "{text}"
    );
    assert!(w.mailbox.keys().is_empty(), "settled: deleted");
}

#[tokio::test]
async fn each_recipient_s_status_is_recorded_with_the_reply_that_said_so() {
    let w = World::new("");
    let key = w
        .mailbox
        .add(&mail("a@example.com, b@example.com, c@example.com", "m"));
    w.relay.set_rcpt("b@example.com", 451, "4.3.0 try later");
    w.relay.set_rcpt("c@example.com", 550, "5.1.1 no such user");
    w.pass().await.unwrap();
    let state = w.store.message("acct", &key).unwrap();
    let reply = |code, text: &str| Reply {
        code,
        text: text.to_owned(),
    };
    let status = |a: &str| state.status_of(&crate::address::Address::parse(a).unwrap());
    assert_eq!(
        status("a@example.com"),
        Some(&Status::Delivered(reply(250, "2.0.0 queued")))
    );
    assert_eq!(
        status("b@example.com"),
        Some(&Status::Temporary(reply(451, "4.3.0 try later")))
    );
    assert_eq!(
        status("c@example.com"),
        Some(&Status::Rerouted(reply(550, "5.1.1 no such user")))
    );
    assert_eq!(w.received("postmaster@example.com"), 1);
}

#[tokio::test]
async fn a_message_refused_as_a_whole_goes_to_the_postmaster_once() {
    let w = World::new("");
    w.mailbox.add(&mail("a@example.com", "m"));
    w.relay.set_failure(Some(Failure::Data(Reply {
        code: 554,
        text: "5.6.0 rejected".to_owned(),
    })));
    // The postmaster's copy is refused too (same failure): quarantined, left upstream.
    let report = w.pass().await.unwrap();
    assert_eq!(report.quarantined, 1);
    assert_eq!(w.mailbox.keys().len(), 1, "quarantined mail stays upstream");
    w.relay.set_failure(None);
    let report = w.pass().await.unwrap();
    assert_eq!(
        report.fetched, 0,
        "a quarantined message is not tried again"
    );
}

#[tokio::test]
async fn the_postmaster_refusing_a_reroute_leaves_the_message_quarantined_not_deleted() {
    let w = World::new("");
    let key = w.mailbox.add(&mail("gone@example.com", "m"));
    w.relay
        .set_rcpt("gone@example.com", 550, "5.1.1 no such user");
    w.relay.set_rcpt("postmaster@example.com", 550, "5.7.1 no");
    let report = w.pass().await.unwrap();
    assert_eq!((report.quarantined, report.deleted), (1, 0));
    assert_eq!(w.mailbox.keys(), std::slice::from_ref(&key));
    assert!(w.store.message("acct", &key).unwrap().quarantine.is_some());
    assert!(w.relay.sent().is_empty());
}

#[tokio::test]
async fn retention_keep_with_mail_upstream_waits_for_an_initial_choice() {
    let w = World::new("    retention: keep\n");
    w.mailbox.add(&mail("a@example.com", "m"));
    assert!(matches!(
        w.pass().await,
        Err(PassError::InitialChoice { count: 1, .. })
    ));
    assert!(w.relay.sent().is_empty());
}

#[tokio::test]
async fn retention_keep_delivers_once_and_deletes_nothing() {
    let w = World::new("    retention: keep\n    initial: deliver_all\n");
    w.mailbox.add(&mail("a@example.com", "m"));
    for _ in 0..3 {
        w.pass().await.unwrap();
    }
    assert_eq!(w.received("a@example.com"), 1);
    assert_eq!(w.mailbox.keys().len(), 1);
}

#[tokio::test]
async fn retention_in_days_deletes_once_the_days_since_first_seen_are_over() {
    let w = World::new("    retention: 7d\n    initial: deliver_all\n");
    let old = w.mailbox.add(&mail("a@example.com", "old"));
    let new = w.mailbox.add(&mail("b@example.com", "new"));
    w.settled_days_ago(&old, 8).await;
    let report = w.pass().await.unwrap();
    assert_eq!(report.deleted, 1);
    assert_eq!(w.mailbox.keys(), [new], "the new message stays for 7 days");
    assert_eq!(
        w.received("a@example.com"),
        0,
        "settled before: not sent again"
    );
    assert_eq!(w.received("b@example.com"), 1);
}

#[tokio::test]
async fn a_relay_outage_deletes_nothing_holds_no_attempt_against_the_mail_and_recovers() {
    let w = World::new("");
    let keys: Vec<String> = (0..20)
        .map(|n| w.mailbox.add(&mail(&format!("u{n}@example.com"), "m")))
        .collect();
    w.relay.set_failure(Some(Failure::Down));
    let report = w.pass().await.unwrap();
    // Downloading stops once the outage is known: at most the messages in flight by then.
    let window = 2 * w.config.relay.connections as usize;
    assert!(
        (1..=window).contains(&report.fetched),
        "the pass stops downloading once the relay is down: {report}"
    );
    assert_eq!((report.failed, report.deleted), (report.fetched, 0));
    assert_eq!(w.mailbox.keys().len(), 20);
    for key in &keys {
        let attempts = w.store.message("acct", key).map_or(0, |s| s.attempts);
        assert_eq!(
            attempts, 0,
            "{key}: an outage holds no attempt against the mail"
        );
    }

    w.relay.set_failure(None);
    let report = w.pass().await.unwrap();
    assert_eq!((report.settled, report.deleted), (20, 20));
    for n in 0..20 {
        assert_eq!(w.received(&format!("u{n}@example.com")), 1);
    }
}

#[tokio::test]
async fn a_store_that_cannot_be_written_stops_delivery_before_anything_is_sent() {
    let w = World::new("");
    w.mailbox.add(&mail("a@example.com", "m"));
    w.store.fail_writes(Some("disk full"));
    match w.pass().await {
        Err(PassError::State(StateError::Unwritable { reason })) => assert_eq!(reason, "disk full"),
        other => panic!("expected Unwritable, got {other:?}"),
    }
    assert!(w.relay.sent().is_empty());
    assert_eq!(w.mailbox.keys().len(), 1);

    w.store.fail_writes(None);
    w.pass().await.unwrap();
    assert_eq!(w.received("a@example.com"), 1);
    assert!(w.mailbox.keys().is_empty());
}

#[tokio::test]
async fn a_connection_lost_mid_message_goes_on_with_the_others_on_a_new_one() {
    let w = World::new("");
    let first = w.mailbox.add(&mail("a@example.com", "one"));
    w.mailbox.add(&mail("b@example.com", "two"));
    w.mailbox.drop_on_fetch(&first);
    let report = w.pass().await.unwrap();
    assert_eq!(w.mailbox.sessions(), 2);
    assert_eq!(report.settled, 1);
    assert_eq!(
        w.mailbox.keys(),
        [first],
        "the message whose download broke stays"
    );
    assert_eq!(w.received("b@example.com"), 1);
}

/// Each account's own mailbox, by name.
#[derive(Clone)]
struct ByName(Arc<HashMap<String, MemoryMailbox>>);

impl Mailboxes for ByName {
    type Source<'a> = MemoryMailbox;

    fn source<'a>(&'a self, _config: &'a Config, account: &'a AccountConfig) -> MemoryMailbox {
        self.0[&account.name].clone()
    }
}

/// The daemon (`run_with`) on `w`'s configuration, store and relay until `stop`.
async fn run_daemon(
    w: &World,
    mailboxes: impl Mailboxes,
    stop: impl Future<Output = Result<(), crate::pipeline::PipelineError>>,
) {
    run_with(
        Arc::new(w.config.clone()),
        mailboxes,
        &w.store,
        &w.relay,
        stop,
    )
    .await
    .unwrap();
}

/// The seconds between one login attempt and the next.
fn gaps(mailbox: &MemoryMailbox) -> Vec<u64> {
    let logins = mailbox.logins();
    logins.windows(2).map(|w| (w[1] - w[0]).as_secs()).collect()
}

/// [`Mailboxes`] for the tests: every account reads the one in-memory mailbox.
#[derive(Clone)]
struct OneMailbox(MemoryMailbox);

impl Mailboxes for OneMailbox {
    type Source<'a> = MemoryMailbox;

    fn source<'a>(&'a self, _config: &'a Config, _account: &'a AccountConfig) -> MemoryMailbox {
        self.0.clone()
    }
}

#[tokio::test(start_paused = true)]
async fn the_poller_passes_every_poll_interval_until_stopped() {
    let w = World::new("");
    let config = Arc::new(w.config.clone());
    // poll_interval 60s; stopped at 150s: passes at 0, 60 and 120 s.
    let stop = async {
        tokio::time::sleep(Duration::from_secs(150)).await;
        Ok(())
    };
    let mailboxes = OneMailbox(w.mailbox.clone());
    run_with(config, mailboxes, &w.store, &w.relay, stop)
        .await
        .unwrap();
    assert_eq!(w.mailbox.sessions(), 3);
}

#[tokio::test(start_paused = true)]
async fn shutdown_mid_pass_finishes_the_messages_in_hand_commits_and_stops() {
    let mut w = World::new("");
    for n in 0..5 {
        w.mailbox.add(&mail("a@example.com", &format!("m{n}")));
    }
    // One session, each transaction 10 s, two messages in flight: at 15 s the second is
    // being sent and the third waits for the session; the fourth is not downloaded.
    w.relay_connections(1);
    w.relay.set_delay(Duration::from_secs(10));
    let stop = async {
        tokio::time::sleep(Duration::from_secs(15)).await;
        Ok(())
    };
    let config = Arc::new(w.config.clone());
    run_with(
        config,
        OneMailbox(w.mailbox.clone()),
        &w.store,
        &w.relay,
        stop,
    )
    .await
    .unwrap();
    assert_eq!(
        w.received("a@example.com"),
        3,
        "the ones in hand were finished"
    );
    assert_eq!(
        w.mailbox.keys().len(),
        2,
        "the three deletions were committed"
    );
    assert_eq!(w.mailbox.fetches(), 3, "the fourth was not started");
}

#[tokio::test(start_paused = true)]
async fn a_pass_past_its_deadline_ends_and_keeps_what_it_recorded() {
    let mut w = World::new("    pass_deadline: 25s\n");
    w.relay_connections(1);
    for n in 0..5 {
        w.mailbox.add(&mail("a@example.com", &format!("m{n}")));
    }
    w.relay.set_delay(Duration::from_secs(10));
    match w.pass().await {
        Err(PassError::Deadline(d)) => assert_eq!(d, Duration::from_secs(25)),
        other => panic!("expected Deadline, got {other:?}"),
    }
    let delivered = w.received("a@example.com");
    assert_eq!(delivered, 2);
    let settled: HashMap<_, _> = w.store.load_account("acct").await.unwrap();
    let settled = settled.values().filter(|s| s.settled_at.is_some()).count();
    assert_eq!(settled, 2, "what was delivered is recorded");
    assert_eq!(
        w.mailbox.keys().len(),
        5,
        "nothing committed: deleted again next pass"
    );
    w.relay.set_delay(Duration::ZERO);
    w.pass().await.unwrap();
    assert_eq!(w.received("a@example.com"), 5, "each once");
    assert!(w.mailbox.keys().is_empty());
}

#[tokio::test]
async fn renaming_an_account_under_retention_keep_delivers_nothing_again() {
    let mut w = World::new("    retention: keep\n    initial: deliver_all\n");
    w.mailbox.add(&mail("a@example.com", "m"));
    w.pass().await.unwrap();
    w.config.accounts[0].name = "renamed".to_owned();
    let report = w.pass().await.unwrap();
    assert_eq!(report.fetched, 0, "{report}");
    assert_eq!(w.received("a@example.com"), 1);
}

#[tokio::test]
async fn each_recipient_gets_a_message_once_whatever_copies_the_mailbox_holds() {
    let w = World::new("");
    // One copy per recipient, and one with all of them (as some providers store them).
    let m = |to: &str| {
        format!("Message-ID: <one@elsewhere.test>\r\nTo: {to}\r\nSubject: s\r\n\r\nbody\r\n")
            .into_bytes()
    };
    w.mailbox.add(&m("a@example.com"));
    w.mailbox.add(&m("b@example.com"));
    w.mailbox.add(&m("a@example.com, b@example.com"));
    let report = w.pass().await.unwrap();
    assert_eq!(report.settled, 3);
    assert_eq!(
        (w.received("a@example.com"), w.received("b@example.com")),
        (1, 1)
    );
    assert!(w.mailbox.keys().is_empty());
}

#[tokio::test(start_paused = true)]
async fn messages_are_relayed_side_by_side_but_never_two_copies_of_one() {
    let w = World::new("");
    let copy = |to: &str| {
        format!("Message-ID: <one@elsewhere.test>\r\nTo: {to}\r\nSubject: s\r\n\r\nbody\r\n")
            .into_bytes()
    };
    w.mailbox.add(&copy("a@example.com"));
    w.mailbox.add(&mail("c@example.com", "another message"));
    w.mailbox.add(&copy("b@example.com"));
    w.mailbox.add(&copy("a@example.com, b@example.com"));
    w.relay.set_delay(Duration::from_secs(10));
    let started = tokio::time::Instant::now();
    let report = w.pass().await.unwrap();
    assert_eq!(report.settled, 4);
    assert_eq!(
        (
            w.received("a@example.com"),
            w.received("b@example.com"),
            w.received("c@example.com")
        ),
        (1, 1, 1),
        "each recipient once: a copy waits for the one in flight before it"
    );
    // The other message beside the first copy (10 s), the second copy after the first
    // (10 s); the third has no one left to send to.
    assert_eq!(started.elapsed(), Duration::from_secs(20));
    assert!(w.mailbox.keys().is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_message_the_relay_accepted_is_recorded_while_the_server_is_slow_to_delete_another() {
    // A crash between the relay's acceptance and the record sends the message again: that
    // time must not include a round trip for another message.
    let mut w = World::new("");
    w.relay_connections(1);
    w.mailbox.add(&mail("a@example.com", "one"));
    let second = w.mailbox.add(&mail("b@example.com", "two"));
    // The first is relayed from 0 to 10 s and deleted from 10 to 40 s; the second is
    // relayed from 10 to 20 s.
    w.relay.set_delay(Duration::from_secs(10));
    w.mailbox.set_delete_delay(Duration::from_secs(30));
    let probe = async {
        tokio::time::sleep(Duration::from_secs(25)).await;
        let known = w.store.load_account("acct").await.unwrap();
        known.get(&second).and_then(|s| s.settled_at)
    };
    let (report, settled) = tokio::join!(w.pass(), probe);
    assert_eq!(report.unwrap().settled, 2);
    assert!(
        settled.is_some(),
        "recorded once accepted (20 s), not after the other's deletion (40 s)"
    );
    assert!(w.mailbox.keys().is_empty());
}

#[tokio::test(start_paused = true)]
async fn downloading_waits_for_the_memory_budget_and_a_larger_message_goes_alone() {
    let mut w = World::new("");
    w.config.memory_budget = 1 << 20;
    let big = |to: &str, kib: usize| {
        let mut m = mail(to, &format!("{kib} KiB"));
        m.extend(std::iter::repeat_n(b'x', kib << 10));
        m.extend_from_slice(b"\r\n");
        m
    };
    // Two of 600 KiB never fit together in 1 MiB; the 1.5 MiB one takes all of it.
    // (Different sizes: different messages, which the pass would not hold apart anyway.)
    w.mailbox.add(&big("a@example.com", 600));
    w.mailbox.add(&big("b@example.com", 610));
    w.mailbox.add(&big("c@example.com", 1536));
    w.relay.set_delay(Duration::from_secs(10));
    let started = tokio::time::Instant::now();
    let report = w.pass().await.unwrap();
    assert_eq!(report.settled, 3);
    assert_eq!(
        started.elapsed(),
        Duration::from_secs(30),
        "one after the other"
    );
    for to in ["a", "b", "c"] {
        assert_eq!(w.received(&format!("{to}@example.com")), 1);
    }

    // With room for all three, they are relayed side by side.
    w.config.memory_budget = 4 << 20;
    w.mailbox.add(&big("a@example.com", 601));
    w.mailbox.add(&big("b@example.com", 611));
    w.mailbox.add(&big("c@example.com", 1537));
    let started = tokio::time::Instant::now();
    w.pass().await.unwrap();
    assert_eq!(started.elapsed(), Duration::from_secs(10));
}

#[tokio::test]
async fn the_same_mail_under_new_keys_is_not_delivered_again() {
    // As after an IMAP UIDVALIDITY change: the mailbox recreated with the same mail.
    let w = World::new("    retention: keep\n    initial: deliver_all\n");
    let without_id = mail("b@example.com", "no Message-ID");
    let with_id = |n: u32| {
        format!("Message-ID: <{n}@x.test>\r\nTo: a@example.com\r\n\r\nbody\r\n").into_bytes()
    };
    for raw in [with_id(1), with_id(2), without_id.clone()] {
        w.mailbox.add(&raw);
    }
    w.pass().await.unwrap();
    let fresh = MemoryMailbox::new();
    for (uid, raw) in [with_id(1), with_id(2), without_id, with_id(3)]
        .iter()
        .enumerate()
    {
        fresh.add_as(&format!("2:{uid}"), raw);
    }
    let w = World {
        mailbox: fresh,
        ..w
    };
    // The new mailbox's keys are unknown to the store; its first three messages were
    // delivered from the old one.
    w.pass().await.unwrap();
    assert_eq!(
        (w.received("a@example.com"), w.received("b@example.com")),
        (3, 1)
    );
}

#[tokio::test]
async fn dedup_off_delivers_every_copy() {
    let mut w = World::new("");
    w.config.dedup_window = None;
    let m = b"Message-ID: <one@x.test>\r\nTo: a@example.com\r\n\r\nbody\r\n";
    w.mailbox.add(m);
    w.mailbox.add(m);
    w.pass().await.unwrap();
    assert_eq!(w.received("a@example.com"), 2);
}

#[tokio::test(start_paused = true)]
async fn the_poller_never_logs_in_sooner_than_the_server_s_login_delay() {
    let w = World::new("");
    // poll_interval 60s, but the server allows a login every 150 s: passes at 0, 150, 300 s.
    w.mailbox.set_login_delay(Duration::from_secs(150));
    let stop = async {
        tokio::time::sleep(Duration::from_secs(400)).await;
        Ok(())
    };
    let config = Arc::new(w.config.clone());
    run_with(
        config,
        OneMailbox(w.mailbox.clone()),
        &w.store,
        &w.relay,
        stop,
    )
    .await
    .unwrap();
    assert_eq!(w.mailbox.sessions(), 3);
}

#[tokio::test]
async fn a_message_claiming_another_s_message_id_does_not_keep_it_from_its_recipient() {
    let w = World::new("");
    let with = |body: &str| {
        format!("Message-ID: <known@x.test>\r\nTo: a@example.com\r\nSubject: s\r\n\r\n{body}\r\n")
            .into_bytes()
    };
    // Sent ahead by someone who knows the Message-ID of the real message.
    w.mailbox.add(&with("spoof"));
    w.mailbox.add(&with("the real one"));
    w.pass().await.unwrap();
    assert_eq!(w.received("a@example.com"), 2, "both are delivered");
    assert!(w.mailbox.keys().is_empty());
}
