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

/// XOAUTH2 (`user=...^Aauth=Bearer ...^A^A`) and OAUTHBEARER (`n,a=user,^Aauth=Bearer
/// ...^A^A`, RFC 7628): one message with the token. A challenge after it is the server's
/// error, kept for the failure message and answered with `error_reply` (XOAUTH2: empty;
/// OAUTHBEARER: `^A`, RFC 7628 3.2.3) so that the server sends its failure reply.
pub(super) struct Bearer {
    message: Vec<u8>,
    error_reply: Vec<u8>,
    sent: bool,
    error: Option<String>,
}

impl Bearer {
    pub(super) fn xoauth2(username: &str, token: &str) -> Bearer {
        let message = format!("user={username}\x01auth=Bearer {token}\x01\x01").into_bytes();
        Bearer::new(message, Vec::new())
    }

    pub(super) fn oauthbearer(username: &str, token: &str) -> Bearer {
        let authzid = super::scram::escape_name(username);
        let message = format!("n,a={authzid},\x01auth=Bearer {token}\x01\x01").into_bytes();
        Bearer::new(message, vec![0x01])
    }

    fn new(message: Vec<u8>, error_reply: Vec<u8>) -> Bearer {
        Bearer {
            message,
            error_reply,
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
        Ok(self.error_reply.clone())
    }

    pub(super) fn server_error(&self) -> Option<&str> {
        self.error.as_deref()
    }
}
