//! The token endpoints' replies (RFC 6749 5.1/5.2, RFC 8628 3.2/3.5), free of I/O: a token
//! granted, an error with its code, or the device-authorization answer.

use std::time::Duration;

use serde::Deserialize;

use crate::config::Password;

/// Tokens live this long when the reply does not say (RFC 6749 recommends saying).
const DEFAULT_LIFETIME: Duration = Duration::from_secs(3600);
/// RFC 8628 3.5: poll every 5 s unless told otherwise.
const DEFAULT_INTERVAL: Duration = Duration::from_secs(5);

/// A token granted.
#[derive(Debug, Clone)]
pub struct Granted {
    /// The access token.
    pub access_token: Password,
    /// How long from now it is valid.
    pub lifetime: Duration,
    /// A new refresh token, when the server issued one (a rotation, or the first).
    pub refresh_token: Option<Password>,
}

/// What a token endpoint answered.
#[derive(Debug, Clone)]
pub enum TokenReply {
    /// A token.
    Granted(Granted),
    /// An error (RFC 6749 5.2): its `error` code and `error_description`.
    Error {
        /// `invalid_grant`, `authorization_pending`, ...
        code: String,
        /// The server's words; may be empty.
        description: String,
    },
}

#[derive(Deserialize)]
struct RawToken {
    access_token: Option<String>,
    expires_in: Option<serde_json::Value>,
    refresh_token: Option<String>,
    error: Option<String>,
    error_description: Option<String>,
}

/// Reads a token endpoint's reply; `Err` says why it is not one (never quoting a token).
pub fn token_reply(status: u16, body: &[u8]) -> Result<TokenReply, String> {
    let raw: RawToken = serde_json::from_slice(body).map_err(|_| {
        format!(
            "HTTP {status} without a JSON token reply ({} bytes)",
            body.len()
        )
    })?;
    if let Some(code) = raw.error {
        return Ok(TokenReply::Error {
            code,
            description: raw.error_description.unwrap_or_default(),
        });
    }
    match raw.access_token {
        Some(token) if (200..300).contains(&status) && !token.is_empty() => {
            Ok(TokenReply::Granted(Granted {
                access_token: Password::new(token),
                lifetime: seconds(raw.expires_in.as_ref()).unwrap_or(DEFAULT_LIFETIME),
                refresh_token: raw
                    .refresh_token
                    .filter(|t| !t.is_empty())
                    .map(Password::new),
            }))
        }
        _ => Err(format!("HTTP {status} with neither a token nor an error")),
    }
}

/// The device-authorization reply (RFC 8628 3.2; Google says `verification_url`).
#[derive(Debug, Clone)]
pub struct DeviceCode {
    /// What the client polls with; a secret.
    pub device_code: Password,
    /// What the user types in.
    pub user_code: String,
    /// Where the user goes.
    pub verification_uri: String,
    /// The provider's own instructions, if it sent them (Microsoft does).
    pub message: Option<String>,
    /// How long the code is valid.
    pub lifetime: Duration,
    /// How often to poll.
    pub interval: Duration,
}

#[derive(Deserialize)]
struct RawDevice {
    device_code: Option<String>,
    user_code: Option<String>,
    verification_uri: Option<String>,
    verification_url: Option<String>,
    message: Option<String>,
    expires_in: Option<serde_json::Value>,
    interval: Option<serde_json::Value>,
    error: Option<String>,
    error_description: Option<String>,
}

/// Reads the device-authorization reply.
pub fn device_reply(status: u16, body: &[u8]) -> Result<DeviceCode, String> {
    let raw: RawDevice = serde_json::from_slice(body)
        .map_err(|_| format!("HTTP {status} without a JSON reply ({} bytes)", body.len()))?;
    if let Some(code) = raw.error {
        let description = raw.error_description.unwrap_or_default();
        return Err(format!("the server refused: {code} {description}")
            .trim()
            .to_owned());
    }
    match (
        raw.device_code,
        raw.user_code,
        raw.verification_uri.or(raw.verification_url),
    ) {
        (Some(device_code), Some(user_code), Some(verification_uri)) => Ok(DeviceCode {
            device_code: Password::new(device_code),
            user_code,
            verification_uri,
            message: raw.message,
            lifetime: seconds(raw.expires_in.as_ref()).unwrap_or(Duration::from_secs(900)),
            interval: seconds(raw.interval.as_ref()).unwrap_or(DEFAULT_INTERVAL),
        }),
        _ => Err(format!(
            "HTTP {status}: the reply lacks device_code, user_code or verification_uri"
        )),
    }
}

/// A number of seconds, written as a number or a string of digits (both are seen).
fn seconds(value: Option<&serde_json::Value>) -> Option<Duration> {
    let n = match value? {
        serde_json::Value::Number(n) => n.as_u64()?,
        serde_json::Value::String(s) => s.trim().parse().ok()?,
        _ => return None,
    };
    Some(Duration::from_secs(n))
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
