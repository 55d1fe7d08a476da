//! One poll pass of one account, against any [`Source`] of mailbox sessions: list the mailbox, skip what the state store says is
//! done (or quarantined, or waiting for its back-off), download at most `max_per_pass`
//! messages and hand each on, delete upstream what retention allows, commit (POP3 QUIT, when
//! the server really deletes) — every `expunge_every` deletions, and at the end.
//! A connection lost in the middle of a message counts against that message and the pass
//! goes on with the others on a new connection.
//!
//! Just over 600 lines: the pass's steps in the order they run; the decisions are already out
//! in `plan.rs` and `decide.rs`.

use std::collections::HashSet;
use std::fmt;
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::watch;

use crate::config::{AccountConfig, Config, Initial, Retention};
use crate::fetch::{FetchError, Listed, Mailbox, Source};
use crate::recipient::Status;
use crate::relay::Relay;
use crate::retention;
use crate::route::Rules;
use crate::state::{Headline, MessageState, Quarantined, StateError, StateStore};

use super::deliver::{self, Verdict};
use super::notice;
use super::plan::{self, Next};

/// New connections a pass may open after losing one in the middle of a message.
const RECONNECTS: usize = 3;

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
    let mut pass = Pass {
        config,
        account,
        store,
        relay,
        rules: Rules::for_account(config, account),
        report: PassReport::default(),
        tried: HashSet::new(),
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
    config: &'a Config,
    account: &'a AccountConfig,
    store: &'a St,
    relay: &'a R,
    rules: Rules,
    report: PassReport,
    /// Messages attempted in this pass: not again after a reconnect.
    tried: HashSet<String>,
}

/// How one mailbox session of the pass ended.
enum Session {
    /// The listing was worked through.
    Done,
    /// `expunge_every` deletions: committed; go on in a new session.
    Expunged,
    /// The connection was lost in the middle of a message: go on in a new session.
    Lost(FetchError),
}

impl<St: StateStore, R: Relay> Pass<'_, St, R> {
    async fn run<S: Source>(
        &mut self,
        source: &S,
        stop: &watch::Receiver<bool>,
    ) -> Result<(), PassError> {
        // Nothing is delivered that could not be recorded.
        self.store.ensure_writable().await?;
        if let Some(window) = self.config.dedup_window {
            self.store
                .forget_deliveries(SystemTime::now() - window)
                .await?;
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
                    tracing::warn!(account = %self.account.name, "connection lost, going on with a new one: {e}");
                }
                Session::Lost(e) => return Err(e.into()),
            }
            first = false;
        }
    }

    /// One mailbox session: the listing, then the messages in order, until the listing is
    /// done, `expunge_every` deletions are waiting for the commit, or the connection is lost.
    async fn session<M: Mailbox>(
        &mut self,
        mut mailbox: M,
        stop: &watch::Receiver<bool>,
        first: bool,
    ) -> Result<Session, PassError> {
        let name = self.account.name.as_str();
        let mut listing = mailbox.list().await?;
        self.report.login_delay = mailbox.login_delay();
        self.report.expire = mailbox.expire();
        let unseen_only = self.account.unseen_only;
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
            let mut before = self.store.load_account(name).await?;
            if let Some(gone) = plan::keys_replaced(&before, &present) {
                // Said once: next pass the new keys are known and the old ones forgotten.
                tracing::warn!(
                    account = name,
                    "none of the {gone} message(s) known for this mailbox is listed any more and every listed message is new: \
                     the mailbox was recreated or its keys changed (an IMAP UIDVALIDITY change); \
                     what was delivered is not delivered again (dedup_window)"
                );
            }
            self.store.prune(name, &present).await?;
            // What prune just removed, without loading the account again (one query per
            // pass, whatever the size of the mailbox).
            before.retain(|key, s| {
                present.contains(key) || (s.settled_at.is_none() && s.quarantine.is_none())
            });
            known = before;
        } else {
            known = self.store.load_account(name).await?;
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
        let budget = (self.account.max_per_pass as usize).saturating_sub(self.report.fetched);
        mailbox.plan(&plan::upcoming(
            &listing,
            &known,
            &self.tried,
            self.config.max_message_size,
            budget,
            SystemTime::now(),
            &self.config.relay.retry,
        ));

        // (handle, key) of the messages marked for deletion.
        let mut deleted: Vec<(u32, String)> = Vec::new();
        let mut ended = Session::Done;
        for (at, listed) in listing.iter().enumerate() {
            let uid = &listed.key;
            if *stop.borrow() {
                break;
            }
            let now = SystemTime::now();
            let budget_left = self.report.fetched < self.account.max_per_pass as usize;
            let state = known.get(uid);
            let settled = match plan::next(state, now, &self.config.relay.retry, budget_left) {
                Next::Settled => state.cloned(),
                Next::Quarantined => {
                    if let Some(q) = state.and_then(|s| s.quarantine.as_ref()) {
                        self.tell_postmaster(uid, q, "").await?;
                    }
                    None
                }
                Next::Wait => {
                    self.report.waiting += 1;
                    None
                }
                Next::Defer => {
                    self.report.deferred += 1;
                    None
                }
                Next::GiveUp => {
                    self.give_up(uid, "attempts", "it failed on every attempt", "")
                        .await?;
                    None
                }
                Next::Attempt if self.tried.contains(uid) => None,
                Next::Attempt
                    if listed
                        .size
                        .is_some_and(|n| n > self.config.max_message_size) =>
                {
                    let why = format!(
                        "larger than max_message_size ({} bytes) by the server's LIST",
                        self.config.max_message_size
                    );
                    self.give_up(uid, "too_large", &why, "").await?;
                    None
                }
                Next::Attempt => {
                    self.tried.insert(uid.clone());
                    match self.attempt(&mut mailbox, listed).await? {
                        Attempt::Settled(state) => Some(state),
                        Attempt::Unsettled => None,
                        Attempt::RelayUnavailable => break,
                        Attempt::Lost(e) => {
                            ended = Session::Lost(e);
                            break;
                        }
                    }
                }
            };
            let Some(settled) = settled else { continue };
            if retention::may_delete(self.account.retention, &settled, now) {
                match mailbox.delete(listed).await {
                    Ok(()) => deleted.push((listed.handle, uid.clone())),
                    // Refused for this one message: it stays upstream, is deleted next pass.
                    Err(e) if !e.connection_lost() => {
                        tracing::warn!(account = name, uid = %uid, "DELE refused: {e}");
                    }
                    // Deletions not committed are made again next session.
                    Err(e) => return Ok(Session::Lost(e)),
                }
                // At the listing's end the commit below is the last: no new session to
                // list an empty mailbox.
                if deleted.len() >= self.account.expunge_every as usize && at + 1 < listing.len() {
                    ended = Session::Expunged;
                    break;
                }
            } else {
                match mailbox.settled(listed).await {
                    Ok(()) => {}
                    // Refused for this one message: tried again next pass.
                    Err(e) if !e.connection_lost() => {
                        tracing::warn!(account = name, uid = %uid, "flagging a kept message failed: {e}");
                    }
                    Err(e) => return Ok(Session::Lost(e)),
                }
            }
        }
        if let Session::Lost(_) = ended {
            return Ok(ended);
        }
        let refused = mailbox.commit().await?;
        // Refused for these messages: they stay upstream, are deleted next pass.
        deleted.retain(|(handle, uid)| {
            let kept = refused.contains(handle);
            if kept {
                tracing::warn!(account = name, uid = %uid, "DELE refused");
            }
            !kept
        });
        let deleted: Vec<String> = deleted.into_iter().map(|(_, uid)| uid).collect();
        // Recorded only after the commit: a POP3 server deletes at QUIT and not before.
        if !deleted.is_empty() {
            self.store
                .mark_deleted(name, &deleted, SystemTime::now())
                .await?;
            crate::metrics::upstream_deleted(name, deleted.len());
        }
        self.report.deleted += deleted.len();
        Ok(ended)
    }

    /// The first pass of an account the store has never seen: with mail already upstream and
    /// retention keeping it there, only after a stated choice (`initial`).
    async fn initialize(&mut self, listing: &[Listed]) -> Result<(), PassError> {
        let name = self.account.name.as_str();
        let mailbox = self.account.mailbox_id();
        if self.store.account_known(name, &mailbox).await? {
            return Ok(());
        }
        let choice = match (self.account.initial, self.account.retention) {
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
        self.store
            .initialize_account(name, &mailbox, &skip, SystemTime::now())
            .await?;
        Ok(())
    }

    /// Quarantines a message: left upstream, recorded, counted, the postmaster told.
    async fn give_up(
        &mut self,
        uid: &str,
        metric: &'static str,
        reason: &str,
        excerpt: &str,
    ) -> Result<(), PassError> {
        let name = self.account.name.as_str();
        tracing::warn!(account = name, uid, "quarantined, left upstream: {reason}");
        let q = self
            .store
            .quarantine(name, uid, reason, &Headline::of(excerpt), SystemTime::now())
            .await?;
        crate::metrics::message_quarantined(name, metric);
        self.report.quarantined += 1;
        self.tell_postmaster(uid, &q, excerpt).await
    }

    /// Tells the postmaster about a quarantined message, once: a notice that could not be
    /// sent is tried again next pass.
    async fn tell_postmaster(
        &self,
        uid: &str,
        q: &Quarantined,
        excerpt: &str,
    ) -> Result<(), PassError> {
        if q.notified || q.forgotten {
            return Ok(());
        }
        let name = self.account.name.as_str();
        let text = notice::quarantine(
            &notice::QuarantineNotice {
                account: name,
                uidl: uid,
                id: q.id,
                reason: &q.reason,
                excerpt,
            },
            &self.relay.helo_name(),
            SystemTime::now(),
        );
        let postmaster = std::slice::from_ref(&self.config.postmaster);
        match self.relay.send(None, postmaster, &text).await {
            Ok(results) => match results.first().map(|r| &r.status) {
                Some(Status::Delivered(_)) => {
                    self.store.mark_notified(q.id, SystemTime::now()).await?;
                }
                // Refused for good: asking again every pass would only repeat the refusal.
                Some(Status::Permanent(reply)) => {
                    tracing::warn!(
                        account = name,
                        uid,
                        "the postmaster refused the quarantine notice for good: {reply}"
                    );
                    self.store.mark_notified(q.id, SystemTime::now()).await?;
                }
                _ => tracing::warn!(
                    account = name,
                    uid,
                    "the postmaster did not take the quarantine notice; will try again"
                ),
            },
            Err(e) => tracing::warn!(
                account = name,
                uid,
                "cannot send the quarantine notice to the postmaster; will try again: {e}"
            ),
        }
        Ok(())
    }

    /// One attempt at one message: counted in the store first, then fetched, then
    /// route → relay → state. Only a state-store failure is an error.
    async fn attempt<M: Mailbox>(
        &mut self,
        mailbox: &mut M,
        listed: &Listed,
    ) -> Result<Attempt, PassError> {
        let name = self.account.name.as_str();
        let uid = listed.key.as_str();
        let state = self
            .store
            .begin_attempt(name, uid, SystemTime::now())
            .await?;
        let raw = match mailbox.fetch(listed).await {
            Ok(raw) => raw,
            Err(e) if e.too_large() => {
                self.give_up(uid, "too_large", &e.to_string(), "").await?;
                return Ok(Attempt::Unsettled);
            }
            Err(e) => {
                tracing::warn!(account = name, uid, "RETR failed: {e}");
                crate::metrics::message_failed(name, "retrieve");
                let lost = e.connection_lost();
                // A lost connection is tried again at once on a new one (the attempt still
                // counts: a message that breaks every connection is quarantined in the end).
                let wait = !lost;
                self.failed(
                    uid,
                    &state,
                    &format!("RETR failed: {e}"),
                    wait,
                    "unreadable",
                    "",
                )
                .await?;
                return Ok(if lost {
                    Attempt::Lost(e)
                } else {
                    Attempt::Unsettled
                });
            }
        };
        self.report.fetched += 1;
        crate::metrics::message_fetched(name, raw.len());
        // A loop is never delivered: kept upstream, recorded, counted, the postmaster told.
        if let Some(looped) = crate::route::looped(&raw, &self.rules) {
            let excerpt = notice::excerpt(&raw);
            self.give_up(uid, "loop", &looped.to_string(), &excerpt)
                .await?;
            return Ok(Attempt::Unsettled);
        }
        let outcome = deliver::deliver(
            self.config,
            self.account,
            &self.rules,
            self.relay,
            self.store,
            uid,
            &state,
            &raw,
        )
        .await?;
        self.report.delivered += outcome.plan.delivered();
        self.report.rerouted += outcome.plan.rerouted();
        let excerpt = notice::excerpt(&raw);
        Ok(match outcome.verdict {
            Verdict::Settled(state) => {
                self.report.settled += 1;
                Attempt::Settled(state)
            }
            Verdict::Retry(why) => {
                self.failed(uid, &state, &why, true, "attempts", &excerpt)
                    .await?;
                Attempt::Unsettled
            }
            Verdict::Refused(why) => {
                crate::metrics::message_failed(name, "refused");
                self.give_up(uid, "refused", &why, &excerpt).await?;
                Attempt::Unsettled
            }
            Verdict::RelayUnavailable(why) => {
                self.report.failed += 1;
                // Not the message's fault: the attempt does not count.
                self.store
                    .record_failure(name, uid, None, &why, true)
                    .await?;
                Attempt::RelayUnavailable
            }
        })
    }

    /// A failed attempt: back off (with `wait`), or quarantine once the attempts are used up.
    #[allow(clippy::too_many_arguments)]
    async fn failed(
        &mut self,
        uid: &str,
        state: &MessageState,
        why: &str,
        wait: bool,
        metric: &'static str,
        excerpt: &str,
    ) -> Result<(), PassError> {
        let name = self.account.name.as_str();
        let now = SystemTime::now();
        match plan::after_failure(state.attempts, now, &self.config.relay.retry) {
            Some(at) => {
                self.report.failed += 1;
                let retry_at = wait.then_some(at);
                self.store
                    .record_failure(name, uid, retry_at, why, false)
                    .await?;
                Ok(())
            }
            None => {
                let reason = format!("{why} (after {} attempts)", state.attempts);
                self.give_up(uid, metric, &reason, excerpt).await
            }
        }
    }
}

/// Where one attempt at a message ended.
enum Attempt {
    /// Every recipient is settled; the state as it now stands.
    Settled(MessageState),
    /// Left upstream: backing off, or quarantined.
    Unsettled,
    /// No SMTP session could be set up: stop downloading in this pass.
    RelayUnavailable,
    /// The mailbox connection was lost during the message.
    Lost(FetchError),
}
