//! What the POP3 and IMAP clients share below their protocols: the TCP connect within the
//! account's timeout, and the overall deadline of one message download.

use std::time::Duration;

use tokio::net::TcpStream;

use super::pop3::fetch_deadline;
use super::quickack::QuickAck;
use crate::config::AccountConfig;

/// Why the TCP connection to an upstream server could not be made.
#[derive(Debug)]
pub(crate) enum DialError {
    /// Refused, unreachable, no such host.
    Connect {
        /// `host:port`.
        addr: String,
        /// What the operating system said.
        source: std::io::Error,
    },
    /// No connection within the account's timeout.
    Timeout(Duration),
    /// The socket could not be set up.
    Io(std::io::Error),
}

/// Connects to the account's server within its timeout. Nagle is off (commands are single
/// short lines: each goes at once) and TCP_QUICKACK is re-armed before every read.
pub(crate) async fn dial(account: &AccountConfig) -> Result<QuickAck, DialError> {
    let host = account.host.trim_start_matches('[').trim_end_matches(']');
    let addr = format!("{}:{}", account.host, account.port);
    let connect = TcpStream::connect((host, account.port));
    let tcp = match tokio::time::timeout(account.timeout, connect).await {
        Ok(Ok(tcp)) => tcp,
        Ok(Err(source)) => return Err(DialError::Connect { addr, source }),
        Err(_) => return Err(DialError::Timeout(account.timeout)),
    };
    tcp.set_nodelay(true).map_err(DialError::Io)?;
    tracing::debug!(account = %account.name, "connected to {addr}");
    Ok(QuickAck::new(tcp))
}

/// How long one download (POP3 RETR, an IMAP UID FETCH) may take in all: [`fetch_deadline`]
/// of the larger of the size announced and the bytes received, and never past `until`.
#[derive(Debug)]
pub(crate) struct Deadline {
    /// The command, for the error.
    pub(crate) command: String,
    started: tokio::time::Instant,
    timeout: Duration,
    /// The size the server announced (it may announce it again, larger).
    pub(crate) announced: u64,
    received: u64,
    /// A limit of the caller's, from the start.
    until: Option<Duration>,
}

impl Deadline {
    /// Starts now, for `command`, with the account's read `timeout`.
    pub(crate) fn new(
        command: String,
        timeout: Duration,
        announced: u64,
        until: Option<Duration>,
    ) -> Deadline {
        Deadline {
            command,
            started: tokio::time::Instant::now(),
            timeout,
            announced,
            received: 0,
            until,
        }
    }

    /// The time allowed from the start, as it stands now.
    pub(crate) fn limit(&self) -> Duration {
        let paced = fetch_deadline(self.timeout, self.announced.max(self.received));
        self.until.map_or(paced, |until| until.min(paced))
    }

    /// Counts `n` bytes received.
    pub(crate) fn received(&mut self, n: usize) {
        self.received = self.received.saturating_add(n as u64);
    }

    /// How long the next read may wait: `timeout`, cut short by what is left of the
    /// deadline, if any; true when the deadline is what limits it.
    pub(crate) fn next_wait(deadline: Option<&Deadline>, timeout: Duration) -> (Duration, bool) {
        let Some(d) = deadline else {
            return (timeout, false);
        };
        let left = (d.started + d.limit()).saturating_duration_since(tokio::time::Instant::now());
        if left <= timeout {
            (left, true)
        } else {
            (timeout, false)
        }
    }
}
