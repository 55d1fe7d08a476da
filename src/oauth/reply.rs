//! What mailferry reads from a token endpoint through the `oauth2` crate, and how its
//! errors are told: a token reply more lenient than the crate's standard one (no
//! `token_type` needed, `expires_in` as a number or a string of digits: both are met), the
//! device-authorization reply's `message` (Microsoft's instructions), and the refusals.

use std::time::Duration;

use oauth2::basic::{BasicErrorResponse, BasicTokenType};
use oauth2::{
    AccessToken, ExtraDeviceAuthorizationFields, RefreshToken, RequestTokenError, Scope,
    TokenResponse,
};
use serde::{Deserialize, Deserializer, Serialize};

use super::OAuthError;
use super::http::Transport;
use crate::config::Password;

/// Tokens live this long when the reply does not say (RFC 6749 recommends saying).
pub const DEFAULT_LIFETIME: Duration = Duration::from_secs(3600);

/// A token reply (RFC 6749 5.1). Its `Debug` shows no token (the crate's token types
/// redact themselves).
#[derive(Debug, Deserialize, Serialize)]
pub struct Granted {
    access_token: AccessToken,
    /// Not read: the token is used as a bearer token whatever the reply says.
    #[serde(skip_deserializing, default = "bearer")]
    token_type: BasicTokenType,
    #[serde(default, deserialize_with = "lenient_seconds")]
    expires_in: Option<u64>,
    #[serde(default)]
    refresh_token: Option<RefreshToken>,
    #[serde(skip)]
    scopes: Option<Vec<Scope>>,
}

fn bearer() -> BasicTokenType {
    BasicTokenType::Bearer
}

impl TokenResponse for Granted {
    type TokenType = BasicTokenType;

    fn access_token(&self) -> &AccessToken {
        &self.access_token
    }
    fn token_type(&self) -> &BasicTokenType {
        &self.token_type
    }
    fn expires_in(&self) -> Option<Duration> {
        self.expires_in.map(Duration::from_secs)
    }
    fn refresh_token(&self) -> Option<&RefreshToken> {
        self.refresh_token.as_ref()
    }
    fn scopes(&self) -> Option<&Vec<Scope>> {
        self.scopes.as_ref()
    }
}

impl Granted {
    /// The access token, or `None` when it is empty (no token at all).
    pub fn access(&self) -> Option<Password> {
        let token = self.access_token.secret();
        (!token.is_empty()).then(|| Password::new(token.as_str()))
    }

    /// How long from now it is valid ([`DEFAULT_LIFETIME`] when the reply does not say).
    pub fn lifetime(&self) -> Duration {
        self.expires_in().unwrap_or(DEFAULT_LIFETIME)
    }

    /// A new refresh token, when the server issued one (a rotation, or the first).
    pub fn refresh(&self) -> Option<Password> {
        self.refresh_token
            .as_ref()
            .map(|t| t.secret())
            .filter(|t| !t.is_empty())
            .map(|t| Password::new(t.as_str()))
    }
}

/// A number of seconds, written as a number or a string of digits.
fn lenient_seconds<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    Ok(match Option::<serde_json::Value>::deserialize(d)? {
        Some(serde_json::Value::Number(n)) => n.as_u64(),
        Some(serde_json::Value::String(s)) => s.trim().parse().ok(),
        _ => None,
    })
}

/// The device-authorization reply's field besides RFC 8628's: Microsoft's `message`, the
/// instructions in the user's words. (The crate reads Google's `verification_url` as
/// `verification_uri`.)
#[derive(Debug, Deserialize, Serialize)]
pub struct DeviceMessage {
    /// The provider's own instructions, if it sent them.
    #[serde(default)]
    pub message: Option<String>,
}

impl ExtraDeviceAuthorizationFields for DeviceMessage {}

/// What a failed token request comes to.
#[derive(Debug)]
pub enum Failure {
    /// The endpoint answered with an OAuth2 error (RFC 6749 5.2): its code and description.
    Error {
        /// `invalid_grant`, `temporarily_unavailable`, ...
        code: String,
        /// The server's words; may be empty.
        description: String,
    },
    /// No reply, or one that is not OAuth2 (said without quoting it: it may hold a token).
    Other(OAuthError),
}

/// Reads the crate's error of a token request; `status` is the last reply's.
pub fn failure(e: RequestTokenError<Transport, BasicErrorResponse>, status: u16) -> Failure {
    match e {
        RequestTokenError::ServerResponse(e) => Failure::Error {
            code: e.error().as_ref().to_owned(),
            description: e.error_description().cloned().unwrap_or_default(),
        },
        other => Failure::Other(not_oauth(other, status, "token")),
    }
}

/// A request error other than the server's OAuth2 error, as an [`OAuthError`]: the
/// transport's failure, or a reply that is not a `what` reply, said by its status and
/// length only (the crate's parse error would quote the reply).
pub fn not_oauth<T: oauth2::ErrorResponse>(
    e: RequestTokenError<Transport, T>,
    status: u16,
    what: &str,
) -> OAuthError {
    match e {
        RequestTokenError::Request(t) => t.into(),
        RequestTokenError::Parse(_, body) => OAuthError::Failed(format!(
            "HTTP {status} without a JSON {what} reply ({} bytes)",
            body.len()
        )),
        RequestTokenError::Other(why) => OAuthError::Failed(format!("HTTP {status}: {why}")),
        // The callers read the server's errors themselves; its description, which may quote
        // a secret, is not shown here.
        RequestTokenError::ServerResponse(_) => {
            OAuthError::Failed(format!("HTTP {status}: an OAuth2 error"))
        }
    }
}

/// Whether an error code means the grant itself is refused (asking again the same way will
/// not help): a revoked or expired refresh token, a wrong client secret, missing consent.
pub fn is_refusal(code: &str) -> bool {
    matches!(
        code,
        "invalid_grant"
            | "invalid_client"
            | "unauthorized_client"
            | "access_denied"
            | "invalid_scope"
            | "expired_token"
            | "consent_required"
            | "interaction_required"
    )
}
