//! Getting to an authenticated session: TCP, implicit TLS or STARTTLS, the greeting and
//! CAPABILITY, then AUTHENTICATE with the strongest SASL mechanism offered and allowed, or
//! LOGIN. No credential goes on the wire before the
//! connection is as secure as the account requires.

use super::super::ImapError;
use super::super::command::{self, Command};
use super::super::conn::Connection;
use super::super::protocol::{Capabilities, Code, LITERAL_MAX, Response, Status};
use super::ImapClient;
use crate::config::{AccountConfig, Password, TlsMode};
use crate::fetch::pop3::{MESSAGE_MAX, redact};
use crate::fetch::transport::{Progress, Stream, check_credentials, handshake, open, tls_client};
use crate::sasl::{self, Credentials, Exchange, Mechanism, Method, Offer, Policy, Secret};
use crate::tls::{PeerTls, TlsClient};

impl ImapClient {
    /// TCP connect to account.host:account.port, TLS per account.tls (Tls = implicit;
    /// Starttls = STARTTLS required, refused before any credential if not offered;
    /// StarttlsIfAvailable = STARTTLS when offered; None = plain), then login: AUTHENTICATE
    /// with the strongest mechanism offered and allowed, else LOGIN. Refuses to send the password on an unencrypted
    /// connection unless account.tls == TlsMode::None.
    pub async fn connect(account: &AccountConfig) -> Result<ImapClient, ImapError> {
        ImapClient::connect_with(account, None).await
    }

    /// [`connect`](ImapClient::connect) with a TLS configuration built beforehand (see
    /// [`tls::client_config`]); `None` builds one from the account's `ca_file` when needed.
    pub async fn connect_with(
        account: &AccountConfig,
        tls_config: Option<TlsClient>,
    ) -> Result<ImapClient, ImapError> {
        ImapClient::connect_with_token(account, tls_config, None).await
    }

    /// [`connect_with`](ImapClient::connect_with) for an account with `oauth:`, logging in
    /// with this OAuth2 access token (XOAUTH2 or OAUTHBEARER); such an account needs one.
    pub async fn connect_with_token(
        account: &AccountConfig,
        tls_config: Option<TlsClient>,
        token: Option<&Password>,
    ) -> Result<ImapClient, ImapError> {
        ImapClient::connect_observed(account, tls_config, token, &mut Progress::default()).await
    }

    /// [`connect_with_token`](ImapClient::connect_with_token), noting in `progress` how far
    /// it got and what it learnt (for `test-connection`), also when it fails.
    pub async fn connect_observed(
        account: &AccountConfig,
        tls_config: Option<TlsClient>,
        token: Option<&Password>,
        progress: &mut Progress,
    ) -> Result<ImapClient, ImapError> {
        check_credentials(account, token).map_err(ImapError::InvalidCredential)?;
        let (stream, encrypted) = open::<ImapError>(account, tls_config.as_ref(), progress).await?;
        ImapClient::establish(stream, encrypted, account, tls_config, token, progress).await
    }

    /// Everything after the TCP connect and implicit TLS (`encrypted`): greeting,
    /// CAPABILITY, STARTTLS, login.
    async fn establish(
        stream: Box<dyn Stream>,
        encrypted: bool,
        account: &AccountConfig,
        tls_config: Option<TlsClient>,
        token: Option<&Password>,
        progress: &mut Progress,
    ) -> Result<ImapClient, ImapError> {
        let tls_config = || tls_client(account, tls_config.as_ref());
        let mut client = ImapClient {
            conn: Connection::new(stream, account.timeout, account.name.clone()),
            capabilities: Capabilities::default(),
            encrypted,
            uidvalidity: None,
            exists: 0,
            recent: 0,
            message_max: MESSAGE_MAX as u64,
            flagged: Vec::new(),
            move_to: None,
            ahead: Default::default(),
            method: None,
        };

        let (preauth, code) = match client.conn.read_response(LITERAL_MAX).await? {
            Response::State {
                status: Status::Ok,
                code,
                ..
            } => (false, code),
            Response::Preauth { code, .. } => (true, code),
            Response::Bye { text } => return Err(ImapError::Bye(text)),
            other => {
                return Err(client.lost(format!("unexpected greeting {other:?}")));
            }
        };
        match code {
            Some(Code::Capability(caps)) => client.capabilities = caps,
            _ => client.capability().await?,
        }

        let want_starttls = match account.tls {
            TlsMode::None | TlsMode::Tls => false,
            TlsMode::Starttls => {
                // STARTTLS is only allowed before authentication: a PREAUTH connection
                // stays in the clear.
                if preauth || !client.capabilities.has("STARTTLS") {
                    return Err(ImapError::StarttlsNotOffered);
                }
                true
            }
            TlsMode::StarttlsIfAvailable => !preauth && client.capabilities.has("STARTTLS"),
        };
        if want_starttls {
            progress.tls = Some(client.starttls(account, tls_config()?).await?);
        }
        progress.capabilities = Some(client.capabilities.names.clone());
        if preauth {
            tracing::debug!(account = %account.name, "PREAUTH: logged in by the server");
            return Ok(client);
        }
        if !client.encrypted && account.tls != TlsMode::None {
            return Err(match account.tls {
                TlsMode::Starttls => ImapError::StarttlsNotOffered,
                _ => ImapError::PlaintextRefused,
            });
        }
        client.login(account, token).await?;
        Ok(client)
    }

    /// STARTTLS, the handshake, and CAPABILITY again (RFC 3501 6.2.1: what was learnt
    /// before TLS is discarded).
    async fn starttls(
        &mut self,
        account: &AccountConfig,
        cfg: TlsClient,
    ) -> Result<PeerTls, ImapError> {
        self.run(Command::new("STARTTLS")).await?;
        // Anything sent before the handshake could be injected by a man in the middle
        // (CVE-2011-0411 style); refuse rather than read it as protected.
        if self.conn.has_buffered() {
            return Err(self.lost(
                "the server sent data after the STARTTLS reply, before the TLS handshake".into(),
            ));
        }
        // A placeholder while the stream is in the handshake; it is never read.
        let mut plain = std::mem::replace(
            &mut self.conn,
            Connection::new(Box::new(tokio::io::empty()), account.timeout, String::new()),
        );
        let stream = std::mem::replace(&mut plain.stream, Box::new(tokio::io::empty()));
        let stream = handshake::<ImapError>(stream, account, cfg).await?;
        let peer = PeerTls::of(stream.get_ref().1);
        self.conn = plain.upgrade(Box::new(stream));
        self.encrypted = true;
        self.capability().await?;
        Ok(peer)
    }

    /// The strongest method offered and allowed ([`sasl::choose`]): `AUTHENTICATE` with a
    /// SASL mechanism (RFC 3501 6.2.2, SASL-IR when offered), else `LOGIN` with the password
    /// quoted, or as a literal when it has 8-bit bytes. The method is logged once (info)
    /// and kept for [`login_method`](ImapClient::login_method).
    async fn login(
        &mut self,
        account: &AccountConfig,
        token: Option<&Password>,
    ) -> Result<(), ImapError> {
        let offer = Offer {
            sasl: Offer::mechanisms(self.capabilities.auth_mechanisms()),
            apop: false,
            password: !self.capabilities.has("LOGINDISABLED"),
        };
        let policy = Policy {
            allowed: account.auth.allowed(),
            cleartext_ok: self.encrypted || account.tls == TlsMode::None,
            token: account.oauth.is_some(),
        };
        let method = sasl::choose(&offer, &policy).map_err(ImapError::NoLoginMethod)?;
        let password = account.password.expose();
        let (secret, mut secrets) = Secret::of_login(password, token.map(|t| t.expose()));
        let result = match method {
            Method::Sasl(mechanism) => {
                let credentials = Credentials {
                    username: &account.username,
                    secret,
                };
                self.authenticate(mechanism, &credentials, &mut secrets)
                    .await
            }
            Method::Apop | Method::Password => {
                let login = Command::new("LOGIN")
                    .string(account.username.as_bytes(), false)
                    .string(password.as_bytes(), true);
                self.run(login).await
            }
        };
        let shown = match method {
            Method::Sasl(m) => format!("AUTHENTICATE {m}"),
            _ => "LOGIN".to_owned(),
        };
        let responses = match result {
            Ok(responses) => responses,
            Err(ImapError::Refused { text, .. }) => {
                let temporary = ["[UNAVAILABLE]", "[INUSE]", "[LIMIT]"]
                    .iter()
                    .any(|c| text.to_ascii_uppercase().starts_with(c));
                return Err(ImapError::AuthFailed {
                    method: shown,
                    text: redact(&text, &secrets),
                    temporary,
                });
            }
            Err(e) => return Err(e),
        };
        tracing::info!(account = %account.name, "logged in with {shown}");
        self.method = Some(method);
        // The capabilities change with login (UIDPLUS, ...): take them from the reply, or ask.
        let fresh = responses.into_iter().rev().find_map(|r| match r {
            Response::Capability(caps)
            | Response::Tagged {
                code: Some(Code::Capability(caps)),
                ..
            } => Some(caps),
            _ => None,
        });
        match fresh {
            Some(caps) => self.capabilities = caps,
            None => self.capability().await?,
        }
        Ok(())
    }

    /// How the session logged in (for `test-connection` and the log); `None` after PREAUTH.
    pub fn login_method(&self) -> Option<Method> {
        self.method
    }

    /// `AUTHENTICATE mechanism`, with the initial response on the command line when SASL-IR
    /// is offered (`=` for an empty one), then one line per `+` challenge. A challenge the
    /// mechanism cannot answer ends the exchange with `*` (RFC 3501 6.2.2); on the tagged
    /// OK the exchange must be complete (SCRAM: the server's signature verified), else the
    /// login is refused and the session given up.
    async fn authenticate(
        &mut self,
        mechanism: Mechanism,
        credentials: &Credentials<'_>,
        secrets: &mut Vec<String>,
    ) -> Result<Vec<Response>, ImapError> {
        let mut exchange = Exchange::new(mechanism, credentials)?;
        let tag = self.conn.tag();
        let mut untagged = Vec::new();
        let initial = if self.capabilities.has("SASL-IR") {
            exchange
                .initial_response()
                .map(|r| match sasl::encode_base64(&r) {
                    empty if empty.is_empty() => "=".to_owned(),
                    encoded => encoded,
                })
        } else {
            None
        };
        let name = format!("AUTHENTICATE {mechanism}");
        let (line, shown) = match initial {
            Some(encoded) => {
                secrets.push(encoded.clone());
                (format!("{name} {encoded}"), format!("{name} ***"))
            }
            None => (name.clone(), name.clone()),
        };
        let command = Command {
            parts: vec![command::Part::Text(line.into_bytes())],
            shown,
        };
        self.conn.send(&tag, &command, false, &mut untagged).await?;
        let mut failed = None;
        for _ in 0..ROUNDS_MAX {
            match self.conn.read_response(LITERAL_MAX).await? {
                Response::Continue(text) => {
                    tracing::debug!(account = %self.conn.account, "S: + {text}");
                    let response = match failed {
                        None => exchange.respond_base64(text.as_bytes()),
                        Some(_) => Err(sasl::SaslError::UnexpectedChallenge { mechanism }),
                    };
                    match response {
                        Ok(encoded) => {
                            secrets.push(encoded.clone());
                            tracing::debug!(account = %self.conn.account, "C: ***");
                            self.conn.write(format!("{encoded}\r\n").as_bytes()).await?;
                        }
                        Err(e) => {
                            tracing::debug!(account = %self.conn.account, "C: *");
                            self.conn.write(b"*\r\n").await?;
                            failed = Some(e);
                        }
                    }
                }
                tagged @ Response::Tagged { .. } => {
                    let detail = exchange.server_error().map(str::to_owned);
                    let result = self.finish(&tag, &name, tagged, untagged);
                    if let Some(e) = failed {
                        return Err(e.into());
                    }
                    return match result {
                        Ok(responses) => {
                            exchange.finish(None)?;
                            Ok(responses)
                        }
                        Err(ImapError::Refused { command, text }) => Err(ImapError::Refused {
                            command,
                            text: match detail {
                                Some(detail) => format!("{text} ({detail})"),
                                None => text,
                            },
                        }),
                        Err(e) => Err(e),
                    };
                }
                other => untagged.push(self.note(other)?),
            }
        }
        Err(self.lost(format!("{name}: more than {ROUNDS_MAX} challenges")))
    }
}

/// Server challenges answered at most in one exchange (NTLM and SCRAM need two).
const ROUNDS_MAX: usize = 8;
