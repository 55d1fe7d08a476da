//! `mailferry oauth login`: the device-code flow (RFC 8628), for a gateway host without a
//! browser. The user opens the verification URL anywhere, types the code, consents; this
//! polls the token endpoint at the interval asked (`authorization_pending`: go on,
//! `slow_down`: 5 s slower) and stores the refresh token it gets.

use std::io::Write;
use std::path::Path;
use std::time::Duration;

use super::http::{self, Endpoint, Route};
use super::reply::{self, TokenReply};
use super::{OAuthError, REQUEST_TIMEOUT, RefreshStore};
use crate::config::{AccountConfig, OAuthConfig, OAuthGrant, Password, RelayAuth};

/// RFC 8628 3.5: `slow_down` adds 5 seconds to the interval.
const SLOW_DOWN: Duration = Duration::from_secs(5);

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
    let device_endpoint = Endpoint::parse(device_url).map_err(fail)?;
    let token_endpoint = Endpoint::parse(&oauth.token_url).map_err(fail)?;
    let secret = oauth.client_secret.as_ref().map(Password::expose);

    let mut pairs = vec![("client_id", oauth.client_id.as_str())];
    if !oauth.scope.is_empty() {
        pairs.push(("scope", oauth.scope.as_str()));
    }
    let reply = http::post_form(
        route,
        &device_endpoint,
        &http::form(&pairs),
        REQUEST_TIMEOUT,
    )
    .await?;
    let code = reply::device_reply(reply.status, &reply.body).map_err(fail)?;
    let minutes = code.lifetime.as_secs().div_ceil(60);
    let _ = writeln!(
        out,
        "To let mailferry {reads} ({username}):\n  open  {}\n  enter {}\n(the code is valid for {minutes} minutes; waiting for your consent)",
        code.verification_uri, code.user_code
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
        let reply = http::post_form(route, &token_endpoint, &form, REQUEST_TIMEOUT).await?;
        match reply::token_reply(reply.status, &reply.body).map_err(OAuthError::Failed)? {
            TokenReply::Granted(granted) => {
                let Some(refresh) = granted.refresh_token else {
                    return Err(fail(
                        "the server granted access but no refresh token (for Microsoft, the scope needs offline_access)".to_owned(),
                    ));
                };
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
