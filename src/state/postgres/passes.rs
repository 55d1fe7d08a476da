//! How each account's passes end, for `mailferry status`: the lease's row already notes the
//! last pass (`release_lease`); a poller backing off pushes the account's due time back, so
//! that no other instance logs in sooner; and the read of every account's standing.

use std::collections::HashMap;

use super::PgStore;
use crate::state::sqlite::{from_ms, to_ms};
use crate::state::status::{AccountSummary, QUARANTINED_SQL, WAITING_SQL, add_counts};
use crate::state::{PassEnded, StateError};

impl PgStore {
    /// With a back-off, the account is not due before `next_at`, for every instance (a
    /// refused login tried by each in turn would get it locked); otherwise nothing to write.
    pub(super) async fn write_backoff(
        &self,
        account: &str,
        pass: &PassEnded,
    ) -> Result<(), StateError> {
        let Some(next) = pass.next_at.filter(|_| pass.backing_off) else {
            return Ok(());
        };
        let client = self.client().await?;
        client
            .execute(
                "UPDATE leases SET next_poll_at = GREATEST(next_poll_at, to_timestamp($2::float8 / 1000))
                 WHERE account = $1",
                &[&account, &(to_ms(next) as f64)],
            )
            .await?;
        Ok(())
    }

    /// Every account the database knows something of: the lease's holder (while unexpired),
    /// the last pass and the next due time, and the counts of messages.
    pub async fn summaries(&self) -> Result<HashMap<String, AccountSummary>, StateError> {
        let client = self.client().await?;
        let mut out: HashMap<String, AccountSummary> = HashMap::new();
        // A database no instance has used yet: nothing known (and nothing created here).
        let created: bool = client
            .query_one("SELECT to_regclass('leases') IS NOT NULL", &[])
            .await?
            .get(0);
        if !created {
            return Ok(out);
        }
        for (sql, set) in [
            (
                WAITING_SQL,
                (|s, n| s.waiting = n) as fn(&mut AccountSummary, u64),
            ),
            (QUARANTINED_SQL, |s, n| s.quarantined = n),
        ] {
            let rows = client.query(sql, &[]).await?;
            add_counts(&mut out, rows.iter().map(|r| (r.get(0), r.get(1))), set);
        }
        let ms = |column: &str| format!("(extract(epoch FROM {column}) * 1000)::bigint");
        let rows = client
            .query(
                &format!(
                    "SELECT account, CASE WHEN expires_at > now() THEN holder END, {}, last_error,
                            failures, {}
                     FROM leases",
                    ms("last_pass_at"),
                    ms("next_poll_at")
                ),
                &[],
            )
            .await?;
        for row in &rows {
            let s = out.entry(row.get(0)).or_default();
            s.holder = row.get(1);
            s.last_pass = row.get::<_, Option<i64>>(2).map(from_ms);
            s.last_error = row.get(3);
            s.failures = u32::try_from(row.get::<_, i32>(4)).unwrap_or(0);
            s.next_pass = row.get::<_, Option<i64>>(5).map(from_ms);
        }
        Ok(out)
    }
}
