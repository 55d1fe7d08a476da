//! Collecting mail from the upstream mailboxes: the POP3 client ([`pop3`]) and the client
//! side of TLS ([`tls`]) that it (and later IMAP) connects through.

pub mod pop3;
pub mod tls;

pub use pop3::{Capabilities, Pop3Client, Pop3Error};
pub use tls::{TlsError, client_config, connect_tls};
