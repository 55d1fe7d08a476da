//! The `oauth:` block: providers fill in their endpoints and scopes, the grant's needs are
//! checked, endpoints must be https (http on loopback only), and no password goes with it.

use super::tests::{BASE, PEM_CERT, assert_one_error, load};
use crate::config::{OAuthGrant, OAuthProvider};

/// `BASE` with the password line replaced by `lines` (each indented as account keys).
fn with(lines: &str) -> String {
    BASE.replacen("    password: pw\n", lines, 1)
}

#[test]
fn microsoft_client_credentials_gets_its_tenant_endpoints_and_app_scope() {
    let c = load(&with(
        "    oauth:\n      provider: microsoft\n      tenant: contoso.onmicrosoft.com\n      grant: client_credentials\n      client_id: app\n      client_secret: s3cret\n",
    ))
    .unwrap();
    let a = &c.accounts[0];
    let o = a.oauth.as_ref().unwrap();
    assert_eq!(
        (o.provider, o.grant),
        (OAuthProvider::Microsoft, OAuthGrant::ClientCredentials)
    );
    assert_eq!(
        o.token_url,
        "https://login.microsoftonline.com/contoso.onmicrosoft.com/oauth2/v2.0/token"
    );
    assert_eq!(
        o.device_url.as_deref(),
        Some("https://login.microsoftonline.com/contoso.onmicrosoft.com/oauth2/v2.0/devicecode")
    );
    assert_eq!(o.scope, "https://outlook.office365.com/.default");
    assert_eq!(o.client_secret.as_ref().map(|s| s.expose()), Some("s3cret"));
    assert_eq!(a.password.expose(), "");
    assert!(!format!("{c:?}").contains("s3cret"));
}

#[test]
fn google_and_delegated_microsoft_default_to_refresh_tokens() {
    let c = load(&with(
        "    oauth:\n      provider: google\n      client_id: id\n",
    ))
    .unwrap();
    let o = c.accounts[0].oauth.as_ref().unwrap();
    assert_eq!(o.grant, OAuthGrant::RefreshToken);
    assert_eq!(o.token_url, "https://oauth2.googleapis.com/token");
    assert_eq!(
        o.device_url.as_deref(),
        Some("https://oauth2.googleapis.com/device/code")
    );
    assert_eq!(o.scope, "https://mail.google.com/");
    assert!(o.client_secret.is_none());
    let c = load(&with(
        "    oauth:\n      provider: microsoft\n      client_id: id\n",
    ))
    .unwrap();
    let o = c.accounts[0].oauth.as_ref().unwrap();
    assert!(o.token_url.contains("/organizations/"), "{}", o.token_url);
    assert!(o.scope.contains("POP.AccessAsUser.All") && o.scope.contains("offline_access"));
}

#[test]
fn generic_endpoints_are_https_or_loopback_http() {
    let generic = |url: &str| {
        with(&format!(
            "    oauth:\n      provider: generic\n      client_id: id\n      token_url: {url}\n"
        ))
    };
    for ok in [
        "https://idp.example.com/token",
        "http://127.0.0.1:8080/token",
        "http://[::1]:80/token",
        "http://localhost/token",
    ] {
        let c = load(&generic(ok)).unwrap();
        assert_eq!(c.accounts[0].oauth.as_ref().unwrap().token_url, ok);
    }
    assert_one_error(
        &generic("http://idp.example.com/token"),
        14,
        "a token endpoint must be https (http only for 127.0.0.1, ::1 or localhost)",
    );
    assert_one_error(&generic("ftp://x/"), 14, "is not an https:// URL");
    assert_one_error(
        &with("    oauth:\n      provider: generic\n      client_id: id\n"),
        12,
        "missing required key `token_url` in accounts[a].oauth",
    );
}

#[test]
fn plain_http_endpoints_go_through_a_proxy_only_on_this_host() {
    let through = |url: &str, proxy: &str| {
        with(&format!(
            "    oauth:\n      provider: generic\n      client_id: id\n      token_url: {url}\n    proxy: {proxy}\n"
        ))
    };
    for (url, proxy) in [
        ("http://127.0.0.1:8080/token", "socks5://127.0.0.1:1080"),
        ("http://localhost/token", "http://localhost:3128"),
        (
            "https://idp.example.com/token",
            "socks5://proxy.corp.local:1080",
        ),
    ] {
        let c = load(&through(url, proxy)).unwrap_or_else(|e| panic!("{url} {proxy}: {e}"));
        assert!(c.accounts[0].proxy.is_some());
    }
    assert_one_error(
        &through(
            "http://127.0.0.1:8080/token",
            "socks5://proxy.corp.local:1080",
        ),
        15,
        "the token requests go through the proxy, and `http://127.0.0.1:8080/token` is plain http",
    );
}

#[test]
fn the_oauth_ca_file_is_the_token_endpoints_trust_and_is_checked_at_load() {
    let dir = tempfile::tempdir().unwrap();
    let (ca, empty) = (dir.path().join("idp.pem"), dir.path().join("empty.pem"));
    std::fs::write(&ca, PEM_CERT).unwrap();
    std::fs::write(&empty, "nothing\n").unwrap();
    let block = |file: &std::path::Path| {
        with(&format!(
            "    oauth:\n      provider: generic\n      client_id: id\n      token_url: https://idp.corp.local/token\n      ca_file: {}\n",
            file.display()
        ))
    };
    let c = load(&block(&ca)).unwrap();
    let a = &c.accounts[0];
    assert_eq!(
        a.oauth.as_ref().unwrap().ca_file.as_deref(),
        Some(ca.as_path())
    );
    assert_eq!(
        a.tls_options.ca_file, None,
        "the mail server's trust is apart"
    );
    assert_one_error(&block(&empty), 15, "no CERTIFICATE block");
}

#[test]
fn the_grant_and_the_provider_are_checked() {
    assert_one_error(
        &with(
            "    oauth:\n      provider: microsoft\n      tenant: t\n      grant: client_credentials\n      client_id: id\n",
        ),
        12,
        "grant client_credentials needs the client's secret",
    );
    assert_one_error(
        &with(
            "    oauth:\n      provider: microsoft\n      grant: client_credentials\n      client_id: id\n      client_secret: s\n",
        ),
        12,
        "missing required key `tenant`",
    );
    assert_one_error(
        &with(
            "    oauth:\n      provider: google\n      grant: client_credentials\n      client_id: id\n      client_secret: s\n",
        ),
        13,
        "use grant: refresh_token",
    );
    assert_one_error(
        &with(
            "    oauth:\n      provider: google\n      client_id: id\n      token_url: https://x/\n",
        ),
        14,
        "token_url is for provider: generic",
    );
    assert_one_error(
        &with("    oauth:\n      provider: google\n      tenant: t\n      client_id: id\n"),
        13,
        "only the microsoft provider has tenants",
    );
    assert_one_error(
        &with("    oauth:\n      provider: yahoo\n      client_id: id\n"),
        12,
        "allowed",
    );
    assert_one_error(
        &with("    oauth:\n      provider: microsoft\n      tenant: a/b\n      client_id: id\n"),
        13,
        "is not a tenant id or domain",
    );
    assert_one_error(
        &with(
            "    oauth:\n      provider: google\n      client_id: id\n      client_secret: a\n      client_secret_env: B\n",
        ),
        15,
        "`client_secret_env` conflicts with `client_secret`",
    );
    assert_one_error(
        &with("    oauth:\n      provider: google\n      client_id: id\n      secret: a\n"),
        14,
        "unknown key `secret` in accounts[a].oauth",
    );
}

#[test]
fn an_oauth_account_has_no_password_and_only_token_mechanisms() {
    let block = "    oauth:\n      provider: google\n      client_id: id\n";
    assert_one_error(
        &BASE.replacen(
            "    password: pw\n",
            &format!("    password: pw\n{block}"),
            1,
        ),
        11,
        "an account with oauth logs in with an OAuth2 token, not a password; remove password",
    );
    let c = load(&with(&format!("{block}    auth_mechanisms: [xoauth2]\n"))).unwrap();
    assert_eq!(c.accounts[0].auth.allowed().len(), 1);
    assert_one_error(
        &with(&format!("{block}    auth_mechanisms: [plain]\n")),
        14,
        "plain logs in with a password, and the account has an OAuth2 token",
    );
    assert_one_error(
        &with(&format!("{block}    spa: true\n")),
        14,
        "an account with oauth logs in with an OAuth2 token (xoauth2, oauthbearer)",
    );
}

#[test]
fn the_example_file_documents_every_oauth_key() {
    let example = include_str!("../../../conf/mailferry.example.yaml");
    for key in [
        "provider",
        "tenant",
        "client_id",
        "client_secret",
        "client_secret_file",
        "client_secret_env",
        "scope",
        "grant",
        "token_url",
        "device_url",
        "ca_file",
    ] {
        assert!(
            example.contains(&format!("{key}:")),
            "{key} not in the example"
        );
    }
}

/// `BASE` with `lines` added to `relay:` (each indented as relay keys).
fn relay_with(lines: &str) -> String {
    BASE.replacen(
        "  host: mail.corp.local\n",
        &format!("  host: mail.corp.local\n{lines}"),
        1,
    )
}

#[test]
fn the_relay_logs_in_with_an_oauth_block_read_as_an_accounts() {
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("relay-oauth.secret");
    std::fs::write(&secret, "relay-client-secret\n").unwrap();
    let c = load(&relay_with(&format!(
        "  username: gateway@corp.example\n  auth_mechanisms: [xoauth2]\n  oauth:\n    provider: microsoft\n    tenant: corp.example\n    grant: client_credentials\n    client_id: relay-app\n    client_secret_file: {}\n",
        secret.display()
    )))
    .unwrap();
    let auth = c.relay.auth.as_ref().unwrap();
    let o = auth.oauth.as_ref().unwrap();
    assert_eq!(auth.username, "gateway@corp.example");
    assert_eq!(auth.password.expose(), "");
    assert_eq!(o.grant, OAuthGrant::ClientCredentials);
    assert!(o.token_url.contains("/corp.example/"), "{}", o.token_url);
    assert_eq!(
        o.client_secret.as_ref().map(|s| s.expose()),
        Some("relay-client-secret"),
        "the relay's client_secret_file is read"
    );
    assert_eq!(auth.state_dir, std::path::Path::new("/var/lib/mailferry"));
    assert_eq!(
        auth.mechanisms.allowed(),
        [crate::sasl::Method::Sasl(crate::sasl::Mechanism::XOAuth2)]
    );
}

#[test]
fn relay_oauth_needs_a_username_and_no_password_and_token_mechanisms_only() {
    assert_one_error(
        &relay_with("  oauth:\n    provider: google\n    client_id: id\n"),
        5,
        "relay.oauth is set but relay.username is not",
    );
    assert_one_error(
        &relay_with(
            "  username: gw\n  password: pw\n  oauth:\n    provider: google\n    client_id: id\n",
        ),
        5,
        "with relay.oauth the relay logs in with an OAuth2 token",
    );
    assert_one_error(
        &relay_with(
            "  username: gw\n  auth_mechanisms: [plain]\n  oauth:\n    provider: google\n    client_id: id\n",
        ),
        5,
        "plain logs in with a password",
    );
    assert_one_error(
        &relay_with("  username: gw\n  oauth:\n    provider: generic\n    client_id: id\n"),
        6,
        "token_url",
    );
}
