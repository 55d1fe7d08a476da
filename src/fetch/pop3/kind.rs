//! What POP3 says about itself as a [`MailboxKind`]: its name, ports and trace word, the
//! account keys it has no use for (folders, flags, IDLE), its session ([`Pop3Session`]) and
//! its `test-connection` steps (STAT, the capabilities with LOGIN-DELAY and EXPIRE
//! explained).

use crate::config::{AccountConfig, Password};
use crate::fetch::kind::{BoxFuture, DynMailbox, MailboxKind};
use crate::fetch::mailbox::{FetchError, Upstream};
use crate::fetch::transport::Progress;
use crate::probe::{Probed, Stage, Step, failure_words};
use crate::sasl::Method;
use crate::tls::TlsClient;

use super::session::Pop3Session;
use super::{Pop3Client, Pop3Error};

/// POP3 (RFC 1939), `protocol: pop3`.
pub struct Pop3Kind;

impl MailboxKind for Pop3Kind {
    fn name(&self) -> &'static str {
        "pop3"
    }

    fn trace_word(&self) -> &'static str {
        "POP3"
    }

    fn default_port(&self, implicit_tls: bool) -> u16 {
        if implicit_tls { 995 } else { 110 }
    }

    fn folders(&self) -> bool {
        false
    }

    fn seen_flag(&self) -> bool {
        false
    }

    fn idle(&self) -> bool {
        false
    }

    fn apop(&self) -> bool {
        true
    }

    fn auth_failed(&self, method: String, text: String, temporary: bool) -> FetchError {
        FetchError::Pop3(Pop3Error::AuthFailed {
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
            let session = Pop3Session::open(upstream, token).await?;
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
            let result = Pop3Client::connect_observed(account, tls, token, progress).await;
            progress.mechanism = match &result {
                Ok(client) => client.login_method().map(method_words),
                Err(Pop3Error::AuthFailed { method, .. }) => Some(method.clone()),
                Err(_) => None,
            };
            let mut client = match result {
                Ok(client) => client,
                Err(e) => {
                    return Probed {
                        failure: Some(pop3_failure(&e, account.oauth.is_some())),
                        mailbox: Step::skipped("mailbox"),
                    };
                }
            };
            let mailbox = match client.stat().await {
                Ok((count, size)) => Step::ok(
                    "mailbox",
                    format!("{count} message(s), {size} bytes in all (STAT)"),
                ),
                Err(e) => Step::failed("mailbox", format!("STAT: {e}")),
            };
            // Nothing was marked for deletion: QUIT commits nothing.
            let _ = client.quit().await;
            Probed {
                failure: None,
                mailbox,
            }
        })
    }

    fn capability_words(&self, capabilities: &[String], account: &AccountConfig) -> String {
        pop3_capabilities(capabilities, account)
    }
}

/// How the session logged in, in POP3's words.
fn method_words(method: Method) -> String {
    match method {
        Method::Sasl(m) => format!("AUTH {m}"),
        Method::Apop => "APOP".to_owned(),
        Method::Password => "USER/PASS".to_owned(),
    }
}

/// A failed POP3 session: the stage it failed at, and what to check.
pub(crate) fn pop3_failure(e: &Pop3Error, oauth: bool) -> (Option<Stage>, String) {
    let stage = match e {
        Pop3Error::Tls(_) | Pop3Error::StlsNotOffered | Pop3Error::PlaintextRefused => {
            Some(Stage::Tls)
        }
        Pop3Error::AuthFailed { .. }
        | Pop3Error::ApopNotOffered
        | Pop3Error::InvalidCredential(_) => Some(Stage::Authenticate),
        _ => None,
    };
    let transport = match e {
        Pop3Error::Transport(t) => Some(t),
        _ => None,
    };
    let auth_failed = matches!(e, Pop3Error::AuthFailed { .. });
    failure_words(e, stage, transport, auth_failed, oauth)
}

/// The POP3 capability lines, with LOGIN-DELAY and EXPIRE explained.
pub(crate) fn pop3_capabilities(lines: &[String], account: &AccountConfig) -> String {
    let mut out = lines.join(", ");
    for line in lines {
        let mut words = line.split_ascii_whitespace();
        let name = words.next().unwrap_or_default().to_ascii_uppercase();
        let value = words.next().unwrap_or_default();
        if name == "LOGIN-DELAY" {
            let secs: u64 = value.parse().unwrap_or(0);
            let interval = account.poll_interval.as_secs();
            out.push_str(&format!(
                "; LOGIN-DELAY {secs}s: the poll interval honours it (a pass every {}s)",
                interval.max(secs)
            ));
        } else if name == "EXPIRE" {
            let words = match value.to_ascii_uppercase().as_str() {
                "NEVER" => "the server never deletes mail on its own".to_owned(),
                "0" => "the server deletes every message once it was downloaded, whatever retention says".to_owned(),
                days => format!("the server deletes messages {days} day(s) after they were downloaded"),
            };
            out.push_str(&format!("; EXPIRE {value}: {words}"));
        }
    }
    out
}
