//! `mailferry oauth login`: the device-code flow (RFC 8628), for a gateway host without a
//! browser. The user opens the verification URL anywhere, types the code, consents; this
//! polls the token endpoint at the interval asked (`authorization_pending`: go on,
//! `slow_down`: 5 s slower) and stores the refresh token it gets.

use std::io::Write;
use std::path::Path;
use std::time::Duration;

use super::http::{self, Endpoint};
use super::reply::{self, TokenReply};
use super::{OAuthError, REQUEST_TIMEOUT, RefreshStore};
use crate::config::{AccountConfig, OAuthGrant, Password};

/// RFC 8628 3.5: `slow_down` adds 5 seconds to the interval.
const SLOW_DOWN: Duration = Duration::from_secs(5);

/// Runs the flow for `account`, printing the instructions to `out`, and stores the refresh
/// token under `state_dir`. Returns where it was stored.
pub async fn login(
    account: &AccountConfig,
    state_dir: &Path,
    out: &mut (dyn Write + Send),
) -> Result<String, OAuthError> {
    let fail = |why: String| OAuthError::Login(why);
    let Some(oauth) = &account.oauth else {
        return Err(fail(format!(
            "account {} has no oauth: block; it logs in with its password",
            account.name
        )));
    };
    if oauth.grant == OAuthGrant::ClientCredentials {
        return Err(fail(format!(
            "account {} uses grant: client_credentials, which needs no login (the client secret gets each token)",
            account.name
        )));
    }
    let Some(device_url) = &oauth.device_url else {
        return Err(fail(format!(
            "account {}: the generic provider needs device_url for the device-code login",
            account.name
        )));
    };
    let device_endpoint = Endpoint::parse(device_url).map_err(fail)?;
    let token_endpoint = Endpoint::parse(&oauth.token_url).map_err(fail)?;
    let secret = oauth.client_secret.as_ref().map(Password::expose);

    let mut pairs = vec![("client_id", oauth.client_id.as_str())];
    if !oauth.scope.is_empty() {
        pairs.push(("scope", oauth.scope.as_str()));
    }
    let reply = http::post_form(&device_endpoint, &http::form(&pairs), REQUEST_TIMEOUT).await?;
    let code = reply::device_reply(reply.status, &reply.body).map_err(fail)?;
    let minutes = code.lifetime.as_secs().div_ceil(60);
    let _ = writeln!(
        out,
        "To let mailferry read the mailbox of account {} ({}):\n  open  {}\n  enter {}\n(the code is valid for {minutes} minutes; waiting for your consent)",
        account.name, account.username, code.verification_uri, code.user_code
    );
    if let Some(message) = &code.message {
        let _ = writeln!(out, "{message}");
    }
    let _ = out.flush();

    let deadline = tokio::time::Instant::now() + code.lifetime;
    let mut interval = code.interval;
    let mut pairs = vec![
        ("grant_type", "urn:ietf:params:oauth:grant-type:device_code"),
        ("device_code", code.device_code.expose()),
        ("client_id", oauth.client_id.as_str()),
    ];
    if let Some(secret) = secret {
        pairs.push(("client_secret", secret));
    }
    let form = http::form(&pairs);
    loop {
        tokio::time::sleep(interval).await;
        if tokio::time::Instant::now() > deadline {
            return Err(fail(
                "the code expired before consent was given: run the login again".to_owned(),
            ));
        }
        let reply = http::post_form(&token_endpoint, &form, REQUEST_TIMEOUT).await?;
        match reply::token_reply(reply.status, &reply.body).map_err(OAuthError::Failed)? {
            TokenReply::Granted(granted) => {
                let Some(refresh) = granted.refresh_token else {
                    return Err(fail(
                        "the server granted access but no refresh token (for Microsoft, the scope needs offline_access)".to_owned(),
                    ));
                };
                let store = RefreshStore::new(state_dir, &account.name);
                store.save(&refresh)?;
                return Ok(store.path().display().to_string());
            }
            TokenReply::Error { code, .. } if code == "authorization_pending" => {}
            TokenReply::Error { code, .. } if code == "slow_down" => interval += SLOW_DOWN,
            TokenReply::Error { code, description } => {
                let why = match code.as_str() {
                    "access_denied" => "consent was refused".to_owned(),
                    "expired_token" => {
                        "the code expired before consent was given: run the login again".to_owned()
                    }
                    _ => format!("the server refused: {code} {description}"),
                };
                return Err(fail(why.trim().to_owned()));
            }
        }
    }
}
