//! The test kit: scripted protocol fakes and a throw-away TLS CA, shared by the unit tests
//! (`src/`, under `cfg(test)`) and the integration tests and examples (through the `testkit`
//! feature, which the crate's dev-dependency on itself turns on). Not part of a release build.
//!
//! - [`smtp::FakeSmtp`]: an ESMTP server scripted per command (reply per sender, per RCPT,
//!   to DATA, after the final dot per recipient set; drop after N DATA; STARTTLS or implicit
//!   TLS) that records every command and transaction. For what a real server (smtp-sink)
//!   will not do on demand: refuse one recipient among several, change its mind between passes.
//! - [`script::Scripted`]: a POP3 or IMAP server that follows a conversation step by step
//!   (expect this command, send these bytes, upgrade to TLS, hang, trickle), for the clients'
//!   wire tests.
//! - [`tls`]: a test CA and a server certificate it signed, or a self-signed server
//!   certificate (what administrators make), both with the openssl CLI.
//! - [`Split`]: how a fake cuts what it writes into reads, to prove a client reassembles.
//! - [`error_chain`]: an error and its causes as a chain printer shows them, to check that
//!   each cause is said once.
//!
//! The fakes bind 127.0.0.1 on a port the kernel picks, and panic on set-up failures: they
//! are test code.

pub mod script;
pub mod smtp;
pub mod tls;

#[cfg(test)]
mod tests;

use std::time::Duration;

use tokio::io::{AsyncWrite, AsyncWriteExt};

/// How a fake writes each reply: whole, or cut so that the client's reads see it in pieces.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Split {
    /// One write.
    #[default]
    Whole,
    /// One byte per write, a millisecond apart.
    ByteByByte,
    /// Two writes a millisecond apart, the first of this many bytes (whole if shorter).
    At(usize),
}

/// Writes `bytes` as `split` says and flushes (over TLS a write may otherwise stay buffered).
pub(crate) async fn write_split<W: AsyncWrite + Unpin + ?Sized>(
    io: &mut W,
    bytes: &[u8],
    split: Split,
) -> std::io::Result<()> {
    // The pause lets each piece leave as its own segment, so that the client's read ends there.
    let pause = || tokio::time::sleep(Duration::from_millis(1));
    match split {
        Split::Whole => io.write_all(bytes).await?,
        Split::ByteByByte => {
            for b in bytes {
                io.write_all(&[*b]).await?;
                io.flush().await?;
                pause().await;
            }
        }
        Split::At(k) if k < bytes.len() => {
            io.write_all(&bytes[..k]).await?;
            io.flush().await?;
            pause().await;
            io.write_all(&bytes[k..]).await?;
        }
        Split::At(_) => io.write_all(bytes).await?,
    }
    io.flush().await
}

/// The error and the causes under it, as a printer of the chain shows them (`{e:#}`).
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        text.push_str(&format!(": {c}"));
        cause = c.source();
    }
    text
}
