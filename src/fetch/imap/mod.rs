//! The IMAP client (IMAP4rev1, RFC 3501; UIDPLUS, RFC 4315; LITERAL+, RFC 7888; SASL-IR,
//! RFC 4959), written in the project like the POP3 one, for the same reasons: a timeout on
//! every read, `max_message_size` enforced before a byte of the message is kept, the same
//! TLS setup, and tagged commands that can later be pipelined.
//!
//! `protocol.rs` reads responses without I/O, `command.rs` writes commands (quoting, literals,
//! UID sets), `folder.rs` finds the configured folder among those LIST names, `conn.rs` is
//! the byte stream with its timeouts and `client.rs` the session; `session.rs` is IMAP's
//! `Mailbox`, `kind.rs` what IMAP says about itself (`MailboxKind`).

#[cfg(test)]
mod batch_tests;
mod client;
pub mod command;
mod conn;
pub mod folder;
#[cfg(test)]
mod idle_tests;
pub mod kind;
#[cfg(test)]
mod login_tests;
pub mod protocol;
#[cfg(test)]
mod protocol_tests;
#[cfg(test)]
mod sasl_tests;
#[cfg(test)]
mod seen_tests;
pub mod session;
#[cfg(test)]
mod stall_tests;
#[cfg(test)]
mod tests;

pub use client::{ImapClient, Listed, Woken};
pub use protocol::Capabilities;

use crate::fetch::transport::TransportError;
use crate::tls::TlsError;

/// What went wrong in an IMAP session. [`ImapError::connection_lost`] tells whether the
/// session can go on.
#[derive(Debug, thiserror::Error)]
pub enum ImapError {
    /// The connection could not be made (directly or through the account's proxy), broke,
    /// or the server was too slow (a download past its deadline included); the session is
    /// given up.
    #[error(transparent)]
    Transport(#[from] TransportError),
    /// The message is larger than `max_message_size`: not downloaded (when RFC822.SIZE said
    /// so, not even asked for), nothing of it kept. The session is still usable.
    #[error("message UID {uid} is larger than max_message_size ({limit} bytes){}",
        announced.map(|n| format!("; the server says {n} bytes")).unwrap_or_default())]
    MessageTooLarge {
        /// The message's UID.
        uid: u32,
        /// `max_message_size`, in bytes.
        limit: u64,
        /// The size the server announced, if it did.
        announced: Option<u64>,
    },
    /// The message is no longer in the mailbox (another client expunged it).
    #[error("message UID {0} is no longer in the mailbox")]
    MessageGone(u32),
    /// The server closed the connection, possibly in the middle of a response.
    #[error("the server closed the connection")]
    ConnectionClosed,
    /// The server said BYE: it is closing the connection.
    #[error("the server closed the session: {0}")]
    Bye(String),
    /// TLS could not be set up.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// The server answered NO or BAD; the session is still usable.
    #[error("the server refused {command}: {text}")]
    Refused {
        /// The command refused (`SELECT`, `UID STORE 4 ...`); never a credential.
        command: String,
        /// The server's text, its response code included.
        text: String,
    },
    /// The server sent something that is not IMAP; the session is out of step.
    #[error("protocol error: {0}")]
    Protocol(String),
    /// A response longer than the limit; the session is out of step.
    #[error("the server sent a response with more than {limit} bytes of text")]
    ResponseTooLong {
        /// The limit, in bytes.
        limit: usize,
    },
    /// The server refused the credentials.
    #[error("authentication failed ({method}): {text}")]
    AuthFailed {
        /// The method tried (`AUTHENTICATE SCRAM-SHA-256`, `LOGIN`).
        method: String,
        /// The server's text, with the password blanked out if it was echoed.
        text: String,
        /// The server said to try again later (`[UNAVAILABLE]`, `[INUSE]`).
        temporary: bool,
    },
    /// The account requires STARTTLS (`tls: starttls`) and the server does not offer it.
    #[error("the server does not offer STARTTLS, and the account requires it (tls: starttls)")]
    StarttlsNotOffered,
    /// Authentication would have sent the password in the clear, and the account does not
    /// say `tls: none`.
    #[error(
        "refusing to send the password over an unencrypted connection \
         (the server offers no STARTTLS; set `tls: none` to allow plaintext login)"
    )]
    PlaintextRefused,
    /// No login method is both offered by the server (AUTH=..., LOGIN unless LOGINDISABLED)
    /// and allowed for the account: nothing was sent.
    #[error("{0}")]
    NoLoginMethod(crate::sasl::NoMethod),
    /// The SASL exchange failed on the client's side: a malformed challenge, or a server
    /// that could not prove it knows the password (SCRAM). The session is given up.
    // The message names the cause, so it is not also a `source()` (errors once).
    #[error("authentication failed: {0}")]
    Sasl(crate::sasl::SaslError),
    /// The user name or password cannot be sent (CR, LF or NUL).
    #[error("the {0} contains CR, LF or NUL and cannot be sent")]
    InvalidCredential(&'static str),
    /// The configured folder is not on the server.
    #[error(transparent)]
    Folder(#[from] folder::FolderError),
}

impl From<crate::sasl::SaslError> for ImapError {
    fn from(e: crate::sasl::SaslError) -> ImapError {
        ImapError::Sasl(e)
    }
}

impl ImapError {
    /// True when the session cannot be used any more (network failure, timeout, TLS failure,
    /// BYE, or a response that leaves client and server out of step): reconnect. False when
    /// only the command failed (NO, BAD, a message too large or gone) or when login or the
    /// folder was refused.
    pub fn connection_lost(&self) -> bool {
        match self {
            ImapError::Transport(_)
            | ImapError::ConnectionClosed
            | ImapError::Bye(_)
            | ImapError::Tls(_)
            | ImapError::Protocol(_)
            | ImapError::ResponseTooLong { .. } => true,
            ImapError::Refused { .. }
            | ImapError::MessageTooLarge { .. }
            | ImapError::MessageGone(_)
            | ImapError::AuthFailed { .. }
            | ImapError::StarttlsNotOffered
            | ImapError::PlaintextRefused
            | ImapError::NoLoginMethod(_)
            | ImapError::Sasl(_)
            | ImapError::InvalidCredential(_)
            | ImapError::Folder(_) => false,
        }
    }
}

impl From<std::io::Error> for ImapError {
    fn from(e: std::io::Error) -> ImapError {
        ImapError::Transport(TransportError::Io(e))
    }
}
