//! `mailferry test-connection`: for each account, every step of the way to its mailbox —
//! resolve, connect (through the proxy), TLS, capabilities, authenticate, and what the
//! mailbox holds (POP3 STAT; IMAP EXAMINE, read-only) — then the relay (`relay.rs`). Each
//! step says in words what it found or what is wrong. Nothing is downloaded, flagged or
//! deleted. The steps are the existing clients' own (`connect_observed` notes how far a
//! session got), each kind's in its `MailboxKind::probe` (`fetch/pop3/kind.rs`,
//! `fetch/imap/kind.rs`); `report.rs` holds the report and its text and JSON forms.

mod relay;
mod report;

use std::path::Path;
use std::sync::Arc;

pub use report::{Report, Section, Status, Step};

use crate::config::{AccountConfig, Config, TlsMode, TlsOptions};
use crate::fetch::{Progress, TransportError};
use crate::oauth::{OAuthError, TokenSource};
use crate::tls::{PeerTls, TlsClient};

/// Tests every account (or the one named) and the relay, the accounts concurrently.
pub async fn run(config: Arc<Config>, only: Option<&str>) -> Report {
    let mut tasks = tokio::task::JoinSet::new();
    for (index, account) in config.accounts.iter().enumerate() {
        if only.is_some_and(|name| name != account.name) {
            continue;
        }
        let config = config.clone();
        tasks.spawn(async move {
            let account = &config.accounts[index];
            (index, test_account(account, &config.state_dir).await)
        });
    }
    let relay = relay::test_relay(&config).await;
    let mut sections = Vec::new();
    while let Some(done) = tasks.join_next().await {
        match done {
            Ok(section) => sections.push(section),
            Err(e) => tracing::error!("a test-connection task failed: {e}"),
        }
    }
    sections.sort_by_key(|(index, _)| *index);
    let mut sections: Vec<Section> = sections.into_iter().map(|(_, s)| s).collect();
    sections.push(relay);
    Report { sections }
}

/// Every step of one account; an account with `oauth:` first gets its access token (from
/// the refresh token kept under `state_dir`, saving a rotated one as the daemon would).
pub async fn test_account(account: &AccountConfig, state_dir: &Path) -> Section {
    let kind = account.protocol.kind();
    let mut target = format!(
        "{} {}:{} as {}",
        kind.facts().name,
        account.host,
        account.port,
        account.username
    );
    if let Some(proxy) = &account.proxy {
        target.push_str(&format!(" through the proxy {proxy}"));
    }
    let mut section = Section {
        kind: "account",
        name: account.name.clone(),
        target,
        steps: Vec::new(),
    };
    const LATER: [&str; 5] = ["connect", "tls", "capabilities", "authenticate", "mailbox"];
    match resolve(account).await {
        Ok(detail) => section.steps.push(Step::ok("resolve", detail)),
        Err(why) => {
            section.steps.push(Step::failed("resolve", why));
            section.steps.extend(LATER.iter().map(|s| Step::skipped(s)));
            return section;
        }
    }
    let tls = match account.tls {
        TlsMode::None => None,
        _ => match TlsClient::new(&account.tls_options, &account.host) {
            Ok(tls) => Some(tls),
            Err(e) => {
                section.steps.push(Step::skipped("connect"));
                section.steps.push(Step::failed("tls", e.to_string()));
                section
                    .steps
                    .extend(LATER[2..].iter().map(|s| Step::skipped(s)));
                return section;
            }
        },
    };
    // Without a token the session still goes as far as the login, so that connect, TLS
    // and capabilities are tested too; the login then fails with the token's reason.
    let (token, token_error) = match TokenSource::new(account, state_dir) {
        None => (None, None),
        Some(source) => match source.access_token().await {
            Ok(token) => (Some(token), None),
            Err(e) => (None, Some(token_words(&e))),
        },
    };
    let token = token.as_ref();
    let mut progress = Progress::default();
    let probed = kind.probe(account, tls, token, &mut progress).await;
    let failure = with_token_error(probed.failure, token_error);
    section
        .steps
        .extend(session_steps(account, &progress, failure));
    section.steps.push(probed.mailbox);
    section
}

/// What a kind's session found for `test-connection`
/// ([`MailboxKind::probe`](crate::fetch::kind::MailboxKind::probe)).
pub struct Probed {
    /// Why the session failed, if it did: the stage when the error tells it (otherwise how
    /// far the session got decides), and the words.
    pub failure: Option<(Option<Stage>, String)>,
    /// The `mailbox` step: what the mailbox holds, looked at without changing anything
    /// (skipped when the session failed).
    pub mailbox: Step,
}

impl Probed {
    /// The session failed (`failure`, as [`failure_words`] says it): the mailbox is not looked at.
    pub(crate) fn failed(failure: (Option<Stage>, String)) -> Probed {
        Probed {
            failure: Some(failure),
            mailbox: Step::skipped("mailbox"),
        }
    }

    /// The session worked; `mailbox` is what the mailbox holds.
    pub(crate) fn looked(mailbox: Step) -> Probed {
        Probed {
            failure: None,
            mailbox,
        }
    }
}

/// The host's addresses, or that the proxy resolves it.
async fn resolve(account: &AccountConfig) -> Result<String, String> {
    let host = account.host.trim_start_matches('[').trim_end_matches(']');
    // Both kinds of proxy are given the name (SOCKS5h, CONNECT host:port).
    if let Some(proxy) = &account.proxy {
        return Ok(format!("{host} is resolved by the proxy {proxy}"));
    }
    resolve_host(host, account.port, account.timeout).await
}

/// `host -> addresses`, within `timeout`.
pub(crate) async fn resolve_host(
    host: &str,
    port: u16,
    timeout: std::time::Duration,
) -> Result<String, String> {
    if host.parse::<std::net::IpAddr>().is_ok() {
        return Ok(format!("{host} is an IP address"));
    }
    match tokio::time::timeout(timeout, tokio::net::lookup_host((host, port))).await {
        Ok(Ok(addrs)) => {
            let mut ips: Vec<String> = addrs.map(|a| a.ip().to_string()).collect();
            ips.dedup();
            if ips.is_empty() {
                Err(format!("{host} has no address"))
            } else {
                Ok(format!("{host} -> {}", ips.join(", ")))
            }
        }
        Ok(Err(e)) => Err(format!(
            "cannot resolve {host}: {e}: check the host name (and this machine's DNS)"
        )),
        Err(_) => Err(format!("no DNS answer for {host} within {timeout:?}")),
    }
}

/// The steps a session passes before the mailbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Stage {
    /// The TCP connection (through the proxy).
    Connect,
    /// TLS, implicit or after STARTTLS.
    Tls,
    /// The server's capabilities.
    Capabilities,
    /// The login.
    Authenticate,
}

/// The stage a failure belongs to, given how far the session got.
fn reached(progress: &Progress, account: &AccountConfig) -> Stage {
    let connected = progress.peer.is_some() && (account.proxy.is_none() || progress.via_proxy);
    if !connected {
        Stage::Connect
    } else if account.tls == TlsMode::Tls && progress.tls.is_none() {
        Stage::Tls
    } else if progress.capabilities.is_none() {
        Stage::Capabilities
    } else if account.tls != TlsMode::None
        && account.tls != TlsMode::StarttlsIfAvailable
        && progress.tls.is_none()
    {
        Stage::Tls
    } else {
        Stage::Authenticate
    }
}

/// A failed session in words, for a kind's [`Probed::failure`]: `stage` as the kind's error
/// tells it, else [`Stage::Connect`] when the connection (or the proxy) failed; a refused
/// connection says what to check, and so does a refused login (`auth_failed`).
pub(crate) fn failure_words(
    e: &dyn std::fmt::Display,
    stage: Option<Stage>,
    transport: Option<&TransportError>,
    auth_failed: bool,
    oauth: bool,
) -> (Option<Stage>, String) {
    let stage = match transport {
        Some(TransportError::Connect { .. } | TransportError::Proxy(_)) => Some(Stage::Connect),
        _ => stage,
    };
    let detail = match transport {
        Some(TransportError::Connect { error, .. }) => format!("{e}{}", connect_hint(error)),
        _ if auth_failed => auth_words(e, oauth),
        _ => e.to_string(),
    };
    (stage, detail)
}

/// Why no OAuth2 access token could be had, in words: the error says what to do (a refused
/// grant: run `mailferry oauth login` again; a client refused: check its id and secret).
fn token_words(e: &OAuthError) -> String {
    match e {
        OAuthError::Unreachable { .. } => format!(
            "no OAuth2 access token: {e}; check oauth.token_url and that this host reaches it"
        ),
        _ => format!("no OAuth2 access token: {e}"),
    }
}

/// A session that failed for want of a token fails at authenticate with the token's
/// reason (what the client says, "needs an OAuth2 token", is no news); a failure before
/// the login (connect, TLS) stays where it is.
fn with_token_error(
    failure: Option<(Option<Stage>, String)>,
    token_error: Option<String>,
) -> Option<(Option<Stage>, String)> {
    match (failure, token_error) {
        (Some((Some(stage), why)), Some(_)) if stage < Stage::Authenticate => {
            Some((Some(stage), why))
        }
        (Some(_), Some(token)) => Some((Some(Stage::Authenticate), token)),
        (failure, _) => failure,
    }
}

/// A refused login (its error names the method) and what to check.
fn auth_words(e: &dyn std::fmt::Display, oauth: bool) -> String {
    let check = if oauth {
        "check username (the mailbox), oauth.scope, and that the mailbox grants the application access"
    } else {
        "check username and password"
    };
    format!(
        "the server refused the login: {e}; {check} (a refused login is retried with growing intervals, up to auth_backoff_max)"
    )
}

/// What a failed TCP connect most likely means.
fn connect_hint(source: &std::io::Error) -> &'static str {
    match source.kind() {
        std::io::ErrorKind::ConnectionRefused => {
            "; nothing accepts connections on that port: is the server running, and is `port` right?"
        }
        std::io::ErrorKind::TimedOut => "; no answer: a firewall in the way, or the wrong host?",
        _ => "",
    }
}

/// connect, tls, capabilities, authenticate: each ok, failed (the one `failure` names) or
/// skipped.
fn session_steps(
    account: &AccountConfig,
    progress: &Progress,
    failure: Option<(Option<Stage>, String)>,
) -> Vec<Step> {
    let (failed_at, why) = match failure {
        Some((stage, why)) => (
            Some(stage.unwrap_or_else(|| reached(progress, account))),
            why,
        ),
        None => (None, String::new()),
    };
    let status = |stage: Stage, passed: bool| match failed_at {
        Some(f) if f == stage => Status::Failed,
        Some(_) if !passed => Status::Skipped,
        _ => Status::Ok,
    };
    let step = |name, stage, passed: bool, detail: String| {
        let status = status(stage, passed);
        match status {
            Status::Failed => Step::failed(name, why.clone()),
            Status::Skipped => Step::skipped(name),
            _ => Step::new(name, status, detail),
        }
    };
    let mut steps = Vec::new();
    let connected = progress.peer.is_some() && (account.proxy.is_none() || progress.via_proxy);
    let peer = progress.peer.map_or_else(String::new, |p| p.to_string());
    let connect_detail = match &account.proxy {
        Some(proxy) => format!(
            "through the proxy {proxy} ({peer}) to {}:{}",
            account.host, account.port
        ),
        None => format!("connected to {peer}"),
    };
    steps.push(step("connect", Stage::Connect, connected, connect_detail));

    let tls_step = match (&progress.tls, account.tls) {
        (Some(peer), _) => {
            let mut done = step(
                "tls",
                Stage::Tls,
                true,
                tls_words(peer, &account.tls_options, account.tls),
            );
            if !account.tls_options.verify_certificate && done.status == Status::Ok {
                done.status = Status::Warning;
            }
            done
        }
        (None, TlsMode::None) if connected => Step::new(
            "tls",
            Status::Warning,
            "not encrypted (tls: none): the password and the mail cross the network in clear text",
        ),
        (None, TlsMode::StarttlsIfAvailable) if failed_at.is_none() => Step::new(
            "tls",
            Status::Warning,
            "the server offers no STARTTLS/STLS: the session is not encrypted",
        ),
        (None, _) => step("tls", Stage::Tls, false, String::new()),
    };
    steps.push(tls_step);

    let caps = progress.capabilities.as_ref();
    let caps_detail = match caps {
        Some(lines) => account.protocol.kind().capability_words(lines, account),
        None => "the server does not answer CAPA (an RFC 1939-only server)".to_owned(),
    };
    let caps_known = caps.is_some() || (failed_at.is_none() && connected);
    steps.push(step(
        "capabilities",
        Stage::Capabilities,
        caps_known,
        caps_detail,
    ));

    let mechanism = progress
        .mechanism
        .as_deref()
        .unwrap_or("PREAUTH (logged in by the server)");
    steps.push(step(
        "authenticate",
        Stage::Authenticate,
        failed_at.is_none(),
        format!("logged in as {} with {mechanism}", account.username),
    ));
    steps
}

/// The TLS session in words: version, cipher, the certificate, and why it was trusted.
pub(crate) fn tls_words(peer: &PeerTls, options: &TlsOptions, mode: TlsMode) -> String {
    let how = match mode {
        TlsMode::Tls => "implicit TLS",
        _ => "STARTTLS",
    };
    let name = |cn: &Option<String>| {
        cn.as_deref()
            .map_or_else(|| "(no common name)".to_owned(), |n| format!("\"{n}\""))
    };
    let issuer = if peer.self_issued {
        "itself (self-signed)".to_owned()
    } else {
        name(&peer.issuer)
    };
    format!(
        "{how}, {} {}; certificate for {}, issued by {issuer}, expires {}, SHA-256 {}; {}",
        peer.version,
        peer.cipher,
        name(&peer.subject),
        peer.expires.as_deref().unwrap_or("(unknown)"),
        peer.fingerprint
            .map_or_else(|| "(none)".to_owned(), |f| f.to_string()),
        crate::tls::trust_basis(options)
    )
}

#[cfg(test)]
mod tests;
