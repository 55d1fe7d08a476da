//! Collecting mail from the upstream mailboxes: the seam the pass drives ([`mailbox`]:
//! list, fetch, mark for deletion, commit), the kinds of mailbox behind it, each saying all
//! about itself in one [`kind::MailboxKind`] (POP3 in [`pop3`], IMAP in [`imap`]), which
//! connect through [`crate::tls`], and the TCP stream under them ([`quickack`]: no stall on
//! a server's last small segment).

pub mod idle;
pub mod imap;
pub mod kind;
pub mod mailbox;
#[cfg(test)]
pub mod memory;
pub mod pop3;
pub mod proxy;
pub mod quickack;
mod transport;

pub use imap::{ImapClient, ImapError};
pub use mailbox::{FetchError, Listed, Mailbox, Session, Source, Upstream};
pub use pop3::{Capabilities, Pop3Client, Pop3Error};
pub use transport::{Progress, TransportError};
