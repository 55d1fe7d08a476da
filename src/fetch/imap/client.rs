//! The IMAP session: TCP, TLS or STARTTLS, login, the folder, and the commands a poll pass
//! needs. Every read and write is bounded by the account's timeout (`conn.rs`); responses
//! are parsed by `protocol.rs`.

use std::sync::Arc;

use tokio::net::TcpStream;
use tokio_rustls::rustls::ClientConfig;

use super::ImapError;
use super::command::{self, Command};
use super::conn::{Connection, Stream};
use super::folder;
use super::protocol::{Capabilities, Code, LITERAL_MAX, ListEntry, Literal, Response, Status};
use crate::config::{AccountConfig, TlsMode};
use crate::fetch::pop3::{MESSAGE_MAX, redact};
use crate::fetch::tls;

/// One message of the selected folder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Listed {
    /// Its UID.
    pub uid: u32,
    /// RFC822.SIZE, in octets, if the server sent it.
    pub size: Option<u64>,
}

/// An authenticated IMAP session, with a folder selected once
/// [`open_folder`](ImapClient::open_folder) succeeded. Dropping it without
/// [`logout`](ImapClient::logout) expunges nothing (messages flagged `\Deleted` stay, and
/// are flagged again by the next session).
pub struct ImapClient {
    conn: Connection,
    capabilities: Capabilities,
    encrypted: bool,
    /// The selected folder's UIDVALIDITY.
    uidvalidity: Option<u32>,
    /// Messages in the selected folder, from the last EXISTS.
    exists: u32,
    /// The largest message [`fetch`](ImapClient::fetch) keeps (`max_message_size`).
    message_max: u64,
    /// UIDs flagged `\Deleted` in this session, for UID EXPUNGE.
    flagged: Vec<u32>,
}

impl std::fmt::Debug for ImapClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ImapClient")
            .field("account", &self.conn.account)
            .field("encrypted", &self.encrypted)
            .field("uidvalidity", &self.uidvalidity)
            .finish_non_exhaustive()
    }
}

impl ImapClient {
    /// TCP connect to account.host:account.port, TLS per account.tls (Tls = implicit;
    /// Starttls = STARTTLS required, refused before any credential if not offered;
    /// StarttlsIfAvailable = STARTTLS when offered; None = plain), then login: AUTHENTICATE
    /// PLAIN when offered, else LOGIN. Refuses to send the password on an unencrypted
    /// connection unless account.tls == TlsMode::None.
    pub async fn connect(account: &AccountConfig) -> Result<ImapClient, ImapError> {
        ImapClient::connect_with(account, None).await
    }

    /// [`connect`](ImapClient::connect) with a TLS configuration built beforehand (see
    /// [`tls::client_config`]); `None` builds one from the account's `ca_file` when needed.
    pub async fn connect_with(
        account: &AccountConfig,
        tls_config: Option<Arc<ClientConfig>>,
    ) -> Result<ImapClient, ImapError> {
        // Checked before anything goes on the wire.
        check_credential(&account.username, "user name")?;
        check_credential(account.password.expose(), "password")?;

        let host = account.host.trim_start_matches('[').trim_end_matches(']');
        let addr = format!("{}:{}", account.host, account.port);
        let connect = TcpStream::connect((host, account.port));
        let tcp = match tokio::time::timeout(account.timeout, connect).await {
            Ok(Ok(tcp)) => tcp,
            Ok(Err(source)) => return Err(ImapError::Connect { addr, source }),
            Err(_) => return Err(ImapError::Timeout(account.timeout)),
        };
        tcp.set_nodelay(true)?;
        tracing::debug!(account = %account.name, "connected to {addr}");
        ImapClient::establish(Box::new(tcp), account, tls_config).await
    }

    /// Everything after the TCP connect: implicit TLS, greeting, CAPABILITY, STARTTLS, login.
    async fn establish(
        stream: Box<dyn Stream>,
        account: &AccountConfig,
        tls_config: Option<Arc<ClientConfig>>,
    ) -> Result<ImapClient, ImapError> {
        let tls_config = move || match &tls_config {
            Some(cfg) => Ok(cfg.clone()),
            None => tls::client_config(account.ca_file.as_deref()),
        };
        let mut encrypted = false;
        let stream = if account.tls == TlsMode::Tls {
            encrypted = true;
            Box::new(handshake(stream, account, tls_config()?).await?) as Box<dyn Stream>
        } else {
            stream
        };
        let mut client = ImapClient {
            conn: Connection::new(stream, account.timeout, account.name.clone()),
            capabilities: Capabilities::default(),
            encrypted,
            uidvalidity: None,
            exists: 0,
            message_max: MESSAGE_MAX as u64,
            flagged: Vec::new(),
        };

        let (preauth, code) = match client.conn.read_response(LITERAL_MAX).await? {
            Response::State {
                status: Status::Ok,
                code,
                ..
            } => (false, code),
            Response::Preauth { code, .. } => (true, code),
            Response::Bye { text } => return Err(ImapError::Bye(text)),
            other => {
                return Err(client.lost(format!("unexpected greeting {other:?}")));
            }
        };
        match code {
            Some(Code::Capability(caps)) => client.capabilities = caps,
            _ => client.capability().await?,
        }

        let want_starttls = match account.tls {
            TlsMode::None | TlsMode::Tls => false,
            TlsMode::Starttls => {
                // STARTTLS is only allowed before authentication: a PREAUTH connection
                // stays in the clear.
                if preauth || !client.capabilities.has("STARTTLS") {
                    return Err(ImapError::StarttlsNotOffered);
                }
                true
            }
            TlsMode::StarttlsIfAvailable => !preauth && client.capabilities.has("STARTTLS"),
        };
        if want_starttls {
            client.starttls(account, tls_config()?).await?;
        }
        if preauth {
            tracing::debug!(account = %account.name, "PREAUTH: logged in by the server");
            return Ok(client);
        }
        if !client.encrypted && account.tls != TlsMode::None {
            return Err(match account.tls {
                TlsMode::Starttls => ImapError::StarttlsNotOffered,
                _ => ImapError::PlaintextRefused,
            });
        }
        client.login(account).await?;
        Ok(client)
    }

    /// STARTTLS, the handshake, and CAPABILITY again (RFC 3501 6.2.1: what was learnt
    /// before TLS is discarded).
    async fn starttls(
        &mut self,
        account: &AccountConfig,
        cfg: Arc<ClientConfig>,
    ) -> Result<(), ImapError> {
        self.run(Command::new("STARTTLS")).await?;
        // Anything sent before the handshake could be injected by a man in the middle
        // (CVE-2011-0411 style); refuse rather than read it as protected.
        if self.conn.has_buffered() {
            return Err(self.lost(
                "the server sent data after the STARTTLS reply, before the TLS handshake".into(),
            ));
        }
        // A placeholder while the stream is in the handshake; it is never read.
        let mut plain = std::mem::replace(
            &mut self.conn,
            Connection::new(Box::new(tokio::io::empty()), account.timeout, String::new()),
        );
        let stream = std::mem::replace(&mut plain.stream, Box::new(tokio::io::empty()));
        let stream = handshake(stream, account, cfg).await?;
        self.conn = plain.upgrade(Box::new(stream));
        self.encrypted = true;
        self.capability().await
    }

    /// AUTHENTICATE PLAIN when offered (it carries UTF-8 as it is), else LOGIN with the
    /// password quoted, or as a literal when it has 8-bit bytes.
    async fn login(&mut self, account: &AccountConfig) -> Result<(), ImapError> {
        let password = account.password.expose();
        let mut secrets = vec![password.to_owned()];
        let result = if self.capabilities.has_auth("PLAIN") {
            let response = command::sasl_plain(&account.username, password);
            secrets.push(response.clone());
            self.authenticate_plain(response).await
        } else if self.capabilities.has("LOGINDISABLED") {
            return Err(ImapError::NoLoginMethod);
        } else {
            let login = Command::new("LOGIN")
                .string(account.username.as_bytes(), false)
                .string(password.as_bytes(), true);
            self.run(login).await
        };
        let responses = match result {
            Ok(responses) => responses,
            Err(ImapError::Refused { text, .. }) => {
                let temporary = ["[UNAVAILABLE]", "[INUSE]", "[LIMIT]"]
                    .iter()
                    .any(|c| text.to_ascii_uppercase().starts_with(c));
                return Err(ImapError::AuthFailed {
                    text: redact(&text, &secrets),
                    temporary,
                });
            }
            Err(e) => return Err(e),
        };
        tracing::debug!(account = %account.name, "logged in");
        // The capabilities change with login (UIDPLUS, ...): take them from the reply, or ask.
        let fresh = responses.into_iter().rev().find_map(|r| match r {
            Response::Capability(caps)
            | Response::Tagged {
                code: Some(Code::Capability(caps)),
                ..
            } => Some(caps),
            _ => None,
        });
        match fresh {
            Some(caps) => self.capabilities = caps,
            None => self.capability().await?,
        }
        Ok(())
    }

    /// AUTHENTICATE PLAIN, with the initial response on the command line when SASL-IR is
    /// offered, else after the server's `+`.
    async fn authenticate_plain(&mut self, response: String) -> Result<Vec<Response>, ImapError> {
        let tag = self.conn.tag();
        let mut untagged = Vec::new();
        let initial = self.capabilities.has("SASL-IR");
        let (line, shown) = if initial {
            (
                format!("AUTHENTICATE PLAIN {response}"),
                "AUTHENTICATE PLAIN ***",
            )
        } else {
            ("AUTHENTICATE PLAIN".to_owned(), "AUTHENTICATE PLAIN")
        };
        let command = Command {
            parts: vec![command::Part::Text(line.into_bytes())],
            shown: shown.to_owned(),
        };
        self.conn.send(&tag, &command, false, &mut untagged).await?;
        loop {
            match self.conn.read_response(LITERAL_MAX).await? {
                Response::Continue(_) if !initial => {
                    tracing::debug!(account = %self.conn.account, "C: ***");
                    self.conn
                        .write(format!("{response}\r\n").as_bytes())
                        .await?;
                }
                // A challenge after the initial response: end the exchange (RFC 3501 6.2.2).
                Response::Continue(_) => self.conn.write(b"*\r\n").await?,
                tagged @ Response::Tagged { .. } => {
                    return self.finish(&tag, "AUTHENTICATE PLAIN", tagged, untagged);
                }
                other => untagged.push(self.note(other)?),
            }
        }
    }

    /// The capabilities as last announced.
    pub fn capabilities(&self) -> &Capabilities {
        &self.capabilities
    }

    /// Whether the session runs over TLS (implicit or STARTTLS).
    pub fn is_encrypted(&self) -> bool {
        self.encrypted
    }

    /// The selected folder's UIDVALIDITY.
    pub fn uidvalidity(&self) -> Option<u32> {
        self.uidvalidity
    }

    /// Sets the largest message [`fetch`](ImapClient::fetch) downloads (`max_message_size`,
    /// in bytes).
    pub fn set_max_message_size(&mut self, limit: u64) {
        self.message_max = limit;
    }

    /// CAPABILITY.
    async fn capability(&mut self) -> Result<(), ImapError> {
        let responses = self.run(Command::new("CAPABILITY")).await?;
        for r in responses {
            if let Response::Capability(caps) = r {
                self.capabilities = caps;
            }
        }
        Ok(())
    }

    /// `LIST "" "*"`: every mailbox.
    pub async fn list_folders(&mut self) -> Result<Vec<ListEntry>, ImapError> {
        let responses = self.run(Command::new("LIST \"\" \"*\"")).await?;
        Ok(responses
            .into_iter()
            .filter_map(|r| match r {
                Response::List(entry) => Some(entry),
                _ => None,
            })
            .collect())
    }

    /// Selects the configured folder, given with either separator (see [`folder::resolve`]):
    /// INBOX at once, any other after a LIST. Returns its UIDVALIDITY.
    pub async fn open_folder(&mut self, wanted: &str) -> Result<u32, ImapError> {
        let name = if wanted.eq_ignore_ascii_case("INBOX") {
            b"INBOX".to_vec()
        } else {
            let entries = self.list_folders().await?;
            folder::resolve(wanted, &entries)?
        };
        self.select(&name).await
    }

    /// SELECT: the folder's UIDVALIDITY; its EXISTS is kept.
    pub async fn select(&mut self, name: &[u8]) -> Result<u32, ImapError> {
        self.uidvalidity = None;
        let responses = self.run(Command::new("SELECT").string(name, false)).await?;
        for r in &responses {
            if let Response::State {
                code: Some(Code::UidValidity(n)),
                ..
            } = r
            {
                self.uidvalidity = Some(*n);
            }
        }
        match self.uidvalidity {
            Some(n) => Ok(n),
            None => Err(self.lost(format!(
                "SELECT {} gave no UIDVALIDITY",
                folder::display_name(name)
            ))),
        }
    }

    /// `UID FETCH 1:* (UID RFC822.SIZE)`: every message of the selected folder, oldest (lowest
    /// UID) first.
    pub async fn listing(&mut self) -> Result<Vec<Listed>, ImapError> {
        if self.exists == 0 {
            return Ok(Vec::new());
        }
        let responses = self
            .run(Command::new("UID FETCH 1:* (UID RFC822.SIZE)"))
            .await?;
        let mut listed: Vec<Listed> = responses
            .into_iter()
            .filter_map(|r| match r {
                Response::Fetch { data, .. } => Some(Listed {
                    uid: data.uid?,
                    size: data.size,
                }),
                _ => None,
            })
            .collect();
        listed.sort_by_key(|l| l.uid);
        listed.dedup_by_key(|l| l.uid);
        Ok(listed)
    }

    /// `UID FETCH uid BODY.PEEK[]`: the whole message as the server holds it, without setting
    /// `\Seen`, within the download deadline of the larger of `announced` (its RFC822.SIZE)
    /// and the octets received.
    ///
    /// A message announced larger than `max_message_size` is not asked for; one whose literal
    /// is larger is read to its end without being kept. Both give
    /// [`ImapError::MessageTooLarge`], and the session stays usable.
    pub async fn fetch(&mut self, uid: u32, announced: Option<u64>) -> Result<Vec<u8>, ImapError> {
        let limit = self.message_max;
        let too_large = |announced| ImapError::MessageTooLarge {
            uid,
            limit,
            announced,
        };
        if announced.is_some_and(|size| size > limit) {
            return Err(too_large(announced));
        }
        let text = format!("UID FETCH {uid} BODY.PEEK[]");
        self.conn.start_deadline(&text, announced.unwrap_or(0));
        let result = self.run_with(Command::new(&text), limit).await;
        self.conn.end_deadline();
        let mut body = None;
        for r in result? {
            if let Response::Fetch { data, .. } = r
                && data.uid.is_none_or(|u| u == uid)
                && let Some(found) = data.body
            {
                body = Some(found);
            }
        }
        match body {
            Some(Some(Literal::Kept(bytes))) => Ok(bytes),
            Some(Some(Literal::Dropped(size))) => Err(too_large(Some(size))),
            Some(None) | None => Err(ImapError::MessageGone(uid)),
        }
    }

    /// `UID STORE uid +FLAGS.SILENT (\Deleted)`: the server removes it at
    /// [`expunge`](ImapClient::expunge).
    pub async fn mark_deleted(&mut self, uid: u32) -> Result<(), ImapError> {
        self.run(Command::new(&format!(
            "UID STORE {uid} +FLAGS.SILENT (\\Deleted)"
        )))
        .await?;
        self.flagged.push(uid);
        Ok(())
    }

    /// Removes the messages flagged in this session: UID EXPUNGE with UIDPLUS. Without it,
    /// plain EXPUNGE would also remove what someone else flagged `\Deleted`; it is sent only
    /// when `UID SEARCH DELETED` finds nothing flagged but ours, else our messages wait
    /// (flagged, and flagged again by the next session) and a warning says why.
    pub async fn expunge(&mut self) -> Result<(), ImapError> {
        if self.flagged.is_empty() {
            return Ok(());
        }
        if self.capabilities.has("UIDPLUS") {
            for set in command::uid_sets(&self.flagged) {
                self.run(Command::new(&format!("UID EXPUNGE {set}")))
                    .await?;
            }
        } else {
            let responses = self.run(Command::new("UID SEARCH DELETED")).await?;
            let foreign = responses
                .iter()
                .filter_map(|r| match r {
                    Response::Search(uids) => Some(uids),
                    _ => None,
                })
                .flatten()
                .filter(|uid| !self.flagged.contains(uid))
                .count();
            if foreign > 0 {
                tracing::warn!(
                    account = %self.conn.account,
                    "not expunging: the server has no UIDPLUS, and {foreign} message(s) flagged \
                     \\Deleted by someone else would go too; the delivered messages stay flagged"
                );
                return Ok(());
            }
            self.run(Command::new("EXPUNGE")).await?;
        }
        self.flagged.clear();
        Ok(())
    }

    /// Expunges what this session flagged, then LOGOUT.
    pub async fn commit(mut self) -> Result<(), ImapError> {
        let expunged = self.expunge().await;
        self.logout().await;
        expunged
    }

    /// LOGOUT, errors ignored (nothing depends on it), and the connection closed.
    pub async fn logout(mut self) {
        if !self.conn.is_lost() {
            let tag = self.conn.tag();
            let sent = self
                .conn
                .send(&tag, &Command::new("LOGOUT"), false, &mut Vec::new())
                .await;
            // The server answers "* BYE" and then the tagged OK; wait for that (or the
            // connection's end) so that it sees a clean logout.
            if sent.is_ok() {
                while let Ok(response) = self.conn.read_response(LITERAL_MAX).await {
                    if matches!(response, Response::Tagged { .. }) {
                        break;
                    }
                }
            }
        }
        self.conn.shutdown().await;
    }

    /// Runs a command: the untagged responses, or [`ImapError::Refused`] on NO or BAD.
    async fn run(&mut self, command: Command) -> Result<Vec<Response>, ImapError> {
        self.run_with(command, LITERAL_MAX).await
    }

    /// [`run`](ImapClient::run), keeping literals of up to `literal_max` octets.
    async fn run_with(
        &mut self,
        command: Command,
        literal_max: u64,
    ) -> Result<Vec<Response>, ImapError> {
        let tag = self.conn.tag();
        let mut untagged = Vec::new();
        let literal_plus = self.capabilities.has("LITERAL+");
        let early = self
            .conn
            .send(&tag, &command, literal_plus, &mut untagged)
            .await?;
        let mut untagged = untagged
            .into_iter()
            .map(|r| self.note(r))
            .collect::<Result<Vec<_>, _>>()?;
        let tagged = match early {
            Some(tagged) => tagged,
            None => loop {
                match self.conn.read_response(literal_max).await? {
                    tagged @ Response::Tagged { .. } => break tagged,
                    Response::Continue(text) => {
                        return Err(self.lost(format!("unexpected continuation \"+ {text}\"")));
                    }
                    other => untagged.push(self.note(other)?),
                }
            },
        };
        let name = command
            .shown
            .split(' ')
            .next()
            .unwrap_or_default()
            .to_owned();
        let shown = if name == "LOGIN" { name } else { command.shown };
        self.finish(&tag, &shown, tagged, untagged)
    }

    /// The outcome of a command from its tagged response.
    fn finish(
        &mut self,
        tag: &str,
        shown: &str,
        tagged: Response,
        untagged: Vec<Response>,
    ) -> Result<Vec<Response>, ImapError> {
        let Response::Tagged {
            tag: got,
            status,
            code,
            text,
        } = &tagged
        else {
            return Err(self.lost(format!("not a tagged response: {tagged:?}")));
        };
        if got != tag {
            return Err(self.lost(format!("reply tagged {got}, expected {tag}")));
        }
        match status {
            Status::Ok => {
                let mut untagged = untagged;
                untagged.push(tagged);
                Ok(untagged)
            }
            Status::No | Status::Bad => {
                let code = match code {
                    Some(Code::Other(name)) => format!("[{name}] "),
                    _ => String::new(),
                };
                tracing::debug!(account = %self.conn.account, "refused: {shown}: {code}{text}");
                Err(ImapError::Refused {
                    command: shown.to_owned(),
                    text: format!("{code}{text}"),
                })
            }
        }
    }

    /// Takes note of an untagged response (EXISTS, CAPABILITY); BYE ends the session.
    fn note(&mut self, response: Response) -> Result<Response, ImapError> {
        match &response {
            Response::Exists(n) => self.exists = *n,
            Response::Expunge(_) => self.exists = self.exists.saturating_sub(1),
            Response::Capability(caps) => self.capabilities = caps.clone(),
            Response::Bye { text } => return self.conn.guard(Err(ImapError::Bye(text.clone()))),
            _ => {}
        }
        Ok(response)
    }

    /// A protocol error: the session is out of step and given up.
    fn lost(&mut self, why: String) -> ImapError {
        let _ = self.conn.guard::<()>(Err(ImapError::Protocol(why.clone())));
        ImapError::Protocol(why)
    }
}

/// The TLS handshake, bounded by the account's timeout.
async fn handshake(
    stream: Box<dyn Stream>,
    account: &AccountConfig,
    cfg: Arc<ClientConfig>,
) -> Result<tokio_rustls::client::TlsStream<Box<dyn Stream>>, ImapError> {
    let handshake = tls::connect_tls(stream, &account.host, cfg);
    match tokio::time::timeout(account.timeout, handshake).await {
        Ok(Ok(stream)) => Ok(stream),
        Ok(Err(e)) => Err(ImapError::Tls(e)),
        Err(_) => Err(ImapError::Timeout(account.timeout)),
    }
}

/// Refuses a credential that would break out of its command.
fn check_credential(value: &str, what: &'static str) -> Result<(), ImapError> {
    if value.bytes().any(|b| matches!(b, b'\r' | b'\n' | 0)) {
        return Err(ImapError::InvalidCredential(what));
    }
    Ok(())
}
