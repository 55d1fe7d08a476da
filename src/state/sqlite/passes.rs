//! How each account's passes end, for `mailferry status`: one row per account written by its
//! poller once per pass, and the read-only view of the whole store that `status` prints.

use std::collections::HashMap;
use std::path::Path;

use rusqlite::{Connection, OpenFlags, params};

use super::{BUSY_TIMEOUT, SqliteStore, from_ms, to_ms};
use crate::state::status::{AccountSummary, QUARANTINED_SQL, WAITING_SQL, add_counts};
use crate::state::{DB_FILE, PassEnded, SCHEMA_VERSION, StateError};

/// The schema version that has the `passes` table.
const PASSES_SINCE: i64 = 6;

impl SqliteStore {
    /// Notes how a pass of `account` ended: one upsert; failures in a row count up until a
    /// pass works.
    pub(super) async fn write_pass(
        &self,
        account: &str,
        pass: &PassEnded,
    ) -> Result<(), StateError> {
        let account = account.to_owned();
        let (at, error, next) = (to_ms(pass.at), pass.error.clone(), pass.next_at.map(to_ms));
        self.run(move |conn| {
            conn.prepare_cached(
                "INSERT INTO passes (account, last_pass_at, last_error, failures, next_pass_at)
                 VALUES (?1, ?2, ?3, ?3 IS NOT NULL, ?4)
                 ON CONFLICT (account) DO UPDATE SET last_pass_at = excluded.last_pass_at,
                     last_error = excluded.last_error, next_pass_at = excluded.next_pass_at,
                     failures = CASE WHEN excluded.last_error IS NULL THEN 0
                                     ELSE passes.failures + 1 END",
            )?
            .execute(params![account, at, error, next])?;
            Ok(())
        })
        .await
    }
}

/// Every account the store at `state_dir` knows something of, read without writing anything
/// (no migration, no lock: beside a running daemon, WAL lets a second reader in). Empty when
/// there is no database yet.
pub(crate) fn summaries(state_dir: &Path) -> Result<HashMap<String, AccountSummary>, StateError> {
    let path = state_dir.join(DB_FILE);
    if !path.exists() {
        return Ok(HashMap::new());
    }
    let open_err = |error| StateError::Open {
        path: path.clone(),
        error,
    };
    let conn =
        Connection::open_with_flags(&path, OpenFlags::SQLITE_OPEN_READ_ONLY).map_err(open_err)?;
    conn.busy_timeout(BUSY_TIMEOUT).map_err(open_err)?;
    let version: i64 = conn.pragma_query_value(None, "user_version", |row| row.get(0))?;
    if version > SCHEMA_VERSION {
        return Err(StateError::NewerSchema {
            found: version,
            supported: SCHEMA_VERSION,
        });
    }
    let mut out: HashMap<String, AccountSummary> = HashMap::new();
    if version < 2 {
        return Ok(out);
    }
    for (sql, set) in [
        (
            WAITING_SQL,
            (|s, n| s.waiting = n) as fn(&mut AccountSummary, u64),
        ),
        (QUARANTINED_SQL, |s, n| s.quarantined = n),
    ] {
        let mut stmt = conn.prepare(sql)?;
        let rows = stmt
            .query_map([], |row| Ok((row.get(0)?, row.get(1)?)))?
            .collect::<Result<Vec<(String, i64)>, _>>()?;
        add_counts(&mut out, rows, set);
    }
    if version >= PASSES_SINCE {
        let mut stmt = conn.prepare(
            "SELECT account, last_pass_at, last_error, failures, next_pass_at FROM passes",
        )?;
        let mut rows = stmt.query([])?;
        while let Some(row) = rows.next()? {
            let s = out.entry(row.get(0)?).or_default();
            s.last_pass = Some(from_ms(row.get(1)?));
            s.last_error = row.get(2)?;
            s.failures = u32::try_from(row.get::<_, i64>(3)?).unwrap_or(0);
            s.next_pass = row.get::<_, Option<i64>>(4)?.map(from_ms);
        }
    }
    Ok(out)
}
