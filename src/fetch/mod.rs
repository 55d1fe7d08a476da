//! Collecting mail from the upstream mailboxes: the seam the pass drives ([`mailbox`]:
//! list, fetch, mark for deletion, commit) and the POP3 client behind it ([`pop3`]), which
//! connects through [`crate::tls`].

pub mod mailbox;
#[cfg(test)]
pub mod memory;
pub mod pop3;

pub use mailbox::{FetchError, Listed, Mailbox, Session, Source, Upstream};
pub use pop3::{Capabilities, Pop3Client, Pop3Error};
