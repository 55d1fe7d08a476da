//! `mailferry route`: the dry run names each recipient with its reason, and what it left out.

mod support;

use support::run_mailferry;

#[test]
fn route_explains_recipients_and_skipped_addresses() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("mailferry.yaml");
    std::fs::write(
        &config,
        "state_dir: state\nrelay:\n  host: 127.0.0.1\ndomains: [example.com]\npostmaster: postmaster@corp.local\naccounts:\n  - name: one\n    protocol: pop3\n    host: pop.provider.net\n    username: catchall@example.com\n    password: p\n",
    )
    .unwrap();
    let eml = dir.path().join("m.eml");
    std::fs::write(
        &eml,
        "Return-Path: <s@remote.test>\nDelivered-To: catchall@example.com\nX-Original-To: alice@example.com\nReceived: from x by y; Mon, 2 Nov 2026 10:00:00 +0000\nX-Original-To: mallory@example.com\nTo: bob@example.com\n\nbody\n",
    )
    .unwrap();
    let out = run_mailferry(&[
        "route",
        "--config",
        config.to_str().unwrap(),
        eml.to_str().unwrap(),
    ]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
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
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("mailferry.yaml");
    std::fs::write(
        &config,
        "state_dir: state\nrelay:\n  host: 127.0.0.1\ndomains: [example.com]\npostmaster: postmaster@corp.local\naccounts:\n  - name: one\n    protocol: pop3\n    host: pop.provider.net\n    username: catchall@example.com\n    password: p\n",
    )
    .unwrap();
    let eml = dir.path().join("m.eml");
    std::fs::write(
        &eml,
        "To: evil%x.com@example.com, \"john doe\"@example.com\nCc: \"evil@x.com\"@example.com\n\nbody\n",
    )
    .unwrap();
    let out = run_mailferry(&[
        "route",
        "--config",
        config.to_str().unwrap(),
        eml.to_str().unwrap(),
    ]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
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
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("mailferry.yaml");
    std::fs::write(dir.path().join("known"), "alice@example.com\n").unwrap();
    std::fs::write(
        &config,
        "state_dir: state\nrelay:\n  host: 127.0.0.1\ndomains: [example.com]\npostmaster: postmaster@corp.local\nrewrite:\n  \"@example.net\": \"@example.com\"\naccounts:\n  - name: one\n    protocol: pop3\n    host: pop.provider.net\n    username: catchall@example.com\n    password: p\n  - name: two\n    protocol: pop3\n    host: pop2.provider.net\n    username: other@example.com\n    password: p\n    directory: known\n",
    )
    .unwrap();
    let eml = dir.path().join("m.eml");
    std::fs::write(
        &eml,
        "Return-Path: <>\nTo: Alice <alice@example.net>, \"Bob\" <bob@example.com>\n\nbody\n",
    )
    .unwrap();
    let route = |extra: &[&str]| {
        let mut args = vec!["route", "--config", config.to_str().unwrap()];
        args.extend_from_slice(extra);
        args.push(eml.to_str().unwrap());
        let out = run_mailferry(&args);
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(out.status.success(), "{text}");
        text
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
