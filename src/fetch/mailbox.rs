//! The seam between a poll pass and an upstream mailbox: [`Source`] opens sessions on one
//! account's mailbox, a [`Mailbox`] session lists, fetches, marks for deletion and commits.
//! The pass is written once against these traits; POP3 and IMAP implement them here (a
//! [`Session`] holds either [`Link`]), and tests use the in-memory mailbox of `pipeline`'s
//! tests.

use std::collections::BTreeSet;
use std::future::Future;
use std::sync::Mutex;
use std::time::Duration;

use crate::config::{AccountConfig, AfterFetch, FetchOrder, Password, Protocol};

use super::imap::{ImapClient, ImapError};
use super::pop3::{Pop3Client, Pop3Error};

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
        match self {
            FetchError::Pop3(e) => e.connection_lost(),
            FetchError::Imap(e) => e.connection_lost(),
            FetchError::LeaseLost => true,
        }
    }

    /// No OAuth2 access token for the login: said as the protocol's refused login (for good
    /// when the grant is refused, so that the account backs off; "try later" when the token
    /// endpoint could not be asked).
    pub fn no_token(protocol: Protocol, error: crate::oauth::OAuthError) -> FetchError {
        let (method, text, temporary) = (
            "OAuth2 token".to_owned(),
            error.to_string(),
            !error.is_refusal(),
        );
        match protocol {
            Protocol::Pop3 => FetchError::Pop3(Pop3Error::AuthFailed {
                method,
                text,
                temporary,
            }),
            Protocol::Imap => FetchError::Imap(ImapError::AuthFailed {
                method,
                text,
                temporary,
            }),
        }
    }

    /// Whether the server refused the login for good (wrong credentials; not `[IN-USE]` or
    /// another "try again later", and not a network failure): the poller backs off.
    pub fn login_refused(&self) -> bool {
        matches!(
            self,
            FetchError::Pop3(Pop3Error::AuthFailed {
                temporary: false,
                ..
            }) | FetchError::Imap(ImapError::AuthFailed {
                temporary: false,
                ..
            })
        )
    }

    /// Whether the message is larger than `max_message_size` (nothing of it was kept).
    pub fn too_large(&self) -> bool {
        matches!(
            self,
            FetchError::Pop3(Pop3Error::MessageTooLarge { .. })
                | FetchError::Imap(ImapError::MessageTooLarge { .. })
        )
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

/// Accounts whose POP3 server broke a pipelined response in this process: their sessions
/// wait for each reply from then on (a server may advertise PIPELINING and not keep to it;
/// trying again every pass would cost an attempt of some message each time).
static LOCK_STEP: Mutex<BTreeSet<String>> = Mutex::new(BTreeSet::new());

/// `MAILFERRY_PIPELINING=off` turns POP3 pipelining off for every account (to compare, or
/// to rule it out when a server misbehaves).
fn pipelining_allowed(account: &str) -> bool {
    if std::env::var("MAILFERRY_PIPELINING").is_ok_and(|v| v == "off") {
        return false;
    }
    let lock_step = LOCK_STEP.lock().unwrap_or_else(|p| p.into_inner());
    !lock_step.contains(account)
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

/// A session on a real upstream mailbox: the protocol's client, and the account's
/// `fetch_order` and what it does with kept mail.
pub struct Session {
    /// The account's name, for [`LOCK_STEP`].
    account: String,
    link: Link,
    order: FetchOrder,
    /// `after_fetch: seen`: kept messages are flagged `\Seen`.
    flag_seen: bool,
    /// The listing asks for each message's flags (`unseen_only` or `after_fetch: seen`).
    want_flags: bool,
    /// IMAP: UIDs to flag `\Deleted` (or move) at the commit, all in one command.
    to_delete: Vec<u32>,
}

/// The protocol client of a [`Session`].
pub enum Link {
    /// POP3.
    Pop3(Pop3Client),
    /// IMAP, with the account's folder selected.
    Imap(ImapClient),
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
        let link = match self.account.protocol {
            Protocol::Pop3 => {
                let mut client = Pop3Client::connect_with_token(self.account, None, token).await?;
                client.set_max_message_size(self.max_message_size);
                if client.pipelining() && !pipelining_allowed(&self.account.name) {
                    client.set_pipelining(false);
                }
                Link::Pop3(client)
            }
            Protocol::Imap => {
                let mut client = ImapClient::connect_with_token(self.account, None, token).await?;
                client.set_max_message_size(self.max_message_size);
                client.open_folder(&self.account.folder).await?;
                if let AfterFetch::Move(target) = &self.account.after_fetch {
                    client.move_instead_of_delete(target).await?;
                }
                Link::Imap(client)
            }
        };
        let flag_seen = self.account.after_fetch == AfterFetch::Seen;
        Ok(Session {
            account: self.account.name.clone(),
            link,
            order: self.account.fetch_order,
            flag_seen,
            want_flags: flag_seen || self.account.unseen_only,
            to_delete: Vec::new(),
        })
    }
}

impl Mailbox for Session {
    async fn list(&mut self) -> Result<Vec<Listed>, FetchError> {
        // Both clients list the oldest first.
        let mut listing: Vec<Listed> = match &mut self.link {
            Link::Pop3(client) => client
                .listing()
                .await?
                .into_iter()
                .map(|l| Listed {
                    key: l.uid,
                    handle: l.number,
                    size: l.size,
                    seen: false,
                })
                .collect(),
            Link::Imap(client) => {
                let Some(uidvalidity) = client.uidvalidity() else {
                    return Err(ImapError::Protocol("no folder selected".into()).into());
                };
                client
                    .listing(self.want_flags)
                    .await?
                    .into_iter()
                    .map(|l| Listed {
                        key: format!("{uidvalidity}:{}", l.uid),
                        handle: l.uid,
                        size: l.size,
                        seen: l.seen,
                    })
                    .collect()
            }
        };
        if self.order == FetchOrder::Newest {
            listing.reverse();
        }
        Ok(listing)
    }

    fn plan(&mut self, upcoming: &[Listed]) {
        match &mut self.link {
            Link::Pop3(client) => client.plan(upcoming.iter().map(|l| l.handle)),
            Link::Imap(client) => client.plan(upcoming.iter().map(|l| (l.handle, l.size))),
        }
    }

    async fn fetch(&mut self, msg: &Listed) -> Result<Vec<u8>, FetchError> {
        match &mut self.link {
            Link::Pop3(client) => {
                let result = client.retr(msg.handle).await;
                if result.is_err() && client.pipelining_failed() {
                    tracing::warn!(
                        account = %self.account,
                        "a pipelined RETR failed: this account's sessions wait for each reply from now on"
                    );
                    let mut lock_step = LOCK_STEP.lock().unwrap_or_else(|p| p.into_inner());
                    lock_step.insert(self.account.clone());
                }
                Ok(result?)
            }
            Link::Imap(client) => Ok(client.fetch(msg.handle, msg.size).await?),
        }
    }

    fn login_delay(&self) -> Option<Duration> {
        match &self.link {
            Link::Pop3(client) => (client.capabilities())
                .and_then(|c| c.login_delay)
                .map(Duration::from_secs),
            Link::Imap(_) => None,
        }
    }

    fn expire(&self) -> Option<crate::fetch::pop3::Expire> {
        match &self.link {
            Link::Pop3(client) => client.capabilities().and_then(|c| c.expire),
            Link::Imap(_) => None,
        }
    }

    async fn settled(&mut self, msg: &Listed) -> Result<(), FetchError> {
        match &mut self.link {
            // Flagged once: a message the listing shows \Seen is left alone.
            Link::Imap(client) if self.flag_seen && !msg.seen => {
                Ok(client.mark_seen(msg.handle).await?)
            }
            _ => Ok(()),
        }
    }

    async fn delete(&mut self, msg: &Listed) -> Result<(), FetchError> {
        match &mut self.link {
            Link::Pop3(client) => Ok(client.dele_pipelined(msg.handle).await?),
            // Flagged at the commit, all together: the same for the server, which
            // expunges only then, and one round trip instead of one per message.
            Link::Imap(_) => {
                self.to_delete.push(msg.handle);
                Ok(())
            }
        }
    }

    async fn commit(self) -> Result<Vec<u32>, FetchError> {
        match self.link {
            Link::Pop3(client) => Ok(client.quit_reporting().await?),
            Link::Imap(mut client) => {
                let refused = client.mark_deleted_all(&self.to_delete).await?;
                client.commit().await?;
                Ok(refused)
            }
        }
    }
}
