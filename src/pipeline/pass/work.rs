//! What a message in flight does after its download — its attempt counted, route → relay →
//! state, and what the outcome leads to: a back-off, a quarantine, the postmaster's notice.
//! Each piece of work returns what it adds to the pass's report and where the message ended.

use std::future::Future;
use std::time::SystemTime;

use super::{Attempt, Ctx, PassError, PassReport, Worked};
use crate::pipeline::deliver::{self, Prepared, Verdict};
use crate::pipeline::{notice, plan};
use crate::recipient::Status;
use crate::relay::Relay;
use crate::state::{Headline, MessageState, Quarantined, StateStore};

/// What a message in flight does, after its download: each returns what it adds to the
/// pass's report, and where the message ended.
impl<'a, St: StateStore, R: Relay> Ctx<'a, St, R> {
    /// One downloaded message: its attempt counted, then route → relay → state.
    pub(super) fn deliver(
        self,
        uid: &str,
        raw: Vec<u8>,
    ) -> impl Future<Output = Worked> + Send + 'a {
        let uid = uid.to_owned();
        async move {
            let mut tally = PassReport::default();
            let result = self.attempt(&uid, &raw, &mut tally).await;
            (tally, result)
        }
    }

    async fn attempt(
        self,
        uid: &str,
        raw: &[u8],
        tally: &mut PassReport,
    ) -> Result<Attempt, PassError> {
        let name = self.account.name.as_str();
        // Counted before anything parses the message: one that crashes the process every
        // time is quarantined in the end. (Its download went on meanwhile, overlapping the
        // write; reading the bytes parses nothing.)
        let state = (self.store.begin_attempt(name, uid, SystemTime::now())).await?;
        // A loop is never delivered: kept upstream, recorded, counted, the postmaster told.
        if let Some(looped) = crate::route::looped(raw, self.rules) {
            let excerpt = notice::excerpt(raw);
            (self.quarantine(uid, "loop", &looped.to_string(), &excerpt, tally)).await?;
            return Ok(Attempt::Unsettled);
        }
        let prepared = Prepared::new(self.config, self.account, self.rules, uid, &state, raw);
        self.relay_and_record(uid, &state, prepared, raw, tally)
            .await
    }

    async fn relay_and_record(
        self,
        uid: &str,
        state: &MessageState,
        prepared: Prepared,
        raw: &[u8],
        tally: &mut PassReport,
    ) -> Result<Attempt, PassError> {
        let name = self.account.name.as_str();
        let outcome = deliver::deliver(
            self.config,
            self.account,
            self.relay,
            self.store,
            uid,
            prepared,
            raw,
        )
        .await?;
        tally.delivered += outcome.plan.delivered();
        tally.rerouted += outcome.plan.rerouted();
        let excerpt = notice::excerpt(raw);
        Ok(match outcome.verdict {
            Verdict::Settled(state) => {
                tally.settled += 1;
                Attempt::Settled(state)
            }
            Verdict::Retry(why) => {
                self.record_failed(uid, state, &why, true, "attempts", &excerpt, tally)
                    .await?;
                Attempt::Unsettled
            }
            Verdict::Refused(why) => {
                crate::metrics::message_failed(name, "refused");
                self.quarantine(uid, "refused", &why, &excerpt, tally)
                    .await?;
                Attempt::Unsettled
            }
            Verdict::RelayUnavailable(why) => {
                tally.failed += 1;
                // Not the message's fault: the attempt does not count.
                self.store
                    .record_failure(name, uid, None, &why, true)
                    .await?;
                Attempt::RelayUnavailable
            }
        })
    }

    /// A failed download, as work for the flight: its attempt counted, then backing off.
    pub(super) fn failed(
        self,
        uid: &str,
        why: String,
        wait: bool,
        metric: &'static str,
    ) -> impl Future<Output = Worked> + Send + 'a {
        let uid = uid.to_owned();
        async move {
            let mut tally = PassReport::default();
            let name = self.account.name.as_str();
            let result = match self
                .store
                .begin_attempt(name, &uid, SystemTime::now())
                .await
            {
                Ok(state) => (self.record_failed(&uid, &state, &why, wait, metric, "", &mut tally))
                    .await
                    .map(|()| Attempt::Unsettled),
                Err(e) => Err(e.into()),
            };
            (tally, result)
        }
    }

    /// A quarantine, as work for the flight.
    pub(super) fn give_up(
        self,
        uid: &str,
        metric: &'static str,
        reason: &str,
        excerpt: &str,
    ) -> impl Future<Output = Worked> + Send + 'a {
        let (uid, reason, excerpt) = (uid.to_owned(), reason.to_owned(), excerpt.to_owned());
        async move {
            let mut tally = PassReport::default();
            let result = (self.quarantine(&uid, metric, &reason, &excerpt, &mut tally))
                .await
                .map(|()| Attempt::Unsettled);
            (tally, result)
        }
    }

    /// A failed attempt: back off (with `wait`), or quarantine once the attempts are used up.
    #[allow(clippy::too_many_arguments)]
    async fn record_failed(
        self,
        uid: &str,
        state: &MessageState,
        why: &str,
        wait: bool,
        metric: &'static str,
        excerpt: &str,
        tally: &mut PassReport,
    ) -> Result<(), PassError> {
        let name = self.account.name.as_str();
        let now = SystemTime::now();
        match plan::after_failure(state.attempts, now, &self.config.relay.retry) {
            Some(at) => {
                tally.failed += 1;
                let retry_at = wait.then_some(at);
                self.store
                    .record_failure(name, uid, retry_at, why, false)
                    .await?;
                Ok(())
            }
            None => {
                let reason = format!("{why} (after {} attempts)", state.attempts);
                self.quarantine(uid, metric, &reason, excerpt, tally).await
            }
        }
    }

    /// Quarantines a message: left upstream, recorded, counted, the postmaster told.
    async fn quarantine(
        self,
        uid: &str,
        metric: &'static str,
        reason: &str,
        excerpt: &str,
        tally: &mut PassReport,
    ) -> Result<(), PassError> {
        let name = self.account.name.as_str();
        tracing::warn!(account = name, uid, "quarantined, left upstream: {reason}");
        let q = self
            .store
            .quarantine(name, uid, reason, &Headline::of(excerpt), SystemTime::now())
            .await?;
        crate::metrics::message_quarantined(name, metric);
        tally.quarantined += 1;
        self.tell_postmaster(uid, &q, excerpt).await
    }

    /// Tells the postmaster about a quarantined message, once: a notice that could not be
    /// sent is tried again next pass.
    pub(super) async fn tell_postmaster(
        self,
        uid: &str,
        q: &Quarantined,
        excerpt: &str,
    ) -> Result<(), PassError> {
        if q.notified || q.forgotten {
            return Ok(());
        }
        let name = self.account.name.as_str();
        let text = notice::quarantine(
            &notice::QuarantineNotice {
                account: name,
                uidl: uid,
                id: q.id,
                reason: &q.reason,
                excerpt,
            },
            &self.relay.helo_name(),
            SystemTime::now(),
        );
        let postmaster = std::slice::from_ref(&self.config.postmaster);
        match self.relay.send(None, postmaster, &text).await {
            Ok(results) => match results.first().map(|r| &r.status) {
                Some(Status::Delivered(_)) => {
                    self.store.mark_notified(q.id, SystemTime::now()).await?;
                }
                // Refused for good: asking again every pass would only repeat the refusal.
                Some(Status::Permanent(reply)) => {
                    tracing::warn!(
                        account = name,
                        uid,
                        "the postmaster refused the quarantine notice for good: {reply}"
                    );
                    self.store.mark_notified(q.id, SystemTime::now()).await?;
                }
                _ => tracing::warn!(
                    account = name,
                    uid,
                    "the postmaster did not take the quarantine notice; will try again"
                ),
            },
            Err(e) => tracing::warn!(
                account = name,
                uid,
                "cannot send the quarantine notice to the postmaster; will try again: {e}"
            ),
        }
        Ok(())
    }
}
