//! `mailferry oauth login`: the device-code flow (RFC 8628), for a gateway host without a
//! browser. The user opens the verification URL anywhere, types the code, consents; the
//! `oauth2` crate polls the token endpoint at the interval asked (`authorization_pending`:
//! go on, `slow_down`: 5 s slower) until the code expires; this stores the refresh token
//! it gets.

use std::io::Write;
use std::path::Path;

use oauth2::{
    DeviceAuthorizationResponse, DeviceAuthorizationUrl, DeviceCodeErrorResponseType,
    RequestTokenError,
};

use super::http::{Http, Route};
use super::reply::{DeviceMessage, Granted, not_oauth};
use super::{OAuthError, REQUEST_TIMEOUT, RefreshStore, client, scopes};
use crate::config::{AccountConfig, OAuthConfig, OAuthGrant, Password, RelayAuth};

/// Runs the flow for `account`, printing the instructions to `out`, and stores the refresh
/// token under `state_dir`. Returns where it was stored.
pub async fn login(
    account: &AccountConfig,
    state_dir: &Path,
    out: &mut (dyn Write + Send),
) -> Result<String, OAuthError> {
    let who = format!("account {}", account.name);
    let reads = format!("the mailbox of account {}", account.name);
    let oauth = account.oauth.as_ref().ok_or_else(|| {
        OAuthError::Login(format!(
            "{who} has no oauth: block; it logs in with its password"
        ))
    })?;
    let store = RefreshStore::new(state_dir, &account.name);
    let route = Route::of(oauth, account.proxy.clone());
    flow(&who, &reads, &account.username, oauth, &route, &store, out).await
}

/// [`login`] for the relay's SMTP AUTH (`relay.oauth`): the refresh token goes to
/// `state_dir/oauth/@relay.refresh_token`.
pub async fn login_relay(
    auth: Option<&RelayAuth>,
    out: &mut (dyn Write + Send),
) -> Result<String, OAuthError> {
    let Some((auth, oauth)) = auth.and_then(|a| Some((a, a.oauth.as_ref()?))) else {
        return Err(OAuthError::Login(
            "the relay has no relay.oauth block: it logs in with relay.password, or not at all"
                .to_owned(),
        ));
    };
    let store = RefreshStore::new(&auth.state_dir, super::RELAY_SOURCE);
    flow(
        "the relay",
        "log in to the relay (SMTP AUTH)",
        &auth.username,
        oauth,
        &Route::of(oauth, None),
        &store,
        out,
    )
    .await
}

/// The device-code flow for `who`, printing what to do for the consent to `reads` as
/// `username`, its requests sent by `route`; the refresh token saved in `store`.
async fn flow(
    who: &str,
    reads: &str,
    username: &str,
    oauth: &OAuthConfig,
    route: &Route,
    store: &RefreshStore,
    out: &mut (dyn Write + Send),
) -> Result<String, OAuthError> {
    let fail = |why: String| OAuthError::Login(why);
    if oauth.grant == OAuthGrant::ClientCredentials {
        return Err(fail(format!(
            "{who} uses grant: client_credentials, which needs no login (the client secret gets each token)"
        )));
    }
    let Some(device_url) = &oauth.device_url else {
        return Err(fail(format!(
            "{who}: the generic provider needs device_url for the device-code login"
        )));
    };
    let device_url = DeviceAuthorizationUrl::new(device_url.clone())
        .map_err(|e| fail(format!("device_url `{device_url}`: {e}")))?;
    // The device endpoint is asked with the client id alone (RFC 8628 3.1); the polls
    // authenticate the client as the token requests do.
    let asker = client(oauth, None)?.set_device_authorization_url(device_url);
    let poller = client(oauth, oauth.client_secret.as_ref())?;
    let http = Http::new(route, REQUEST_TIMEOUT);
    let secrets: Vec<&str> = oauth.client_secret.iter().map(Password::expose).collect();

    let code: DeviceAuthorizationResponse<DeviceMessage> = asker
        .exchange_device_code()
        .add_scopes(scopes(&oauth.scope))
        .request_async(&http)
        .await
        .map_err(|e| match e {
            RequestTokenError::ServerResponse(e) => {
                fail(refused(e.error().as_ref(), e.error_description(), &secrets))
            }
            other => not_oauth(other, http.status(), "device authorization"),
        })?;
    let minutes = code.expires_in().as_secs().div_ceil(60);
    let _ = writeln!(
        out,
        "To let mailferry {reads} ({username}):\n  open  {}\n  enter {}\n(the code is valid for {minutes} minutes; waiting for your consent)",
        code.verification_uri().as_str(),
        code.user_code().secret()
    );
    if let Some(message) = &code.extra_fields().message {
        let _ = writeln!(out, "{message}");
    }
    let _ = out.flush();

    // The crate polls at the interval asked, 5 s slower after each slow_down, and goes on
    // after authorization_pending, until the code expires; an exchange that fails (no
    // reply) ends the login here rather than being retried.
    let poll =
        poller
            .exchange_device_access_token(&code)
            .request_async(&http, tokio::time::sleep, None);
    let granted: Granted = tokio::select! {
        result = poll => result.map_err(|e| match e {
            RequestTokenError::ServerResponse(e) => fail(match e.error() {
                DeviceCodeErrorResponseType::AccessDenied => "consent was refused".to_owned(),
                DeviceCodeErrorResponseType::ExpiredToken => {
                    "the code expired before consent was given: run the login again".to_owned()
                }
                other => refused(other.as_ref(), e.error_description(), &secrets),
            }),
            other => not_oauth(other, http.status(), "token"),
        })?,
        broken = http.broken() => return Err(broken.into()),
    };
    let Some(refresh) = granted.refresh() else {
        return Err(fail(
            "the server granted access but no refresh token (for Microsoft, the scope needs offline_access)".to_owned(),
        ));
    };
    store.save(&refresh)?;
    Ok(store.path().display().to_string())
}

/// `the server refused: CODE DESCRIPTION`, no secret in it.
fn refused(code: &str, description: Option<&String>, secrets: &[&str]) -> String {
    let description = description.map_or(String::new(), |d| {
        let owned: Vec<String> = secrets.iter().map(|s| (*s).to_owned()).collect();
        crate::fetch::pop3::redact(d, &owned)
    });
    format!("the server refused: {code} {description}")
        .trim()
        .to_owned()
}
