//! Refused logins back off: a mailbox whose server refuses the password is tried again
//! after `poll_interval`, then twice as long each time, up to `auth_backoff_max`, so that a
//! wrong password does not get the account locked by the provider (a lock-out is worse than
//! a late message). A network failure does not count: only the server saying no.

use std::time::Duration;

use super::{PassError, PassReport};
use crate::config::AccountConfig;

/// The refused logins of one account in a row, and the wait they call for.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(super) struct AuthBackoff {
    /// Logins refused since the last one accepted.
    pub refused: u32,
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

impl AuthBackoff {
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
}

impl AuthBackoff {
    /// Takes in how a pass of `account` went, counts and logs a refused login (or the first
    /// login accepted after refusals), and returns the wait before its next pass while
    /// logins are refused.
    pub fn after_pass(
        &mut self,
        account: &AccountConfig,
        result: &Result<PassReport, PassError>,
    ) -> Option<Duration> {
        let login = match result {
            Err(PassError::Fetch(e)) if e.login_refused() => Login::Refused,
            Ok(_) => Login::Accepted,
            // Refused or not, nothing new is known of the login.
            Err(_) => Login::Unknown,
        };
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
        wait
    }
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
        let mut b = AuthBackoff::default();
        assert_eq!(b.after(Login::Accepted, MINUTE, max), None);
        assert_eq!(b.after(Login::Refused, MINUTE, max), Some(MINUTE));
        assert_eq!(b.after(Login::Refused, MINUTE, max), Some(2 * MINUTE));
        assert_eq!(b.after(Login::Unknown, MINUTE, max), Some(2 * MINUTE));
        assert_eq!(b.after(Login::Refused, MINUTE, max), Some(4 * MINUTE));
        assert_eq!(b.after(Login::Accepted, MINUTE, max), None);
        assert_eq!(b.refused, 0);
    }
}
