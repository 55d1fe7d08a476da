//! The POP3 session: TCP, TLS or STLS, login, and the transaction commands. Every read and
//! write is bounded by the account's timeout; the wire format is parsed by `protocol.rs`.

use std::collections::HashMap;
use std::time::Duration;

use super::conn::Connection;
use super::pipeline::Pipe;
use super::protocol::{
    self, Capabilities, DATA_LINE_MAX, DotDecoder, Overflow, STATUS_LINE_MAX, Status,
};
use super::{Pop3Error, apop};
use crate::config::{AccountConfig, Password, TlsMode};
use crate::fetch::transport::{
    Deadline, Progress, Stream, check_credentials, handshake, open, tls_client,
};
use crate::sasl::Method;
use crate::tls::{PeerTls, TlsClient};

/// Largest message RETR accepts unless [`Pop3Client::set_max_message_size`] says otherwise;
/// a larger one is read to its end, discarded, and reported as
/// [`Pop3Error::MessageTooLarge`].
pub const MESSAGE_MAX: usize = 256 * 1024 * 1024;
/// The slowest transfer a RETR is allowed, in bytes per second: see [`fetch_deadline`].
pub const FETCH_RATE_FLOOR: u64 = 16 * 1024;
/// Largest UIDL, LIST or CAPA response accepted (about three million messages).
pub const LISTING_MAX: usize = 256 * 1024 * 1024;
/// RETR reserves memory up front from the LIST size, but never more than this.
const RESERVE_MAX: u64 = 64 * 1024 * 1024;
/// Read buffer: holds a whole status line (the cap plus its CRLF).
pub(super) const BUF_SIZE: usize = STATUS_LINE_MAX + 1024;

/// The time one message's RETR may take in all: twice the account's `timeout` plus its
/// `size` at [`FETCH_RATE_FLOOR`], where the size is the larger of what LIST announced and
/// what has arrived so far. Each read still has `timeout` on its own (a silent server meets
/// that first); this bounds a server that trickles bytes just fast enough to never hit it,
/// while a big message on a slow but steady link (at least 16 KiB/s) is never cut, whatever
/// LIST said.
pub fn fetch_deadline(timeout: Duration, size: u64) -> Duration {
    timeout * 2 + Duration::from_secs(size / FETCH_RATE_FLOOR)
}

/// One message of the mailbox: UIDL and LIST joined.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    /// The message number in this session.
    pub number: u32,
    /// The unique-id (UIDL).
    pub uid: String,
    /// The size LIST announced, in octets; `None` when LIST did not name the message.
    pub size: Option<u64>,
}

/// An authenticated POP3 session (TRANSACTION state). Dropping it without [`quit`] closes
/// the connection without committing any DELE.
///
/// [`quit`]: Pop3Client::quit
pub struct Pop3Client {
    pub(super) conn: Connection,
    capabilities: Option<Capabilities>,
    encrypted: bool,
    /// Sizes from the last LIST: the buffer for RETR, its deadline, the size cap.
    pub(super) sizes: HashMap<u32, u64>,
    /// The largest message RETR keeps (`max_message_size`).
    pub(super) message_max: u64,
    /// The account's timeout, for RETR deadlines.
    pub(super) timeout: Duration,
    /// PIPELINING: commands in flight and messages planned ahead (`pipeline.rs`).
    pub(super) pipe: Pipe,
    /// How the session logged in (set by `login`).
    pub(super) method: Option<Method>,
}

impl std::fmt::Debug for Pop3Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pop3Client")
            .field("account", &self.conn.account)
            .field("encrypted", &self.encrypted)
            .field("lost", &self.conn.lost)
            .finish_non_exhaustive()
    }
}

impl Pop3Client {
    /// TCP connect to account.host:account.port, greeting, CAPA, TLS per account.tls
    /// (Tls = implicit; Starttls = STLS required, error if not offered; StarttlsIfAvailable =
    /// STLS when CAPA lists STLS; None = plain), re-CAPA after STLS, then login with the
    /// strongest method offered and allowed (`login.rs`). Refuses to send the password on an
    /// unencrypted connection unless account.tls == TlsMode::None.
    pub async fn connect(account: &AccountConfig) -> Result<Pop3Client, Pop3Error> {
        Pop3Client::connect_with(account, None).await
    }

    /// [`connect`](Pop3Client::connect) with the account's TLS built beforehand (see
    /// [`TlsClient::new`]); `None` builds it from the account's TLS options when needed.
    pub async fn connect_with(
        account: &AccountConfig,
        tls_config: Option<TlsClient>,
    ) -> Result<Pop3Client, Pop3Error> {
        Pop3Client::connect_with_token(account, tls_config, None).await
    }

    /// [`connect_with`](Pop3Client::connect_with) for an account with `oauth:`, logging in
    /// with this OAuth2 access token (XOAUTH2 or OAUTHBEARER); such an account needs one.
    pub async fn connect_with_token(
        account: &AccountConfig,
        tls_config: Option<TlsClient>,
        token: Option<&Password>,
    ) -> Result<Pop3Client, Pop3Error> {
        Pop3Client::connect_observed(account, tls_config, token, &mut Progress::default()).await
    }

    /// [`connect_with_token`](Pop3Client::connect_with_token), noting in `progress` how far
    /// it got and what it learnt (for `test-connection`), also when it fails.
    pub async fn connect_observed(
        account: &AccountConfig,
        tls_config: Option<TlsClient>,
        token: Option<&Password>,
        progress: &mut Progress,
    ) -> Result<Pop3Client, Pop3Error> {
        check_credentials(account, token).map_err(Pop3Error::InvalidCredential)?;
        let (stream, encrypted) = open::<Pop3Error>(account, tls_config.as_ref(), progress).await?;
        Pop3Client::establish(stream, encrypted, account, tls_config, token, progress).await
    }

    /// Everything after the TCP connect and implicit TLS (`encrypted`): greeting, CAPA, STLS,
    /// login.
    async fn establish(
        stream: Box<dyn Stream>,
        mut encrypted: bool,
        account: &AccountConfig,
        tls_config: Option<TlsClient>,
        token: Option<&Password>,
        progress: &mut Progress,
    ) -> Result<Pop3Client, Pop3Error> {
        let tls_config = || tls_client(account, tls_config.as_ref());
        let mut conn = Connection::new(stream, account.timeout, account.name.clone());

        let greeting = match conn.read_status().await? {
            Status::Ok(text) => {
                tracing::debug!(account = %account.name, "S: +OK {text}");
                text
            }
            Status::Err { text, .. } => {
                return Err(Pop3Error::ServerError {
                    command: "greeting".to_owned(),
                    text,
                });
            }
        };
        // The greeting's timestamp, for APOP; it stands for the whole session (STLS included).
        let apop_stamp = apop::timestamp(&greeting).map(str::to_owned);
        if apop_stamp.is_none() && account.auth.allowed() == [Method::Apop] {
            return Err(Pop3Error::ApopNotOffered);
        }
        let mut capabilities = capa(&mut conn).await?;
        progress.capabilities = capabilities.as_ref().map(|c| c.lines.clone());

        let want_stls = match account.tls {
            TlsMode::None | TlsMode::Tls => false,
            TlsMode::Starttls => {
                if capabilities.as_ref().is_some_and(|c| !c.stls) {
                    return Err(Pop3Error::StlsNotOffered);
                }
                true
            }
            // A server without CAPA may still know STLS: ask.
            TlsMode::StarttlsIfAvailable => capabilities.as_ref().is_none_or(|c| c.stls),
        };
        if want_stls {
            conn.send("STLS", "STLS").await?;
            match conn.read_status().await? {
                Status::Ok(_) => {
                    // Anything sent before the handshake could be injected by a man in the
                    // middle (CVE-2011-0411 style); refuse rather than read it as protected.
                    if conn.has_buffered() {
                        return Err(Pop3Error::Protocol(
                            "the server sent data after the STLS reply, before the TLS \
                             handshake"
                                .to_owned(),
                        ));
                    }
                    let stream =
                        handshake::<Pop3Error>(conn.stream, account, tls_config()?).await?;
                    progress.tls = Some(PeerTls::of(stream.get_ref().1));
                    conn = Connection::new(Box::new(stream), account.timeout, account.name.clone());
                    encrypted = true;
                    // RFC 2595: capabilities learnt before TLS are discarded.
                    capabilities = capa(&mut conn).await?;
                    progress.capabilities = capabilities.as_ref().map(|c| c.lines.clone());
                }
                Status::Err { text, .. } => {
                    tracing::debug!(account = %account.name, "S: -ERR {text}");
                    if account.tls == TlsMode::Starttls {
                        return Err(Pop3Error::StlsNotOffered);
                    }
                }
            }
        }
        if !encrypted && account.tls != TlsMode::None {
            return Err(match account.tls {
                TlsMode::Starttls => Pop3Error::StlsNotOffered,
                _ => Pop3Error::PlaintextRefused,
            });
        }

        let mut client = Pop3Client {
            conn,
            capabilities,
            encrypted,
            sizes: HashMap::new(),
            message_max: MESSAGE_MAX as u64,
            timeout: account.timeout,
            pipe: Pipe::default(),
            method: None,
        };
        client.login(account, apop_stamp.as_deref(), token).await?;
        // Only now: Courier offers PIPELINING but loses what is sent before its login
        // process hands over.
        client.set_pipelining(true);
        Ok(client)
    }

    /// The capabilities from the last CAPA (after STLS, the ones sent under TLS); `None` if
    /// the server does not know CAPA.
    pub fn capabilities(&self) -> Option<&Capabilities> {
        self.capabilities.as_ref()
    }

    /// How the session logged in: the SASL mechanism, APOP or USER/PASS (for
    /// `test-connection` and the log).
    pub fn login_method(&self) -> Option<Method> {
        self.method
    }

    /// Whether the session runs over TLS (implicit or STLS).
    pub fn is_encrypted(&self) -> bool {
        self.encrypted
    }

    /// UIDL: (message number, unique-id) for every message. A malformed line is skipped with
    /// a warning; the rest of the listing stands.
    pub async fn uidl(&mut self) -> Result<Vec<(u32, String)>, Pop3Error> {
        let body = self.multi("UIDL", DATA_LINE_MAX, LISTING_MAX, 0).await?;
        Ok(self.parse_uidl(&body))
    }

    fn parse_uidl(&self, body: &[u8]) -> Vec<(u32, String)> {
        let mut listing = Vec::new();
        for line in protocol::lines(body) {
            match protocol::parse_uidl_line(line) {
                Ok(entry) => listing.push(entry),
                Err(e) => tracing::warn!(account = %self.conn.account, "skipping UIDL line: {e}"),
            }
        }
        listing
    }

    /// LIST: (message number, size in octets) for every message. A malformed line is skipped
    /// with a warning.
    pub async fn list(&mut self) -> Result<Vec<(u32, u64)>, Pop3Error> {
        let body = self.multi("LIST", DATA_LINE_MAX, LISTING_MAX, 0).await?;
        Ok(self.parse_list(&body))
    }

    /// The LIST lines, kept as the sizes for RETR.
    fn parse_list(&mut self, body: &[u8]) -> Vec<(u32, u64)> {
        let mut listing = Vec::new();
        for line in protocol::lines(body) {
            match protocol::parse_list_line(line) {
                Ok(entry) => listing.push(entry),
                Err(e) => tracing::warn!(account = %self.conn.account, "skipping LIST line: {e}"),
            }
        }
        self.sizes = listing.iter().copied().collect();
        listing
    }

    /// UIDL then LIST, joined by message number, in UIDL's order: what a pass needs to skip
    /// what is done and to leave upstream what is larger than `max_message_size`.
    /// With pipelining both go out together: one round trip.
    pub async fn listing(&mut self) -> Result<Vec<Listed>, Pop3Error> {
        let uids = if self.pipe.on {
            self.conn.queue("UIDL", "UIDL")?;
            self.conn.queue("LIST", "LIST")?;
            self.drain().await?;
            // LIST's reply is read whatever UIDL's was, to stay in step.
            let uidl = self.read_multi("UIDL", DATA_LINE_MAX, LISTING_MAX, 0).await;
            let list = self.read_multi("LIST", DATA_LINE_MAX, LISTING_MAX, 0).await;
            let uids = self.parse_uidl(&uidl?);
            self.parse_list(&list?);
            uids
        } else {
            let uids = self.uidl().await?;
            self.list().await?;
            uids
        };
        Ok(uids
            .into_iter()
            .map(|(number, uid)| Listed {
                number,
                uid,
                size: self.sizes.get(&number).copied(),
            })
            .collect())
    }

    /// Sets the largest message [`retr`](Pop3Client::retr) downloads (`max_message_size`,
    /// in bytes; [`MESSAGE_MAX`] until set).
    pub fn set_max_message_size(&mut self, limit: u64) {
        self.message_max = limit;
    }

    /// STAT: (number of messages, total size in octets).
    pub async fn stat(&mut self) -> Result<(u32, u64), Pop3Error> {
        let text = self.simple("STAT".to_owned()).await?;
        let mut words = text.split_ascii_whitespace();
        let parsed = (|| {
            let count = words.next()?.parse().ok()?;
            let size = words.next()?.parse().ok()?;
            Some((count, size))
        })();
        parsed.ok_or_else(|| Pop3Error::Protocol(format!("malformed STAT reply {text:?}")))
    }

    /// The message as sent by the server, dot-unstuffed, terminator removed, CRLF kept,
    /// within [`fetch_deadline`] of the larger of its LIST size and the bytes received so
    /// far: a server trickling bytes gives [`TransportError::Deadline`] and the session is lost.
    ///
    /// A message that the last LIST announced larger than the size cap
    /// ([`set_max_message_size`](Pop3Client::set_max_message_size)) is not asked for; one that
    /// turns out larger is read to its end without being kept. Both give
    /// [`Pop3Error::MessageTooLarge`], and the session stays usable. Lines longer than
    /// any length are kept, up to the size cap.
    pub async fn retr(&mut self, msg: u32) -> Result<Vec<u8>, Pop3Error> {
        self.retr_until(msg, None).await
    }

    /// [`retr`](Pop3Client::retr), and done by `deadline` too (e.g. the pass's deadline):
    /// past either, [`TransportError::Deadline`] and the session is lost.
    pub async fn retr_within(
        &mut self,
        msg: u32,
        deadline: tokio::time::Instant,
    ) -> Result<Vec<u8>, Pop3Error> {
        let until = deadline.saturating_duration_since(tokio::time::Instant::now());
        self.retr_until(msg, Some(until)).await
    }

    async fn retr_until(
        &mut self,
        msg: u32,
        until: Option<Duration>,
    ) -> Result<Vec<u8>, Pop3Error> {
        if self
            .sizes
            .get(&msg)
            .is_some_and(|size| *size > self.message_max)
        {
            return Err(self.too_large(msg));
        }
        if self.pipe.on {
            return self.retr_pipelined(msg, until).await;
        }
        let command = format!("RETR {msg}");
        self.conn.queue(&command, &command)?;
        self.read_retr(msg, until).await
    }

    /// Reads the response to `RETR msg`, sent already, within its deadline (counted from
    /// now: a pipelined RETR waits its turn without its clock running).
    pub(super) async fn read_retr(
        &mut self,
        msg: u32,
        until: Option<Duration>,
    ) -> Result<Vec<u8>, Pop3Error> {
        let announced = self.sizes.get(&msg).copied();
        let limit = usize::try_from(self.message_max).unwrap_or(usize::MAX);
        // LIST counts CRLF line ends; the decoded message has the same size, give or take.
        let reserve = announced
            .map_or(0, |size| size.min(RESERVE_MAX))
            .min(self.message_max);
        let reserve = usize::try_from(reserve).unwrap_or(0);
        let command = format!("RETR {msg}");
        self.conn.deadline = Some(Deadline::new(
            command.clone(),
            self.timeout,
            announced.unwrap_or(0),
            until,
        ));
        // A message line is limited only by the message's own limit: mail with megabytes on
        // one line (unwrapped base64, generated HTML) exists, and costs no more memory here.
        let result = self.read_multi(&command, limit, limit, reserve).await;
        self.conn.deadline = None;
        match result {
            Err(Pop3Error::ResponseTooLong {
                overflow: Overflow::Total(_),
                ..
            }) => Err(self.too_large(msg)),
            other => other,
        }
    }

    /// [`Pop3Error::MessageTooLarge`] for `msg`, with what LIST announced.
    fn too_large(&self, msg: u32) -> Pop3Error {
        Pop3Error::MessageTooLarge {
            msg,
            limit: self.message_max,
            announced: self.sizes.get(&msg).copied(),
        }
    }

    /// DELE: marks the message deleted; the server removes it only at [`quit`].
    ///
    /// [`quit`]: Pop3Client::quit
    pub async fn dele(&mut self, msg: u32) -> Result<(), Pop3Error> {
        self.simple(format!("DELE {msg}")).await.map(drop)
    }

    /// RSET: unmarks every message marked by DELE in this session.
    pub async fn rset(&mut self) -> Result<(), Pop3Error> {
        self.simple("RSET".to_owned()).await.map(drop)
    }

    /// NOOP: checks that the session is alive.
    pub async fn noop(&mut self) -> Result<(), Pop3Error> {
        self.simple("NOOP".to_owned()).await.map(drop)
    }

    /// QUIT: the server commits DELEs only now. A `-ERR` here means some deletions were not
    /// committed.
    pub async fn quit(self) -> Result<(), Pop3Error> {
        self.quit_reporting().await.map(drop)
    }

    /// [`quit`](Pop3Client::quit), and the messages whose pipelined DELE the server refused
    /// (see [`dele_pipelined`](Pop3Client::dele_pipelined)): those stay upstream.
    pub async fn quit_reporting(mut self) -> Result<Vec<u32>, Pop3Error> {
        let result = self.simple("QUIT".to_owned()).await;
        self.conn.shutdown().await;
        result.map(|_| std::mem::take(&mut self.pipe.refused))
    }

    /// A single-line command: the text after `+OK`, or [`Pop3Error::ServerError`].
    async fn simple(&mut self, command: String) -> Result<String, Pop3Error> {
        // Sent with whatever is queued; the replies to what is in flight come first.
        self.conn.queue(&command, &command)?;
        self.drain().await?;
        match self.conn.read_status().await? {
            Status::Ok(text) => Ok(text),
            Status::Err { text, .. } => {
                tracing::debug!(account = %self.conn.account, "S: -ERR {text}");
                Err(Pop3Error::ServerError { command, text })
            }
        }
    }

    /// A multi-line command: the unstuffed body, or an error.
    async fn multi(
        &mut self,
        command: &str,
        line_max: usize,
        total_max: usize,
        reserve: usize,
    ) -> Result<Vec<u8>, Pop3Error> {
        self.conn.queue(command, command)?;
        self.drain().await?;
        self.read_multi(command, line_max, total_max, reserve).await
    }

    /// Reads the response to a multi-line command already sent: the unstuffed body, or an
    /// error.
    pub(super) async fn read_multi(
        &mut self,
        command: &str,
        line_max: usize,
        total_max: usize,
        reserve: usize,
    ) -> Result<Vec<u8>, Pop3Error> {
        match self.conn.read_status().await? {
            Status::Ok(_) => {}
            Status::Err { text, .. } => {
                tracing::debug!(account = %self.conn.account, "S: -ERR {text}");
                return Err(Pop3Error::ServerError {
                    command: command.to_owned(),
                    text,
                });
            }
        }
        let mut body = Vec::with_capacity(reserve);
        let mut decoder = DotDecoder::new(line_max, total_max);
        match self
            .conn
            .read_body(&mut decoder, &mut body, total_max)
            .await?
        {
            None => Ok(body),
            Some(overflow) => Err(Pop3Error::ResponseTooLong {
                command: command.to_owned(),
                overflow,
            }),
        }
    }
}

/// CAPA: `None` when the server answers `-ERR` (an RFC 1939-only server).
async fn capa(conn: &mut Connection) -> Result<Option<Capabilities>, Pop3Error> {
    conn.send("CAPA", "CAPA").await?;
    match conn.read_status().await? {
        Status::Ok(_) => {}
        Status::Err { .. } => return Ok(None),
    }
    let mut body = Vec::new();
    let mut decoder = DotDecoder::new(DATA_LINE_MAX, LISTING_MAX);
    if let Some(overflow) = conn.read_body(&mut decoder, &mut body, LISTING_MAX).await? {
        return Err(Pop3Error::ResponseTooLong {
            command: "CAPA".to_owned(),
            overflow,
        });
    }
    let capabilities = Capabilities::parse(&body);
    tracing::debug!(account = %conn.account, "capabilities: {:?}", capabilities.lines);
    Ok(Some(capabilities))
}
