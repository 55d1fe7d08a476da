//! Retention: when the upstream copy of a message may be deleted. Pure; the state store says
//! what happened to the message, the account's `retention` says how long to keep it.

use std::time::{Duration, SystemTime};

use crate::config::Retention;
use crate::fetch::pop3::Expire;
use crate::state::MessageState;

const DAY: Duration = Duration::from_secs(24 * 60 * 60);

/// May the upstream copy be deleted now? Only settled messages (every recipient delivered or
/// re-routed); `Delete` → at once; `Keep` → never; `Days(n)` → when `now >= first_seen + n days`.
pub fn may_delete(retention: Retention, state: &MessageState, now: SystemTime) -> bool {
    if state.settled_at.is_none() {
        return false;
    }
    match retention {
        Retention::Delete => true,
        Retention::Keep => false,
        Retention::Days(n) => DAY
            .checked_mul(n)
            .and_then(|keep| state.first_seen.checked_add(keep))
            // A deadline beyond what SystemTime can hold is never reached.
            .is_some_and(|deadline| now >= deadline),
    }
}

/// What the server's own deletion (POP3 `EXPIRE`) means for an account's `retention`, when it
/// defeats it: said once, in words an administrator can act on.
pub fn expire_conflict(retention: Retention, expire: Expire) -> Option<String> {
    let days = match expire {
        Expire::Never => return None,
        Expire::Days(days) => days,
    };
    if days == 0 {
        return Some(
            "the server deletes every message once it was downloaded (POP3 EXPIRE 0), whatever \
             retention says: a message whose delivery fails after its download is no longer \
             upstream to try again; ask the provider to keep mail (EXPIRE NEVER) if it can"
                .to_owned(),
        );
    }
    match retention {
        Retention::Delete => None,
        Retention::Keep => Some(format!(
            "retention keep, but the server deletes downloaded messages after {days} day(s) (POP3 EXPIRE {days})"
        )),
        Retention::Days(n) if u64::from(n) > days => Some(format!(
            "retention {n}d, but the server deletes downloaded messages after {days} day(s) (POP3 EXPIRE {days})"
        )),
        Retention::Days(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
    }

    #[test]
    fn the_server_s_expire_is_said_only_where_it_defeats_retention() {
        assert_eq!(expire_conflict(Retention::Keep, Expire::Never), None);
        assert_eq!(expire_conflict(Retention::Delete, Expire::Days(7)), None);
        assert_eq!(expire_conflict(Retention::Days(7), Expire::Days(7)), None);
        let zero = expire_conflict(Retention::Delete, Expire::Days(0)).unwrap();
        assert!(zero.contains("EXPIRE 0"), "{zero}");
        let keep = expire_conflict(Retention::Keep, Expire::Days(30)).unwrap();
        assert!(
            keep.contains("retention keep") && keep.contains("30 day"),
            "{keep}"
        );
        let days = expire_conflict(Retention::Days(14), Expire::Days(7)).unwrap();
        assert!(days.contains("retention 14d"), "{days}");
    }

    fn state(first_seen: u64, settled: bool) -> MessageState {
        MessageState {
            settled_at: settled.then(|| at(first_seen + 10)),
            ..MessageState::new(at(first_seen))
        }
    }

    const T0: u64 = 1_700_000_000;
    const DAY_S: u64 = 86_400;

    #[test]
    fn unsettled_is_never_deleted() {
        let s = state(T0, false);
        for r in [
            Retention::Delete,
            Retention::Keep,
            Retention::Days(0),
            Retention::Days(1),
        ] {
            assert!(!may_delete(r, &s, at(T0 + 1000 * DAY_S)), "{r:?}");
        }
    }

    #[test]
    fn delete_is_at_once_once_settled() {
        assert!(may_delete(Retention::Delete, &state(T0, true), at(T0)));
    }

    #[test]
    fn keep_is_never() {
        assert!(!may_delete(
            Retention::Keep,
            &state(T0, true),
            at(T0 + 10_000 * DAY_S)
        ));
    }

    #[test]
    fn days_boundary_is_inclusive() {
        let s = state(T0, true);
        let r = Retention::Days(14);
        assert!(!may_delete(r, &s, at(T0 + 14 * DAY_S - 1)));
        assert!(may_delete(r, &s, at(T0 + 14 * DAY_S)));
        assert!(may_delete(r, &s, at(T0 + 15 * DAY_S)));
    }

    #[test]
    fn days_count_from_first_seen_not_settled() {
        // Settled long after it was first seen (a recipient kept answering 4xx): the days run
        // from first_seen.
        let mut s = state(T0, true);
        s.settled_at = Some(at(T0 + 13 * DAY_S));
        assert!(may_delete(Retention::Days(14), &s, at(T0 + 14 * DAY_S)));
    }

    #[test]
    fn zero_days_is_at_once() {
        assert!(may_delete(Retention::Days(0), &state(T0, true), at(T0)));
    }

    #[test]
    fn huge_days_do_not_overflow() {
        assert!(!may_delete(
            Retention::Days(u32::MAX),
            &state(T0, true),
            at(T0 + 100 * DAY_S)
        ));
    }
}
