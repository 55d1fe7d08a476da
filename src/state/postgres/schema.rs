//! The PostgreSQL schema and its migrations, versioned in a `schema_version` table (the
//! SQLite store's `user_version`). Each entry of [`MIGRATIONS`] takes the schema from version
//! `i` to `i + 1`; a later issue appends an entry and never edits an old one.

use deadpool_postgres::Client;

use crate::state::StateError;

/// The schema version this build writes.
pub const PG_SCHEMA_VERSION: i32 = MIGRATIONS.len() as i32;

/// Times of messages are Unix milliseconds, as in SQLite (the same conversions); the lease
/// times are the server's `timestamptz`, so that every instance reads one clock.
const MIGRATIONS: &[&str] = &[
    // 1: SQLite's schema version 4, and the leases: who polls which account, until when, and
    // when it is due again (work is shared by `next_poll_at`).
    "CREATE TABLE messages (
        account    TEXT    NOT NULL,
        uidl       TEXT    NOT NULL,
        first_seen BIGINT  NOT NULL,
        settled_at BIGINT,
        deleted_at BIGINT,
        attempts   INTEGER NOT NULL DEFAULT 0,
        retry_at   BIGINT,
        last_error TEXT,
        PRIMARY KEY (account, uidl)
    );
    CREATE TABLE recipients (
        account    TEXT    NOT NULL,
        uidl       TEXT    NOT NULL,
        recipient  TEXT    NOT NULL,
        address    TEXT    NOT NULL,
        status     TEXT    NOT NULL CHECK (status IN ('delivered', 'rerouted', 'pending')),
        detail     TEXT    NOT NULL,
        attempts   INTEGER NOT NULL DEFAULT 1,
        updated_at BIGINT  NOT NULL,
        PRIMARY KEY (account, uidl, recipient),
        FOREIGN KEY (account, uidl) REFERENCES messages (account, uidl)
            ON DELETE CASCADE ON UPDATE CASCADE
    );
    CREATE TABLE quarantine (
        id           BIGSERIAL PRIMARY KEY,
        account      TEXT   NOT NULL,
        uidl         TEXT   NOT NULL,
        since        BIGINT NOT NULL,
        reason       TEXT   NOT NULL,
        notified_at  BIGINT,
        forgotten_at BIGINT,
        UNIQUE (account, uidl),
        FOREIGN KEY (account, uidl) REFERENCES messages (account, uidl)
            ON DELETE CASCADE ON UPDATE CASCADE
    );
    CREATE TABLE accounts (
        account        TEXT   NOT NULL PRIMARY KEY,
        initialized_at BIGINT NOT NULL,
        mailbox        TEXT
    );
    CREATE TABLE deliveries (
        dedup_id  TEXT   NOT NULL,
        recipient TEXT   NOT NULL,
        at        BIGINT NOT NULL,
        PRIMARY KEY (dedup_id, recipient)
    );
    CREATE INDEX deliveries_at ON deliveries (at);
    CREATE TABLE leases (
        account      TEXT        NOT NULL PRIMARY KEY,
        holder       TEXT,
        generation   BIGINT      NOT NULL DEFAULT 0,
        expires_at   TIMESTAMPTZ,
        next_poll_at TIMESTAMPTZ NOT NULL DEFAULT now(),
        last_pass_at TIMESTAMPTZ,
        last_error   TEXT,
        failures     INTEGER     NOT NULL DEFAULT 0,
        waiting      INTEGER     NOT NULL DEFAULT 0
    );",
    // 2: a quarantined message's Subject, From and Message-ID, for the status page.
    "ALTER TABLE quarantine ADD COLUMN subject TEXT;
    ALTER TABLE quarantine ADD COLUMN sender TEXT;
    ALTER TABLE quarantine ADD COLUMN message_id TEXT;",
    // 3: the accounts every instance collects besides its files' (`mailferry accounts add`):
    // each as the YAML of one item of `accounts:`, checked again by every instance that
    // loads it; `mailbox` for `accounts list` and for refusing one mailbox twice.
    "CREATE TABLE shared_accounts (
        name     TEXT        NOT NULL PRIMARY KEY,
        mailbox  TEXT        NOT NULL UNIQUE,
        yaml     TEXT        NOT NULL,
        added_at TIMESTAMPTZ NOT NULL DEFAULT now()
    );",
];

/// Brings the database up to [`PG_SCHEMA_VERSION`], all in one transaction under an advisory
/// lock (instances starting together migrate once); refuses a database written by a newer
/// build.
pub(super) async fn migrate(client: &mut Client) -> Result<(), StateError> {
    let tx = client.transaction().await?;
    // Any constant shared by every mailferry: the key of the migration lock.
    tx.execute("SELECT pg_advisory_xact_lock(7345012)", &[])
        .await?;
    // Not the server's NOTICE "relation already exists, skipping" in the log at every start.
    tx.batch_execute(
        "SET LOCAL client_min_messages = warning;
         CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)",
    )
    .await?;
    let found: Option<i32> = tx
        .query_opt("SELECT version FROM schema_version", &[])
        .await?
        .map(|row| row.get(0));
    let found = match found {
        Some(v) => v,
        None => {
            tx.execute("INSERT INTO schema_version (version) VALUES (0)", &[])
                .await?;
            0
        }
    };
    if found > PG_SCHEMA_VERSION {
        return Err(StateError::NewerSchema {
            found: i64::from(found),
            supported: i64::from(PG_SCHEMA_VERSION),
        });
    }
    for (version, sql) in MIGRATIONS.iter().enumerate().skip(found.max(0) as usize) {
        tx.batch_execute(sql).await?;
        tx.execute(
            "UPDATE schema_version SET version = $1",
            &[&(version as i32 + 1)],
        )
        .await?;
    }
    tx.commit().await?;
    Ok(())
}
