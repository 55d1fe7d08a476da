//! Collecting mail from the upstream mailboxes: the seam the pass drives ([`mailbox`]:
//! list, fetch, mark for deletion, commit), the POP3 client behind it ([`pop3`]) and the
//! client side of TLS ([`tls`]) that it (and later IMAP) connects through.

pub mod mailbox;
#[cfg(test)]
pub mod memory;
pub mod pop3;
pub mod tls;

pub use mailbox::{FetchError, Listed, Mailbox, Session, Source, Upstream};
pub use pop3::{Capabilities, Pop3Client, Pop3Error};
pub use tls::{TlsError, client_config, connect_tls};
