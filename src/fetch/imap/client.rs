//! The IMAP session once logged in (`client/login.rs` gets it there): the folder, the
//! listing, downloads, deletion, and running one command to its tagged reply. Every read and
//! write is bounded by the account's timeout (`conn.rs`); responses are parsed by
//! `protocol.rs`.

mod batch;
mod idle;
mod login;

pub use idle::Woken;

use super::ImapError;
use super::command::{self, Command};
use super::conn::Connection;
use super::folder;
use super::protocol::{Capabilities, Code, LITERAL_MAX, ListEntry, Literal, Response, Status};

/// One message of the selected folder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Listed {
    /// Its UID.
    pub uid: u32,
    /// RFC822.SIZE, in octets, if the server sent it.
    pub size: Option<u64>,
    /// Flagged `\Seen` (known only when the listing asked for FLAGS; false otherwise).
    pub seen: bool,
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
    /// Messages new to this session (`\Recent`), from the last RECENT.
    recent: u32,
    /// The largest message [`fetch`](ImapClient::fetch) keeps (`max_message_size`).
    message_max: u64,
    /// UIDs flagged `\Deleted` in this session, for UID EXPUNGE.
    flagged: Vec<u32>,
    /// Where [`mark_deleted`](ImapClient::mark_deleted) moves a message instead
    /// (`after_fetch: move:<folder>`), as the server spells the folder.
    move_to: Option<Vec<u8>>,
    /// The messages planned to be fetched next, and those fetched ahead (`batch.rs`).
    ahead: batch::Ahead,
    /// How the session logged in; `None` before login and after PREAUTH.
    method: Option<crate::sasl::Method>,
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

/// The largest piece of a message one `UID FETCH` asks for (4 MiB): a message arrives in
/// pieces of at most this size, so no single literal is larger.
pub const CHUNK: u64 = 4 * 1024 * 1024;

impl ImapClient {
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

    /// Messages that arrived since the last session saw the folder (RECENT at SELECT).
    pub fn recent(&self) -> u32 {
        self.recent
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
        let name = self.folder_name(wanted).await?;
        self.select(&name).await
    }

    /// From now on [`mark_deleted`](ImapClient::mark_deleted) moves messages to this folder
    /// (given with either separator; it must exist) instead of deleting them.
    pub async fn move_instead_of_delete(&mut self, wanted: &str) -> Result<(), ImapError> {
        self.move_to = Some(self.folder_name(wanted).await?);
        Ok(())
    }

    /// The server's name for the folder `wanted`: INBOX at once, any other after a LIST.
    async fn folder_name(&mut self, wanted: &str) -> Result<Vec<u8>, ImapError> {
        if wanted.eq_ignore_ascii_case("INBOX") {
            return Ok(b"INBOX".to_vec());
        }
        let entries = self.list_folders().await?;
        Ok(folder::resolve(wanted, &entries)?)
    }

    /// SELECT: the folder's UIDVALIDITY; its EXISTS is kept.
    pub async fn select(&mut self, name: &[u8]) -> Result<u32, ImapError> {
        self.open(name, "SELECT").await
    }

    /// EXAMINE the configured folder (given with either separator, see [`folder::resolve`]):
    /// read-only, so nothing about it changes (no `\Recent` taken, no flag set). Returns how
    /// many messages it holds; [`listing`](ImapClient::listing) works on it after.
    pub async fn examine(&mut self, wanted: &str) -> Result<u32, ImapError> {
        let name = self.folder_name(wanted).await?;
        self.open(&name, "EXAMINE").await?;
        Ok(self.exists)
    }

    /// SELECT or EXAMINE: the folder's UIDVALIDITY; its EXISTS is kept.
    async fn open(&mut self, name: &[u8], verb: &'static str) -> Result<u32, ImapError> {
        self.uidvalidity = None;
        let responses = self.run(Command::new(verb).string(name, false)).await?;
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
                "{verb} {} gave no UIDVALIDITY",
                folder::display_name(name)
            ))),
        }
    }

    /// `UID FETCH 1:* (UID RFC822.SIZE)`, with `FLAGS` when `flags` is true: every message
    /// of the selected folder, oldest (lowest UID) first.
    pub async fn listing(&mut self, flags: bool) -> Result<Vec<Listed>, ImapError> {
        if self.exists == 0 {
            return Ok(Vec::new());
        }
        let items = if flags {
            "UID FETCH 1:* (UID RFC822.SIZE FLAGS)"
        } else {
            "UID FETCH 1:* (UID RFC822.SIZE)"
        };
        let responses = self.run(Command::new(items)).await?;
        let mut listed: Vec<Listed> = responses
            .into_iter()
            .filter_map(|r| match r {
                Response::Fetch { data, .. } => Some(Listed {
                    uid: data.uid?,
                    size: data.size,
                    seen: data
                        .flags
                        .is_some_and(|f| f.iter().any(|f| f.eq_ignore_ascii_case("\\Seen"))),
                }),
                _ => None,
            })
            .collect();
        listed.sort_by_key(|l| l.uid);
        listed.dedup_by_key(|l| l.uid);
        Ok(listed)
    }

    /// `UID FETCH uid BODY.PEEK[]<offset.CHUNK>` until a piece comes back short: the whole
    /// message as the server holds it, without setting `\Seen`, in pieces of at most
    /// [`CHUNK`] octets (no single literal larger than that), each within the download
    /// deadline of its size.
    ///
    /// Planned messages (see [`plan`](ImapClient::plan)) come several in one command.
    ///
    /// A message announced larger than `max_message_size` is not asked for; one that turns
    /// out larger is not kept. Both give [`ImapError::MessageTooLarge`], and the session stays
    /// usable.
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
        let mut message = match self.fetched_ahead(uid).await? {
            Some(batch::Fetched::Whole(message)) => return Ok(message),
            Some(batch::Fetched::Start(piece)) => piece,
            Some(batch::Fetched::TooLarge(size)) => return Err(too_large(Some(size))),
            Some(batch::Fetched::Gone) => return Err(ImapError::MessageGone(uid)),
            None => Vec::new(),
        };
        loop {
            let offset = message.len() as u64;
            let text = format!("UID FETCH {uid} BODY.PEEK[]<{offset}.{CHUNK}>");
            let expected = announced.map_or(CHUNK, |a| a.saturating_sub(offset).min(CHUNK));
            self.conn.start_deadline(&text, expected);
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
            let piece = match body {
                Some(Some(Literal::Kept(bytes))) => bytes,
                Some(Some(Literal::Dropped(size))) => return Err(too_large(Some(offset + size))),
                // Past the end (a message of exactly n pieces): NIL or nothing.
                Some(None) | None if offset > 0 => Vec::new(),
                Some(None) | None => return Err(ImapError::MessageGone(uid)),
            };
            let last = (piece.len() as u64) < CHUNK;
            if offset + piece.len() as u64 > limit {
                return Err(too_large(Some(offset + piece.len() as u64)));
            }
            message.extend_from_slice(&piece);
            if last {
                return Ok(message);
            }
        }
    }

    /// `UID STORE uid +FLAGS.SILENT (\Deleted)`: the server removes it at
    /// [`expunge`](ImapClient::expunge). With a folder to move to: `UID MOVE` (RFC 6851)
    /// when offered, else `UID COPY` there and then the same as deleting.
    pub async fn mark_deleted(&mut self, uid: u32) -> Result<(), ImapError> {
        if let Some(target) = self.move_to.clone() {
            let moved = self.capabilities.has("MOVE");
            let verb = if moved { "MOVE" } else { "COPY" };
            let command = Command::new(&format!("UID {verb} {uid}")).string(&target, false);
            self.run(command).await?;
            if moved {
                return Ok(());
            }
        }
        self.run(Command::new(&format!(
            "UID STORE {uid} +FLAGS.SILENT (\\Deleted)"
        )))
        .await?;
        self.flagged.push(uid);
        Ok(())
    }

    /// [`mark_deleted`](ImapClient::mark_deleted) for many messages: one `UID STORE` per
    /// few hundred UIDs (as UID sets) instead of one per message; moved one by one with
    /// `after_fetch: move`. Returns the UIDs whose mark the server refused (they stay); an
    /// error only when the session is lost.
    pub async fn mark_deleted_all(&mut self, uids: &[u32]) -> Result<Vec<u32>, ImapError> {
        let mut refused = Vec::new();
        if self.move_to.is_some() {
            for &uid in uids {
                match self.mark_deleted(uid).await {
                    Ok(()) => {}
                    Err(e) if !e.connection_lost() => refused.push(uid),
                    Err(e) => return Err(e),
                }
            }
            return Ok(refused);
        }
        // A few hundred UIDs make one set well under UID_SET_MAX.
        for chunk in uids.chunks(256) {
            let mut stored = true;
            for set in command::uid_sets(chunk) {
                let text = format!("UID STORE {set} +FLAGS.SILENT (\\Deleted)");
                match self.run(Command::new(&text)).await {
                    Ok(_) => {}
                    Err(e) if !e.connection_lost() => {
                        tracing::warn!(account = %self.conn.account, "flagging for deletion refused: {e}");
                        stored = false;
                    }
                    Err(e) => return Err(e),
                }
            }
            if stored {
                self.flagged.extend_from_slice(chunk);
            } else {
                refused.extend_from_slice(chunk);
            }
        }
        Ok(refused)
    }

    /// `UID STORE uid +FLAGS.SILENT (\Seen)` (`after_fetch: seen`).
    pub async fn mark_seen(&mut self, uid: u32) -> Result<(), ImapError> {
        self.run(Command::new(&format!(
            "UID STORE {uid} +FLAGS.SILENT (\\Seen)"
        )))
        .await?;
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
            Response::Recent(n) => self.recent = *n,
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
