//! `mailferry test-connection`: for each account, every step of the way to its mailbox —
//! resolve, connect (through the proxy), TLS, capabilities, authenticate, and what the
//! mailbox holds (POP3 STAT; IMAP EXAMINE, read-only) — then the relay (`relay.rs`). Each
//! step says in words what it found or what is wrong. Nothing is downloaded, flagged or
//! deleted. The steps are the existing clients' own (`connect_observed` notes how far a
//! session got); `report.rs` holds the report and its text and JSON forms.

mod relay;
mod report;

use std::path::Path;
use std::sync::Arc;

pub use report::{Report, Section, Status, Step};

use crate::config::{AccountConfig, Config, Protocol, TlsMode, TlsOptions};
use crate::fetch::{ImapClient, ImapError, Pop3Client, Pop3Error, Progress, TransportError};
use crate::oauth::{OAuthError, TokenSource};
use crate::sasl::Method;
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
    let protocol = match account.protocol {
        Protocol::Pop3 => "pop3",
        Protocol::Imap => "imap",
    };
    let mut target = format!(
        "{protocol} {}:{} as {}",
        account.host, account.port, account.username
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
    match account.protocol {
        Protocol::Pop3 => {
            let result = Pop3Client::connect_observed(account, tls, token, &mut progress).await;
            progress.mechanism = match &result {
                Ok(client) => method_words(client.login_method(), Protocol::Pop3),
                Err(Pop3Error::AuthFailed { method, .. }) => Some(method.clone()),
                Err(_) => None,
            };
            let oauth = account.oauth.is_some();
            let failure = result.as_ref().err().map(|e| pop3_failure(e, oauth));
            let failure = with_token_error(failure, token_error);
            section
                .steps
                .extend(session_steps(account, &progress, failure));
            if let Ok(mut client) = result {
                section.steps.push(match client.stat().await {
                    Ok((count, size)) => Step::ok(
                        "mailbox",
                        format!("{count} message(s), {size} bytes in all (STAT)"),
                    ),
                    Err(e) => Step::failed("mailbox", format!("STAT: {e}")),
                });
                // Nothing was marked for deletion: QUIT commits nothing.
                let _ = client.quit().await;
            } else {
                section.steps.push(Step::skipped("mailbox"));
            }
        }
        Protocol::Imap => {
            let result = ImapClient::connect_observed(account, tls, token, &mut progress).await;
            progress.mechanism = match &result {
                Ok(client) => method_words(client.login_method(), Protocol::Imap),
                Err(ImapError::AuthFailed { method, .. }) => Some(method.clone()),
                Err(_) => None,
            };
            let oauth = account.oauth.is_some();
            let failure = result.as_ref().err().map(|e| imap_failure(e, oauth));
            let failure = with_token_error(failure, token_error);
            section
                .steps
                .extend(session_steps(account, &progress, failure));
            if let Ok(mut client) = result {
                section
                    .steps
                    .push(imap_mailbox(&mut client, &account.folder).await);
                client.logout().await;
            } else {
                section.steps.push(Step::skipped("mailbox"));
            }
        }
    }
    section
}

/// EXAMINE (never SELECT: nothing changes), then the sizes of what is there.
async fn imap_mailbox(client: &mut ImapClient, folder: &str) -> Step {
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
enum Stage {
    Connect,
    Tls,
    Capabilities,
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

fn pop3_failure(e: &Pop3Error, oauth: bool) -> (Option<Stage>, String) {
    let stage = match e {
        Pop3Error::Transport(TransportError::Connect { .. } | TransportError::Proxy(_)) => {
            Some(Stage::Connect)
        }
        Pop3Error::Tls(_) | Pop3Error::StlsNotOffered | Pop3Error::PlaintextRefused => {
            Some(Stage::Tls)
        }
        Pop3Error::AuthFailed { .. }
        | Pop3Error::ApopNotOffered
        | Pop3Error::InvalidCredential(_) => Some(Stage::Authenticate),
        _ => None,
    };
    let detail = match e {
        Pop3Error::Transport(TransportError::Connect { error: source, .. }) => {
            format!("{e}{}", connect_hint(source))
        }
        Pop3Error::AuthFailed { .. } => auth_words(e, oauth),
        _ => e.to_string(),
    };
    (stage, detail)
}

fn imap_failure(e: &ImapError, oauth: bool) -> (Option<Stage>, String) {
    let stage = match e {
        ImapError::Transport(TransportError::Connect { .. } | TransportError::Proxy(_)) => {
            Some(Stage::Connect)
        }
        ImapError::Tls(_) | ImapError::StarttlsNotOffered | ImapError::PlaintextRefused => {
            Some(Stage::Tls)
        }
        ImapError::AuthFailed { .. }
        | ImapError::NoLoginMethod(_)
        | ImapError::InvalidCredential(_) => Some(Stage::Authenticate),
        _ => None,
    };
    let detail = match e {
        ImapError::Transport(TransportError::Connect { error: source, .. }) => {
            format!("{e}{}", connect_hint(source))
        }
        ImapError::AuthFailed { .. } => auth_words(e, oauth),
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

/// How the session logged in, as the protocol words it; `None` after IMAP PREAUTH.
fn method_words(method: Option<Method>, protocol: Protocol) -> Option<String> {
    Some(match (method?, protocol) {
        (Method::Sasl(m), Protocol::Pop3) => format!("AUTH {m}"),
        (Method::Sasl(m), Protocol::Imap) => format!("AUTHENTICATE {m}"),
        (Method::Apop, _) => "APOP".to_owned(),
        (Method::Password, Protocol::Pop3) => "USER/PASS".to_owned(),
        (Method::Password, Protocol::Imap) => "LOGIN".to_owned(),
    })
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
    let caps_detail = match (caps, account.protocol) {
        (Some(lines), Protocol::Pop3) => pop3_capabilities(lines, account),
        (Some(words), Protocol::Imap) => words.join(" "),
        (None, _) => "the server does not answer CAPA (an RFC 1939-only server)".to_owned(),
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

/// The POP3 capability lines, with LOGIN-DELAY and EXPIRE explained.
fn pop3_capabilities(lines: &[String], account: &AccountConfig) -> String {
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
