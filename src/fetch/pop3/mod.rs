//! The POP3 client (RFC 1939, CAPA from RFC 2449, STLS from RFC 2595), written in the project:
//! `protocol.rs` is the wire format without I/O, `apop.rs` the APOP digest, `client.rs` the
//! session over TCP or TLS, `pipeline.rs` its RFC 2449 PIPELINING (RETRs ahead, DELEs
//! without waiting), `secret.rs` what may be sent and shown of a credential; `session.rs` is
//! POP3's `Mailbox`, `kind.rs` what POP3 says about itself (`MailboxKind`).

pub mod apop;
#[cfg(test)]
mod apop_tests;
mod client;
mod conn;
pub mod kind;
mod login;
#[cfg(test)]
mod oauth_tests;
mod pipeline;
#[cfg(test)]
mod pipeline_tests;
pub mod protocol;
#[cfg(test)]
pub(crate) mod sasl_tests;
mod secret;
pub mod session;
#[cfg(test)]
mod stall_tests;
#[cfg(test)]
mod tests;

pub use client::{FETCH_RATE_FLOOR, LISTING_MAX, Listed, MESSAGE_MAX, Pop3Client, fetch_deadline};
// Shared with the IMAP client.
pub use protocol::{Capabilities, Expire, Overflow};
pub(crate) use secret::redact;

use crate::fetch::transport::TransportError;
use crate::tls::TlsError;

/// What went wrong in a POP3 session. [`Pop3Error::connection_lost`] tells whether the session
/// can go on.
#[derive(Debug, thiserror::Error)]
pub enum Pop3Error {
    /// The connection could not be made (directly or through the account's proxy), broke,
    /// or the server was too slow (a download past its deadline included); the session is
    /// given up.
    #[error(transparent)]
    Transport(#[from] TransportError),
    /// The message is larger than `max_message_size`: not downloaded (when LIST announced
    /// it so, RETR was not even sent), nothing of it kept. The session is still usable.
    #[error("message {msg} is larger than max_message_size ({limit} bytes){}",
        announced.map(|n| format!("; LIST says {n} bytes")).unwrap_or_default())]
    MessageTooLarge {
        /// The message number.
        msg: u32,
        /// `max_message_size`, in bytes.
        limit: u64,
        /// The size LIST announced, if it did.
        announced: Option<u64>,
    },
    /// The server closed the connection, possibly in the middle of a response.
    #[error("the server closed the connection")]
    ConnectionClosed,
    /// TLS could not be set up.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// The server answered `-ERR`; the session is still usable.
    #[error("the server refused {command}: {text}")]
    ServerError {
        /// The command refused (`RETR 3`, `greeting`, ...); never a credential.
        command: String,
        /// The server's text after `-ERR`.
        text: String,
    },
    /// The server sent something that is not POP3; the session is out of step.
    #[error("protocol error: {0}")]
    Protocol(String),
    /// A status line longer than the limit; the session is out of step.
    #[error("the server sent a status line longer than {limit} bytes")]
    LineTooLong {
        /// The limit, in bytes.
        limit: usize,
    },
    /// A multi-line response went over a limit. It was read to its end and discarded, so the
    /// session is still usable.
    #[error("the response to {command} has {overflow}; discarded")]
    ResponseTooLong {
        /// The command (`RETR 3`, `UIDL`, ...).
        command: String,
        /// Which limit was exceeded.
        overflow: Overflow,
    },
    /// The server refused the credentials (or the login, e.g. `[IN-USE]`).
    #[error("authentication failed ({method}): {text}")]
    AuthFailed {
        /// The method tried (`AUTH SCRAM-SHA-256`, `APOP`, `USER/PASS`).
        method: String,
        /// The server's text, with the password blanked out if it was echoed.
        text: String,
        /// The server gave a response code saying to try again later (`IN-USE`,
        /// `LOGIN-DELAY`, `SYS/TEMP`).
        temporary: bool,
    },
    /// The account requires STLS (`tls: starttls`) and the server does not offer it.
    #[error("the server does not offer STLS, and the account requires it (tls: starttls)")]
    StlsNotOffered,
    /// Authentication would have sent the password in the clear, and the account does not
    /// say `tls: none`.
    #[error(
        "refusing to send the password over an unencrypted connection \
         (the server offers no STLS; set `tls: none` to allow plaintext login)"
    )]
    PlaintextRefused,
    /// The account asks for APOP (`auth: apop`) and the server's greeting carries no
    /// timestamp: nothing was sent.
    #[error(
        "the server does not offer APOP (no <timestamp> in its greeting), and the account \
         requires it (auth: apop)"
    )]
    ApopNotOffered,
    /// No login method is both offered by the server and allowed for the account: nothing
    /// was sent.
    #[error("{0}")]
    NoLoginMethod(crate::sasl::NoMethod),
    /// The SASL exchange failed on the client's side: a malformed challenge, or a server
    /// that could not prove it knows the password (SCRAM). The session is given up.
    // The message names the cause, so it is not also a `source()` (errors once).
    #[error("authentication failed: {0}")]
    Sasl(crate::sasl::SaslError),
    /// The user name or password cannot be sent in a command line (CR, LF or NUL).
    #[error("the {0} contains CR, LF or NUL and cannot be sent")]
    InvalidCredential(&'static str),
}

impl From<crate::sasl::SaslError> for Pop3Error {
    fn from(e: crate::sasl::SaslError) -> Pop3Error {
        Pop3Error::Sasl(e)
    }
}

impl Pop3Error {
    /// True when the session cannot be used any more (network failure, timeout, TLS failure,
    /// or a reply that leaves client and server out of step): reconnect. False when only the
    /// command failed (`-ERR`, an oversized response that was skipped) or when login was
    /// refused.
    pub fn connection_lost(&self) -> bool {
        match self {
            Pop3Error::Transport(_)
            | Pop3Error::ConnectionClosed
            | Pop3Error::Tls(_)
            | Pop3Error::Protocol(_)
            | Pop3Error::LineTooLong { .. } => true,
            Pop3Error::ServerError { .. }
            | Pop3Error::ResponseTooLong { .. }
            | Pop3Error::MessageTooLarge { .. }
            | Pop3Error::AuthFailed { .. }
            | Pop3Error::StlsNotOffered
            | Pop3Error::PlaintextRefused
            | Pop3Error::ApopNotOffered
            | Pop3Error::NoLoginMethod(_)
            | Pop3Error::Sasl(_)
            | Pop3Error::InvalidCredential(_) => false,
        }
    }
}

impl From<std::io::Error> for Pop3Error {
    fn from(e: std::io::Error) -> Pop3Error {
        Pop3Error::Transport(TransportError::Io(e))
    }
}
