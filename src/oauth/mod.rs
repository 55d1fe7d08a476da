//! OAuth2 access tokens for accounts with an `oauth:` block (Microsoft 365, Google, any
//! RFC 6749 server), used by the POP3 and IMAP logins through SASL XOAUTH2 / OAUTHBEARER.
//!
//! - [`TokenSource`]: one account's tokens: the client-credentials or the refresh-token
//!   grant; the access token kept and renewed a minute before it expires; a rotated refresh
//!   token saved at once (`store.rs`, mode 0600 under `state_dir`); a refused grant
//!   (`invalid_grant`: consent revoked, token expired) asked again only after growing
//!   waits ([`refused_wait`]), or at once when `mailferry oauth login` stored a new one.
//!   The same for the relay's SMTP AUTH (`relay.oauth`, [`TokenSource::for_relay`]).
//! - [`device`]: `mailferry oauth login`, the device-code flow (RFC 8628).
//! - The OAuth2 protocol is the `oauth2` crate's (requests, replies, the device-code
//!   polling); `http.rs` is the HTTP it runs on: our HTTP/1.1 through `src/tls/` and the
//!   account's `proxy:` (the relay's go direct); `reply.rs`: the token reply as we read it
//!   (leniently) and the crate's errors in our words, quoting no reply.
//!
//! No token or secret reaches a log, a metric or an error: they are kept as
//! [`Password`], whose `Debug` and `Display` print `***`.

pub mod device;
mod http;
mod reply;
mod store;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant, SystemTime};

use oauth2::basic::{
    BasicErrorResponse, BasicRevocationErrorResponse, BasicTokenIntrospectionResponse,
};
use oauth2::{
    AuthType, ClientId, ClientSecret, EndpointNotSet, EndpointSet, RefreshToken, Scope,
    StandardRevocableToken, TokenUrl,
};

use crate::config::{AccountConfig, Config, OAuthConfig, OAuthGrant, Password};
use http::Http;

pub use http::{Endpoint, Route};
pub use store::RefreshStore;

/// An access token is renewed this long before it expires, so that a login never meets
/// one expiring on the way.
pub const RENEW_MARGIN: Duration = Duration::from_secs(60);
/// After a refused grant the endpoint is asked again no sooner than this, doubled for each
/// refusal in a row up to [`REFUSED_WAIT_MAX`]. Short: an account's passes back off on
/// their own (from `poll_interval`, at least 5 s), and this must not add to their gaps; the
/// relay, asked at every new session, has only this.
const REFUSED_WAIT_FIRST: Duration = Duration::from_secs(2);
/// The longest wait between two requests of a refused grant.
const REFUSED_WAIT_MAX: Duration = Duration::from_secs(3_600);
/// The name the relay's token source goes by in logs, metrics and its refresh-token file
/// (`@` cannot start an account's name).
pub const RELAY_SOURCE: &str = "@relay";
/// Time allowed for one request to a token endpoint.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Why no access token could be had. None of them carries a token or a secret.
#[derive(Debug, thiserror::Error)]
pub enum OAuthError {
    /// The token endpoint could not be asked (connect, TLS, timeout, not HTTP).
    #[error("cannot get an OAuth2 token from {endpoint}: {why}")]
    Unreachable {
        /// `host:port`.
        endpoint: String,
        /// What went wrong.
        why: String,
    },
    /// The endpoint refused the grant for good: asking again the same way will not help.
    #[error("the OAuth2 token endpoint refused the {grant} ({code}{description}); {advice}")]
    Refused {
        /// `refresh token` or `client credentials`.
        grant: &'static str,
        /// The OAuth2 error code (`invalid_grant`).
        code: String,
        /// `: ` and the server's description, or nothing.
        description: String,
        /// What to do about it.
        advice: String,
    },
    /// The endpoint answered with an error that may pass (`temporarily_unavailable`), or
    /// with something that is not a token reply.
    #[error("the OAuth2 token endpoint answered: {0}")]
    Failed(String),
    /// The refresh-token grant and no refresh token stored yet.
    #[error("account {account} has no OAuth2 refresh token yet (none in {path}): run `{command}`")]
    NoRefreshToken {
        /// The account.
        account: String,
        /// Where it was looked for.
        path: String,
        /// The login command to run.
        command: String,
    },
    /// The refresh-token file could not be read or written.
    #[error("cannot keep the OAuth2 refresh token in {path}: {source}")]
    Store {
        /// The file.
        path: String,
        /// What the operating system said.
        source: std::io::Error,
    },
    /// `mailferry oauth login` could not go on (no device endpoint, denied, expired).
    #[error("oauth login: {0}")]
    Login(String),
}

impl OAuthError {
    /// Whether the grant is refused (or missing): a login cannot succeed until someone
    /// acts, so the account backs off like one with a wrong password.
    pub fn is_refusal(&self) -> bool {
        matches!(
            self,
            OAuthError::Refused { .. } | OAuthError::NoRefreshToken { .. }
        )
    }
}

/// The command that gets a refresh token for `account`.
pub fn login_command(account: &str) -> String {
    format!("mailferry oauth login --config <config file> --account {account}")
}

/// The command that gets the relay's refresh token (`relay.oauth`).
pub fn relay_login_command() -> String {
    "mailferry oauth login --config <config file> --relay".to_owned()
}

/// How long after the `count`-th refusal in a row a grant is not asked again:
/// [`REFUSED_WAIT_FIRST`], doubled each time, at most [`REFUSED_WAIT_MAX`].
pub fn refused_wait(count: u32) -> Duration {
    let doublings = count.saturating_sub(1).min(20);
    REFUSED_WAIT_FIRST
        .saturating_mul(1 << doublings)
        .min(REFUSED_WAIT_MAX)
}

/// The token sources of every account with `oauth:`, by account name; built once per
/// daemon so that the access tokens are kept across passes.
#[derive(Debug, Default)]
pub struct Tokens {
    sources: HashMap<String, TokenSource>,
}

impl Tokens {
    /// A source for each account of `config` with an `oauth:` block.
    pub fn new(config: &Config) -> Tokens {
        let sources = config
            .accounts
            .iter()
            .filter_map(|a| TokenSource::new(a, &config.state_dir).map(|s| (a.name.clone(), s)))
            .collect();
        Tokens { sources }
    }

    /// The source of `account`, if it logs in with OAuth2.
    pub fn get(&self, account: &str) -> Option<&TokenSource> {
        self.sources.get(account)
    }
}

/// One account's access tokens.
#[derive(Debug)]
pub struct TokenSource {
    account: String,
    /// The command that stores a new refresh token, for the refusal's advice.
    login: String,
    config: OAuthConfig,
    /// How the token endpoint is reached.
    route: Route,
    store: RefreshStore,
    cached: tokio::sync::Mutex<Cached>,
}

#[derive(Debug, Default)]
struct Cached {
    access: Option<(Password, SystemTime)>,
    refused: Option<Refusal>,
}

/// A refused grant, remembered so that it is not asked again in a loop.
#[derive(Debug)]
struct Refusal {
    code: String,
    description: String,
    /// The refresh-token file as it was when refused: a new one lifts the refusal.
    stamp: Option<SystemTime>,
    at: Instant,
    /// Refusals in a row.
    count: u32,
}

impl TokenSource {
    /// The source of `account`'s tokens; `None` when it has no `oauth:` block.
    pub fn new(account: &AccountConfig, state_dir: &std::path::Path) -> Option<TokenSource> {
        let config = account.oauth.clone()?;
        let route = Route::of(&config, account.proxy.clone());
        Some(TokenSource::named(
            &account.name,
            login_command(&account.name),
            config,
            route,
            state_dir,
        ))
    }

    /// The source of the relay's tokens (`relay.oauth`); `None` without one. Its refresh
    /// token is `state_dir/oauth/@relay.refresh_token`; its token endpoint is asked direct.
    pub fn for_relay(auth: &crate::config::RelayAuth) -> Option<TokenSource> {
        let config = auth.oauth.clone()?;
        let route = Route::of(&config, None);
        Some(TokenSource::named(
            RELAY_SOURCE,
            relay_login_command(),
            config,
            route,
            &auth.state_dir,
        ))
    }

    fn named(
        name: &str,
        login: String,
        config: OAuthConfig,
        route: Route,
        state_dir: &Path,
    ) -> TokenSource {
        TokenSource {
            account: name.to_owned(),
            login,
            config,
            route,
            store: RefreshStore::new(state_dir, name),
            cached: tokio::sync::Mutex::new(Cached::default()),
        }
    }

    /// The name it goes by (the account's, or [`RELAY_SOURCE`]).
    pub fn name(&self) -> &str {
        &self.account
    }

    /// A valid access token: the one kept if it has more than [`RENEW_MARGIN`] left, else
    /// a new one from the token endpoint (a rotated refresh token saved before it is used).
    pub async fn access_token(&self) -> Result<Password, OAuthError> {
        let mut cached = self.cached.lock().await;
        if let Some((token, expires)) = &cached.access
            && *expires > SystemTime::now() + RENEW_MARGIN
        {
            return Ok(token.clone());
        }
        cached.access = None;
        let result = self.request(&mut cached).await;
        if let Err(e) = &result {
            let reason = if e.is_refusal() {
                "refused"
            } else {
                "unreachable"
            };
            crate::metrics::oauth_failure(&self.account, reason);
        }
        result
    }

    /// Drops the kept access token (the server refused it: revoked before its time), so
    /// that the next login asks for a new one.
    pub async fn forget(&self) {
        self.cached.lock().await.access = None;
    }

    async fn request(&self, cached: &mut Cached) -> Result<Password, OAuthError> {
        let stamp = self.store.stamp();
        // A refusal stands until its wait is over, or a new refresh token was stored.
        if let Some(r) = &cached.refused {
            let new_login = self.config.grant == OAuthGrant::RefreshToken && r.stamp != stamp;
            if new_login {
                cached.refused = None;
            } else if r.at.elapsed() < refused_wait(r.count) {
                return Err(self.refused(&r.code, &r.description));
            }
        }
        let old_refresh = match self.config.grant {
            OAuthGrant::ClientCredentials => None,
            OAuthGrant::RefreshToken => match self.store.load()? {
                Some(refresh) => Some(refresh),
                None => {
                    return Err(OAuthError::NoRefreshToken {
                        account: self.account.clone(),
                        path: self.store.path().display().to_string(),
                        command: self.login.clone(),
                    });
                }
            },
        };
        let client = client(&self.config, self.config.client_secret.as_ref())?;
        let http = Http::new(&self.route, REQUEST_TIMEOUT);
        let scopes = scopes(&self.config.scope);
        let reply = match &old_refresh {
            None => {
                client
                    .exchange_client_credentials()
                    .add_scopes(scopes)
                    .request_async(&http)
                    .await
            }
            Some(old) => {
                let old = RefreshToken::new(old.expose().to_owned());
                client
                    .exchange_refresh_token(&old)
                    .add_scopes(scopes)
                    .request_async(&http)
                    .await
            }
        };
        let granted = match reply {
            Ok(granted) => granted,
            Err(e) => {
                return match reply::failure(e, http.status()) {
                    reply::Failure::Other(e) => Err(e),
                    reply::Failure::Error { code, description } => {
                        let secrets: Vec<String> = [
                            old_refresh.as_ref().map(Password::expose),
                            self.config.client_secret.as_ref().map(Password::expose),
                        ]
                        .into_iter()
                        .flatten()
                        .map(str::to_owned)
                        .collect();
                        let description = crate::fetch::pop3::redact(&description, &secrets);
                        Err(self.refusal(cached, code, description, stamp))
                    }
                };
            }
        };
        let Some(access) = granted.access() else {
            return Err(OAuthError::Failed(format!(
                "HTTP {} with an empty access token",
                http.status()
            )));
        };
        if let Some(new) = granted.refresh()
            && old_refresh.is_some()
            && old_refresh.as_ref() != Some(&new)
        {
            // Saved before the access token is used: the old one may be dead now.
            self.store.save(&new)?;
            tracing::info!(account = %self.account, "OAuth2: the refresh token was rotated; the new one is saved");
        }
        let lifetime = granted.lifetime();
        let expires = SystemTime::now() + lifetime;
        crate::metrics::oauth_token_expiry(&self.account, expires);
        tracing::debug!(
            account = %self.account,
            "OAuth2: new access token, valid for {}s",
            lifetime.as_secs()
        );
        cached.access = Some((access.clone(), expires));
        if let Some(r) = cached.refused.take() {
            tracing::info!(account = %self.account, "OAuth2: the token endpoint grants tokens again (after {} refusal(s))", r.count);
        }
        Ok(access)
    }

    /// The endpoint's error `code`: a refusal remembered (and counted) when it is one,
    /// else an error that may pass.
    fn refusal(
        &self,
        cached: &mut Cached,
        code: String,
        description: String,
        stamp: Option<SystemTime>,
    ) -> OAuthError {
        if !reply::is_refusal(&code) {
            return OAuthError::Failed(format!("{code} {description}").trim().to_owned());
        }
        let error = self.refused(&code, &description);
        // No valid token now: the expiry gauge says so (0, long past).
        crate::metrics::oauth_token_expiry(&self.account, SystemTime::UNIX_EPOCH);
        let count = cached.refused.as_ref().map_or(0, |r| r.count) + 1;
        let wait = refused_wait(count).as_secs();
        // The caller reports the error (a pass that failed on it).
        tracing::debug!(account = %self.account, "OAuth2: the {} is refused ({code}, {count} time(s) in a row); asked again in {wait}s at the earliest", grant_words(self.config.grant));
        cached.refused = Some(Refusal {
            code,
            description,
            stamp,
            at: Instant::now(),
            count,
        });
        error
    }

    fn refused(&self, code: &str, description: &str) -> OAuthError {
        let grant = grant_words(self.config.grant);
        let advice = match self.config.grant {
            OAuthGrant::RefreshToken => format!(
                "consent revoked or the token expired: run `{}` again",
                self.login
            ),
            OAuthGrant::ClientCredentials => {
                "check client_id, the client secret, the tenant and the admin consent".to_owned()
            }
        };
        OAuthError::Refused {
            grant,
            code: code.to_owned(),
            description: if description.is_empty() {
                String::new()
            } else {
                format!(": {description}")
            },
            advice,
        }
    }
}

/// The grant in words.
fn grant_words(grant: OAuthGrant) -> &'static str {
    match grant {
        OAuthGrant::RefreshToken => "refresh token",
        OAuthGrant::ClientCredentials => "client credentials",
    }
}

/// The `oauth2` crate's client as mailferry uses it: standard errors, the lenient
/// [`reply::Granted`], a token endpoint set.
type TokenClient = oauth2::Client<
    BasicErrorResponse,
    reply::Granted,
    BasicTokenIntrospectionResponse,
    StandardRevocableToken,
    BasicRevocationErrorResponse,
    EndpointNotSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointSet,
>;

/// The client of `oauth`'s token endpoint, authenticated by `secret` (if any) in the
/// request body, as Microsoft and Google document it, not by HTTP Basic.
fn client(oauth: &OAuthConfig, secret: Option<&Password>) -> Result<TokenClient, OAuthError> {
    let token_url = TokenUrl::new(oauth.token_url.clone())
        .map_err(|e| OAuthError::Failed(format!("token_url `{}`: {e}", oauth.token_url)))?;
    let client = oauth2::Client::new(ClientId::new(oauth.client_id.clone()))
        .set_auth_type(AuthType::RequestBody)
        .set_token_uri(token_url);
    Ok(match secret {
        Some(secret) => client.set_client_secret(ClientSecret::new(secret.expose().to_owned())),
        None => client,
    })
}

/// The space-separated `scope` as the crate's scopes (none when empty).
fn scopes(scope: &str) -> impl Iterator<Item = Scope> + use<'_> {
    scope.split_whitespace().map(|s| Scope::new(s.to_owned()))
}
