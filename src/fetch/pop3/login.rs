//! The POP3 login: the strongest method that the server offers and the account allows
//! ([`crate::sasl::choose`]): `AUTH` with a SASL mechanism (RFC 5034), `APOP` (RFC 1939, only
//! when the account asks for it), or `USER`/`PASS` last. No secret reaches a log: client
//! continuation lines show as `***`, and the server's replies have the secrets blanked.

use super::client::Pop3Client;
use super::protocol::{self, Status};
use super::secret::redact;
use super::{Pop3Error, apop};
use crate::config::{AccountConfig, Password, TlsMode};
use crate::sasl::{self, Credentials, Exchange, Mechanism, Method, Offer, Policy, Secret};

/// RFC 5034 4: an `AUTH` command with its initial response fits in 255 octets.
const COMMAND_MAX: usize = 255;
/// Server challenges answered at most in one exchange (NTLM and SCRAM need two).
const ROUNDS_MAX: usize = 8;

impl Pop3Client {
    /// Chooses the method and logs in with it; the method is logged once (info) and kept for
    /// [`login_method`](Pop3Client::login_method).
    pub(super) async fn login(
        &mut self,
        account: &AccountConfig,
        apop_stamp: Option<&str>,
        token: Option<&Password>,
    ) -> Result<(), Pop3Error> {
        let allowed = account.auth.allowed();
        let offer = Offer {
            sasl: self
                .capabilities()
                .map(|c| Offer::mechanisms(c.sasl.iter().map(String::as_str)))
                .unwrap_or_default(),
            // A greeting's timestamp does not mean the server can check APOP for this user
            // (its store may hold hashes): APOP only when the account asks for it.
            apop: apop_stamp.is_some() && allowed.contains(&Method::Apop),
            // Tried even when CAPA does not list USER: RFC 1939 servers know no CAPA.
            password: true,
        };
        let policy = Policy {
            allowed,
            cleartext_ok: self.is_encrypted() || account.tls == TlsMode::None,
            token: account.oauth.is_some(),
        };
        let method = sasl::choose(&offer, &policy).map_err(Pop3Error::NoLoginMethod)?;
        let password = account.password.expose();
        let (secret, mut secrets) = Secret::of_login(password, token.map(|t| t.expose()));
        let status = match (method, apop_stamp) {
            (Method::Apop, Some(stamp)) => {
                let digest = apop::digest(stamp, password);
                secrets.push(digest.clone());
                let user = &account.username;
                (self.conn)
                    .send(
                        &format!("APOP {user} {digest}"),
                        &format!("APOP {user} ***"),
                    )
                    .await?;
                self.conn.read_status().await?
            }
            (Method::Apop, None) => return Err(Pop3Error::ApopNotOffered),
            (Method::Password, _) => {
                let user = &account.username;
                let line = format!("USER {user}");
                self.conn.send(&line, &line).await?;
                match self.conn.read_status().await? {
                    Status::Ok(_) => {
                        self.conn
                            .send(&format!("PASS {password}"), "PASS ***")
                            .await?;
                        self.conn.read_status().await?
                    }
                    err => err,
                }
            }
            (Method::Sasl(mechanism), _) => {
                let credentials = Credentials {
                    username: &account.username,
                    secret,
                };
                self.authenticate(mechanism, &credentials, &mut secrets)
                    .await?
            }
        };
        let shown = shown_name(method);
        match status {
            Status::Ok(_) => {
                tracing::info!(account = %account.name, "logged in with {shown}");
                self.method = Some(method);
                Ok(())
            }
            Status::Err { code, text } => {
                tracing::debug!(account = %account.name, "S: -ERR (login refused)");
                let temporary = code
                    .as_deref()
                    .is_some_and(|c| matches!(c, "IN-USE" | "LOGIN-DELAY" | "SYS/TEMP"));
                Err(Pop3Error::AuthFailed {
                    method: shown.to_owned(),
                    text: redact(&text, &secrets),
                    temporary,
                })
            }
        }
    }

    /// `AUTH mechanism`: the initial response on the command line when it fits, then one
    /// line per server challenge, until the server's `+OK` or `-ERR`. On `+OK` the exchange
    /// must be complete (SCRAM: the server's signature verified), else the login is refused.
    async fn authenticate(
        &mut self,
        mechanism: Mechanism,
        credentials: &Credentials<'_>,
        secrets: &mut Vec<String>,
    ) -> Result<Status, Pop3Error> {
        let mut exchange = Exchange::new(mechanism, credentials)?;
        let name = mechanism.name();
        let command = format!("AUTH {name}");
        // Office 365 takes XOAUTH2 only as a second line; everyone takes it that way.
        let initial = match mechanism {
            Mechanism::XOAuth2 => None,
            _ => exchange.initial_response().map(|r| sasl::encode_base64(&r)),
        };
        match initial {
            Some(encoded) if command.len() + 1 + encoded.len().max(1) <= COMMAND_MAX => {
                // RFC 5034: "=" stands for an empty initial response.
                let encoded = if encoded.is_empty() {
                    "=".to_owned()
                } else {
                    encoded
                };
                secrets.push(encoded.clone());
                (self.conn)
                    .send(&format!("{command} {encoded}"), &format!("{command} ***"))
                    .await?;
            }
            _ => {
                // Too long for the line: start afresh, the first challenge asks for it.
                exchange = Exchange::new(mechanism, credentials)?;
                self.conn.send(&command, &command).await?;
            }
        }
        for _ in 0..ROUNDS_MAX {
            let line = self.conn.read_line().await?;
            let Some(challenge) = line
                .strip_prefix(b"+")
                .filter(|rest| rest.is_empty() || rest.starts_with(b" "))
            else {
                let status =
                    protocol::parse_status(&line).map_err(|e| Pop3Error::Protocol(e.to_string()));
                let status = self.conn.guard(status)?;
                if let Status::Ok(text) = &status {
                    // Some servers put SCRAM's server-final in the +OK line.
                    let additional = sasl::decode_base64(text.as_bytes());
                    exchange.finish(additional.as_deref())?;
                }
                return Ok(match (status, exchange.server_error()) {
                    (Status::Err { code, text }, Some(detail)) => Status::Err {
                        code,
                        text: format!("{text} ({detail})"),
                    },
                    (status, _) => status,
                });
            };
            tracing::debug!(account = %self.conn.account, "S: +{}", String::from_utf8_lossy(challenge));
            match exchange.respond_base64(challenge) {
                Ok(encoded) => {
                    secrets.push(encoded.clone());
                    self.conn.send(&encoded, "***").await?;
                }
                Err(e) => {
                    // RFC 5034: "*" cancels; the server answers -ERR.
                    self.conn.send("*", "*").await?;
                    let _ = self.conn.read_status().await;
                    return Err(e.into());
                }
            }
        }
        let _ = self
            .conn
            .guard::<()>(Err(Pop3Error::Protocol(String::new())));
        Err(Pop3Error::Protocol(format!(
            "AUTH {name}: more than {ROUNDS_MAX} challenges"
        )))
    }
}

/// The method as POP3 names it, for the log and errors.
fn shown_name(method: Method) -> String {
    match method {
        Method::Sasl(m) => format!("AUTH {m}"),
        Method::Apop => "APOP".to_owned(),
        Method::Password => "USER/PASS".to_owned(),
    }
}
