//! `proxy:` end to end: mail collected from a real Dovecot through a real SOCKS5 proxy
//! (microsocks; the proxy resolves `localhost`) and a real HTTP CONNECT proxy (tinyproxy),
//! each with and without a password, TLS to Dovecot running inside the tunnel; a wrong proxy
//! password is one clear error that does not show the password.

mod support;

use support::{
    AccountYaml, Dovecot, GatewayConfig, ProxyServer, RealProxy, Secret, SmtpSink,
    numbered_message, poll_once, run_mailferry,
};

const USER: &str = "catchall@example.com";
const PASS: &str = "pop-secret";
const PROXY_USER: &str = "gateway";
const PROXY_PASS: &str = "proxy-pass-31337";

/// One POP3S account (or, with `imap`, an IMAP STARTTLS one) through `proxy_url`.
fn config_for(
    dir: &std::path::Path,
    dovecot: &Dovecot,
    sink: &SmtpSink,
    proxy_url: &str,
    imap: bool,
) -> String {
    let (protocol, port, tls) = if imap {
        ("imap", dovecot.imap_port(), "starttls")
    } else {
        ("pop3", dovecot.pop3s_port(), "tls")
    };
    GatewayConfig::new(dir.join("state"), sink.port())
        .account(AccountYaml {
            name: "through-proxy".into(),
            protocol: protocol.into(),
            port,
            tls: tls.into(),
            ca_file: Some(dovecot.ca_file()),
            username: USER.into(),
            password: Secret::Inline(PASS.into()),
            extra_lines: vec![format!("proxy: \"{proxy_url}\"")],
            ..AccountYaml::default()
        })
        .write(dir)
        .display()
        .to_string()
}

fn config(dir: &std::path::Path, dovecot: &Dovecot, sink: &SmtpSink, proxy_url: &str) -> String {
    config_for(dir, dovecot, sink, proxy_url, false)
}

/// Two messages collected over POP3 through the proxy; the proxy saw the connection.
fn delivers_through(kind: ProxyServer, credentials: Option<(&str, &str)>) {
    delivers_through_with(kind, credentials, false);
}

/// [`delivers_through`], over IMAP with `imap`.
fn delivers_through_with(kind: ProxyServer, credentials: Option<(&str, &str)>, imap: bool) {
    let dovecot = Dovecot::start(&[(USER, PASS)]);
    dovecot.deliver(USER, &numbered_message(1));
    dovecot.deliver(USER, &numbered_message(2));
    let sink = SmtpSink::start(&[]);
    let proxy = RealProxy::start(kind, credentials);
    let dir = tempfile::tempdir().unwrap();
    let config = config_for(dir.path(), &dovecot, &sink, &proxy.url(), imap);

    let probe = run_mailferry(&["test-connection", "--config", &config]);
    let text = String::from_utf8_lossy(&probe.stdout);
    assert_eq!(probe.status.code(), Some(0), "{text}");
    assert!(text.contains("through the proxy"), "{text}");
    assert!(text.contains("2 message(s)"), "{text}");
    assert!(!text.contains(PROXY_PASS), "{text}");

    let out = poll_once(&config);
    assert!(out.status.success(), "poll-once through {kind:?}");
    assert_eq!(
        sink.wait_for(2, std::time::Duration::from_secs(20)).len(),
        2
    );
    assert_eq!(dovecot.count(USER), 0, "delivered, then deleted upstream");
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!all.contains(PROXY_PASS), "{all}");

    // Proof that the proxy carried it: without the proxy, nothing connects.
    drop(proxy);
    let out = run_mailferry(&["test-connection", "--config", &config]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("cannot connect to the proxy"), "{text}");
}

#[test]
fn imap_with_starttls_through_both_proxies_with_credentials() {
    if support::skip_e2e() {
        return;
    }
    let credentials = Some((PROXY_USER, PROXY_PASS));
    delivers_through_with(ProxyServer::Socks5, credentials, true);
    delivers_through_with(ProxyServer::HttpConnect, credentials, true);
}

#[test]
fn socks5_without_credentials() {
    if support::skip_e2e() {
        return;
    }
    delivers_through(ProxyServer::Socks5, None);
}

#[test]
fn socks5_with_credentials() {
    if support::skip_e2e() {
        return;
    }
    delivers_through(ProxyServer::Socks5, Some((PROXY_USER, PROXY_PASS)));
}

#[test]
fn http_connect_without_credentials() {
    if support::skip_e2e() {
        return;
    }
    delivers_through(ProxyServer::HttpConnect, None);
}

#[test]
fn http_connect_with_credentials() {
    if support::skip_e2e() {
        return;
    }
    delivers_through(ProxyServer::HttpConnect, Some((PROXY_USER, PROXY_PASS)));
}

/// A wrong proxy password: one sentence naming the proxy and the credentials, never the
/// password; nothing is collected.
fn wrong_password_is_a_clear_error(kind: ProxyServer) {
    let dovecot = Dovecot::start(&[(USER, PASS)]);
    dovecot.deliver(USER, &numbered_message(1));
    let sink = SmtpSink::start(&[]);
    let proxy = RealProxy::start(kind, Some((PROXY_USER, PROXY_PASS)));
    let dir = tempfile::tempdir().unwrap();
    let config = config(
        dir.path(),
        &dovecot,
        &sink,
        &proxy.url_with(Some("wrong-proxy-pass")),
    );

    let out = run_mailferry(&["test-connection", "--config", &config]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(out.status.code(), Some(1), "{text}");
    let connect = text
        .lines()
        .find(|l| l.trim_start().starts_with("FAILED") && l.contains("connect"))
        .unwrap_or_else(|| panic!("no failed connect step in {text}"));
    assert!(
        connect.contains("refused the user name or password"),
        "{connect}"
    );
    assert!(
        connect.contains(&format!("{PROXY_USER}:***@127.0.0.1")),
        "{connect}"
    );

    let out = poll_once(&config);
    assert!(!out.status.success());
    let all = format!(
        "{text}{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(all.contains("refused the user name or password"), "{all}");
    assert!(!all.contains("wrong-proxy-pass"), "{all}");
    assert_eq!(dovecot.count(USER), 1, "nothing collected");
}

#[test]
fn wrong_socks5_password() {
    if support::skip_e2e() {
        return;
    }
    wrong_password_is_a_clear_error(ProxyServer::Socks5);
}

#[test]
fn wrong_http_proxy_password() {
    if support::skip_e2e() {
        return;
    }
    wrong_password_is_a_clear_error(ProxyServer::HttpConnect);
}
