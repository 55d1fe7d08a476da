//! End to end: OAuth2 logins against a real Dovecot whose `oauth2` passdb asks the test's
//! token service (tests/support/token_service.rs) whether a token is active and whose it
//! is. mailferry gets its tokens from the same service (provider: generic, on loopback):
//! the client-credentials grant delivers with XOAUTH2 (over POP3 sent as two lines) and with
//! OAUTHBEARER over both POP3 and IMAP, the refresh-token grant over both; a token that
//! expires between two passes of the daemon is renewed; a rotated refresh token is saved
//! and used by the next process; a revoked one gives the clear error and is not asked with
//! again until `mailferry oauth login` stored a new one; and that login (device code) works
//! with the test approving as the user. The
//! token requests of an account with a `proxy:` go through it (microsocks, tinyproxy).

mod support;

use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use support::{
    AccountYaml, CLIENT_ID, CLIENT_SECRET, Dovecot, GatewayConfig, Mailferry, ProxyServer,
    RealProxy, Secret, SmtpSink, TokenPolicy, TokenService, mailferry_command, message, poll_once,
    wait_until,
};

const USER: &str = "shared@example.com";
const PASS: &str = "password-not-used";
const NAME: &str = "o365";

fn policy(valid_for: Duration) -> TokenPolicy {
    TokenPolicy {
        app_user: USER.to_owned(),
        announced: Duration::from_secs(3600),
        valid_for,
        interval: Duration::from_secs(1),
    }
}

/// The token service with `policy`, a Dovecot that asks it about tokens, smtp-sink, and a
/// directory for mailferry's files.
fn servers(policy: TokenPolicy) -> (TokenService, Dovecot, SmtpSink, tempfile::TempDir) {
    let service = TokenService::start(policy);
    let dovecot = Dovecot::start_oauth(&[(USER, PASS)], &service.url("/introspect"));
    (
        service,
        dovecot,
        SmtpSink::start(&[]),
        tempfile::tempdir().unwrap(),
    )
}

/// The account `NAME` on `dovecot` over implicit TLS, with an `oauth:` block for `grant`
/// against `service`, and `extra` lines.
fn account(
    dovecot: &Dovecot,
    service: &TokenService,
    protocol: &str,
    grant: &str,
    extra: &[&str],
) -> AccountYaml {
    let port = match protocol {
        "imap" => dovecot.imaps_port(),
        _ => dovecot.pop3s_port(),
    };
    let mut extra_lines = vec![
        "mode: single-user".to_owned(),
        "deliver_to: shared@corp.local".to_owned(),
        "poll_interval: 5s".to_owned(),
        "oauth:".to_owned(),
        "  provider: generic".to_owned(),
        format!("  grant: {grant}"),
        format!("  client_id: {CLIENT_ID}"),
        format!("  client_secret: {CLIENT_SECRET}"),
        "  scope: mail".to_owned(),
        format!("  token_url: {}", service.url("/token")),
        format!("  device_url: {}", service.url("/devicecode")),
    ];
    extra_lines.extend(extra.iter().map(|l| l.to_string()));
    AccountYaml {
        name: NAME.into(),
        protocol: protocol.into(),
        port,
        tls: "tls".into(),
        ca_file: Some(dovecot.ca_file()),
        username: USER.into(),
        password: Secret::None,
        extra_lines,
        ..AccountYaml::default()
    }
}

fn config(dir: &Path, sink: &SmtpSink, account: AccountYaml) -> String {
    GatewayConfig::new(dir.join("state"), sink.port())
        .domains(&["corp.local"])
        .postmaster("postmaster@corp.local")
        .account(account)
        .write(dir)
        .display()
        .to_string()
}

fn deliver(dovecot: &Dovecot, subject: &str) {
    dovecot.deliver(
        USER,
        &message(&[("From", "x@remote.test"), ("Subject", subject)], "hi\n"),
    );
}

fn refresh_file(dir: &Path) -> std::path::PathBuf {
    dir.join("state/oauth")
        .join(format!("{NAME}.refresh_token"))
}

fn stored_refresh(dir: &Path) -> String {
    std::fs::read_to_string(refresh_file(dir))
        .expect("the refresh token file")
        .trim()
        .to_owned()
}

/// No token or secret the service issued or knows shows in mailferry's output.
fn assert_no_secret(service: &TokenService, output: &str) {
    assert!(
        !output.contains(CLIENT_SECRET),
        "client secret in the output"
    );
    for body in service.bodies() {
        for token in body
            .split(['&', '='])
            .filter(|t| t.starts_with("at-") || t.starts_with("rt-") || t.starts_with("dc-"))
        {
            assert!(
                !output.contains(token),
                "token {token} in the output:\n{output}"
            );
        }
    }
}

#[test]
fn client_credentials_deliver_with_both_mechanisms_over_pop3_and_imap() {
    if support::skip_e2e() {
        return;
    }
    let (service, dovecot, sink, dir) = servers(policy(Duration::from_secs(600)));
    // Each mechanism forced in turn over each protocol; Dovecot offers both.
    let cases = [
        ("pop3", "xoauth2", "AUTH XOAUTH2"),
        ("pop3", "oauthbearer", "AUTH OAUTHBEARER"),
        ("imap", "xoauth2", "AUTHENTICATE XOAUTH2"),
        ("imap", "oauthbearer", "AUTHENTICATE OAUTHBEARER"),
    ];
    for (protocol, mechanism, said) in cases {
        let subject = format!("cc {protocol} {mechanism}");
        deliver(&dovecot, &subject);
        let only = format!("auth_mechanisms: [{mechanism}]");
        let acct = account(&dovecot, &service, protocol, "client_credentials", &[&only]);
        let out = poll_once(&config(dir.path(), &sink, acct));
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(
            out.status.success(),
            "{subject}: {stderr}\n{}",
            dovecot.log()
        );
        assert!(
            stderr.contains(&format!("logged in with {said}")),
            "{subject}: {stderr}"
        );
        assert_eq!(dovecot.count(USER), 0, "{subject}: left upstream");
        assert_no_secret(&service, &stderr);
        assert_no_secret(&service, &String::from_utf8_lossy(&out.stdout));
        // Dovecot's own word for it: one login of that protocol with that method (each pair
        // comes once).
        let log = dovecot.log();
        assert_eq!(logins(&log, protocol, mechanism), 1, "{subject}: {log}");
    }
    let subjects: Vec<String> = sink.transactions().iter().map(|t| t.subject()).collect();
    let expected: Vec<String> = cases
        .iter()
        .map(|(p, m, _)| format!("cc {p} {m}"))
        .collect();
    assert_eq!(subjects, expected);
    assert_eq!(service.grants(), vec!["client_credentials"; cases.len()]);
}

#[test]
fn token_requests_go_through_the_accounts_proxy() {
    if support::skip_e2e() {
        return;
    }
    let (service, dovecot, sink, dir) = servers(policy(Duration::from_secs(600)));
    let proxy_pass = "proxy-pass-4711";
    for kind in [ProxyServer::Socks5, ProxyServer::HttpConnect] {
        let proxy = RealProxy::start(kind, Some(("gateway", proxy_pass)));
        let subject = format!("through {kind:?}");
        deliver(&dovecot, &subject);
        let proxy_line = format!("proxy: \"{}\"", proxy.url());
        let acct = account(
            &dovecot,
            &service,
            "imap",
            "client_credentials",
            &[&proxy_line],
        );
        let config = config(dir.path(), &sink, acct);
        let asked = service.grants().len();
        let out = poll_once(&config);
        let all = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "{subject}: {all}\n{}", proxy.log());
        assert_eq!(service.grants().len(), asked + 1, "{subject}: one token");
        assert_eq!(dovecot.count(USER), 0, "{subject}: {all}");
        assert_no_secret(&service, &all);
        assert!(!all.contains(proxy_pass), "{all}");
        // The proxy says it opened a tunnel to the token service (and one to Dovecot): the
        // request went through it, not merely past it. tinyproxy logs each CONNECT line;
        // microsocks each connection it made.
        let log = proxy.log();
        let target = format!("127.0.0.1:{}", service.port());
        let named = log
            .match_indices(&target)
            .any(|(at, _)| !log[at + target.len()..].starts_with(|c: char| c.is_ascii_digit()));
        assert!(named, "{subject}: no {target} in the proxy's log:\n{log}");

        // The proxy gone, the token service still up: the token request fails on the way
        // to the proxy (a direct request would have had a token), and the service hears
        // nothing. Tokens come before the mail connection, so this is the token's path.
        drop(proxy);
        let out = poll_once(&config);
        let all = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(!out.status.success(), "{subject}: {all}");
        let said = format!(
            "cannot get an OAuth2 token from 127.0.0.1:{}: cannot connect to the proxy",
            service.port()
        );
        assert!(all.contains(&said), "{subject}: {said:?} not in {all}");
        assert!(!all.contains(proxy_pass), "{all}");
        assert_eq!(
            service.grants().len(),
            asked + 1,
            "{subject}: not asked direct"
        );
    }
    let subjects: Vec<String> = sink.transactions().iter().map(|t| t.subject()).collect();
    assert_eq!(subjects, ["through Socks5", "through HttpConnect"]);
}

/// `acct` with its token and device endpoints at the service's `https_url`s, trusting the
/// service's test CA through `oauth.ca_file` when `trust`.
fn over_https(mut acct: AccountYaml, service: &TokenService, trust: bool) -> AccountYaml {
    for line in &mut acct.extra_lines {
        if line.starts_with("  token_url:") {
            *line = format!("  token_url: {}", service.https_url("/token"));
        } else if line.starts_with("  device_url:") {
            *line = format!("  device_url: {}", service.https_url("/devicecode"));
        }
    }
    if trust {
        let at = acct
            .extra_lines
            .iter()
            .position(|l| l == "oauth:")
            .expect("an oauth block")
            + 1;
        acct.extra_lines
            .insert(at, format!("  ca_file: {}", service.ca_file().display()));
    }
    acct
}

#[test]
fn an_https_token_endpoint_is_trusted_through_the_oauth_ca_file() {
    if support::skip_e2e() {
        return;
    }
    let (service, dovecot, sink, dir) = servers(policy(Duration::from_secs(600)));
    deliver(&dovecot, "over https");

    // Not trusted (the test CA is in no system store): the handshake fails, no token.
    let acct = account(&dovecot, &service, "imap", "client_credentials", &[]);
    let untrusted = config(dir.path(), &sink, over_https(acct, &service, false));
    let out = poll_once(&untrusted);
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!out.status.success(), "{all}");
    assert!(
        all.contains(&format!(
            "cannot get an OAuth2 token from localhost:{}",
            service.port()
        )) && all.contains("certificate"),
        "{all}"
    );
    assert!(service.grants().is_empty(), "{:?}", service.grants());
    assert_eq!(service.tls_connections(), 0);

    // Trusted through oauth.ca_file: a token over TLS, the mail delivered.
    let acct = account(&dovecot, &service, "imap", "client_credentials", &[]);
    let trusted = config(dir.path(), &sink, over_https(acct, &service, true));
    let out = poll_once(&trusted);
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{all}\n{}", dovecot.log());
    assert_eq!(service.grants(), ["client_credentials"]);
    assert_eq!(service.tls_connections(), 1, "the token came over TLS");
    assert_eq!(dovecot.count(USER), 0);
    assert_no_secret(&service, &all);

    // The device-code login over TLS too: both its endpoints, the refresh token then used.
    deliver(&dovecot, "refresh over https");
    let acct = account(&dovecot, &service, "pop3", "refresh_token", &[]);
    let login = config(dir.path(), &sink, over_https(acct, &service, true));
    let before = service.tls_connections();
    device_login(&service, &login);
    assert!(
        service.tls_connections() >= before + 3,
        "the device code and at least two polls over TLS"
    );
    let out = poll_once(&login);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{stderr}");
    assert_eq!(dovecot.count(USER), 0);
    assert_no_secret(&service, &stderr);
    let subjects: Vec<String> = sink.transactions().iter().map(|t| t.subject()).collect();
    assert_eq!(subjects, ["over https", "refresh over https"]);
}

/// How many `PROTOCOL-login: Info: Login:` lines with `method=MECHANISM` Dovecot's log has.
fn logins(log: &str, protocol: &str, mechanism: &str) -> usize {
    let (login, method) = (
        format!("{protocol}-login: Info: Login: "),
        format!(", method={},", mechanism.to_ascii_uppercase()),
    );
    log.lines()
        .filter(|l| l.contains(&login) && l.contains(&method))
        .count()
}

/// `mailferry oauth login` for the account in `config`, the test approving as USER.
fn device_login(service: &TokenService, config: &str) -> String {
    let mut child = mailferry_command(&["oauth", "login", "--config", config, "--account", NAME])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start mailferry oauth login");
    let stdout = child.stdout.take().expect("stdout");
    let mut printed = String::new();
    let mut approved = false;
    for line in BufReader::new(stdout).lines() {
        let line = line.expect("a line of stdout");
        printed.push_str(&line);
        printed.push('\n');
        if let Some(code) = line.trim().strip_prefix("enter ") {
            assert!(service.approve(code.trim(), USER), "no device code {code}");
            approved = true;
        }
    }
    let status = child.wait().expect("wait for oauth login");
    let mut stderr = String::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = std::io::Read::read_to_string(&mut e, &mut stderr);
    }
    assert!(approved, "no code printed:\n{printed}\n{stderr}");
    assert!(status.success(), "oauth login failed:\n{printed}\n{stderr}");
    assert!(
        printed.contains("open  http://127.0.0.1/device"),
        "{printed}"
    );
    assert_no_secret(service, &printed);
    assert_no_secret(service, &stderr);
    printed
}

#[test]
fn device_login_then_refresh_tokens_deliver_and_the_rotated_one_survives_a_restart() {
    if support::skip_e2e() {
        return;
    }
    let (service, dovecot, sink, dir) = servers(policy(Duration::from_secs(600)));

    let pop3 = config(
        dir.path(),
        &sink,
        account(&dovecot, &service, "pop3", "refresh_token", &[]),
    );
    // Before any login: the clear error, nothing fetched.
    deliver(&dovecot, "rt pop3");
    let out = poll_once(&pop3);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stdout).contains(&format!(
            "mailferry oauth login --config <config file> --account {NAME}"
        )),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert_eq!(dovecot.count(USER), 1, "{stderr}");

    device_login(&service, &pop3);
    let grants = service.grants();
    assert_eq!(
        grants.first().map(String::as_str),
        Some("urn:ietf:params:oauth:grant-type:device_code")
    );
    assert!(
        grants.len() >= 2,
        "the first poll is told slow_down, then it goes on: {grants:?}"
    );
    let file = refresh_file(dir.path());
    let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "the refresh token file's mode");
    let first = stored_refresh(dir.path());
    assert!(service.refresh_is_live(&first));

    let out = poll_once(&pop3);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{stderr}\n{}", dovecot.log());
    assert_eq!(dovecot.count(USER), 0);
    assert!(stderr.contains("the refresh token was rotated"), "{stderr}");
    let second = stored_refresh(dir.path());
    assert_ne!(first, second, "the rotated refresh token is saved");
    assert!(!service.refresh_is_live(&first));
    assert_no_secret(&service, &stderr);

    // A new process (a restart) over IMAP: the saved, rotated token is the only live one.
    deliver(&dovecot, "rt imap");
    let imap = config(
        dir.path(),
        &sink,
        account(&dovecot, &service, "imap", "refresh_token", &[]),
    );
    let out = poll_once(&imap);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{stderr}\n{}", dovecot.log());
    assert_eq!(dovecot.count(USER), 0);
    assert_ne!(stored_refresh(dir.path()), second);
    let subjects: Vec<String> = sink.transactions().iter().map(|t| t.subject()).collect();
    assert_eq!(subjects, ["rt pop3", "rt imap"]);
}

#[test]
fn a_token_expiring_between_passes_is_renewed() {
    if support::skip_e2e() {
        return;
    }
    // Announced 61 s, so with the 60 s margin it is renewed after a second; accepted by
    // Dovecot for 3 s only, so a daemon that reused it on the next pass would be refused.
    let (service, dovecot, sink, dir) = servers(TokenPolicy {
        announced: Duration::from_secs(61),
        ..policy(Duration::from_secs(3))
    });
    let metrics_port = support::free_port();
    let config = GatewayConfig::new(dir.path().join("state"), sink.port())
        .domains(&["corp.local"])
        .postmaster("postmaster@corp.local")
        .metrics_listen(&format!("127.0.0.1:{metrics_port}"))
        .account(account(
            &dovecot,
            &service,
            "imap",
            "client_credentials",
            &[],
        ))
        .write(dir.path())
        .display()
        .to_string();
    deliver(&dovecot, "first");
    let daemon = Mailferry::spawn(&["run", "--config", &config]);
    assert!(wait_until(Duration::from_secs(20), || sink
        .transactions()
        .len()
        == 1));
    let metrics = http_get(metrics_port, "/metrics");
    assert!(
        metrics.contains(&format!(
            "mailferry_oauth_token_expiry_seconds{{account=\"{NAME}\"}}"
        )),
        "{metrics}"
    );
    assert_no_secret(&service, &metrics);
    std::thread::sleep(Duration::from_secs(4));
    deliver(&dovecot, "second");
    let arrived = wait_until(Duration::from_secs(20), || sink.transactions().len() == 2);
    let out = daemon
        .terminate(Duration::from_secs(20))
        .unwrap_or_else(|o| o);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(arrived, "{stderr}\n{}", dovecot.log());
    assert!(!stderr.contains("authentication failed"), "{stderr}");
    let grants = service.grants();
    assert!(
        grants.len() >= 2,
        "a new token for the later pass: {grants:?}"
    );
    let introspected = service.introspected();
    let distinct: std::collections::HashSet<&String> = introspected.iter().collect();
    assert!(
        distinct.len() >= 2,
        "each pass logged in with a fresh token: {introspected:?}"
    );
    assert_no_secret(&service, &stderr);
}

const OTHER: &str = "other@example.com";
const OTHER_PASS: &str = "other-pass";

#[test]
fn a_revoked_refresh_token_backs_off_with_growing_gaps_while_another_account_delivers() {
    if support::skip_e2e() {
        return;
    }
    let service = TokenService::start(policy(Duration::from_secs(600)));
    let dovecot = Dovecot::start_oauth(
        &[(USER, PASS), (OTHER, OTHER_PASS)],
        &service.url("/introspect"),
    );
    let sink = SmtpSink::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    let metrics_port = support::free_port();
    let other = AccountYaml {
        name: "other".into(),
        port: dovecot.pop3s_port(),
        tls: "tls".into(),
        ca_file: Some(dovecot.ca_file()),
        username: OTHER.into(),
        password: Secret::Inline(OTHER_PASS.into()),
        extra_lines: vec![
            "mode: single-user".into(),
            "deliver_to: other@corp.local".into(),
            "poll_interval: 5s".into(),
        ],
        ..AccountYaml::default()
    };
    let config = GatewayConfig::new(dir.path().join("state"), sink.port())
        .domains(&["corp.local"])
        .postmaster("postmaster@corp.local")
        .metrics_listen(&format!("127.0.0.1:{metrics_port}"))
        .account(account(&dovecot, &service, "pop3", "refresh_token", &[]))
        .account(other)
        .write(dir.path())
        .display()
        .to_string();
    let revoked = service.issue_refresh(USER);
    std::fs::create_dir_all(refresh_file(dir.path()).parent().unwrap()).unwrap();
    std::fs::write(refresh_file(dir.path()), &revoked).unwrap();
    service.revoke_refresh_tokens();
    deliver(&dovecot, "after consent");
    dovecot.deliver(
        OTHER,
        &message(&[("From", "x@remote.test"), ("Subject", "other 1")], "hi\n"),
    );

    let daemon = Mailferry::spawn(&["run", "--config", &config]);
    // Passes of o365 at about 0, 5, 15 s (poll_interval 5 s, doubling); the other
    // account meanwhile every 5 s.
    std::thread::sleep(Duration::from_secs(8));
    dovecot.deliver(
        OTHER,
        &message(&[("From", "x@remote.test"), ("Subject", "other 2")], "hi\n"),
    );
    std::thread::sleep(Duration::from_secs(10));
    let times = service.grant_times();
    assert_eq!(
        service
            .grants()
            .iter()
            .filter(|g| *g == "refresh_token")
            .count(),
        times.len()
    );
    assert!(
        times.len() >= 3,
        "asked at each backed-off pass: {} requests",
        times.len()
    );
    let gaps: Vec<f64> = times
        .windows(2)
        .map(|w| (w[1] - w[0]).as_secs_f64())
        .collect();
    assert!(gaps[0] >= 4.0, "no tight loop: {gaps:?}");
    assert!(gaps[1] >= gaps[0] * 1.5, "the gaps grow: {gaps:?}");
    assert_eq!(dovecot.count(USER), 1, "nothing fetched without a token");
    let other_subjects: Vec<String> = sink.transactions().iter().map(|t| t.subject()).collect();
    assert_eq!(
        other_subjects,
        ["other 1", "other 2"],
        "the other account goes on"
    );
    let metrics = http_get(metrics_port, "/metrics");
    for line in [
        format!("mailferry_oauth_token_expiry_seconds{{account=\"{NAME}\"}} 0"),
        format!("mailferry_login_refused{{account=\"{NAME}\"}} 1"),
        "mailferry_login_refused{account=\"other\"} 0".to_owned(),
    ] {
        assert!(metrics.contains(&line), "{line} in:\n{metrics}");
    }
    // Each refused grant fails that pass as a login error.
    let login_errors = format!("mailferry_poll_errors_total{{account=\"{NAME}\",kind=\"login\"}} ");
    let counted: Option<usize> = metrics
        .lines()
        .find_map(|l| l.strip_prefix(&login_errors))
        .and_then(|n| n.trim().parse().ok());
    assert!(counted >= Some(times.len()), "{login_errors}in:\n{metrics}");
    assert!(
        metrics.contains(&format!(
            "mailferry_oauth_failures_total{{account=\"{NAME}\",reason=\"refused\"}}"
        )),
        "{metrics}"
    );
    assert_no_secret(&service, &metrics);

    // The user logs in again: the next pass takes the new token.
    let fresh = service.issue_refresh(USER);
    std::fs::write(refresh_file(dir.path()), &fresh).unwrap();
    let arrived = wait_until(Duration::from_secs(40), || dovecot.count(USER) == 0);
    let out = daemon
        .terminate(Duration::from_secs(20))
        .unwrap_or_else(|o| o);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(arrived, "{stderr}");
    let clear = format!(
        "refused the refresh token (invalid_grant: test service says invalid_grant); consent revoked or the token expired: run `mailferry oauth login --config <config file> --account {NAME}` again"
    );
    let said = stderr.matches(&clear).count();
    assert!(
        said >= 1 && said <= times.len() + 2,
        "the clear error, once per failed pass, not more: {said}\n{stderr}"
    );
    assert_no_secret(&service, &stderr);
}

fn http_get(port: u16, path: &str) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect to metrics");
    let _ = write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    );
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}
