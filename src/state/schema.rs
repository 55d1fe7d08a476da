//! The database schema and its migrations, versioned by SQLite's `user_version`.
//!
//! Each entry of [`MIGRATIONS`] takes the schema from version `i` to `i + 1`; a later issue
//! appends an entry and never edits an old one.

use rusqlite::Connection;

use super::StateError;

/// The schema version this build writes.
pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

/// Times are Unix milliseconds (UTC). `recipient` is `Address::dedup_key`, `address` the
/// address as it was sent; `status` is `delivered`, `rerouted` or `pending`, and with
/// `detail` holds a `recipient::Status` (see `Status::to_stored`: a duplicate is `delivered`,
/// a temporary or permanent refusal `pending`, told apart by the reply code in `detail`).
const MIGRATIONS: &[&str] = &[
    // 1: messages of an account by UIDL, and the outcome of each of their recipients.
    "CREATE TABLE messages (
        account    TEXT    NOT NULL,
        uidl       TEXT    NOT NULL,
        first_seen INTEGER NOT NULL,
        settled_at INTEGER,
        deleted_at INTEGER,
        PRIMARY KEY (account, uidl)
    ) WITHOUT ROWID;
    CREATE TABLE recipients (
        account    TEXT    NOT NULL,
        uidl       TEXT    NOT NULL,
        recipient  TEXT    NOT NULL,
        address    TEXT    NOT NULL,
        status     TEXT    NOT NULL CHECK (status IN ('delivered', 'rerouted', 'pending')),
        detail     TEXT    NOT NULL,
        attempts   INTEGER NOT NULL DEFAULT 1,
        updated_at INTEGER NOT NULL,
        PRIMARY KEY (account, uidl, recipient),
        FOREIGN KEY (account, uidl) REFERENCES messages (account, uidl) ON DELETE CASCADE
    ) WITHOUT ROWID;",
    // 2: attempts and back-off per message, quarantine, and the accounts ever polled.
    "ALTER TABLE messages ADD COLUMN attempts INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE messages ADD COLUMN retry_at INTEGER;
    ALTER TABLE messages ADD COLUMN last_error TEXT;
    CREATE TABLE quarantine (
        id          INTEGER PRIMARY KEY AUTOINCREMENT,
        account     TEXT    NOT NULL,
        uidl        TEXT    NOT NULL,
        since       INTEGER NOT NULL,
        reason      TEXT    NOT NULL,
        notified_at INTEGER,
        forgotten_at INTEGER,
        UNIQUE (account, uidl),
        FOREIGN KEY (account, uidl) REFERENCES messages (account, uidl) ON DELETE CASCADE
    );
    CREATE TABLE accounts (
        account        TEXT    NOT NULL PRIMARY KEY,
        initialized_at INTEGER NOT NULL
    ) WITHOUT ROWID;
    INSERT INTO accounts (account, initialized_at)
        SELECT account, MIN(first_seen) FROM messages GROUP BY account;",
    // 3: the mailbox each account collects (`AccountConfig::mailbox_id`), so that state
    // follows an account renamed in the configuration; filled in by the next pass.
    "ALTER TABLE accounts ADD COLUMN mailbox TEXT;",
    // 4: which recipients got which message (`pipeline::dedup_id`), in any account,
    // for `dedup_window`: a second copy of a message is not delivered again, whatever its key.
    "CREATE TABLE deliveries (
        dedup_id  TEXT    NOT NULL,
        recipient TEXT    NOT NULL,
        at        INTEGER NOT NULL,
        PRIMARY KEY (dedup_id, recipient)
    ) WITHOUT ROWID;
    CREATE INDEX deliveries_at ON deliveries (at);",
    // 5: what the status page shows of a quarantined message (`quarantine::Headline`),
    // when it was read; NULL for the ones quarantined before.
    "ALTER TABLE quarantine ADD COLUMN subject TEXT;
    ALTER TABLE quarantine ADD COLUMN sender TEXT;
    ALTER TABLE quarantine ADD COLUMN message_id TEXT;",
    // 6: how each account's last pass ended and when its next is due, for `mailferry
    // status`; one row per account, written by its poller once per pass.
    "CREATE TABLE passes (
        account      TEXT    NOT NULL PRIMARY KEY,
        last_pass_at INTEGER NOT NULL,
        last_error   TEXT,
        failures     INTEGER NOT NULL DEFAULT 0,
        next_pass_at INTEGER
    ) WITHOUT ROWID;",
];

/// Brings the database up to [`SCHEMA_VERSION`], one migration per transaction; refuses a
/// database written by a newer build (its meaning is unknown here).
pub fn migrate(conn: &mut Connection) -> Result<(), StateError> {
    let found: i64 = conn.pragma_query_value(None, "user_version", |row| row.get(0))?;
    if found > SCHEMA_VERSION {
        return Err(StateError::NewerSchema {
            found,
            supported: SCHEMA_VERSION,
        });
    }
    for (version, sql) in MIGRATIONS.iter().enumerate().skip(found.max(0) as usize) {
        let tx = conn.transaction()?;
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", version as i64 + 1)?;
        tx.commit()?;
    }
    Ok(())
}
