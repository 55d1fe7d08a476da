//! The relay: one SMTP transaction per message to the internal mail server, with the reply
//! to every RCPT kept, so that each recipient has its own outcome.
//!
//! [`Relay`] is the seam the pipeline sends through; [`SmtpRelay`] implements it, a pool
//! shared by every account (a session only for one transaction). The SMTP client is the
//! project's own, in layers like the POP3 client:
//!
//! ```text
//! wire.rs         pure: replies parsed from any split of bytes, EHLO capabilities, dot-stuffing
//! conn.rs         one connection: reads, flights of commands, greeting, EHLO, STARTTLS
//! auth.rs         SMTP AUTH, spoken by the shared SASL client (crate::sasl)
//! transaction.rs  MAIL, RCPTs, BDAT or DATA; pipelined when offered; per-RCPT replies
//! session.rs      the pool of sessions, reused across messages
//! check.rs        a session set up and ended without mail, for test-connection
//! ```
//!
//! [`prepare`] makes the message as it goes to the data (trace header, line ends) in one
//! copy; the session writes it in pieces from there.

mod auth;
pub mod check;
mod conn;
mod prepare;
mod session;
mod trace;
mod transaction;
pub mod wire;

use std::fmt;
use std::future::Future;

use crate::address::Address;
use crate::recipient::Recipient;
#[cfg(doc)]
use crate::recipient::Status;

pub(crate) use prepare::begins_with_header_section;
pub use prepare::prepare;
pub use session::SmtpRelay;
pub(crate) use trace::civil_from_days;
pub use trace::received_header;
pub use trace::rfc5322_date;

/// What the pipeline asks of the internal mail server: one transaction per message, a reply
/// per recipient. Cheap to clone (clones share the connections).
pub trait Relay: Clone + Send + Sync + 'static {
    /// The name this relay gives in EHLO: the `by` of mailferry's `Received:` header.
    fn helo_name(&self) -> String;

    /// One transaction: `MAIL FROM:<reverse_path>` (`<>` for `None`), one RCPT per
    /// recipient, the message. `Ok` has every recipient given, in order, with its status:
    /// [`Status::Delivered`] with the reply to the data, or [`Status::Temporary`] or
    /// [`Status::Permanent`] with the reply to its RCPT (never another). `Err` means no
    /// recipient got it (see [`RelayError::is_permanent`], [`RelayError::is_unavailable`]).
    fn send(
        &self,
        reverse_path: Option<&Address>,
        recipients: &[Address],
        message: &[u8],
    ) -> impl Future<Output = Result<Vec<Recipient>, RelayError>> + Send;
}

/// One SMTP reply: `550 5.1.1 no such user` (a multi-line reply's lines joined by spaces).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// The three-digit reply code.
    pub code: u16,
    /// The text after the code (the enhanced status code included).
    pub text: String,
}

impl Reply {
    /// 4xx: try again later.
    pub fn is_temporary(&self) -> bool {
        (400..500).contains(&self.code)
    }

    /// 5xx: refused for good.
    pub fn is_permanent(&self) -> bool {
        (500..600).contains(&self.code)
    }

    #[cfg(test)]
    fn is_success(&self) -> bool {
        (200..300).contains(&self.code)
    }
}

impl fmt::Display for Reply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.text.is_empty() {
            write!(f, "{}", self.code)
        } else {
            write!(f, "{} {}", self.code, self.text)
        }
    }
}

/// Why a whole transaction failed (no recipient got the message).
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    /// Not sent: the account's lease was lost (another instance owns the account now and
    /// sends its mail).
    #[error("not sent: the lease on account {account} was lost")]
    LeaseLost {
        /// The account.
        account: String,
    },
    /// The TCP connection could not be made.
    #[error("cannot connect to the relay {host}:{port}: {source}")]
    Tcp {
        /// `relay.host`.
        host: String,
        /// `relay.port`.
        port: u16,
        /// What the operating system said.
        #[source]
        source: std::io::Error,
    },
    /// TLS could not be set up: CA file, client certificate, the server's certificate
    /// refused (the message says why), the handshake failed.
    #[error("TLS with the relay: {0}")]
    Tls(crate::tls::TlsError),
    /// The relay's greeting was not 220.
    #[error("the relay {host} refused the connection: {reply}")]
    Greeting {
        /// `relay.host`.
        host: String,
        /// What the relay replied.
        reply: Reply,
    },
    /// `tls: starttls` and the server answered STARTTLS with a refusal.
    #[error("the relay {host} refused STARTTLS, which `tls: starttls` requires: {reply}")]
    StarttlsRefused {
        /// `relay.host`.
        host: String,
        /// What the relay replied.
        reply: Reply,
    },
    /// The connection broke before TLS was set up.
    #[error("the connection to the relay {host} broke before TLS: {source}")]
    Lost {
        /// `relay.host`.
        host: String,
        /// What the operating system said.
        #[source]
        source: std::io::Error,
    },
    /// EHLO, and HELO after it, were refused.
    #[error("the relay {host} refused EHLO: {reply}")]
    Ehlo {
        /// `relay.host`.
        host: String,
        /// What the relay replied.
        reply: Reply,
    },
    /// `tls: starttls` and the server does not offer STARTTLS: nothing was sent.
    #[error("the relay {host} does not offer STARTTLS, which `tls: starttls` requires")]
    StarttlsRequired {
        /// `relay.host`.
        host: String,
    },
    /// The relay's reply could not be understood at all.
    #[error("the relay {host} sent a reply mailferry cannot read during {during}: {reason}")]
    Garbled {
        /// `relay.host`.
        host: String,
        /// The step of the transaction (`MAIL FROM`, `DATA`, ...).
        during: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// A reply that does not fit where it came (a 354 to a RCPT, a 250 to DATA, a reply no
    /// command asked for): the relay and mailferry are out of step, and nothing in this
    /// transaction counts as delivered.
    #[error("the relay {host} answered {during} out of turn ({reply}); the session is dropped")]
    OutOfStep {
        /// `relay.host`.
        host: String,
        /// The step whose reply did not fit.
        during: &'static str,
        /// The reply that came.
        reply: Reply,
    },
    /// The message is larger than the relay's SIZE (RFC 1870): nothing was sent.
    #[error("the message ({size} bytes) is larger than the relay accepts (SIZE {limit})")]
    TooBig {
        /// The message's size as it would go out.
        size: u64,
        /// The relay's SIZE.
        limit: u64,
    },
    /// `relay.username` is set and the relay refused the credentials.
    #[error("the relay {host} refused the login of relay.username ({mechanism}): {reply}")]
    AuthRefused {
        /// `relay.host`.
        host: String,
        /// The SASL mechanism tried.
        mechanism: &'static str,
        /// What the relay replied.
        reply: Reply,
    },
    /// `relay.username` is set and the login cannot be attempted: nothing was sent.
    #[error("mailferry cannot log in to the relay {host}: {why}")]
    AuthUnavailable {
        /// `relay.host`.
        host: String,
        /// Why not.
        why: String,
    },
    /// `relay.oauth` is set and no access token could be had (the error says why and
    /// what to do): nothing was sent.
    #[error("no OAuth2 token for the relay's login: {0}")]
    Token(crate::oauth::OAuthError),
    /// No reply within `timeout`.
    #[error("the relay did not answer {during} within {secs}s")]
    Timeout {
        /// The step of the transaction (`MAIL FROM`, `DATA`, ...).
        during: &'static str,
        /// `relay.timeout` (or `data_timeout`), in seconds.
        secs: u64,
    },
    /// The connection broke.
    // The message names the cause, so it is not also a `source()` (errors once).
    #[error("the relay connection failed: {0}")]
    Io(std::io::Error),
    /// MAIL FROM was refused.
    #[error("the relay refused MAIL FROM: {reply}")]
    MailFrom {
        /// What the relay replied.
        reply: Reply,
    },
    /// The reverse path cannot be sent to this server at all.
    #[error("the reverse path <{address}> cannot be sent: {reason}")]
    ReversePath {
        /// The reverse path.
        address: Address,
        /// Why it cannot be sent.
        reason: String,
    },
    /// DATA, or the message itself, was refused.
    #[error("the relay refused the message: {reply}")]
    Data {
        /// What the relay replied.
        reply: Reply,
    },
}

impl RelayError {
    /// Whether trying again cannot help: a 5xx reply to MAIL FROM or DATA, a reverse path
    /// the server cannot take, a message over its SIZE.
    pub fn is_permanent(&self) -> bool {
        match self {
            RelayError::MailFrom { reply } | RelayError::Data { reply } => reply.is_permanent(),
            RelayError::ReversePath { .. } | RelayError::TooBig { .. } => true,
            _ => false,
        }
    }

    /// Whether no session with the relay could be set up at all (connect, TLS, STARTTLS,
    /// EHLO, AUTH) or it speaks no SMTP mailferry can read: every other message would fail
    /// the same way, so a pass stops downloading.
    pub fn is_unavailable(&self) -> bool {
        matches!(
            self,
            RelayError::Ehlo { .. }
                | RelayError::LeaseLost { .. }
                | RelayError::AuthRefused { .. }
                | RelayError::AuthUnavailable { .. }
                | RelayError::Token(_)
                | RelayError::Garbled { .. }
                | RelayError::Tcp { .. }
                | RelayError::Tls(_)
                | RelayError::Greeting { .. }
                | RelayError::StarttlsRefused { .. }
                | RelayError::Lost { .. }
                | RelayError::StarttlsRequired { .. }
        )
    }
}

/// The error for no reply (or no progress) within `limit` during `during`.
fn timeout_error(during: &'static str, limit: std::time::Duration) -> RelayError {
    RelayError::Timeout {
        during,
        secs: limit.as_secs(),
    }
}

#[cfg(test)]
mod address_tests;
#[cfg(test)]
mod flight_tests;
#[cfg(test)]
pub mod memory;
#[cfg(test)]
mod tests;
