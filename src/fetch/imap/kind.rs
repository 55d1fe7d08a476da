//! What IMAP says about itself as a [`MailboxKind`]: its name, ports and trace word, the
//! account keys it has (folders, `\Seen`, IDLE; no APOP), its session ([`ImapSession`]) and
//! its `test-connection` steps (the folder EXAMINEd, read-only).

use crate::config::{AccountConfig, Password};
use crate::fetch::kind::{BoxFuture, DynMailbox, MailboxKind};
use crate::fetch::mailbox::{FetchError, Upstream};
use crate::fetch::transport::Progress;
use crate::probe::{Probed, Stage, Step, failure_words};
use crate::sasl::Method;
use crate::tls::TlsClient;

use super::session::ImapSession;
use super::{ImapClient, ImapError};

/// IMAP4rev1 (RFC 3501), `protocol: imap`.
pub struct ImapKind;

impl MailboxKind for ImapKind {
    fn name(&self) -> &'static str {
        "imap"
    }

    fn trace_word(&self) -> &'static str {
        "IMAP"
    }

    fn default_port(&self, implicit_tls: bool) -> u16 {
        if implicit_tls { 993 } else { 143 }
    }

    fn folders(&self) -> bool {
        true
    }

    fn seen_flag(&self) -> bool {
        true
    }

    fn idle(&self) -> bool {
        true
    }

    fn apop(&self) -> bool {
        false
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
        Box::pin(async move {
            let session = ImapSession::open(upstream, token).await?;
            Ok(Box::new(session) as Box<dyn DynMailbox>)
        })
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
            progress.mechanism = match &result {
                Ok(client) => client.login_method().map(method_words),
                Err(ImapError::AuthFailed { method, .. }) => Some(method.clone()),
                Err(_) => None,
            };
            let mut client = match result {
                Ok(client) => client,
                Err(e) => {
                    return Probed {
                        failure: Some(imap_failure(&e, account.oauth.is_some())),
                        mailbox: Step::skipped("mailbox"),
                    };
                }
            };
            let mailbox = examine(&mut client, &account.folder).await;
            client.logout().await;
            Probed {
                failure: None,
                mailbox,
            }
        })
    }

    fn capability_words(&self, capabilities: &[String], _: &AccountConfig) -> String {
        capabilities.join(" ")
    }
}

/// How the session logged in, in IMAP's words.
fn method_words(method: Method) -> String {
    match method {
        Method::Sasl(m) => format!("AUTHENTICATE {m}"),
        Method::Apop => "APOP".to_owned(),
        Method::Password => "LOGIN".to_owned(),
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

/// EXAMINE (never SELECT: nothing changes), then the sizes of what is there.
async fn examine(client: &mut ImapClient, folder: &str) -> Step {
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
