//! The seam between a poll pass and an upstream mailbox: [`Source`] opens sessions on one
//! account's mailbox, a [`Mailbox`] session lists, fetches, marks for deletion and commits.
//! The pass is written once against these traits; each kind of mailbox (POP3, IMAP) has its
//! own session type behind [`Session`] (see [`super::kind`]), and tests use the in-memory
//! mailbox of `pipeline`'s tests.

use std::future::Future;
use std::time::Duration;

use crate::config::{AccountConfig, FetchOrder, Password, Protocol};

use super::imap::ImapError;
use super::kind::{DynMailbox, SessionError};
use super::pop3::Pop3Error;

/// A message as its mailbox lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    /// What identifies the message in this mailbox across sessions, the state store's key:
    /// the POP3 UIDL; for IMAP, `<UIDVALIDITY>:<UID>` (a new UIDVALIDITY makes new keys).
    pub key: String,
    /// The session's handle for it: the POP3 message number, the IMAP UID.
    pub handle: u32,
    /// The size the server announced, in octets, if it did.
    pub size: Option<u64>,
    /// Flagged `\Seen` upstream (IMAP, asked only for `unseen_only` or `after_fetch: seen`;
    /// always false otherwise).
    pub seen: bool,
}

/// What went wrong talking to an upstream mailbox.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// A POP3 session failed.
    // The messages name the cause, so it is not also a `source()` (errors once).
    #[error("POP3: {0}")]
    Pop3(Pop3Error),
    /// An IMAP session failed.
    #[error("IMAP: {0}")]
    Imap(ImapError),
    /// The account's lease was lost before the commit: the session was dropped without
    /// QUIT or EXPUNGE, so nothing was deleted (another instance owns the account now).
    #[error("the lease on the account was lost: the session ends without deleting anything")]
    LeaseLost,
}

impl From<Pop3Error> for FetchError {
    fn from(e: Pop3Error) -> FetchError {
        FetchError::Pop3(e)
    }
}

impl From<ImapError> for FetchError {
    fn from(e: ImapError) -> FetchError {
        FetchError::Imap(e)
    }
}

impl FetchError {
    /// Whether the session is gone (a new one may go on); otherwise only the command failed.
    pub fn connection_lost(&self) -> bool {
        self.session_error().is_none_or(|e| e.connection_lost())
    }

    /// The error of the kind's session; `None` for [`FetchError::LeaseLost`].
    pub fn session_error(&self) -> Option<&dyn SessionError> {
        match self {
            FetchError::Pop3(e) => Some(e),
            FetchError::Imap(e) => Some(e),
            FetchError::LeaseLost => None,
        }
    }

    /// No OAuth2 access token for the login: said as the protocol's refused login (for good
    /// when the grant is refused, so that the account backs off; "try later" when the token
    /// endpoint could not be asked).
    pub fn no_token(protocol: Protocol, error: crate::oauth::OAuthError) -> FetchError {
        protocol.kind().auth_failed(
            "OAuth2 token".to_owned(),
            error.to_string(),
            !error.is_refusal(),
        )
    }

    /// Whether the server refused the login for good (wrong credentials; not `[IN-USE]` or
    /// another "try again later", and not a network failure): the poller backs off.
    pub fn login_refused(&self) -> bool {
        self.session_error().is_some_and(|e| e.login_refused())
    }

    /// Whether the message is larger than `max_message_size` (nothing of it was kept).
    pub fn too_large(&self) -> bool {
        self.session_error().is_some_and(|e| e.too_large())
    }
}

/// One session on an upstream mailbox.
pub trait Mailbox: Send {
    /// Every message in the mailbox, in the order to work through them.
    fn list(&mut self) -> impl Future<Output = Result<Vec<Listed>, FetchError>> + Send;

    /// The messages the pass will [`fetch`](Mailbox::fetch) next, in that order: a session
    /// may ask for them ahead (POP3 PIPELINING, IMAP UID ranges) so that their download
    /// overlaps the delivery of the ones before. A hint: `fetch` still names each message,
    /// and one planned but never fetched costs only its download. Ignored by default.
    fn plan(&mut self, upcoming: &[Listed]) {
        let _ = upcoming;
    }

    /// The whole message, as the server holds it (line ends as sent).
    fn fetch(&mut self, msg: &Listed) -> impl Future<Output = Result<Vec<u8>, FetchError>> + Send;

    /// Called for a settled message that retention keeps upstream for now, each pass: what
    /// the account does with kept mail (IMAP `after_fetch: seen` flags it `\Seen`). Nothing
    /// by default.
    fn settled(&mut self, msg: &Listed) -> impl Future<Output = Result<(), FetchError>> + Send {
        let _ = msg;
        async { Ok(()) }
    }

    /// The shortest time the server allows between two logins (POP3 `LOGIN-DELAY`), if it
    /// said.
    fn login_delay(&self) -> Option<Duration> {
        None
    }

    /// Whether the server deletes downloaded mail on its own (POP3 `EXPIRE`), if it said.
    fn expire(&self) -> Option<crate::fetch::pop3::Expire> {
        None
    }

    /// Marks the message for deletion; done only by [`commit`](Mailbox::commit). An error
    /// is a refusal known at once; a session may also send the mark without waiting
    /// (POP3 PIPELINING) and report a refusal at the commit.
    fn delete(&mut self, msg: &Listed) -> impl Future<Output = Result<(), FetchError>> + Send;

    /// Ends the session, committing the deletions (POP3 QUIT; IMAP UID EXPUNGE and LOGOUT).
    /// Returns the handles of the messages marked for deletion whose mark the server
    /// refused after [`delete`](Mailbox::delete) returned: they stay upstream.
    fn commit(self) -> impl Future<Output = Result<Vec<u32>, FetchError>> + Send;
}

/// Opens sessions on one account's mailbox.
pub trait Source: Sync {
    /// The session type.
    type Session: Mailbox;

    /// Connects, secures and logs in.
    fn open(&self) -> impl Future<Output = Result<Self::Session, FetchError>> + Send;
}

/// The real upstream mailbox of an account, by its `protocol`.
pub struct Upstream<'a> {
    /// The account.
    pub account: &'a AccountConfig,
    /// `max_message_size`: larger messages are not downloaded.
    pub max_message_size: u64,
    /// The account's OAuth2 tokens, when it has `oauth:`.
    pub token: Option<&'a crate::oauth::TokenSource>,
}

/// A session on a real upstream mailbox: its kind's session, and the account's
/// `fetch_order`.
pub struct Session {
    /// The session of the account's kind ([`MailboxKind::open`](super::kind::MailboxKind::open)).
    inner: Box<dyn DynMailbox>,
    order: FetchOrder,
}

impl Source for Upstream<'_> {
    type Session = Session;

    async fn open(&self) -> Result<Session, FetchError> {
        let token = match self.token {
            Some(source) => Some(
                source
                    .access_token()
                    .await
                    .map_err(|e| FetchError::no_token(self.account.protocol, e))?,
            ),
            None => None,
        };
        let opened = self.open_with(token.as_ref()).await;
        if let (Some(source), Err(e)) = (self.token, &opened)
            && e.login_refused()
        {
            // Revoked before its time, perhaps: the next login asks for a new one.
            source.forget().await;
        }
        opened
    }
}

impl Upstream<'_> {
    async fn open_with(&self, token: Option<&Password>) -> Result<Session, FetchError> {
        let inner = self.account.protocol.kind().open(self, token).await?;
        Ok(Session {
            inner,
            order: self.account.fetch_order,
        })
    }
}

impl Mailbox for Session {
    async fn list(&mut self) -> Result<Vec<Listed>, FetchError> {
        // Every kind lists the oldest first.
        let mut listing = self.inner.list_boxed().await?;
        if self.order == FetchOrder::Newest {
            listing.reverse();
        }
        Ok(listing)
    }

    fn plan(&mut self, upcoming: &[Listed]) {
        self.inner.plan_boxed(upcoming)
    }

    async fn fetch(&mut self, msg: &Listed) -> Result<Vec<u8>, FetchError> {
        self.inner.fetch_boxed(msg).await
    }

    fn login_delay(&self) -> Option<Duration> {
        self.inner.login_delay_boxed()
    }

    fn expire(&self) -> Option<crate::fetch::pop3::Expire> {
        self.inner.expire_boxed()
    }

    async fn settled(&mut self, msg: &Listed) -> Result<(), FetchError> {
        self.inner.settled_boxed(msg).await
    }

    async fn delete(&mut self, msg: &Listed) -> Result<(), FetchError> {
        self.inner.delete_boxed(msg).await
    }

    async fn commit(self) -> Result<Vec<u32>, FetchError> {
        self.inner.commit_boxed().await
    }
}
