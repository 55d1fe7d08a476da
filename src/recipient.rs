//! One recipient of one message and where it stands, from route to relay to state: the one
//! shape of that fact in every stage. The relay returns a [`Recipient`] per RCPT, delivered,
//! temporary or permanent; the state store writes and reads it back; the pipeline's planner
//! (`pipeline/decide.rs`) decides from it who is still to be sent to and whether the
//! message is settled. Modelled on Stalwart's outbound `Status` (scheduled, completed,
//! temporary or permanent failure), each recipient carrying its own.

use crate::address::Address;
use crate::relay::{RelayError, Reply};

/// Where one recipient of a message stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Status {
    /// Not sent yet, or sent without a reply of its own: to be sent (again).
    Pending,
    /// The internal server accepted it: the reply to the data.
    Delivered(Reply),
    /// Already got this very message from another copy or under another key
    /// (`dedup_window`): settled without sending. The message's dedup id.
    Duplicate(String),
    /// Refused for good, and the postmaster got the copy instead: the refusal.
    Rerouted(Reply),
    /// Refused for now (4xx, or an unexpected reply): tried again after the back-off.
    Temporary(Reply),
    /// Refused for good, and not (yet) re-routed to the postmaster.
    Permanent(Reply),
}

impl Status {
    /// Delivered, a duplicate, or re-routed: nothing more will be done for this recipient,
    /// and it is never sent to again.
    pub fn is_settled(&self) -> bool {
        matches!(
            self,
            Status::Delivered(_) | Status::Duplicate(_) | Status::Rerouted(_)
        )
    }

    /// The status as the state store writes it: the `status` column (`delivered`,
    /// `rerouted` or `pending`, the schema's three) and the `detail` text. `None` for
    /// [`Status::Pending`]: nothing is known that could be recorded.
    pub(crate) fn to_stored(&self) -> Option<(&'static str, String)> {
        Some(match self {
            Status::Pending => return None,
            Status::Delivered(r) => ("delivered", r.to_string()),
            Status::Duplicate(id) => ("delivered", format!("{DUPLICATE_OF}{id})")),
            Status::Rerouted(r) => ("rerouted", r.to_string()),
            Status::Temporary(r) | Status::Permanent(r) => ("pending", r.to_string()),
        })
    }

    /// The status the store wrote as `status` and `detail` ([`Status::to_stored`]); a
    /// `pending` row is temporary or permanent as its reply code says.
    pub(crate) fn from_stored(status: &str, detail: &str) -> Status {
        let reply = || read_reply(detail);
        match status {
            "delivered" => match detail
                .strip_prefix(DUPLICATE_OF)
                .and_then(|id| id.strip_suffix(')'))
            {
                Some(id) => Status::Duplicate(id.to_owned()),
                None => Status::Delivered(reply()),
            },
            "rerouted" => Status::Rerouted(reply()),
            _ => match reply() {
                r if r.is_permanent() => Status::Permanent(r),
                r if r.code == 0 => Status::Pending,
                r => Status::Temporary(r),
            },
        }
    }
}

/// How a duplicate's `detail` begins (the dedup id and `)` follow).
const DUPLICATE_OF: &str = "duplicate of an earlier delivery (";

/// A reply as [`Reply`]'s `Display` wrote it (`550 5.1.1 no such user`). Text that does not
/// begin with a reply code (a detail written by an older mailferry) is kept whole, code 0.
fn read_reply(detail: &str) -> Reply {
    let (code, text) = detail.split_at_checked(3).unwrap_or(("", detail));
    match code.parse::<u16>() {
        Ok(code) if (200..600).contains(&code) && (text.is_empty() || text.starts_with(' ')) => {
            Reply {
                code,
                text: text.trim_start().to_owned(),
            }
        }
        _ => Reply {
            code: 0,
            text: detail.to_owned(),
        },
    }
}

/// One recipient of a message and where it stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recipient {
    /// The envelope address, as sent.
    pub address: Address,
    /// Where it stands.
    pub status: Status,
}

impl Recipient {
    /// A recipient not sent to yet.
    pub fn pending(address: Address) -> Recipient {
        Recipient {
            address,
            status: Status::Pending,
        }
    }

    /// Whether this is `other` as the internal server sees it ([`Address::dedup_key`]).
    pub fn is(&self, other: &Address) -> bool {
        self.address.dedup_key() == other.dedup_key()
    }
}

/// The internal server refused the whole message for good, for every recipient at once: a
/// 5xx to MAIL FROM or DATA, or a reverse path it cannot take. The postmaster gets it
/// instead; if the postmaster's copy is refused too, the message is quarantined.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WholeRefusal {
    /// The refusal as the relay said it (the reason of the quarantine, the notice's header).
    pub why: String,
    /// The reply each recipient is refused with (synthesised for a reverse path that could
    /// not be sent at all).
    pub reply: Reply,
    /// Refused at MAIL FROM: that sender would be refused again, so the postmaster's copy
    /// goes with the null reverse path.
    pub sender_refused: bool,
}

impl WholeRefusal {
    /// The whole-message refusal a relay error means, if it is one ([`RelayError::is_permanent`]).
    pub fn from_error(e: &RelayError) -> Option<WholeRefusal> {
        if !e.is_permanent() {
            return None;
        }
        let (reply, sender_refused) = match e {
            RelayError::MailFrom { reply } => (reply.clone(), true),
            RelayError::Data { reply } => (reply.clone(), false),
            RelayError::ReversePath { reason, .. } => (
                Reply {
                    code: 553,
                    text: format!("5.1.7 not sent by mailferry: {reason}"),
                },
                true,
            ),
            _ => return None,
        };
        Some(WholeRefusal {
            why: e.to_string(),
            reply,
            sender_refused,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply(code: u16, text: &str) -> Reply {
        Reply {
            code,
            text: text.to_owned(),
        }
    }

    #[test]
    fn every_status_is_read_back_as_it_was_stored() {
        for status in [
            Status::Delivered(reply(250, "2.0.0 queued as 12")),
            Status::Duplicate("sha256:ab".to_owned()),
            Status::Rerouted(reply(550, "5.1.1 no such user")),
            Status::Temporary(reply(451, "4.3.0 later")),
            Status::Permanent(reply(554, "5.7.1 no")),
            Status::Delivered(reply(250, "")),
        ] {
            let (column, detail) = status.to_stored().unwrap();
            assert_eq!(Status::from_stored(column, &detail), status, "{detail}");
        }
        assert_eq!(Status::Pending.to_stored(), None);
    }

    #[test]
    fn the_stored_columns_stay_those_of_the_schema() {
        let stored = |s: Status| s.to_stored().unwrap().0;
        assert_eq!(stored(Status::Duplicate("x".into())), "delivered");
        assert_eq!(stored(Status::Temporary(reply(451, "x"))), "pending");
        assert_eq!(stored(Status::Permanent(reply(550, "x"))), "pending");
    }

    #[test]
    fn a_detail_of_an_older_version_keeps_its_status_and_text() {
        let old = "the relay refused MAIL FROM: 550 5.7.1 no";
        assert_eq!(
            Status::from_stored("rerouted", old),
            Status::Rerouted(reply(0, old))
        );
        assert!(Status::from_stored("rerouted", old).is_settled());
        assert_eq!(Status::from_stored("pending", ""), Status::Pending);
        assert_eq!(
            Status::from_stored("delivered", "2500 x"),
            Status::Delivered(reply(0, "2500 x"))
        );
    }

    #[test]
    fn only_delivered_duplicate_and_rerouted_are_settled() {
        assert!(Status::Delivered(reply(250, "")).is_settled());
        assert!(Status::Duplicate("x".into()).is_settled());
        assert!(Status::Rerouted(reply(550, "")).is_settled());
        assert!(!Status::Pending.is_settled());
        assert!(!Status::Temporary(reply(451, "")).is_settled());
        assert!(!Status::Permanent(reply(550, "")).is_settled());
    }

    #[test]
    fn a_whole_refusal_is_only_a_permanent_mail_from_data_or_reverse_path() {
        let mail = RelayError::MailFrom {
            reply: reply(550, "5.7.1 sender"),
        };
        let w = WholeRefusal::from_error(&mail).unwrap();
        assert!(w.sender_refused);
        assert_eq!(w.reply, reply(550, "5.7.1 sender"));
        assert_eq!(w.why, mail.to_string());
        let data = RelayError::Data {
            reply: reply(554, "5.6.0 content"),
        };
        assert!(!WholeRefusal::from_error(&data).unwrap().sender_refused);
        let later = RelayError::Data {
            reply: reply(451, "4.3.0 later"),
        };
        assert_eq!(WholeRefusal::from_error(&later), None);
        let timeout = RelayError::Timeout {
            during: "DATA",
            secs: 1,
        };
        assert_eq!(WholeRefusal::from_error(&timeout), None);
    }
}
