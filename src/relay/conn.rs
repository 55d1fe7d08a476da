//! One SMTP connection to the relay: the stream (TCP, or TLS from [`crate::tls`]), the bytes
//! read and not yet parsed, the commands queued for the next flight; and the start of a
//! session: greeting, EHLO (HELO fallback), STARTTLS as `relay.tls` says, each reply within
//! `relay.timeout`.

use std::pin::Pin;
use std::task::{Context, Waker};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;

use super::wire::{Capabilities, Parsed, parse_reply};
use super::{RelayError, timeout_error};
use crate::config::{RelayConfig, TlsMode};
use crate::tls::TlsClient;

/// Any stream a session runs over.
pub(super) trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

/// A connection: `S` is the plain TCP stream before STARTTLS, a boxed stream afterwards.
pub(super) struct Conn<S = Box<dyn Stream>> {
    stream: S,
    /// Read, not yet parsed.
    buf: Vec<u8>,
    /// Queued for the next [`Conn::flush`].
    out: Vec<u8>,
    /// What the last EHLO offered (nothing after HELO).
    pub caps: Capabilities,
    /// Whether the session runs over TLS.
    pub tls: bool,
    /// `relay.host`, for errors.
    pub host: String,
    /// The lines of the last EHLO reply (for `test-connection`).
    pub ehlo_lines: Vec<String>,
    /// The TLS session, once there is one (for `test-connection`).
    pub peer_tls: Option<crate::tls::PeerTls>,
    /// The address connected to.
    pub peer: Option<std::net::SocketAddr>,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Conn<S> {
    fn new(stream: S, host: &str, tls: bool) -> Conn<S> {
        Conn {
            stream,
            buf: Vec::with_capacity(4096),
            out: Vec::with_capacity(1024),
            caps: Capabilities::default(),
            tls,
            host: host.to_owned(),
            ehlo_lines: Vec::new(),
            peer_tls: None,
            peer: None,
        }
    }

    /// Queues one command line (CRLF added) for the next flight.
    pub fn queue(&mut self, line: &str) {
        self.out.extend_from_slice(line.as_bytes());
        self.out.extend_from_slice(b"\r\n");
    }

    /// Sends what is queued, within `limit`.
    pub async fn flush(&mut self, limit: Duration, during: &'static str) -> Result<(), RelayError> {
        let write = async {
            self.stream.write_all(&self.out).await?;
            self.stream.flush().await
        };
        let done = tokio::time::timeout(limit, write).await;
        self.out.clear();
        done.map_err(|_| timeout_error(during, limit))?
            .map_err(RelayError::Io)
    }

    /// Writes `bytes` as they are (message data), after whatever is queued; no time limit of
    /// its own (the caller's phase has one).
    pub async fn write_raw(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        if !self.out.is_empty() {
            self.stream.write_all(&self.out).await?;
            self.out.clear();
        }
        self.stream.write_all(bytes).await
    }

    /// Flushes the stream (TLS holds written records until then).
    pub async fn flush_stream(&mut self) -> std::io::Result<()> {
        self.stream.flush().await
    }

    /// The next reply, within `limit`.
    pub async fn read(
        &mut self,
        limit: Duration,
        during: &'static str,
    ) -> Result<Parsed, RelayError> {
        tokio::time::timeout(limit, self.read_reply(during))
            .await
            .map_err(|_| timeout_error(during, limit))?
    }

    /// The next reply, however long it takes (the caller bounds it).
    pub async fn read_reply(&mut self, during: &'static str) -> Result<Parsed, RelayError> {
        loop {
            match parse_reply(&self.buf) {
                Ok(Some(parsed)) => {
                    self.buf.drain(..parsed.used);
                    return Ok(parsed);
                }
                Ok(None) => {}
                Err(why) => {
                    return Err(RelayError::Garbled {
                        host: self.host.clone(),
                        during,
                        reason: why.to_string(),
                    });
                }
            }
            self.buf.reserve(4096);
            let n = self
                .stream
                .read_buf(&mut self.buf)
                .await
                .map_err(RelayError::Io)?;
            if n == 0 {
                return Err(RelayError::Io(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    format!("the relay closed the connection during {during}"),
                )));
            }
        }
    }

    /// Sends `line` and reads its reply, each within `limit`.
    pub async fn command(
        &mut self,
        line: &str,
        limit: Duration,
        during: &'static str,
    ) -> Result<Parsed, RelayError> {
        self.queue(line);
        self.flush(limit, during).await?;
        self.read(limit, during).await
    }

    /// Whether bytes that no command asked for have arrived (an extra reply: the server and
    /// mailferry are out of step).
    pub fn has_unread(&self) -> bool {
        !self.buf.is_empty()
    }

    /// Whether an idle session still looks usable: nothing arrived since its last reply (a
    /// 421 on an idle timeout, an extra reply) and the server has not closed it. Looked at
    /// without waiting.
    pub fn looks_alive(&mut self) -> bool {
        if self.has_unread() {
            return false;
        }
        let mut byte = [0u8; 1];
        let mut read = ReadBuf::new(&mut byte);
        let mut cx = Context::from_waker(Waker::noop());
        // Data, EOF or an error (ready at once): this session is over.
        Pin::new(&mut self.stream)
            .poll_read(&mut cx, &mut read)
            .is_pending()
    }

    /// QUIT, its reply awaited within `limit`; the connection ends either way.
    pub async fn quit(mut self, limit: Duration) {
        if self.command("QUIT", limit, "QUIT").await.is_ok() {
            let _ = tokio::time::timeout(limit, self.stream.shutdown()).await;
        }
    }

    /// Reads the greeting: 220, or the session is refused.
    async fn greeting(&mut self, limit: Duration) -> Result<(), RelayError> {
        let greeting = self.read(limit, "the greeting").await?;
        if greeting.code != 220 {
            return Err(RelayError::Greeting {
                host: self.host.clone(),
                reply: greeting.reply(),
            });
        }
        Ok(())
    }

    /// EHLO, and HELO when EHLO is refused as unknown (5xx); the capabilities kept.
    async fn ehlo(&mut self, helo: &str, limit: Duration) -> Result<(), RelayError> {
        let ehlo = self.command(&format!("EHLO {helo}"), limit, "EHLO").await?;
        if ehlo.code == 250 {
            self.caps = Capabilities::from_ehlo(&ehlo.lines);
            self.ehlo_lines = ehlo.lines;
            return Ok(());
        }
        if (500..600).contains(&ehlo.code) {
            let reply = self.command(&format!("HELO {helo}"), limit, "HELO").await?;
            if reply.code == 250 {
                self.caps = Capabilities::default();
                self.ehlo_lines = reply.lines;
                return Ok(());
            }
            return Err(RelayError::Ehlo {
                host: self.host.clone(),
                reply: reply.reply(),
            });
        }
        Err(RelayError::Ehlo {
            host: self.host.clone(),
            reply: ehlo.reply(),
        })
    }
}

impl<S: Stream + 'static> Conn<S> {
    fn boxed(self) -> Conn {
        Conn {
            stream: Box::new(self.stream),
            buf: self.buf,
            out: self.out,
            caps: self.caps,
            tls: self.tls,
            host: self.host,
            ehlo_lines: self.ehlo_lines,
            peer_tls: self.peer_tls,
            peer: self.peer,
        }
    }
}

/// A new session with the relay, up to and including the last EHLO: TCP, TLS as
/// `relay.tls` says (`tls` is built for every mode but `none`), greeting, EHLO. With
/// `tls: starttls`, a server without STARTTLS gets nothing but EHLO.
pub(super) async fn open(
    config: &RelayConfig,
    tls: Option<&TlsClient>,
    helo: &str,
) -> Result<Conn, RelayError> {
    let limit = config.timeout;
    let host = config.host.as_str();
    let port = config.port;
    let dial_host = host.trim_start_matches('[').trim_end_matches(']');
    let tcp = tokio::time::timeout(limit, TcpStream::connect((dial_host, port)))
        .await
        .map_err(|_| timeout_error("the TCP connection", limit))?
        .map_err(|source| RelayError::Tcp {
            host: host.to_owned(),
            port,
            source,
        })?;
    // Commands and the final dot are short writes: each must go at once, not wait for the
    // receiver's delayed ACK (40 ms per message).
    let _ = tcp.set_nodelay(true);
    let peer = tcp.peer_addr().ok();
    let lost = |e: RelayError| match e {
        RelayError::Io(source) => RelayError::Lost {
            host: host.to_owned(),
            source,
        },
        e => e,
    };
    let mut conn = match (config.tls, tls) {
        (TlsMode::Tls, Some(tls)) => {
            let stream = handshake(tls, tcp, limit).await?;
            let peer = crate::tls::PeerTls::of(stream.get_ref().1);
            let mut conn = Conn::new(stream, host, true);
            conn.peer_tls = Some(peer);
            conn.greeting(limit).await.map_err(lost)?;
            conn.ehlo(helo, limit).await.map_err(lost)?;
            conn.boxed()
        }
        (TlsMode::Starttls | TlsMode::StarttlsIfAvailable, Some(tls)) => {
            let required = config.tls == TlsMode::Starttls;
            let mut plain = Conn::new(tcp, host, false);
            plain.greeting(limit).await.map_err(lost)?;
            plain.ehlo(helo, limit).await.map_err(lost)?;
            if !plain.caps.starttls {
                if required {
                    // Dropped without a word: nothing but EHLO goes over an unprotected
                    // connection.
                    return Err(RelayError::StarttlsRequired {
                        host: host.to_owned(),
                    });
                }
                return Ok(plain.boxed());
            }
            let reply = plain
                .command("STARTTLS", limit, "STARTTLS")
                .await
                .map_err(lost)?;
            if reply.code != 220 {
                if required {
                    return Err(RelayError::StarttlsRefused {
                        host: host.to_owned(),
                        reply: reply.reply(),
                    });
                }
                return Ok(plain.boxed());
            }
            // Bytes sent before the handshake could come from a man in the middle and would
            // be read as if protected (CVE-2011-0411): refuse them.
            if plain.has_unread() {
                return Err(RelayError::Garbled {
                    host: host.to_owned(),
                    during: "STARTTLS",
                    reason: "data before the TLS handshake".to_owned(),
                });
            }
            let stream = handshake(tls, plain.stream, limit).await?;
            let peer = crate::tls::PeerTls::of(stream.get_ref().1);
            let mut conn = Conn::new(stream, host, true);
            conn.peer_tls = Some(peer);
            conn.ehlo(helo, limit).await.map_err(lost)?;
            conn.boxed()
        }
        _ => {
            let mut conn = Conn::new(tcp, host, false);
            conn.greeting(limit).await.map_err(lost)?;
            conn.ehlo(helo, limit).await.map_err(lost)?;
            conn.boxed()
        }
    };
    // More than the EHLO reply: the server is out of step before the first command.
    if conn.has_unread() {
        return Err(RelayError::Garbled {
            host: host.to_owned(),
            during: "EHLO",
            reason: "more than one reply to EHLO".to_owned(),
        });
    }
    conn.peer = peer;
    Ok(conn)
}

/// The TLS handshake on `tcp`, within `limit`.
async fn handshake(
    tls: &TlsClient,
    tcp: TcpStream,
    limit: Duration,
) -> Result<tokio_rustls::client::TlsStream<TcpStream>, RelayError> {
    tokio::time::timeout(limit, tls.connect(tcp))
        .await
        .map_err(|_| timeout_error("the TLS handshake", limit))?
        .map_err(RelayError::Tls)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A server that sends each of `replies` after reading one line (the first at once);
    /// `open` run against it with `tls` (a TLS client that is never used: no handshake is
    /// reached in these tests).
    async fn against(replies: &[&'static str], tls: TlsMode) -> Result<Conn, RelayError> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let replies: Vec<&'static str> = replies.to_vec();
        tokio::spawn(async move {
            let (mut tcp, _) = listener.accept().await.unwrap();
            let mut buf = [0u8; 512];
            for (i, reply) in replies.iter().enumerate() {
                if i > 0 && tcp.read(&mut buf).await.unwrap_or(0) == 0 {
                    return;
                }
                tcp.write_all(reply.as_bytes()).await.unwrap();
            }
            let _ = tcp.read(&mut buf).await;
        });
        let mut config = crate::relay::tests::config(port, tls);
        config.host = "127.0.0.1".to_owned();
        let client = TlsClient::new(&config.tls_options, "relay.test").unwrap();
        open(&config, Some(&client), "gw.test").await
    }

    const EHLO_TLS: &str = "250-relay.test\r\n250 STARTTLS\r\n";

    #[tokio::test]
    async fn data_after_the_starttls_reply_is_refused() {
        let err = against(
            &["220 hi\r\n", EHLO_TLS, "220 go\r\n250 injected\r\n"],
            TlsMode::Starttls,
        )
        .await
        .err()
        .unwrap();
        assert!(matches!(err, RelayError::Garbled { .. }), "{err:?}");
    }

    #[tokio::test]
    async fn refusals_before_tls_name_the_reply() {
        let err = against(&["554 no service\r\n"], TlsMode::StarttlsIfAvailable)
            .await
            .err()
            .unwrap();
        assert!(
            matches!(&err, RelayError::Greeting { reply, .. } if reply.code == 554),
            "{err:?}"
        );
        let err = against(
            &["220 hi\r\n", EHLO_TLS, "454 not now\r\n"],
            TlsMode::Starttls,
        )
        .await
        .err()
        .unwrap();
        assert!(
            matches!(&err, RelayError::StarttlsRefused { reply, .. } if reply.code == 454),
            "{err:?}"
        );
        let err = against(&["220 hi\r\n", "250 relay.test\r\n"], TlsMode::Starttls)
            .await
            .err()
            .unwrap();
        assert!(
            matches!(err, RelayError::StarttlsRequired { .. }),
            "{err:?}"
        );
    }

    #[tokio::test]
    async fn without_starttls_the_optional_mode_goes_on_in_plain_text() {
        let mode = TlsMode::StarttlsIfAvailable;
        let conn = against(&["220 hi\r\n", "250 relay.test\r\n"], mode)
            .await
            .unwrap();
        assert!(!conn.tls);
        let conn = against(&["220 hi\r\n", EHLO_TLS, "454 not now\r\n"], mode)
            .await
            .unwrap();
        assert!(!conn.tls);
    }

    #[tokio::test]
    async fn ehlo_refused_falls_back_to_helo_without_extensions() {
        let conn = against(
            &[
                "220 hi\r\n",
                "502 5.5.1 no EHLO here\r\n",
                "250 relay.test\r\n",
            ],
            TlsMode::None,
        )
        .await
        .unwrap();
        assert_eq!(conn.caps, Capabilities::default());
        let err = against(&["220 hi\r\n", "421 4.3.2 bye\r\n"], TlsMode::None)
            .await
            .err()
            .unwrap();
        assert!(
            matches!(&err, RelayError::Ehlo { reply, .. } if reply.code == 421),
            "{err:?}"
        );
        assert!(err.is_unavailable());
    }

    #[tokio::test]
    async fn a_reply_that_is_not_smtp_is_garbled() {
        let err = against(&["HTTP/1.1 400 Bad Request\r\n"], TlsMode::None)
            .await
            .err()
            .unwrap();
        assert!(matches!(err, RelayError::Garbled { .. }), "{err:?}");
        assert!(err.is_unavailable());
    }
}
