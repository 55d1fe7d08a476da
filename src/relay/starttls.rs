//! STARTTLS with the relay on a socket mailferry owns, so that the upgrade uses the one TLS
//! setup of [`crate::tls`] (lettre's STARTTLS only takes its own TLS parameters): greeting,
//! EHLO, STARTTLS, handshake; the stream then goes to lettre, which reads a greeting first
//! and sends EHLO again ([`Handover`] replays the greeting for it).

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use lettre::transport::smtp::client::AsyncTokioStream;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;

use super::{RelayError, Reply};

/// Largest reply read before TLS (a greeting or EHLO reply is far smaller).
const REPLY_MAX: usize = 64 * 1024;

/// What the plain-text start of a session found.
pub(super) enum Start {
    /// STARTTLS was accepted: the handshake comes next, on this stream.
    Upgrade(TcpStream),
    /// The server offers no STARTTLS (or refused it), and the mode allows going on in
    /// plain text.
    Plain(TcpStream),
}

/// Greeting, EHLO and, when offered, STARTTLS; each reply within `limit`. With `required`,
/// a server without STARTTLS gets nothing but EHLO and the session fails.
pub(super) async fn start(
    mut tcp: TcpStream,
    host: &str,
    helo: &str,
    required: bool,
    limit: Duration,
) -> Result<Start, RelayError> {
    let mut buf = Vec::new();
    let greeting = read_reply(&mut tcp, &mut buf, host, "the greeting", limit).await?;
    if greeting.code != 220 {
        return Err(RelayError::Greeting {
            host: host.to_owned(),
            reply: greeting.reply(),
        });
    }
    send(&mut tcp, &format!("EHLO {helo}\r\n"), host, limit).await?;
    let ehlo = read_reply(&mut tcp, &mut buf, host, "EHLO", limit).await?;
    let offered = ehlo.code == 250
        && ehlo.lines.iter().skip(1).any(|line| {
            line.split_ascii_whitespace()
                .next()
                .is_some_and(|word| word.eq_ignore_ascii_case("STARTTLS"))
        });
    if !offered {
        return if required {
            // Dropped without a word: nothing but EHLO goes over an unprotected connection.
            Err(RelayError::StarttlsRequired {
                host: host.to_owned(),
            })
        } else {
            Ok(Start::Plain(tcp))
        };
    }
    send(&mut tcp, "STARTTLS\r\n", host, limit).await?;
    let reply = read_reply(&mut tcp, &mut buf, host, "STARTTLS", limit).await?;
    if reply.code != 220 {
        return if required {
            Err(RelayError::StarttlsRefused {
                host: host.to_owned(),
                reply: reply.reply(),
            })
        } else {
            Ok(Start::Plain(tcp))
        };
    }
    // Bytes sent before the handshake could come from a man in the middle and would be read
    // as if protected (CVE-2011-0411): refuse them.
    if !buf.is_empty() {
        return Err(RelayError::Garbled {
            host: host.to_owned(),
            during: "STARTTLS (data before the TLS handshake)",
        });
    }
    Ok(Start::Upgrade(tcp))
}

/// A reply: its code and its lines' texts (after the code and separator).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Lines {
    pub code: u16,
    pub lines: Vec<String>,
}

impl Lines {
    fn reply(&self) -> Reply {
        Reply {
            code: self.code,
            text: self.lines.join(" "),
        }
    }
}

async fn send(
    tcp: &mut TcpStream,
    line: &str,
    host: &str,
    limit: Duration,
) -> Result<(), RelayError> {
    tokio::time::timeout(limit, tcp.write_all(line.as_bytes()))
        .await
        .map_err(|_| super::session::timeout_error("a command before TLS", limit))?
        .map_err(|source| RelayError::Lost {
            host: host.to_owned(),
            source,
        })
}

/// Reads one whole reply; what came after it stays in `buf`.
async fn read_reply(
    tcp: &mut TcpStream,
    buf: &mut Vec<u8>,
    host: &str,
    during: &'static str,
    limit: Duration,
) -> Result<Lines, RelayError> {
    let garbled = || RelayError::Garbled {
        host: host.to_owned(),
        during,
    };
    loop {
        if let Some((lines, used)) = parse_reply(buf).map_err(|_| garbled())? {
            buf.drain(..used);
            return Ok(lines);
        }
        if buf.len() > REPLY_MAX {
            return Err(garbled());
        }
        let mut chunk = [0u8; 4096];
        let n = tokio::time::timeout(limit, tcp.read(&mut chunk))
            .await
            .map_err(|_| super::session::timeout_error(during, limit))?
            .map_err(|source| RelayError::Lost {
                host: host.to_owned(),
                source,
            })?;
        if n == 0 {
            return Err(RelayError::Lost {
                host: host.to_owned(),
                source: std::io::ErrorKind::UnexpectedEof.into(),
            });
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// One reply from the start of `buf` (RFC 5321 4.2: `NNN-text` lines, then `NNN text`),
/// with the number of bytes it took; `Ok(None)` when it is not complete yet, `Err` when it
/// is not SMTP.
pub(super) fn parse_reply(buf: &[u8]) -> Result<Option<(Lines, usize)>, ()> {
    let mut used = 0;
    let mut code = None;
    let mut lines = Vec::new();
    while let Some(end) = buf[used..].iter().position(|&b| b == b'\n') {
        let line = &buf[used..used + end];
        used += end + 1;
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.len() < 3 || !line[..3].iter().all(u8::is_ascii_digit) {
            return Err(());
        }
        let this: u16 = std::str::from_utf8(&line[..3])
            .ok()
            .and_then(|c| c.parse().ok())
            .ok_or(())?;
        if *code.get_or_insert(this) != this || this < 200 {
            return Err(());
        }
        let last = match line.get(3) {
            None | Some(b' ') => true,
            Some(b'-') => false,
            Some(_) => return Err(()),
        };
        lines.push(String::from_utf8_lossy(line.get(4..).unwrap_or_default()).into_owned());
        if last {
            return Ok(Some((Lines { code: this, lines }, used)));
        }
    }
    Ok(None)
}

/// A stream mailferry set up itself (TCP_NODELAY, its own TLS), handed to lettre. lettre
/// starts by reading a greeting, which the server sent before STARTTLS: `replay` holds a
/// copy for it to read first.
#[derive(Debug)]
pub(super) struct Handover<S> {
    replay: Vec<u8>,
    inner: S,
    peer: std::io::Result<std::net::SocketAddr>,
}

impl<S> Handover<S> {
    /// `inner` as it is.
    pub fn new(inner: S, peer: std::io::Result<std::net::SocketAddr>) -> Handover<S> {
        Handover {
            replay: Vec::new(),
            inner,
            peer,
        }
    }

    /// `inner`, read after a greeting made up for lettre.
    pub fn after_greeting(inner: S, peer: std::io::Result<std::net::SocketAddr>) -> Handover<S> {
        Handover {
            replay: b"220 mailferry: greeting read before STARTTLS\r\n".to_vec(),
            inner,
            peer,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Handover<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        if !self.replay.is_empty() {
            let n = self.replay.len().min(buf.remaining());
            buf.put_slice(&self.replay[..n]);
            self.replay.drain(..n);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Handover<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

impl<S> AsyncTokioStream for Handover<S>
where
    S: AsyncRead + AsyncWrite + Send + Sync + Unpin + std::fmt::Debug,
{
    fn peer_addr(&self) -> std::io::Result<std::net::SocketAddr> {
        match &self.peer {
            Ok(addr) => Ok(*addr),
            Err(e) => Err(std::io::Error::new(e.kind(), e.to_string())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_parse_whole_or_not_at_all() {
        let (r, used) = parse_reply(b"250-mx hello\r\n250-STARTTLS\r\n250 8BITMIME\r\nrest")
            .unwrap()
            .unwrap();
        assert_eq!(r.code, 250);
        assert_eq!(r.lines, ["mx hello", "STARTTLS", "8BITMIME"]);
        assert_eq!(used, 42);
        assert_eq!(parse_reply(b"250-mx hello\r\n250-STA").unwrap(), None);
        assert_eq!(parse_reply(b"220").unwrap(), None);
        let (bare, _) = parse_reply(b"220\n").unwrap().unwrap();
        assert_eq!((bare.code, bare.lines), (220, vec![String::new()]));
    }

    #[test]
    fn what_is_not_smtp_is_refused() {
        for bad in [
            &b"   \r\n"[..],
            b"250-a\r\n251 b\r\n",
            b"25x ok\r\n",
            b"250_ok\r\n",
            b"\r\n",
            b"150 early\r\n",
        ] {
            assert_eq!(
                parse_reply(bad),
                Err(()),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    /// A server that sends each of `replies` after reading one line (the first at once),
    /// and `start` run against it.
    async fn against(replies: &[&'static str], required: bool) -> Result<Start, RelayError> {
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
        let tcp = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        start(
            tcp,
            "relay.test",
            "gw.test",
            required,
            Duration::from_secs(5),
        )
        .await
    }

    const EHLO_TLS: &str = "250-relay.test\r\n250 STARTTLS\r\n";

    #[tokio::test]
    async fn data_after_the_starttls_reply_is_refused() {
        let err = against(
            &["220 hi\r\n", EHLO_TLS, "220 go\r\n250 injected\r\n"],
            true,
        )
        .await
        .err()
        .unwrap();
        assert!(matches!(err, RelayError::Garbled { .. }), "{err:?}");
    }

    #[tokio::test]
    async fn refusals_before_tls_name_the_reply() {
        let err = against(&["554 no service\r\n"], false).await.err().unwrap();
        assert!(
            matches!(&err, RelayError::Greeting { reply, .. } if reply.code == 554),
            "{err:?}"
        );
        let err = against(&["220 hi\r\n", EHLO_TLS, "454 not now\r\n"], true)
            .await
            .err()
            .unwrap();
        assert!(
            matches!(&err, RelayError::StarttlsRefused { reply, .. } if reply.code == 454),
            "{err:?}"
        );
        let err = against(&["220 hi\r\n", "250 relay.test\r\n"], true)
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
        let start = against(&["220 hi\r\n", "250 relay.test\r\n"], false).await;
        assert!(matches!(start, Ok(Start::Plain(_))));
        let start = against(&["220 hi\r\n", EHLO_TLS, "454 not now\r\n"], false).await;
        assert!(matches!(start, Ok(Start::Plain(_))));
        let start = against(&["220 hi\r\n", EHLO_TLS, "220 go\r\n"], false).await;
        assert!(matches!(start, Ok(Start::Upgrade(_))));
    }
}
