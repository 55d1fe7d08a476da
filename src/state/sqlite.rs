//! The SQLite state store.
//!
//! One SQLite file, `state_dir/state.sqlite3`, in WAL mode with `synchronous=NORMAL`: every
//! write has reached the operating system when the call returns, so a crash of this process
//! at any instant loses nothing that was recorded; [`StateStore::sync`] (one fsync of the WAL)
//! makes it survive a crash of the machine too, before any upstream copy goes. An fsync per
//! commit made the time between the relay's acceptance and its record milliseconds long, and
//! a SIGKILL inside it costs a duplicate (tests/sigkill.rs). rusqlite is synchronous; every
//! call runs on tokio's blocking pool, one at a time (the store is a shared connection behind
//! a mutex, cheap to clone).

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use rusqlite::{Connection, params};
use tokio::sync::oneshot;

use super::{
    DB_FILE, Headline, MessageState, QuarantineEntry, Quarantined, StateError, StateStore,
    quarantine, schema,
};
use crate::recipient::Recipient;
use recipients::{
    MESSAGE_COLUMNS, Outcomes, message_row, message_state, stored_status, write_outcomes,
};

/// How long a writer waits for a lock held by another connection (e.g. an operator's
/// `sqlite3` shell) before giving up.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// The state store: a cheap-to-clone handle on one SQLite connection.
#[derive(Clone, Debug)]
pub struct SqliteStore {
    conn: Arc<Mutex<Connection>>,
    /// Outcomes waiting for their commit (group commit, see `commit_queued`).
    queued: Arc<Mutex<Queued>>,
    health: Arc<Health>,
    /// The connection's count of changed rows at the last [`StateStore::sync`]: nothing to
    /// sync while it is unchanged.
    synced: Arc<AtomicU64>,
    /// How many times the WAL was synced (tests).
    syncs: Arc<AtomicU64>,
    path: PathBuf,
    /// Device and inode of the database file as opened.
    file_id: (u64, u64),
}

/// Whether writes are going through, and what could not be written.
#[derive(Debug, Default)]
struct Health {
    /// Why the last write failed, until a write succeeds again.
    failed: Mutex<Option<String>>,
    /// Outcomes the relay reported that could not be written: kept here, counted as done, and
    /// written before anything else once the store takes writes again.
    unrecorded: Mutex<Vec<Outcomes>>,
}

impl SqliteStore {
    /// Opens (creating it and its directory if needed) `state_dir/state.sqlite3`, sets the
    /// pragmas and brings the schema up to date.
    pub fn open(state_dir: &Path) -> Result<SqliteStore, StateError> {
        create_dir(state_dir)?;
        let path = state_dir.join(DB_FILE);
        let open_err = |error| StateError::Open {
            path: path.clone(),
            error,
        };
        let mut conn = Connection::open(&path).map_err(open_err)?;
        conn.busy_timeout(BUSY_TIMEOUT).map_err(open_err)?;
        let mode: String = conn
            .pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0))
            .map_err(open_err)?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(StateError::Pragma {
                pragma: "journal_mode=WAL",
                got: mode,
            });
        }
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(open_err)?;
        // Checkpoints only in `sync`, between sessions: one inside a commit (every 1000 pages
        // by default) syncs both files while the outcomes behind it wait unrecorded.
        conn.pragma_update(None, "wal_autocheckpoint", 0)
            .map_err(open_err)?;
        conn.pragma_update(None, "foreign_keys", "ON")
            .map_err(open_err)?;
        schema::migrate(&mut conn)?;
        let file_id = file_id(&path).ok_or_else(|| StateError::Replaced { path: path.clone() })?;
        Ok(SqliteStore {
            conn: Arc::new(Mutex::new(conn)),
            queued: Arc::default(),
            health: Arc::default(),
            synced: Arc::default(),
            syncs: Arc::default(),
            path,
            file_id,
        })
    }

    /// Fails when the database file on disk is no longer the one this store opened (deleted,
    /// or replaced by another file): every write would be lost.
    pub fn check_file(&self) -> Result<(), StateError> {
        if file_id(&self.path) == Some(self.file_id) {
            Ok(())
        } else {
            Err(StateError::Replaced {
                path: self.path.clone(),
            })
        }
    }

    /// Whether the last write went through.
    pub fn is_writable(&self) -> bool {
        lock(&self.health.failed).is_none()
    }

    /// Notes a failed write: said once (not on every later failure), and the store is
    /// unwritable until [`SqliteStore::ensure_writable`] succeeds.
    fn failed(&self, e: &StateError) {
        let mut failed = lock(&self.health.failed);
        if failed.is_none() {
            tracing::error!("state store write failed, delivery stops until it can write: {e}");
            crate::metrics::set_store_writable(false);
            *failed = Some(e.to_string());
        }
    }

    /// What was delivered but could not be written counts as done all the same.
    fn merge_unrecorded(&self, account: &str, out: &mut HashMap<String, MessageState>) {
        for o in lock(&self.health.unrecorded)
            .iter()
            .filter(|o| o.account == account)
        {
            let state = out
                .entry(o.uidl.clone())
                .or_insert_with(|| MessageState::new(o.now));
            state.record(&o.recipients);
            if o.settle {
                state.settled_at.get_or_insert(o.now);
            }
        }
    }

    /// Inserts the message if it is new (`first_seen = now`) and returns its state.
    #[cfg(test)]
    pub async fn seen(
        &self,
        account: &str,
        uidl: &str,
        now: SystemTime,
    ) -> Result<MessageState, StateError> {
        let (account, uidl) = (account.to_owned(), uidl.to_owned());
        self.run(move |conn| {
            let tx = conn.transaction()?;
            insert_message(&tx, &account, &uidl, now)?;
            let state = message_state(&tx, &account, &uidl)?;
            tx.commit()?;
            state.ok_or(StateError::Sqlite(rusqlite::Error::QueryReturnedNoRows))
        })
        .await
    }

    /// Marks the message settled (every recipient delivered or re-routed); the first time
    /// counts.
    #[cfg(test)]
    pub async fn mark_settled(
        &self,
        account: &str,
        uidl: &str,
        now: SystemTime,
    ) -> Result<(), StateError> {
        self.record_recipients(account, uidl, None, &[], true, now)
            .await
            .map(drop)
    }

    /// Runs `f` on the connection on tokio's blocking pool; a failure marks the store
    /// unwritable (see [`SqliteStore::ensure_writable`]).
    pub(super) async fn run<T, F>(&self, f: F) -> Result<T, StateError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T, StateError> + Send + 'static,
    {
        let conn = Arc::clone(&self.conn);
        let result = tokio::task::spawn_blocking(move || {
            // A panic while holding the lock unwound through rusqlite's Transaction, which
            // rolls back on drop: the connection itself is still consistent.
            let mut conn = lock(&conn);
            f(&mut conn)
        })
        .await
        .map_err(|e| StateError::Task(e.to_string()))
        .and_then(|r| r);
        if let Err(e) = &result {
            self.failed(e);
        }
        result
    }
}

/// Outcomes waiting for the next commit, each with where its caller waits for its new state
/// (or why it could not be written).
type Queued = Vec<(Outcomes, oneshot::Sender<Result<MessageState, String>>)>;

/// Group commit: every outcome queued by the time the connection is free is written in one
/// transaction, however many messages finished together; each caller then
/// gets its own message's state. A call that finds the queue empty was committed by an
/// earlier one. All or none: one failed write fails the whole group (each caller keeps its
/// outcome in memory, as for any failed write).
fn commit_queued(conn: &mut Connection, queued: &Mutex<Queued>) -> Result<(), StateError> {
    let group = std::mem::take(&mut *lock(queued));
    if group.is_empty() {
        return Ok(());
    }
    let written = (|| {
        let tx = conn.transaction()?;
        let mut states = Vec::with_capacity(group.len());
        for (record, _) in &group {
            write_outcomes(&tx, record)?;
            let state = message_state(&tx, &record.account, &record.uidl)?;
            states.push(state.ok_or(StateError::Sqlite(rusqlite::Error::QueryReturnedNoRows))?);
        }
        tx.commit()?;
        Ok::<_, StateError>(states)
    })();
    match written {
        Ok(states) => {
            for ((_, done), state) in group.into_iter().zip(states) {
                let _ = done.send(Ok(state));
            }
            Ok(())
        }
        Err(e) => {
            for (_, done) in group {
                let _ = done.send(Err(e.to_string()));
            }
            Err(e)
        }
    }
}

impl StateStore for SqliteStore {
    /// Before a pass delivers anything: the file is still ours, and if a write failed
    /// earlier, the outcomes kept in memory are written now. `Err(Unwritable)` while the store
    /// still refuses writes: nothing may be delivered (it could not be recorded).
    async fn ensure_writable(&self) -> Result<(), StateError> {
        self.check_file()?;
        let reason = lock(&self.health.failed).clone();
        let Some(reason) = reason else {
            return Ok(());
        };
        let pending: Vec<Outcomes> = lock(&self.health.unrecorded).clone();
        let probe = self
            .run(move |conn| {
                let tx = conn.transaction()?;
                for o in &pending {
                    write_outcomes(&tx, o)?;
                }
                // A write even when nothing is pending: the store must take writes again.
                tx.execute_batch("PRAGMA user_version = user_version")?;
                tx.commit()?;
                Ok(pending.len())
            })
            .await;
        match probe {
            Ok(written) => {
                lock(&self.health.unrecorded).drain(..written);
                *lock(&self.health.failed) = None;
                crate::metrics::set_store_writable(true);
                tracing::info!("the state store takes writes again; delivery resumes");
                Ok(())
            }
            Err(StateError::Replaced { path }) => Err(StateError::Replaced { path }),
            Err(_) => Err(StateError::Unwritable { reason }),
        }
    }

    /// Every known message of the account, by UIDL, in one query.
    async fn load_account(
        &self,
        account: &str,
    ) -> Result<HashMap<String, MessageState>, StateError> {
        let account_name = account.to_owned();
        let account = account.to_owned();
        self.run(move |conn| {
            let mut stmt = conn.prepare_cached(&format!(
                "SELECT m.uidl, {MESSAGE_COLUMNS}, r.recipient, r.status, r.detail
                 FROM messages m LEFT JOIN recipients r
                   ON r.account = m.account AND r.uidl = m.uidl
                 WHERE m.account = ?1"
            ))?;
            let mut rows = stmt.query(params![account])?;
            let mut out: HashMap<String, MessageState> = HashMap::new();
            while let Some(row) = rows.next()? {
                let uidl: String = row.get(0)?;
                let recipient: Option<String> = row.get(6)?;
                let status = stored_status(row, 7)?;
                let state = match out.get_mut(&uidl) {
                    Some(state) => state,
                    None => out.entry(uidl).or_insert(message_row(row, 1)?),
                };
                if let (Some(recipient), Some(status)) = (recipient, status) {
                    state.recipients.insert(recipient, status);
                }
            }
            quarantine::load(conn, &account, &mut out)?;
            Ok(out)
        })
        .await
        .map(|mut out| {
            self.merge_unrecorded(&account_name, &mut out);
            out
        })
    }

    /// Before an attempt at a message: stores it if it is new (`first_seen = now`), counts
    /// the attempt, and returns its state. Written before anything is downloaded
    /// or sent: if the store cannot take this write, nothing is sent that it could not record;
    /// and a message that kills the process every time is still counted, and quarantined.
    async fn begin_attempt(
        &self,
        account: &str,
        uidl: &str,
        now: SystemTime,
    ) -> Result<MessageState, StateError> {
        self.check_file()?;
        let (account, uidl) = (account.to_owned(), uidl.to_owned());
        self.run(move |conn| {
            let tx = conn.transaction()?;
            insert_message(&tx, &account, &uidl, now)?;
            tx.prepare_cached(
                "UPDATE messages SET attempts = attempts + 1 WHERE account = ?1 AND uidl = ?2",
            )?
            .execute(params![account, uidl])?;
            let state = message_state(&tx, &account, &uidl)?;
            tx.commit()?;
            state.ok_or(StateError::Sqlite(rusqlite::Error::QueryReturnedNoRows))
        })
        .await
    }

    /// After an attempt that failed for a reason that may pass: not before `retry_at`, and
    /// why. With `uncount`, the attempt is not held against the message (the relay was down,
    /// the pass was stopped).
    async fn record_failure(
        &self,
        account: &str,
        uidl: &str,
        retry_at: Option<SystemTime>,
        why: &str,
        uncount: bool,
    ) -> Result<(), StateError> {
        let (account, uidl, why) = (account.to_owned(), uidl.to_owned(), why.to_owned());
        self.run(move |conn| {
            conn.prepare_cached(
                "UPDATE messages SET retry_at = ?3, last_error = ?4,
                       attempts = MAX(attempts - ?5, 0)
                     WHERE account = ?1 AND uidl = ?2",
            )?
            .execute(params![
                account,
                uidl,
                retry_at.map(to_ms),
                why,
                i64::from(uncount)
            ])?;
            Ok(())
        })
        .await
    }

    /// Records the outcomes of the recipients of one message (upserts) in one transaction,
    /// before returning; with `settle`, the message is also marked settled
    /// in that transaction. A settled recipient stays settled: a later outcome for it is
    /// ignored. If the write fails, the outcomes are kept in memory (and count as done) until
    /// [`SqliteStore::ensure_writable`] writes them.
    async fn record_recipients(
        &self,
        account: &str,
        uidl: &str,
        dedup: Option<&str>,
        recipients: &[Recipient],
        settle: bool,
        now: SystemTime,
    ) -> Result<MessageState, StateError> {
        let record = Outcomes {
            account: account.to_owned(),
            uidl: uidl.to_owned(),
            dedup: dedup.map(str::to_owned),
            recipients: recipients.to_vec(),
            settle,
            now,
        };
        let kept = record.clone();
        let (done, result) = oneshot::channel();
        lock(&self.queued).push((record, done));
        let queued = Arc::clone(&self.queued);
        // Its own failure reaches this caller through `result` as well.
        let _ = self.run(move |conn| commit_queued(conn, &queued)).await;
        let result = match result.await {
            Ok(written) => written.map_err(|reason| StateError::Unwritable { reason }),
            Err(_) => Err(StateError::Task("the commit was abandoned".to_owned())),
        };
        if result.is_err() {
            lock(&self.health.unrecorded).push(kept);
        }
        result
    }

    async fn account_known(&self, account: &str, mailbox: &str) -> Result<bool, StateError> {
        self.follow_account(account, mailbox).await
    }

    async fn initialize_account(
        &self,
        account: &str,
        mailbox: &str,
        skip: &[String],
        now: SystemTime,
    ) -> Result<(), StateError> {
        self.add_account(account, mailbox, skip, now).await
    }

    /// Records that the upstream copies of these messages were deleted (unknown UIDLs are
    /// ignored).
    async fn mark_deleted(
        &self,
        account: &str,
        uidls: &[String],
        now: SystemTime,
    ) -> Result<(), StateError> {
        let account = account.to_owned();
        let uidls = uidls.to_vec();
        self.run(move |conn| {
            let tx = conn.transaction()?;
            {
                let mut stmt = tx.prepare_cached(
                    "UPDATE messages SET deleted_at = COALESCE(deleted_at, ?3)
                     WHERE account = ?1 AND uidl = ?2",
                )?;
                for uidl in &uidls {
                    stmt.execute(params![account, uidl, to_ms(now)])?;
                }
            }
            tx.commit()?;
            Ok(())
        })
        .await
    }

    /// Forgets the settled and the quarantined messages of the account that are no longer
    /// upstream (not in `present`), with their recipients; returns how many. Other unsettled
    /// messages are kept (a listing that misses one for a moment must not lose its recipients).
    async fn prune(&self, account: &str, present: &HashSet<String>) -> Result<usize, StateError> {
        let account = account.to_owned();
        let present = present.clone();
        self.run(move |conn| {
            let tx = conn.transaction()?;
            let gone: Vec<String> = {
                let mut stmt = tx.prepare_cached(
                    "SELECT uidl FROM messages m WHERE account = ?1 AND (settled_at IS NOT NULL
                       OR EXISTS (SELECT 1 FROM quarantine q
                                  WHERE q.account = m.account AND q.uidl = m.uidl))",
                )?;
                let uidls = stmt.query_map(params![account], |row| row.get::<_, String>(0))?;
                let mut gone = Vec::new();
                for uidl in uidls {
                    let uidl = uidl?;
                    if !present.contains(&uidl) {
                        gone.push(uidl);
                    }
                }
                gone
            };
            {
                let mut stmt =
                    tx.prepare_cached("DELETE FROM messages WHERE account = ?1 AND uidl = ?2")?;
                for uidl in &gone {
                    stmt.execute(params![account, uidl])?;
                }
            }
            tx.commit()?;
            Ok(gone.len())
        })
        .await
    }

    async fn quarantine(
        &self,
        account: &str,
        uidl: &str,
        reason: &str,
        headline: &Headline,
        now: SystemTime,
    ) -> Result<Quarantined, StateError> {
        self.add_quarantine(account, uidl, reason, headline, now)
            .await
    }

    async fn quarantined(&self) -> Result<Vec<QuarantineEntry>, StateError> {
        self.list_quarantine().await
    }

    async fn mark_notified(&self, id: i64, now: SystemTime) -> Result<(), StateError> {
        self.set_notified(id, now).await
    }

    async fn delivered_before(
        &self,
        dedup: &str,
        recipients: &[String],
        since: SystemTime,
    ) -> Result<HashSet<String>, StateError> {
        self.got_before(dedup, recipients, since).await
    }

    async fn forget_deliveries(&self, before: SystemTime) -> Result<usize, StateError> {
        self.forget_got(before).await
    }

    /// One fsync of the WAL file, where every commit since the last checkpoint lies (a
    /// checkpoint under `synchronous=NORMAL` syncs the database file itself); skipped when
    /// nothing was written since the last one. The file is synced through a descriptor of our
    /// own: Linux syncs the file, not the descriptor, and rusqlite does not lend SQLite's.
    async fn sync(&self) -> Result<(), StateError> {
        let (synced, syncs) = (Arc::clone(&self.synced), Arc::clone(&self.syncs));
        let wal = wal_path(&self.path);
        self.run(move |conn| {
            let changes = conn.total_changes();
            if synced.load(Ordering::Relaxed) == changes {
                return Ok(());
            }
            let written = match std::fs::File::open(&wal) {
                Ok(file) => file.sync_data(),
                // No WAL: everything is in the database file, synced by the checkpoint.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                Err(e) => Err(e),
            };
            written.map_err(|error| StateError::Sync { path: wal, error })?;
            synced.store(changes, Ordering::Relaxed);
            syncs.fetch_add(1, Ordering::Relaxed);
            // What the log holds goes into the database file, so that the log stays small
            // (PASSIVE: what a reader still needs is left for next time).
            conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()))?;
            Ok(())
        })
        .await
    }

    async fn record_pass(&self, account: &str, pass: &super::PassEnded) -> Result<(), StateError> {
        self.write_pass(account, pass).await
    }
}

pub(crate) fn create_dir(dir: &Path) -> Result<(), StateError> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir).map_err(|error| StateError::CreateDir {
        path: dir.to_owned(),
        error,
    })
}

/// The mutex's value; a panic while it was held left nothing half-done in these values.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// SQLite's write-ahead log beside the database file.
fn wal_path(db: &Path) -> PathBuf {
    let mut wal = db.as_os_str().to_owned();
    wal.push("-wal");
    PathBuf::from(wal)
}

/// Device and inode of `path`, if it exists.
fn file_id(path: &Path) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino()))
}

pub(super) fn insert_message(
    conn: &Connection,
    account: &str,
    uidl: &str,
    now: SystemTime,
) -> Result<(), StateError> {
    conn.prepare_cached(
        "INSERT INTO messages (account, uidl, first_seen) VALUES (?1, ?2, ?3)
         ON CONFLICT (account, uidl) DO NOTHING",
    )?
    .execute(params![account, uidl, to_ms(now)])?;
    Ok(())
}

pub(super) fn settle_message(
    conn: &Connection,
    account: &str,
    uidl: &str,
    now: SystemTime,
) -> Result<(), StateError> {
    conn.prepare_cached(
        "UPDATE messages SET settled_at = COALESCE(settled_at, ?3), retry_at = NULL
         WHERE account = ?1 AND uidl = ?2",
    )?
    .execute(params![account, uidl, to_ms(now)])?;
    Ok(())
}

/// Unix milliseconds; a time before 1970 counts as 1970.
pub(super) fn to_ms(t: SystemTime) -> i64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

pub(super) fn from_ms(ms: i64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_millis(u64::try_from(ms).unwrap_or(0))
}

mod accounts;
mod passes;
pub(crate) use passes::summaries;
mod recipients;
#[cfg(test)]
mod tests;
