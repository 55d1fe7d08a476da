//! The IMAP [`Mailbox`]: an [`ImapClient`] session with the account's folder selected;
//! deletions flagged (or moved) all together at the commit, kept mail flagged `\Seen` with
//! `after_fetch: seen`.

use crate::config::{AfterFetch, Password};
use crate::fetch::mailbox::{FetchError, Listed, Mailbox, Upstream};

use super::{ImapClient, ImapError};

/// An IMAP session on an account's folder.
pub struct ImapSession {
    client: ImapClient,
    /// `after_fetch: seen`: kept messages are flagged `\Seen`.
    flag_seen: bool,
    /// The listing asks for each message's flags (`unseen_only` or `after_fetch: seen`).
    want_flags: bool,
    /// UIDs to flag `\Deleted` (or move) at the commit, all in one command.
    to_delete: Vec<u32>,
}

impl ImapSession {
    /// Connects, secures, logs in and selects the account's folder.
    pub async fn open(
        upstream: &Upstream<'_>,
        token: Option<&Password>,
    ) -> Result<ImapSession, FetchError> {
        let account = upstream.account;
        let mut client = ImapClient::connect_with_token(account, None, token).await?;
        client.set_max_message_size(upstream.max_message_size);
        client.open_folder(&account.folder).await?;
        if let AfterFetch::Move(target) = &account.after_fetch {
            client.move_instead_of_delete(target).await?;
        }
        let flag_seen = account.after_fetch == AfterFetch::Seen;
        Ok(ImapSession {
            client,
            flag_seen,
            want_flags: flag_seen || account.unseen_only,
            to_delete: Vec::new(),
        })
    }
}

impl Mailbox for ImapSession {
    async fn list(&mut self) -> Result<Vec<Listed>, FetchError> {
        let Some(uidvalidity) = self.client.uidvalidity() else {
            return Err(ImapError::Protocol("no folder selected".into()).into());
        };
        Ok(self
            .client
            .listing(self.want_flags)
            .await?
            .into_iter()
            .map(|l| Listed {
                key: format!("{uidvalidity}:{}", l.uid),
                handle: l.uid,
                size: l.size,
                seen: l.seen,
            })
            .collect())
    }

    fn plan(&mut self, upcoming: &[Listed]) {
        self.client
            .plan(upcoming.iter().map(|l| (l.handle, l.size)))
    }

    async fn fetch(&mut self, msg: &Listed) -> Result<Vec<u8>, FetchError> {
        Ok(self.client.fetch(msg.handle, msg.size).await?)
    }

    async fn settled(&mut self, msg: &Listed) -> Result<(), FetchError> {
        // Flagged once: a message the listing shows \Seen is left alone.
        if self.flag_seen && !msg.seen {
            self.client.mark_seen(msg.handle).await?;
        }
        Ok(())
    }

    async fn delete(&mut self, msg: &Listed) -> Result<(), FetchError> {
        // Flagged at the commit, all together: the same for the server, which expunges only
        // then, and one round trip instead of one per message.
        self.to_delete.push(msg.handle);
        Ok(())
    }

    async fn commit(mut self) -> Result<Vec<u32>, FetchError> {
        let refused = self.client.mark_deleted_all(&self.to_delete).await?;
        self.client.commit().await?;
        Ok(refused)
    }
}
