//! The SMTP sessions to the internal server: a pool shared by every account, where a
//! session is taken only for the length of one transaction.

use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::Semaphore;

use super::conn::{self, Conn};
use super::transaction::{self, After, Limits};
use super::{Relay, RelayError, auth};
use crate::address::Address;
use crate::config::{RelayConfig, TlsMode};
use crate::recipient::Recipient;
use crate::tls::TlsClient;

/// The SMTP sessions to the internal server, shared by every account. Cheap to clone: the
/// clones share the sessions.
///
/// [`SmtpRelay::send`] takes one of the `relay.connections` slots and a session only for one
/// transaction: an idle session, or a new one; afterwards the session goes back idle for the
/// next message of any account, and the slot is free. So at most `relay.connections`
/// sessions are open, and a caller that is not sending (waiting on a slow POP3 server, say)
/// holds none. A session goes back idle only in step and outside a transaction, so the next
/// transaction starts with MAIL FROM at once (RSET only ends a transaction that sent no
/// data). [`SmtpRelay::close`] ends the idle sessions with QUIT.
#[derive(Clone)]
pub struct SmtpRelay {
    inner: Arc<Inner>,
}

struct Inner {
    config: RelayConfig,
    /// `relay.oauth`: the tokens of its SMTP AUTH.
    tokens: Option<crate::oauth::TokenSource>,
    helo: String,
    tls: Mutex<Option<TlsClient>>,
    slots: Arc<Semaphore>,
    /// Open sessions outside a transaction.
    idle: Mutex<Vec<Conn>>,
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
        self.inner.helo.clone()
    }

    /// One transaction: `MAIL FROM:<reverse_path>` (`<>` for `None`), one RCPT per recipient
    /// (each reply kept), the message by BDAT or DATA. With PIPELINING, MAIL, the RCPTs and
    /// DATA go in one flight.
    ///
    /// The message goes out as given, except that line ends are made CRLF as
    /// [`super::prepare`] makes them (no copy when it made them already) and, for DATA, dots
    /// are stuffed as it is written; a message not ending in CRLF gets one. If no RCPT was
    /// accepted, no data is sent (RSET) and every result is `Temporary` or `Permanent` from
    /// its RCPT reply. If the message is accepted, the recipients whose RCPT was accepted
    /// are `Delivered` with the reply to the data. A recipient that cannot go on the wire is
    /// `Permanent` with a synthetic 553 reply saying so, and is not sent. A message larger
    /// than the server's SIZE is refused for good before anything is sent.
    ///
    /// The reply after the data may take `relay.data_timeout` (plus a second per 64 KiB for
    /// the transfer); every other reply `relay.timeout`.
    ///
    /// MAIL FROM or DATA refused, a timeout, or the connection failing is an `Err`: that
    /// session is closed, and the next call takes another. An idle session that the server
    /// closed before answering MAIL FROM is replaced by a new one at once.
    async fn send(
        &self,
        reverse_path: Option<&Address>,
        recipients: &[Address],
        message: &[u8],
    ) -> Result<Vec<Recipient>, RelayError> {
        if recipients.is_empty() {
            return Ok(Vec::new());
        }
        let started = std::time::Instant::now();
        let result = self.transact(reverse_path, recipients, message).await;
        crate::metrics::relay_transaction(started, &result);
        result
    }
}

impl SmtpRelay {
    /// [`Relay::send`] for at least one recipient, on a pooled session.
    async fn transact(
        &self,
        reverse_path: Option<&Address>,
        recipients: &[Address],
        message: &[u8],
    ) -> Result<Vec<Recipient>, RelayError> {
        // Closed only if the semaphore were closed, which nothing does.
        let _slot = self.inner.slots.acquire().await.ok();
        let (mut conn, mut reused) = self.session().await?;
        loop {
            let limits = Limits {
                reply: self.inner.config.timeout,
                data: self.inner.config.data_timeout,
            };
            let ended =
                transaction::run(&mut conn, limits, reverse_path, recipients, message).await;
            if reused && !ended.mail_answered && matches!(ended.result, Err(RelayError::Io(_))) {
                // The server ended the idle session as this transaction began (an idle
                // timeout): nothing of it was taken, so a new session tries it.
                (conn, reused) = (self.connect().await?, false);
                continue;
            }
            match ended.after {
                After::Reuse => lock(&self.inner.idle).push(conn),
                After::Quit => conn.quit(self.inner.config.timeout).await,
                After::Drop => drop(conn),
            }
            return ended.result;
        }
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
        let helo = config.helo.clone().unwrap_or_else(local_host_name);
        SmtpRelay {
            inner: Arc::new(Inner {
                tokens: config
                    .auth
                    .as_ref()
                    .and_then(crate::oauth::TokenSource::for_relay),
                config,
                helo,
                tls: Mutex::new(None),
                slots,
                idle: Mutex::new(Vec::new()),
            }),
        }
    }

    /// Ends every idle session with QUIT (each bounded by the timeout). Sessions in a
    /// transaction at that moment go back idle afterwards: call it when no one sends any
    /// more (at shutdown). The relay can still be used; it opens new sessions.
    pub async fn close(&self) {
        let idle = std::mem::take(&mut *lock(&self.inner.idle));
        for conn in idle {
            conn.quit(self.inner.config.timeout).await;
        }
    }

    /// An idle session that still looks alive (with whether it is one), or a new one.
    async fn session(&self) -> Result<(Conn, bool), RelayError> {
        loop {
            let idle = lock(&self.inner.idle).pop();
            let Some(mut conn) = idle else {
                return Ok((self.connect().await?, false));
            };
            if conn.looks_alive() {
                return Ok((conn, true));
            }
            // Closed by the server, or it said something unasked: dropped; try the next.
        }
    }

    /// A new session: connected, TLS as configured, EHLO, and AUTH when configured.
    async fn connect(&self) -> Result<Conn, RelayError> {
        let config = &self.inner.config;
        // Built before connecting: a bad ca_file or client key fails every connection alike.
        let tls = match config.tls {
            TlsMode::None => None,
            _ => Some(self.tls_client()?),
        };
        let mut conn = conn::open(config, tls.as_ref(), &self.inner.helo).await?;
        if let Some(credentials) = &config.auth {
            login(&mut conn, config, credentials, self.inner.tokens.as_ref()).await?;
        }
        Ok(conn)
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

/// AUTH on `conn` with `credentials`: with `relay.oauth` an access token from `tokens`
/// first (one the relay refuses is dropped, so that the next session asks for a new one).
/// Returns the mechanism used.
pub(super) async fn login(
    conn: &mut Conn,
    config: &RelayConfig,
    credentials: &crate::config::RelayAuth,
    tokens: Option<&crate::oauth::TokenSource>,
) -> Result<crate::sasl::Mechanism, RelayError> {
    let token = match tokens {
        Some(source) => Some(source.access_token().await.map_err(RelayError::Token)?),
        None => None,
    };
    let done = auth::authenticate(
        conn,
        credentials,
        token.as_ref(),
        config.tls,
        config.timeout,
    )
    .await;
    if let (Some(source), Err(RelayError::AuthRefused { .. })) = (tokens, &done) {
        source.forget().await;
    }
    done
}

/// This machine's host name for EHLO, or `localhost` when it is unknown or unusable.
pub(super) fn local_host_name() -> String {
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
    fn host_name_is_a_plain_name() {
        let name = local_host_name();
        assert!(!name.is_empty());
        assert!(!name.contains(char::is_whitespace));
    }
}
