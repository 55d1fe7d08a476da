//! Collecting mail from the upstream mailboxes: the seam the pass drives ([`mailbox`]:
//! list, fetch, mark for deletion, commit), the POP3 and IMAP clients behind it ([`pop3`],
//! [`imap`]), which connect through [`crate::tls`], and the TCP stream under it
//! ([`quickack`]: no stall on a server's last small segment).

pub mod idle;
pub mod imap;
pub mod mailbox;
#[cfg(test)]
pub mod memory;
pub mod pop3;
pub mod proxy;
pub mod quickack;
mod transport;

pub use imap::{ImapClient, ImapError};
pub use mailbox::{FetchError, Link, Listed, Mailbox, Session, Source, Upstream};
pub use pop3::{Capabilities, Pop3Client, Pop3Error};
pub use transport::{Progress, TransportError};
