//! What a kind of mailbox (POP3, IMAP) says about itself, in one place per kind: the
//! [`MailboxKind`] trait, implemented in `pop3/kind.rs` and `imap/kind.rs`. Its name in the
//! configuration, its default ports, the word of the `Received:` header, which account keys
//! apply to it, how a session is opened (a [`Mailbox`] behind [`DynMailbox`]) and what
//! `mailferry test-connection` does with it. [`Protocol::kind`](crate::config::Protocol::kind)
//! is the one list of the kinds.
//!
//! A new kind (JMAP, say) is a folder `fetch/jmap/` with its client, a session type that
//! implements [`Mailbox`], and a `kind.rs` implementing [`MailboxKind`] (and [`SessionError`]
//! for its error type); then one variant of [`Protocol`](crate::config::Protocol) with its
//! line in `Protocol::kind` and `Protocol::ALL`, and one variant of [`FetchError`] with its
//! line in [`FetchError::session_error`].

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use crate::config::{AccountConfig, Password, TlsMode};
use crate::probe::Probed;
use crate::tls::TlsClient;

use super::mailbox::{FetchError, Listed, Mailbox, Upstream};
use super::pop3::Expire;
use super::transport::Progress;

/// A future that a trait object can return.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What a kind of mailbox is, as plain facts.
#[derive(Debug, PartialEq, Eq)]
pub struct Facts {
    /// The `protocol:` of the configuration (`pop3`), also the scheme of the mailbox's id
    /// and the protocol word of the status page and of `test-connection`.
    pub name: &'static str,
    /// The `with` of mailferry's `Received:` header (RFC 5321 4.4, e.g. `POP3`).
    pub trace_word: &'static str,
    /// The port when the account sets none, without implicit TLS (`tls: none`, `starttls`).
    pub port: u16,
    /// The port when the account sets none, with implicit TLS (`tls: tls`).
    pub tls_port: u16,
    /// The mailbox has folders: the account may name one (`folder`, part of the mailbox's
    /// id), and move mail to another (`after_fetch: move:`).
    pub folders: bool,
    /// Messages carry a `\Seen` flag that `unseen_only` and `after_fetch: seen` go by.
    pub seen_flag: bool,
    /// The server may announce new mail while the client waits (`idle: true`; the wait is
    /// IMAP IDLE's, in `fetch/idle.rs`).
    pub idle: bool,
    /// The login may be APOP (`auth: apop`).
    pub apop: bool,
}

impl Facts {
    /// The port when the account sets none.
    pub fn default_port(&self, tls: TlsMode) -> u16 {
        if tls == TlsMode::Tls {
            self.tls_port
        } else {
            self.port
        }
    }
}

/// Everything the rest of mailferry asks of one kind of mailbox.
pub trait MailboxKind: Sync {
    /// Its name, ports and the account keys it has.
    fn facts(&self) -> &'static Facts;

    /// The kind's refused login: by the `method`, for the reason `text`; `temporary` when
    /// the next try may succeed. Said of a login without its OAuth2 token.
    fn auth_failed(&self, method: String, text: String, temporary: bool) -> FetchError;

    /// Connects, secures and logs in to the account's mailbox, ready to list it.
    fn open<'a>(
        &'a self,
        upstream: &'a Upstream<'a>,
        token: Option<&'a Password>,
    ) -> BoxFuture<'a, Result<Box<dyn DynMailbox>, FetchError>>;

    /// `test-connection`'s session: connects, secures and logs in noting how far it got in
    /// `progress` (its login method in the protocol's words too), then looks at the mailbox
    /// without changing anything.
    fn probe<'a>(
        &'a self,
        account: &'a AccountConfig,
        tls: Option<TlsClient>,
        token: Option<&'a Password>,
        progress: &'a mut Progress,
    ) -> BoxFuture<'a, Probed>;

    /// The server's capabilities (one per line or word, as [`Progress`] holds them) in
    /// `test-connection`'s words.
    fn capability_words(&self, capabilities: &[String], account: &AccountConfig) -> String;
}

/// What the pass and the metrics ask of a kind's session error (its variant of
/// [`FetchError`]).
pub trait SessionError: std::error::Error + Send + Sync {
    /// The session is gone (a new one may go on); otherwise only the command failed.
    fn connection_lost(&self) -> bool;

    /// The server refused the login for good (wrong credentials; not "try again later").
    fn login_refused(&self) -> bool;

    /// The message is larger than `max_message_size` (nothing of it was kept).
    fn too_large(&self) -> bool;

    /// The `kind` label of `mailferry_poll_errors_total`, one of
    /// [`ERROR_KINDS`](crate::metrics::names::ERROR_KINDS).
    fn metrics_kind(&self) -> &'static str;
}

/// A kind's session being opened, as [`MailboxKind::open`] returns it.
pub fn boxed<'a, M: Mailbox + 'static>(
    opening: impl Future<Output = Result<M, FetchError>> + Send + 'a,
) -> BoxFuture<'a, Result<Box<dyn DynMailbox>, FetchError>> {
    Box::pin(async move { Ok(Box::new(opening.await?) as Box<dyn DynMailbox>) })
}

/// A [`Mailbox`] behind a pointer, so that one session type holds any kind's: every
/// `Mailbox` is one. The methods are `Mailbox`'s, their futures boxed.
pub trait DynMailbox: Send {
    /// [`Mailbox::list`].
    fn list_boxed(&mut self) -> BoxFuture<'_, Result<Vec<Listed>, FetchError>>;
    /// [`Mailbox::plan`].
    fn plan_boxed(&mut self, upcoming: &[Listed]);
    /// [`Mailbox::fetch`].
    fn fetch_boxed<'a>(&'a mut self, msg: &'a Listed)
    -> BoxFuture<'a, Result<Vec<u8>, FetchError>>;
    /// [`Mailbox::settled`].
    fn settled_boxed<'a>(&'a mut self, msg: &'a Listed) -> BoxFuture<'a, Result<(), FetchError>>;
    /// [`Mailbox::login_delay`].
    fn login_delay_boxed(&self) -> Option<Duration>;
    /// [`Mailbox::expire`].
    fn expire_boxed(&self) -> Option<Expire>;
    /// [`Mailbox::delete`].
    fn delete_boxed<'a>(&'a mut self, msg: &'a Listed) -> BoxFuture<'a, Result<(), FetchError>>;
    /// [`Mailbox::commit`].
    fn commit_boxed(self: Box<Self>) -> BoxFuture<'static, Result<Vec<u32>, FetchError>>;
}

impl<M: Mailbox + 'static> DynMailbox for M {
    fn list_boxed(&mut self) -> BoxFuture<'_, Result<Vec<Listed>, FetchError>> {
        Box::pin(self.list())
    }

    fn plan_boxed(&mut self, upcoming: &[Listed]) {
        self.plan(upcoming)
    }

    fn fetch_boxed<'a>(
        &'a mut self,
        msg: &'a Listed,
    ) -> BoxFuture<'a, Result<Vec<u8>, FetchError>> {
        Box::pin(self.fetch(msg))
    }

    fn settled_boxed<'a>(&'a mut self, msg: &'a Listed) -> BoxFuture<'a, Result<(), FetchError>> {
        Box::pin(self.settled(msg))
    }

    fn login_delay_boxed(&self) -> Option<Duration> {
        self.login_delay()
    }

    fn expire_boxed(&self) -> Option<Expire> {
        self.expire()
    }

    fn delete_boxed<'a>(&'a mut self, msg: &'a Listed) -> BoxFuture<'a, Result<(), FetchError>> {
        Box::pin(self.delete(msg))
    }

    fn commit_boxed(self: Box<Self>) -> BoxFuture<'static, Result<Vec<u32>, FetchError>> {
        Box::pin((*self).commit())
    }
}

#[cfg(test)]
mod tests {
    use crate::config::{Protocol, TlsMode};

    #[test]
    fn every_kind_has_its_name_ports_and_trace_word() {
        let facts: Vec<_> = Protocol::ALL
            .iter()
            .map(|p| {
                let facts = p.kind().facts();
                (
                    facts.name,
                    facts.default_port(TlsMode::Starttls),
                    facts.default_port(TlsMode::Tls),
                    facts.trace_word,
                )
            })
            .collect();
        assert_eq!(
            facts,
            [("pop3", 110, 995, "POP3"), ("imap", 143, 993, "IMAP")]
        );
    }

    #[test]
    fn only_imap_has_folders_flags_and_idle_and_only_pop3_apop() {
        let keys = |p: Protocol| {
            let f = p.kind().facts();
            (f.folders, f.seen_flag, f.idle, f.apop)
        };
        assert_eq!(keys(Protocol::Pop3), (false, false, false, true));
        assert_eq!(keys(Protocol::Imap), (true, true, true, false));
    }
}
