//! Account leases: an instance polls an account only while it holds the account's row in
//! `leases` (holder, generation, expires_at). Taking one is one conditional upsert: free or
//! expired, and due (`next_poll_at`) unless the caller forces it; each take bumps the
//! generation, which every write of the holder checks (`PgStore::fence`).

use std::time::Duration;

use super::{PgStore, lock};
use crate::state::{Claim, PassDone, StateError};

impl PgStore {
    /// Takes the lease on `account` if it is free or expired (and due, with
    /// `claim.due_only`); sets the next due time to now + `claim.interval`. False when
    /// another instance holds it, or it is not due.
    pub(super) async fn take_lease(&self, account: &str, claim: Claim) -> Result<bool, StateError> {
        let client = self.client().await?;
        let row = client
            .query_opt(
                "INSERT INTO leases AS l (account, holder, generation, expires_at, next_poll_at)
                 VALUES ($1, $2, 1, now() + make_interval(secs => $3),
                         now() + make_interval(secs => $4))
                 ON CONFLICT (account) DO UPDATE SET holder = excluded.holder,
                     generation = l.generation + 1, expires_at = excluded.expires_at,
                     next_poll_at = excluded.next_poll_at
                 WHERE (l.holder IS NULL OR l.expires_at < now())
                   AND (NOT $5 OR l.next_poll_at <= now() + make_interval(secs => $6))
                 RETURNING generation",
                &[
                    &account,
                    &&*self.instance,
                    &claim.ttl.as_secs_f64(),
                    &claim.interval.as_secs_f64(),
                    &claim.due_only,
                    &slack(claim.interval).as_secs_f64(),
                ],
            )
            .await?;
        match row {
            Some(row) => {
                lock(&self.leases).insert(account.to_owned(), row.get(0));
                Ok(true)
            }
            None => Ok(false),
        }
    }

    /// Extends the lease on `account` by `ttl` from now, if this instance still holds it
    /// unexpired; false (and forgotten here) when it was lost.
    pub(super) async fn renew_lease(
        &self,
        account: &str,
        ttl: Duration,
    ) -> Result<bool, StateError> {
        let Ok(generation) = self.token(account) else {
            return Ok(false);
        };
        let client = self.client().await?;
        let renewed = client
            .execute(
                "UPDATE leases SET expires_at = now() + make_interval(secs => $4)
                 WHERE account = $1 AND holder = $2 AND generation = $3 AND expires_at > now()",
                &[&account, &&*self.instance, &generation, &ttl.as_secs_f64()],
            )
            .await?;
        if renewed == 0 {
            lock(&self.leases).remove(account);
        }
        Ok(renewed > 0)
    }

    /// Gives the lease up after a pass, noting how it went for `mailferry status`.
    pub(super) async fn release_lease(
        &self,
        account: &str,
        done: PassDone,
    ) -> Result<(), StateError> {
        let Some(generation) = lock(&self.leases).remove(account) else {
            return Ok(());
        };
        let client = self.client().await?;
        client
            .execute(
                "UPDATE leases SET holder = NULL, expires_at = NULL, last_pass_at = now(),
                     last_error = $4,
                     failures = CASE WHEN $4::text IS NULL THEN 0 ELSE failures + 1 END,
                     waiting = $5
                 WHERE account = $1 AND holder = $2 AND generation = $3",
                &[
                    &account,
                    &&*self.instance,
                    &generation,
                    &done.error,
                    &i32::try_from(done.waiting).unwrap_or(i32::MAX),
                ],
            )
            .await?;
        Ok(())
    }
}

/// How early an account counts as due: the instance that polled it last wakes exactly one
/// `poll_interval` after its claim, a moment before the due time it set.
fn slack(interval: Duration) -> Duration {
    (interval / 10).min(Duration::from_secs(5))
}
