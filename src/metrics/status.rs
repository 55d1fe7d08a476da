//! The account-status registry behind the status page: what each account's poller is doing,
//! kept in memory as the passes report it (nothing here is written to disk).

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};
use std::time::SystemTime;

use crate::fetch::Listed;
use crate::pipeline::{PassError, PassReport};
use crate::state::MessageState;

/// What an account is doing, as the status page says it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Not polled yet.
    Starting,
    /// A pass is running.
    Polling,
    /// The last pass worked; waiting for the next.
    Idle,
    /// The server refuses the login: the next attempt waits ever longer.
    BackingOff,
    /// The last pass failed.
    Failing,
}

impl State {
    /// The word on the page.
    pub fn word(self) -> &'static str {
        match self {
            State::Starting => "starting",
            State::Polling => "polling",
            State::Idle => "idle",
            State::BackingOff => "backing off",
            State::Failing => "failing",
        }
    }
}

/// One account as the status page shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountStatus {
    /// The account's name.
    pub name: String,
    /// `pop3` or `imap`, and the server.
    pub server: String,
    /// What it is doing.
    pub state: State,
    /// The last pass's error, in words, while it is failing or backing off.
    pub why: Option<String>,
    /// When the last pass began.
    pub last_started: Option<SystemTime>,
    /// When the last pass ended.
    pub last_finished: Option<SystemTime>,
    /// What the last successful pass did.
    pub last_report: Option<String>,
    /// When the next pass is due.
    pub next_at: Option<SystemTime>,
    /// Messages upstream not yet settled.
    pub waiting: Option<usize>,
    /// Messages upstream settled and kept by retention.
    pub kept: Option<usize>,
    /// Messages in quarantine.
    pub quarantined: Option<usize>,
}

#[derive(Default)]
struct Registry {
    /// In the order the accounts were registered (the configuration's).
    order: Vec<String>,
    accounts: HashMap<String, AccountStatus>,
}

static REGISTRY: Mutex<Option<Registry>> = Mutex::new(None);

fn with<T>(name: &str, f: impl FnOnce(&mut AccountStatus) -> T) -> T {
    let mut guard = lock();
    let reg = guard.get_or_insert_with(Registry::default);
    if !reg.accounts.contains_key(name) {
        reg.order.push(name.to_owned());
    }
    let entry = reg
        .accounts
        .entry(name.to_owned())
        .or_insert_with(|| AccountStatus {
            name: name.to_owned(),
            server: String::new(),
            state: State::Starting,
            why: None,
            last_started: None,
            last_finished: None,
            last_report: None,
            next_at: None,
            waiting: None,
            kept: None,
            quarantined: None,
        });
    f(entry)
}

fn lock() -> MutexGuard<'static, Option<Registry>> {
    // A panic elsewhere while holding it leaves plain data behind: still usable.
    REGISTRY.lock().unwrap_or_else(|e| e.into_inner())
}

/// The account's poller started (`server` says which mailbox, e.g. `pop3 pop.example.net`).
pub fn registered(name: &str, server: String) {
    with(name, |a| a.server = server);
}

/// The account is no longer configured: not shown any more.
pub fn removed(name: &str) {
    if let Some(reg) = lock().as_mut() {
        reg.order.retain(|n| n != name);
        reg.accounts.remove(name);
    }
}

/// A pass of the account began.
pub fn pass_started(name: &str) {
    with(name, |a| {
        a.state = State::Polling;
        a.last_started = Some(SystemTime::now());
    });
}

/// What the account's mailbox holds as the pass listed it: (waiting, kept, quarantined).
pub fn mailbox_listed(
    name: &str,
    listing: &[Listed],
    known: &HashMap<String, MessageState>,
) -> (usize, usize, usize) {
    let (waiting, kept, quarantined) = count(listing, known);
    with(name, |a| {
        a.waiting = Some(waiting);
        a.kept = Some(kept);
        a.quarantined = Some(quarantined);
    });
    (waiting, kept, quarantined)
}

/// Pure: of the listed messages, those not settled (and not quarantined), those settled and
/// still upstream; and the account's quarantined messages (forgotten ones not counted).
pub fn count(listing: &[Listed], known: &HashMap<String, MessageState>) -> (usize, usize, usize) {
    let (mut waiting, mut kept) = (0, 0);
    for listed in listing {
        match known.get(&listed.key) {
            Some(s) if s.quarantine.is_some() => {}
            Some(s) if s.settled_at.is_some() => kept += 1,
            _ => waiting += 1,
        }
    }
    let quarantined = (known.values())
        .filter(|s| s.quarantine.as_ref().is_some_and(|q| !q.forgotten))
        .count();
    (waiting, kept, quarantined)
}

/// A pass ended; returns (waiting, kept) as the pass left the mailbox, if known: what was
/// listed, less what it settled or quarantined, and what it deleted.
pub fn pass_finished(
    name: &str,
    result: Result<&PassReport, &PassError>,
) -> (Option<usize>, Option<usize>) {
    with(name, |a| {
        a.last_finished = Some(SystemTime::now());
        match result {
            Ok(report) => {
                a.state = State::Idle;
                a.why = None;
                a.last_report = Some(report.to_string());
                a.waiting = a
                    .waiting
                    .map(|w| w.saturating_sub(report.settled + report.quarantined));
                a.kept = a
                    .kept
                    .map(|k| (k + report.settled).saturating_sub(report.deleted));
                a.quarantined = a.quarantined.map(|q| q + report.quarantined);
            }
            Err(e) => {
                a.state = State::Failing;
                a.why = Some(e.to_string());
            }
        }
        (a.waiting, a.kept)
    })
}

/// The account's next pass is due at `at`; `backing_off` while its logins are refused.
pub fn next_pass(name: &str, at: SystemTime, backing_off: bool) {
    with(name, |a| {
        a.next_at = Some(at);
        if backing_off {
            a.state = State::BackingOff;
        }
    });
}

/// Every registered account, in the configuration's order.
pub fn snapshot() -> Vec<AccountStatus> {
    let guard = lock();
    let Some(reg) = guard.as_ref() else {
        return Vec::new();
    };
    (reg.order.iter())
        .filter_map(|n| reg.accounts.get(n).cloned())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fetch::FetchError;
    use crate::fetch::Pop3Error;
    use crate::state::Quarantined;

    fn listed(key: &str) -> Listed {
        Listed {
            handle: 1,
            key: key.into(),
            size: None,
            seen: false,
        }
    }

    #[test]
    fn a_pass_moves_the_account_through_its_states_and_counts() {
        let name = "status-unit-account";
        registered(name, "pop3 pop.example.net".into());
        pass_started(name);
        let now = SystemTime::now();
        let mut settled = MessageState::new(now);
        settled.settled_at = Some(now);
        let mut quarantined = MessageState::new(now);
        quarantined.quarantine = Some(Quarantined {
            id: 1,
            reason: "loop".into(),
            notified: true,
            forgotten: false,
        });
        let known = HashMap::from([("b".to_owned(), settled), ("c".to_owned(), quarantined)]);
        let listing = [listed("a"), listed("b"), listed("c"), listed("d")];
        assert_eq!(mailbox_listed(name, &listing, &known), (2, 1, 1));
        let report = PassReport {
            settled: 2,
            deleted: 2,
            ..PassReport::default()
        };
        assert_eq!(pass_finished(name, Ok(&report)), (Some(0), Some(1)));
        let a = snapshot().into_iter().find(|a| a.name == name).unwrap();
        assert_eq!(a.state, State::Idle);

        pass_started(name);
        let e = PassError::Fetch(FetchError::Pop3(Pop3Error::ConnectionClosed));
        pass_finished(name, Err(&e));
        let a = snapshot().into_iter().find(|a| a.name == name).unwrap();
        assert_eq!(a.state, State::Failing);
        assert_eq!(a.why, Some(e.to_string()));
        next_pass(name, now, true);
        let a = snapshot().into_iter().find(|a| a.name == name).unwrap();
        assert_eq!(a.state, State::BackingOff);
        removed(name);
        assert!(snapshot().iter().all(|a| a.name != name));
    }
}
