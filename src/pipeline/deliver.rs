//! One message's way through route → relay → state: who gets it, one SMTP transaction for
//! the recipients not yet done, each recipient's outcome written as it is known.

use std::time::SystemTime;

use crate::address::Address;
use crate::config::{AccountConfig, Config};
use crate::relay::{Outcome, RcptResult, Relay, RelayError, received_header};
use crate::route::{self, Rules};
use crate::state::{MessageState, RecipientStatus, StateError, StateStore};

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
    let mut delivered = 0;
    let mut rerouted = 0;
    let mut pending: Vec<Address> = Vec::new();
    for r in &routing.recipients {
        if seen.done.contains(&r.address.dedup_key()) {
            tracing::info!(account = name, uid, recipient = %r.address, "already delivered in an earlier pass");
            crate::metrics::recipient_outcome(name, "skipped");
        } else {
            tracing::info!(account = name, uid, recipient = %r.address, reason = %r.reason, "routing");
            pending.push(r.address.clone());
        }
    }
    let now = SystemTime::now();
    if pending.is_empty() {
        let state = store.record_recipients(name, uid, &[], true, now).await?;
        return Ok(Delivery {
            verdict: Verdict::Settled(state),
            delivered,
            rerouted,
        });
    }

    let message = with_trace(relay, account, uid, &pending, "", raw);
    let results = match relay
        .send(routing.return_path.as_ref(), &pending, &message)
        .await
    {
        Ok(results) => results,
        Err(e) if e.is_permanent() => {
            relay_failed(name, uid, &e);
            let return_path = routing.return_path.as_ref();
            return refused_whole(
                config,
                account,
                relay,
                store,
                (uid, raw),
                return_path,
                &pending,
                &e,
            )
            .await;
        }
        Err(e) => {
            relay_failed(name, uid, &e);
            let verdict = if e.is_unavailable() {
                Verdict::RelayUnavailable(e.to_string())
            } else {
                Verdict::Retry(e.to_string())
            };
            return Ok(Delivery {
                verdict,
                delivered,
                rerouted,
            });
        }
    };

    let mut outcomes = Vec::with_capacity(results.len());
    let mut refused = Vec::new();
    let mut temporary = None;
    let mut refused_for_good = None;
    for recipient in &pending {
        // Matched by address, not by position: a recipient without a result of its own is
        // not settled, whatever the others got.
        let Some(result) = results.iter().find(|r| &r.recipient == recipient) else {
            tracing::warn!(account = name, uid, recipient = %recipient, "the relay gave no outcome; will retry");
            temporary.get_or_insert_with(|| format!("no outcome for <{recipient}>"));
            continue;
        };
        match &result.outcome {
            Outcome::Delivered(reply) => {
                tracing::info!(account = name, uid, recipient = %recipient, "delivered: {reply}");
                crate::metrics::recipient_outcome(name, "delivered");
                delivered += 1;
                outcomes.push((
                    recipient.clone(),
                    RecipientStatus::Delivered,
                    reply.to_string(),
                ));
            }
            Outcome::Temporary(reply) => {
                tracing::warn!(account = name, uid, recipient = %recipient, "deferred, will retry: {reply}");
                crate::metrics::recipient_outcome(name, "temporary");
                temporary.get_or_insert_with(|| format!("<{recipient}>: {reply}"));
                outcomes.push((
                    recipient.clone(),
                    RecipientStatus::Pending,
                    reply.to_string(),
                ));
            }
            Outcome::Permanent(reply) => {
                tracing::warn!(account = name, uid, recipient = %recipient, "refused: {reply}; re-routing to the postmaster");
                refused.push((recipient.clone(), reply.to_string()));
            }
        }
    }

    if !refused.is_empty() {
        // What the internal server accepted is on disk before the re-route is tried: a crash
        // during it must not send the accepted copies again.
        store
            .record_recipients(name, uid, &outcomes, false, now)
            .await?;
        let headers: String = refused
            .iter()
            .filter(|(r, _)| r.dedup_key() != config.postmaster.dedup_key())
            .map(|(r, reply)| notice::refused_recipient(r.as_str(), reply))
            .collect();
        let copy = reroute(
            config,
            account,
            relay,
            uid,
            raw,
            &headers,
            routing.return_path.as_ref(),
        )
        .await;
        outcomes.clear();
        for (recipient, reply) in refused {
            // The postmaster refusing is never settled by a copy to the postmaster.
            let status = if copy.is_ok() && recipient.dedup_key() != config.postmaster.dedup_key() {
                crate::metrics::recipient_outcome(name, "rerouted");
                rerouted += 1;
                RecipientStatus::Rerouted
            } else {
                crate::metrics::recipient_outcome(name, "temporary");
                match &copy {
                    Err(r) => {
                        let why = format!(
                            "<{recipient}> refused ({reply}), and the postmaster's copy failed: {}",
                            r.why
                        );
                        if r.permanent {
                            refused_for_good.get_or_insert(why);
                        } else {
                            temporary.get_or_insert(why);
                        }
                    }
                    // The postmaster was a recipient and refused: nowhere else to go.
                    Ok(()) => {
                        refused_for_good
                            .get_or_insert_with(|| format!("<{recipient}> refused: {reply}"));
                    }
                }
                RecipientStatus::Pending
            };
            outcomes.push((recipient, status, reply));
        }
    }
    // A temporary failure may still pass; one refused for good with nowhere to go cannot.
    let unsettled = match (temporary, refused_for_good) {
        (Some(why), _) => Some(Verdict::Retry(why)),
        (None, Some(why)) => Some(Verdict::Refused(why)),
        (None, None) => None,
    };
    let state = store
        .record_recipients(name, uid, &outcomes, unsettled.is_none(), now)
        .await?;
    Ok(Delivery {
        verdict: unsettled.unwrap_or(Verdict::Settled(state)),
        delivered,
        rerouted,
    })
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
    (uid, raw): (&str, &[u8]),
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
                .record_recipients(name, uid, &outcomes, true, SystemTime::now())
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

/// Why the postmaster's copy was not accepted.
#[derive(Debug)]
struct Refusal {
    why: String,
    /// Refused for good (5xx): trying again cannot help; quarantine.
    permanent: bool,
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
