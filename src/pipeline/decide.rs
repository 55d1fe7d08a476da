//! The pure delivery planner of one message (design.md, "Relay"): from its routing and its
//! state, a [`Plan`] says who the transaction goes to and with which MAIL FROM, takes each
//! reply of the internal server into the recipient's [`Status`], says what the postmaster's
//! copy carries and settles, what is recorded, and where the message stands then (settled,
//! and so up to retention; to retry; to quarantine). No I/O; `deliver.rs` sends, logs and
//! records what it says.

use std::collections::HashSet;

use crate::address::Address;
use crate::recipient::{Recipient, Status, WholeRefusal};
use crate::relay::{RelayError, Reply};
use crate::route::Routing;
use crate::state::MessageState;

use super::notice;

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

/// One message's recipients in one attempt, as the planner moves them from pending to
/// where the internal server's replies put them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    /// MAIL FROM: the message's original return path (`None`: the null reverse path `<>`).
    pub return_path: Option<Address>,
    /// Settled in an earlier pass (their status as the store holds it): not sent to again.
    pub earlier: Vec<Recipient>,
    /// The others, as they stand in this attempt: what is recorded at its end.
    pub now: Vec<Recipient>,
    /// The internal server refused the message as a whole, for every recipient in `now`.
    pub whole: Option<WholeRefusal>,
}

/// Where a message stands once its recipients' replies, and the postmaster's copy of those
/// refused for good, are known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Standing {
    /// Every recipient is settled: the message is done.
    Settled,
    /// Some recipient may yet be settled later: why not now (the first reason).
    Retry(String),
    /// Some recipient was refused for good with nowhere else to go: why (quarantine).
    GiveUp(String),
}

/// The postmaster's copy of a message refused for good ([`Plan::copy`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Copy<'a> {
    /// Its MAIL FROM (`None`: `<>`).
    pub reverse_path: Option<&'a Address>,
    /// The header lines put above the message, each ending in CRLF.
    pub headers: String,
}

/// Why the postmaster's copy was not accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// The reply or error.
    pub why: String,
    /// Refused for good (5xx): trying again cannot help.
    pub permanent: bool,
}

impl Refusal {
    /// What the relay's answer to the postmaster's copy means: `Ok` when the postmaster's
    /// RCPT got the message, else why not (the whole transaction failing, or its reply).
    pub fn of_copy(
        sent: &Result<Vec<Recipient>, RelayError>,
        postmaster: &Address,
    ) -> Result<(), Refusal> {
        let refusal = |why: String, permanent| Err(Refusal { why, permanent });
        match sent {
            Err(e) => refusal(e.to_string(), e.is_permanent()),
            Ok(results) => match (results.iter())
                .find(|r| &r.address == postmaster)
                .map(|r| &r.status)
            {
                Some(Status::Delivered(_)) => Ok(()),
                Some(Status::Temporary(reply) | Status::Permanent(reply)) => {
                    refusal(reply.to_string(), reply.is_permanent())
                }
                // The relay gives no other status.
                _ => refusal("no outcome for the postmaster".to_owned(), false),
            },
        }
    }
}

impl Plan {
    /// The routed recipients of a message in state `seen`: those settled in an earlier pass
    /// apart, the others pending; MAIL FROM the routing's return path.
    pub fn new(routing: &Routing, seen: &MessageState) -> Plan {
        let mut plan = Plan {
            return_path: routing.return_path.clone(),
            ..Plan::default()
        };
        for r in &routing.recipients {
            match seen.status_of(&r.address) {
                Some(status) if status.is_settled() => plan.earlier.push(Recipient {
                    address: r.address.clone(),
                    status: status.clone(),
                }),
                _ => plan.now.push(Recipient::pending(r.address.clone())),
            }
        }
        plan
    }

    /// The pending recipients that got the message `id` already (dedup keys in `got`) are
    /// settled as its duplicates, not sent to; returns them.
    pub fn duplicates(&mut self, got: &HashSet<String>, id: &str) -> Vec<&Address> {
        let mut marked = Vec::new();
        for r in &mut self.now {
            if r.status == Status::Pending && got.contains(&r.address.dedup_key()) {
                r.status = Status::Duplicate(id.to_owned());
                marked.push(&r.address);
            }
        }
        marked
    }

    /// Who the transaction goes to: the recipients still pending.
    pub fn to_send(&self) -> Vec<Address> {
        (self.now.iter())
            .filter(|r| r.status == Status::Pending)
            .map(|r| r.address.clone())
            .collect()
    }

    /// Each recipient sent to takes the status of its reply, matched by address, not by
    /// position; one with no reply of its own stays pending, whatever the others got.
    pub fn take_replies(&mut self, results: &[Recipient]) {
        for r in (self.now.iter_mut()).filter(|r| r.status == Status::Pending) {
            if let Some(result) = results.iter().find(|x| x.address == r.address) {
                r.status = result.status.clone();
            }
        }
    }

    /// The internal server refused the whole message for good: every recipient sent to is
    /// refused with it.
    pub fn refuse_whole(&mut self, refusal: WholeRefusal) {
        for r in (self.now.iter_mut()).filter(|r| r.status == Status::Pending) {
            r.status = Status::Permanent(refusal.reply.clone());
        }
        self.whole = Some(refusal);
    }

    /// The recipients the internal server accepted in this attempt: on disk before the
    /// postmaster's copy is tried, so that a crash during it does not send them again.
    pub fn accepted(&self) -> Vec<Recipient> {
        (self.now.iter())
            .filter(|r| matches!(r.status, Status::Delivered(_)))
            .cloned()
            .collect()
    }

    /// Whether the postmaster's copy is to be tried: someone was refused for good.
    pub fn needs_copy(&self) -> bool {
        (self.now.iter()).any(|r| matches!(r.status, Status::Permanent(_)))
    }

    /// The postmaster's copy of what was refused for good: MAIL FROM the original return
    /// path, unless the internal server refused that sender (it would refuse the copy too:
    /// `<>`), and `X-Mailferry-Rerouted:` lines on top saying who refused it and why (one for
    /// a message refused as a whole, else one per refused recipient but the postmaster).
    /// `Err` when only the postmaster itself refused: nowhere else to go.
    pub fn copy(&self, postmaster: &Address) -> Result<Copy<'_>, Refusal> {
        let (reverse_path, headers) = match &self.whole {
            Some(whole) => {
                let reverse = if whole.sender_refused {
                    None
                } else {
                    self.return_path.as_ref()
                };
                (reverse, notice::refused_whole(&whole.why))
            }
            None => {
                let headers: String = (self.reroute_for(postmaster))
                    .map(|(r, reply)| notice::refused_recipient(r.as_str(), &reply.to_string()))
                    .collect();
                (self.return_path.as_ref(), headers)
            }
        };
        if headers.is_empty() {
            return Err(Refusal {
                why: "the postmaster itself refused it".to_owned(),
                permanent: true,
            });
        }
        Ok(Copy {
            reverse_path,
            headers,
        })
    }

    /// The outcome each recipient of this attempt counts as (`metrics::recipient_outcome`),
    /// once `standing` is known: delivered, re-routed, `permanent` (refused for good and the
    /// message given up on), or `temporary` (not settled, to be tried again); a message refused as a whole counts its recipients only once they are
    /// re-routed. Duplicates and recipients without a reply were counted, or not, before.
    pub fn counted(&self, standing: &Standing) -> Vec<&'static str> {
        if self.whole.is_some() && *standing != Standing::Settled {
            return Vec::new();
        }
        (self.now.iter())
            .filter_map(|r| match r.status {
                Status::Delivered(_) => Some("delivered"),
                Status::Rerouted(_) => Some("rerouted"),
                // Refused for good with nowhere to go: the message is given up on.
                Status::Permanent(_) if matches!(standing, Standing::GiveUp(_)) => {
                    Some("permanent")
                }
                Status::Temporary(_) | Status::Permanent(_) => Some("temporary"),
                Status::Pending | Status::Duplicate(_) => None,
            })
            .collect()
    }

    /// The recipients refused for good that the postmaster's copy is for, with their
    /// refusal: all but the postmaster (a refusal of the whole message has its own notice).
    pub fn reroute_for<'a>(
        &'a self,
        postmaster: &'a Address,
    ) -> impl Iterator<Item = (&'a Address, &'a Reply)> {
        self.now.iter().filter_map(move |r| match &r.status {
            Status::Permanent(reply) if !r.is(postmaster) => Some((&r.address, reply)),
            _ => None,
        })
    }

    /// Where the message stands once the postmaster's copy of the refused recipients was
    /// tried (`copy`; `Ok` when there was none to try). A refused recipient is re-routed by
    /// the postmaster's copy, unless it is the postmaster itself; a message refused as a
    /// whole is re-routed as a whole.
    pub fn settle(&mut self, postmaster: &Address, copy: &Result<(), Refusal>) -> Standing {
        if let Some(whole) = &self.whole {
            return match copy {
                Ok(()) => {
                    for r in &mut self.now {
                        if let Status::Permanent(reply) = &r.status {
                            r.status = Status::Rerouted(reply.clone());
                        }
                    }
                    Standing::Settled
                }
                Err(pm) => {
                    let why = format!(
                        "{}; the copy to the postmaster failed too: {}",
                        whole.why, pm.why
                    );
                    if pm.permanent {
                        Standing::GiveUp(why)
                    } else {
                        Standing::Retry(why)
                    }
                }
            };
        }
        let mut retry = None;
        let mut give_up = None;
        for r in &self.now {
            if let Status::Temporary(reply) = &r.status {
                retry.get_or_insert_with(|| format!("<{}>: {reply}", r.address));
            }
        }
        for r in (self.now.iter()).filter(|r| r.status == Status::Pending) {
            retry.get_or_insert_with(|| format!("no outcome for <{}>", r.address));
        }
        for r in &mut self.now {
            let Status::Permanent(reply) = &r.status else {
                continue;
            };
            match copy {
                Ok(()) if !r.is(postmaster) => r.status = Status::Rerouted(reply.clone()),
                // The postmaster refusing is never settled by a copy to the postmaster.
                Ok(()) => {
                    give_up.get_or_insert_with(|| format!("<{}> refused: {reply}", r.address));
                }
                Err(pm) => {
                    let why = format!(
                        "<{}> refused ({reply}), and the postmaster's copy failed: {}",
                        r.address, pm.why
                    );
                    if pm.permanent {
                        give_up.get_or_insert(why);
                    } else {
                        retry.get_or_insert(why);
                    }
                }
            }
        }
        // A temporary failure may still pass; one refused for good with nowhere to go cannot.
        match (retry, give_up) {
            (Some(why), _) => Standing::Retry(why),
            (None, Some(why)) => Standing::GiveUp(why),
            (None, None) => Standing::Settled,
        }
    }

    /// How many recipients the internal server accepted in this attempt.
    pub fn delivered(&self) -> usize {
        self.count(|s| matches!(s, Status::Delivered(_)))
    }

    /// How many recipients were re-routed to the postmaster in this attempt.
    pub fn rerouted(&self) -> usize {
        self.count(|s| matches!(s, Status::Rerouted(_)))
    }

    fn count(&self, f: impl Fn(&Status) -> bool) -> usize {
        self.now.iter().filter(|r| f(&r.status)).count()
    }
}

#[cfg(test)]
mod tests {
    use std::time::SystemTime;

    use super::*;
    use crate::route::{Reason, Routed};

    fn addr(s: &str) -> Address {
        Address::parse(s).unwrap()
    }

    fn reply(code: u16) -> Reply {
        Reply {
            code,
            text: format!("{code} text"),
        }
    }

    fn result(to: &str, status: Status) -> Recipient {
        Recipient {
            address: addr(to),
            status,
        }
    }

    /// The routing of a message from `from` to these recipients.
    fn routing(from: Option<&str>, to: &[&str]) -> Routing {
        Routing {
            return_path: from.map(addr),
            recipients: (to.iter())
                .map(|a| Routed {
                    address: addr(a),
                    reason: Reason::Header("To".into()),
                })
                .collect(),
            refused: Vec::new(),
            message_id: None,
            hops: 0,
            looped: None,
        }
    }

    /// A plan with these recipients, none settled before.
    fn plan(to: &[&str]) -> Plan {
        let routing = routing(Some("someone@elsewhere.test"), to);
        Plan::new(&routing, &MessageState::new(SystemTime::UNIX_EPOCH))
    }

    /// A plan with these recipients, each with its reply.
    fn replied(replies: &[(&str, Status)]) -> Plan {
        let mut p = plan(&replies.iter().map(|(a, _)| *a).collect::<Vec<_>>());
        let results: Vec<Recipient> = (replies.iter())
            .map(|(a, o)| result(a, o.clone()))
            .collect();
        p.take_replies(&results);
        p
    }

    fn status_of<'a>(p: &'a Plan, who: &str) -> &'a Status {
        &(p.now.iter().find(|r| r.address.as_str() == who).unwrap()).status
    }

    /// The statuses of the plan's recipients of this attempt, in their order.
    fn assert_statuses(p: &Plan, expected: &[Status]) {
        let got: Vec<&Status> = p.now.iter().map(|r| &r.status).collect();
        assert_eq!(got, expected.iter().collect::<Vec<_>>());
    }

    fn pm() -> Address {
        addr("pm@example.com")
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
        let routing = routing(None, &["a@example.com", "b@example.com", "c@example.com"]);
        let mut seen = MessageState::new(SystemTime::UNIX_EPOCH);
        seen.record(&[
            Recipient {
                address: addr("B@example.com"),
                status: Status::Delivered(reply(250)),
            },
            // A temporary refusal last time: sent to again.
            Recipient {
                address: addr("c@example.com"),
                status: Status::Temporary(reply(451)),
            },
        ]);
        let p = Plan::new(&routing, &seen);
        assert_eq!(p.to_send(), [addr("a@example.com"), addr("c@example.com")]);
        assert_eq!(p.earlier.len(), 1);
        assert_eq!(p.earlier[0].address.as_str(), "b@example.com");
        assert_eq!(p.earlier[0].status, Status::Delivered(reply(250)));
    }

    #[test]
    fn a_duplicate_is_settled_without_being_sent() {
        let mut p = plan(&["a@example.com", "b@example.com"]);
        let got = HashSet::from([addr("A@example.com").dedup_key()]);
        assert_eq!(p.duplicates(&got, "sha256:x"), [&addr("a@example.com")]);
        assert_eq!(p.to_send(), [addr("b@example.com")]);
        assert_eq!(
            status_of(&p, "a@example.com"),
            &Status::Duplicate("sha256:x".into())
        );
        p.take_replies(&[result("b@example.com", Status::Delivered(reply(250)))]);
        assert_eq!(p.settle(&pm(), &Ok(())), Standing::Settled);
        assert_eq!((p.delivered(), p.rerouted()), (1, 0));
    }

    #[test]
    fn replies_are_matched_by_address_and_a_missing_one_is_not_settled() {
        let mut p = plan(&["a@example.com", "b@example.com", "c@example.com"]);
        // Out of order, and nothing for c.
        p.take_replies(&[
            result("b@example.com", Status::Permanent(reply(550))),
            result("a@example.com", Status::Delivered(reply(250))),
        ]);
        assert_statuses(
            &p,
            &[
                Status::Delivered(reply(250)),
                Status::Permanent(reply(550)),
                Status::Pending,
            ],
        );
        assert_eq!(
            p.settle(&pm(), &Ok(())),
            Standing::Retry("no outcome for <c@example.com>".into())
        );
    }

    #[test]
    fn every_recipient_outcome_is_recorded_as_it_stands() {
        let mut p = replied(&[
            ("a@example.com", Status::Delivered(reply(250))),
            ("b@example.com", Status::Temporary(reply(451))),
            ("c@example.com", Status::Permanent(reply(550))),
        ]);
        assert!(p.needs_copy());
        assert_eq!(
            p.accepted().len(),
            1,
            "written before the postmaster's copy"
        );
        let standing = p.settle(&pm(), &Ok(()));
        assert_statuses(
            &p,
            &[
                Status::Delivered(reply(250)),
                Status::Temporary(reply(451)),
                Status::Rerouted(reply(550)),
            ],
        );
        assert_eq!((p.delivered(), p.rerouted()), (1, 1));
        assert_eq!(
            standing,
            Standing::Retry("<b@example.com>: 451 451 text".into())
        );
    }

    #[test]
    fn a_temporary_refusal_is_named_before_a_missing_reply_and_a_failed_copy() {
        let mut p = plan(&["c@example.com", "a@example.com", "b@example.com"]);
        p.take_replies(&[
            result("c@example.com", Status::Permanent(reply(550))),
            result("b@example.com", Status::Temporary(reply(451))),
        ]);
        let later = Refusal {
            why: "451 busy".into(),
            permanent: false,
        };
        assert_eq!(
            p.settle(&pm(), &Err(later)),
            Standing::Retry("<b@example.com>: 451 451 text".into())
        );
    }

    #[test]
    fn all_delivered_or_rerouted_is_settled() {
        let mut p = replied(&[
            ("a@example.com", Status::Delivered(reply(250))),
            ("c@example.com", Status::Permanent(reply(550))),
        ]);
        assert_eq!(
            p.reroute_for(&pm()).collect::<Vec<_>>(),
            [(&addr("c@example.com"), &reply(550))]
        );
        assert_eq!(p.settle(&pm(), &Ok(())), Standing::Settled);
        assert!(p.now.iter().all(|r| r.status.is_settled()));
    }

    #[test]
    fn all_accepted_needs_no_copy_to_the_postmaster() {
        let mut p = replied(&[("a@example.com", Status::Delivered(reply(250)))]);
        assert!(!p.needs_copy());
        assert_eq!(p.settle(&pm(), &Ok(())), Standing::Settled);
    }

    #[test]
    fn a_failed_postmaster_copy_retries_or_gives_up_as_its_reply_says() {
        let refused = || replied(&[("c@example.com", Status::Permanent(reply(550)))]);
        let later = Refusal {
            why: "451 busy".into(),
            permanent: false,
        };
        let mut p = refused();
        assert!(matches!(p.settle(&pm(), &Err(later)), Standing::Retry(_)));
        assert_eq!(
            status_of(&p, "c@example.com"),
            &Status::Permanent(reply(550)),
            "not settled"
        );
        let never = Refusal {
            why: "550 no".into(),
            permanent: true,
        };
        let Standing::GiveUp(why) = refused().settle(&pm(), &Err(never)) else {
            panic!("gives up")
        };
        assert!(
            why.contains("the postmaster's copy failed: 550 no"),
            "{why}"
        );
    }

    #[test]
    fn the_postmaster_refused_is_never_settled_by_a_copy_to_the_postmaster() {
        let mut p = replied(&[
            ("PM@example.com", Status::Permanent(reply(550))),
            ("c@example.com", Status::Permanent(reply(550))),
        ]);
        let copy_for: Vec<_> = p.reroute_for(&pm()).map(|(a, _)| a.clone()).collect();
        assert_eq!(
            copy_for,
            [addr("c@example.com")],
            "no copy for the postmaster"
        );
        let standing = p.settle(&pm(), &Ok(()));
        assert_eq!(
            standing,
            Standing::GiveUp("<PM@example.com> refused: 550 550 text".into())
        );
        assert_eq!(p.rerouted(), 1);
        assert!(!status_of(&p, "PM@example.com").is_settled());
    }

    #[test]
    fn a_whole_message_refusal_reroutes_every_recipient_or_quarantines() {
        let refused = |reply: Reply| {
            let mut p = plan(&["a@example.com", "b@example.com"]);
            let got = HashSet::from([addr("b@example.com").dedup_key()]);
            p.duplicates(&got, "sha256:x");
            let e = crate::relay::RelayError::Data { reply };
            p.refuse_whole(WholeRefusal::from_error(&e).unwrap());
            p
        };
        let mut p = refused(reply(554));
        assert!(p.needs_copy());
        assert_eq!(p.reroute_for(&pm()).count(), 1);
        assert_eq!(p.settle(&pm(), &Ok(())), Standing::Settled);
        assert_eq!(
            status_of(&p, "a@example.com"),
            &Status::Rerouted(reply(554))
        );
        assert_eq!(
            status_of(&p, "b@example.com"),
            &Status::Duplicate("sha256:x".into()),
            "a duplicate stays one"
        );
        assert_eq!(p.rerouted(), 1);

        let never = Refusal {
            why: "550 no".into(),
            permanent: true,
        };
        let Standing::GiveUp(why) = refused(reply(554)).settle(&pm(), &Err(never.clone())) else {
            panic!("quarantine")
        };
        assert_eq!(
            why,
            "the relay refused the message: 554 554 text; the copy to the postmaster failed too: 550 no"
        );
        let later = Refusal {
            permanent: false,
            ..never
        };
        let mut p = refused(reply(554));
        assert!(matches!(p.settle(&pm(), &Err(later)), Standing::Retry(_)));
        assert_eq!(p.rerouted(), 0);
    }

    #[test]
    fn the_transaction_goes_from_the_original_return_path_to_each_pending_recipient() {
        let mut seen = MessageState::new(SystemTime::UNIX_EPOCH);
        seen.record(&[Recipient {
            address: addr("b@example.com"),
            status: Status::Rerouted(reply(550)),
        }]);
        let r = routing(Some("x@sender.test"), &["a@example.com", "b@example.com"]);
        let p = Plan::new(&r, &seen);
        assert_eq!(p.return_path, Some(addr("x@sender.test")));
        assert_eq!(
            p.to_send(),
            [addr("a@example.com")],
            "one RCPT each, b is done"
        );
        let bounce = Plan::new(&routing(None, &["a@example.com"]), &seen);
        assert_eq!(bounce.return_path, None, "<> stays <>");
    }

    #[test]
    fn the_postmaster_s_copy_keeps_the_sender_unless_the_sender_was_refused() {
        let whole = |e: crate::relay::RelayError| {
            let mut p = plan(&["a@example.com"]);
            p.refuse_whole(WholeRefusal::from_error(&e).unwrap());
            p
        };
        let sender = Some(&addr("someone@elsewhere.test"));
        let p = replied(&[("a@example.com", Status::Permanent(reply(550)))]);
        assert_eq!(p.copy(&pm()).unwrap().reverse_path, sender);
        let data = whole(crate::relay::RelayError::Data { reply: reply(554) });
        assert_eq!(data.copy(&pm()).unwrap().reverse_path, sender);
        let mail = whole(crate::relay::RelayError::MailFrom { reply: reply(553) });
        assert_eq!(mail.copy(&pm()).unwrap().reverse_path, None);
        let path = whole(crate::relay::RelayError::ReversePath {
            address: addr("someone@elsewhere.test"),
            reason: "8-bit".into(),
        });
        assert_eq!(path.copy(&pm()).unwrap().reverse_path, None);
    }

    #[test]
    fn the_postmaster_s_copy_says_who_refused_it_and_why() {
        let p = replied(&[
            ("a@example.com", Status::Delivered(reply(250))),
            ("c@example.com", Status::Permanent(reply(550))),
            ("pm@example.com", Status::Permanent(reply(551))),
        ]);
        assert_eq!(
            p.copy(&pm()).unwrap().headers,
            "X-Mailferry-Rerouted: for <c@example.com> refused by the internal server: 550 550 text\r\n"
        );
        let only_pm = replied(&[("pm@example.com", Status::Permanent(reply(550)))]);
        let nowhere = only_pm.copy(&pm()).unwrap_err();
        assert!(nowhere.permanent, "nowhere else to go");
        let mut whole = plan(&["a@example.com", "c@example.com"]);
        let e = crate::relay::RelayError::Data { reply: reply(554) };
        whole.refuse_whole(WholeRefusal::from_error(&e).unwrap());
        let headers = whole.copy(&pm()).unwrap().headers;
        assert_eq!(
            headers.lines().count(),
            1,
            "one notice for the whole message"
        );
        assert!(headers.contains("whole message was refused") && headers.contains("554"));
    }

    #[test]
    fn each_recipient_counts_once_as_it_ended_and_a_whole_refusal_only_when_rerouted() {
        let mut p = plan(&[
            "a@example.com",
            "b@example.com",
            "c@example.com",
            "d@example.com",
        ]);
        p.duplicates(&HashSet::from([addr("d@example.com").dedup_key()]), "x");
        p.take_replies(&[
            result("a@example.com", Status::Delivered(reply(250))),
            result("b@example.com", Status::Temporary(reply(451))),
            result("c@example.com", Status::Permanent(reply(550))),
        ]);
        let standing = p.settle(&pm(), &Ok(()));
        assert_eq!(p.counted(&standing), ["delivered", "temporary", "rerouted"]);

        let whole = || {
            let mut p = plan(&["a@example.com", "b@example.com"]);
            let e = crate::relay::RelayError::Data { reply: reply(554) };
            p.refuse_whole(WholeRefusal::from_error(&e).unwrap());
            p
        };
        let mut p = whole();
        let standing = p.settle(&pm(), &Ok(()));
        assert_eq!(p.counted(&standing), ["rerouted", "rerouted"]);
        let mut p = whole();
        let failed = Refusal {
            why: "451".into(),
            permanent: false,
        };
        let standing = p.settle(&pm(), &Err(failed));
        assert!(p.counted(&standing).is_empty());
    }

    #[test]
    fn nothing_is_settled_before_every_recipient_is_delivered_or_rerouted() {
        // Whatever mix of replies: settled exactly when each recipient is delivered, a
        // duplicate, or re-routed by an accepted postmaster's copy.
        let outcomes = [
            Status::Delivered(reply(250)),
            Status::Temporary(reply(451)),
            Status::Permanent(reply(550)),
        ];
        for a in &outcomes {
            for b in &outcomes {
                for copy in [
                    Ok(()),
                    Err(Refusal {
                        why: "451".into(),
                        permanent: false,
                    }),
                ] {
                    let mut p =
                        replied(&[("a@example.com", a.clone()), ("b@example.com", b.clone())]);
                    let settled = p.settle(&pm(), &copy) == Standing::Settled;
                    let all = p.now.iter().all(|r| r.status.is_settled());
                    assert_eq!(settled, all, "{a:?} {b:?} {copy:?}");
                    let fine = |o: &Status| !matches!(o, Status::Temporary(_));
                    let expected = fine(a)
                        && fine(b)
                        && (copy.is_ok()
                            || ![a, b].iter().any(|o| matches!(o, Status::Permanent(_))));
                    assert_eq!(settled, expected, "{a:?} {b:?} {copy:?}");
                }
            }
        }
    }

    #[test]
    fn the_postmaster_s_copy_is_taken_only_by_a_reply_for_the_postmaster() {
        let sent = |outcome| Ok(vec![result("pm@example.com", outcome)]);
        let of = |s| Refusal::of_copy(&s, &pm());
        assert_eq!(of(sent(Status::Delivered(reply(250)))), Ok(()));
        let refused = of(sent(Status::Permanent(reply(550)))).unwrap_err();
        assert_eq!(
            (refused.why.as_str(), refused.permanent),
            ("550 550 text", true)
        );
        assert!(
            !of(sent(Status::Temporary(reply(451))))
                .unwrap_err()
                .permanent
        );
        let elsewhere = of(Ok(vec![result(
            "a@example.com",
            Status::Delivered(reply(250)),
        )]));
        assert_eq!(elsewhere.unwrap_err().why, "no outcome for the postmaster");
        let data = crate::relay::RelayError::Data { reply: reply(554) };
        assert!(of(Err(data)).unwrap_err().permanent);
        let down = crate::relay::RelayError::Timeout {
            during: "DATA",
            secs: 1,
        };
        assert!(!of(Err(down)).unwrap_err().permanent);
    }
}
