//! `mailferry status`: per account, who holds it, its last pass (when, how it ended), when
//! the next is due, the messages waiting and quarantined, and the failures in a row; read
//! from whichever store the configuration names, writing nothing (beside a running daemon,
//! without its lock).

use std::collections::HashMap;
use std::fmt;
use std::time::SystemTime;

use super::{PgStore, StateError};
use crate::config::{Config, StateBackend};

/// Per account, the messages known and not yet settled (nor quarantined, nor gone): the
/// same query on both backends.
pub(super) const WAITING_SQL: &str = "SELECT account, COUNT(*) FROM messages m
     WHERE settled_at IS NULL AND deleted_at IS NULL
       AND NOT EXISTS (SELECT 1 FROM quarantine q WHERE q.account = m.account AND q.uidl = m.uidl)
     GROUP BY account";

/// Per account, the quarantined messages not forgotten.
pub(super) const QUARANTINED_SQL: &str =
    "SELECT account, COUNT(*) FROM quarantine WHERE forgotten_at IS NULL GROUP BY account";

/// Where one account stands, as the store knows it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AccountSummary {
    /// Who polls it now: the lease holder (`host:pid`) with PostgreSQL, the daemon's PID
    /// with SQLite; `None`: nobody.
    pub holder: Option<String>,
    /// When its last pass ended.
    pub last_pass: Option<SystemTime>,
    /// Why the last pass failed (`None`: it worked, or there was none).
    pub last_error: Option<String>,
    /// Passes failed in a row.
    pub failures: u32,
    /// When its next pass is due.
    pub next_pass: Option<SystemTime>,
    /// Messages known and not settled yet (not counting the quarantined).
    pub waiting: u64,
    /// Messages in quarantine.
    pub quarantined: u64,
}

/// What `mailferry status` prints: each account of the configuration, in its order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    /// The accounts, by name.
    pub accounts: Vec<(String, AccountSummary)>,
    /// When it was read (times are shown from here).
    pub now: SystemTime,
}

/// Reads the status of `config`'s accounts from its store.
pub async fn read(config: &Config) -> Result<Status, StateError> {
    let mut shared = Vec::new();
    let mut found = match &config.state {
        StateBackend::Sqlite => {
            let dir = config.state_dir.clone();
            let mut found = tokio::task::spawn_blocking(move || super::sqlite::summaries(&dir))
                .await
                .map_err(|e| StateError::Task(e.to_string()))??;
            // One process owns a SQLite store: the daemon holding the lock, if one runs.
            match super::holder_seen(&config.state_dir) {
                Some(pid) => {
                    for summary in found.values_mut() {
                        summary.holder = Some(format!("PID {pid} (this host)"));
                    }
                }
                // Nothing is due while no daemon runs.
                None => found.values_mut().for_each(|s| s.next_pass = None),
            }
            found
        }
        StateBackend::Postgres(pg) => {
            let store = PgStore::connect(pg.url.expose())?;
            shared = store.shared_names().await?;
            store.summaries().await?
        }
    };
    // The configuration's accounts, then the accounts table's.
    let names = (config.accounts.iter().map(|a| a.name.clone()))
        .chain(shared.into_iter().filter(|n| config.account(n).is_none()));
    let accounts = names
        .map(|name| {
            let summary = found.remove(&name).unwrap_or_default();
            (name, summary)
        })
        .collect();
    Ok(Status {
        accounts,
        now: SystemTime::now(),
    })
}

/// `12 s ago`, `in 3 min`, or `-`.
fn relative(t: Option<SystemTime>, now: SystemTime) -> String {
    t.map_or("-".to_owned(), |t| crate::metrics::page::from_now(t, now))
}

impl AccountSummary {
    /// How the last pass ended, in words.
    fn outcome(&self) -> String {
        match (&self.last_pass, &self.last_error) {
            (None, _) => "never polled".to_owned(),
            (Some(_), None) => "ok".to_owned(),
            (Some(_), Some(why)) => format!("failed: {why}"),
        }
    }
}

/// An aligned table, one account a line; the outcome last (it may be long).
impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut rows = vec![
            [
                "ACCOUNT",
                "HELD BY",
                "LAST PASS",
                "NEXT PASS",
                "WAITING",
                "QUARANTINED",
                "FAILURES",
                "OUTCOME",
            ]
            .map(String::from),
        ];
        for (name, s) in &self.accounts {
            rows.push([
                name.clone(),
                s.holder.clone().unwrap_or_else(|| "-".to_owned()),
                relative(s.last_pass, self.now),
                relative(s.next_pass, self.now),
                s.waiting.to_string(),
                s.quarantined.to_string(),
                s.failures.to_string(),
                s.outcome(),
            ]);
        }
        let mut widths = [0; 8];
        for row in &rows {
            for (w, cell) in widths.iter_mut().zip(row) {
                *w = (*w).max(cell.chars().count());
            }
        }
        for (i, row) in rows.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            let (last, cells) = row.split_last().unwrap_or((&row[0], &[]));
            for (cell, w) in cells.iter().zip(widths) {
                write!(f, "{cell:<w$}  ")?;
            }
            write!(f, "{last}")?;
        }
        Ok(())
    }
}

impl Status {
    /// One JSON object per account, times as Unix seconds.
    pub fn to_json(&self) -> String {
        let secs = |t: Option<SystemTime>| {
            t.and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok())
                .map(|d| d.as_secs())
        };
        let accounts: Vec<serde_json::Value> = (self.accounts.iter())
            .map(|(name, s)| {
                serde_json::json!({
                    "account": name,
                    "held_by": s.holder,
                    "last_pass": secs(s.last_pass),
                    "last_error": s.last_error,
                    "next_pass": secs(s.next_pass),
                    "waiting": s.waiting,
                    "quarantined": s.quarantined,
                    "failures": s.failures,
                })
            })
            .collect();
        serde_json::json!({ "now": secs(Some(self.now)), "accounts": accounts }).to_string()
    }
}

/// Counts of one query (`account`, `COUNT(*)`) into `found`.
pub(super) fn add_counts(
    found: &mut HashMap<String, AccountSummary>,
    rows: impl IntoIterator<Item = (String, i64)>,
    set: fn(&mut AccountSummary, u64),
) {
    for (account, n) in rows {
        set(found.entry(account).or_default(), n.max(0) as u64);
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn the_table_is_aligned_with_the_outcome_last() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let status = Status {
            now,
            accounts: vec![
                (
                    "alpha".into(),
                    AccountSummary {
                        holder: Some("gw1:42".into()),
                        last_pass: Some(now - Duration::from_secs(12)),
                        next_pass: Some(now + Duration::from_secs(300)),
                        waiting: 3,
                        ..AccountSummary::default()
                    },
                ),
                (
                    "a-much-longer-name".into(),
                    AccountSummary {
                        last_pass: Some(now - Duration::from_secs(3 * 86_400)),
                        last_error: Some("cannot connect".into()),
                        failures: 2,
                        quarantined: 1,
                        ..AccountSummary::default()
                    },
                ),
                ("new".into(), AccountSummary::default()),
            ],
        };
        assert_eq!(
            status.to_string(),
            "\
ACCOUNT             HELD BY  LAST PASS  NEXT PASS  WAITING  QUARANTINED  FAILURES  OUTCOME
alpha               gw1:42   12 s ago   in 5 min   3        0            0         ok
a-much-longer-name  -        72 h ago   -          0        1            2         failed: cannot connect
new                 -        -          -          0        0            0         never polled"
        );
        let json: serde_json::Value = serde_json::from_str(&status.to_json()).unwrap();
        assert_eq!(json["accounts"][0]["held_by"], "gw1:42");
        assert_eq!(json["accounts"][0]["last_pass"], 999_988);
        assert_eq!(json["accounts"][1]["last_error"], "cannot connect");
        assert_eq!(json["accounts"][2]["next_pass"], serde_json::Value::Null);
    }
}
