//! One message's way through route → relay → state: who gets it, one SMTP transaction for
//! the recipients not yet done, each recipient's outcome written as it is known.

use std::time::SystemTime;

use crate::address::Address;
use crate::config::{AccountConfig, Config};
use crate::relay::{Outcome, RcptResult, Relay, RelayError, received_header};
use crate::route::{self, Rules};
use crate::state::{MessageState, RecipientStatus, StateError, StateStore};

use super::decide::{self, Refusal};
use super::notice;

/// Where one message stands after an attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Every recipient is settled (delivered or re-routed to the postmaster): the message's
    /// state as the store now holds it.
    Settled(MessageState),
    /// Not settled, for a reason that may pass (a 4xx, a timeout): try again after a back-off.
    Retry(String),
    /// Refused for good as a whole, and the postmaster's copy was refused too: quarantine.
    Refused(String),
    /// No SMTP session could be set up: every other message would fail alike; not the
    /// message's fault.
    RelayUnavailable(String),
}

/// What happened to one message.
#[derive(Debug)]
pub struct Delivery {
    pub verdict: Verdict,
    pub delivered: usize,
    pub rerouted: usize,
}

/// Routes `raw`, relays it to the recipients that `seen` does not list as done, and records
/// every outcome (and, when all are settled, the message) in one transaction. Only a
/// state-store failure is an error: a relay failure leaves the message unsettled.
#[allow(clippy::too_many_arguments)]
pub async fn deliver<R: Relay, St: StateStore>(
    config: &Config,
    account: &AccountConfig,
    rules: &Rules,
    relay: &R,
    store: &St,
    uid: &str,
    seen: &MessageState,
    raw: &[u8],
) -> Result<Delivery, StateError> {
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
    let (to_send, skipped) = decide::to_send(&routing.recipients, seen);
    for r in skipped {
        tracing::info!(account = name, uid, recipient = %r.address, "already delivered in an earlier pass");
        crate::metrics::recipient_outcome(name, "skipped");
    }
    for r in &to_send {
        tracing::info!(account = name, uid, recipient = %r.address, reason = %r.reason, "routing");
    }
    let mut pending: Vec<Address> = to_send.into_iter().map(|r| r.address.clone()).collect();
    let now = SystemTime::now();
    // Who got this very message already, from another copy or under another key.
    let dedup = (config.dedup_window).map(|window| {
        (
            decide::dedup_id(routing.message_id.as_deref(), raw),
            now - window,
        )
    });
    let mut duplicates = Vec::new();
    if let Some((id, since)) = &dedup {
        let keys: Vec<String> = pending.iter().map(Address::dedup_key).collect();
        let got = store.delivered_before(id, &keys, *since).await?;
        pending.retain(|r| {
            if !got.contains(&r.dedup_key()) {
                return true;
            }
            tracing::info!(account = name, uid, recipient = %r, "already got this message ({id}); not sent again");
            crate::metrics::recipient_outcome(name, "duplicate");
            let why = format!("duplicate of an earlier delivery ({id})");
            duplicates.push((r.clone(), RecipientStatus::Delivered, why));
            false
        });
    }
    let dedup = dedup.as_ref().map(|(id, _)| id.as_str());
    let unsettled = |verdict| Delivery {
        verdict,
        delivered: 0,
        rerouted: 0,
    };
    if pending.is_empty() {
        let state = (store.record_recipients(name, uid, dedup, &duplicates, true, now)).await?;
        return Ok(unsettled(Verdict::Settled(state)));
    }

    let message = with_trace(relay, account, uid, &pending, "", raw);
    let return_path = routing.return_path.as_ref();
    let results = match relay.send(return_path, &pending, &message).await {
        Ok(results) => results,
        Err(e) if e.is_permanent() => {
            relay_failed(name, uid, &e);
            let message = (uid, raw, dedup);
            return refused_whole(
                config,
                account,
                relay,
                store,
                message,
                return_path,
                &pending,
                &e,
            )
            .await;
        }
        Err(e) => {
            relay_failed(name, uid, &e);
            return Ok(unsettled(if e.is_unavailable() {
                Verdict::RelayUnavailable(e.to_string())
            } else {
                Verdict::Retry(e.to_string())
            }));
        }
    };

    let replies = decide::sort_replies(&pending, &results);
    log_replies(name, uid, &replies);
    let mut copy = Ok(());
    if !replies.refused.is_empty() {
        // What the internal server accepted is on disk before the re-route is tried: a crash
        // during it must not send the accepted copies again.
        let accepted: Vec<_> = (replies.delivered.iter())
            .map(|(r, reply)| (r.clone(), RecipientStatus::Delivered, reply.to_string()))
            .collect();
        store
            .record_recipients(name, uid, dedup, &accepted, false, now)
            .await?;
        let headers: String = decide::reroute_for(&replies, &config.postmaster)
            .map(|(r, reply)| notice::refused_recipient(r.as_str(), &reply.to_string()))
            .collect();
        copy = reroute(config, account, relay, uid, raw, &headers, return_path).await;
    }
    let mut standing = decide::standing(&replies, &config.postmaster, &copy);
    for (_, status, _) in &standing.outcomes {
        let label = match status {
            RecipientStatus::Delivered => "delivered",
            RecipientStatus::Rerouted => "rerouted",
            RecipientStatus::Pending => "temporary",
        };
        crate::metrics::recipient_outcome(name, label);
    }
    standing.outcomes.extend(duplicates);
    let state = store
        .record_recipients(
            name,
            uid,
            dedup,
            &standing.outcomes,
            standing.settled(),
            now,
        )
        .await?;
    // A temporary failure may still pass; one refused for good with nowhere to go cannot.
    let verdict = match (standing.retry, standing.give_up) {
        (Some(why), _) => Verdict::Retry(why),
        (None, Some(why)) => Verdict::Refused(why),
        (None, None) => Verdict::Settled(state),
    };
    Ok(Delivery {
        verdict,
        delivered: replies.delivered.len(),
        rerouted: standing.rerouted,
    })
}

/// One log line per recipient sent to, saying what the internal server replied.
fn log_replies(name: &str, uid: &str, replies: &decide::Replies) {
    for (recipient, reply) in &replies.delivered {
        tracing::info!(account = name, uid, recipient = %recipient, "delivered: {reply}");
    }
    for (recipient, reply) in &replies.deferred {
        tracing::warn!(account = name, uid, recipient = %recipient, "deferred, will retry: {reply}");
    }
    for (recipient, reply) in &replies.refused {
        tracing::warn!(account = name, uid, recipient = %recipient, "refused: {reply}; re-routing to the postmaster");
    }
    for recipient in &replies.missing {
        tracing::warn!(account = name, uid, recipient = %recipient, "the relay gave no outcome; will retry");
    }
}

/// The internal server refused the whole message for good (MAIL FROM or DATA 5xx): the
/// postmaster gets it instead, with a line saying why; if the postmaster's copy is refused
/// too, the verdict is `Refused` (quarantine).
#[allow(clippy::too_many_arguments)]
async fn refused_whole<R: Relay, St: StateStore>(
    config: &Config,
    account: &AccountConfig,
    relay: &R,
    store: &St,
    (uid, raw, dedup): (&str, &[u8], Option<&str>),
    return_path: Option<&Address>,
    pending: &[Address],
    e: &RelayError,
) -> Result<Delivery, StateError> {
    let name = account.name.as_str();
    let why = e.to_string();
    // Refused at MAIL FROM: that sender will be refused again; the postmaster's copy goes
    // with the null reverse path.
    let reverse = match e {
        RelayError::MailFrom { .. } | RelayError::ReversePath { .. } => None,
        _ => return_path,
    };
    let headers = notice::refused_whole(&why);
    let delivery = match reroute(config, account, relay, uid, raw, &headers, reverse).await {
        Ok(()) => {
            let outcomes: Vec<_> = pending
                .iter()
                .map(|r| {
                    crate::metrics::recipient_outcome(name, "rerouted");
                    (r.clone(), RecipientStatus::Rerouted, why.clone())
                })
                .collect();
            let state = store
                .record_recipients(name, uid, dedup, &outcomes, true, SystemTime::now())
                .await?;
            Delivery {
                verdict: Verdict::Settled(state),
                delivered: 0,
                rerouted: outcomes.len(),
            }
        }
        Err(postmaster) => {
            let why = format!(
                "{why}; the copy to the postmaster failed too: {}",
                postmaster.why
            );
            let verdict = if postmaster.permanent {
                Verdict::Refused(why)
            } else {
                Verdict::Retry(why)
            };
            Delivery {
                verdict,
                delivered: 0,
                rerouted: 0,
            }
        }
    };
    Ok(delivery)
}

/// Sends the postmaster one copy of a message the internal server refused for good, with
/// `headers` (`X-Mailferry-Rerouted:` lines saying who refused it and why) on top. `Err`
/// says why the postmaster's copy was not accepted, and whether for good.
async fn reroute<R: Relay>(
    config: &Config,
    account: &AccountConfig,
    relay: &R,
    uid: &str,
    raw: &[u8],
    headers: &str,
    return_path: Option<&Address>,
) -> Result<(), Refusal> {
    let postmaster = &config.postmaster;
    if headers.is_empty() {
        // Only the postmaster itself refused: nowhere else to go.
        return Err(Refusal {
            why: "the postmaster itself refused it".to_owned(),
            permanent: true,
        });
    }
    let message = with_trace(
        relay,
        account,
        uid,
        std::slice::from_ref(postmaster),
        headers,
        raw,
    );
    match relay
        .send(return_path, std::slice::from_ref(postmaster), &message)
        .await
    {
        Ok(results) => match results.iter().find(|r| &r.recipient == postmaster) {
            Some(RcptResult { outcome, .. }) => match outcome {
                Outcome::Delivered(_) => Ok(()),
                Outcome::Temporary(reply) | Outcome::Permanent(reply) => Err(Refusal {
                    why: reply.to_string(),
                    permanent: reply.is_permanent(),
                }),
            },
            None => Err(Refusal {
                why: "no outcome for the postmaster".to_owned(),
                permanent: false,
            }),
        },
        Err(e) => {
            relay_failed(&account.name, uid, &e);
            Err(Refusal {
                why: e.to_string(),
                permanent: e.is_permanent(),
            })
        }
    }
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
    crate::metrics::message_failed(account, "relay");
}
