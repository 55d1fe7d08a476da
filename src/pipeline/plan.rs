//! Pure decisions of a pass about one upstream message: whether to try it now, and what a
//! failed attempt leads to; and which messages a session will download, for fetching ahead.
//! No I/O; the pass acts on the answers.

use std::collections::{HashMap, HashSet};
use std::time::SystemTime;

use crate::config::RetryPolicy;
use crate::fetch::Listed;
use crate::state::MessageState;

/// What to do with a message found in the listing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Every recipient settled: only retention has a say.
    Settled,
    /// Quarantined: not tried; the postmaster is told if nobody told them yet.
    Quarantined,
    /// Failed earlier; its back-off has not run out.
    Wait,
    /// `max_per_pass` reached: next pass.
    Defer,
    /// Attempted `max_attempts` times already (perhaps it crashed the process each time):
    /// quarantine it without trying again.
    GiveUp,
    /// Download and deliver it.
    Attempt,
}

/// The next step for a message in state `state` (`None`: never seen), with `budget_left`
/// while fewer than `max_per_pass` messages were downloaded in this pass.
pub fn next(
    state: Option<&MessageState>,
    now: SystemTime,
    retry: &RetryPolicy,
    budget_left: bool,
) -> Next {
    match state {
        Some(s) if s.quarantine.is_some() => Next::Quarantined,
        Some(s) if s.settled_at.is_some() => Next::Settled,
        Some(s) if s.retry_at.is_some_and(|at| at > now) => Next::Wait,
        _ if !budget_left => Next::Defer,
        Some(s) if s.attempts >= retry.max_attempts => Next::GiveUp,
        _ => Next::Attempt,
    }
}

/// After the `attempts`-th attempt failed for a reason that may pass: `Some(time)` to try
/// again then, `None` when the attempts are used up (quarantine).
pub fn after_failure(attempts: u32, now: SystemTime, retry: &RetryPolicy) -> Option<SystemTime> {
    (attempts < retry.max_attempts).then(|| now + retry.delay(attempts))
}

/// Whether a mailbox's keys all changed at once (an IMAP UIDVALIDITY change, a mailbox
/// recreated): something is listed, none of it is known, and known messages that were not
/// deleted by us are no longer listed. `Some(how many vanished)`.
pub fn keys_replaced(
    known: &HashMap<String, MessageState>,
    listed: &HashSet<String>,
) -> Option<usize> {
    if listed.is_empty() || listed.iter().any(|k| known.contains_key(k)) {
        return None;
    }
    let vanished = known.values().filter(|s| s.deleted_at.is_none()).count();
    (vanished > 0).then_some(vanished)
}

/// The messages of `listing` that a session's loop will attempt, in order, as far as can be
/// told before it starts: those [`next`] says to attempt, not `tried` in this pass already,
/// not larger than `size_max` by the listing, at most `budget` of them. (A back-off that
/// ends meanwhile, or a failed download that leaves budget for one more, is fetched
/// without having been planned.)
pub fn upcoming(
    listing: &[Listed],
    known: &HashMap<String, MessageState>,
    tried: &HashSet<String>,
    size_max: u64,
    budget: usize,
    now: SystemTime,
    retry: &RetryPolicy,
) -> Vec<Listed> {
    (listing.iter())
        .filter(|l| !tried.contains(&l.key) && l.size.is_none_or(|n| n <= size_max))
        .filter(|l| next(known.get(&l.key), now, retry, true) == Next::Attempt)
        .take(budget)
        .cloned()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::Quarantined;
    use std::time::Duration;

    fn at(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
    }

    fn policy() -> RetryPolicy {
        RetryPolicy {
            max_attempts: 3,
            initial: Duration::from_secs(60),
            max: Duration::from_secs(300),
        }
    }

    #[test]
    fn upcoming_are_the_messages_to_attempt_within_the_budget_in_listing_order() {
        let listed = |key: &str, size| Listed {
            key: key.to_owned(),
            handle: 0,
            size: Some(size),
            seen: false,
        };
        let listing = [
            listed("settled", 10),
            listed("waiting", 10),
            listed("tried", 10),
            listed("huge", 1000),
            listed("new-1", 10),
            listed("failed-before", 10),
            listed("new-2", 10),
        ];
        let mut settled = MessageState::new(at(0));
        settled.settled_at = Some(at(1));
        let mut waiting = MessageState::new(at(0));
        waiting.retry_at = Some(at(100));
        let mut failed = MessageState::new(at(0));
        failed.attempts = 1;
        let known = HashMap::from([
            ("settled".to_owned(), settled),
            ("waiting".to_owned(), waiting),
            ("failed-before".to_owned(), failed),
        ]);
        let tried = HashSet::from(["tried".to_owned()]);
        let keys = |budget| {
            upcoming(&listing, &known, &tried, 100, budget, at(10), &policy())
                .into_iter()
                .map(|l| l.key)
                .collect::<Vec<_>>()
        };
        assert_eq!(keys(10), ["new-1", "failed-before", "new-2"]);
        assert_eq!(keys(2), ["new-1", "failed-before"]);
    }

    #[test]
    fn a_new_message_is_attempted_unless_the_pass_budget_is_spent() {
        assert_eq!(next(None, at(0), &policy(), true), Next::Attempt);
        assert_eq!(next(None, at(0), &policy(), false), Next::Defer);
    }

    #[test]
    fn settled_and_quarantined_messages_are_never_attempted() {
        let mut s = MessageState::new(at(0));
        s.settled_at = Some(at(1));
        assert_eq!(next(Some(&s), at(2), &policy(), true), Next::Settled);
        let mut q = MessageState::new(at(0));
        q.quarantine = Some(Quarantined {
            id: 1,
            reason: "x".into(),
            notified: false,
            forgotten: false,
        });
        assert_eq!(next(Some(&q), at(2), &policy(), true), Next::Quarantined);
    }

    #[test]
    fn a_failed_message_waits_for_its_back_off() {
        let mut s = MessageState::new(at(0));
        s.attempts = 1;
        s.retry_at = Some(at(100));
        assert_eq!(next(Some(&s), at(99), &policy(), true), Next::Wait);
        assert_eq!(next(Some(&s), at(100), &policy(), true), Next::Attempt);
    }

    #[test]
    fn attempts_used_up_means_quarantine_without_another_try() {
        let mut s = MessageState::new(at(0));
        s.attempts = 3;
        assert_eq!(next(Some(&s), at(0), &policy(), true), Next::GiveUp);
    }

    #[test]
    fn back_off_doubles_up_to_the_maximum_then_gives_up() {
        let p = policy();
        assert_eq!(after_failure(1, at(0), &p), Some(at(60)));
        assert_eq!(after_failure(2, at(0), &p), Some(at(120)));
        assert_eq!(after_failure(3, at(0), &p), None);
        let long = RetryPolicy {
            max_attempts: 100,
            ..p
        };
        assert_eq!(after_failure(4, at(0), &long), Some(at(300)));
        assert_eq!(after_failure(99, at(0), &long), Some(at(300)));
    }

    #[test]
    fn keys_replaced_only_when_everything_listed_is_new_and_known_mail_vanished() {
        let known: HashMap<String, MessageState> = [("1:5", None), ("1:6", Some(at(10)))]
            .into_iter()
            .map(|(k, deleted)| {
                let mut s = MessageState::new(at(1));
                s.deleted_at = deleted;
                (k.to_owned(), s)
            })
            .collect();
        let keys = |l: &[&str]| l.iter().map(|k| k.to_string()).collect::<HashSet<_>>();
        assert_eq!(keys_replaced(&known, &keys(&["2:1", "2:2"])), Some(1));
        assert_eq!(
            keys_replaced(&known, &keys(&["1:5", "2:2"])),
            None,
            "one is known"
        );
        assert_eq!(keys_replaced(&known, &keys(&[])), None, "nothing listed");
        let only_deleted: HashMap<_, _> = known.into_iter().filter(|(k, _)| k == "1:6").collect();
        assert_eq!(
            keys_replaced(&only_deleted, &keys(&["2:1"])),
            None,
            "we deleted it"
        );
    }
}
