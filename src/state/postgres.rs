//! The PostgreSQL state store: one database shared by several instances.
//!
//! The same tables and rules as SQLite (`postgres/schema.rs`), plus the leases
//! (`postgres/lease.rs`): an instance writes about an account only while it holds that
//! account's lease, and every write checks the lease (holder and generation) in the same
//! transaction, `FOR SHARE` so that a takeover waits for a write in flight and the write after
//! it fails. The connection URL holds a password: it never reaches a log or an error.
//!
//! Over 600 lines on purpose: one `StateStore` implementation whose methods answer
//! `sqlite.rs`'s one for one, easier to compare side by side than spread over files.

mod lease;
mod passes;
mod schema;
mod shared;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use deadpool_postgres::{GenericClient, Manager, ManagerConfig, Pool, RecyclingMethod};
use tokio_postgres::NoTls;
use tokio_postgres::types::ToSql;

use super::sqlite::{from_ms, to_ms};
use super::{Headline, MessageState, QuarantineEntry, Quarantined, StateError, StateStore};
use crate::recipient::{Recipient, Status};

pub use schema::PG_SCHEMA_VERSION;
pub use shared::SharedAccount;

/// Connections per instance: concurrent passes share them.
const POOL_SIZE: usize = 8;

/// The PostgreSQL store: a cheap-to-clone handle on a connection pool and on the leases
/// this instance holds.
#[derive(Clone)]
pub struct PgStore {
    pool: Pool,
    /// Account → the generation of the lease this instance holds on it.
    leases: Arc<Mutex<HashMap<String, i64>>>,
    /// `hostname:pid`: who holds a lease, in the table and in `mailferry status`.
    instance: Arc<str>,
}

impl std::fmt::Debug for PgStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgStore")
            .field("instance", &self.instance)
            .finish_non_exhaustive()
    }
}

impl PgStore {
    /// Connects to the database at `url` (a `postgres://` URL or a libpq key=value string)
    /// and brings the schema up to date. No error names the URL: it holds the password.
    pub async fn open(url: &str) -> Result<PgStore, StateError> {
        let store = PgStore::connect(url)?;
        let mut client = store.client().await?;
        schema::migrate(&mut client).await?;
        Ok(store)
    }

    /// A pool on the database at `url`, connecting when first used; the schema as it is
    /// (for `mailferry status`, which writes nothing).
    pub fn connect(url: &str) -> Result<PgStore, StateError> {
        let config: tokio_postgres::Config = url.parse().map_err(|_| {
            StateError::PgConfig(
                "state.postgres: the URL is not a valid postgres:// URL or key=value string".into(),
            )
        })?;
        let manager = Manager::from_config(
            config,
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(POOL_SIZE)
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .build()
            .map_err(|e| StateError::PgConfig(e.to_string()))?;
        Ok(PgStore {
            pool,
            leases: Arc::default(),
            instance: instance_id().into(),
        })
    }

    /// `hostname:pid` of this process.
    pub fn instance(&self) -> &str {
        &self.instance
    }

    async fn client(&self) -> Result<deadpool_postgres::Object, StateError> {
        self.pool
            .get()
            .await
            .map_err(|e| StateError::Pool(pool_error(e)))
    }

    /// The generation of the lease this instance holds on `account`.
    fn token(&self, account: &str) -> Result<i64, StateError> {
        lock(&self.leases)
            .get(account)
            .copied()
            .ok_or_else(|| StateError::LeaseLost {
                account: account.to_owned(),
            })
    }

    /// Inside a write's transaction: the lease on `account` is still ours and unexpired,
    /// held `FOR SHARE` until the commit (a takeover waits for it, and this write fails after
    /// one).
    async fn fence(&self, tx: &impl GenericClient, account: &str) -> Result<(), StateError> {
        let generation = self.token(account)?;
        let held = tx
            .query_opt(
                "SELECT 1 FROM leases WHERE account = $1 AND holder = $2 AND generation = $3
                   AND expires_at > now() FOR SHARE",
                &[&account, &&*self.instance, &generation],
            )
            .await?;
        match held {
            Some(_) => Ok(()),
            None => {
                lock(&self.leases).remove(account);
                Err(StateError::LeaseLost {
                    account: account.to_owned(),
                })
            }
        }
    }

    /// The quarantined messages not forgotten, oldest first.
    pub async fn list_quarantine(&self) -> Result<Vec<QuarantineEntry>, StateError> {
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT q.id, q.account, q.uidl, q.since, q.reason, m.attempts, q.notified_at,
                        q.subject, q.sender, q.message_id
                 FROM quarantine q JOIN messages m ON m.account = q.account AND m.uidl = q.uidl
                 WHERE q.forgotten_at IS NULL ORDER BY q.id",
                &[],
            )
            .await?;
        Ok(rows
            .iter()
            .map(|row| QuarantineEntry {
                id: row.get(0),
                account: row.get(1),
                uidl: row.get(2),
                since: from_ms(row.get(3)),
                reason: row.get(4),
                attempts: attempts(row.get(5)),
                notified: row.get::<_, Option<i64>>(6).is_some(),
                headline: Headline {
                    subject: row.get(7),
                    from: row.get(8),
                    message_id: row.get(9),
                },
            })
            .collect())
    }

    /// Takes quarantined message `id` out of quarantine (an operator's act: not fenced).
    pub async fn retry(&self, id: i64) -> Result<bool, StateError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let changed = tx
            .execute(
                "UPDATE messages SET attempts = 0, retry_at = NULL, last_error = NULL
                 WHERE (account, uidl) IN (SELECT account, uidl FROM quarantine WHERE id = $1)",
                &[&id],
            )
            .await?;
        tx.execute("DELETE FROM quarantine WHERE id = $1", &[&id])
            .await?;
        tx.commit().await?;
        Ok(changed > 0)
    }

    /// Drops quarantined message `id` from the list (an operator's act: not fenced).
    pub async fn forget(&self, id: i64, now: SystemTime) -> Result<bool, StateError> {
        let client = self.client().await?;
        let changed = client
            .execute(
                "UPDATE quarantine SET forgotten_at = $2 WHERE id = $1 AND forgotten_at IS NULL",
                &[&id, &to_ms(now)],
            )
            .await?;
        Ok(changed > 0)
    }
}

impl StateStore for PgStore {
    async fn ensure_writable(&self) -> Result<(), StateError> {
        let client = self.client().await?;
        client.execute("SELECT 1", &[]).await?;
        Ok(())
    }

    async fn load_account(
        &self,
        account: &str,
    ) -> Result<HashMap<String, MessageState>, StateError> {
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT m.uidl, m.first_seen, m.settled_at, m.deleted_at, m.attempts, m.retry_at,
                        r.recipient, r.status, r.detail,
                        q.id, q.reason, q.notified_at, q.forgotten_at
                 FROM messages m
                 LEFT JOIN recipients r ON r.account = m.account AND r.uidl = m.uidl
                 LEFT JOIN quarantine q ON q.account = m.account AND q.uidl = m.uidl
                 WHERE m.account = $1",
                &[&account],
            )
            .await?;
        let mut out: HashMap<String, MessageState> = HashMap::new();
        for row in &rows {
            let uidl: String = row.get(0);
            let state = out.entry(uidl).or_insert_with(|| message_row(row, 1));
            if let (Some(recipient), Some(status)) = (
                row.get::<_, Option<String>>(6),
                row.get::<_, Option<String>>(7),
            ) {
                let detail: Option<String> = row.get(8);
                state.recipients.insert(
                    recipient,
                    Status::from_stored(&status, detail.as_deref().unwrap_or("")),
                );
            }
            if let Some(id) = row.get::<_, Option<i64>>(9) {
                state.quarantine = Some(Quarantined {
                    id,
                    reason: row.get(10),
                    notified: row.get::<_, Option<i64>>(11).is_some(),
                    forgotten: row.get::<_, Option<i64>>(12).is_some(),
                });
            }
        }
        Ok(out)
    }

    async fn begin_attempt(
        &self,
        account: &str,
        uidl: &str,
        now: SystemTime,
    ) -> Result<MessageState, StateError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        self.fence(&tx, account).await?;
        insert_message(&tx, account, uidl, now).await?;
        tx.execute(
            "UPDATE messages SET attempts = attempts + 1 WHERE account = $1 AND uidl = $2",
            &[&account, &uidl],
        )
        .await?;
        let state = message_state(&tx, account, uidl).await?;
        tx.commit().await?;
        Ok(state)
    }

    async fn record_failure(
        &self,
        account: &str,
        uidl: &str,
        retry_at: Option<SystemTime>,
        why: &str,
        uncount: bool,
    ) -> Result<(), StateError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        self.fence(&tx, account).await?;
        tx.execute(
            "UPDATE messages SET retry_at = $3, last_error = $4,
                   attempts = GREATEST(attempts - $5, 0)
             WHERE account = $1 AND uidl = $2",
            &[
                &account,
                &uidl,
                &retry_at.map(to_ms),
                &why,
                &i32::from(uncount),
            ],
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn record_recipients(
        &self,
        account: &str,
        uidl: &str,
        dedup: Option<&str>,
        recipients: &[Recipient],
        settle: bool,
        now: SystemTime,
    ) -> Result<MessageState, StateError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        // The commit returns once PostgreSQL has it, without waiting for its WAL to reach
        // the disk: a crash of this process right after the relay's acceptance finds it
        // recorded sooner (a kill in between sends the message again). `sync` makes it
        // durable before the session deletes anything upstream.
        tx.batch_execute("SET LOCAL synchronous_commit TO off")
            .await?;
        self.fence(&tx, account).await?;
        insert_message(&tx, account, uidl, now).await?;
        let upsert = tx
            .prepare_cached(
                "INSERT INTO recipients
                   (account, uidl, recipient, address, status, detail, updated_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7)
                 ON CONFLICT (account, uidl, recipient) DO UPDATE SET
                   address = excluded.address, status = excluded.status,
                   detail = excluded.detail, updated_at = excluded.updated_at,
                   attempts = recipients.attempts + 1
                 WHERE recipients.status = 'pending'",
            )
            .await?;
        for r in recipients {
            // Pending: nothing known that could be recorded.
            let Some((status, detail)) = r.status.to_stored() else {
                continue;
            };
            let key = r.address.dedup_key();
            let params: [&(dyn ToSql + Sync); 7] = [
                &account,
                &uidl,
                &key,
                &r.address.as_str(),
                &status,
                &detail,
                &to_ms(now),
            ];
            tx.execute(&upsert, &params).await?;
        }
        if let Some(dedup) = dedup {
            for r in recipients.iter().filter(|r| r.status.is_settled()) {
                tx.execute(
                    "INSERT INTO deliveries (dedup_id, recipient, at) VALUES ($1, $2, $3)
                     ON CONFLICT (dedup_id, recipient) DO UPDATE SET at = excluded.at",
                    &[&dedup, &r.address.dedup_key(), &to_ms(now)],
                )
                .await?;
            }
        }
        if settle {
            settle_message(&tx, account, uidl, now).await?;
        }
        let state = message_state(&tx, account, uidl).await?;
        tx.commit().await?;
        Ok(state)
    }

    async fn account_known(&self, account: &str, mailbox: &str) -> Result<bool, StateError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        self.fence(&tx, account).await?;
        let known = tx
            .execute(
                "UPDATE accounts SET mailbox = $2 WHERE account = $1",
                &[&account, &mailbox],
            )
            .await?
            > 0;
        if known {
            tx.commit().await?;
            return Ok(true);
        }
        let old: Option<String> = tx
            .query_opt(
                "SELECT account FROM accounts WHERE mailbox = $1",
                &[&mailbox],
            )
            .await?
            .map(|row| row.get(0));
        let Some(old) = old else {
            return Ok(false);
        };
        // recipients and quarantine follow messages (ON UPDATE CASCADE).
        for sql in [
            "UPDATE accounts SET account = $1 WHERE account = $2",
            "UPDATE messages SET account = $1 WHERE account = $2",
        ] {
            tx.execute(sql, &[&account, &old]).await?;
        }
        tx.commit().await?;
        tracing::info!(
            "account {old} is now called {account} (same mailbox): what was delivered is still known"
        );
        Ok(true)
    }

    async fn initialize_account(
        &self,
        account: &str,
        mailbox: &str,
        skip: &[String],
        now: SystemTime,
    ) -> Result<(), StateError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        self.fence(&tx, account).await?;
        for uidl in skip {
            insert_message(&tx, account, uidl, now).await?;
            settle_message(&tx, account, uidl, now).await?;
        }
        tx.execute(
            "INSERT INTO accounts (account, initialized_at, mailbox) VALUES ($1, $2, $3)
             ON CONFLICT (account) DO UPDATE SET mailbox = excluded.mailbox",
            &[&account, &to_ms(now), &mailbox],
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn mark_deleted(
        &self,
        account: &str,
        uidls: &[String],
        now: SystemTime,
    ) -> Result<(), StateError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        self.fence(&tx, account).await?;
        tx.execute(
            "UPDATE messages SET deleted_at = COALESCE(deleted_at, $3)
             WHERE account = $1 AND uidl = ANY($2)",
            &[&account, &uidls, &to_ms(now)],
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn prune(&self, account: &str, present: &HashSet<String>) -> Result<usize, StateError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        self.fence(&tx, account).await?;
        let rows = tx
            .query(
                "SELECT uidl FROM messages m WHERE account = $1 AND (settled_at IS NOT NULL
                   OR EXISTS (SELECT 1 FROM quarantine q
                              WHERE q.account = m.account AND q.uidl = m.uidl))",
                &[&account],
            )
            .await?;
        let gone: Vec<String> = rows
            .iter()
            .map(|row| row.get::<_, String>(0))
            .filter(|uidl| !present.contains(uidl))
            .collect();
        if !gone.is_empty() {
            tx.execute(
                "DELETE FROM messages WHERE account = $1 AND uidl = ANY($2)",
                &[&account, &gone],
            )
            .await?;
        }
        tx.commit().await?;
        Ok(gone.len())
    }

    async fn quarantine(
        &self,
        account: &str,
        uidl: &str,
        reason: &str,
        headline: &Headline,
        now: SystemTime,
    ) -> Result<Quarantined, StateError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        self.fence(&tx, account).await?;
        insert_message(&tx, account, uidl, now).await?;
        tx.execute(
            "INSERT INTO quarantine (account, uidl, since, reason, subject, sender, message_id)
             VALUES ($1, $2, $3, $4, $5, $6, $7)
             ON CONFLICT (account, uidl) DO NOTHING",
            &[
                &account,
                &uidl,
                &to_ms(now),
                &reason,
                &headline.subject,
                &headline.from,
                &headline.message_id,
            ],
        )
        .await?;
        let row = tx
            .query_one(
                "SELECT id, reason, notified_at, forgotten_at FROM quarantine
                 WHERE account = $1 AND uidl = $2",
                &[&account, &uidl],
            )
            .await?;
        tx.commit().await?;
        Ok(Quarantined {
            id: row.get(0),
            reason: row.get(1),
            notified: row.get::<_, Option<i64>>(2).is_some(),
            forgotten: row.get::<_, Option<i64>>(3).is_some(),
        })
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
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT recipient FROM deliveries
                 WHERE dedup_id = $1 AND recipient = ANY($2) AND at >= $3",
                &[&dedup, &recipients, &to_ms(since)],
            )
            .await?;
        Ok(rows.iter().map(|row| row.get(0)).collect())
    }

    async fn forget_deliveries(&self, before: SystemTime) -> Result<usize, StateError> {
        let client = self.client().await?;
        let n = client
            .execute("DELETE FROM deliveries WHERE at < $1", &[&to_ms(before)])
            .await?;
        Ok(n as usize)
    }

    async fn mark_notified(&self, id: i64, now: SystemTime) -> Result<(), StateError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let account: Option<String> = tx
            .query_opt("SELECT account FROM quarantine WHERE id = $1", &[&id])
            .await?
            .map(|row| row.get(0));
        let Some(account) = account else {
            return Ok(());
        };
        self.fence(&tx, &account).await?;
        tx.execute(
            "UPDATE quarantine SET notified_at = $2 WHERE id = $1",
            &[&id, &to_ms(now)],
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn claim(&self, account: &str, claim: super::Claim) -> Result<bool, StateError> {
        self.take_lease(account, claim).await
    }

    async fn renew(&self, account: &str, ttl: std::time::Duration) -> Result<bool, StateError> {
        self.renew_lease(account, ttl).await
    }

    async fn release(&self, account: &str, done: super::PassDone) -> Result<(), StateError> {
        self.release_lease(account, done).await
    }

    /// A transaction that commits synchronously, with a transaction id so that it writes a
    /// commit record: it returns once the WAL is on disk up to that record, and with it every
    /// outcome committed before it (`record_recipients` does not wait for the disk).
    async fn sync(&self) -> Result<(), StateError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        tx.query_one("SELECT txid_current()", &[]).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn record_pass(&self, account: &str, pass: &super::PassEnded) -> Result<(), StateError> {
        self.write_backoff(account, pass).await
    }
}

async fn insert_message(
    tx: &impl GenericClient,
    account: &str,
    uidl: &str,
    now: SystemTime,
) -> Result<(), StateError> {
    tx.execute(
        "INSERT INTO messages (account, uidl, first_seen) VALUES ($1, $2, $3)
         ON CONFLICT (account, uidl) DO NOTHING",
        &[&account, &uidl, &to_ms(now)],
    )
    .await?;
    Ok(())
}

async fn settle_message(
    tx: &impl GenericClient,
    account: &str,
    uidl: &str,
    now: SystemTime,
) -> Result<(), StateError> {
    tx.execute(
        "UPDATE messages SET settled_at = COALESCE(settled_at, $3), retry_at = NULL
         WHERE account = $1 AND uidl = $2",
        &[&account, &uidl, &to_ms(now)],
    )
    .await?;
    Ok(())
}

/// The message's state with its recipients (not its quarantine); it must exist (the caller
/// has just inserted it).
async fn message_state(
    tx: &impl GenericClient,
    account: &str,
    uidl: &str,
) -> Result<MessageState, StateError> {
    let row = tx
        .query_one(
            "SELECT m.first_seen, m.settled_at, m.deleted_at, m.attempts, m.retry_at
             FROM messages m WHERE m.account = $1 AND m.uidl = $2",
            &[&account, &uidl],
        )
        .await?;
    let mut state = message_row(&row, 0);
    for row in tx
        .query(
            "SELECT recipient, status, detail FROM recipients WHERE account = $1 AND uidl = $2",
            &[&account, &uidl],
        )
        .await?
    {
        let status: String = row.get(1);
        let detail: String = row.get(2);
        state
            .recipients
            .insert(row.get(0), Status::from_stored(&status, &detail));
    }
    Ok(state)
}

/// first_seen, settled_at, deleted_at, attempts, retry_at from column `at` on.
fn message_row(row: &tokio_postgres::Row, at: usize) -> MessageState {
    let time = |i: usize| row.get::<_, Option<i64>>(at + i).map(from_ms);
    MessageState {
        first_seen: from_ms(row.get(at)),
        settled_at: time(1),
        deleted_at: time(2),
        recipients: HashMap::new(),
        attempts: attempts(row.get(at + 3)),
        retry_at: time(4),
        quarantine: None,
    }
}

fn attempts(n: i32) -> u32 {
    u32::try_from(n).unwrap_or(0)
}

/// `hostname:pid`.
pub fn instance_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "localhost".to_owned());
    format!("{host}:{}", std::process::id())
}

/// A pool error in words; the connection's own error never holds the URL or password.
fn pool_error(e: deadpool_postgres::PoolError) -> String {
    match e {
        deadpool_postgres::PoolError::Backend(e) => {
            format!("cannot connect to PostgreSQL: {}", describe(&e))
        }
        other => format!("PostgreSQL connection pool: {other}"),
    }
}

/// What went wrong, in the server's words where it said something ("password authentication
/// failed for user ...", with its SQLSTATE), else the error and its causes ("error connecting
/// to server: Connection refused"): tokio-postgres's `Display` alone says only "db error".
/// Neither holds the URL or the password.
pub(super) fn describe(e: &tokio_postgres::Error) -> String {
    if let Some(db) = e.as_db_error() {
        return format!(
            "{}: {} (SQLSTATE {})",
            db.severity(),
            db.message(),
            db.code().code()
        );
    }
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        text = format!("{text}: {cause}");
        source = cause.source();
    }
    text
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}
