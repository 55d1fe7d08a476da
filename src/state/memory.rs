//! The in-memory state store of the pipeline's unit tests: the same rules as SQLite (a
//! settled recipient stays settled, the first settle time counts, a quarantine keeps its
//! first reason), no file, and a switch that makes every write fail.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::SystemTime;

use crate::recipient::Recipient;

use super::{Headline, MessageState, QuarantineEntry, Quarantined, StateError, StateStore};

/// A state store held in memory; clones share it.
#[derive(Debug, Clone, Default)]
pub struct MemoryStore {
    inner: Arc<Mutex<Inner>>,
}

#[derive(Debug, Default)]
struct Inner {
    /// By (account, message key).
    messages: HashMap<(String, String), MessageState>,
    /// Account name → mailbox.
    accounts: HashMap<String, String>,
    next_quarantine_id: i64,
    /// Quarantine id → (account, key, headline, when).
    quarantined: HashMap<i64, (String, String, Headline, SystemTime)>,
    /// (dedup id, recipient) → when.
    deliveries: HashMap<(String, String), SystemTime>,
    /// Set by [`MemoryStore::fail_writes`]: every write fails with this reason.
    failing: Option<String>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> MemoryStore {
        MemoryStore::default()
    }

    /// From now on every write fails (`Some(reason)`), or writes go through again (`None`).
    pub fn fail_writes(&self, reason: Option<&str>) {
        self.lock().failing = reason.map(str::to_owned);
    }

    /// The state of one message, if the store holds it.
    pub fn message(&self, account: &str, key: &str) -> Option<MessageState> {
        self.lock()
            .messages
            .get(&(account.to_owned(), key.to_owned()))
            .cloned()
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The store for a write: `Err` while writes fail.
    fn write(&self) -> Result<MutexGuard<'_, Inner>, StateError> {
        let inner = self.lock();
        match &inner.failing {
            Some(reason) => Err(StateError::Unwritable {
                reason: reason.clone(),
            }),
            None => Ok(inner),
        }
    }
}

impl Inner {
    fn entry(&mut self, account: &str, key: &str, now: SystemTime) -> &mut MessageState {
        self.messages
            .entry((account.to_owned(), key.to_owned()))
            .or_insert_with(|| MessageState::new(now))
    }
}

impl StateStore for MemoryStore {
    async fn ensure_writable(&self) -> Result<(), StateError> {
        self.write().map(drop)
    }

    async fn load_account(
        &self,
        account: &str,
    ) -> Result<HashMap<String, MessageState>, StateError> {
        Ok(self
            .lock()
            .messages
            .iter()
            .filter(|((a, _), _)| a == account)
            .map(|((_, key), state)| (key.clone(), state.clone()))
            .collect())
    }

    async fn begin_attempt(
        &self,
        account: &str,
        key: &str,
        now: SystemTime,
    ) -> Result<MessageState, StateError> {
        let mut inner = self.write()?;
        let state = inner.entry(account, key, now);
        state.attempts += 1;
        Ok(state.clone())
    }

    async fn record_failure(
        &self,
        account: &str,
        key: &str,
        retry_at: Option<SystemTime>,
        _why: &str,
        uncount: bool,
    ) -> Result<(), StateError> {
        let mut inner = self.write()?;
        if let Some(state) = inner
            .messages
            .get_mut(&(account.to_owned(), key.to_owned()))
        {
            state.retry_at = retry_at;
            if uncount {
                state.attempts = state.attempts.saturating_sub(1);
            }
        }
        Ok(())
    }

    async fn record_recipients(
        &self,
        account: &str,
        key: &str,
        dedup: Option<&str>,
        recipients: &[Recipient],
        settle: bool,
        now: SystemTime,
    ) -> Result<MessageState, StateError> {
        let mut inner = self.write()?;
        for r in recipients {
            if let Some(dedup) = dedup.filter(|_| r.status.is_settled()) {
                let entry = (dedup.to_owned(), r.address.dedup_key());
                inner.deliveries.insert(entry, now);
            }
        }
        let state = inner.entry(account, key, now);
        state.record(recipients);
        if settle {
            state.settled_at.get_or_insert(now);
            state.retry_at = None;
        }
        Ok(state.clone())
    }

    async fn account_known(&self, account: &str, mailbox: &str) -> Result<bool, StateError> {
        let mut inner = self.lock();
        if let Some(known) = inner.accounts.get_mut(account) {
            *known = mailbox.to_owned();
            return Ok(true);
        }
        let old = inner
            .accounts
            .iter()
            .find(|(_, m)| *m == mailbox)
            .map(|(name, _)| name.clone());
        let Some(old) = old else { return Ok(false) };
        inner.accounts.remove(&old);
        inner
            .accounts
            .insert(account.to_owned(), mailbox.to_owned());
        let moved: Vec<_> = inner
            .messages
            .keys()
            .filter(|(a, _)| *a == old)
            .cloned()
            .collect();
        for key in moved {
            let state = inner.messages.remove(&key).expect("listed");
            inner.messages.insert((account.to_owned(), key.1), state);
        }
        Ok(true)
    }

    async fn initialize_account(
        &self,
        account: &str,
        mailbox: &str,
        skip: &[String],
        now: SystemTime,
    ) -> Result<(), StateError> {
        let mut inner = self.write()?;
        for key in skip {
            inner.entry(account, key, now).settled_at.get_or_insert(now);
        }
        inner
            .accounts
            .insert(account.to_owned(), mailbox.to_owned());
        Ok(())
    }

    async fn mark_deleted(
        &self,
        account: &str,
        keys: &[String],
        now: SystemTime,
    ) -> Result<(), StateError> {
        let mut inner = self.write()?;
        for key in keys {
            if let Some(state) = inner.messages.get_mut(&(account.to_owned(), key.clone())) {
                state.deleted_at.get_or_insert(now);
            }
        }
        Ok(())
    }

    async fn prune(&self, account: &str, present: &HashSet<String>) -> Result<usize, StateError> {
        let mut inner = self.write()?;
        let before = inner.messages.len();
        inner.messages.retain(|(a, key), state| {
            a != account
                || present.contains(key)
                || (state.settled_at.is_none() && state.quarantine.is_none())
        });
        Ok(before - inner.messages.len())
    }

    async fn quarantine(
        &self,
        account: &str,
        key: &str,
        reason: &str,
        headline: &Headline,
        now: SystemTime,
    ) -> Result<Quarantined, StateError> {
        let mut inner = self.write()?;
        inner.next_quarantine_id += 1;
        let id = inner.next_quarantine_id;
        let state = inner.entry(account, key, now);
        let q = (state.quarantine)
            .get_or_insert_with(|| Quarantined {
                id,
                reason: reason.to_owned(),
                notified: false,
                forgotten: false,
            })
            .clone();
        (inner.quarantined.entry(q.id))
            .or_insert_with(|| (account.to_owned(), key.to_owned(), headline.clone(), now));
        Ok(q)
    }

    async fn quarantined(&self) -> Result<Vec<QuarantineEntry>, StateError> {
        let inner = self.lock();
        let mut out: Vec<QuarantineEntry> = (inner.quarantined.iter())
            .filter_map(|(id, (account, key, headline, since))| {
                let state = inner.messages.get(&(account.clone(), key.clone()))?;
                let q = state.quarantine.as_ref().filter(|q| !q.forgotten)?;
                Some(QuarantineEntry {
                    id: *id,
                    account: account.clone(),
                    uidl: key.clone(),
                    since: *since,
                    reason: q.reason.clone(),
                    attempts: state.attempts,
                    notified: q.notified,
                    headline: headline.clone(),
                })
            })
            .collect();
        out.sort_by_key(|e| e.id);
        Ok(out)
    }

    async fn delivered_before(
        &self,
        dedup: &str,
        recipients: &[String],
        since: SystemTime,
    ) -> Result<HashSet<String>, StateError> {
        let inner = self.lock();
        Ok(recipients
            .iter()
            .filter(|r| {
                let entry = (dedup.to_owned(), (*r).clone());
                inner.deliveries.get(&entry).is_some_and(|at| *at >= since)
            })
            .cloned()
            .collect())
    }

    async fn forget_deliveries(&self, before: SystemTime) -> Result<usize, StateError> {
        let mut inner = self.write()?;
        let n = inner.deliveries.len();
        inner.deliveries.retain(|_, at| *at >= before);
        Ok(n - inner.deliveries.len())
    }

    async fn mark_notified(&self, id: i64, _now: SystemTime) -> Result<(), StateError> {
        let mut inner = self.write()?;
        for state in inner.messages.values_mut() {
            if let Some(q) = state.quarantine.as_mut().filter(|q| q.id == id) {
                q.notified = true;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::address::Address;
    use crate::recipient::Status;
    use crate::relay::Reply;

    fn with(address: &str, status: Status) -> Recipient {
        Recipient {
            address: Address::parse(address).unwrap(),
            status,
        }
    }

    #[tokio::test]
    async fn statuses_follow_the_rules_of_the_sqlite_store() {
        let store = MemoryStore::new();
        let now = SystemTime::UNIX_EPOCH;
        let ok = Status::Delivered(Reply {
            code: 250,
            text: "ok".into(),
        });
        let later = Status::Temporary(Reply {
            code: 451,
            text: "later".into(),
        });
        let first = [
            with("a@example.com", ok.clone()),
            with("b@example.com", later.clone()),
            with("c@example.com", Status::Pending),
        ];
        let s = (store.record_recipients("acct", "k", Some("id"), &first, false, now)).await;
        let s = s.unwrap();
        assert_eq!(s.recipients.len(), 2, "nothing known of a pending one");
        // A later reply does not unsettle a settled recipient; a pending one can settle.
        let second = [
            with("A@example.com", later.clone()),
            with("b@example.com", ok.clone()),
        ];
        let s = (store.record_recipients("acct", "k", Some("id"), &second, true, now)).await;
        let s = s.unwrap();
        assert_eq!(s.settled_recipients().len(), 2);
        assert_eq!(
            s.status_of(&Address::parse("a@example.com").unwrap()),
            Some(&ok)
        );
        let keys = ["a@example.com".to_owned(), "c@example.com".to_owned()];
        let got = store.delivered_before("id", &keys, now).await.unwrap();
        assert_eq!(got, HashSet::from(["a@example.com".to_owned()]));
    }
}
