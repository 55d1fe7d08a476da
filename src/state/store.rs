//! The store the configuration chooses: SQLite under `state_dir` (the default), or
//! PostgreSQL (`state: {postgres: ...}`). An enum dispatching the trait, so that each backend
//! keeps its own code and the pipeline stays generic over [`StateStore`].

use std::collections::{HashMap, HashSet};
use std::time::{Duration, SystemTime};

use super::{
    Claim, Headline, MessageState, PassDone, PassEnded, PgStore, QuarantineEntry, Quarantined,
    SqliteStore, StateError, StateLock, StateStore,
};
use crate::config::{Config, StateBackend};
use crate::recipient::Recipient;

/// One of the state backends.
#[derive(Debug, Clone)]
pub enum Store {
    /// `state_dir/state.sqlite3`, one process per `state_dir`.
    Sqlite(SqliteStore),
    /// A PostgreSQL database shared by several instances.
    Postgres(PgStore),
}

impl Store {
    /// Opens the configured store. With SQLite and `lock`, the lock on `state_dir` is taken
    /// first (one process per state directory) and returned to be held; with PostgreSQL the
    /// account leases take its place.
    pub async fn open(
        config: &Config,
        lock: bool,
    ) -> Result<(Store, Option<StateLock>), StateError> {
        match &config.state {
            StateBackend::Sqlite => {
                let held = if lock {
                    Some(StateLock::acquire(&config.state_dir)?)
                } else {
                    None
                };
                Ok((Store::Sqlite(SqliteStore::open(&config.state_dir)?), held))
            }
            StateBackend::Postgres(pg) => {
                Ok((Store::Postgres(PgStore::open(pg.url.expose()).await?), None))
            }
        }
    }

    /// The quarantined messages not forgotten, oldest first.
    pub async fn list_quarantine(&self) -> Result<Vec<QuarantineEntry>, StateError> {
        match self {
            Store::Sqlite(s) => s.list_quarantine().await,
            Store::Postgres(s) => s.list_quarantine().await,
        }
    }

    /// Takes quarantined message `id` out of quarantine.
    pub async fn retry(&self, id: i64) -> Result<bool, StateError> {
        match self {
            Store::Sqlite(s) => s.retry(id).await,
            Store::Postgres(s) => s.retry(id).await,
        }
    }

    /// Drops quarantined message `id` from the list.
    pub async fn forget(&self, id: i64, now: SystemTime) -> Result<bool, StateError> {
        match self {
            Store::Sqlite(s) => s.forget(id, now).await,
            Store::Postgres(s) => s.forget(id, now).await,
        }
    }
}

/// `self.method(args)` on whichever backend this is.
macro_rules! dispatch {
    ($self:ident . $method:ident ( $($arg:expr),* )) => {
        match $self {
            Store::Sqlite(s) => s.$method($($arg),*).await,
            Store::Postgres(s) => s.$method($($arg),*).await,
        }
    };
}

impl StateStore for Store {
    async fn ensure_writable(&self) -> Result<(), StateError> {
        dispatch!(self.ensure_writable())
    }

    async fn load_account(
        &self,
        account: &str,
    ) -> Result<HashMap<String, MessageState>, StateError> {
        dispatch!(self.load_account(account))
    }

    async fn begin_attempt(
        &self,
        account: &str,
        key: &str,
        now: SystemTime,
    ) -> Result<MessageState, StateError> {
        dispatch!(self.begin_attempt(account, key, now))
    }

    async fn record_failure(
        &self,
        account: &str,
        key: &str,
        retry_at: Option<SystemTime>,
        why: &str,
        uncount: bool,
    ) -> Result<(), StateError> {
        dispatch!(self.record_failure(account, key, retry_at, why, uncount))
    }

    async fn record_recipients(
        &self,
        account: &str,
        key: &str,
        dedup: Option<&str>,
        recipients: &[Recipient],
        settle: bool,
        now: SystemTime,
    ) -> Result<MessageState, StateError> {
        dispatch!(self.record_recipients(account, key, dedup, recipients, settle, now))
    }

    async fn account_known(&self, account: &str, mailbox: &str) -> Result<bool, StateError> {
        dispatch!(self.account_known(account, mailbox))
    }

    async fn initialize_account(
        &self,
        account: &str,
        mailbox: &str,
        skip: &[String],
        now: SystemTime,
    ) -> Result<(), StateError> {
        dispatch!(self.initialize_account(account, mailbox, skip, now))
    }

    async fn mark_deleted(
        &self,
        account: &str,
        keys: &[String],
        now: SystemTime,
    ) -> Result<(), StateError> {
        dispatch!(self.mark_deleted(account, keys, now))
    }

    async fn prune(&self, account: &str, present: &HashSet<String>) -> Result<usize, StateError> {
        dispatch!(self.prune(account, present))
    }

    async fn quarantine(
        &self,
        account: &str,
        key: &str,
        reason: &str,
        headline: &Headline,
        now: SystemTime,
    ) -> Result<Quarantined, StateError> {
        dispatch!(self.quarantine(account, key, reason, headline, now))
    }

    async fn quarantined(&self) -> Result<Vec<QuarantineEntry>, StateError> {
        self.list_quarantine().await
    }

    async fn delivered_before(
        &self,
        dedup: &str,
        recipients: &[String],
        since: SystemTime,
    ) -> Result<HashSet<String>, StateError> {
        dispatch!(self.delivered_before(dedup, recipients, since))
    }

    async fn forget_deliveries(&self, before: SystemTime) -> Result<usize, StateError> {
        dispatch!(self.forget_deliveries(before))
    }

    async fn mark_notified(&self, id: i64, now: SystemTime) -> Result<(), StateError> {
        dispatch!(self.mark_notified(id, now))
    }

    async fn claim(&self, account: &str, claim: Claim) -> Result<bool, StateError> {
        dispatch!(self.claim(account, claim))
    }

    async fn renew(&self, account: &str, ttl: Duration) -> Result<bool, StateError> {
        dispatch!(self.renew(account, ttl))
    }

    async fn release(&self, account: &str, done: PassDone) -> Result<(), StateError> {
        dispatch!(self.release(account, done))
    }

    async fn record_pass(&self, account: &str, pass: &PassEnded) -> Result<(), StateError> {
        dispatch!(self.record_pass(account, pass))
    }

    async fn sync(&self) -> Result<(), StateError> {
        dispatch!(self.sync())
    }
}
