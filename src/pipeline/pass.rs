//! One poll pass of one POP3 account: list the mailbox, skip what the state store says is
//! done, download at most `max_per_pass` messages and hand each on, delete upstream what
//! retention allows, QUIT (which is when a POP3 server commits the deletions).

use std::collections::HashSet;
use std::fmt;
use std::time::{Instant, SystemTime};

use tokio::sync::watch;

use crate::config::{AccountConfig, Config};
use crate::fetch::pop3::{Pop3Client, Pop3Error};
use crate::relay::Relay;
use crate::retention;
use crate::route::Rules;
use crate::state::{StateError, Store};

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
    stop: &watch::Receiver<bool>,
) -> Result<PassReport, PassError> {
    let started = Instant::now();
    let result = pass(config, account, store, stop).await;
    let upstream = result.as_ref().ok().map(|r| r.upstream);
    crate::metrics::pass_finished(&account.name, result.is_ok(), started.elapsed(), upstream);
    result
}

async fn pass(
    config: &Config,
    account: &AccountConfig,
    store: &Store,
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
    let mut relay = Relay::new(config.relay.clone());
    let mut deleted = Vec::new();

    for (number, uid) in &listing {
        if *stop.borrow() {
            break;
        }
        let now = SystemTime::now();
        let mut state = known.get(uid).cloned();
        if state.as_ref().is_none_or(|s| s.settled_at.is_none()) {
            if report.fetched >= account.max_per_pass as usize {
                report.deferred += 1;
                continue;
            }
            let raw = match client.retr(*number).await {
                Ok(raw) => raw,
                Err(e) if !e.connection_lost() => {
                    // One message the server cannot give us must not stop the others.
                    tracing::warn!(account = name, uid = %uid, "RETR failed: {e}");
                    crate::metrics::message_failed(name, "retrieve");
                    report.failed += 1;
                    continue;
                }
                Err(e) => return Err(e.into()),
            };
            report.fetched += 1;
            crate::metrics::message_fetched(name, raw.len());
            let seen = store.seen(name, uid, now).await?;
            let outcome =
                deliver::deliver(config, account, &rules, &mut relay, store, uid, &seen, &raw)
                    .await?;
            report.delivered += outcome.delivered;
            report.rerouted += outcome.rerouted;
            match outcome.settled {
                Settled::Yes => {
                    report.settled += 1;
                    let mut s = seen;
                    s.settled_at = Some(now);
                    state = Some(s);
                }
                Settled::No if outcome.relay_unavailable => {
                    // The internal server cannot be reached: downloading the rest would only
                    // fail alike. What is settled was already deleted above it in the listing.
                    report.failed += 1;
                    break;
                }
                Settled::No => {
                    report.failed += 1;
                    continue;
                }
            }
        }
        if let Some(s) = &state
            && retention::may_delete(account.retention, s, now)
        {
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
