//! The SMTP sessions to the internal server: a pool shared by every account, where a
//! session is taken only for the length of one transaction.

use std::borrow::Cow;
use std::fmt;
use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use lettre::transport::smtp::client::{AsyncSmtpConnection, AsyncTokioStream};
use lettre::transport::smtp::commands::{Data, Mail, Rcpt, Rset};
use lettre::transport::smtp::extension::{ClientId, Extension, MailBodyParameter, MailParameter};
use lettre::transport::smtp::response::Response;
use tokio::net::TcpStream;
use tokio::sync::Semaphore;

use super::prepare::{is_prepared, prepare};
use super::starttls::{self, Handover, Start};
use super::{Outcome, RcptResult, Relay, RelayError, Reply, SmtpError};
use crate::address::Address;
use crate::config::{RelayConfig, TlsMode};
use crate::tls::TlsClient;

/// RFC 5321's limit on a local part, in octets.
const MAX_LOCAL_PART: usize = 64;

/// Extra time allowed for the end of DATA per this many bytes of message (the transfer
/// itself, on a slow link), on top of `relay.data_timeout`.
const BYTES_PER_EXTRA_SECOND: usize = 64 * 1024;
/// The message goes to lettre in pieces of this size: lettre stuffs dots into a copy of
/// each piece, so the copy stays this small whatever the message's size.
const DATA_CHUNK: usize = 64 * 1024;

/// The SMTP sessions to the internal server, shared by every account. Cheap to clone: the
/// clones share the sessions.
///
/// [`SmtpRelay::send`] takes one of the `relay.connections` slots and a session only for one
/// transaction: an idle session (proved alive by RSET), or a new one; afterwards the
/// session goes back idle for the next message of any account, and the slot is free. So at
/// most `relay.connections` sessions are open, and a caller that is not sending (waiting on
/// a slow POP3 server, say) holds none. [`SmtpRelay::close`] ends the idle sessions with QUIT.
#[derive(Clone)]
pub struct SmtpRelay {
    inner: Arc<Inner>,
}

struct Inner {
    config: RelayConfig,
    helo: ClientId,
    tls: Mutex<Option<TlsClient>>,
    slots: Arc<Semaphore>,
    /// Open sessions outside a transaction.
    idle: Mutex<Vec<AsyncSmtpConnection>>,
}

impl fmt::Debug for SmtpRelay {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let inner = &self.inner;
        f.debug_struct("SmtpRelay")
            .field("host", &inner.config.host)
            .field("port", &inner.config.port)
            .field("tls", &inner.config.tls)
            .field("helo", &inner.helo)
            .field("idle", &lock(&inner.idle).len())
            .finish()
    }
}

impl Relay for SmtpRelay {
    /// The name this relay gives in EHLO (`relay.helo`, else this machine's host name, else
    /// `localhost`): the right `by` for [`super::received_header`].
    fn helo_name(&self) -> String {
        self.inner.helo.to_string()
    }

    /// One transaction: `MAIL FROM:<reverse_path>` (`<>` for `None`), one RCPT per recipient
    /// (each reply kept), DATA with `message`.
    ///
    /// The message goes out as given, except that dots are stuffed and line ends are made
    /// CRLF as [`super::prepare`] makes them (no copy when it made them already); a message
    /// not ending in CRLF gets one before the final dot. If no RCPT was accepted, no DATA is
    /// sent (RSET) and every result is `Temporary` or `Permanent` from its RCPT reply. If the
    /// message is accepted, the recipients whose RCPT was accepted are `Delivered` with the
    /// reply to the data. A recipient that cannot go on the wire is `Permanent` with a
    /// synthetic 553 reply saying so, and is not sent (see `to_lettre`).
    ///
    /// The reply after the final dot may take `relay.data_timeout` (plus a second per 64 KiB
    /// for the transfer); every other reply `relay.timeout`.
    ///
    /// MAIL FROM or DATA refused, a timeout, or the connection failing is an `Err`: that
    /// session is closed, and the next call takes another.
    async fn send(
        &self,
        reverse_path: Option<&Address>,
        recipients: &[Address],
        message: &[u8],
    ) -> Result<Vec<RcptResult>, RelayError> {
        if recipients.is_empty() {
            return Ok(Vec::new());
        }
        // Closed only if the semaphore were closed, which nothing does.
        let _slot = self.inner.slots.acquire().await.ok();
        self.with_session(reverse_path, recipients, message).await
    }
}

/// The guarded value, also after a panic elsewhere (the lists here stay consistent).
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl SmtpRelay {
    /// The pool for `config.host`, at most `config.connections` sessions open at once; nothing
    /// is opened until the first [`SmtpRelay::send`]. Clone it for every account.
    pub fn new(config: RelayConfig) -> SmtpRelay {
        let slots = Arc::new(Semaphore::new(config.connections as usize));
        let helo = ClientId::Domain(config.helo.clone().unwrap_or_else(local_host_name));
        SmtpRelay {
            inner: Arc::new(Inner {
                config,
                helo,
                tls: Mutex::new(None),
                slots,
                idle: Mutex::new(Vec::new()),
            }),
        }
    }

    async fn with_session(
        &self,
        reverse_path: Option<&Address>,
        recipients: &[Address],
        message: &[u8],
    ) -> Result<Vec<RcptResult>, RelayError> {
        let mut conn = self.session().await?;
        match self
            .transaction(&mut conn, reverse_path, recipients, message)
            .await
        {
            Ok((results, reusable)) => {
                if reusable {
                    lock(&self.inner.idle).push(conn);
                }
                Ok(results)
            }
            Err(e) => {
                if matches!(e, RelayError::MailFrom { .. } | RelayError::Data { .. }) {
                    let _ = tokio::time::timeout(self.inner.config.timeout, conn.quit()).await;
                }
                Err(e)
            }
        }
    }

    /// Ends every idle session with QUIT (each bounded by the timeout). Sessions in a
    /// transaction at that moment go back idle afterwards: call it when no one sends any
    /// more (at shutdown). The relay can still be used; it opens new sessions.
    pub async fn close(&self) {
        let idle = std::mem::take(&mut *lock(&self.inner.idle));
        for mut conn in idle {
            let _ = tokio::time::timeout(self.inner.config.timeout, conn.quit()).await;
        }
    }

    /// The transaction on `conn`; with the results, whether the session can be used again.
    async fn transaction(
        &self,
        conn: &mut AsyncSmtpConnection,
        reverse_path: Option<&Address>,
        recipients: &[Address],
        message: &[u8],
    ) -> Result<(Vec<RcptResult>, bool), RelayError> {
        let limit = self.inner.config.timeout;

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
            let reset = matches!(step(limit, "RSET", conn.command(Rset)).await, Ok(Ok(_)));
            return Ok((results(recipients, outcomes, None), reset));
        }

        let reply = step(limit, "DATA", conn.command(Data)).await?;
        match reply {
            Ok(reply) if reply.code == 354 => {}
            Ok(reply) | Err(reply) => return Err(RelayError::Data { reply }),
        }
        let body = data_body(message);
        let extra = Duration::from_secs((body.len() / BYTES_PER_EXTRA_SECOND) as u64);
        let reply = step(
            self.inner.config.data_timeout + extra,
            "the end of DATA",
            conn.message_iter(body.chunks(DATA_CHUNK)),
        )
        .await?;
        match reply {
            Ok(reply) if reply.is_success() => {
                Ok((results(recipients, outcomes, Some(reply)), true))
            }
            Ok(reply) | Err(reply) => Err(RelayError::Data { reply }),
        }
    }

    /// An idle session, proved alive by RSET, or a new one.
    async fn session(&self) -> Result<AsyncSmtpConnection, RelayError> {
        let limit = self.inner.config.timeout;
        loop {
            let idle = lock(&self.inner.idle).pop();
            let Some(mut conn) = idle else {
                return self.connect().await;
            };
            if matches!(step(limit, "RSET", conn.command(Rset)).await, Ok(Ok(_))) {
                return Ok(conn);
            }
            // A dead or confused session: dropped; try the next one.
        }
    }

    async fn connect(&self) -> Result<AsyncSmtpConnection, RelayError> {
        let config = &self.inner.config;
        let limit = config.timeout;
        // Built before connecting: a bad ca_file or client key fails every connection alike.
        let tls = match config.tls {
            TlsMode::None => None,
            _ => Some(self.tls_client()?),
        };
        let host = config.host.clone();
        let port = config.port;
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
        let peer = tcp.peer_addr();
        let stream: Box<dyn AsyncTokioStream> = match (config.tls, tls) {
            (TlsMode::Tls, Some(tls)) => {
                Box::new(Handover::new(handshake(&tls, tcp, limit).await?, peer))
            }
            (TlsMode::Starttls | TlsMode::StarttlsIfAvailable, Some(tls)) => {
                let required = config.tls == TlsMode::Starttls;
                let helo = self.inner.helo.to_string();
                match starttls::start(tcp, &host, &helo, required, limit).await? {
                    Start::Upgrade(tcp) => Box::new(Handover::after_greeting(
                        handshake(&tls, tcp, limit).await?,
                        peer,
                    )),
                    Start::Plain(tcp) => Box::new(Handover::after_greeting(tcp, peer)),
                }
            }
            _ => Box::new(tcp),
        };
        // In a task of its own: lettre 0.11 panics on some malformed EHLO replies (a line of
        // spaces), which must fail this connection, not the caller.
        let helo = self.inner.helo.clone();
        let greeting = tokio::spawn(async move {
            AsyncSmtpConnection::connect_with_transport(stream, &helo).await
        });
        tokio::time::timeout(limit, greeting)
            .await
            .map_err(|_| timeout_error("the greeting and EHLO", limit))?
            .map_err(|_| RelayError::Garbled {
                host: host.clone(),
                during: "the greeting and EHLO",
            })?
            .map_err(|source| RelayError::Connect { host, port, source })
    }

    /// TLS towards the relay host ([`crate::tls`]), built at the first connection.
    fn tls_client(&self) -> Result<TlsClient, RelayError> {
        let mut cached = lock(&self.inner.tls);
        if let Some(tls) = &*cached {
            return Ok(tls.clone());
        }
        let config = &self.inner.config;
        let tls = TlsClient::new(&config.tls_options, &config.host).map_err(RelayError::Tls)?;
        Ok(cached.insert(tls).clone())
    }
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

pub(super) fn timeout_error(during: &'static str, limit: Duration) -> RelayError {
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

/// The message as lettre's `message_iter()` must get it: lettre stuffs dots after CRLF and
/// appends CRLF "." CRLF, so the message's own final CRLF is removed (it becomes that CRLF),
/// and line ends are made CRLF by [`prepare`] unless they are already (a "." after a bare LF
/// would not be stuffed, and some servers end the data there).
fn data_body(message: &[u8]) -> Cow<'_, [u8]> {
    let mut body = if is_prepared(message) {
        Cow::Borrowed(message)
    } else {
        Cow::Owned(prepare(b"", message))
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
