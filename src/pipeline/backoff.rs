//! When an account's next pass is due. Refused logins back off: a mailbox whose server
//! refuses the password is tried again after `poll_interval`, then twice as long each time,
//! up to `auth_backoff_max`, so that a wrong password does not get the account locked by the
//! provider (a lock-out is worse than a late message). A failing mailbox (unreachable, TLS or
//! protocol failure, a pass past its deadline) backs off the same way up to `backoff_max`, so
//! a dead server is not hammered; a failure that is not the mailbox's (the state store) does
//! not count. And every wait gets a little random delay (`jitter`), so that accounts with one
//! poll_interval do not all connect in the same second.

use std::hash::{BuildHasher, RandomState};
use std::time::Duration;

use super::{PassError, PassReport};
use crate::config::AccountConfig;

/// The refused logins and failed passes of one account in a row, and the wait they call for.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(super) struct Backoff {
    /// Logins refused since the last one accepted.
    pub refused: u32,
    /// Passes failed in a row (not counting refused logins) since the last that worked.
    pub failed: u32,
}

/// What a pass's outcome means for the next login.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Login {
    /// The server refused the credentials.
    Refused,
    /// The login went through (whatever came after).
    Accepted,
    /// The pass failed before a login was tried or answered (network, TLS): no news.
    Unknown,
}

impl Backoff {
    /// Takes in a pass's login outcome; returns the wait before the next pass when logins
    /// are being refused (`None`: the account's usual cadence).
    pub fn after(
        &mut self,
        login: Login,
        poll_interval: Duration,
        max: Duration,
    ) -> Option<Duration> {
        match login {
            Login::Refused => self.refused = self.refused.saturating_add(1),
            Login::Accepted => self.refused = 0,
            Login::Unknown => {}
        }
        (self.refused > 0).then(|| delay(self.refused, poll_interval, max))
    }

    /// Takes in how a pass of `account` went, counts and logs a refused login (or the first
    /// login accepted after refusals) or a failed pass, and returns the wait before its next
    /// pass while logins are refused or passes fail (`None`: the usual cadence).
    pub fn after_pass(
        &mut self,
        account: &AccountConfig,
        result: &Result<PassReport, PassError>,
    ) -> Option<Duration> {
        // What the pass says of the login, and whether it failed of the mailbox's own doing
        // (`None`: it failed for a reason that is not the mailbox's).
        let (login, failed) = match result {
            Ok(_) => (Login::Accepted, Some(false)),
            Err(PassError::Fetch(e)) if e.login_refused() => (Login::Refused, Some(false)),
            // Refused or not, nothing new is known of the login.
            Err(PassError::Fetch(_) | PassError::Deadline(_) | PassError::Panicked(_)) => {
                (Login::Unknown, Some(true))
            }
            // The store, or a choice only the administrator can make: not the mailbox.
            Err(PassError::State(_) | PassError::InitialChoice { .. }) => (Login::Unknown, None),
        };
        let failing = failed.and_then(|failed| self.failed_pass(account, failed));
        let was_refused = self.refused;
        let wait = self.after(login, account.poll_interval, account.auth_backoff_max);
        match (login, wait) {
            (Login::Refused, Some(wait)) => {
                crate::metrics::login_refused(&account.name);
                tracing::warn!(
                    account = %account.name,
                    "the server refused the login {} time(s) in a row: next attempt in {}s (doubling up to auth_backoff_max {}s), so that the provider does not lock the account; check username and password",
                    self.refused,
                    wait.as_secs(),
                    account.auth_backoff_max.as_secs()
                );
            }
            (Login::Accepted, _) if was_refused > 0 => {
                crate::metrics::login_refused_now(&account.name, false);
                tracing::info!(
                    account = %account.name,
                    "the server accepts the login again (after {was_refused} refused)"
                );
            }
            _ => {}
        }
        wait.or(failing)
    }

    /// Counts a failed pass of the mailbox's own doing (or ends the count), and logs it; the
    /// growing wait while they go on, from the second in a row.
    fn failed_pass(&mut self, account: &AccountConfig, failed: bool) -> Option<Duration> {
        let was = self.failed;
        let wait = self.after_failure(failed, account.poll_interval, account.backoff_max);
        match wait {
            Some(wait) => tracing::warn!(
                account = %account.name,
                "{} passes failed in a row: next attempt in {}s (doubling up to backoff_max {}s)",
                self.failed,
                wait.as_secs(),
                account.backoff_max.as_secs()
            ),
            None if was > 1 && !failed => {
                tracing::info!(account = %account.name, "the pass works again (after {was} failed)")
            }
            None => {}
        }
        wait
    }

    /// Takes in whether a pass failed; the wait before the next from the second failure in a
    /// row (the first is retried at the usual cadence: one lost connection is no outage).
    pub fn after_failure(
        &mut self,
        failed: bool,
        poll_interval: Duration,
        max: Duration,
    ) -> Option<Duration> {
        self.failed = if failed {
            self.failed.saturating_add(1)
        } else {
            0
        };
        (self.failed > 1).then(|| delay(self.failed - 1, poll_interval, max))
    }
}

/// A random extra wait for the next pass: up to a tenth of `poll_interval`, at most 60 s.
pub(super) fn jitter(poll_interval: Duration) -> Duration {
    let most = (poll_interval / 10).min(Duration::from_secs(60));
    // Each RandomState has new random keys: random enough to spread connections.
    let random = RandomState::new().hash_one(0u8);
    spread(most, random)
}

/// `random` mapped onto `0..=most`, to the millisecond.
fn spread(most: Duration, random: u64) -> Duration {
    let ms = u64::try_from(most.as_millis()).unwrap_or(u64::MAX);
    Duration::from_millis(random % ms.saturating_add(1))
}

/// The wait after the `refused`-th refused login in a row (1-based): `poll_interval`, doubled
/// for each after the first, never more than `max` (nor less than `poll_interval`).
pub(super) fn delay(refused: u32, poll_interval: Duration, max: Duration) -> Duration {
    let doublings = refused.saturating_sub(1).min(30);
    poll_interval
        .saturating_mul(1u32 << doublings)
        .min(max.max(poll_interval))
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINUTE: Duration = Duration::from_secs(60);

    #[test]
    fn the_wait_doubles_from_poll_interval_up_to_the_cap() {
        let waits: Vec<u64> = (1..=9)
            .map(|n| delay(n, MINUTE, Duration::from_secs(3_600)).as_secs())
            .collect();
        assert_eq!(waits, [60, 120, 240, 480, 960, 1920, 3600, 3600, 3600]);
        assert_eq!(
            delay(u32::MAX, MINUTE, Duration::from_secs(3_600)),
            Duration::from_secs(3_600)
        );
        // A cap below poll_interval never makes the account poll faster than configured.
        assert_eq!(
            delay(3, Duration::from_secs(600), MINUTE),
            Duration::from_secs(600)
        );
    }

    #[test]
    fn an_accepted_login_ends_the_backoff_and_a_network_failure_changes_nothing() {
        let max = Duration::from_secs(3_600);
        let mut b = Backoff::default();
        assert_eq!(b.after(Login::Accepted, MINUTE, max), None);
        assert_eq!(b.after(Login::Refused, MINUTE, max), Some(MINUTE));
        assert_eq!(b.after(Login::Refused, MINUTE, max), Some(2 * MINUTE));
        assert_eq!(b.after(Login::Unknown, MINUTE, max), Some(2 * MINUTE));
        assert_eq!(b.after(Login::Refused, MINUTE, max), Some(4 * MINUTE));
        assert_eq!(b.after(Login::Accepted, MINUTE, max), None);
        assert_eq!(b.refused, 0);
    }

    #[test]
    fn failed_passes_back_off_from_the_second_and_a_working_pass_ends_it() {
        let max = Duration::from_secs(600);
        let mut b = Backoff::default();
        assert_eq!(b.after_failure(true, MINUTE, max), None);
        assert_eq!(b.after_failure(true, MINUTE, max), Some(MINUTE));
        assert_eq!(b.after_failure(true, MINUTE, max), Some(2 * MINUTE));
        assert_eq!(b.after_failure(true, MINUTE, max), Some(4 * MINUTE));
        assert_eq!(b.after_failure(true, MINUTE, max), Some(8 * MINUTE));
        assert_eq!(b.after_failure(true, MINUTE, max), Some(max));
        assert_eq!(b.after_failure(false, MINUTE, max), None);
        assert_eq!(b.failed, 0);
        assert_eq!(b.after_failure(true, MINUTE, max), None, "counted afresh");
    }

    #[test]
    fn the_jitter_stays_within_a_tenth_of_poll_interval_and_a_minute() {
        let most = Duration::from_secs(6);
        assert_eq!(spread(most, 0), Duration::ZERO);
        assert_eq!(spread(most, 6_000), most);
        assert!(spread(most, u64::MAX) <= most);
        for _ in 0..100 {
            assert!(jitter(MINUTE) <= most);
            assert!(jitter(Duration::from_secs(86_400)) <= MINUTE);
        }
        assert_eq!(jitter(Duration::ZERO), Duration::ZERO);
    }
}
