//! One poll pass of one account, against any [`Source`] of mailbox sessions: list the mailbox, skip what the state store says is
//! done (or quarantined, or waiting for its back-off), download at most `max_per_pass`
//! messages and hand each on, delete upstream what retention allows, commit (POP3 QUIT, when
//! the server really deletes) — every `expunge_every` deletions, and at the end.
//! A connection lost in the middle of a message counts against that message and the pass
//! goes on with the others on a new connection.
//!
//! Downloading stays here, one message at a time in listing order; each downloaded message is
//! handed on to the session's [`flight`](super::flight) and relayed and recorded beside the
//! ones before it (`work.rs`: what a message in flight does). A deletion waits for the commit
//! that records its message.
//!
//! Just over 600 lines: the pass's steps in the order they run; the decisions are already out
//! in `plan.rs` and `decide.rs`.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::future::Future;
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::watch;

use crate::config::{AccountConfig, Config, Initial, Retention};
use crate::fetch::{FetchError, Listed, Mailbox, Source};
use crate::relay::Relay;
use crate::retention;
use crate::route::Rules;
use crate::state::{MessageState, StateError, StateStore};

use super::budget::{self, Budget, Reserved};
use super::decide;
use super::flight;
use super::plan::{self, Next};

/// New connections a pass may open after losing one in the middle of a message.
const RECONNECTS: usize = 3;

mod work;

/// Why a pass ended early. Nothing is lost: what was not settled stays upstream, and what was
/// deleted but not committed (no QUIT) is deleted again next pass.
#[derive(Debug, thiserror::Error)]
pub enum PassError {
    #[error(transparent)]
    /// The upstream mailbox failed (connect, login, listing, a lost connection).
    Fetch(#[from] FetchError),
    #[error(transparent)]
    /// The state store failed: nothing more is delivered that could not be recorded.
    State(#[from] StateError),
    /// The store has never seen this account, its mailbox holds mail, and retention keeps
    /// mail upstream: delivering it all could repeat what a lost state already delivered.
    #[error(
        "the state store has never seen this account and its mailbox already holds {count} message(s); \
         with retention {retention} choose what to do with them: `initial: deliver_all` or `initial: skip_existing` \
         in the account's configuration"
    )]
    InitialChoice {
        /// Messages in the mailbox.
        count: usize,
        /// The account's retention, as written.
        retention: String,
    },
    /// The pass panicked (a bug, ours or a library's): this account's pass failed, nothing
    /// else; the next pass starts afresh.
    #[error("the pass stopped on an internal error: {0}")]
    Panicked(String),
    /// The pass ran past the account's `pass_deadline`.
    #[error("the pass ran past its pass_deadline of {}s and was ended", .0.as_secs())]
    Deadline(std::time::Duration),
}

impl PassError {
    /// Whether the daemon must stop (the state database was replaced under it).
    pub fn is_fatal(&self) -> bool {
        matches!(self, PassError::State(e) if e.is_fatal())
    }
}

/// What one pass did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct PassReport {
    /// Messages in the mailbox when listed.
    pub upstream: usize,
    /// Messages downloaded.
    pub fetched: usize,
    /// Messages fully settled in this pass.
    pub settled: usize,
    /// Recipients delivered in this pass.
    pub delivered: usize,
    /// Recipients refused for good and re-routed to the postmaster.
    pub rerouted: usize,
    /// Messages left for a later pass after a failure (temporary failure, relay down).
    pub failed: usize,
    /// Messages quarantined in this pass.
    pub quarantined: usize,
    /// Messages waiting for their back-off after an earlier failure.
    pub waiting: usize,
    /// Upstream copies deleted (and committed by QUIT).
    pub deleted: usize,
    /// Messages not downloaded because `max_per_pass` was reached.
    pub deferred: usize,
    /// The server's `LOGIN-DELAY`: the next pass waits at least this long after this one
    /// began.
    pub login_delay: Option<Duration>,
    /// The server's POP3 `EXPIRE`, if it said.
    pub expire: Option<crate::fetch::pop3::Expire>,
}

impl PassReport {
    /// Adds what one message's work counted.
    fn absorb(&mut self, tally: &PassReport) {
        self.settled += tally.settled;
        self.delivered += tally.delivered;
        self.rerouted += tally.rerouted;
        self.failed += tally.failed;
        self.quarantined += tally.quarantined;
    }
}

impl fmt::Display for PassReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} upstream, {} fetched, {} settled, {} recipient(s) delivered, {} re-routed to postmaster, {} failed, {} quarantined, {} waiting to retry, {} deleted upstream, {} left for the next pass",
            self.upstream,
            self.fetched,
            self.settled,
            self.delivered,
            self.rerouted,
            self.failed,
            self.quarantined,
            self.waiting,
            self.deleted,
            self.deferred
        )
    }
}

/// Runs one pass of `account` on the mailbox sessions `source` opens; stops between
/// messages once `stop` turns true.
pub async fn run_pass<S: Source, St: StateStore, R: Relay>(
    source: &S,
    config: &Config,
    account: &AccountConfig,
    store: &St,
    relay: &R,
    stop: &watch::Receiver<bool>,
) -> Result<PassReport, PassError> {
    let started = Instant::now();
    crate::metrics::pass_started(&account.name);
    let rules = Rules::for_account(config, account);
    let mut pass = Pass {
        ctx: Ctx {
            config,
            account,
            store,
            relay,
            rules: &rules,
        },
        report: PassReport::default(),
        tried: HashSet::new(),
        budget: budget::shared(config.memory_budget),
    };
    // At the deadline the pass ends where it is: what was recorded stays recorded, what was
    // deleted but not committed is deleted again next pass.
    let result = match tokio::time::timeout(account.pass_deadline, pass.run(source, stop)).await {
        Ok(result) => result.map(|()| pass.report),
        Err(_) => Err(PassError::Deadline(account.pass_deadline)),
    };
    crate::metrics::pass_finished(&account.name, &result, started.elapsed());
    result
}

/// One pass in progress.
struct Pass<'a, St, R> {
    ctx: Ctx<'a, St, R>,
    report: PassReport,
    /// Messages attempted in this pass: not again after a reconnect.
    tried: HashSet<String>,
    /// `memory_budget`, shared with the other passes.
    budget: Budget,
}

/// What a message needs once it is downloaded: shared by the messages in flight.
struct Ctx<'a, St, R> {
    config: &'a Config,
    account: &'a AccountConfig,
    store: &'a St,
    relay: &'a R,
    rules: &'a Rules,
}

// Not derived: derive would ask St and R to be Copy, and only the references are copied.
impl<St, R> Clone for Ctx<'_, St, R> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<St, R> Copy for Ctx<'_, St, R> {}

/// How one mailbox session of the pass ended.
enum Session {
    /// The listing was worked through.
    Done,
    /// `expunge_every` deletions: committed; go on in a new session.
    Expunged,
    /// The connection was lost in the middle of a message: go on in a new session.
    Lost(FetchError),
}

/// A session's course: the deletions made, and whether messages are still handed on.
struct Course {
    /// (handle, key) of the messages marked for deletion.
    deleted: Vec<(u32, String)>,
    /// `Done` while the session goes on.
    ended: Session,
    /// No SMTP session could be set up: nothing more is handed on in this pass.
    relay_down: bool,
}

impl Course {
    fn going(&self) -> bool {
        matches!(self.ended, Session::Done) && !self.relay_down
    }
}

impl<'a, St: StateStore, R: Relay> Pass<'a, St, R> {
    async fn run<S: Source>(
        &mut self,
        source: &S,
        stop: &watch::Receiver<bool>,
    ) -> Result<(), PassError> {
        let store = self.ctx.store;
        // Nothing is delivered that could not be recorded.
        store.ensure_writable().await?;
        if let Some(window) = self.ctx.config.dedup_window {
            store.forget_deliveries(SystemTime::now() - window).await?;
        }
        let mut lost = 0;
        let mut first = true;
        loop {
            let mailbox = source.open().await?;
            match self.session(mailbox, stop, first).await? {
                Session::Done => return Ok(()),
                Session::Expunged => {}
                Session::Lost(e) if lost < RECONNECTS && !*stop.borrow() => {
                    lost += 1;
                    tracing::warn!(account = %self.ctx.account.name, "connection lost, going on with a new one: {e}");
                }
                Session::Lost(e) => return Err(e.into()),
            }
            first = false;
        }
    }

    /// One mailbox session: the listing, then the messages in order, until the listing is
    /// done, `expunge_every` deletions are waiting for the commit, or the connection is lost.
    /// Downloading goes on while earlier messages are relayed and recorded ([`Flight`]); each
    /// deletion waits for the commit that records its message.
    async fn session<M: Mailbox>(
        &mut self,
        mut mailbox: M,
        stop: &watch::Receiver<bool>,
        first: bool,
    ) -> Result<Session, PassError> {
        let ctx = self.ctx;
        let name = ctx.account.name.as_str();
        let mut listing = mailbox.list().await?;
        self.report.login_delay = mailbox.login_delay();
        self.report.expire = mailbox.expire();
        let unseen_only = ctx.account.unseen_only;
        let known;
        if first {
            self.report.upstream = listing.len();
            // First: a renamed account's state is moved to its new name here. With
            // unseen_only, mail read upstream is not the store's to take or skip.
            let unseen: Vec<Listed> = (listing.iter())
                .filter(|l| !(unseen_only && l.seen))
                .cloned()
                .collect();
            self.initialize(&unseen).await?;
            // Every listed message counts as present, seen or not: a kept message that was
            // read upstream stays known, and is not delivered again if marked unread later.
            let present: HashSet<String> = listing.iter().map(|l| l.key.clone()).collect();
            let mut before = ctx.store.load_account(name).await?;
            if let Some(gone) = plan::keys_replaced(&before, &present) {
                // Said once: next pass the new keys are known and the old ones forgotten.
                tracing::warn!(
                    account = name,
                    "none of the {gone} message(s) known for this mailbox is listed any more and every listed message is new: \
                     the mailbox was recreated or its keys changed (an IMAP UIDVALIDITY change); \
                     what was delivered is not delivered again (dedup_window)"
                );
            }
            ctx.store.prune(name, &present).await?;
            // What prune just removed, without loading the account again (one query per
            // pass, whatever the size of the mailbox).
            before.retain(|key, s| {
                present.contains(key) || (s.settled_at.is_none() && s.quarantine.is_none())
            });
            known = before;
        } else {
            known = ctx.store.load_account(name).await?;
        }
        // unseen_only: a message read upstream is not taken up; one the store knows (begun,
        // settled, quarantined) goes on as before, so that reading it upstream loses nothing.
        if unseen_only {
            listing.retain(|l| !l.seen || known.contains_key(&l.key));
        }
        if first {
            crate::metrics::mailbox_listed(name, &listing, &known);
        }

        // The session may download these ahead, overlapping their delivery.
        let budget = (ctx.account.max_per_pass as usize).saturating_sub(self.report.fetched);
        mailbox.plan(&plan::upcoming(
            &listing,
            &known,
            &self.tried,
            ctx.config.max_message_size,
            budget,
            SystemTime::now(),
            &ctx.config.relay.retry,
        ));

        let mut course = Course {
            deleted: Vec::new(),
            ended: Session::Done,
            relay_down: false,
        };
        let mut flight = Flight::new(2 * ctx.config.relay.connections as usize);
        let handed = (self.hand_on(
            &mut mailbox,
            &listing,
            &known,
            stop,
            &mut flight,
            &mut course,
        ))
        .await;
        // What was handed on is finished before the session ends, after an error too: each
        // outcome recorded, each deletion made.
        let mut failed = handed.err();
        while let Some(done) = flight.next().await {
            if let Err(e) = self
                .finish(&mut mailbox, &mut flight, done, &mut course)
                .await
            {
                failed.get_or_insert(e);
            }
        }
        // Recorded for good before the upstream copies go (and for `retention: keep`, so that
        // a crash of the machine re-delivers nothing of this session).
        if let Err(e) = ctx.store.sync().await {
            failed.get_or_insert(e.into());
        }
        if let Some(e) = failed {
            return Err(e);
        }
        if let Session::Lost(_) = course.ended {
            return Ok(course.ended);
        }
        let refused = mailbox.commit().await?;
        // Refused for these messages: they stay upstream, are deleted next pass.
        let deleted: Vec<String> = (course.deleted.into_iter())
            .filter(|(handle, uid)| {
                let kept = refused.contains(handle);
                if kept {
                    tracing::warn!(account = name, uid = %uid, "DELE refused");
                }
                !kept
            })
            .map(|(_, uid)| uid)
            .collect();
        // Recorded only after the commit: a POP3 server deletes at QUIT and not before.
        if !deleted.is_empty() {
            ctx.store
                .mark_deleted(name, &deleted, SystemTime::now())
                .await?;
            crate::metrics::upstream_deleted(name, deleted.len());
        }
        self.report.deleted += deleted.len();
        Ok(course.ended)
    }

    /// Hands the listed messages on in order — downloaded here, one at a time, then relayed
    /// and recorded in `flight` — until the listing is done or `course` says to stop.
    async fn hand_on<M: Mailbox>(
        &mut self,
        mailbox: &mut M,
        listing: &[Listed],
        known: &HashMap<String, MessageState>,
        stop: &watch::Receiver<bool>,
        flight: &mut Flight<'a>,
        course: &mut Course,
    ) -> Result<(), PassError> {
        let ctx = self.ctx;
        for listed in listing {
            // What finished meanwhile is recorded: its upstream copy may go now.
            while let Some(done) = flight.take_done() {
                self.finish(mailbox, flight, done, course).await?;
            }
            if !course.going() || *stop.borrow() {
                break;
            }
            // A new session first, so that the server deletes what is waiting: what was
            // marked, and (deleted once delivered) what is in flight.
            let in_flight = match ctx.account.retention {
                Retention::Delete => flight.len(),
                _ => 0,
            };
            if course.deleted.len() + in_flight >= ctx.account.expunge_every as usize {
                course.ended = Session::Expunged;
                break;
            }
            let uid = &listed.key;
            let now = SystemTime::now();
            let budget_left = self.report.fetched < ctx.account.max_per_pass as usize;
            let state = known.get(uid);
            match plan::next(state, now, &ctx.config.relay.retry, budget_left) {
                Next::Settled => {
                    if let Some(state) = state {
                        self.dispose(mailbox, flight, listed, state, course).await;
                    }
                }
                Next::Quarantined => {
                    let q = state.and_then(|s| s.quarantine.clone());
                    if let Some(q) = q.filter(|q| !q.notified && !q.forgotten) {
                        self.room(mailbox, flight, course).await?;
                        let uid = uid.clone();
                        let work = async move {
                            let result = ctx.tell_postmaster(&uid, &q, "").await;
                            (PassReport::default(), result.map(|()| Attempt::Unsettled))
                        };
                        flight.push(None, finishing(listed, work));
                    }
                }
                Next::Wait => self.report.waiting += 1,
                Next::Defer => self.report.deferred += 1,
                Next::GiveUp => {
                    self.room(mailbox, flight, course).await?;
                    let why = "it failed on every attempt";
                    flight.push(
                        None,
                        finishing(listed, ctx.give_up(uid, "attempts", why, "")),
                    );
                }
                Next::Attempt if self.tried.contains(uid) => {}
                Next::Attempt if listed.size.is_some_and(|n| n > ctx.config.max_message_size) => {
                    self.room(mailbox, flight, course).await?;
                    let why = format!(
                        "larger than max_message_size ({} bytes) by the server's LIST",
                        ctx.config.max_message_size
                    );
                    flight.push(
                        None,
                        finishing(listed, ctx.give_up(uid, "too_large", &why, "")),
                    );
                }
                Next::Attempt => {
                    self.room(mailbox, flight, course).await?;
                    if !course.going() || *stop.borrow() {
                        break;
                    }
                    self.tried.insert(uid.clone());
                    let reserved = flight.drive(self.budget.reserve(listed.size.unwrap_or(0)));
                    let reserved = reserved.await;
                    self.attempt(mailbox, listed, reserved, flight, course)
                        .await?;
                }
            }
        }
        Ok(())
    }

    /// Waits until the flight has room for one more message, finishing what comes back.
    async fn room<M: Mailbox>(
        &mut self,
        mailbox: &mut M,
        flight: &mut Flight<'a>,
        course: &mut Course,
    ) -> Result<(), PassError> {
        while flight.full() {
            let Some(done) = flight.next().await else {
                break;
            };
            self.finish(mailbox, flight, done, course).await?;
        }
        Ok(())
    }

    /// One attempt at one message: downloaded (its listed size `reserved` in the memory
    /// budget), then handed on to `flight`, where it is counted in the store before route →
    /// relay → state (`work.rs`). Only a state-store failure is an error.
    async fn attempt<M: Mailbox>(
        &mut self,
        mailbox: &mut M,
        listed: &Listed,
        reserved: Reserved,
        flight: &mut Flight<'a>,
        course: &mut Course,
    ) -> Result<(), PassError> {
        let ctx = self.ctx;
        let name = ctx.account.name.as_str();
        let uid = listed.key.as_str();
        let raw = match flight.drive(mailbox.fetch(listed)).await {
            Ok(raw) => raw,
            Err(e) if e.too_large() => {
                let why = e.to_string();
                flight.push(
                    None,
                    finishing(listed, ctx.give_up(uid, "too_large", &why, "")),
                );
                return Ok(());
            }
            Err(e) => {
                tracing::warn!(account = name, uid, "RETR failed: {e}");
                crate::metrics::message_failed(name, "retrieve");
                // A lost connection is tried again at once on a new one (the attempt still
                // counts: a message that breaks every connection is quarantined in the end).
                let lost = e.connection_lost();
                let why = format!("RETR failed: {e}");
                flight.push(
                    None,
                    finishing(listed, ctx.failed(uid, why, !lost, "unreadable")),
                );
                if lost {
                    course.ended = Session::Lost(e);
                }
                return Ok(());
            }
        };
        self.report.fetched += 1;
        crate::metrics::message_fetched(name, raw.len());
        // Larger than listed (or not listed): the rest is reserved now that it is held.
        let size = raw.len() as u64;
        let more = match size.checked_sub(listed.size.unwrap_or(0)) {
            Some(more) if more > 0 => Some(flight.drive(self.budget.reserve(more)).await),
            _ => None,
        };
        // Another copy of this message in flight: it is recorded first, so that this one
        // sees who got it (dedup_window). The key is the dedup id without the Message-ID: a
        // plain scan of the bytes (nothing parses the message before its attempt is counted),
        // the same for any two copies the dedup id takes as one.
        let key = ctx
            .config
            .dedup_window
            .map(|_| decide::dedup_id(None, &raw));
        while key.as_deref().is_some_and(|key| flight.holds(key)) {
            let Some(done) = flight.next().await else {
                break;
            };
            self.finish(mailbox, flight, done, course).await?;
        }
        let work = ctx.deliver(uid, raw);
        let work = async move {
            let worked = work.await;
            drop((reserved, more));
            worked
        };
        flight.push(key, finishing(listed, work));
        Ok(())
    }

    /// A message handed on has finished: counted, and its upstream copy dealt with if it is
    /// settled.
    async fn finish<M: Mailbox>(
        &mut self,
        mailbox: &mut M,
        flight: &mut Flight<'a>,
        done: Finished,
        course: &mut Course,
    ) -> Result<(), PassError> {
        self.report.absorb(&done.tally);
        match done.result? {
            Attempt::Settled(state) => {
                self.dispose(mailbox, flight, &done.listed, &state, course)
                    .await
            }
            Attempt::Unsettled => {}
            Attempt::RelayUnavailable => course.relay_down = true,
        }
        Ok(())
    }

    /// A settled message: deleted upstream if retention allows (committed at the session's
    /// end), otherwise told to the mailbox as kept. Not after the connection was lost: the
    /// next session does it. The messages in flight go on meanwhile: one the relay accepted
    /// is recorded at once, not after this round trip (a crash in between re-delivers it).
    async fn dispose<M: Mailbox>(
        &mut self,
        mailbox: &mut M,
        flight: &mut Flight<'a>,
        listed: &Listed,
        state: &MessageState,
        course: &mut Course,
    ) {
        if let Session::Lost(_) = course.ended {
            return;
        }
        let name = self.ctx.account.name.as_str();
        let uid = &listed.key;
        if retention::may_delete(self.ctx.account.retention, state, SystemTime::now()) {
            match flight.drive(mailbox.delete(listed)).await {
                Ok(()) => course.deleted.push((listed.handle, uid.clone())),
                // Refused for this one message: it stays upstream, is deleted next pass.
                Err(e) if !e.connection_lost() => {
                    tracing::warn!(account = name, uid = %uid, "DELE refused: {e}");
                }
                // Deletions not committed are made again next session.
                Err(e) => course.ended = Session::Lost(e),
            }
        } else {
            match flight.drive(mailbox.settled(listed)).await {
                Ok(()) => {}
                // Refused for this one message: tried again next pass.
                Err(e) if !e.connection_lost() => {
                    tracing::warn!(account = name, uid = %uid, "flagging a kept message failed: {e}");
                }
                Err(e) => course.ended = Session::Lost(e),
            }
        }
    }

    /// The first pass of an account the store has never seen: with mail already upstream and
    /// retention keeping it there, only after a stated choice (`initial`).
    async fn initialize(&mut self, listing: &[Listed]) -> Result<(), PassError> {
        let ctx = self.ctx;
        let name = ctx.account.name.as_str();
        let mailbox = ctx.account.mailbox_id();
        if ctx.store.account_known(name, &mailbox).await? {
            return Ok(());
        }
        let choice = match (ctx.account.initial, ctx.account.retention) {
            (Some(choice), _) => choice,
            (None, _) if listing.is_empty() => Initial::DeliverAll,
            // Deleted once delivered: mail upstream was never delivered by this store.
            (None, Retention::Delete) => Initial::DeliverAll,
            (None, retention) => {
                return Err(PassError::InitialChoice {
                    count: listing.len(),
                    retention: retention.to_string(),
                });
            }
        };
        let skip: Vec<String> = match choice {
            Initial::DeliverAll => Vec::new(),
            Initial::SkipExisting => listing.iter().map(|l| l.key.clone()).collect(),
        };
        if !skip.is_empty() {
            tracing::info!(
                account = name,
                "initial: skip_existing: {} message(s) already upstream are taken as delivered",
                skip.len()
            );
        }
        ctx.store
            .initialize_account(name, &mailbox, &skip, SystemTime::now())
            .await?;
        Ok(())
    }
}

/// Where one message handed on ended.
enum Attempt {
    /// Every recipient is settled; the state as it now stands.
    Settled(MessageState),
    /// Left upstream: backing off, or quarantined.
    Unsettled,
    /// No SMTP session could be set up: stop downloading in this pass.
    RelayUnavailable,
}

/// What the work on one message adds to the report, and where the message ended.
type Worked = (PassReport, Result<Attempt, PassError>);

/// A message handed on that has finished.
struct Finished {
    listed: Listed,
    tally: PassReport,
    result: Result<Attempt, PassError>,
}

/// The messages of a session in flight: at most twice `relay.connections` of them, so that
/// the relay's sessions stay busy while outcomes are committed.
type Flight<'a> = flight::Flight<'a, Finished>;

/// `work` on the message `listed`, as the flight takes it back.
fn finishing<'a>(
    listed: &Listed,
    work: impl Future<Output = Worked> + Send + 'a,
) -> impl Future<Output = Finished> + Send + 'a {
    let listed = listed.clone();
    async move {
        let (tally, result) = work.await;
        Finished {
            listed,
            tally,
            result,
        }
    }
}
