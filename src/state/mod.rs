//! The state store: which UIDLs of which account reached which recipients. The only place
//! that touches the database.
//!
//! One SQLite file, `state_dir/state.sqlite3`, in WAL mode with `synchronous=FULL`: every
//! write is on disk when the call returns, so a crash at any instant loses nothing that was
//! recorded. rusqlite is synchronous; every call runs on tokio's blocking pool, one at a time
//! (the store is a shared connection behind a mutex, cheap to clone).

mod schema;

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use rusqlite::{Connection, OptionalExtension, params};

use crate::address::Address;

pub use schema::SCHEMA_VERSION;

/// The database file inside `state_dir`.
pub const DB_FILE: &str = "state.sqlite3";

/// How long a writer waits for a lock held by another connection (e.g. an operator's
/// `sqlite3` shell) before giving up.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// Why the state store failed.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// `state_dir` could not be created.
    #[error("cannot create the state directory {path}: {source}")]
    CreateDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The database file could not be opened or set up.
    #[error("cannot open the state database {path}: {source}")]
    Open {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },
    /// A pragma did not take the value it must have (e.g. WAL on a file system without it).
    #[error("the state database refused {pragma}: it reports {got:?}")]
    Pragma { pragma: &'static str, got: String },
    /// The database was written by a newer mailferry.
    #[error("the state database has schema version {found}; this build knows up to {supported}")]
    NewerSchema { found: i64, supported: i64 },
    /// A query failed.
    #[error("state database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// The blocking task running a query panicked or was cancelled.
    #[error("state database task failed: {0}")]
    Task(String),
}

/// What happened to one recipient of a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RecipientStatus {
    /// The internal server accepted it.
    Delivered,
    /// Refused for good (5xx); the postmaster got it instead.
    Rerouted,
    /// A temporary failure (4xx): retry later.
    Pending,
}

impl RecipientStatus {
    fn as_sql(self) -> &'static str {
        match self {
            RecipientStatus::Delivered => "delivered",
            RecipientStatus::Rerouted => "rerouted",
            RecipientStatus::Pending => "pending",
        }
    }

    /// Delivered or re-routed: nothing more will be done for this recipient.
    pub fn is_settled(self) -> bool {
        self != RecipientStatus::Pending
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
    /// Dedup keys ([`Address::dedup_key`]) of the recipients already settled: never send to
    /// these again.
    pub done: HashSet<String>,
}

impl MessageState {
    /// A message seen for the first time at `first_seen`, nothing done yet. Not stored: the
    /// first write about it ([`Store::record_recipients`], [`Store::seen`]) stores it.
    pub fn new(first_seen: SystemTime) -> MessageState {
        MessageState {
            first_seen,
            settled_at: None,
            deleted_at: None,
            done: HashSet::new(),
        }
    }
}

/// The state store: a cheap-to-clone handle on one SQLite connection.
#[derive(Clone, Debug)]
pub struct Store {
    conn: Arc<Mutex<Connection>>,
}

impl Store {
    /// Opens (creating it and its directory if needed) `state_dir/state.sqlite3`, sets the
    /// pragmas and brings the schema up to date.
    pub fn open(state_dir: &Path) -> Result<Store, StateError> {
        create_dir(state_dir)?;
        let path = state_dir.join(DB_FILE);
        let open_err = |source| StateError::Open {
            path: path.clone(),
            source,
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
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(open_err)?;
        conn.pragma_update(None, "foreign_keys", "ON")
            .map_err(open_err)?;
        schema::migrate(&mut conn)?;
        Ok(Store {
            conn: Arc::new(Mutex::new(conn)),
        })
    }

    /// Every known message of the account, by UIDL, in one query.
    pub async fn load_account(
        &self,
        account: &str,
    ) -> Result<HashMap<String, MessageState>, StateError> {
        let account = account.to_owned();
        self.run(move |conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT m.uidl, m.first_seen, m.settled_at, m.deleted_at, r.recipient
                 FROM messages m LEFT JOIN recipients r
                   ON r.account = m.account AND r.uidl = m.uidl
                  AND r.status IN ('delivered', 'rerouted')
                 WHERE m.account = ?1",
            )?;
            let mut rows = stmt.query(params![account])?;
            let mut out: HashMap<String, MessageState> = HashMap::new();
            while let Some(row) = rows.next()? {
                let uidl: String = row.get(0)?;
                let recipient: Option<String> = row.get(4)?;
                let state = match out.get_mut(&uidl) {
                    Some(state) => state,
                    None => out.entry(uidl).or_insert(MessageState {
                        first_seen: from_ms(row.get(1)?),
                        settled_at: row.get::<_, Option<i64>>(2)?.map(from_ms),
                        deleted_at: row.get::<_, Option<i64>>(3)?.map(from_ms),
                        done: HashSet::new(),
                    }),
                };
                state.done.extend(recipient);
            }
            Ok(out)
        })
        .await
    }

    /// Inserts the message if it is new (`first_seen = now`) and returns its state.
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

    /// Records the outcomes of the recipients of one message (upserts) in one transaction,
    /// durably (one fsync) before returning; with `settle`, the message is also marked settled
    /// in that transaction. A settled recipient stays settled: a later outcome for it is
    /// ignored.
    pub async fn record_recipients(
        &self,
        account: &str,
        uidl: &str,
        outcomes: &[(Address, RecipientStatus, String)],
        settle: bool,
        now: SystemTime,
    ) -> Result<(), StateError> {
        let (account, uidl) = (account.to_owned(), uidl.to_owned());
        let outcomes = outcomes.to_vec();
        self.run(move |conn| {
            let tx = conn.transaction()?;
            insert_message(&tx, &account, &uidl, now)?;
            {
                let mut stmt = tx.prepare_cached(
                    "INSERT INTO recipients
                       (account, uidl, recipient, address, status, detail, updated_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
                     ON CONFLICT (account, uidl, recipient) DO UPDATE SET
                       address = excluded.address, status = excluded.status,
                       detail = excluded.detail, updated_at = excluded.updated_at,
                       attempts = recipients.attempts + 1
                     WHERE recipients.status = 'pending'",
                )?;
                for (address, status, detail) in &outcomes {
                    stmt.execute(params![
                        account,
                        uidl,
                        address.dedup_key(),
                        address.as_str(),
                        status.as_sql(),
                        detail,
                        to_ms(now)
                    ])?;
                }
            }
            if settle {
                settle_message(&tx, &account, &uidl, now)?;
            }
            tx.commit()?;
            Ok(())
        })
        .await
    }

    /// Marks the message settled (every recipient delivered or re-routed); the first time
    /// counts.
    pub async fn mark_settled(
        &self,
        account: &str,
        uidl: &str,
        now: SystemTime,
    ) -> Result<(), StateError> {
        self.record_recipients(account, uidl, &[], true, now).await
    }

    /// Records that the upstream copies of these messages were deleted (unknown UIDLs are
    /// ignored).
    pub async fn mark_deleted(
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

    /// Forgets the settled messages of the account that are no longer upstream (not in
    /// `present`), with their recipients; returns how many. Unsettled messages are kept.
    pub async fn prune(
        &self,
        account: &str,
        present: &HashSet<String>,
    ) -> Result<usize, StateError> {
        let account = account.to_owned();
        let present = present.clone();
        self.run(move |conn| {
            let tx = conn.transaction()?;
            let gone: Vec<String> = {
                let mut stmt = tx.prepare_cached(
                    "SELECT uidl FROM messages WHERE account = ?1 AND settled_at IS NOT NULL",
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

    /// Runs `f` on the connection on tokio's blocking pool.
    async fn run<T, F>(&self, f: F) -> Result<T, StateError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T, StateError> + Send + 'static,
    {
        let conn = Arc::clone(&self.conn);
        tokio::task::spawn_blocking(move || {
            // A panic while holding the lock unwound through rusqlite's Transaction, which
            // rolls back on drop: the connection itself is still consistent.
            let mut conn = conn.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            f(&mut conn)
        })
        .await
        .map_err(|e| StateError::Task(e.to_string()))?
    }
}

fn create_dir(dir: &Path) -> Result<(), StateError> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir).map_err(|source| StateError::CreateDir {
        path: dir.to_owned(),
        source,
    })
}

fn insert_message(
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

fn settle_message(
    conn: &Connection,
    account: &str,
    uidl: &str,
    now: SystemTime,
) -> Result<(), StateError> {
    conn.prepare_cached(
        "UPDATE messages SET settled_at = COALESCE(settled_at, ?3)
         WHERE account = ?1 AND uidl = ?2",
    )?
    .execute(params![account, uidl, to_ms(now)])?;
    Ok(())
}

fn message_state(
    conn: &Connection,
    account: &str,
    uidl: &str,
) -> Result<Option<MessageState>, StateError> {
    let state = conn
        .prepare_cached(
            "SELECT first_seen, settled_at, deleted_at FROM messages
             WHERE account = ?1 AND uidl = ?2",
        )?
        .query_row(params![account, uidl], |row| {
            Ok(MessageState {
                first_seen: from_ms(row.get(0)?),
                settled_at: row.get::<_, Option<i64>>(1)?.map(from_ms),
                deleted_at: row.get::<_, Option<i64>>(2)?.map(from_ms),
                done: HashSet::new(),
            })
        })
        .optional()?;
    let Some(mut state) = state else {
        return Ok(None);
    };
    let mut stmt = conn.prepare_cached(
        "SELECT recipient FROM recipients
         WHERE account = ?1 AND uidl = ?2 AND status IN ('delivered', 'rerouted')",
    )?;
    for key in stmt.query_map(params![account, uidl], |row| row.get::<_, String>(0))? {
        state.done.insert(key?);
    }
    Ok(Some(state))
}

/// Unix milliseconds; a time before 1970 counts as 1970.
fn to_ms(t: SystemTime) -> i64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

fn from_ms(ms: i64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_millis(u64::try_from(ms).unwrap_or(0))
}

#[cfg(test)]
mod tests;
