//! What the POP3 and IMAP clients share below their protocols: the errors of the transport
//! ([`TransportError`]), the TCP connect within the account's timeout (directly, or through
//! its `proxy:`) and the TLS handshake, reads and writes bounded by the timeout, what a
//! session learnt on its way to the login ([`Progress`], for `test-connection`), and the
//! overall deadline of one message download.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

use super::pop3::fetch_deadline;
use super::proxy::{ProxyError, tunnel};
use super::quickack::QuickAck;
use crate::config::{AccountConfig, Password, TlsMode};
use crate::tls::{PeerTls, TlsClient, TlsError};

/// What went wrong below the protocol, the same for POP3 and IMAP: the connection could not
/// be made, broke, or the server was too slow. The session cannot go on after any of them.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// The TCP connection could not be opened (refused, unreachable, no such host).
    // The message names the cause, so it is not also a `source()` (errors once).
    #[error("cannot connect to {addr}: {error}")]
    Connect {
        /// `host:port`, or `the proxy URL` (redacted).
        addr: String,
        /// What the operating system said.
        error: std::io::Error,
    },
    /// The account's proxy would not open the tunnel to the server.
    #[error(transparent)]
    Proxy(#[from] ProxyError),
    /// Reading or writing failed, or the socket could not be set up.
    #[error("I/O error: {0}")]
    Io(std::io::Error),
    /// The server did not answer (or accept data, or the connection) in time.
    #[error("no answer from the server within {0:?}")]
    Timeout(Duration),
    /// A download (POP3 RETR, an IMAP UID FETCH) did not finish by its overall deadline,
    /// however the bytes trickled in.
    #[error("{command} did not finish within its deadline of {limit:?}")]
    Deadline {
        /// The command (`RETR 3`, `UID FETCH 7 BODY.PEEK[]<0.4194304>`).
        command: String,
        /// The time it was given in all.
        limit: Duration,
    },
}

impl From<std::io::Error> for TransportError {
    fn from(e: std::io::Error) -> TransportError {
        TransportError::Io(e)
    }
}

impl TransportError {
    /// The deadline of the download under way ran out.
    fn deadline(deadline: Option<&Deadline>) -> TransportError {
        let (command, limit) = deadline
            .map(|d| (d.command.clone(), d.limit()))
            .unwrap_or_default();
        TransportError::Deadline { command, limit }
    }
}

/// The byte stream under a session: TCP, TLS over TCP, or (in tests) anything else.
pub(crate) trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

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
) -> Result<QuickAck, TransportError> {
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
        Ok(Err(error)) => return Err(TransportError::Connect { addr, error }),
        Err(_) => return Err(TransportError::Timeout(account.timeout)),
    };
    tcp.set_nodelay(true).map_err(TransportError::Io)?;
    progress.peer = tcp.peer_addr().ok();
    if let Some(proxy) = &account.proxy {
        let left = account.timeout.saturating_sub(started.elapsed());
        match tokio::time::timeout(left, tunnel(&mut tcp, proxy, host, account.port)).await {
            Ok(Ok(())) => progress.via_proxy = true,
            Ok(Err(e)) => return Err(e.into()),
            Err(_) => return Err(TransportError::Timeout(account.timeout)),
        }
        tracing::debug!(account = %account.name, "connected to {host}:{} through {addr}", account.port);
    } else {
        tracing::debug!(account = %account.name, "connected to {addr}");
    }
    Ok(QuickAck::new(tcp))
}

/// Opens the session's stream: the TCP connection ([`dial`]), then implicit TLS on it when
/// the account says `tls: tls` (with `tls`, or the account's TLS options when `None`).
/// Returns the stream and whether it is encrypted.
pub(crate) async fn open<E: From<TransportError> + From<TlsError>>(
    account: &AccountConfig,
    tls: Option<&TlsClient>,
    progress: &mut Progress,
) -> Result<(Box<dyn Stream>, bool), E> {
    let stream: Box<dyn Stream> = Box::new(dial(account, progress).await?);
    if account.tls != TlsMode::Tls {
        return Ok((stream, false));
    }
    let stream = handshake::<E>(stream, account, tls_client(account, tls)?).await?;
    progress.tls = Some(PeerTls::of(stream.get_ref().1));
    Ok((Box::new(stream), true))
}

/// `tls` when given, else the TLS client of the account's TLS options.
pub(crate) fn tls_client(
    account: &AccountConfig,
    tls: Option<&TlsClient>,
) -> Result<TlsClient, TlsError> {
    match tls {
        Some(tls) => Ok(tls.clone()),
        None => TlsClient::new(&account.tls_options, &account.host),
    }
}

/// The TLS handshake, bounded by the account's timeout.
pub(crate) async fn handshake<E: From<TransportError> + From<TlsError>>(
    stream: Box<dyn Stream>,
    account: &AccountConfig,
    tls: TlsClient,
) -> Result<TlsStream<Box<dyn Stream>>, E> {
    match tokio::time::timeout(account.timeout, tls.connect(stream)).await {
        Ok(Ok(stream)) => Ok(stream),
        Ok(Err(e)) => Err(e.into()),
        Err(_) => Err(TransportError::Timeout(account.timeout).into()),
    }
}

/// Which credential cannot be sent in a command line (CR, LF or NUL in it): the user name,
/// the password or the OAuth2 access token. Checked before anything goes on the wire.
pub(crate) fn check_credentials(
    account: &AccountConfig,
    token: Option<&Password>,
) -> Result<(), &'static str> {
    let unsendable = |value: &str| value.bytes().any(|b| matches!(b, b'\r' | b'\n' | 0));
    if unsendable(&account.username) {
        return Err("user name");
    }
    if unsendable(account.password.expose()) {
        return Err("password");
    }
    if token.is_some_and(|token| unsendable(token.expose())) {
        return Err("OAuth2 access token");
    }
    Ok(())
}

/// Writes `bytes` and flushes them, within `timeout`.
pub(crate) async fn write_within(
    stream: &mut dyn Stream,
    bytes: &[u8],
    timeout: Duration,
) -> Result<(), TransportError> {
    let write = async {
        stream.write_all(bytes).await?;
        stream.flush().await
    };
    match tokio::time::timeout(timeout, write).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(TransportError::Io(e)),
        Err(_) => Err(TransportError::Timeout(timeout)),
    }
}

/// Reads what has come into `buf` within `timeout`, cut short by what is left of
/// `deadline` (which counts the bytes); 0 when the server closed the connection.
pub(crate) async fn read_within(
    stream: &mut dyn Stream,
    buf: &mut [u8],
    mut deadline: Option<&mut Deadline>,
    timeout: Duration,
) -> Result<usize, TransportError> {
    let (wait, by_deadline) = Deadline::next_wait(deadline.as_deref(), timeout);
    match tokio::time::timeout(wait, stream.read(buf)).await {
        Ok(Ok(n)) => {
            if let Some(deadline) = deadline.as_deref_mut() {
                deadline.received(n);
            }
            Ok(n)
        }
        Ok(Err(e)) => Err(TransportError::Io(e)),
        Err(_) if by_deadline => Err(TransportError::deadline(deadline.as_deref())),
        Err(_) => Err(TransportError::Timeout(timeout)),
    }
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

#[cfg(test)]
mod tests {
    use crate::fetch::imap::ImapError;
    use crate::fetch::pop3::Pop3Error;
    use crate::fetch::transport::TransportError;
    use crate::sasl::{Mechanism, SaslError};
    use crate::testkit::error_chain;

    #[test]
    fn each_cause_is_said_once_in_the_chain() {
        let refused = || TransportError::Connect {
            addr: "pop.test:995".into(),
            error: std::io::Error::other("connection refused by the test"),
        };
        let scram = || SaslError::ServerNotVerified {
            mechanism: Mechanism::ScramSha256,
            what: "a wrong server signature",
        };
        let io = || TransportError::from(std::io::Error::other("reset by the test"));
        let chains = [
            error_chain(&Pop3Error::from(refused())),
            error_chain(&ImapError::from(refused())),
            error_chain(&Pop3Error::from(scram())),
            error_chain(&ImapError::from(scram())),
            error_chain(&Pop3Error::from(io())),
        ];
        for (text, cause) in chains.iter().zip([
            "connection refused by the test",
            "connection refused by the test",
            "a wrong server signature",
            "a wrong server signature",
            "reset by the test",
        ]) {
            assert_eq!(text.matches(cause).count(), 1, "{text}");
        }
    }
}
