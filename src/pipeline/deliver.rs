//! One message's way through route → relay → state: who gets it, one SMTP transaction for
//! the recipients not yet done, each recipient's outcome written as it is known.

use std::time::SystemTime;

use crate::address::Address;
use crate::config::{AccountConfig, Config};
use crate::relay::{Outcome, Relay, RelayError, received_header};
use crate::route::{self, Rules};
use crate::state::{MessageState, RecipientStatus, StateError, Store};

/// Whether every recipient of the message is settled (delivered or re-routed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settled {
    Yes,
    No,
}

/// What happened to one message.
#[derive(Debug)]
pub struct Delivery {
    pub settled: Settled,
    pub delivered: usize,
    pub rerouted: usize,
    /// No SMTP session could be set up: the other messages of the pass would fail alike.
    pub relay_unavailable: bool,
}

/// Routes `raw`, relays it to the recipients that `seen` does not list as done, and records
/// every outcome (and, when all are settled, the message) in one transaction. Only a
/// state-store failure is an error: a relay failure leaves the message unsettled, to be tried
/// again next pass.
#[allow(clippy::too_many_arguments)]
pub async fn deliver(
    config: &Config,
    account: &AccountConfig,
    rules: &Rules,
    relay: &mut Relay,
    store: &Store,
    uid: &str,
    seen: &MessageState,
    raw: &[u8],
) -> Result<Delivery, StateError> {
    let name = account.name.as_str();
    let routing = route::route(raw, rules);
    let mut delivery = Delivery {
        settled: Settled::Yes,
        delivered: 0,
        rerouted: 0,
        relay_unavailable: false,
    };
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
        store.mark_settled(name, uid, now).await?;
        return Ok(delivery);
    }

    let message = with_trace(relay, account, uid, &pending, raw);
    let results = match relay
        .send(routing.return_path.as_ref(), &pending, &message)
        .await
    {
        Ok(results) => results,
        Err(e) => {
            relay_failed(name, uid, &e);
            // No outcome to store, but retention counts from the first sighting.
            store.seen(name, uid, now).await?;
            delivery.settled = Settled::No;
            delivery.relay_unavailable = e.is_unavailable();
            return Ok(delivery);
        }
    };

    let mut outcomes = Vec::with_capacity(results.len());
    let mut refused = Vec::new();
    for result in results {
        let recipient = result.recipient;
        match result.outcome {
            Outcome::Delivered(reply) => {
                tracing::info!(account = name, uid, recipient = %recipient, "delivered: {reply}");
                crate::metrics::recipient_outcome(name, "delivered");
                delivery.delivered += 1;
                outcomes.push((recipient, RecipientStatus::Delivered, reply.to_string()));
            }
            Outcome::Temporary(reply) => {
                tracing::warn!(account = name, uid, recipient = %recipient, "deferred, will retry: {reply}");
                crate::metrics::recipient_outcome(name, "temporary");
                delivery.settled = Settled::No;
                outcomes.push((recipient, RecipientStatus::Pending, reply.to_string()));
            }
            Outcome::Permanent(reply) => {
                tracing::warn!(account = name, uid, recipient = %recipient, "refused: {reply}; re-routing to the postmaster");
                refused.push((recipient, reply.to_string()));
            }
        }
    }

    if !refused.is_empty() {
        // What the internal server accepted is on disk before the re-route is tried: a crash
        // during it must not send the accepted copies again.
        store
            .record_recipients(name, uid, &outcomes, false, now)
            .await?;
        let rerouted = reroute(
            config,
            account,
            relay,
            uid,
            raw,
            &refused,
            routing.return_path.as_ref(),
        )
        .await;
        outcomes.clear();
        for (recipient, reply) in refused {
            // The postmaster refusing is never settled by a copy to the postmaster.
            let status = if rerouted && recipient.dedup_key() != config.postmaster.dedup_key() {
                crate::metrics::recipient_outcome(name, "rerouted");
                delivery.rerouted += 1;
                RecipientStatus::Rerouted
            } else {
                crate::metrics::recipient_outcome(name, "temporary");
                delivery.settled = Settled::No;
                RecipientStatus::Pending
            };
            outcomes.push((recipient, status, reply));
        }
    }
    let settle = delivery.settled == Settled::Yes;
    store
        .record_recipients(name, uid, &outcomes, settle, now)
        .await?;
    Ok(delivery)
}

/// Sends the postmaster one copy of a message that the internal server refused for good for
/// the `refused` recipients, with an `X-Mailferry-Rerouted:` header naming each and the reply.
/// True when the postmaster's copy was accepted.
async fn reroute(
    config: &Config,
    account: &AccountConfig,
    relay: &mut Relay,
    uid: &str,
    raw: &[u8],
    refused: &[(Address, String)],
    return_path: Option<&Address>,
) -> bool {
    let postmaster = &config.postmaster;
    let mut message = Vec::new();
    for (recipient, reply) in refused {
        if recipient.dedup_key() == postmaster.dedup_key() {
            continue;
        }
        message.extend_from_slice(
            format!(
                "X-Mailferry-Rerouted: for <{recipient}> refused by the internal server: {}\r\n",
                sanitize(reply)
            )
            .as_bytes(),
        );
    }
    if message.is_empty() {
        // Only the postmaster itself refused: nowhere else to go; stays for a later pass.
        return false;
    }
    message.extend_from_slice(&with_trace(
        relay,
        account,
        uid,
        std::slice::from_ref(postmaster),
        raw,
    ));
    match relay
        .send(return_path, std::slice::from_ref(postmaster), &message)
        .await
    {
        Ok(results) => results
            .iter()
            .all(|r| matches!(r.outcome, Outcome::Delivered(_))),
        Err(e) => {
            relay_failed(&account.name, uid, &e);
            false
        }
    }
}

/// The message with mailferry's `Received:` trace header on top.
fn with_trace(
    relay: &Relay,
    account: &AccountConfig,
    uid: &str,
    recipients: &[Address],
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
    let mut message = Vec::with_capacity(header.len() + raw.len());
    message.extend_from_slice(header.as_bytes());
    message.extend_from_slice(raw);
    message
}

fn relay_failed(account: &str, uid: &str, e: &RelayError) {
    tracing::warn!(account, uid, "relay failed, message stays upstream: {e}");
    crate::metrics::message_failed(account, "relay");
}

/// A server's reply text made safe for a header line.
fn sanitize(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}
