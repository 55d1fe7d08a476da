//! An account's `oauth:` block: the provider (its endpoints and default scope filled in),
//! the grant, the client and its secret, and `ca_file`: what to trust for the endpoints
//! besides the system store. Endpoints are https; plain http only to a token service on
//! this host (tests, a local proxy).

use super::*;
use crate::config::{OAuthConfig, OAuthGrant, OAuthProvider};

pub(super) const CLIENT_SECRET_KEYS: [&str; 3] =
    ["client_secret", "client_secret_file", "client_secret_env"];
const PROVIDERS: &[(&str, OAuthProvider)] = &[
    ("microsoft", OAuthProvider::Microsoft),
    ("google", OAuthProvider::Google),
    ("generic", OAuthProvider::Generic),
];
const GRANTS: &[(&str, OAuthGrant)] = &[
    ("client_credentials", OAuthGrant::ClientCredentials),
    ("refresh_token", OAuthGrant::RefreshToken),
];

/// Microsoft 365 app-only access to POP3 and IMAP.
const MICROSOFT_APP_SCOPE: &str = "https://outlook.office365.com/.default";
/// Microsoft delegated access: POP3 and IMAP, and a refresh token.
const MICROSOFT_USER_SCOPE: &str = "https://outlook.office.com/POP.AccessAsUser.All \
     https://outlook.office.com/IMAP.AccessAsUser.All offline_access";
const GOOGLE_SCOPE: &str = "https://mail.google.com/";

impl Checker<'_> {
    /// The `oauth:` block at `node` (`name` is `accounts[x].oauth` or `relay.oauth`); its
    /// client secret is `of`'s.
    pub(super) fn oauth(&mut self, node: &Node, name: &str, of: SecretOf) -> Option<OAuthConfig> {
        self.section(node, name, |c, s| c.oauth_keys(s, name, of))
    }

    fn oauth_keys(&mut self, s: &Section<'_>, name: &str, of: SecretOf) -> Option<OAuthConfig> {
        // Every key is asked for here, whatever the provider, so none is taken for unknown.
        let device_url_node = s.get("device_url");
        let _ = s.get("token_url");
        let provider = self
            .require(s, "provider")
            .and_then(|n| self.choice(n, &s.name("provider"), PROVIDERS));
        let grant = match s.get("grant") {
            None => Some(OAuthGrant::RefreshToken),
            Some(n) => self.choice(n, &s.name("grant"), GRANTS),
        };
        let client_id = self
            .require(s, "client_id")
            .and_then(|n| self.text(n, &s.name("client_id")));
        let client_secret = self.secret(s, CLIENT_SECRET_KEYS, of);
        let ca_file = self.ca_file(s);
        if let (Some(OAuthGrant::ClientCredentials), Some(None)) = (grant, &client_secret)
            && self.cut.is_none()
        {
            self.err(
                s.node,
                format!(
                    "{name}: grant client_credentials needs the client's secret: set one of {}",
                    CLIENT_SECRET_KEYS.join(", ")
                ),
            );
        }
        let scope = match s.get("scope") {
            Some(n) => self.text(n, &s.name("scope")),
            None => Some(match (provider, grant) {
                (Some(OAuthProvider::Microsoft), Some(OAuthGrant::ClientCredentials)) => {
                    MICROSOFT_APP_SCOPE.to_owned()
                }
                (Some(OAuthProvider::Microsoft), _) => MICROSOFT_USER_SCOPE.to_owned(),
                (Some(OAuthProvider::Google), _) => GOOGLE_SCOPE.to_owned(),
                _ => String::new(),
            }),
        };
        let tenant = match s.get("tenant") {
            None => None,
            Some(n) if provider != Some(OAuthProvider::Microsoft) => {
                self.err(
                    n,
                    format!(
                        "{}: only the microsoft provider has tenants",
                        s.name("tenant")
                    ),
                );
                return None;
            }
            Some(n) => Some(self.tenant(n, &s.name("tenant"))?),
        };
        let (token_url, device_url) = match provider? {
            OAuthProvider::Microsoft => {
                self.no_endpoints(s, "microsoft")?;
                let tenant = match (tenant, grant) {
                    (Some(t), _) => t,
                    // App-only tokens are issued by the mailbox's own tenant.
                    (None, Some(OAuthGrant::ClientCredentials)) => {
                        self.require(s, "tenant");
                        return None;
                    }
                    (None, _) => "organizations".to_owned(),
                };
                let base = format!("https://login.microsoftonline.com/{tenant}/oauth2/v2.0");
                (format!("{base}/token"), Some(format!("{base}/devicecode")))
            }
            OAuthProvider::Google => {
                self.no_endpoints(s, "google")?;
                if grant == Some(OAuthGrant::ClientCredentials) {
                    self.err(
                        s.get("grant").unwrap_or(s.node),
                        format!("{name}: Google gives Gmail access only to a user's consent: use grant: refresh_token"),
                    );
                    return None;
                }
                (
                    "https://oauth2.googleapis.com/token".to_owned(),
                    Some("https://oauth2.googleapis.com/device/code".to_owned()),
                )
            }
            OAuthProvider::Generic => {
                let token_url = self
                    .require(s, "token_url")
                    .and_then(|n| self.endpoint(n, &s.name("token_url")));
                let device_url = match device_url_node {
                    None => Some(None),
                    Some(n) => self.endpoint(n, &s.name("device_url")).map(Some),
                };
                (token_url?, device_url?)
            }
        };
        Some(OAuthConfig {
            provider: provider?,
            grant: grant?,
            client_id: client_id?,
            client_secret: client_secret?,
            scope: scope?,
            token_url,
            device_url,
            ca_file: ca_file?,
        })
    }

    /// An OAuth2 account has no password: `password*` keys are refused. Its
    /// [`AccountConfig::password`] is empty.
    pub(super) fn no_password(&mut self, s: &Section<'_>) -> Option<Password> {
        let mut ok = true;
        for (key, node) in PASSWORD_KEYS.iter().filter_map(|k| Some((k, s.entry(k)?))) {
            self.err(
                node,
                format!(
                    "{}: an account with oauth logs in with an OAuth2 token, not a password; remove {key}",
                    s.name(key)
                ),
            );
            ok = false;
        }
        ok.then(|| Password::new(""))
    }

    /// `token_url` and `device_url` are for the generic provider; the others have theirs.
    fn no_endpoints(&mut self, s: &Section<'_>, provider: &str) -> Option<()> {
        let mut ok = true;
        for key in ["token_url", "device_url"] {
            if let Some(n) = s.get(key) {
                self.err(
                    n,
                    format!(
                        "{}: the {provider} provider has its own endpoints; {key} is for provider: generic",
                        s.name(key)
                    ),
                );
                ok = false;
            }
        }
        ok.then_some(())
    }

    /// A Microsoft tenant: its id, a domain, or `organizations` / `common` / `consumers`.
    fn tenant(&mut self, node: &Node, name: &str) -> Option<String> {
        let t = self.text(node, name)?;
        if t.len() > 255
            || !t
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-'))
        {
            self.err(
                node,
                format!("{name}: `{t}` is not a tenant id or domain (letters, digits, . and -)"),
            );
            return None;
        }
        Some(t)
    }

    /// An endpoint URL: https, or http to this host only (a token in the clear must not
    /// cross a network).
    fn endpoint(&mut self, node: &Node, name: &str) -> Option<String> {
        let url = self.text(node, name)?;
        match endpoint_problem(&url) {
            None => Some(url),
            Some(problem) => {
                self.err(node, format!("{name}: {problem}"));
                None
            }
        }
    }
}

impl Checker<'_> {
    /// The token requests of an account go through its proxy: a plain-http endpoint (allowed
    /// on loopback only) then means the proxy's own loopback, and the form with the secrets
    /// would cross the network unencrypted unless the proxy is on this host too.
    pub(super) fn plain_endpoint_through_proxy(
        &mut self,
        node: &Node,
        name: &str,
        oauth: &OAuthConfig,
        proxy: &crate::config::Proxy,
    ) {
        let proxy_is_local = proxy.host == "localhost"
            || proxy
                .host
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback());
        let plain = [Some(&oauth.token_url), oauth.device_url.as_ref()]
            .into_iter()
            .flatten()
            .find(|u| crate::oauth::Endpoint::parse(u).is_ok_and(|e| !e.https));
        if let (Some(url), false) = (plain, proxy_is_local) {
            self.err(
                node,
                format!(
                    "{name}: the token requests go through the proxy, and `{url}` is plain http: \
                     it would reach the proxy's own host, the client secret unencrypted on the way; \
                     use an https token endpoint"
                ),
            );
        }
    }
}

/// What is wrong with an endpoint URL, if anything.
pub(crate) fn endpoint_problem(url: &str) -> Option<String> {
    match crate::oauth::Endpoint::parse(url) {
        Err(why) => Some(why),
        Ok(e) if !e.https && !e.is_loopback() => Some(format!(
            "`{url}` is plain http to another host: a token endpoint must be https \
             (http only for 127.0.0.1, ::1 or localhost)"
        )),
        Ok(_) => None,
    }
}
