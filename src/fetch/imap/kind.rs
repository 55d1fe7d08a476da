//! What IMAP says about itself as a [`MailboxKind`]: its name, ports and trace word, the
//! account keys it has (folders, `\Seen`, IDLE; no APOP), its session ([`ImapSession`]) and
//! its `test-connection` steps (the folder EXAMINEd, read-only).

use crate::config::{AccountConfig, Password};
use crate::fetch::kind::{BoxFuture, DynMailbox, Facts, MailboxKind, SessionError, boxed};
use crate::fetch::mailbox::{FetchError, Upstream};
use crate::fetch::transport::Progress;
use crate::metrics::kind::of_transport;
use crate::probe::{Probed, Stage, Step, failure_words};
use crate::sasl::Method;
use crate::tls::TlsClient;

use super::session::ImapSession;
use super::{ImapClient, ImapError};

/// IMAP4rev1 (RFC 3501), `protocol: imap`.
pub struct ImapKind;

impl MailboxKind for ImapKind {
    fn facts(&self) -> &'static Facts {
        &Facts {
            name: "imap",
            trace_word: "IMAP",
            port: 143,
            tls_port: 993,
            folders: true,
            seen_flag: true,
            idle: true,
            apop: false,
        }
    }

    fn auth_failed(&self, method: String, text: String, temporary: bool) -> FetchError {
        FetchError::Imap(ImapError::AuthFailed {
            method,
            text,
            temporary,
        })
    }

    fn open<'a>(
        &'a self,
        upstream: &'a Upstream<'a>,
        token: Option<&'a Password>,
    ) -> BoxFuture<'a, Result<Box<dyn DynMailbox>, FetchError>> {
        boxed(ImapSession::open(upstream, token))
    }

    fn probe<'a>(
        &'a self,
        account: &'a AccountConfig,
        tls: Option<TlsClient>,
        token: Option<&'a Password>,
        progress: &'a mut Progress,
    ) -> BoxFuture<'a, Probed> {
        Box::pin(async move {
            let result = ImapClient::connect_observed(account, tls, token, progress).await;
            progress.mechanism = login_words(&result);
            match result {
                Ok(client) => Probed::looked(examine(client, &account.folder).await),
                Err(e) => Probed::failed(imap_failure(&e, account.oauth.is_some())),
            }
        })
    }

    fn capability_words(&self, capabilities: &[String], _: &AccountConfig) -> String {
        capabilities.join(" ")
    }
}

impl SessionError for ImapError {
    fn connection_lost(&self) -> bool {
        ImapError::connection_lost(self)
    }

    fn login_refused(&self) -> bool {
        matches!(
            self,
            ImapError::AuthFailed {
                temporary: false,
                ..
            }
        )
    }

    fn too_large(&self) -> bool {
        matches!(self, ImapError::MessageTooLarge { .. })
    }

    fn metrics_kind(&self) -> &'static str {
        match self {
            ImapError::Transport(e) => of_transport(e),
            ImapError::ConnectionClosed | ImapError::Bye(_) => "connect",
            ImapError::Tls(_) | ImapError::StarttlsNotOffered => "tls",
            ImapError::AuthFailed { .. }
            | ImapError::PlaintextRefused
            | ImapError::NoLoginMethod(_)
            | ImapError::Sasl(_)
            | ImapError::InvalidCredential(_) => "login",
            ImapError::Refused { .. }
            | ImapError::Protocol(_)
            | ImapError::ResponseTooLong { .. }
            | ImapError::MessageGone(_)
            | ImapError::Folder(_) => "protocol",
            ImapError::MessageTooLarge { .. } => "other",
        }
    }
}

/// How the session logged in, in IMAP's words: from the session, or from the refusal;
/// `None` after PREAUTH.
fn login_words(result: &Result<ImapClient, ImapError>) -> Option<String> {
    match result {
        Ok(client) => client.login_method().map(|method| match method {
            Method::Sasl(m) => format!("AUTHENTICATE {m}"),
            Method::Apop => "APOP".to_owned(),
            Method::Password => "LOGIN".to_owned(),
        }),
        Err(ImapError::AuthFailed { method, .. }) => Some(method.clone()),
        Err(_) => None,
    }
}

/// A failed IMAP session: the stage it failed at, and what to check.
fn imap_failure(e: &ImapError, oauth: bool) -> (Option<Stage>, String) {
    let stage = match e {
        ImapError::Tls(_) | ImapError::StarttlsNotOffered | ImapError::PlaintextRefused => {
            Some(Stage::Tls)
        }
        ImapError::AuthFailed { .. }
        | ImapError::NoLoginMethod(_)
        | ImapError::InvalidCredential(_) => Some(Stage::Authenticate),
        _ => None,
    };
    let transport = match e {
        ImapError::Transport(t) => Some(t),
        _ => None,
    };
    let auth_failed = matches!(e, ImapError::AuthFailed { .. });
    failure_words(e, stage, transport, auth_failed, oauth)
}

/// EXAMINE (never SELECT: nothing changes), then the sizes of what is there; then LOGOUT.
async fn examine(mut client: ImapClient, folder: &str) -> Step {
    let step = look(&mut client, folder).await;
    client.logout().await;
    step
}

/// What the folder holds.
async fn look(client: &mut ImapClient, folder: &str) -> Step {
    let count = match client.examine(folder).await {
        Ok(count) => count,
        Err(e) => return Step::failed("mailbox", e.to_string()),
    };
    match client.listing(false).await {
        Ok(listed) => {
            let size: u64 = listed.iter().filter_map(|l| l.size).sum();
            Step::ok(
                "mailbox",
                format!(
                    "folder {folder}: {count} message(s), {size} bytes in all (EXAMINE, read-only)"
                ),
            )
        }
        Err(e) => Step::failed("mailbox", format!("folder {folder}: listing: {e}")),
    }
}
