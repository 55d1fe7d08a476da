//! The mechanisms that carry the secret as it is: PLAIN (RFC 4616), LOGIN, XOAUTH2 and
//! OAUTHBEARER (RFC 7628). They are used only over TLS (see `Mechanism::is_cleartext`).

use super::{Mechanism, SaslError};

/// PLAIN: `\0user\0password`, once.
pub(super) struct Plain {
    message: Vec<u8>,
    sent: bool,
}

impl Plain {
    pub(super) fn new(username: &str, password: &str) -> Plain {
        let mut message = Vec::with_capacity(username.len() + password.len() + 2);
        message.push(0);
        message.extend_from_slice(username.as_bytes());
        message.push(0);
        message.extend_from_slice(password.as_bytes());
        Plain {
            message,
            sent: false,
        }
    }

    pub(super) fn initial(&mut self) -> Option<Vec<u8>> {
        self.sent = true;
        Some(self.message.clone())
    }

    /// The message, when the server asks for it with an empty challenge.
    pub(super) fn respond(&mut self) -> Result<Vec<u8>, SaslError> {
        if self.sent {
            return Err(SaslError::UnexpectedChallenge {
                mechanism: Mechanism::Plain,
            });
        }
        self.sent = true;
        Ok(self.message.clone())
    }
}

/// LOGIN: the server asks for the user name, then for the password.
pub(super) struct Login {
    username: String,
    password: String,
    step: u8,
}

impl Login {
    pub(super) fn new(username: &str, password: &str) -> Login {
        Login {
            username: username.to_owned(),
            password: password.to_owned(),
            step: 0,
        }
    }

    pub(super) fn respond(&mut self, _challenge: &[u8]) -> Result<Vec<u8>, SaslError> {
        // The prompts ("Username:", "Password:") vary between servers; their order does not.
        self.step += 1;
        match self.step {
            1 => Ok(self.username.as_bytes().to_vec()),
            2 => Ok(self.password.as_bytes().to_vec()),
            _ => Err(SaslError::UnexpectedChallenge {
                mechanism: Mechanism::Login,
            }),
        }
    }
}

/// The error a token mechanism's server sends as a challenge, kept for the failure message.
fn error_text(challenge: &[u8]) -> String {
    let text = String::from_utf8_lossy(challenge);
    let text: String = text.chars().filter(|c| !c.is_control()).take(300).collect();
    text.trim().to_owned()
}

/// XOAUTH2: `user=...^Aauth=Bearer ...^A^A`; a challenge after it is the server's JSON
/// error, answered with an empty line so that the server sends its failure reply.
pub(super) struct XOAuth2 {
    message: Vec<u8>,
    sent: bool,
    error: Option<String>,
}

impl XOAuth2 {
    pub(super) fn new(username: &str, token: &str) -> XOAuth2 {
        let message = format!("user={username}\x01auth=Bearer {token}\x01\x01").into_bytes();
        XOAuth2 {
            message,
            sent: false,
            error: None,
        }
    }

    pub(super) fn initial(&mut self) -> Option<Vec<u8>> {
        self.sent = true;
        Some(self.message.clone())
    }

    pub(super) fn respond(&mut self, challenge: &[u8]) -> Result<Vec<u8>, SaslError> {
        if !self.sent {
            self.sent = true;
            return Ok(self.message.clone());
        }
        self.error = Some(error_text(challenge));
        Ok(Vec::new())
    }

    pub(super) fn server_error(&self) -> Option<&str> {
        self.error.as_deref()
    }
}

/// OAUTHBEARER: `n,a=user,^Aauth=Bearer ...^A^A`; a challenge after it is the server's
/// error, answered with `^A` (RFC 7628 3.2.3).
pub(super) struct OAuthBearer {
    message: Vec<u8>,
    sent: bool,
    error: Option<String>,
}

impl OAuthBearer {
    pub(super) fn new(username: &str, token: &str) -> OAuthBearer {
        let authzid = super::scram::escape_name(username);
        let message = format!("n,a={authzid},\x01auth=Bearer {token}\x01\x01").into_bytes();
        OAuthBearer {
            message,
            sent: false,
            error: None,
        }
    }

    pub(super) fn initial(&mut self) -> Option<Vec<u8>> {
        self.sent = true;
        Some(self.message.clone())
    }

    pub(super) fn respond(&mut self, challenge: &[u8]) -> Result<Vec<u8>, SaslError> {
        if !self.sent {
            self.sent = true;
            return Ok(self.message.clone());
        }
        self.error = Some(error_text(challenge));
        Ok(vec![0x01])
    }

    pub(super) fn server_error(&self) -> Option<&str> {
        self.error.as_deref()
    }
}
