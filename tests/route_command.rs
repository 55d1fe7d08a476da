//! `mailferry route`: the dry run names each recipient with its reason, and what it left out.

mod support;

use support::run_mailferry;

/// A configuration with one catch-all account `one` (catchall@example.com) on example.com,
/// postmaster@corp.local, and `extra` appended (more accounts).
const CONFIG: &str = "state_dir: state\nrelay:\n  host: 127.0.0.1\ndomains: [example.com]\npostmaster: postmaster@corp.local\naccounts:\n  - name: one\n    protocol: pop3\n    host: pop.provider.net\n    username: catchall@example.com\n    password: p\n";

/// `mailferry route` with `config` and `extra` arguments on `message`, in a directory that also
/// holds `files`; its standard output (it must succeed).
fn route(config: &str, files: &[(&str, &str)], extra: &[&str], message: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mailferry.yaml");
    std::fs::write(&path, config).unwrap();
    for (name, content) in files {
        std::fs::write(dir.path().join(name), content).unwrap();
    }
    let eml = dir.path().join("m.eml");
    std::fs::write(&eml, message).unwrap();
    let mut args = vec!["route", "--config", path.to_str().unwrap()];
    args.extend_from_slice(extra);
    args.push(eml.to_str().unwrap());
    let out = run_mailferry(&args);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{text}");
    text
}

#[test]
fn route_explains_recipients_and_skipped_addresses() {
    let text = route(
        CONFIG,
        &[],
        &[],
        "Return-Path: <s@remote.test>
Delivered-To: catchall@example.com
X-Original-To: alice@example.com
Received: from x by y; Mon, 2 Nov 2026 10:00:00 +0000
X-Original-To: mallory@example.com
To: bob@example.com

body
",
    );
    assert!(text.contains("MAIL FROM:<s@remote.test>"), "{text}");
    assert!(
        text.contains("RCPT TO:<alice@example.com>  (envelope header X-Original-To)"),
        "{text}"
    );
    assert_eq!(
        text.matches("RCPT TO:").count(),
        1,
        "To: must not be added: {text}"
    );
    assert!(
        text.lines()
            .any(|l| l.contains("mallory@example.com") && l.contains("below the first Received")),
        "{text}"
    );
    assert!(
        text.lines()
            .any(|l| l.contains("catchall@example.com") && l.contains("own address")),
        "{text}"
    );
}

#[test]
fn route_names_refused_addresses_and_the_postmaster_reason() {
    let text = route(
        CONFIG,
        &[],
        &[],
        "To: evil%x.com@example.com, \"john doe\"@example.com
Cc: \"evil@x.com\"@example.com

body
",
    );
    assert!(
        text.contains("RCPT TO:<\"john doe\"@example.com>  (header To)"),
        "{text}"
    );
    assert!(
        text.lines()
            .any(|l| l.starts_with("RCPT TO:<postmaster@corp.local>")
                && l.contains("refused address \"evil%x.com@example.com\"")),
        "{text}"
    );
    // Shown as written (Debug-quoted): `"evil@x.com"@example.com`.
    for refused in ["evil%x.com@example.com", "\\\"evil@x.com\\\"@example.com"] {
        assert!(
            text.lines().any(|l| l.starts_with("skipped")
                && l.contains(refused)
                && l.contains("source-routed")),
            "{refused} not listed as refused: {text}"
        );
    }
    assert_eq!(text.matches("RCPT TO:").count(), 2, "{text}");
}

#[test]
fn route_uses_the_accounts_own_rules_and_prints_json() {
    let config = CONFIG.replacen(
        "accounts:",
        "rewrite:
  \"@example.net\": \"@example.com\"
accounts:",
        1,
    ) + "  - name: two
    protocol: pop3
    host: pop2.provider.net
    username: other@example.com
    password: p
    directory: known
";
    let route = |extra: &[&str]| {
        route(
            &config,
            &[(
                "known",
                "alice@example.com
",
            )],
            extra,
            "Return-Path: <>
To: Alice <alice@example.net>, \"Bob\" <bob@example.com>

body
",
        )
    };
    // The first account: the rewrite, no directory.
    let text = route(&[]);
    assert!(text.starts_with("account: one\nMAIL FROM:<>\n"), "{text}");
    assert!(
        text.contains("RCPT TO:<alice@example.com>  (header To, rewritten from alice@example.net)"),
        "{text}"
    );
    assert!(
        text.contains("taken    \"alice@example.net\" in To: as alice@example.com"),
        "{text}"
    );
    assert!(
        text.contains("RCPT TO:<bob@example.com>  (header To)"),
        "{text}"
    );
    // The second account's directory does not know bob: the postmaster instead.
    let text = route(&["--account", "two"]);
    assert!(
        text.contains(
            "RCPT TO:<postmaster@corp.local>  (bob@example.com is not in the directory; sent to the postmaster)"
        ),
        "{text}"
    );
    assert!(!text.contains("RCPT TO:<bob@example.com>"), "{text}");
    let json = route(&["--account", "two", "--format", "json"]);
    assert!(
        json.starts_with("{\"account\":\"two\",\"mail_from\":null,\"recipients\":[{\"address\":\"alice@example.com\""),
        "{json}"
    );
    assert!(
        json.contains("{\"header\":\"To\",\"address\":\"bob@example.com\",\"decision\":\"skipped\",\"why\":\"bob@example.com is not in the directory (the postmaster gets the copy)\"}"),
        "{json}"
    );
    assert_eq!(json.lines().count(), 1, "{json}");
}
