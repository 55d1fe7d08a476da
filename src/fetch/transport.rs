//! What the POP3 and IMAP clients share below their protocols: the TCP connect within the
//! account's timeout (directly, or through its `proxy:`), what a session learnt on its way
//! to the login ([`Progress`], for `test-connection`), and the overall deadline of one
//! message download.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::TcpStream;

use super::pop3::fetch_deadline;
use super::proxy::{ProxyError, tunnel};
use super::quickack::QuickAck;
use crate::config::AccountConfig;

/// Why the TCP connection to an upstream server could not be made.
#[derive(Debug)]
pub(crate) enum DialError {
    /// Refused, unreachable, no such host.
    Connect {
        /// `host:port`, or `the proxy URL` (redacted).
        addr: String,
        /// What the operating system said.
        source: std::io::Error,
    },
    /// No connection within the account's timeout.
    Timeout(Duration),
    /// The socket could not be set up.
    Io(std::io::Error),
    /// The proxy would not open the tunnel.
    Proxy(ProxyError),
}

/// How far a session got before it was authenticated, and what it learnt on the way: what
/// `mailferry test-connection` reports step by step, also when a later step fails.
#[derive(Debug, Default, Clone)]
pub struct Progress {
    /// The address the TCP connection went to: the server's, or the proxy's.
    pub peer: Option<SocketAddr>,
    /// The connection is a tunnel through the account's proxy.
    pub via_proxy: bool,
    /// The TLS session, once the handshake succeeded.
    pub tls: Option<crate::tls::PeerTls>,
    /// The capabilities as last announced (after TLS, the ones sent under it), one per line
    /// (POP3 CAPA) or word (IMAP).
    pub capabilities: Option<Vec<String>>,
    /// The login's method as the client words it (`USER/PASS`, `AUTH SCRAM-SHA-256`,
    /// `AUTHENTICATE PLAIN`, `LOGIN`), once known: from the refusal, or from the session.
    pub mechanism: Option<String>,
}

/// Connects to the account's server within its timeout, through its proxy if it has one
/// (the tunnel set up within the same timeout). Nagle is off (commands are single short
/// lines: each goes at once) and TCP_QUICKACK is re-armed before every read.
pub(crate) async fn dial(
    account: &AccountConfig,
    progress: &mut Progress,
) -> Result<QuickAck, DialError> {
    let host = account.host.trim_start_matches('[').trim_end_matches(']');
    let started = tokio::time::Instant::now();
    let (connect_host, connect_port, addr) = match &account.proxy {
        Some(proxy) => (
            proxy.host.as_str(),
            proxy.port,
            format!("the proxy {proxy}"),
        ),
        None => (
            host,
            account.port,
            format!("{}:{}", account.host, account.port),
        ),
    };
    let connect = TcpStream::connect((connect_host, connect_port));
    let mut tcp = match tokio::time::timeout(account.timeout, connect).await {
        Ok(Ok(tcp)) => tcp,
        Ok(Err(source)) => return Err(DialError::Connect { addr, source }),
        Err(_) => return Err(DialError::Timeout(account.timeout)),
    };
    tcp.set_nodelay(true).map_err(DialError::Io)?;
    progress.peer = tcp.peer_addr().ok();
    if let Some(proxy) = &account.proxy {
        let left = account.timeout.saturating_sub(started.elapsed());
        match tokio::time::timeout(left, tunnel(&mut tcp, proxy, host, account.port)).await {
            Ok(Ok(())) => progress.via_proxy = true,
            Ok(Err(e)) => return Err(DialError::Proxy(e)),
            Err(_) => return Err(DialError::Timeout(account.timeout)),
        }
        tracing::debug!(account = %account.name, "connected to {host}:{} through {addr}", account.port);
    } else {
        tracing::debug!(account = %account.name, "connected to {addr}");
    }
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
