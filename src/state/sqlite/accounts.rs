//! The accounts a store has seen (and the mailbox each collects, so that a renamed account
//! keeps its state), and who got which message across accounts (`dedup_window`).

use std::collections::HashSet;
use std::time::SystemTime;

use rusqlite::{OptionalExtension, params};

use super::{SqliteStore, insert_message, settle_message, to_ms};
use crate::state::StateError;

impl SqliteStore {
    /// Whether this account was ever polled with this store (see
    /// [`SqliteStore::initialize_account`]); follows a renamed account by its mailbox.
    pub(super) async fn follow_account(
        &self,
        account: &str,
        mailbox: &str,
    ) -> Result<bool, StateError> {
        let (name, mailbox) = (account.to_owned(), mailbox.to_owned());
        let (known, renamed_from) = self
            .run(move |conn| {
                let tx = conn.transaction()?;
                let known = tx
                    .prepare_cached("UPDATE accounts SET mailbox = ?2 WHERE account = ?1")?
                    .execute(params![name, mailbox])?
                    > 0;
                if known {
                    tx.commit()?;
                    return Ok((true, None));
                }
                let old: Option<String> = tx
                    .prepare_cached("SELECT account FROM accounts WHERE mailbox = ?1")?
                    .query_row(params![mailbox], |row| row.get(0))
                    .optional()?;
                let Some(old) = old else {
                    return Ok((false, None));
                };
                // The foreign keys hold again once every table has the new name.
                tx.execute_batch("PRAGMA defer_foreign_keys = ON")?;
                for table in ["accounts", "messages", "recipients", "quarantine"] {
                    tx.execute(
                        &format!("UPDATE {table} SET account = ?1 WHERE account = ?2"),
                        params![name, old],
                    )?;
                }
                tx.commit()?;
                Ok((true, Some(old)))
            })
            .await?;
        if let Some(old) = renamed_from {
            tracing::info!(
                "account {old} is now called {account} (same mailbox): what was delivered is still known"
            );
        }
        Ok(known)
    }

    /// Records that the account has been seen; the messages in `skip` are stored as settled
    /// without any recipient (`initial: skip_existing`): never delivered, deleted upstream as
    /// retention says.
    pub(super) async fn add_account(
        &self,
        account: &str,
        mailbox: &str,
        skip: &[String],
        now: SystemTime,
    ) -> Result<(), StateError> {
        let (account, mailbox) = (account.to_owned(), mailbox.to_owned());
        let skip = skip.to_vec();
        self.run(move |conn| {
            let tx = conn.transaction()?;
            for uidl in &skip {
                insert_message(&tx, &account, uidl, now)?;
                settle_message(&tx, &account, uidl, now)?;
            }
            tx.prepare_cached(
                "INSERT INTO accounts (account, initialized_at, mailbox) VALUES (?1, ?2, ?3)
                 ON CONFLICT (account) DO UPDATE SET mailbox = excluded.mailbox",
            )?
            .execute(params![account, to_ms(now), mailbox])?;
            tx.commit()?;
            Ok(())
        })
        .await
    }

    /// Of `recipients`, those that got the message `dedup` at or after `since`.
    pub(super) async fn got_before(
        &self,
        dedup: &str,
        recipients: &[String],
        since: SystemTime,
    ) -> Result<HashSet<String>, StateError> {
        let (dedup, recipients) = (dedup.to_owned(), recipients.to_vec());
        self.run(move |conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT 1 FROM deliveries WHERE dedup_id = ?1 AND recipient = ?2 AND at >= ?3",
            )?;
            let mut got = HashSet::new();
            for r in recipients {
                if stmt.exists(params![dedup, r, to_ms(since)])? {
                    got.insert(r);
                }
            }
            Ok(got)
        })
        .await
    }

    /// Forgets who got what before `before`.
    pub(super) async fn forget_got(&self, before: SystemTime) -> Result<usize, StateError> {
        self.run(move |conn| {
            Ok(conn
                .prepare_cached("DELETE FROM deliveries WHERE at < ?1")?
                .execute(params![to_ms(before)])?)
        })
        .await
    }
}
