//! One message's way through route → relay → state, wiring around the planner
//! (`decide::Plan`): route it, ask the store who got it already, one SMTP transaction for the
//! recipients not yet done, the postmaster's copy of what was refused for good, and each
//! recipient's status written as it is known.

use std::time::SystemTime;

use crate::address::Address;
use crate::config::{AccountConfig, Config};
use crate::recipient::{Status, WholeRefusal};
use crate::relay::{Relay, RelayError, received_header};
use crate::route::{self, Rules};
use crate::state::{MessageState, StateError, StateStore};

use super::decide::{self, Copy, Plan, Refusal, Standing};

/// Where one message stands after an attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Every recipient is settled (delivered or re-routed to the postmaster): the message's
    /// state as the store now holds it.
    Settled(MessageState),
    /// Not settled, for a reason that may pass (a 4xx, a timeout): try again after a back-off.
    Retry(String),
    /// Refused for good with nowhere else to go (the postmaster's copy was refused too):
    /// quarantine.
    Refused(String),
    /// No SMTP session could be set up: every other message would fail alike; not the
    /// message's fault.
    RelayUnavailable(String),
}

/// What happened to one message: where it stands, and each of its recipients.
#[derive(Debug)]
pub struct Delivery {
    /// Where the message stands.
    pub verdict: Verdict,
    /// Its recipients, as the attempt left them.
    pub plan: Plan,
}

/// A message routed and planned, not yet sent: the first half of [`deliver`], free of I/O.
pub struct Prepared {
    routing: route::Routing,
    plan: Plan,
    /// The dedup id and the start of the window it is looked up in.
    dedup: Option<(String, SystemTime)>,
    now: SystemTime,
}

impl Prepared {
    /// Routes `raw` and plans who is still to get it, given what `seen` records (logged and
    /// counted here, once per attempt).
    pub fn new(
        config: &Config,
        account: &AccountConfig,
        rules: &Rules,
        uid: &str,
        seen: &MessageState,
        raw: &[u8],
    ) -> Prepared {
        let name = account.name.as_str();
        let routing = route::route(raw, rules);
        for r in &routing.refused {
            let then = if r.to_postmaster {
                "the postmaster gets the copy"
            } else {
                "dropped (source_routed: reject)"
            };
            tracing::warn!(account = name, uid, "refused address {r}; {then}");
            crate::metrics::addresses_refused(name, r.why.label());
        }
        let plan = Plan::new(&routing, seen);
        for r in &plan.earlier {
            tracing::info!(account = name, uid, recipient = %r.address, "already delivered in an earlier pass");
            crate::metrics::recipient_outcome(name, "skipped");
        }
        for r in &routing.recipients {
            if !plan.earlier.iter().any(|e| e.address == r.address) {
                tracing::info!(account = name, uid, recipient = %r.address, reason = %r.reason, "routing");
            }
        }
        let now = SystemTime::now();
        // Who got this very message already, from another copy or under another key.
        let dedup = (config.dedup_window).map(|window| {
            (
                decide::dedup_id(routing.message_id.as_deref(), raw),
                now - window,
            )
        });
        Prepared {
            routing,
            plan,
            dedup,
            now,
        }
    }
}

/// Relays a [`Prepared`] message to the recipients not yet done, and records every outcome
/// (and, when all are settled, the message) in one transaction. Only a state-store failure is
/// an error: a relay failure leaves the message unsettled.
#[allow(clippy::too_many_arguments)]
pub async fn deliver<R: Relay, St: StateStore>(
    config: &Config,
    account: &AccountConfig,
    relay: &R,
    store: &St,
    uid: &str,
    prepared: Prepared,
    raw: &[u8],
) -> Result<Delivery, StateError> {
    let name = account.name.as_str();
    let Prepared {
        routing,
        mut plan,
        dedup,
        now,
    } = prepared;
    if let Some((id, since)) = &dedup {
        let keys: Vec<String> = plan.to_send().iter().map(Address::dedup_key).collect();
        let got = store.delivered_before(id, &keys, *since).await?;
        for r in plan.duplicates(&got, id) {
            tracing::info!(account = name, uid, recipient = %r, "already got this message ({id}); not sent again");
            crate::metrics::recipient_outcome(name, "duplicate");
        }
    }
    let dedup = dedup.as_ref().map(|(id, _)| id.as_str());
    let pending = plan.to_send();
    if pending.is_empty() {
        let state = (store.record_recipients(name, uid, dedup, &plan.now, true, now)).await?;
        return Ok(Delivery {
            verdict: Verdict::Settled(state),
            plan,
        });
    }

    let message = with_trace(relay, account, uid, &pending, "", raw);
    let sending = std::time::Instant::now();
    let sent = relay
        .send(plan.return_path.as_ref(), &pending, &message)
        .await;
    let audit = Audit {
        account: name,
        uid,
        message_id: routing.message_id.as_deref().unwrap_or("-"),
        ms: u64::try_from(sending.elapsed().as_millis()).unwrap_or(u64::MAX),
    };
    match sent {
        Ok(results) => plan.take_replies(&results),
        Err(e) => {
            relay_failed(name, uid, &e);
            let Some(whole) = WholeRefusal::from_error(&e) else {
                let verdict = if e.is_unavailable() {
                    Verdict::RelayUnavailable(e.to_string())
                } else {
                    Verdict::Retry(e.to_string())
                };
                return Ok(Delivery { verdict, plan });
            };
            plan.refuse_whole(whole);
        }
    }
    if plan.whole.is_none() {
        audit.replies(&plan);
    }

    let mut copy = Ok(());
    if plan.needs_copy() {
        if plan.whole.is_none() {
            // What the internal server accepted is on disk before the re-route is tried: a
            // crash during it must not send the accepted copies again.
            let accepted = plan.accepted();
            (store.record_recipients(name, uid, dedup, &accepted, false, now)).await?;
        }
        copy = match plan.copy(&config.postmaster) {
            Ok(c) => reroute(config, account, relay, uid, raw, &c).await,
            Err(nowhere) => Err(nowhere),
        };
    }
    let standing = plan.settle(&config.postmaster, &copy);
    for label in plan.counted(&standing) {
        crate::metrics::recipient_outcome(name, label);
    }
    audit.rerouted(&plan);
    let settled = standing == Standing::Settled;
    let state = (store.record_recipients(name, uid, dedup, &plan.now, settled, now)).await?;
    let verdict = match standing {
        Standing::Retry(why) => Verdict::Retry(why),
        Standing::GiveUp(why) => Verdict::Refused(why),
        Standing::Settled => Verdict::Settled(state),
    };
    Ok(Delivery { verdict, plan })
}

/// The audit trail: one log line per message and recipient sent to, with what became of it,
/// the internal server's reply and how long the transaction took — the lines an administrator
/// greps for "did alice get it?".
struct Audit<'a> {
    account: &'a str,
    uid: &'a str,
    message_id: &'a str,
    /// The relay transaction, in milliseconds.
    ms: u64,
}

impl Audit<'_> {
    /// A line per recipient of the transaction, with the reply to it.
    fn replies(&self, plan: &Plan) {
        let Audit {
            account,
            uid,
            message_id,
            ms,
        } = *self;
        for r in &plan.now {
            let recipient = &r.address;
            let (outcome, said) = match &r.status {
                Status::Delivered(reply) => ("delivered", format!("delivered: {reply}")),
                Status::Temporary(reply) => ("temporary", format!("deferred, will retry: {reply}")),
                Status::Permanent(reply) => (
                    "permanent",
                    format!("refused: {reply}; re-routing to the postmaster"),
                ),
                Status::Pending => (
                    "pending",
                    "the relay gave no outcome; will retry".to_owned(),
                ),
                Status::Duplicate(_) | Status::Rerouted(_) => continue,
            };
            if outcome == "delivered" {
                tracing::info!(account, uid, message_id, %recipient, outcome, ms, "{said}");
            } else {
                tracing::warn!(account, uid, message_id, %recipient, outcome, ms, "{said}");
            }
        }
    }

    /// A line per recipient the postmaster got the copy for.
    fn rerouted(&self, plan: &Plan) {
        let Audit {
            account,
            uid,
            message_id,
            ..
        } = *self;
        for r in &plan.now {
            if let Status::Rerouted(reply) = &r.status {
                let recipient = &r.address;
                tracing::info!(
                    account,
                    uid,
                    message_id,
                    %recipient,
                    outcome = "rerouted",
                    "re-routed to the postmaster: {reply}"
                );
            }
        }
    }
}

/// Sends the postmaster the copy of a message the internal server refused for good, with
/// its headers (`X-Mailferry-Rerouted:` lines saying who refused it and why) on top. `Err`
/// says why the postmaster's copy was not accepted, and whether for good.
async fn reroute<R: Relay>(
    config: &Config,
    account: &AccountConfig,
    relay: &R,
    uid: &str,
    raw: &[u8],
    copy: &Copy<'_>,
) -> Result<(), Refusal> {
    let postmaster = std::slice::from_ref(&config.postmaster);
    let message = with_trace(relay, account, uid, postmaster, &copy.headers, raw);
    let sent = relay.send(copy.reverse_path, postmaster, &message).await;
    if let Err(e) = &sent {
        relay_failed(&account.name, uid, e);
    }
    Refusal::of_copy(&sent, &config.postmaster)
}

/// The message as it goes to DATA: `extra` header lines (each ending in CRLF), mailferry's
/// `Received:` trace header, then `raw` with its line ends made safe ([`relay::prepare`]).
fn with_trace(
    relay: &impl Relay,
    account: &AccountConfig,
    uid: &str,
    recipients: &[Address],
    extra: &str,
    raw: &[u8],
) -> Vec<u8> {
    // received_header makes the UIDL (any printable character) a safe id itself.
    let header = received_header(
        &relay.helo_name(),
        &account.host,
        account.protocol,
        &format!("{}.{}", account.name, uid),
        recipients,
        SystemTime::now(),
    );
    crate::relay::prepare(format!("{extra}{header}").as_bytes(), raw)
}

fn relay_failed(account: &str, uid: &str, e: &RelayError) {
    tracing::warn!(account, uid, "relay failed, message stays upstream: {e}");
    crate::metrics::relay_failed(account, e);
}
