//! A session with the relay set up as for mail, and ended before any: for
//! `mailferry test-connection`, so that it tests with the relay's own client (connect, TLS,
//! EHLO, AUTH as configured) and the two cannot disagree.

use std::net::SocketAddr;

use super::RelayError;
use super::conn;
use super::session::{local_host_name, login};
use crate::config::{RelayConfig, TlsMode};
use crate::oauth::TokenSource;
use crate::sasl::Mechanism;
use crate::tls::{PeerTls, TlsClient};

/// The steps of a session, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Stage {
    /// TCP.
    Connect,
    /// Implicit TLS or STARTTLS, and the certificate.
    Tls,
    /// The greeting and EHLO.
    Ehlo,
    /// SMTP AUTH (`relay.username`).
    Authenticate,
}

/// What a session with the relay found.
#[derive(Debug)]
pub struct SessionCheck {
    /// The EHLO name given.
    pub helo: String,
    /// The address connected to, once connected.
    pub peer: Option<SocketAddr>,
    /// The TLS session, if there was one.
    pub tls: Option<PeerTls>,
    /// The lines of the EHLO reply (the first is the server's name).
    pub ehlo: Vec<String>,
    /// The mechanism AUTH used (`None`: no `relay.username`, or it failed).
    pub mechanism: Option<Mechanism>,
    /// The step that failed, and why; `None`: every step passed.
    pub failed: Option<(Stage, RelayError)>,
}

/// Sets up a session with the relay as [`super::SmtpRelay`] does (with a token of its own
/// for `relay.oauth`), notes what each step found, and ends it with QUIT. No message is
/// sent.
pub async fn check_session(config: &RelayConfig) -> SessionCheck {
    let mut check = SessionCheck {
        helo: config.helo.clone().unwrap_or_else(local_host_name),
        peer: None,
        tls: None,
        ehlo: Vec::new(),
        mechanism: None,
        failed: None,
    };
    let tls = match config.tls {
        TlsMode::None => None,
        _ => match TlsClient::new(&config.tls_options, &config.host) {
            Ok(tls) => Some(tls),
            Err(e) => {
                check.failed = Some((Stage::Tls, RelayError::Tls(e)));
                return check;
            }
        },
    };
    let mut session = match conn::open(config, tls.as_ref(), &check.helo).await {
        Ok(session) => session,
        Err(e) => {
            check.failed = Some((stage_of(&e), e));
            return check;
        }
    };
    check.peer = session.peer;
    check.tls = session.peer_tls.clone();
    check.ehlo = session.ehlo_lines.clone();
    if let Some(credentials) = &config.auth {
        let tokens = TokenSource::for_relay(credentials);
        match login(&mut session, config, credentials, tokens.as_ref()).await {
            Ok(mechanism) => check.mechanism = Some(mechanism),
            Err(e) => check.failed = Some((Stage::Authenticate, e)),
        }
    }
    session.quit(config.timeout).await;
    check
}

/// The step a failure to open a session belongs to.
pub fn stage_of(e: &RelayError) -> Stage {
    match e {
        RelayError::Tcp { .. } => Stage::Connect,
        RelayError::Timeout { during, .. } if *during == "the TCP connection" => Stage::Connect,
        RelayError::Timeout { during, .. } if *during == "the TLS handshake" => Stage::Tls,
        RelayError::Tls(_)
        | RelayError::StarttlsRefused { .. }
        | RelayError::StarttlsRequired { .. } => Stage::Tls,
        RelayError::AuthRefused { .. }
        | RelayError::AuthUnavailable { .. }
        | RelayError::Token(_) => Stage::Authenticate,
        _ => Stage::Ehlo,
    }
}
