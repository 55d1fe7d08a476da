//! SMTP AUTH (RFC 4954) with the relay, for internal servers that demand it: PLAIN (RFC
//! 4616) or LOGIN, chosen from what EHLO offers, only over TLS unless `relay.tls: none` is
//! explicit. Kept small and apart so that a shared SASL client can take its place.

use std::time::Duration;

use super::RelayError;
use super::conn::Conn;
use crate::config::{RelayAuth, TlsMode};
use crate::fetch::pop3::base64;

/// The mechanisms mailferry speaks, best first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mechanism {
    Plain,
    Login,
}

/// The best mechanism of those offered (EHLO's `AUTH` keywords, upper-cased).
fn choose(offered: &[String]) -> Option<Mechanism> {
    let has = |m: &str| offered.iter().any(|o| o == m);
    if has("PLAIN") {
        Some(Mechanism::Plain)
    } else if has("LOGIN") {
        Some(Mechanism::Login)
    } else {
        None
    }
}

/// Authenticates the session with `credentials`. The password goes only on the wire: no
/// error here carries it (or its encoding).
pub(super) async fn authenticate(
    conn: &mut Conn,
    credentials: &RelayAuth,
    mode: TlsMode,
    limit: Duration,
) -> Result<(), RelayError> {
    let host = conn.host.clone();
    if !conn.tls && mode != TlsMode::None {
        return Err(RelayError::AuthUnavailable {
            host,
            why: "the connection is not encrypted (the server offers no STARTTLS); \
                  set relay.tls: none to send the password in plain text"
                .to_owned(),
        });
    }
    let Some(mechanism) = choose(&conn.caps.auth) else {
        let offered = if conn.caps.auth.is_empty() {
            "none".to_owned()
        } else {
            conn.caps.auth.join(" ")
        };
        return Err(RelayError::AuthUnavailable {
            host,
            why: format!(
                "it offers no AUTH mechanism mailferry speaks (PLAIN, LOGIN); offered: {offered}"
            ),
        });
    };
    let user = credentials.username.as_bytes();
    let password = credentials.password.expose().as_bytes();
    let refused = |reply: super::wire::Parsed| RelayError::AuthRefused {
        host: host.clone(),
        reply: reply.reply(),
    };
    let last = match mechanism {
        Mechanism::Plain => {
            let response = base64(&[b"\0", user, b"\0", password].concat());
            conn.command(&format!("AUTH PLAIN {response}"), limit, "AUTH")
                .await?
        }
        Mechanism::Login => {
            let reply = conn.command("AUTH LOGIN", limit, "AUTH").await?;
            if reply.code != 334 {
                return Err(refused(reply));
            }
            let reply = conn.command(&base64(user), limit, "AUTH").await?;
            if reply.code != 334 {
                return Err(refused(reply));
            }
            conn.command(&base64(password), limit, "AUTH").await?
        }
    };
    if last.code != 235 {
        return Err(refused(last));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_is_preferred_and_unknown_mechanisms_are_not_chosen() {
        let offer = |m: &[&str]| m.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(choose(&offer(&["LOGIN", "PLAIN"])), Some(Mechanism::Plain));
        assert_eq!(
            choose(&offer(&["CRAM-MD5", "LOGIN"])),
            Some(Mechanism::Login)
        );
        assert_eq!(choose(&offer(&["CRAM-MD5", "GSSAPI"])), None);
        assert_eq!(choose(&[]), None);
    }
}
