//! One SMTP session to the internal server, opened lazily and reused across messages.

use std::borrow::Cow;
use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use lettre::transport::smtp::client::{
    AsyncSmtpConnection, AsyncTokioStream, Certificate, TlsParameters,
};
use lettre::transport::smtp::commands::{Data, Mail, Rcpt, Rset};
use lettre::transport::smtp::extension::{ClientId, Extension, MailBodyParameter, MailParameter};
use lettre::transport::smtp::response::Response;
use tokio::net::TcpStream;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::{Outcome, RcptResult, RelayError, Reply, SmtpError};
use crate::address::Address;
use crate::config::{RelayConfig, TlsMode};

/// RFC 5321's limit on a local part, in octets.
const MAX_LOCAL_PART: usize = 64;

/// Extra time allowed for the end of DATA per this many bytes of message (a slow link).
const BYTES_PER_EXTRA_SECOND: usize = 64 * 1024;

/// One SMTP session to the internal server: opened on the first [`Relay::send`], reused by
/// the next ones (after an RSET that also proves it is still alive), dropped after any
/// failure and opened again on the next call.
pub struct Relay {
    config: RelayConfig,
    helo: ClientId,
    tls: Option<TlsParameters>,
    conn: Option<AsyncSmtpConnection>,
    /// `relay.connections` caps the SMTP sessions open at once across every `Relay` sharing
    /// these slots; a `Relay` holds one from its first connection until `close`.
    slots: Arc<Semaphore>,
    slot: Option<OwnedSemaphorePermit>,
}

impl fmt::Debug for Relay {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Relay")
            .field("host", &self.config.host)
            .field("port", &self.config.port)
            .field("tls", &self.config.tls)
            .field("helo", &self.helo)
            .field("connected", &self.conn.is_some())
            .finish()
    }
}

impl Relay {
    /// A relay to `config.host`; nothing is opened until the first [`Relay::send`].
    pub fn new(config: RelayConfig) -> Relay {
        let slots = Arc::new(Semaphore::new(config.connections as usize));
        Relay::sharing(config, slots)
    }

    /// A relay that takes one of `slots` while its session is open, so that all the relays
    /// sharing them keep to `relay.connections` sessions at once.
    pub fn sharing(config: RelayConfig, slots: Arc<Semaphore>) -> Relay {
        let helo = ClientId::Domain(config.helo.clone().unwrap_or_else(local_host_name));
        Relay {
            config,
            helo,
            tls: None,
            conn: None,
            slots,
            slot: None,
        }
    }

    /// The name this relay gives in EHLO (`relay.helo`, else this machine's host name, else
    /// `localhost`): the right `by` for [`super::received_header`].
    pub fn helo_name(&self) -> String {
        self.helo.to_string()
    }

    /// One transaction: `MAIL FROM:<reverse_path>` (`<>` for `None`), one RCPT per recipient
    /// (each reply kept), DATA with `message`.
    ///
    /// The message goes out as given, except that dots are stuffed and a bare CR or LF becomes
    /// CRLF (so that no line of it can end the data early on any server); a message not
    /// ending in CRLF gets one before the final dot. If no RCPT was accepted, no DATA is sent
    /// (RSET) and every result is `Temporary` or `Permanent` from its RCPT reply. If the
    /// message is accepted, the recipients whose RCPT was accepted are `Delivered` with the
    /// reply to the data. A recipient that cannot go on the wire is `Permanent` with a
    /// synthetic 553 reply saying so, and is not sent (see `to_lettre`).
    ///
    /// MAIL FROM or DATA refused, a timeout, or the connection failing is an `Err`: the
    /// session is dropped and opened again on the next call.
    pub async fn send(
        &mut self,
        reverse_path: Option<&Address>,
        recipients: &[Address],
        message: &[u8],
    ) -> Result<Vec<RcptResult>, RelayError> {
        if recipients.is_empty() {
            return Ok(Vec::new());
        }
        let result = self.transaction(reverse_path, recipients, message).await;
        if let Err(e) = &result {
            let polite = matches!(e, RelayError::MailFrom { .. } | RelayError::Data { .. });
            self.discard(polite).await;
        }
        result
    }

    /// Ends the session with QUIT, if one is open.
    pub async fn close(&mut self) {
        self.discard(true).await;
        self.slot = None;
    }

    async fn transaction(
        &mut self,
        reverse_path: Option<&Address>,
        recipients: &[Address],
        message: &[u8],
    ) -> Result<Vec<RcptResult>, RelayError> {
        let limit = self.config.timeout;
        let conn = self.session().await?;

        let info = conn.server_info();
        let smtputf8 = info.supports_feature(Extension::SmtpUtfEight);
        let mut parameters = Vec::new();
        // Without 8BITMIME the message still goes as it is: rewriting it (or refusing it)
        // would be worse than an internal server that copes, as practically all do.
        if !message.is_ascii() && info.supports_feature(Extension::EightBitMime) {
            parameters.push(MailParameter::Body(MailBodyParameter::EightBitMime));
        }
        let non_ascii = reverse_path.is_some_and(|a| !a.as_str().is_ascii())
            || recipients.iter().any(|a| !a.as_str().is_ascii());
        if non_ascii && smtputf8 {
            parameters.push(MailParameter::SmtpUtfEight);
        }
        let sender =
            match reverse_path {
                None => None,
                Some(address) => Some(to_lettre(address, smtputf8).map_err(|reason| {
                    RelayError::ReversePath {
                        address: address.clone(),
                        reason,
                    }
                })?),
            };

        let reply = step(
            limit,
            "MAIL FROM",
            conn.command(Mail::new(sender, parameters)),
        )
        .await?;
        match reply {
            Ok(reply) if reply.is_success() => {}
            Ok(reply) | Err(reply) => return Err(RelayError::MailFrom { reply }),
        }

        // None: accepted, waiting for the reply to the data.
        let mut outcomes: Vec<Option<Outcome>> = Vec::with_capacity(recipients.len());
        for recipient in recipients {
            let address = match to_lettre(recipient, smtputf8) {
                Ok(address) => address,
                Err(reason) => {
                    outcomes.push(Some(Outcome::Permanent(Reply {
                        code: 553,
                        text: format!("5.1.3 not sent by mailferry: {reason}"),
                    })));
                    continue;
                }
            };
            let reply = step(limit, "RCPT TO", conn.command(Rcpt::new(address, vec![]))).await?;
            outcomes.push(match reply {
                Ok(reply) if reply.is_success() => None,
                Ok(reply) | Err(reply) if reply.is_permanent() => Some(Outcome::Permanent(reply)),
                Ok(reply) | Err(reply) => Some(Outcome::Temporary(reply)),
            });
        }

        if outcomes.iter().all(Option::is_some) {
            // Nobody to send to: end the transaction. A failing RSET only costs the session.
            if !matches!(step(limit, "RSET", conn.command(Rset)).await, Ok(Ok(_))) {
                self.conn = None;
            }
            return Ok(results(recipients, outcomes, None));
        }

        let reply = step(limit, "DATA", conn.command(Data)).await?;
        match reply {
            Ok(reply) if reply.code == 354 => {}
            Ok(reply) | Err(reply) => return Err(RelayError::Data { reply }),
        }
        let body = data_body(message);
        let extra = Duration::from_secs((body.len() / BYTES_PER_EXTRA_SECOND) as u64);
        let reply = step(limit + extra, "the end of DATA", conn.message(&body)).await?;
        match reply {
            Ok(reply) if reply.is_success() => Ok(results(recipients, outcomes, Some(reply))),
            Ok(reply) | Err(reply) => Err(RelayError::Data { reply }),
        }
    }

    /// The open session, proved alive by RSET, or a new one.
    async fn session(&mut self) -> Result<&mut AsyncSmtpConnection, RelayError> {
        let limit = self.config.timeout;
        if let Some(conn) = self.conn.as_mut()
            && !matches!(step(limit, "RSET", conn.command(Rset)).await, Ok(Ok(_)))
        {
            // A dead or confused session: drop it and open a new one.
            self.conn = None;
        }
        let conn = match self.conn.take() {
            Some(conn) => conn,
            None => {
                if self.slot.is_none() {
                    // Closed only if the semaphore is closed, which nothing does.
                    self.slot = self.slots.clone().acquire_owned().await.ok();
                }
                self.connect().await?
            }
        };
        Ok(self.conn.insert(conn))
    }

    async fn connect(&mut self) -> Result<AsyncSmtpConnection, RelayError> {
        let limit = self.config.timeout;
        let implicit = match self.config.tls {
            TlsMode::Tls => Some(
                crate::fetch::tls::client_config(self.config.ca_file.as_deref())
                    .map_err(RelayError::TlsSetup)?,
            ),
            _ => None,
        };
        let host = self.config.host.clone();
        let port = self.config.port;
        let tcp = tokio::time::timeout(limit, TcpStream::connect((host.as_str(), port)))
            .await
            .map_err(|_| timeout_error("the TCP connection", limit))?
            .map_err(|source| RelayError::Tcp {
                host: host.clone(),
                port,
                source,
            })?;
        // lettre writes the message and the final dot in two writes: with Nagle's algorithm
        // the dot waits for the receiver's delayed ACK, 40 ms per message.
        let _ = tcp.set_nodelay(true);
        let stream: Box<dyn AsyncTokioStream> = match implicit {
            Some(config) => {
                let tls =
                    tokio::time::timeout(limit, crate::fetch::tls::connect_tls(tcp, &host, config))
                        .await
                        .map_err(|_| timeout_error("the TLS handshake", limit))?
                        .map_err(RelayError::TlsSetup)?;
                Box::new(ImplicitTls(tls))
            }
            None => Box::new(tcp),
        };
        let mut conn = tokio::time::timeout(
            limit,
            AsyncSmtpConnection::connect_with_transport(stream, &self.helo),
        )
        .await
        .map_err(|_| timeout_error("the greeting and EHLO", limit))?
        .map_err(|source| RelayError::Connect {
            host: host.clone(),
            port,
            source,
        })?;

        let upgrade = match self.config.tls {
            TlsMode::None | TlsMode::Tls => false,
            TlsMode::StarttlsIfAvailable => conn.can_starttls(),
            TlsMode::Starttls if conn.can_starttls() => true,
            // Dropped without a word: nothing but EHLO goes over an unprotected connection.
            TlsMode::Starttls => return Err(RelayError::StarttlsRequired { host }),
        };
        if upgrade {
            let parameters = self.tls_parameters()?;
            tokio::time::timeout(limit, conn.starttls(parameters, &self.helo))
                .await
                .map_err(|_| timeout_error("STARTTLS", limit))?
                .map_err(|source| RelayError::Tls { host, source })?;
        }
        Ok(conn)
    }

    /// TLS parameters for the relay host: the system trust store, plus `ca_file` if set.
    fn tls_parameters(&mut self) -> Result<TlsParameters, RelayError> {
        if let Some(parameters) = &self.tls {
            return Ok(parameters.clone());
        }
        let host = &self.config.host;
        let mut builder = TlsParameters::builder(host.clone());
        if let Some(path) = &self.config.ca_file {
            let ca_error = |reason: String| RelayError::CaFile {
                path: path.display().to_string(),
                reason,
            };
            let pem = std::fs::read(path).map_err(|e| ca_error(e.to_string()))?;
            let cert = Certificate::from_pem(&pem).map_err(|e| ca_error(e.to_string()))?;
            builder = builder.add_root_certificate(cert);
        }
        let parameters = builder.build().map_err(|source| RelayError::Tls {
            host: host.clone(),
            source,
        })?;
        Ok(self.tls.insert(parameters).clone())
    }

    /// Drops the session; with `polite`, says QUIT first (bounded by the timeout).
    async fn discard(&mut self, polite: bool) {
        if let Some(mut conn) = self.conn.take()
            && polite
        {
            let _ = tokio::time::timeout(self.config.timeout, conn.quit()).await;
        }
    }
}

/// Runs one command with a time limit; `Ok(Err(reply))` is a negative reply, a broken
/// connection or a non-SMTP answer is `Err`.
async fn step(
    limit: Duration,
    during: &'static str,
    command: impl Future<Output = Result<Response, SmtpError>>,
) -> Result<Result<Reply, Reply>, RelayError> {
    match tokio::time::timeout(limit, command).await {
        Err(_) => Err(timeout_error(during, limit)),
        Ok(Ok(response)) => Ok(Ok(Reply::from_response(&response))),
        Ok(Err(e)) => match Reply::from_error(&e) {
            Some(reply) => Ok(Err(reply)),
            None => Err(RelayError::Io(e)),
        },
    }
}

fn timeout_error(during: &'static str, limit: Duration) -> RelayError {
    RelayError::Timeout {
        during,
        secs: limit.as_secs(),
    }
}

/// One result per recipient, in order, by position in `outcomes` (`None`: RCPT accepted).
/// A recipient without an outcome (never the case) is `Temporary`, never `Delivered`: no
/// recipient may be settled without a reply that says so.
fn results(
    recipients: &[Address],
    outcomes: Vec<Option<Outcome>>,
    data_reply: Option<Reply>,
) -> Vec<RcptResult> {
    let temporary = |text: &str| {
        Outcome::Temporary(Reply {
            code: 451,
            text: text.to_owned(),
        })
    };
    recipients
        .iter()
        .enumerate()
        .map(|(i, recipient)| RcptResult {
            recipient: recipient.clone(),
            outcome: match (outcomes.get(i), &data_reply) {
                (Some(Some(outcome)), _) => outcome.clone(),
                (Some(None), Some(reply)) => Outcome::Delivered(reply.clone()),
                // Accepted but no data sent: not reached (DATA follows any accepted RCPT).
                (Some(None), None) => temporary("4.3.0 mailferry sent no data"),
                (None, _) => temporary("4.3.0 mailferry has no reply for this recipient"),
            },
        })
        .collect()
}

/// Our validated address as lettre's; `Err` says why it cannot be sent.
///
/// [`Address`] already guarantees what makes an address safe on a command line (no CR, LF,
/// NUL, `<`, `>`, controls, and no source route) and quotes a local part that is not a
/// Dot-string, so it goes to lettre as it is: lettre's own parser refuses valid forms
/// (a non-ASCII quoted local part), and an address that cannot be put on the wire must be
/// refused here, for that recipient alone, never rewritten.
fn to_lettre(address: &Address, smtputf8: bool) -> Result<lettre::Address, String> {
    if !smtputf8 && !address.as_str().is_ascii() {
        return Err("the address is not ASCII and the server does not offer SMTPUTF8".to_owned());
    }
    let local = address.smtp_local_part();
    if local.len() > MAX_LOCAL_PART {
        return Err(format!(
            "the local part is longer than {MAX_LOCAL_PART} octets (RFC 5321 4.5.3.1.1)"
        ));
    }
    Ok(lettre::Address::new_dangerous(local, address.domain()))
}

/// The message as lettre's `message()` must get it: lettre stuffs dots after CRLF and
/// appends CRLF "." CRLF, so the message's own final CRLF is removed (it becomes that CRLF),
/// and a bare CR or LF becomes CRLF (a "." after a bare LF would not be stuffed, and some
/// servers end the data there).
fn data_body(message: &[u8]) -> Cow<'_, [u8]> {
    let bare = message.iter().enumerate().any(|(i, &b)| match b {
        b'\r' => message.get(i + 1) != Some(&b'\n'),
        b'\n' => i == 0 || message[i - 1] != b'\r',
        _ => false,
    });
    let mut body = if bare {
        let mut out = Vec::with_capacity(message.len() + 64);
        let mut i = 0;
        while i < message.len() {
            match message[i] {
                b'\r' if message.get(i + 1) == Some(&b'\n') => {
                    out.extend_from_slice(b"\r\n");
                    i += 1;
                }
                b'\r' | b'\n' => out.extend_from_slice(b"\r\n"),
                b => out.push(b),
            }
            i += 1;
        }
        Cow::Owned(out)
    } else {
        Cow::Borrowed(message)
    };
    if body.ends_with(b"\r\n") {
        match &mut body {
            Cow::Borrowed(b) => *b = &b[..b.len() - 2],
            Cow::Owned(v) => v.truncate(v.len() - 2),
        }
    }
    body
}

/// This machine's host name for EHLO, or `localhost` when it is unknown or unusable.
fn local_host_name() -> String {
    ["/proc/sys/kernel/hostname", "/etc/hostname"]
        .iter()
        .filter_map(|path| std::fs::read_to_string(path).ok())
        .map(|name| name.trim().to_owned())
        .find(|name| {
            !name.is_empty()
                && name.len() <= 253
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
        })
        .unwrap_or_else(|| "localhost".to_owned())
}

#[cfg(test)]
mod unit {
    use super::*;

    #[test]
    fn data_body_keeps_crlf_text_and_drops_only_the_final_crlf() {
        assert_eq!(&*data_body(b"a\r\nb\r\n"), b"a\r\nb");
        assert!(matches!(data_body(b"a\r\nb\r\n"), Cow::Borrowed(_)));
        assert_eq!(&*data_body(b"a\r\nb"), b"a\r\nb");
        assert_eq!(&*data_body(b"a\r\n\r\n"), b"a\r\n");
        assert_eq!(&*data_body(b"\xe9t\xe9\r\n"), b"\xe9t\xe9");
    }

    #[test]
    fn data_body_turns_bare_cr_and_lf_into_crlf() {
        assert_eq!(&*data_body(b"a\n.\nb\r\n"), b"a\r\n.\r\nb");
        assert_eq!(&*data_body(b"\na\rb"), b"\r\na\r\nb");
        assert_eq!(&*data_body(b"a\r\r\n"), b"a\r\n");
    }

    #[test]
    fn results_are_one_per_recipient_and_a_missing_reply_is_never_delivered() {
        let rcpts: Vec<Address> = ["a@x.com", "b@x.com", "c@x.com"]
            .iter()
            .map(|s| Address::parse(s).unwrap())
            .collect();
        let refused = Outcome::Permanent(Reply {
            code: 550,
            text: "no".into(),
        });
        let ok = Reply {
            code: 250,
            text: "ok".into(),
        };
        let got = results(&rcpts, vec![None, Some(refused.clone())], Some(ok.clone()));
        assert_eq!(got.len(), 3);
        assert_eq!(got[0].recipient, rcpts[0]);
        assert_eq!(got[0].outcome, Outcome::Delivered(ok));
        assert_eq!(got[1].outcome, refused);
        assert_eq!(got[2].recipient, rcpts[2]);
        assert!(matches!(&got[2].outcome, Outcome::Temporary(r) if r.code == 451));
    }

    #[test]
    fn quoted_local_parts_go_on_the_wire_quoted() {
        let a = Address::parse("\"john doe\"@example.com").unwrap();
        let l = to_lettre(&a, false).unwrap();
        assert_eq!(l.to_string(), "\"john doe\"@example.com");
        let rcpt = Rcpt::new(l, vec![]).to_string();
        assert_eq!(rcpt, "RCPT TO:<\"john doe\"@example.com>\r\n");
    }

    #[test]
    fn host_name_is_a_plain_name() {
        let name = local_host_name();
        assert!(!name.is_empty());
        assert!(!name.contains(char::is_whitespace));
    }
}

/// Implicit TLS (`tls: tls`, port 465) on a socket mailferry opened itself, so that it can set
/// TCP_NODELAY; lettre drives it like any stream.
#[derive(Debug)]
struct ImplicitTls(tokio_rustls::client::TlsStream<TcpStream>);

impl tokio::io::AsyncRead for ImplicitTls {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl tokio::io::AsyncWrite for ImplicitTls {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

impl AsyncTokioStream for ImplicitTls {
    fn peer_addr(&self) -> std::io::Result<std::net::SocketAddr> {
        self.0.get_ref().0.peer_addr()
    }
}
