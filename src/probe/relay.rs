//! The relay's part of `test-connection`: resolve, then a session set up by the relay's own
//! SMTP client ([`crate::relay::check`]: connect, TLS as `relay.tls` says, EHLO, AUTH as
//! configured, with a token of its own for `relay.oauth`), each step in words, and the SIZE
//! limit weighed against `max_message_size`. QUIT before any MAIL: no message is sent.

use super::report::{Section, Status, Step};
use super::{resolve_host, tls_words};
use crate::config::{Config, TlsMode};
use crate::relay::RelayError;
use crate::relay::check::{SessionCheck, Stage, check_session};

/// Every step of the relay.
pub(super) async fn test_relay(config: &Config) -> Section {
    let relay = &config.relay;
    let mode = match relay.tls {
        TlsMode::None => "none",
        TlsMode::Starttls => "starttls",
        TlsMode::StarttlsIfAvailable => "starttls-if-available",
        TlsMode::Tls => "tls",
    };
    let mut target = format!("smtp {}:{} (tls: {mode})", relay.host, relay.port);
    if let Some(auth) = &relay.auth {
        target.push_str(&format!(" as {}", auth.username));
    }
    let mut section = Section {
        kind: "relay",
        name: format!("{}:{}", relay.host, relay.port),
        target,
        steps: Vec::new(),
    };
    let host = relay.host.trim_start_matches('[').trim_end_matches(']');
    match resolve_host(host, relay.port, relay.timeout).await {
        Ok(detail) => section.steps.push(Step::ok("resolve", detail)),
        Err(why) => {
            section.steps.push(Step::failed("resolve", why));
            for name in ["connect", "tls", "ehlo", "authenticate", "size"] {
                section.steps.push(Step::skipped(name));
            }
            return section;
        }
    }
    let check = check_session(relay).await;
    section.steps.extend(session_steps(config, &check));
    section
}

/// connect, tls, ehlo, authenticate, size: ok up to the one that failed, skipped after.
pub(super) fn session_steps(config: &Config, check: &SessionCheck) -> Vec<Step> {
    let relay = &config.relay;
    let failed_at = check.failed.as_ref().map(|(stage, _)| *stage);
    let why = check
        .failed
        .as_ref()
        .map(|(_, e)| failure_words(config, e))
        .unwrap_or_default();
    let step = |name: &'static str, stage: Stage, detail: String| match failed_at {
        Some(f) if f == stage => Step::failed(name, why.clone()),
        Some(f) if f < stage => Step::skipped(name),
        _ => Step::ok(name, detail),
    };
    let mut steps = Vec::new();
    let peer = check.peer.map_or_else(
        || format!("{}:{}", relay.host, relay.port),
        |p| p.to_string(),
    );
    steps.push(step(
        "connect",
        Stage::Connect,
        format!("connected to {peer}"),
    ));

    let mut tls = step("tls", Stage::Tls, String::new());
    if tls.status == Status::Ok {
        tls = match (&check.tls, relay.tls) {
            (Some(peer), mode) => {
                let words = tls_words(peer, &relay.tls_options, mode);
                match relay.tls_options.verify_certificate {
                    true => Step::ok("tls", words),
                    false => Step::new("tls", Status::Warning, words),
                }
            }
            (None, TlsMode::None) => {
                Step::new("tls", Status::Warning, "not encrypted (relay.tls: none)")
            }
            (None, _) => Step::new(
                "tls",
                Status::Warning,
                "the relay offers no STARTTLS: the mail goes to it unencrypted",
            ),
        };
    }
    steps.push(tls);

    let mut extensions: Vec<&str> = check.ehlo.iter().skip(1).map(String::as_str).collect();
    extensions.retain(|e| !e.trim().is_empty());
    let extensions = match extensions.join(", ") {
        list if list.is_empty() => "no extensions".to_owned(),
        list => list,
    };
    steps.push(step(
        "ehlo",
        Stage::Ehlo,
        format!("EHLO {}: {extensions}", check.helo),
    ));

    let offered = check
        .ehlo
        .iter()
        .skip(1)
        .find(|l| l.to_ascii_uppercase().starts_with("AUTH"))
        .map_or_else(|| "no AUTH".to_owned(), |l| l.trim().to_owned());
    let auth_detail = match (&relay.auth, check.mechanism) {
        (Some(auth), Some(mechanism)) => {
            let with = if auth.oauth.is_some() {
                "an OAuth2 token (relay.oauth)"
            } else {
                "relay.password"
            };
            format!(
                "logged in as {} with AUTH {mechanism} and {with} (the relay offers {offered})",
                auth.username
            )
        }
        (Some(_), None) => String::new(),
        (None, _) => {
            format!("no SMTP AUTH configured (relay.username not set); the relay offers {offered}")
        }
    };
    steps.push(step("authenticate", Stage::Authenticate, auth_detail));

    steps.push(match failed_at {
        Some(stage) if stage <= Stage::Ehlo => Step::skipped("size"),
        _ => size_step(&check.ehlo, config.max_message_size),
    });
    steps
}

/// A relay failure in words, with what to check.
fn failure_words(config: &Config, e: &RelayError) -> String {
    let relay = &config.relay;
    match e {
        RelayError::Tcp { source, .. }
            if source.kind() == std::io::ErrorKind::ConnectionRefused =>
        {
            format!(
                "{e}; nothing accepts connections there: is the internal mail server running, and are relay.host and relay.port right?"
            )
        }
        RelayError::Tcp { .. } => format!("{e}; a firewall in the way, or the wrong relay.host?"),
        RelayError::AuthRefused { .. }
            if relay.auth.as_ref().is_some_and(|a| a.oauth.is_some()) =>
        {
            format!(
                "{e}; the relay refused the OAuth2 token: check relay.username, relay.oauth.scope and the application's permission to send"
            )
        }
        RelayError::AuthRefused { .. } => {
            format!("{e}; check relay.username and relay.password")
        }
        _ => e.to_string(),
    }
}

/// What the relay's SIZE says against `max_message_size`.
pub(super) fn size_step(ehlo: &[String], max_message_size: u64) -> Step {
    let size = ehlo.iter().skip(1).find_map(|line| {
        let mut words = line.split_ascii_whitespace();
        let word = words.next()?;
        word.eq_ignore_ascii_case("SIZE").then(|| {
            words
                .next()
                .and_then(|n| n.parse::<u64>().ok())
                .unwrap_or(0)
        })
    });
    match size {
        None => Step::ok("size", "the relay announces no SIZE limit"),
        Some(0) => Step::ok("size", "SIZE without a limit"),
        Some(n) if n < max_message_size => Step::new(
            "size",
            Status::Warning,
            format!(
                "the relay takes messages up to {n} bytes, less than max_message_size ({max_message_size}): a message in between is refused by it and goes to the postmaster"
            ),
        ),
        Some(n) => Step::ok(
            "size",
            format!(
                "the relay takes messages up to {n} bytes (max_message_size {max_message_size})"
            ),
        ),
    }
}
