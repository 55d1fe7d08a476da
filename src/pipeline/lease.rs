//! The lease around one pass ([`leased`]): taken before it (skipped when another instance
//! holds the account or it is not due), renewed every third of `lease_ttl` while it runs,
//! confirmed before each message is sent and before the deletions are committed, released
//! after it. A pass that loses its lease stops: its writes are refused by the store (fenced),
//! its commit drops the session without QUIT/EXPUNGE, its next send is not made.
//!
//! With SQLite and the in-memory store every lease is granted at once (one process owns the
//! store), and these calls cost nothing.

use std::time::Duration;

use tokio::sync::watch;

use super::pass::{PassError, PassReport};
use crate::address::Address;
use crate::config::{AccountConfig, Config, DEFAULT_LEASE_TTL, StateBackend};
use crate::fetch::{FetchError, Listed, Mailbox, Source};
use crate::recipient::Recipient;
use crate::relay::{Relay, RelayError};
use crate::state::{Claim, PassDone, StateError, StateStore};

/// `lease_ttl` of the configuration (the default for a store without leases).
fn ttl(config: &Config) -> Duration {
    match &config.state {
        StateBackend::Postgres(pg) => pg.lease_ttl,
        StateBackend::Sqlite => DEFAULT_LEASE_TTL,
    }
}

/// Runs `pass` (given the stop signal, the fenced mailbox and the fenced relay) while
/// holding `account`'s lease. `Ok(None)`: the lease was not ours to take (another instance
/// holds it, or with `due_only` the account is not due): nothing was done.
#[allow(clippy::too_many_arguments)]
pub(super) async fn leased<S, St, R, F, Fut>(
    config: &Config,
    account: &AccountConfig,
    store: &St,
    source: S,
    relay: R,
    stop: watch::Receiver<bool>,
    due_only: bool,
    pass: F,
) -> Result<Option<PassReport>, PassError>
where
    S: Source,
    St: StateStore,
    R: Relay,
    F: FnOnce(watch::Receiver<bool>, Fenced<S, St>, FencedRelay<R, St>) -> Fut,
    Fut: Future<Output = Result<PassReport, PassError>>,
{
    let ttl = ttl(config);
    let claim = Claim {
        ttl,
        interval: account.poll_interval,
        due_only,
    };
    if !store.claim(&account.name, claim).await? {
        return Ok(None);
    }
    // The pass stops (between messages) when the daemon stops or the lease is lost.
    let (stop_tx, pass_stop) = watch::channel(*stop.borrow());
    let renewer = tokio::spawn(renew(
        store.clone(),
        account.name.clone(),
        ttl,
        stop,
        stop_tx,
    ));
    let fenced = Fenced {
        inner: source,
        store: store.clone(),
        account: account.name.clone(),
        ttl,
    };
    let relay = FencedRelay {
        inner: relay,
        store: store.clone(),
        account: account.name.clone(),
        ttl,
    };
    let result = pass(pass_stop, fenced, relay).await;
    renewer.abort();
    let done = match &result {
        Ok(report) => PassDone {
            error: None,
            waiting: report.failed + report.waiting + report.deferred,
        },
        Err(e) => PassDone {
            error: Some(e.to_string()),
            waiting: 0,
        },
    };
    if let Err(e) = store.release(&account.name, done).await {
        // It expires on its own after lease_ttl.
        tracing::warn!(account = %account.name, "could not release the account's lease: {e}");
    }
    result.map(Some)
}

/// Every `ttl / 3`: renews the lease; passes the daemon's stop on, and stops the pass when
/// the lease is lost.
async fn renew<St: StateStore>(
    store: St,
    account: String,
    ttl: Duration,
    mut stop: watch::Receiver<bool>,
    pass_stop: watch::Sender<bool>,
) {
    let mut tick = tokio::time::interval(ttl / 3);
    tick.tick().await;
    loop {
        tokio::select! {
            changed = stop.changed() => {
                if changed.is_err() || *stop.borrow() {
                    let _ = pass_stop.send(true);
                    return;
                }
            }
            _ = tick.tick() => match store.renew(&account, ttl).await {
                Ok(true) => {}
                Ok(false) => {
                    tracing::warn!(account = %account, "the account's lease was lost (expired, taken over): stopping its pass");
                    let _ = pass_stop.send(true);
                    return;
                }
                // Tried again at the next tick; the lease expires if it never goes through.
                Err(e) => tracing::warn!(account = %account, "could not renew the account's lease: {e}"),
            }
        }
    }
}

/// Whether the lease is still held, extended by `ttl`: a store error counts as lost (nothing
/// irreversible is done on a lease that cannot be confirmed).
async fn confirm<St: StateStore>(store: &St, account: &str, ttl: Duration) -> bool {
    match store.renew(account, ttl).await {
        Ok(held) => held,
        Err(e) => {
            tracing::warn!(account = %account, "could not confirm the account's lease: {e}");
            false
        }
    }
}

/// The account's mailbox, whose sessions commit only while the lease is held.
pub(super) struct Fenced<S, St> {
    inner: S,
    store: St,
    account: String,
    ttl: Duration,
}

impl<S: Source, St: StateStore> Source for Fenced<S, St> {
    type Session = FencedSession<S::Session, St>;

    async fn open(&self) -> Result<Self::Session, FetchError> {
        Ok(FencedSession {
            inner: self.inner.open().await?,
            store: self.store.clone(),
            account: self.account.clone(),
            ttl: self.ttl,
        })
    }
}

/// One session of a [`Fenced`] mailbox.
pub(super) struct FencedSession<M, St> {
    inner: M,
    store: St,
    account: String,
    ttl: Duration,
}

impl<M: Mailbox, St: StateStore> Mailbox for FencedSession<M, St> {
    /// Lists only after confirming the lease: a process frozen during its login (SIGSTOP, a
    /// stalled VM) past `lease_ttl` must not go on working a mailbox another instance has
    /// taken over (found by tests/postgres_instances.rs: UIDL and LIST sent beside the new
    /// holder's pass). One renewal per pass with PostgreSQL; free with SQLite.
    async fn list(&mut self) -> Result<Vec<Listed>, FetchError> {
        if !confirm(&self.store, &self.account, self.ttl).await {
            return Err(FetchError::LeaseLost);
        }
        self.inner.list().await
    }

    fn plan(&mut self, upcoming: &[Listed]) {
        self.inner.plan(upcoming)
    }

    fn fetch(&mut self, msg: &Listed) -> impl Future<Output = Result<Vec<u8>, FetchError>> + Send {
        self.inner.fetch(msg)
    }

    fn settled(&mut self, msg: &Listed) -> impl Future<Output = Result<(), FetchError>> + Send {
        self.inner.settled(msg)
    }

    fn login_delay(&self) -> Option<Duration> {
        self.inner.login_delay()
    }

    fn delete(&mut self, msg: &Listed) -> impl Future<Output = Result<(), FetchError>> + Send {
        self.inner.delete(msg)
    }

    /// Commits only after confirming the lease; without it the session is dropped (no QUIT,
    /// no EXPUNGE: nothing is deleted).
    async fn commit(self) -> Result<Vec<u32>, FetchError> {
        if !confirm(&self.store, &self.account, self.ttl).await {
            drop(self.inner);
            return Err(FetchError::LeaseLost);
        }
        self.inner.commit().await
    }
}

/// The relay, sending for the account only while its lease is held.
#[derive(Clone)]
pub(super) struct FencedRelay<R, St> {
    inner: R,
    store: St,
    account: String,
    ttl: Duration,
}

impl<R: Relay, St: StateStore> Relay for FencedRelay<R, St> {
    fn helo_name(&self) -> String {
        self.inner.helo_name()
    }

    async fn send(
        &self,
        reverse_path: Option<&Address>,
        recipients: &[Address],
        message: &[u8],
    ) -> Result<Vec<Recipient>, RelayError> {
        if !confirm(&self.store, &self.account, self.ttl).await {
            return Err(RelayError::LeaseLost {
                account: self.account.clone(),
            });
        }
        self.inner.send(reverse_path, recipients, message).await
    }
}

/// A lease held elsewhere, for `poll-once` (the daemon skips such an account silently).
pub(super) fn held(account: &AccountConfig) -> PassError {
    PassError::State(StateError::Held {
        account: account.name.clone(),
    })
}
