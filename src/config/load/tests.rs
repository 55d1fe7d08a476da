use std::time::Duration;

use super::*;
use crate::config::{TlsOptions, from_yaml_str};

/// A minimal valid file; the line numbers of its lines are used by the tests below.
pub(super) const BASE: &str = "\
state_dir: /var/lib/mailferry
relay:
  host: mail.corp.local
domains: [example.com]
postmaster: postmaster@corp.local
accounts:
  - name: a
    protocol: pop3
    host: pop.provider.net
    username: u@example.com
    password: pw
";

/// A PEM block of the right shape (its DER is not a certificate; nothing at load parses it).
pub(super) const PEM_CERT: &str = "-----BEGIN CERTIFICATE-----\nMAA=\n-----END CERTIFICATE-----\n";

pub(super) fn load(text: &str) -> Result<Config, ConfigErrors> {
    from_yaml_str(text, "/etc/mailferry/mailferry.yaml")
}

fn errors(text: &str) -> Vec<ConfigError> {
    match load(text) {
        Ok(_) => panic!("accepted:\n{text}"),
        Err(ConfigErrors(errors)) => errors,
    }
}

/// `BASE` with `from` replaced by `to` (which must occur).
pub(super) fn base_with(from: &str, to: &str) -> String {
    assert!(BASE.contains(from), "{from:?} not in BASE");
    BASE.replacen(from, to, 1)
}

/// Asserts that `text` fails with exactly one error, on `line`, whose message has `needle`.
#[track_caller]
pub(super) fn assert_one_error(text: &str, line: usize, needle: &str) {
    let errors = errors(text);
    assert_eq!(
        errors.len(),
        1,
        "expected one error, got {errors:#?}\nin:\n{text}"
    );
    let e = &errors[0];
    assert_eq!(e.line, line, "wrong line for {e}\nin:\n{text}");
    assert!(e.column >= 1, "no column in {e}");
    assert!(e.message.contains(needle), "{needle:?} not in {e}");
    assert_eq!(e.file, "/etc/mailferry/mailferry.yaml");
}

#[test]
fn minimal_file_gets_the_defaults() {
    let c = load(BASE).unwrap();
    assert_eq!(c.state_dir, PathBuf::from("/var/lib/mailferry"));
    assert_eq!(c.metrics.listen, None);
    assert_eq!(c.relay.host, "mail.corp.local");
    assert_eq!(c.relay.port, 25);
    assert_eq!(c.relay.tls, TlsMode::StarttlsIfAvailable);
    assert_eq!(c.relay.helo, None);
    assert_eq!(c.relay.connections, 4);
    assert_eq!(c.relay.tls_options, TlsOptions::default());
    assert_eq!(c.relay.timeout, Duration::from_secs(60));
    assert_eq!(
        c.domains,
        vec![DomainPattern::parse("example.com").unwrap()]
    );
    assert_eq!(c.postmaster.as_str(), "postmaster@corp.local");
    assert_eq!(c.envelope_headers, DEFAULT_ENVELOPE_HEADERS.to_vec());
    let a = &c.accounts[0];
    assert_eq!(a.name, "a");
    assert_eq!(a.protocol, Protocol::Pop3);
    assert_eq!(a.host, "pop.provider.net");
    assert_eq!(a.tls, TlsMode::Tls);
    assert_eq!(a.port, 995);
    assert_eq!(a.tls_options, TlsOptions::default());
    assert_eq!(a.username, "u@example.com");
    assert_eq!(a.password.expose(), "pw");
    assert_eq!(a.mode, Mode::CatchAll);
    assert_eq!(a.folder, "INBOX");
    assert_eq!(a.poll_interval, Duration::from_secs(60));
    assert_eq!(a.max_per_pass, 200);
    assert_eq!(a.retention, Retention::Delete);
    assert_eq!(a.timeout, Duration::from_secs(180));
}

#[test]
fn full_file_round_trips() {
    let dir = tempfile::tempdir().unwrap();
    // PEM structure only: the certificates themselves are judged in the handshake.
    std::fs::write(dir.path().join("ca.pem"), PEM_CERT).unwrap();
    std::fs::write(dir.path().join("pw"), "from-file\r\n").unwrap();
    let text = r#"
state_dir: state
metrics:
  listen: "[::1]:9425"
relay:
  host: Mail.Corp.Local
  port: 2525
  tls: starttls
  helo: gateway.corp.local
  connections: 8
  ca_file: ca.pem
  timeout: 2m
domains: [example.com, "*.Example.ORG"]
postmaster: postmaster@corp.local
envelope_headers: [Delivered-To, Received-For]
accounts:
  - name: example-catchall
    protocol: pop3
    host: pop.provider.net
    port: 1995
    tls: starttls-if-available
    ca_file: ca.pem
    username: catchall@example.com
    password: "s3cret<&>'\""
    mode: catch-all
    poll_interval: 5m
    max_per_pass: 50
    retention: 14d
    timeout: 30s
  - name: alice_1.x
    protocol: imap
    host: 192.0.2.7
    tls: none
    username: alice
    password_file: pw
    mode: single-user
    deliver_to: Alice@Corp.Local
    folder: INBOX/Support
    retention: keep
"#;
    let file = dir.path().join("mailferry.yaml");
    let c = from_yaml_str(text, file.to_str().unwrap()).unwrap();
    assert_eq!(c.state_dir, dir.path().join("state"));
    assert_eq!(c.metrics.listen, Some("[::1]:9425".parse().unwrap()));
    assert_eq!(c.relay.host, "mail.corp.local");
    assert_eq!(c.relay.port, 2525);
    assert_eq!(c.relay.tls, TlsMode::Starttls);
    assert_eq!(c.relay.helo.as_deref(), Some("gateway.corp.local"));
    assert_eq!(c.relay.connections, 8);
    assert_eq!(c.relay.tls_options.ca_file, Some(dir.path().join("ca.pem")));
    assert_eq!(c.relay.timeout, Duration::from_secs(120));
    assert_eq!(
        c.domains,
        vec![
            DomainPattern::Exact("example.com".into()),
            DomainPattern::Subdomains("example.org".into())
        ]
    );
    assert_eq!(c.envelope_headers, vec!["Delivered-To", "Received-For"]);
    let a = &c.accounts[0];
    assert_eq!(a.port, 1995);
    assert_eq!(a.tls, TlsMode::StarttlsIfAvailable);
    assert_eq!(a.tls_options.ca_file, Some(dir.path().join("ca.pem")));
    assert_eq!(a.password.expose(), "s3cret<&>'\"");
    assert_eq!(a.poll_interval, Duration::from_secs(300));
    assert_eq!(a.max_per_pass, 50);
    assert_eq!(a.retention, Retention::Days(14));
    assert_eq!(a.timeout, Duration::from_secs(30));
    let b = &c.accounts[1];
    assert_eq!(b.protocol, Protocol::Imap);
    assert_eq!(b.host, "192.0.2.7");
    assert_eq!(b.port, 143);
    assert_eq!(b.tls, TlsMode::None);
    // One trailing newline (CRLF too) is stripped from a password file.
    assert_eq!(b.password.expose(), "from-file");
    assert_eq!(
        b.mode,
        Mode::SingleUser {
            deliver_to: Address::parse("Alice@corp.local").unwrap()
        }
    );
    assert_eq!(b.folder, "INBOX/Support");
    assert_eq!(b.retention, Retention::Keep);
    assert_eq!(c.account("alice_1.x").map(|a| a.port), Some(143));
}

#[test]
fn default_ports_follow_protocol_and_tls() {
    let cases = [
        ("pop3", "tls", 995),
        ("pop3", "starttls", 110),
        ("pop3", "none", 110),
        ("imap", "tls", 993),
        ("imap", "starttls-if-available", 143),
    ];
    for (protocol, tls, port) in cases {
        let text = base_with(
            "protocol: pop3\n",
            &format!("protocol: {protocol}\n    tls: {tls}\n"),
        );
        assert_eq!(
            load(&text).unwrap().accounts[0].port,
            port,
            "{protocol} {tls}"
        );
    }
    let text = base_with(
        "  host: mail.corp.local\n",
        "  host: mail.corp.local\n  tls: tls\n",
    );
    assert_eq!(load(&text).unwrap().relay.port, 465);
}

#[test]
fn empty_envelope_headers_means_none() {
    let text = format!("{BASE}envelope_headers: []\n");
    assert!(load(&text).unwrap().envelope_headers.is_empty());
}

#[test]
fn yaml_syntax_error_is_reported_with_its_line() {
    let text = base_with("domains: [example.com]\n", "domains: [example.com\n");
    let errors = errors(&text);
    assert!(
        errors[0].message.contains("YAML syntax error"),
        "{errors:?}"
    );
    assert!(errors[0].line >= 4 && errors[0].line <= 6, "{errors:?}");
    // Keys after the error are unknown, not missing.
    assert!(
        !errors.iter().any(|e| e.message.contains("missing")),
        "{errors:?}"
    );
}

#[test]
fn problems_before_a_syntax_error_are_still_reported() {
    let text = "state_dir: /x\nrelay:\n  port: 70000\n  host: [a\n";
    let errors = errors(text);
    assert_eq!(errors.len(), 2, "{errors:#?}");
    assert_eq!(errors[0].line, 3);
    assert!(errors[0].message.contains("70000"));
    assert!(errors[1].message.contains("YAML syntax error"));
}

#[test]
fn unknown_keys_are_named_with_the_allowed_ones() {
    assert_one_error(&format!("{BASE}colour: red\n"), 12, "unknown key `colour`");
    let text = base_with(
        "  host: mail.corp.local\n",
        "  host: mail.corp.local\n  hots: x\n",
    );
    assert_one_error(&text, 4, "allowed keys: host, port, tls");
    let text = base_with("    password: pw\n", "    password: pw\n    pasword: s\n");
    assert_one_error(&text, 12, "unknown key `pasword` in accounts[a]");
}

#[test]
fn duplicate_keys_are_reported() {
    let text = base_with(
        "  host: mail.corp.local\n",
        "  host: mail.corp.local\n  host: x.local\n",
    );
    assert_one_error(
        &text,
        4,
        "duplicate key `relay.host` (first given at line 3)",
    );
    assert_one_error(
        &format!("{BASE}state_dir: /tmp\n"),
        12,
        "duplicate key `state_dir`",
    );
}

#[test]
fn missing_required_keys_are_reported() {
    assert_one_error(
        &base_with("state_dir: /var/lib/mailferry\n", ""),
        1,
        "missing required key `state_dir`",
    );
    assert_one_error(
        &base_with("postmaster: postmaster@corp.local\n", ""),
        1,
        "missing required key `postmaster`",
    );
    assert_one_error(
        &base_with("domains: [example.com]\n", ""),
        1,
        "missing required key `domains`",
    );
    assert_one_error(
        &base_with("relay:\n  host: mail.corp.local\n", ""),
        1,
        "missing required key `relay`",
    );
    let text = base_with("  host: mail.corp.local\n", "  port: 25\n");
    assert_one_error(&text, 3, "missing required key `host` in relay");
    let accounts = BASE.find("accounts:").unwrap();
    assert_one_error(&BASE[..accounts], 1, "missing required key `accounts`");
    for key in ["protocol", "host", "username"] {
        let line = BASE
            .lines()
            .find(|l| l.starts_with(&format!("    {key}:")))
            .unwrap();
        let text = base_with(&format!("{line}\n"), "");
        assert_one_error(
            &text,
            7,
            &format!("missing required key `{key}` in accounts[a]"),
        );
    }
    let text = base_with("  - name: a\n    protocol", "  - protocol");
    assert_one_error(&text, 7, "missing required key `name`");
    assert_one_error(
        &base_with("  host: mail.corp.local\n", "  host:\n"),
        3,
        "relay.host has no value",
    );
}

#[test]
fn empty_file_is_reported() {
    assert_one_error("", 1, "the file is empty");
    assert_one_error("# only a comment\n", 1, "the file is empty");
}

#[test]
fn wrong_types_are_reported() {
    let text = base_with(
        "relay:\n  host: mail.corp.local\n",
        "relay: mail.corp.local\n",
    );
    assert_one_error(&text, 2, "relay: expected a mapping, found a scalar");
    let text = base_with("domains: [example.com]", "domains: example.com");
    assert_one_error(&text, 4, "domains: expected a list");
    let text = base_with(
        "  host: mail.corp.local\n",
        "  host: mail.corp.local\n  port: abc\n",
    );
    assert_one_error(&text, 4, "relay.port: expected a whole number, found `abc`");
    let text = base_with(
        "  host: mail.corp.local\n",
        "  host: mail.corp.local\n  port: \"25\"\n",
    );
    assert_one_error(&text, 4, "expected a whole number");
    let text = base_with("    username: u@example.com", "    username: [u]");
    assert_one_error(
        &text,
        10,
        "accounts[a].username: expected a string, found a list",
    );
    assert_one_error("- a\n- b\n", 1, "the configuration: expected a mapping");
}

#[test]
fn bad_enum_values_name_the_allowed_ones() {
    let text = base_with(
        "  host: mail.corp.local\n",
        "  host: mail.corp.local\n  tls: ssl\n",
    );
    assert_one_error(
        &text,
        4,
        "allowed values: none | starttls | starttls-if-available | tls",
    );
    let text = base_with("protocol: pop3", "protocol: pop4");
    assert_one_error(&text, 8, "allowed values: pop3 | imap");
    let text = base_with("    password: pw\n", "    password: pw\n    mode: multi\n");
    assert_one_error(&text, 12, "allowed values: catch-all | single-user");
    let text = base_with(
        "    password: pw\n",
        "    password: pw\n    retention: forever\n",
    );
    assert_one_error(&text, 12, "allowed values: delete | keep | <N>d");
    let text = base_with(
        "    password: pw\n",
        "    password: pw\n    retention: 0d\n",
    );
    assert_one_error(&text, 12, "0d is not allowed");
}

#[test]
fn ports_must_be_in_range() {
    for bad in ["0", "70000", "-1"] {
        let text = base_with(
            "    password: pw\n",
            &format!("    password: pw\n    port: {bad}\n"),
        );
        assert_one_error(
            &text,
            12,
            &format!("accounts[a].port: {bad} is outside 1..=65535"),
        );
    }
    let text = base_with(
        "  host: mail.corp.local\n",
        "  host: mail.corp.local\n  port: 65536\n",
    );
    assert_one_error(&text, 4, "relay.port: 65536 is outside");
    let text = base_with(
        "  host: mail.corp.local\n",
        "  host: mail.corp.local\n  connections: 65\n",
    );
    assert_one_error(&text, 4, "relay.connections: 65 is outside 1..=64");
    let text = base_with(
        "    password: pw\n",
        "    password: pw\n    max_per_pass: 0\n",
    );
    assert_one_error(&text, 12, "max_per_pass: 0 is outside");
}

#[test]
fn bad_addresses_and_domains_are_reported() {
    let text = base_with("postmaster: postmaster@corp.local", "postmaster: nobody");
    assert_one_error(
        &text,
        5,
        "postmaster: `nobody` is not a usable address: address has no '@'",
    );
    let text = base_with(
        "    password: pw\n",
        "    password: pw\n    mode: single-user\n    deliver_to: \"a@b@\"\n",
    );
    assert_one_error(&text, 13, "deliver_to: `a@b@` is not a usable address");
    let text = base_with("[example.com]", "[example.com, \"exa mple.com\"]");
    assert_one_error(
        &text,
        4,
        "domains: domain \"exa mple.com\" is not a valid domain name",
    );
    assert_one_error(&base_with("[example.com]", "[]"), 4, "domains is empty");
    let text = base_with("host: mail.corp.local", "host: \"mail corp\"");
    assert_one_error(&text, 3, "relay.host: `mail corp` is not a host name");
    let text = format!("{BASE}envelope_headers: [\"X-To:\"]\n");
    assert_one_error(&text, 12, "`X-To:` is not a header name");
}

#[test]
fn durations_need_a_unit_and_a_range() {
    let add = |line: &str| {
        base_with(
            "    password: pw\n",
            &format!("    password: pw\n    {line}\n"),
        )
    };
    assert_one_error(
        &add("poll_interval: 2s"),
        12,
        "poll_interval: 2s is outside 5s..=86400s",
    );
    assert_one_error(&add("poll_interval: 2d"), 12, "2d is outside 5s..=86400s");
    let e = &errors(&add("timeout: 60"))[0];
    assert!(
        e.message
            .contains("`60` has no unit; units: s (seconds), m (minutes)"),
        "{e}"
    );
    assert_one_error(&add("timeout: 5x"), 12, "unknown unit `x`");
    assert_one_error(&add("timeout: soon"), 12, "`soon` is not a duration");
    assert_one_error(&add("timeout: 99999999999999999999d"), 12, "too long");
}

#[test]
fn one_day_poll_interval_is_accepted() {
    let text = base_with(
        "    password: pw\n",
        "    password: pw\n    poll_interval: 1d\n",
    );
    assert_eq!(
        load(&text).unwrap().accounts[0].poll_interval,
        Duration::from_secs(86_400)
    );
}

#[test]
fn account_names_are_checked() {
    let second =
        "  - name: a\n    protocol: imap\n    host: imap.x.net\n    username: u\n    password: p\n";
    let errors = errors(&format!("{BASE}{second}"));
    assert_eq!(errors.len(), 1, "{errors:#?}");
    assert_eq!(errors[0].line, 12);
    assert!(
        errors[0]
            .message
            .contains("duplicate account name `a` (also used at line 7)")
    );
    assert_one_error(
        &base_with("name: a\n", "name: a b\n"),
        7,
        "account name `a b` is not allowed",
    );
    let long = "x".repeat(129);
    assert_one_error(
        &base_with("name: a\n", &format!("name: {long}\n")),
        7,
        "is not allowed",
    );
    let ok = "y".repeat(128);
    assert!(load(&base_with("name: a\n", &format!("name: {ok}\n"))).is_ok());
}

#[test]
fn deliver_to_goes_with_single_user_only() {
    let text = base_with(
        "    password: pw\n",
        "    password: pw\n    mode: single-user\n",
    );
    assert_one_error(&text, 7, "mode single-user needs deliver_to");
    let text = base_with(
        "    password: pw\n",
        "    password: pw\n    deliver_to: a@corp.local\n",
    );
    assert_one_error(&text, 12, "deliver_to is only for mode: single-user");
}

#[test]
fn folder_is_refused_for_pop3() {
    let text = base_with(
        "    password: pw\n",
        "    password: pw\n    folder: INBOX\n",
    );
    assert_one_error(&text, 12, "only imap accounts have folders");
    let text = base_with(
        "protocol: pop3\n",
        "protocol: imap\n    folder: INBOX.Support\n",
    );
    assert_eq!(load(&text).unwrap().accounts[0].folder, "INBOX.Support");
}

#[test]
fn exactly_one_password_source() {
    let text = base_with(
        "    password: pw\n",
        "    password: pw\n    password_env: PW\n",
    );
    assert_one_error(
        &text,
        12,
        "`password_env` conflicts with `password` (line 11)",
    );
    let text = base_with("    password: pw\n", "");
    assert_one_error(
        &text,
        7,
        "missing a password: set one of password, password_file, password_env",
    );
    let text = base_with("    password: pw\n", "    password: \"\"\n");
    assert_one_error(&text, 11, "the password is empty");
}

#[test]
fn password_file_is_resolved_and_checked() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("pw"), "line1\nline2\n").unwrap();
    let file = dir.path().join("mailferry.yaml");
    let text = base_with("    password: pw\n", "    password_file: missing\n");
    let errors = from_yaml_str(&text, file.to_str().unwrap()).unwrap_err().0;
    assert_eq!(errors.len(), 1, "{errors:#?}");
    assert_eq!(errors[0].line, 11);
    assert!(errors[0].message.contains("cannot read"), "{}", errors[0]);
    assert!(
        errors[0]
            .message
            .contains(&dir.path().join("missing").display().to_string())
    );
    // Only one trailing newline is stripped; one inside is refused.
    let text = base_with("    password: pw\n", "    password_file: pw\n");
    let errors = from_yaml_str(&text, file.to_str().unwrap()).unwrap_err().0;
    assert!(errors[0].message.contains("line break"), "{}", errors[0]);
}

#[test]
fn password_env_is_resolved_and_checked() {
    let text = base_with(
        "    password: pw\n",
        "    password_env: MAILFERRY_TEST_SURELY_UNSET_42\n",
    );
    assert_one_error(
        &text,
        11,
        "environment variable MAILFERRY_TEST_SURELY_UNSET_42 is not set",
    );
    let (var, value) = usable_env_var();
    let text = base_with("    password: pw\n", &format!("    password_env: {var}\n"));
    assert_eq!(load(&text).unwrap().accounts[0].password.expose(), value);
}

/// Any variable of this process's environment that is usable as a password (setting one
/// would need `unsafe` while other tests run).
fn usable_env_var() -> (String, String) {
    std::env::vars()
        .find(|(k, v)| {
            !v.is_empty()
                && !v.contains(['\r', '\n', '\0'])
                && k.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
        })
        .expect("no usable environment variable")
}

#[test]
fn metrics_listen_must_be_ip_and_port() {
    for bad in ["localhost:9425", "127.0.0.1", "127.0.0.1:0"] {
        let text = format!("{BASE}metrics:\n  listen: \"{bad}\"\n");
        assert_one_error(&text, 13, "metrics.listen: ");
    }
    let text = format!("{BASE}metrics:\n  listen: 0.0.0.0:9425\n");
    assert_eq!(
        load(&text).unwrap().metrics.listen,
        Some("0.0.0.0:9425".parse().unwrap())
    );
}

#[test]
fn six_mistakes_give_six_errors_in_line_order() {
    let text = "\
state_dir: /var/lib/mailferry
relay:
  host: mail.corp.local
  port: 99999
domains: [example.com]
postmaster: not-an-address
colour: blue
accounts:
  - name: one
    protocol: pop3
    host: pop.provider.net
    username: u
    password: p
    tls: ssl
  - name: one
    protocol: pop3
    host: pop.provider.net
    username: u
    password: p
    poll_interval: 1s
";
    let errors = errors(text);
    let lines: Vec<usize> = errors.iter().map(|e| e.line).collect();
    assert_eq!(lines, vec![4, 6, 7, 14, 15, 20], "{errors:#?}");
    let needles = [
        "99999 is outside",
        "not a usable address",
        "unknown key `colour`",
        "`ssl` is not allowed",
        "duplicate account name `one` (also used at line 9)",
        "1s is outside 5s..=86400s",
    ];
    for (e, needle) in errors.iter().zip(needles) {
        assert!(e.message.contains(needle), "{needle:?} not in {e}");
    }
    // Two more, on lines 21 and 22.
    let text = format!("{text}    folder: INBOX\n    retention: never\n");
    assert_eq!(errors_lines(&text), vec![4, 6, 7, 14, 15, 20, 21, 22]);
}

fn errors_lines(text: &str) -> Vec<usize> {
    errors(text).iter().map(|e| e.line).collect()
}

#[test]
fn passwords_never_appear_in_errors() {
    let secret = "s3cret<&>'\"";
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("pw"), format!("{secret}\n")).unwrap();
    let text = r#"
state_dir: /var/lib/mailferry
relay:
  host: mail.corp.local
  port: 0
domains: [example.com]
postmaster: nobody
accounts:
  - name: a
    protocol: pop3
    host: pop.provider.net
    username: u
    password: "s3cret<&>'\""
    password_file: pw
  - name: b
    protocol: pop3
    host: pop.provider.net
    username: u
    password: "s3cret<&>'\""
    pasword: "s3cret<&>'\""
    mode: single-user
  - name: c
    protocol: pop3
    host: pop.provider.net
    username: u
    password: ["s3cret<&>'\""]
  - name: d
    protocol: imap
    host: pop.provider.net
    username: u
    password: "s3cret<&>'\"
"#;
    let file = dir.path().join("mailferry.yaml");
    let errors = from_yaml_str(text, file.to_str().unwrap()).unwrap_err();
    assert!(errors.0.len() >= 6, "{errors:#?}");
    let shown = format!("{errors}\n{errors:?}");
    for needle in [secret, "s3cret"] {
        assert!(!shown.contains(needle), "password in:\n{shown}");
    }
}

#[test]
fn example_file_loads() {
    let text = include_str!("../../../conf/mailferry.example.yaml");
    let (var, value) = usable_env_var();
    let needle = "password_env: MAILFERRY_CATCHALL_PASSWORD";
    assert!(text.contains(needle));
    let text = text.replace(needle, &format!("password_env: {var}"));
    let c = from_yaml_str(&text, "conf/mailferry.example.yaml").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(c.accounts[0].password.expose(), value);
    assert!(c.accounts.len() >= 2);
    assert!(c.metrics.listen.is_some());
}

#[test]
fn deadlines_and_size_cap_default() {
    let c = load(BASE).unwrap();
    assert_eq!(c.relay.data_timeout, Duration::from_secs(600));
    assert_eq!(c.accounts[0].pass_deadline, Duration::from_secs(1800));
    assert_eq!(c.max_message_size, 50_000_000);
    assert_eq!(c.memory_budget, 256 << 20);
}

#[test]
fn deadlines_and_size_cap_are_read() {
    let text = base_with(
        "  host: mail.corp.local\n",
        "  host: mail.corp.local\n  data_timeout: 15m\n",
    );
    let text = text.replacen(
        "accounts:\n",
        "max_message_size: 10MiB\nmemory_budget: 64MiB\naccounts:\n",
        1,
    ) + "    pass_deadline: 2h\n";
    let c = load(&text).unwrap();
    assert_eq!(c.relay.data_timeout, Duration::from_secs(900));
    assert_eq!(c.accounts[0].pass_deadline, Duration::from_secs(7200));
    assert_eq!(c.max_message_size, 10 * 1024 * 1024);
    assert_eq!(c.memory_budget, 64 << 20);
    for (written, bytes) in [
        ("50MB", 50_000_000),
        ("500KB", 500_000),
        ("2 GiB", 0),
        ("1048576", 1_048_576),
        ("3kib", 3072),
        ("1GiB", 1 << 30),
    ] {
        let text = base_with(
            "accounts:\n",
            &format!("max_message_size: {written}\naccounts:\n"),
        );
        match load(&text) {
            Ok(c) => assert_eq!(c.max_message_size, bytes, "{written}"),
            Err(e) => assert_eq!(bytes, 0, "{written}: {e}"),
        }
    }
}

#[test]
fn bad_deadlines_and_size_cap_are_reported_with_line_and_column() {
    let relay = |value: &str| {
        base_with(
            "  host: mail.corp.local\n",
            &format!("  host: mail.corp.local\n  data_timeout: {value}\n"),
        )
    };
    assert_one_error(
        &relay("0s"),
        4,
        "relay.data_timeout: 0s is outside 1s..=3600s",
    );
    assert_one_error(&relay("2h"), 4, "relay.data_timeout: 2h is outside");
    assert_one_error(&relay("ten"), 4, "`ten` is not a duration");
    let size = |value: &str| {
        base_with(
            "accounts:\n",
            &format!("max_message_size: {value}\naccounts:\n"),
        )
    };
    assert_one_error(&size("50XB"), 6, "unknown unit `XB`");
    assert_one_error(&size("big"), 6, "`big` is not a size");
    assert_one_error(&size("100"), 6, "outside 1024..=1073741824 bytes");
    assert_one_error(&size("2GiB"), 6, "outside");
    assert_one_error(&size("99999999999999999999"), 6, "too large");
    let e = &errors(&size("big"))[0];
    assert_eq!(e.column, 19, "{e}");
    let account = BASE.to_owned() + "    pass_deadline: 2d\n";
    assert_one_error(
        &account,
        12,
        "accounts[a].pass_deadline: 2d is outside 1s..=86400s",
    );
}

#[test]
fn retry_initial_and_expunge_every_have_defaults_and_are_checked() {
    let c = load(BASE).unwrap();
    assert_eq!(c.relay.retry, RetryPolicy::default());
    assert_eq!(c.accounts[0].initial, None);
    assert_eq!(c.accounts[0].expunge_every, 1000);

    let c = load(&base_with(
        "  host: mail.corp.local\n",
        "  host: mail.corp.local\n  retry: {max_attempts: 3, initial: 0s, max: 5m}\n",
    ))
    .unwrap();
    assert_eq!(
        c.relay.retry,
        RetryPolicy {
            max_attempts: 3,
            initial: Duration::ZERO,
            max: Duration::from_secs(300)
        }
    );
    assert_one_error(
        &base_with(
            "  host: mail.corp.local\n",
            "  host: mail.corp.local\n  retry: {max_attempts: 0}\n",
        ),
        4,
        "relay.retry.max_attempts: 0 is outside 1..=1000",
    );
    assert_one_error(
        &base_with(
            "  host: mail.corp.local\n",
            "  host: mail.corp.local\n  retry: {initial: 1h, max: 1m}\n",
        ),
        4,
        "relay.retry.max is shorter than relay.retry.initial",
    );
    assert_one_error(
        &base_with(
            "    password: pw\n",
            "    password: pw\n    initial: later\n",
        ),
        12,
        "allowed values: deliver_all | skip_existing",
    );
    assert_one_error(
        &base_with(
            "    password: pw\n",
            "    password: pw\n    expunge_every: 0\n",
        ),
        12,
        "expunge_every: 0 is outside",
    );
    let c = load(&base_with(
        "    password: pw\n",
        "    password: pw\n    retention: keep\n    initial: skip_existing\n",
    ))
    .unwrap();
    assert_eq!(c.accounts[0].initial, Some(Initial::SkipExisting));
}

#[test]
fn skip_existing_with_retention_delete_is_refused() {
    assert_one_error(
        &base_with(
            "    password: pw\n",
            "    password: pw\n    initial: skip_existing\n",
        ),
        12,
        "would delete the mail already upstream without delivering it",
    );
}

#[test]
fn retry_delays_double_up_to_the_maximum() {
    let p = RetryPolicy {
        max_attempts: 10,
        initial: Duration::from_secs(60),
        max: Duration::from_secs(600),
    };
    assert_eq!(p.delay(1), Duration::from_secs(60));
    assert_eq!(p.delay(2), Duration::from_secs(120));
    assert_eq!(p.delay(4), Duration::from_secs(480));
    assert_eq!(p.delay(5), Duration::from_secs(600));
    assert_eq!(p.delay(u32::MAX), Duration::from_secs(600));
}

#[test]
fn source_routed_defaults_to_postmaster_and_takes_reject() {
    assert_eq!(load(BASE).unwrap().source_routed, SourceRouted::Postmaster);
    let text = format!("source_routed: reject\n{BASE}");
    assert_eq!(load(&text).unwrap().source_routed, SourceRouted::Reject);
    let text = format!("source_routed: postmaster\n{BASE}");
    assert_eq!(load(&text).unwrap().source_routed, SourceRouted::Postmaster);
}

#[test]
fn bad_source_routed_is_named_with_line_and_column() {
    let text = base_with(
        "postmaster: postmaster@corp.local\n",
        "postmaster: postmaster@corp.local\nsource_routed: relay\n",
    );
    assert_one_error(&text, 6, "source_routed: `relay` is not allowed");
    let e = &errors(&text)[0];
    assert_eq!(e.column, 16, "{e}");
}

#[test]
fn two_accounts_on_one_mailbox_are_refused() {
    // Same protocol, user and host (in another case) on another port: the same mailbox.
    let second = "  - name: b\n    protocol: pop3\n    host: POP.provider.net\n    port: 110\n    tls: starttls\n    username: u@example.com\n    password: pw\n";
    let errors = errors(&format!("{BASE}{second}"));
    assert_eq!(errors.len(), 1, "{errors:#?}");
    assert_eq!(errors[0].line, 12);
    assert!(
        errors[0].message.contains(
            "accounts a and b collect the same mailbox (pop3://u@example.com@pop.provider.net)"
        ),
        "{}",
        errors[0].message
    );
    // Another user on that server is another mailbox.
    let other = second.replace("username: u@example.com", "username: v@example.com");
    load(&format!("{BASE}{other}")).unwrap();
}

#[test]
fn fetch_order_defaults_to_oldest_and_takes_newest() {
    assert_eq!(
        load(BASE).unwrap().accounts[0].fetch_order,
        FetchOrder::Oldest
    );
    let c = load(&base_with(
        "    password: pw\n",
        "    password: pw\n    fetch_order: newest\n",
    ))
    .unwrap();
    assert_eq!(c.accounts[0].fetch_order, FetchOrder::Newest);
    assert_one_error(
        &base_with(
            "    password: pw\n",
            "    password: pw\n    fetch_order: unread\n",
        ),
        12,
        "fetch_order: `unread` is not allowed",
    );
}

#[test]
fn after_fetch_moves_imap_mail_where_retention_lets_it_go() {
    let imap = BASE.replace("protocol: pop3", "protocol: imap");
    let with =
        |lines: &str| imap.replace("    password: pw\n", &format!("    password: pw\n{lines}"));
    assert_eq!(
        load(&imap).unwrap().accounts[0].after_fetch,
        AfterFetch::Delete
    );
    let c = load(&with("    after_fetch: move:INBOX/Done\n")).unwrap();
    assert_eq!(
        c.accounts[0].after_fetch,
        AfterFetch::Move("INBOX/Done".into())
    );
    let c = load(&with("    retention: 14d\n    after_fetch: move:Archive\n")).unwrap();
    assert_eq!(
        c.accounts[0].after_fetch,
        AfterFetch::Move("Archive".into())
    );

    assert_one_error(
        &with("    retention: keep\n    after_fetch: move:Archive\n"),
        13,
        "with retention: keep it never does",
    );
    assert_one_error(
        &with("    after_fetch: unread\n"),
        12,
        "after_fetch: `unread` is not allowed; allowed: move:<folder>, seen",
    );
    assert_one_error(&with("    after_fetch: 'move:'\n"), 12, "is not allowed");
    assert_one_error(
        &base_with(
            "    password: pw\n",
            "    password: pw\n    after_fetch: move:Archive\n",
        ),
        12,
        "only imap accounts have folders",
    );
}

#[test]
fn after_fetch_seen_flags_imap_mail_that_retention_keeps() {
    let imap = BASE.replace("protocol: pop3", "protocol: imap");
    let with =
        |lines: &str| imap.replace("    password: pw\n", &format!("    password: pw\n{lines}"));
    for retention in ["keep", "14d"] {
        let c = load(&with(&format!(
            "    retention: {retention}\n    after_fetch: seen\n"
        )))
        .unwrap();
        assert_eq!(c.accounts[0].after_fetch, AfterFetch::Seen);
    }
    assert_one_error(
        &with("    after_fetch: seen\n"),
        12,
        "with retention: delete none is kept",
    );
    assert_one_error(
        &base_with(
            "    password: pw\n",
            "    password: pw\n    retention: keep\n    after_fetch: seen\n",
        ),
        13,
        "only imap accounts have folders to move mail to and flags to set",
    );
}

#[test]
fn idle_is_an_imap_switch() {
    let imap = BASE.replace("protocol: pop3", "protocol: imap");
    let with =
        |lines: &str| imap.replace("    password: pw\n", &format!("    password: pw\n{lines}"));
    assert!(!load(&imap).unwrap().accounts[0].idle);
    assert!(load(&with("    idle: true\n")).unwrap().accounts[0].idle);
    assert_one_error(
        &base_with("    password: pw\n", "    password: pw\n    idle: true\n"),
        12,
        "IDLE is an IMAP command",
    );
}

#[test]
fn unseen_only_is_an_imap_switch() {
    let imap = BASE.replace("protocol: pop3", "protocol: imap");
    let with =
        |lines: &str| imap.replace("    password: pw\n", &format!("    password: pw\n{lines}"));
    assert!(!load(&imap).unwrap().accounts[0].unseen_only);
    assert!(load(&with("    unseen_only: true\n")).unwrap().accounts[0].unseen_only);
    assert_one_error(
        &with("    unseen_only: yes\n"),
        12,
        "unseen_only: expected true or false",
    );
    assert_one_error(
        &base_with(
            "    password: pw\n",
            "    password: pw\n    unseen_only: true\n",
        ),
        12,
        "only imap accounts have a \\Seen flag",
    );
}

#[test]
fn auth_apop_is_for_pop3_accounts() {
    assert_eq!(load(BASE).unwrap().accounts[0].auth, AuthMethod::Auto);
    let apop = base_with("    password: pw\n", "    password: pw\n    auth: apop\n");
    assert_eq!(
        load(&apop).unwrap().accounts[0].auth,
        AuthMethod::Only(vec![crate::sasl::Method::Apop])
    );
    assert_one_error(
        &apop.replace("protocol: pop3", "protocol: imap"),
        12,
        "APOP is a POP3 command",
    );
    assert_one_error(
        &base_with(
            "    password: pw\n",
            "    password: pw\n    auth: cram-md5\n",
        ),
        12,
        "auth: `cram-md5` is not allowed",
    );
}

#[test]
fn auth_mechanisms_and_spa_restrict_the_login_methods() {
    use crate::sasl::{Mechanism, Method};
    let with = |extra: &str| base_with("    password: pw\n", &format!("    password: pw\n{extra}"));
    let list = with("    auth_mechanisms: [scram-sha-256, NTLM, password]\n");
    assert_eq!(
        load(&list).unwrap().accounts[0].auth,
        AuthMethod::Only(vec![
            Method::Sasl(Mechanism::ScramSha256),
            Method::Sasl(Mechanism::Ntlm),
            Method::Password
        ])
    );
    assert_eq!(
        load(&with("    spa: true\n")).unwrap().accounts[0].auth,
        AuthMethod::Only(vec![Method::Sasl(Mechanism::Ntlm)])
    );
    assert_eq!(
        load(&with("    spa: false\n")).unwrap().accounts[0].auth,
        AuthMethod::Auto
    );
    assert_one_error(
        &with("    auth_mechanisms: [scram-sha-256, kerberos]\n"),
        12,
        "auth_mechanisms: `kerberos` is not a login method mailferry knows; allowed: oauthbearer",
    );
    assert_one_error(
        &with("    auth_mechanisms: []\n"),
        12,
        "auth_mechanisms is empty",
    );
    assert_one_error(
        &with("    auth_mechanisms: [plain, plain]\n"),
        12,
        "plain is listed twice",
    );
    assert_one_error(
        &with("    auth_mechanisms: [xoauth2]\n"),
        12,
        "xoauth2 logs in with an OAuth2 token",
    );
    assert_one_error(
        &with("    spa: true\n    auth_mechanisms: [ntlm]\n"),
        13,
        "`auth_mechanisms` conflicts with `spa` (line 12)",
    );
    assert_one_error(
        &with("    auth_mechanisms: [apop]\n").replace("protocol: pop3", "protocol: imap"),
        12,
        "APOP is a POP3 command",
    );
}

#[test]
fn dedup_is_on_for_seven_days_by_default_and_can_be_turned_off() {
    assert_eq!(
        load(BASE).unwrap().dedup_window,
        Some(Duration::from_secs(7 * 86_400))
    );
    let c = load(&format!("dedup_window: 2d\n{BASE}")).unwrap();
    assert_eq!(c.dedup_window, Some(Duration::from_secs(2 * 86_400)));
    assert_eq!(
        load(&format!("dedup: off\n{BASE}")).unwrap().dedup_window,
        None
    );
    assert_one_error(
        &format!("dedup: maybe\n{BASE}"),
        1,
        "dedup: `maybe` is not allowed",
    );
    assert_one_error(&format!("dedup_window: 1m\n{BASE}"), 1, "dedup_window");
}

#[test]
fn relay_auth_takes_a_username_and_one_password_source() {
    let c = load(&base_with(
        "  host: mail.corp.local\n",
        "  host: mail.corp.local\n  username: gateway\n  password: s3cret\n",
    ))
    .unwrap();
    let auth = c.relay.auth.expect("relay auth");
    assert_eq!(auth.username, "gateway");
    assert_eq!(auth.password.expose(), "s3cret");
    assert!(!format!("{auth:?}").contains("s3cret"));
    assert!(load(BASE).unwrap().relay.auth.is_none());

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("relay.password");
    std::fs::write(&file, "from-file\n").unwrap();
    let text = base_with(
        "  host: mail.corp.local\n",
        &format!(
            "  host: mail.corp.local\n  username: gateway\n  password_file: {}\n",
            file.display()
        ),
    );
    let auth = load(&text).unwrap().relay.auth.unwrap();
    assert_eq!(auth.password.expose(), "from-file");
}

#[test]
fn relay_auth_needs_both_halves_and_one_password() {
    assert_one_error(
        &base_with(
            "  host: mail.corp.local\n",
            "  host: mail.corp.local\n  password: s3cret\n",
        ),
        4,
        "relay.password is set but relay.username is not",
    );
    assert_one_error(
        &base_with(
            "  host: mail.corp.local\n",
            "  host: mail.corp.local\n  username: gateway\n",
        ),
        3,
        "relay: missing a password",
    );
    let both = base_with(
        "  host: mail.corp.local\n",
        "  host: mail.corp.local\n  username: gateway\n  password: a\n  password_env: B\n",
    );
    for e in errors(&both) {
        assert!(!e.message.contains(": a"), "{e}");
    }
    assert_one_error(&both, 6, "`password_env` conflicts with `password`");
}

#[test]
fn relay_auth_mechanisms_and_spa_restrict_smtp_auth_like_an_account() {
    use crate::sasl::{Mechanism, Method};
    // Lines 3-5: host, username, password; the key under test on line 6.
    let with = |extra: &str| {
        base_with(
            "  host: mail.corp.local\n",
            &format!("  host: mail.corp.local\n  username: gateway\n  password: pw\n{extra}"),
        )
    };
    let mechanisms = |text: &str| load(text).unwrap().relay.auth.unwrap().mechanisms;
    assert_eq!(mechanisms(&with("")), AuthMethod::Auto);
    assert_eq!(
        mechanisms(&with("  auth_mechanisms: [CRAM-MD5, scram-sha-1]\n")),
        AuthMethod::Only(vec![
            Method::Sasl(Mechanism::CramMd5),
            Method::Sasl(Mechanism::ScramSha1)
        ])
    );
    assert_eq!(
        mechanisms(&with("  spa: true\n")),
        AuthMethod::Only(vec![Method::Sasl(Mechanism::Ntlm)])
    );
    assert_eq!(mechanisms(&with("  spa: false\n")), AuthMethod::Auto);
    // The accounts' validation, with the relay's key names.
    assert_one_error(
        &with("  auth_mechanisms: [kerberos]\n"),
        6,
        "relay.auth_mechanisms: `kerberos` is not a login method mailferry knows",
    );
    assert_one_error(
        &with("  auth_mechanisms: []\n"),
        6,
        "relay.auth_mechanisms is empty",
    );
    assert_one_error(
        &with("  auth_mechanisms: [login, LOGIN]\n"),
        6,
        "LOGIN is listed twice",
    );
    assert_one_error(&with("  spa: yes please\n"), 6, "relay.spa");
    assert_one_error(
        &with("  spa: true\n  auth_mechanisms: [ntlm]\n"),
        7,
        "relay: `auth_mechanisms` conflicts with `spa` (line 6): use one of spa: true, auth_mechanisms",
    );
    // Only SASL: APOP and the password command are POP3/IMAP's own.
    for word in ["apop", "password"] {
        assert_one_error(
            &with(&format!("  auth_mechanisms: [plain, {word}]\n")),
            6,
            &format!("relay.auth_mechanisms: `{word}` is not an SMTP AUTH mechanism"),
        );
    }
    assert_one_error(&with("  auth: apop\n"), 6, "unknown key");
    // A restriction without a login is a mistake, not a no-op.
    assert_one_error(
        &base_with(
            "  host: mail.corp.local\n",
            "  host: mail.corp.local\n  auth_mechanisms: [plain]\n",
        ),
        4,
        "relay.auth_mechanisms is set but relay.username is not",
    );
}
