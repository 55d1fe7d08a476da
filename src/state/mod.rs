//! The state store: which messages of which account reached which recipients, attempts and
//! back-off, quarantine. [`StateStore`] is the seam the pipeline writes through; SQLite
//! (`sqlite.rs`; each recipient's [`Status`] in `sqlite/recipients.rs`, the default) and
//! PostgreSQL (`postgres.rs`, for several instances: account leases fence every write)
//! implement it, and so does the in-memory store of the tests (`memory.rs`). [`Store`] is the
//! one the configuration chooses (`store.rs`).

mod lock;
#[cfg(test)]
pub mod memory;
mod postgres;
mod quarantine;
mod schema;
mod sqlite;
pub mod status;
mod store;

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use crate::address::Address;
use crate::recipient::{Recipient, Status};

pub use lock::{LOCK_FILE, StateLock, holder_of, holder_seen};
pub use postgres::{PG_SCHEMA_VERSION, PgStore, SharedAccount, instance_id};
pub use quarantine::{Headline, QuarantineEntry, Quarantined};
pub use schema::SCHEMA_VERSION;
pub use sqlite::SqliteStore;
pub(crate) use sqlite::create_dir;
pub use store::Store;

/// The database file inside `state_dir`.
pub const DB_FILE: &str = "state.sqlite3";

/// Why the state store failed. Each message names its cause, and no variant exposes that
/// cause again as its [`source`](std::error::Error::source): whatever prints the chain
/// says it once.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// `state_dir` could not be created.
    #[error("cannot create the state directory {path}: {error}")]
    CreateDir {
        /// The file or directory.
        path: PathBuf,
        /// What the operating system said.
        error: std::io::Error,
    },
    /// The database file could not be opened or set up.
    #[error("cannot open the state database {path}: {error}")]
    Open {
        /// The file or directory.
        path: PathBuf,
        /// What SQLite said.
        error: rusqlite::Error,
    },
    /// A pragma did not take the value it must have (e.g. WAL on a file system without it).
    #[error("the state database refused {pragma}: it reports {got:?}")]
    Pragma {
        /// The pragma.
        pragma: &'static str,
        /// The value it reports instead.
        got: String,
    },
    /// The database was written by a newer mailferry.
    #[error("the state database has schema version {found}; this build knows up to {supported}")]
    NewerSchema {
        /// The database's schema version.
        found: i64,
        /// The newest this build knows.
        supported: i64,
    },
    /// A query failed.
    #[error("state database error: {0}")]
    Sqlite(rusqlite::Error),
    /// The blocking task running a query panicked or was cancelled.
    #[error("state database task failed: {0}")]
    Task(String),
    /// The lock file could not be opened or written.
    #[error("cannot lock the state directory with {path}: {error}")]
    Lock {
        /// The file or directory.
        path: PathBuf,
        /// What the operating system said.
        error: std::io::Error,
    },
    /// Another process holds the lock on the state directory.
    #[error(
        "the state directory {dir} is in use by another mailferry (PID {holder}); one process per state_dir"
    )]
    Locked {
        /// `state_dir`.
        dir: PathBuf,
        /// The PID in the lock file.
        holder: String,
    },
    /// What was written could not be made to survive a crash of the machine.
    #[error("cannot sync {path} to disk: {error}")]
    Sync {
        /// The file being synced.
        path: PathBuf,
        /// What the operating system said.
        error: std::io::Error,
    },
    /// The database file was deleted or replaced while open: writes would go nowhere.
    #[error("the state database {path} was deleted or replaced while mailferry had it open")]
    Replaced {
        /// The database file.
        path: PathBuf,
    },
    /// The PostgreSQL configuration could not be used (no part of the URL is shown: it holds
    /// the password).
    #[error("{0}")]
    PgConfig(String),
    /// No connection to PostgreSQL could be had.
    #[error("{0}")]
    Pool(String),
    /// A PostgreSQL query failed (with the server's own message: tokio-postgres's error
    /// alone says only "db error").
    #[error("PostgreSQL: {}", postgres::describe(.0))]
    Postgres(tokio_postgres::Error),
    /// This instance no longer holds the account's lease (it expired, and another instance
    /// may have taken it over): nothing more is written or deleted for the account.
    #[error("the lease on account {account} was lost; this instance stops its pass")]
    LeaseLost {
        /// The account.
        account: String,
    },
    /// Another instance holds the account's lease (`poll-once` beside running daemons).
    #[error("account {account} is being polled by another instance")]
    Held {
        /// The account.
        account: String,
    },
    /// An earlier write failed and the store still cannot be written: nothing is delivered
    /// until it can (what was delivered could not be recorded, and would be sent again).
    #[error("the state store cannot be written ({reason}); not delivering until it can")]
    Unwritable {
        /// The first write error.
        reason: String,
    },
}

impl From<rusqlite::Error> for StateError {
    fn from(e: rusqlite::Error) -> StateError {
        StateError::Sqlite(e)
    }
}

impl From<tokio_postgres::Error> for StateError {
    fn from(e: tokio_postgres::Error) -> StateError {
        StateError::Postgres(e)
    }
}

impl StateError {
    /// Whether the daemon must stop: the database it writes is no longer the one on disk.
    pub fn is_fatal(&self) -> bool {
        matches!(self, StateError::Replaced { .. })
    }
}

/// What the store knows about one upstream message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageState {
    /// When mailferry first saw the message upstream (retention counts from here).
    pub first_seen: SystemTime,
    /// When every recipient was settled (delivered or re-routed).
    pub settled_at: Option<SystemTime>,
    /// When the upstream copy was deleted.
    pub deleted_at: Option<SystemTime>,
    /// Where each recipient recorded for it stands, by [`Address::dedup_key`]: a settled
    /// one is never sent to again.
    pub recipients: HashMap<String, Status>,
    /// Attempts at the message so far, counted before each one starts (a message that crashes
    /// the process is counted too).
    pub attempts: u32,
    /// Not to be tried again before this time (after a failure that may pass).
    pub retry_at: Option<SystemTime>,
    /// Set when the message is quarantined: left upstream and no longer tried.
    pub quarantine: Option<Quarantined>,
}

impl MessageState {
    /// A message seen for the first time at `first_seen`, nothing done yet. Not stored: the
    /// first write about it ([`StateStore::begin_attempt`], [`StateStore::record_recipients`])
    /// stores it.
    pub fn new(first_seen: SystemTime) -> MessageState {
        MessageState {
            first_seen,
            settled_at: None,
            deleted_at: None,
            recipients: HashMap::new(),
            attempts: 0,
            retry_at: None,
            quarantine: None,
        }
    }

    /// Where `address` stands for this message, if anything was recorded for it.
    pub fn status_of(&self, address: &Address) -> Option<&Status> {
        self.recipients.get(&address.dedup_key())
    }

    /// The dedup keys of the recipients settled for this message.
    pub fn settled_recipients(&self) -> HashSet<String> {
        (self.recipients.iter())
            .filter(|(_, status)| status.is_settled())
            .map(|(key, _)| key.clone())
            .collect()
    }

    /// Takes in what was recorded for these recipients: a settled recipient stays settled
    /// (a later reply for it is ignored), and nothing is known of a pending one.
    pub(crate) fn record(&mut self, recipients: &[Recipient]) {
        for r in recipients.iter().filter(|r| r.status != Status::Pending) {
            let key = r.address.dedup_key();
            if !self.recipients.get(&key).is_some_and(Status::is_settled) {
                self.recipients.insert(key, r.status.clone());
            }
        }
    }
}

/// How a pass asks for an account's lease ([`StateStore::claim`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Claim {
    /// How long the lease lasts unless renewed (`lease_ttl`).
    pub ttl: Duration,
    /// The account's `poll_interval`: it is due again this long after the claim.
    pub interval: Duration,
    /// Only if the account is due (the daemon); `poll-once` takes any free lease.
    pub due_only: bool,
}

/// How a pass ended, recorded when its lease is released (for `mailferry status`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PassDone {
    /// Why it failed, if it did.
    pub error: Option<String>,
    /// Messages left upstream undelivered (failed, waiting for a retry, or deferred).
    pub waiting: usize,
}

/// How a pass ended, as its poller saw it: written once per pass for `mailferry status`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PassEnded {
    /// When it ended.
    pub at: SystemTime,
    /// Why it failed, if it did.
    pub error: Option<String>,
    /// When this process means to poll the account next (`None`: it does not: `poll-once`).
    pub next_at: Option<SystemTime>,
    /// The next pass waits longer than `poll_interval`: logins refused or passes failing.
    pub backing_off: bool,
}

/// What the pipeline asks of a state store. Every write survives a crash of this process when
/// its future resolves, and a crash of the machine once [`StateStore::sync`] has returned;
/// a message is keyed by (account name, message key: UIDL, or UIDVALIDITY and UID).
pub trait StateStore: Clone + Send + Sync + 'static {
    /// Before a pass delivers anything: the store is still the one opened, and if a write
    /// failed earlier, what was kept in memory is written now. `Err(Unwritable)` while the
    /// store still refuses writes: nothing may be delivered (it could not be recorded).
    fn ensure_writable(&self) -> impl Future<Output = Result<(), StateError>> + Send;

    /// Every known message of the account, by key.
    fn load_account(
        &self,
        account: &str,
    ) -> impl Future<Output = Result<HashMap<String, MessageState>, StateError>> + Send;

    /// Before an attempt at a message: stores it if it is new (`first_seen = now`), counts
    /// the attempt, and returns its state. Written before anything is downloaded or sent.
    fn begin_attempt(
        &self,
        account: &str,
        key: &str,
        now: SystemTime,
    ) -> impl Future<Output = Result<MessageState, StateError>> + Send;

    /// After an attempt that failed for a reason that may pass: not before `retry_at`, and
    /// why. With `uncount`, the attempt is not held against the message.
    fn record_failure(
        &self,
        account: &str,
        key: &str,
        retry_at: Option<SystemTime>,
        why: &str,
        uncount: bool,
    ) -> impl Future<Output = Result<(), StateError>> + Send;

    /// Records where recipients of one message stand, in one transaction; with `settle`,
    /// the message is settled in it too. A settled recipient stays settled, and a pending one
    /// ([`Status::Pending`]: nothing known) is not written; with `dedup` (the message's
    /// [`dedup id`](crate::pipeline::dedup_id)), a settled one is remembered as having got
    /// that message, in the same transaction. Returns the message's state as it now stands.
    #[allow(clippy::too_many_arguments)]
    fn record_recipients(
        &self,
        account: &str,
        key: &str,
        dedup: Option<&str>,
        recipients: &[Recipient],
        settle: bool,
        now: SystemTime,
    ) -> impl Future<Output = Result<MessageState, StateError>> + Send;

    /// Whether this account was ever polled with this store, and notes the mailbox it
    /// collects (`AccountConfig::mailbox_id`). An account not known by its name whose
    /// mailbox is known under another name was renamed: its state is moved to the new name
    /// (the configuration never has two accounts on one mailbox), and it is known.
    fn account_known(
        &self,
        account: &str,
        mailbox: &str,
    ) -> impl Future<Output = Result<bool, StateError>> + Send;

    /// Records that the account (collecting `mailbox`) has been seen; the messages in `skip`
    /// are stored as settled without any recipient (`initial: skip_existing`).
    fn initialize_account(
        &self,
        account: &str,
        mailbox: &str,
        skip: &[String],
        now: SystemTime,
    ) -> impl Future<Output = Result<(), StateError>> + Send;

    /// Records that the upstream copies of these messages were deleted.
    fn mark_deleted(
        &self,
        account: &str,
        keys: &[String],
        now: SystemTime,
    ) -> impl Future<Output = Result<(), StateError>> + Send;

    /// Forgets the settled and quarantined messages no longer upstream (not in `present`);
    /// returns how many.
    fn prune(
        &self,
        account: &str,
        present: &HashSet<String>,
    ) -> impl Future<Output = Result<usize, StateError>> + Send;

    /// Quarantines the message (storing it if new), with its `headline` when it was read; a
    /// message already quarantined keeps its first reason, headline and id.
    fn quarantine(
        &self,
        account: &str,
        key: &str,
        reason: &str,
        headline: &Headline,
        now: SystemTime,
    ) -> impl Future<Output = Result<Quarantined, StateError>> + Send;

    /// The quarantined messages not forgotten, oldest first (`mailferry state list`, the
    /// status page).
    fn quarantined(&self) -> impl Future<Output = Result<Vec<QuarantineEntry>, StateError>> + Send;

    /// Of `recipients` (dedup keys), those recorded as having got the message `dedup` at or
    /// after `since`, in any account.
    fn delivered_before(
        &self,
        dedup: &str,
        recipients: &[String],
        since: SystemTime,
    ) -> impl Future<Output = Result<HashSet<String>, StateError>> + Send;

    /// Forgets who got which message before `before` (the end of `dedup_window`).
    fn forget_deliveries(
        &self,
        before: SystemTime,
    ) -> impl Future<Output = Result<usize, StateError>> + Send;

    /// The postmaster has been told about quarantine `id`.
    fn mark_notified(
        &self,
        id: i64,
        now: SystemTime,
    ) -> impl Future<Output = Result<(), StateError>> + Send;

    /// Before a pass: takes the account's lease; false when another instance holds it or
    /// (`due_only`) the account is not due. A store of one process (SQLite, whose lock on
    /// `state_dir` already makes this the only owner; memory) always grants it.
    fn claim(
        &self,
        _account: &str,
        _claim: Claim,
    ) -> impl Future<Output = Result<bool, StateError>> + Send {
        async { Ok(true) }
    }

    /// During a pass (every `ttl / 3`) and before anything is deleted upstream: extends the
    /// lease by `ttl`; false when it was lost (the pass must stop, deleting nothing).
    fn renew(
        &self,
        _account: &str,
        _ttl: Duration,
    ) -> impl Future<Output = Result<bool, StateError>> + Send {
        async { Ok(true) }
    }

    /// After a pass: gives the lease up, noting how the pass went.
    fn release(
        &self,
        _account: &str,
        _done: PassDone,
    ) -> impl Future<Output = Result<(), StateError>> + Send {
        async { Ok(()) }
    }

    /// Makes every write so far survive a crash of the machine, not only of this process:
    /// at the end of a session, before its deletions are committed upstream. SQLite and
    /// PostgreSQL record outcomes without waiting for the disk, so that a crash right after
    /// the relay's acceptance finds them recorded; the memory store has nothing to do.
    fn sync(&self) -> impl Future<Output = Result<(), StateError>> + Send {
        async { Ok(()) }
    }

    /// After a pass, from its poller: how it ended and when the next is due, for
    /// `mailferry status` (at most one cheap write; PostgreSQL's release already noted the
    /// rest, and it writes only a back-off, which then holds for every instance).
    fn record_pass(
        &self,
        _account: &str,
        _pass: &PassEnded,
    ) -> impl Future<Output = Result<(), StateError>> + Send {
        async { Ok(()) }
    }
}
