//! The accounts table (`shared_accounts`): accounts every instance collects, managed with
//! `mailferry accounts list | add FILE | remove NAME`. A row is the YAML text of one account
//! as the operator wrote it (checked by `config::with_accounts` before it is stored, and by
//! every instance that loads it); nothing here reads or shows its secrets.

use std::time::SystemTime;

use super::PgStore;
use crate::state::StateError;
use crate::state::sqlite::from_ms;

/// One row of the accounts table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SharedAccount {
    /// The account's name.
    pub name: String,
    /// The mailbox it collects (`AccountConfig::mailbox_id`: no secret in it).
    pub mailbox: String,
    /// Its YAML text, secrets and all: never printed.
    pub yaml: String,
    /// When it was added (or last replaced).
    pub added_at: SystemTime,
}

impl PgStore {
    /// Every account of the table, by name.
    pub async fn shared_accounts(&self) -> Result<Vec<SharedAccount>, StateError> {
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT name, mailbox, yaml, (extract(epoch FROM added_at) * 1000)::bigint
                 FROM shared_accounts ORDER BY name",
                &[],
            )
            .await?;
        Ok(rows
            .iter()
            .map(|row| SharedAccount {
                name: row.get(0),
                mailbox: row.get(1),
                yaml: row.get(2),
                added_at: from_ms(row.get(3)),
            })
            .collect())
    }

    /// The names in the table, by name (none before any instance created it: `status`
    /// creates nothing).
    pub async fn shared_names(&self) -> Result<Vec<String>, StateError> {
        let client = self.client().await?;
        let created: bool = client
            .query_one("SELECT to_regclass('shared_accounts') IS NOT NULL", &[])
            .await?
            .get(0);
        if !created {
            return Ok(Vec::new());
        }
        let rows = client
            .query("SELECT name FROM shared_accounts ORDER BY name", &[])
            .await?;
        Ok(rows.iter().map(|row| row.get(0)).collect())
    }

    /// Stores an account (already checked), replacing one of the same name; true when it
    /// replaced one.
    pub async fn put_shared_account(
        &self,
        name: &str,
        mailbox: &str,
        yaml: &str,
    ) -> Result<bool, StateError> {
        let client = self.client().await?;
        let row = client
            .query_one(
                "INSERT INTO shared_accounts AS s (name, mailbox, yaml) VALUES ($1, $2, $3)
                 ON CONFLICT (name) DO UPDATE SET mailbox = excluded.mailbox,
                     yaml = excluded.yaml, added_at = now()
                 RETURNING (xmax <> 0)",
                &[&name, &mailbox, &yaml],
            )
            .await?;
        Ok(row.get(0))
    }

    /// Removes the account `name` from the table; false when it was not there.
    pub async fn remove_shared_account(&self, name: &str) -> Result<bool, StateError> {
        let client = self.client().await?;
        let n = client
            .execute("DELETE FROM shared_accounts WHERE name = $1", &[&name])
            .await?;
        Ok(n > 0)
    }
}
