//! One poll pass of one POP3 account: list the mailbox, skip what the state store says is
//! done, download at most `max_per_pass` messages and hand each on, delete upstream what
//! retention allows, QUIT (which is when a POP3 server commits the deletions).

use std::collections::HashSet;
use std::fmt;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use tokio::sync::{Semaphore, watch};

use crate::config::{AccountConfig, Config};
use crate::fetch::pop3::{Pop3Client, Pop3Error};
use crate::relay::Relay;
use crate::retention;
use crate::route::Rules;
use crate::state::{MessageState, StateError, Store};

use super::deliver::{self, Settled};

/// Why a pass ended early. Nothing is lost: what was not settled stays upstream, and what was
/// deleted but not committed (no QUIT) is deleted again next pass.
#[derive(Debug, thiserror::Error)]
pub enum PassError {
    #[error("POP3: {0}")]
    Pop3(#[from] Pop3Error),
    #[error("state store: {0}")]
    State(#[from] StateError),
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
    /// Messages left for a later pass (temporary failure, or refused without a way on).
    pub failed: usize,
    /// Upstream copies deleted (and committed by QUIT).
    pub deleted: usize,
    /// Messages not downloaded because `max_per_pass` was reached.
    pub deferred: usize,
}

impl fmt::Display for PassReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} upstream, {} fetched, {} settled, {} recipient(s) delivered, {} re-routed to postmaster, {} failed, {} deleted upstream, {} left for the next pass",
            self.upstream,
            self.fetched,
            self.settled,
            self.delivered,
            self.rerouted,
            self.failed,
            self.deleted,
            self.deferred
        )
    }
}

/// Runs one pass; stops between messages once `stop` turns true.
pub async fn run_pass(
    config: &Config,
    account: &AccountConfig,
    store: &Store,
    relay_slots: &Arc<Semaphore>,
    stop: &watch::Receiver<bool>,
) -> Result<PassReport, PassError> {
    let started = Instant::now();
    let result = pass(config, account, store, relay_slots, stop).await;
    let upstream = result.as_ref().ok().map(|r| r.upstream);
    crate::metrics::pass_finished(&account.name, result.is_ok(), started.elapsed(), upstream);
    result
}

async fn pass(
    config: &Config,
    account: &AccountConfig,
    store: &Store,
    relay_slots: &Arc<Semaphore>,
    stop: &watch::Receiver<bool>,
) -> Result<PassReport, PassError> {
    let name = account.name.as_str();
    let mut client = Pop3Client::connect(account).await?;
    let listing = client.uidl().await?;
    let mut report = PassReport {
        upstream: listing.len(),
        ..PassReport::default()
    };

    let known = store.load_account(name).await?;
    let present: HashSet<String> = listing.iter().map(|(_, uid)| uid.clone()).collect();
    store.prune(name, &present).await?;

    let rules = Rules::for_account(config, account);
    let mut relay = Relay::sharing(config.relay.clone(), relay_slots.clone());
    let mut deleted = Vec::new();

    for (number, uid) in &listing {
        if *stop.borrow() {
            break;
        }
        let now = SystemTime::now();
        let settled = match known.get(uid) {
            Some(state) if state.settled_at.is_some() => state.clone(),
            _ if report.fetched >= account.max_per_pass as usize => {
                report.deferred += 1;
                continue;
            }
            known_state => {
                let message = Message {
                    config,
                    account,
                    rules: &rules,
                    store,
                    number: *number,
                    uid,
                    known: known_state,
                };
                match message
                    .fetch_and_deliver(&mut client, &mut relay, &mut report)
                    .await?
                {
                    Step::Settled(state) => state,
                    Step::Unsettled => {
                        report.failed += 1;
                        continue;
                    }
                    Step::RelayUnavailable => {
                        // Every other message would fail alike: stop downloading. Settled
                        // messages further down are deleted next pass.
                        report.failed += 1;
                        break;
                    }
                }
            }
        };
        if retention::may_delete(account.retention, &settled, now) {
            match client.dele(*number).await {
                Ok(()) => deleted.push(uid.clone()),
                // Refused for this one message: it stays upstream, is deleted next pass.
                Err(e) if !e.connection_lost() => {
                    tracing::warn!(account = name, uid = %uid, "DELE refused: {e}");
                }
                Err(e) => return Err(e.into()),
            }
        }
    }
    relay.close().await;
    client.quit().await?;
    // Recorded only after QUIT: a POP3 server commits DELE at QUIT and not before.
    if !deleted.is_empty() {
        store
            .mark_deleted(name, &deleted, SystemTime::now())
            .await?;
        crate::metrics::upstream_deleted(name, deleted.len());
    }
    report.deleted = deleted.len();
    Ok(report)
}

/// Where one unsettled message ended up in this pass.
enum Step {
    /// Every recipient is settled; the state as it now stands.
    Settled(MessageState),
    /// Left upstream for a later pass (RETR refused, a recipient deferred, relay refused).
    Unsettled,
    /// No SMTP session could be set up.
    RelayUnavailable,
}

/// One message not yet settled, and what it takes to move it on.
struct Message<'a> {
    config: &'a Config,
    account: &'a AccountConfig,
    rules: &'a Rules,
    store: &'a Store,
    number: u32,
    uid: &'a str,
    /// Its state from an earlier pass, if any (the recipients already done).
    known: Option<&'a MessageState>,
}

impl Message<'_> {
    /// RETR, then route → relay → state. Only a lost POP3 connection or a state-store
    /// failure is an error; whatever else goes wrong concerns this message alone.
    async fn fetch_and_deliver(
        &self,
        client: &mut Pop3Client,
        relay: &mut Relay,
        report: &mut PassReport,
    ) -> Result<Step, PassError> {
        let name = self.account.name.as_str();
        let raw = match client.retr(self.number).await {
            Ok(raw) => raw,
            Err(e) if !e.connection_lost() => {
                tracing::warn!(account = name, uid = %self.uid, "RETR failed: {e}");
                crate::metrics::message_failed(name, "retrieve");
                return Ok(Step::Unsettled);
            }
            Err(e) => return Err(e.into()),
        };
        report.fetched += 1;
        crate::metrics::message_fetched(name, raw.len());
        let now = SystemTime::now();
        let mut state = match self.known {
            Some(state) => state.clone(),
            // Stored with its first outcome: one fsync per message, not two.
            None => MessageState::new(now),
        };
        let outcome = deliver::deliver(
            self.config,
            self.account,
            self.rules,
            relay,
            self.store,
            self.uid,
            &state,
            &raw,
        )
        .await?;
        report.delivered += outcome.delivered;
        report.rerouted += outcome.rerouted;
        Ok(match outcome.settled {
            Settled::Yes => {
                report.settled += 1;
                state.settled_at = Some(now);
                Step::Settled(state)
            }
            Settled::No if outcome.relay_unavailable => Step::RelayUnavailable,
            Settled::No => Step::Unsettled,
        })
    }
}
