//! Pure decisions about one message's recipients (design.md, "Relay"): who is still to be
//! sent to, what each reply of the internal server means, what the postmaster's copy settles,
//! and where the message stands then. No I/O; `deliver.rs` sends, logs and records.

use crate::address::Address;
use crate::relay::{Outcome, RcptResult, Reply};
use crate::route::Recipient;
use crate::state::{MessageState, RecipientStatus};

/// What identifies a message across copies, accounts and keys, for `dedup_window`: a
/// SHA-256 of its Message-ID, its `From:`, `Date:` and `Subject:` lines and its body. The
/// provider's per-copy envelope headers are left out, so that the copies a provider stores
/// one per recipient have the same id; the content is in, so that a message that merely
/// claims another's Message-ID (sent ahead of it by someone who knows it) is not taken for
/// it and does not keep it from its recipients.
pub fn dedup_id(message_id: Option<&str>, raw: &[u8]) -> String {
    let (head, body) = match raw.windows(4).position(|w| w == b"\r\n\r\n") {
        Some(i) => raw.split_at(i + 4),
        None => match raw.windows(2).position(|w| w == b"\n\n") {
            Some(i) => raw.split_at(i + 2),
            None => (raw, &raw[raw.len()..]),
        },
    };
    let mut hash = ring::digest::Context::new(&ring::digest::SHA256);
    hash.update(message_id.unwrap_or("").as_bytes());
    hash.update(b"\n");
    for line in head.split(|b| *b == b'\n') {
        let lower = line.to_ascii_lowercase();
        if [&b"from:"[..], b"date:", b"subject:"]
            .iter()
            .any(|name| lower.starts_with(name))
        {
            hash.update(line.strip_suffix(b"\r").unwrap_or(line));
            hash.update(b"\n");
        }
    }
    hash.update(b"\n");
    hash.update(body);
    let hex: String = (hash.finish().as_ref().iter())
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("sha256:{hex}")
}

/// The routed recipients not yet settled in an earlier pass, and those that were.
pub fn to_send<'a>(
    routed: &'a [Recipient],
    seen: &MessageState,
) -> (Vec<&'a Recipient>, Vec<&'a Recipient>) {
    routed
        .iter()
        .partition(|r| !seen.done.contains(&r.address.dedup_key()))
}

/// What the replies of one transaction say about each recipient sent to.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Replies {
    /// Accepted.
    pub delivered: Vec<(Address, Reply)>,
    /// Refused for now: tried again after the back-off.
    pub deferred: Vec<(Address, Reply)>,
    /// Refused for good: the postmaster gets the copy instead.
    pub refused: Vec<(Address, Reply)>,
    /// No reply of its own: not settled, whatever the others got.
    pub missing: Vec<Address>,
}

/// Sorts the replies by recipient, matched by address, not by position.
pub fn sort_replies(sent_to: &[Address], results: &[RcptResult]) -> Replies {
    let mut replies = Replies::default();
    for recipient in sent_to {
        let Some(result) = results.iter().find(|r| &r.recipient == recipient) else {
            replies.missing.push(recipient.clone());
            continue;
        };
        let (list, reply) = match &result.outcome {
            Outcome::Delivered(reply) => (&mut replies.delivered, reply),
            Outcome::Temporary(reply) => (&mut replies.deferred, reply),
            Outcome::Permanent(reply) => (&mut replies.refused, reply),
        };
        list.push((recipient.clone(), reply.clone()));
    }
    replies
}

/// Why the postmaster's copy was not accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// The reply or error.
    pub why: String,
    /// Refused for good (5xx): trying again cannot help.
    pub permanent: bool,
}

/// Where a message stands once its recipients' outcomes are known.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Standing {
    /// What to record, per recipient.
    pub outcomes: Vec<(Address, RecipientStatus, String)>,
    /// Re-routed to the postmaster.
    pub rerouted: usize,
    /// Some recipient may yet be settled later: why not now (the first reason).
    pub retry: Option<String>,
    /// Some recipient was refused for good with nowhere else to go: why.
    pub give_up: Option<String>,
}

impl Standing {
    /// Whether every recipient is settled: the message is done.
    pub fn settled(&self) -> bool {
        self.retry.is_none() && self.give_up.is_none()
    }
}

/// The outcomes of one transaction, once the postmaster's copy of the refused recipients was
/// tried (`copy`; `Ok` when there was none to try). A refused recipient is settled by the
/// postmaster's copy, unless it is the postmaster itself.
pub fn standing(replies: &Replies, postmaster: &Address, copy: &Result<(), Refusal>) -> Standing {
    let mut s = Standing::default();
    for (recipient, reply) in &replies.delivered {
        s.outcomes.push((
            recipient.clone(),
            RecipientStatus::Delivered,
            reply.to_string(),
        ));
    }
    for (recipient, reply) in &replies.deferred {
        s.retry
            .get_or_insert_with(|| format!("<{recipient}>: {reply}"));
        s.outcomes.push((
            recipient.clone(),
            RecipientStatus::Pending,
            reply.to_string(),
        ));
    }
    for recipient in &replies.missing {
        s.retry
            .get_or_insert_with(|| format!("no outcome for <{recipient}>"));
    }
    for (recipient, reply) in &replies.refused {
        let is_postmaster = recipient.dedup_key() == postmaster.dedup_key();
        let status = match copy {
            Ok(()) if !is_postmaster => {
                s.rerouted += 1;
                RecipientStatus::Rerouted
            }
            // The postmaster refusing is never settled by a copy to the postmaster.
            Ok(()) => {
                s.give_up
                    .get_or_insert_with(|| format!("<{recipient}> refused: {reply}"));
                RecipientStatus::Pending
            }
            Err(r) => {
                let why = format!(
                    "<{recipient}> refused ({reply}), and the postmaster's copy failed: {}",
                    r.why
                );
                if r.permanent {
                    s.give_up.get_or_insert(why);
                } else {
                    s.retry.get_or_insert(why);
                }
                RecipientStatus::Pending
            }
        };
        s.outcomes
            .push((recipient.clone(), status, reply.to_string()));
    }
    s
}

/// The recipients refused for good that the postmaster's copy is for: all but the postmaster.
pub fn reroute_for<'a>(
    replies: &'a Replies,
    postmaster: &'a Address,
) -> impl Iterator<Item = &'a (Address, Reply)> {
    replies
        .refused
        .iter()
        .filter(|(r, _)| r.dedup_key() != postmaster.dedup_key())
}

#[cfg(test)]
mod tests {
    use std::time::SystemTime;

    use super::*;

    fn addr(s: &str) -> Address {
        Address::parse(s).unwrap()
    }

    fn reply(code: u16) -> Reply {
        Reply {
            code,
            text: format!("{code} text"),
        }
    }

    fn result(to: &str, outcome: Outcome) -> RcptResult {
        RcptResult {
            recipient: addr(to),
            outcome,
        }
    }

    fn status_of(s: &Standing, who: &str) -> RecipientStatus {
        s.outcomes
            .iter()
            .find(|(a, _, _)| a.as_str() == who)
            .map(|(_, st, _)| *st)
            .unwrap()
    }

    #[test]
    fn the_dedup_id_is_the_message_id_else_a_hash_that_ignores_per_copy_headers() {
        let one = b"Delivered-To: a@example.com\r\nFrom: x@y\r\nSubject: s\r\n\r\nbody\r\n";
        let two = b"Delivered-To: b@example.com\r\nFrom: x@y\r\nSubject: s\r\n\r\nbody\r\n";
        let other = b"Delivered-To: a@example.com\r\nFrom: x@y\r\nSubject: s\r\n\r\nbody2\r\n";
        assert_eq!(dedup_id(None, one), dedup_id(None, two));
        assert_ne!(dedup_id(None, one), dedup_id(None, other));
        assert!(dedup_id(None, one).starts_with("sha256:"));
        assert_eq!(dedup_id(None, one).len(), "sha256:".len() + 64);
        // The same Message-ID on other content is another message; the same content under
        // another Message-ID too.
        assert_eq!(dedup_id(Some("m@x"), one), dedup_id(Some("m@x"), two));
        assert_ne!(dedup_id(Some("m@x"), one), dedup_id(Some("m@x"), other));
        assert_ne!(dedup_id(Some("m@x"), one), dedup_id(Some("n@x"), one));
        assert_ne!(dedup_id(Some("m@x"), one), dedup_id(None, one));
    }

    #[test]
    fn recipients_settled_earlier_are_not_sent_to_again() {
        let routed: Vec<Recipient> = ["a@example.com", "b@example.com"]
            .into_iter()
            .map(|a| Recipient {
                address: addr(a),
                reason: crate::route::Reason::Header("To".into()),
            })
            .collect();
        let mut seen = MessageState::new(SystemTime::UNIX_EPOCH);
        seen.done.insert(addr("B@example.com").dedup_key());
        let (send, skip) = to_send(&routed, &seen);
        assert_eq!(send.len(), 1);
        assert_eq!(send[0].address.as_str(), "a@example.com");
        assert_eq!(skip[0].address.as_str(), "b@example.com");
    }

    #[test]
    fn replies_are_matched_by_address_and_a_missing_one_is_not_settled() {
        let sent = [
            addr("a@example.com"),
            addr("b@example.com"),
            addr("c@example.com"),
        ];
        // Out of order, and nothing for c.
        let results = [
            result("b@example.com", Outcome::Permanent(reply(550))),
            result("a@example.com", Outcome::Delivered(reply(250))),
        ];
        let r = sort_replies(&sent, &results);
        assert_eq!(r.delivered, [(addr("a@example.com"), reply(250))]);
        assert_eq!(r.refused, [(addr("b@example.com"), reply(550))]);
        assert_eq!(r.missing, [addr("c@example.com")]);
        let s = standing(&r, &addr("pm@example.com"), &Ok(()));
        assert!(!s.settled());
        assert_eq!(s.retry.as_deref(), Some("no outcome for <c@example.com>"));
    }

    #[test]
    fn every_recipient_outcome_is_recorded_as_it_stands() {
        let sent = [
            addr("a@example.com"),
            addr("b@example.com"),
            addr("c@example.com"),
        ];
        let results = [
            result("a@example.com", Outcome::Delivered(reply(250))),
            result("b@example.com", Outcome::Temporary(reply(451))),
            result("c@example.com", Outcome::Permanent(reply(550))),
        ];
        let r = sort_replies(&sent, &results);
        let s = standing(&r, &addr("pm@example.com"), &Ok(()));
        assert_eq!(status_of(&s, "a@example.com"), RecipientStatus::Delivered);
        assert_eq!(status_of(&s, "b@example.com"), RecipientStatus::Pending);
        assert_eq!(status_of(&s, "c@example.com"), RecipientStatus::Rerouted);
        assert_eq!((s.rerouted, s.give_up.as_deref()), (1, None));
        assert_eq!(s.retry.as_deref(), Some("<b@example.com>: 451 451 text"));
    }

    #[test]
    fn all_delivered_or_rerouted_is_settled() {
        let sent = [addr("a@example.com"), addr("c@example.com")];
        let results = [
            result("a@example.com", Outcome::Delivered(reply(250))),
            result("c@example.com", Outcome::Permanent(reply(550))),
        ];
        let s = standing(
            &sort_replies(&sent, &results),
            &addr("pm@example.com"),
            &Ok(()),
        );
        assert!(s.settled());
    }

    #[test]
    fn a_failed_postmaster_copy_retries_or_gives_up_as_its_reply_says() {
        let sent = [addr("c@example.com")];
        let results = [result("c@example.com", Outcome::Permanent(reply(550)))];
        let r = sort_replies(&sent, &results);
        let pm = addr("pm@example.com");
        let later = Refusal {
            why: "451 busy".into(),
            permanent: false,
        };
        let s = standing(&r, &pm, &Err(later));
        assert_eq!(status_of(&s, "c@example.com"), RecipientStatus::Pending);
        assert!(s.retry.is_some() && s.give_up.is_none());
        let never = Refusal {
            why: "550 no".into(),
            permanent: true,
        };
        let s = standing(&r, &pm, &Err(never));
        assert!(s.retry.is_none());
        assert!(
            s.give_up
                .unwrap()
                .contains("the postmaster's copy failed: 550 no")
        );
    }

    #[test]
    fn the_postmaster_refused_is_never_settled_by_a_copy_to_the_postmaster() {
        let pm = addr("pm@example.com");
        let results = [result("PM@example.com", Outcome::Permanent(reply(550)))];
        let r = sort_replies(&[addr("PM@example.com")], &results);
        assert_eq!(reroute_for(&r, &pm).count(), 0, "no copy to send");
        let s = standing(&r, &pm, &Ok(()));
        assert_eq!(s.rerouted, 0);
        assert!(s.give_up.is_some());
    }
}
