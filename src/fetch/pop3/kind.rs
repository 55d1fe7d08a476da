//! What POP3 says about itself as a [`MailboxKind`]: its name, ports and trace word, the
//! account keys it has no use for (folders, flags, IDLE), its session ([`Pop3Session`]) and
//! its `test-connection` steps (STAT, the capabilities with LOGIN-DELAY and EXPIRE
//! explained).

use crate::config::{AccountConfig, Password};
use crate::fetch::kind::{BoxFuture, DynMailbox, Facts, MailboxKind, SessionError, boxed};
use crate::fetch::mailbox::{FetchError, Upstream};
use crate::fetch::transport::Progress;
use crate::metrics::kind::of_transport;
use crate::probe::{Probed, Stage, Step, failure_words};
use crate::sasl::Method;
use crate::tls::TlsClient;

use super::session::Pop3Session;
use super::{Pop3Client, Pop3Error};

/// POP3 (RFC 1939), `protocol: pop3`.
pub struct Pop3Kind;

impl MailboxKind for Pop3Kind {
    fn facts(&self) -> &'static Facts {
        &Facts {
            name: "pop3",
            trace_word: "POP3",
            port: 110,
            tls_port: 995,
            folders: false,
            seen_flag: false,
            idle: false,
            apop: true,
        }
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
        boxed(Pop3Session::open(upstream, token))
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
            progress.mechanism = login_words(&result);
            match result {
                Ok(client) => Probed::looked(stat(client).await),
                Err(e) => Probed::failed(pop3_failure(&e, account.oauth.is_some())),
            }
        })
    }

    fn capability_words(&self, capabilities: &[String], account: &AccountConfig) -> String {
        pop3_capabilities(capabilities, account)
    }
}

impl SessionError for Pop3Error {
    fn connection_lost(&self) -> bool {
        Pop3Error::connection_lost(self)
    }

    fn login_refused(&self) -> bool {
        matches!(
            self,
            Pop3Error::AuthFailed {
                temporary: false,
                ..
            }
        )
    }

    fn too_large(&self) -> bool {
        matches!(self, Pop3Error::MessageTooLarge { .. })
    }

    fn metrics_kind(&self) -> &'static str {
        match self {
            Pop3Error::Transport(e) => of_transport(e),
            Pop3Error::ConnectionClosed => "connect",
            Pop3Error::Tls(_) | Pop3Error::StlsNotOffered => "tls",
            Pop3Error::AuthFailed { .. }
            | Pop3Error::PlaintextRefused
            | Pop3Error::ApopNotOffered
            | Pop3Error::NoLoginMethod(_)
            | Pop3Error::Sasl(_)
            | Pop3Error::InvalidCredential(_) => "login",
            Pop3Error::ServerError { .. }
            | Pop3Error::Protocol(_)
            | Pop3Error::LineTooLong { .. }
            | Pop3Error::ResponseTooLong { .. } => "protocol",
            Pop3Error::MessageTooLarge { .. } => "other",
        }
    }
}

/// How the session logged in, in POP3's words: from the session, or from the refusal.
fn login_words(result: &Result<Pop3Client, Pop3Error>) -> Option<String> {
    match result {
        Ok(client) => client.login_method().map(|method| match method {
            Method::Sasl(m) => format!("AUTH {m}"),
            Method::Apop => "APOP".to_owned(),
            Method::Password => "USER/PASS".to_owned(),
        }),
        Err(Pop3Error::AuthFailed { method, .. }) => Some(method.clone()),
        Err(_) => None,
    }
}

/// STAT, then QUIT: nothing was marked for deletion, so QUIT commits nothing.
async fn stat(mut client: Pop3Client) -> Step {
    let step = match client.stat().await {
        Ok((count, size)) => Step::ok(
            "mailbox",
            format!("{count} message(s), {size} bytes in all (STAT)"),
        ),
        Err(e) => Step::failed("mailbox", format!("STAT: {e}")),
    };
    let _ = client.quit().await;
    step
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
