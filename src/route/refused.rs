//! An address in an accepted domain that cannot be sent as written, and why: the router
//! refuses it ([`super::Routing::refused`]) instead of sending it.

use std::fmt;

use crate::address::AddressError;

use super::SkipReason;

/// An address in an accepted domain that cannot be sent as written.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Refused {
    /// The header it was found in, as written in the message.
    pub header: String,
    /// The address as the header gave it (unvalidated: quote it when printing).
    pub address: String,
    /// Why it cannot be sent.
    pub why: Refusal,
    /// Whether the postmaster gets the copy in its place (else it is only dropped).
    pub to_postmaster: bool,
}

impl fmt::Display for Refused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?} in {}: {}", self.address, self.header, self.why)
    }
}

/// Why an address in an accepted domain is refused.
#[derive(Debug, Clone, PartialEq, Eq, Hash, thiserror::Error)]
pub enum Refusal {
    /// `%`, `!` or `@` in the local part, or RFC 5321 route syntax: the internal server could
    /// relay it to another host.
    #[error("source-routed, never sent as written: {0}")]
    SourceRouted(AddressError),
    /// Bytes that are not valid UTF-8 (or a known charset): not the address that was written.
    #[error("the address holds undecodable bytes")]
    Undecodable,
    /// Anything else that cannot go on an SMTP line (a control character, a quote inside
    /// quotes, an overlong address).
    #[error("cannot be sent by SMTP: {0}")]
    Unsendable(AddressError),
}

impl Refusal {
    /// The metric label: `source_routed`, `undecodable` or `unsendable`.
    pub fn label(&self) -> &'static str {
        match self {
            Refusal::SourceRouted(_) => "source_routed",
            Refusal::Undecodable => "undecodable",
            Refusal::Unsendable(_) => "unsendable",
        }
    }

    /// The refusal for an address that did not validate, when that error means "refuse"
    /// rather than "names no mailbox" (empty, no `@`, no local part, a bad domain).
    pub(super) fn of(why: &SkipReason) -> Option<Refusal> {
        match why {
            SkipReason::Undecodable => Some(Refusal::Undecodable),
            SkipReason::Invalid(e @ (AddressError::SourceRoute(_) | AddressError::RouteSyntax)) => {
                Some(Refusal::SourceRouted(e.clone()))
            }
            SkipReason::Invalid(
                e @ (AddressError::ForbiddenChar
                | AddressError::NeedsQuoting
                | AddressError::BadQuoting
                | AddressError::TooLong),
            ) => Some(Refusal::Unsendable(e.clone())),
            _ => None,
        }
    }
}
