//! SMTP AUTH (RFC 4954) with the relay, for internal servers that demand it: the strongest
//! mechanism that EHLO offers and `relay.auth_mechanisms` / `relay.spa` allow, chosen and
//! spoken by the shared SASL client ([`crate::sasl`]), with `relay.password` or, with
//! `relay.oauth`, an OAuth2 access token (XOAUTH2, OAUTHBEARER), and only over TLS unless
//! `relay.tls: none` is explicit. The mechanism used is logged once per session.

use std::time::Duration;

use super::RelayError;
use super::conn::Conn;
use crate::config::{Password, RelayAuth, TlsMode};
use crate::sasl::{
    Credentials, Exchange, Mechanism, Method, Offer, Policy, Secret, choose, decode_base64,
    encode_base64,
};

/// More challenges than any mechanism mailferry speaks needs: the server is not following
/// one.
const MAX_ROUNDS: usize = 8;

/// Authenticates the session with `credentials`, and `token` with `relay.oauth` (XOAUTH2,
/// OAUTHBEARER); returns the mechanism used. The password or token goes only on the wire:
/// no error here carries it (or its encoding).
pub(super) async fn authenticate(
    conn: &mut Conn,
    credentials: &RelayAuth,
    token: Option<&Password>,
    mode: TlsMode,
    limit: Duration,
) -> Result<Mechanism, RelayError> {
    let host = conn.host.clone();
    let unavailable = |why: String| RelayError::AuthUnavailable {
        host: host.clone(),
        why,
    };
    if !conn.tls && mode != TlsMode::None {
        return Err(unavailable(
            "the connection is not encrypted (the server offers no STARTTLS); \
             set relay.tls: none to log in over plain text"
                .to_owned(),
        ));
    }
    let offer = Offer {
        sasl: Offer::mechanisms(conn.caps.auth.iter().map(String::as_str)),
        apop: false,
        password: false,
    };
    let policy = Policy {
        allowed: credentials.mechanisms.allowed(),
        cleartext_ok: true,
        token: credentials.oauth.is_some(),
    };
    let mechanism = match choose(&offer, &policy) {
        Ok(Method::Sasl(mechanism)) => mechanism,
        Ok(other) => return Err(unavailable(format!("{other} is not SMTP AUTH"))),
        Err(none) => {
            let advertised = match conn.caps.auth.join(" ") {
                list if list.is_empty() => "no AUTH".to_owned(),
                list => format!("AUTH {list}"),
            };
            let restricted = match policy.allowed {
                [] => "",
                _ => "; restricted by relay.auth_mechanisms or relay.spa",
            };
            return Err(unavailable(format!(
                "{none} (EHLO: {advertised}{restricted})"
            )));
        }
    };
    let (secret, _) = Secret::of_login(credentials.password.expose(), token.map(Password::expose));
    let login = Credentials {
        username: &credentials.username,
        secret,
    };
    let sasl_failed = |e: crate::sasl::SaslError| unavailable(e.to_string());
    let mut exchange = Exchange::new(mechanism, &login).map_err(sasl_failed)?;
    let mut command = format!("AUTH {}", mechanism.name());
    if let Some(initial) = exchange.initial_response() {
        // RFC 4954 4: an empty initial response is sent as "=".
        command.push(' ');
        command.push_str(&if initial.is_empty() {
            "=".to_owned()
        } else {
            encode_base64(&initial)
        });
    }
    let mut reply = conn.command(&command, limit, "AUTH").await?;
    for _ in 0..MAX_ROUNDS {
        match reply.code {
            235 => {
                exchange.finish(None).map_err(sasl_failed)?;
                // Once per session: the mechanism is what an administrator checks first.
                tracing::info!(relay = %host, "logged in with AUTH {mechanism}");
                return Ok(mechanism);
            }
            334 => {
                let text = reply.lines.first().map(String::as_str).unwrap_or("");
                let response = decode_base64(text.as_bytes())
                    .ok_or_else(|| crate::sasl::SaslError::Malformed {
                        mechanism,
                        what: "a challenge that is not base64".to_owned(),
                    })
                    .and_then(|challenge| exchange.respond(&challenge));
                match response {
                    Ok(response) => {
                        reply = conn
                            .command(&encode_base64(&response), limit, "AUTH")
                            .await?;
                    }
                    Err(e) => {
                        // Cancelled (RFC 4954 4); the session is dropped either way.
                        let _ = conn.command("*", limit, "AUTH").await;
                        return Err(sasl_failed(e));
                    }
                }
            }
            _ => return Err(refused(&host, mechanism, &reply)),
        }
    }
    Err(unavailable(format!(
        "{mechanism}: more than {MAX_ROUNDS} challenges"
    )))
}

fn refused(host: &str, mechanism: Mechanism, reply: &super::wire::Parsed) -> RelayError {
    RelayError::AuthRefused {
        host: host.to_owned(),
        mechanism: mechanism.name(),
        reply: reply.reply(),
    }
}
