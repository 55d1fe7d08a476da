//! SASL, client side, free of I/O: one implementation for POP3 (`AUTH`), IMAP
//! (`AUTHENTICATE`) and the relay's SMTP `AUTH`.
//!
//! - [`Mechanism`]: SCRAM-SHA-256 and SCRAM-SHA-1 (RFC 5802/7677, the server's signature
//!   checked), CRAM-MD5 (RFC 2195), NTLM (NTLMv2, MS-NLMP; what Microsoft calls SPA), PLAIN,
//!   LOGIN, XOAUTH2 and OAUTHBEARER (RFC 7628, from a bearer token).
//! - [`Exchange`]: one authentication, step by step: the initial response, a response to each
//!   server challenge, and the check of the server's final message.
//! - [`choose`]: from what the server advertises, the strongest [`Method`] the account may use.
//!
//! Bytes in and out: the base64 framing (`+ ...`, `334 ...`) belongs to each protocol.
//!
//! ```ignore
//! let mut exchange = Exchange::new(Mechanism::ScramSha256, &credentials)?;
//! let first = exchange.initial_response();           // sent with the command, or after "+"
//! let reply = exchange.respond(&server_challenge)?;  // for every "+ challenge"
//! exchange.finish(None)?;                            // on the server's success reply
//! ```

mod cram_md5;
mod negotiate;
mod ntlm;
mod scram;
mod simple;
#[cfg(test)]
mod tests;

use std::fmt;

pub use negotiate::{NoMethod, Offer, Policy, choose};

/// A SASL mechanism mailferry can authenticate with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Mechanism {
    /// SCRAM-SHA-256 (RFC 7677): a salted challenge-response; the server proves it knows the
    /// password too.
    ScramSha256,
    /// SCRAM-SHA-1 (RFC 5802).
    ScramSha1,
    /// CRAM-MD5 (RFC 2195): HMAC-MD5 of the server's challenge.
    CramMd5,
    /// NTLM (MS-NLMP), answered with NTLMv2; Microsoft's "Secure Password Authentication".
    Ntlm,
    /// PLAIN (RFC 4616): the password as it is.
    Plain,
    /// LOGIN: user name and password, each asked for by the server.
    Login,
    /// XOAUTH2 (Google, Microsoft): a bearer token.
    XOAuth2,
    /// OAUTHBEARER (RFC 7628): a bearer token.
    OAuthBearer,
}

impl Mechanism {
    /// Every mechanism, strongest first.
    pub const ALL: [Mechanism; 8] = [
        Mechanism::OAuthBearer,
        Mechanism::XOAuth2,
        Mechanism::ScramSha256,
        Mechanism::ScramSha1,
        Mechanism::CramMd5,
        Mechanism::Ntlm,
        Mechanism::Plain,
        Mechanism::Login,
    ];

    /// The SASL name, as servers advertise it.
    pub fn name(self) -> &'static str {
        match self {
            Mechanism::ScramSha256 => "SCRAM-SHA-256",
            Mechanism::ScramSha1 => "SCRAM-SHA-1",
            Mechanism::CramMd5 => "CRAM-MD5",
            Mechanism::Ntlm => "NTLM",
            Mechanism::Plain => "PLAIN",
            Mechanism::Login => "LOGIN",
            Mechanism::XOAuth2 => "XOAUTH2",
            Mechanism::OAuthBearer => "OAUTHBEARER",
        }
    }

    /// The mechanism of an advertised SASL name (any letter case); `None` for one mailferry
    /// does not know (GSSAPI, SCRAM-SHA-256-PLUS, ...).
    pub fn from_name(name: &str) -> Option<Mechanism> {
        Mechanism::ALL
            .into_iter()
            .find(|m| m.name().eq_ignore_ascii_case(name))
    }

    /// Whether the secret crosses the wire readable (the password, or a replayable token):
    /// such a mechanism is used only over TLS, unless the account says `tls: none`.
    pub fn is_cleartext(self) -> bool {
        matches!(
            self,
            Mechanism::Plain | Mechanism::Login | Mechanism::XOAuth2 | Mechanism::OAuthBearer
        )
    }

    /// Whether it takes a bearer token rather than a password.
    pub fn uses_token(self) -> bool {
        matches!(self, Mechanism::XOAuth2 | Mechanism::OAuthBearer)
    }
}

impl fmt::Display for Mechanism {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A way to log in: a SASL mechanism, or one of the protocols' own commands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Method {
    /// A SASL mechanism (POP3 `AUTH`, IMAP `AUTHENTICATE`, SMTP `AUTH`).
    Sasl(Mechanism),
    /// POP3 `APOP` (RFC 1939): an MD5 digest of the greeting's timestamp and the password.
    Apop,
    /// The protocol's own password command: POP3 `USER`/`PASS`, IMAP `LOGIN`.
    Password,
}

impl Method {
    /// Every method with its name in the configuration (`auth_mechanisms:`), strongest first.
    pub const CONFIG_NAMES: [(&'static str, Method); 10] = [
        ("oauthbearer", Method::Sasl(Mechanism::OAuthBearer)),
        ("xoauth2", Method::Sasl(Mechanism::XOAuth2)),
        ("scram-sha-256", Method::Sasl(Mechanism::ScramSha256)),
        ("scram-sha-1", Method::Sasl(Mechanism::ScramSha1)),
        ("cram-md5", Method::Sasl(Mechanism::CramMd5)),
        ("apop", Method::Apop),
        ("ntlm", Method::Sasl(Mechanism::Ntlm)),
        ("plain", Method::Sasl(Mechanism::Plain)),
        ("login", Method::Sasl(Mechanism::Login)),
        ("password", Method::Password),
    ];

    /// The name in the configuration (`scram-sha-256`, `apop`, `password`).
    pub fn config_name(self) -> &'static str {
        Method::CONFIG_NAMES
            .iter()
            .find(|(_, m)| *m == self)
            .map_or("password", |(name, _)| name)
    }

    /// The method of a configuration name (exact, lower case).
    pub fn from_config_name(name: &str) -> Option<Method> {
        Method::CONFIG_NAMES
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, m)| *m)
    }

    /// Whether the secret crosses the wire readable (see [`Mechanism::is_cleartext`]).
    pub fn is_cleartext(self) -> bool {
        match self {
            Method::Sasl(m) => m.is_cleartext(),
            Method::Apop => false,
            Method::Password => true,
        }
    }

    /// Whether it takes a bearer token rather than a password.
    pub fn uses_token(self) -> bool {
        matches!(self, Method::Sasl(m) if m.uses_token())
    }

    /// How strong it is, for [`choose`]: higher is stronger. OAuth2 first (an account with
    /// a token has no password to use), then SCRAM-SHA-256 > SCRAM-SHA-1 > CRAM-MD5 / APOP /
    /// NTLM > PLAIN > LOGIN > the protocol's password command.
    pub fn strength(self) -> u8 {
        match self {
            Method::Sasl(Mechanism::OAuthBearer) => 10,
            Method::Sasl(Mechanism::XOAuth2) => 9,
            Method::Sasl(Mechanism::ScramSha256) => 8,
            Method::Sasl(Mechanism::ScramSha1) => 7,
            Method::Sasl(Mechanism::CramMd5) => 6,
            Method::Apop => 5,
            Method::Sasl(Mechanism::Ntlm) => 4,
            Method::Sasl(Mechanism::Plain) => 3,
            Method::Sasl(Mechanism::Login) => 2,
            Method::Password => 1,
        }
    }
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Method::Sasl(m) => f.write_str(m.name()),
            Method::Apop => f.write_str("APOP"),
            Method::Password => f.write_str("password command (USER/PASS, LOGIN)"),
        }
    }
}

/// Who logs in, and with what.
#[derive(Clone, Copy)]
pub struct Credentials<'a> {
    /// The authentication identity (the login name). For NTLM, `DOMAIN\user` names the
    /// domain; a plain `user` has none.
    pub username: &'a str,
    /// The password or the bearer token.
    pub secret: Secret<'a>,
}

impl fmt::Debug for Credentials<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .field("secret", &"***")
            .finish()
    }
}

/// The account's secret.
#[derive(Clone, Copy)]
pub enum Secret<'a> {
    /// A password (every mechanism but XOAUTH2 and OAUTHBEARER).
    Password(&'a str),
    /// An OAuth2 access token (XOAUTH2, OAUTHBEARER only).
    BearerToken(&'a str),
}

impl<'a> Secret<'a> {
    /// What an account logs in with: its OAuth2 access token when it has one (without it an
    /// OAuth2 account gets "XOAUTH2 needs an OAuth2 token"), else its password; and every
    /// string to blank in the server's replies (both, when both are set).
    pub fn of_login(password: &'a str, token: Option<&'a str>) -> (Secret<'a>, Vec<String>) {
        let mut secrets = vec![password.to_owned()];
        secrets.extend(token.map(str::to_owned));
        let secret = match token {
            Some(t) => Secret::BearerToken(t),
            None => Secret::Password(password),
        };
        (secret, secrets)
    }

    /// The secret itself, for the callers' redaction of server replies.
    pub fn expose(&self) -> &str {
        match self {
            Secret::Password(s) | Secret::BearerToken(s) => s,
        }
    }
}

/// Why an exchange cannot go on. None of them carries the secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SaslError {
    /// A mechanism that takes a token was given a password, or the other way round.
    #[error("{mechanism} needs {needs}, and the account has none")]
    WrongSecret {
        /// The mechanism.
        mechanism: Mechanism,
        /// "a password" or "an OAuth2 token".
        needs: &'static str,
    },
    /// The server's challenge is not what the mechanism expects.
    #[error("{mechanism}: the server's challenge is malformed: {what}")]
    Malformed {
        /// The mechanism.
        mechanism: Mechanism,
        /// What is wrong with it.
        what: String,
    },
    /// The server could not prove it knows the password (a wrong or missing SCRAM server
    /// signature): it may be an impostor, so the login is abandoned.
    #[error("{mechanism}: the server did not prove that it knows the password ({what}); refused")]
    ServerNotVerified {
        /// The mechanism.
        mechanism: Mechanism,
        /// Wrong signature, or none.
        what: &'static str,
    },
    /// The server said why it refuses, inside the exchange (SCRAM `e=`, an OAuth2 error).
    #[error("{mechanism}: the server refused: {message}")]
    Refused {
        /// The mechanism.
        mechanism: Mechanism,
        /// The server's words.
        message: String,
    },
    /// A challenge after the exchange was complete.
    #[error("{mechanism}: the server sent a challenge after the last response")]
    UnexpectedChallenge {
        /// The mechanism.
        mechanism: Mechanism,
    },
    /// The system's random number generator failed.
    #[error("no random bytes for the {mechanism} nonce")]
    Random {
        /// The mechanism.
        mechanism: Mechanism,
    },
}

/// One authentication with one mechanism: feed it the server's challenges, send what it
/// returns. Its `Debug` shows the mechanism only.
pub struct Exchange {
    inner: Inner,
}

enum Inner {
    Plain(simple::Plain),
    Login(simple::Login),
    /// XOAUTH2 or OAUTHBEARER, told apart by the mechanism kept beside it.
    Bearer(Mechanism, simple::Bearer),
    CramMd5(cram_md5::CramMd5),
    Scram(scram::Scram),
    Ntlm(ntlm::Ntlm),
}

impl fmt::Debug for Exchange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Exchange")
            .field("mechanism", &self.mechanism())
            .finish_non_exhaustive()
    }
}

impl Exchange {
    /// Starts an exchange. Fails when the secret does not suit the mechanism (a token for
    /// SCRAM, a password for XOAUTH2) or no random nonce can be had.
    pub fn new(mechanism: Mechanism, credentials: &Credentials<'_>) -> Result<Exchange, SaslError> {
        let username = credentials.username;
        let secret = match (credentials.secret, mechanism.uses_token()) {
            (Secret::Password(s), false) | (Secret::BearerToken(s), true) => s,
            (_, token) => {
                return Err(SaslError::WrongSecret {
                    mechanism,
                    needs: if token {
                        "an OAuth2 token"
                    } else {
                        "a password"
                    },
                });
            }
        };
        let inner = match mechanism {
            Mechanism::Plain => Inner::Plain(simple::Plain::new(username, secret)),
            Mechanism::Login => Inner::Login(simple::Login::new(username, secret)),
            Mechanism::XOAuth2 => {
                Inner::Bearer(mechanism, simple::Bearer::xoauth2(username, secret))
            }
            Mechanism::OAuthBearer => {
                Inner::Bearer(mechanism, simple::Bearer::oauthbearer(username, secret))
            }
            Mechanism::CramMd5 => Inner::CramMd5(cram_md5::CramMd5::new(username, secret)),
            Mechanism::ScramSha256 | Mechanism::ScramSha1 => {
                let nonce = random_nonce(mechanism)?;
                Inner::Scram(scram::Scram::new(mechanism, username, secret, nonce))
            }
            Mechanism::Ntlm => {
                let mut client_challenge = [0u8; 8];
                fill_random(&mut client_challenge, mechanism)?;
                Inner::Ntlm(ntlm::Ntlm::new(username, secret, client_challenge, None))
            }
        };
        Ok(Exchange { inner })
    }

    /// The mechanism of this exchange.
    pub fn mechanism(&self) -> Mechanism {
        match &self.inner {
            Inner::Plain(_) => Mechanism::Plain,
            Inner::Login(_) => Mechanism::Login,
            Inner::Bearer(mechanism, _) => *mechanism,
            Inner::CramMd5(_) => Mechanism::CramMd5,
            Inner::Scram(s) => s.mechanism(),
            Inner::Ntlm(_) => Mechanism::Ntlm,
        }
    }

    /// The client's first message, for mechanisms that speak first (PLAIN, SCRAM, NTLM,
    /// XOAUTH2, OAUTHBEARER); `None` for those where the server speaks first (CRAM-MD5,
    /// LOGIN). Send it with the command (SASL-IR, SMTP) or, if the protocol cannot, skip
    /// this call and answer the server's empty challenge with [`respond`](Exchange::respond),
    /// which then returns the same message.
    pub fn initial_response(&mut self) -> Option<Vec<u8>> {
        match &mut self.inner {
            Inner::Plain(m) => m.initial(),
            Inner::Login(_) | Inner::CramMd5(_) => None,
            Inner::Bearer(_, m) => m.initial(),
            Inner::Scram(m) => Some(m.client_first()),
            Inner::Ntlm(m) => Some(m.negotiate()),
        }
    }

    /// The response to one server challenge (decoded from the protocol's base64). An error
    /// means the exchange must be cancelled (`*`) and the login refused.
    pub fn respond(&mut self, challenge: &[u8]) -> Result<Vec<u8>, SaslError> {
        match &mut self.inner {
            Inner::Plain(m) => m.respond(),
            Inner::Login(m) => m.respond(challenge),
            Inner::Bearer(_, m) => m.respond(challenge),
            Inner::CramMd5(m) => m.respond(challenge),
            Inner::Scram(m) => m.respond(challenge),
            Inner::Ntlm(m) => m.respond(challenge),
        }
    }

    /// [`respond`](Exchange::respond) for a challenge as the protocols carry it, in base64,
    /// the response in base64 too (empty for an empty response).
    pub fn respond_base64(&mut self, challenge: &[u8]) -> Result<String, SaslError> {
        let challenge = decode_base64(challenge).ok_or_else(|| SaslError::Malformed {
            mechanism: self.mechanism(),
            what: "the challenge is not base64".to_owned(),
        })?;
        self.respond(&challenge).map(|r| encode_base64(&r))
    }

    /// Called on the server's success reply, with the additional data it carried, if any
    /// (SMTP `235`, IMAP `OK` cannot; some servers put SCRAM's server-final there). Fails
    /// when the server has not proved itself (SCRAM without a verified server signature):
    /// the session must then be dropped, its login not trusted.
    pub fn finish(&mut self, additional: Option<&[u8]>) -> Result<(), SaslError> {
        match &mut self.inner {
            Inner::Scram(m) => m.finish(additional),
            _ => Ok(()),
        }
    }

    /// The server's error detail seen in the exchange (XOAUTH2's JSON status, OAUTHBEARER's
    /// error), for the failure message; `None` if it sent none.
    pub fn server_error(&self) -> Option<&str> {
        match &self.inner {
            Inner::Bearer(_, m) => m.server_error(),
            _ => None,
        }
    }
}

/// Standard base64 with padding, for the protocols' framing of SASL messages.
pub fn encode_base64(data: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(data)
}

/// Decodes a server challenge's base64 (padding optional, surrounding spaces ignored);
/// `None` when it is not base64.
pub fn decode_base64(text: &[u8]) -> Option<Vec<u8>> {
    use base64::Engine as _;
    let text = text.trim_ascii();
    base64::engine::general_purpose::STANDARD
        .decode(text)
        .or_else(|_| base64::engine::general_purpose::STANDARD_NO_PAD.decode(text))
        .ok()
}

fn fill_random(out: &mut [u8], mechanism: Mechanism) -> Result<(), SaslError> {
    use ring::rand::SecureRandom as _;
    ring::rand::SystemRandom::new()
        .fill(out)
        .map_err(|_| SaslError::Random { mechanism })
}

/// A SCRAM client nonce: 18 random bytes in base64 (printable, never a comma).
fn random_nonce(mechanism: Mechanism) -> Result<String, SaslError> {
    let mut bytes = [0u8; 18];
    fill_random(&mut bytes, mechanism)?;
    Ok(encode_base64(&bytes))
}
