//! `mailferry test-connection` against a real Dovecot and a real SMTP receiver (smtp-sink):
//! good POP3 and IMAP accounts pass with every step named (TLS details, capabilities, the
//! login mechanism, the mailbox's count and size) and leave the mailbox as it was; a wrong
//! password, a self-signed certificate nothing trusts, a closed port, a wrong folder and an
//! unreachable relay each fail with the cause in words; exit codes; `--format json` parses.

mod support;

use std::process::Output;

use support::{
    AccountYaml, Dovecot, GatewayConfig, Secret, SmtpSink, free_port, numbered_message,
    run_mailferry,
};

const POP_USER: &str = "pop@example.com";
const IMAP_USER: &str = "imap@example.com";
const PASS: &str = "right-secret";

fn output(out: &Output) -> String {
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    eprintln!(
        "status {}\n--- stdout\n{text}\n--- stderr\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    text
}

/// The lines of the section `kind name` (its header and its steps).
fn section<'a>(text: &'a str, header: &str) -> Vec<&'a str> {
    let mut lines = text.lines().skip_while(|l| !l.starts_with(header));
    let mut out: Vec<&str> = lines.next().into_iter().collect();
    out.extend(lines.take_while(|l| l.starts_with("  ")));
    assert!(!out.is_empty(), "no section {header:?} in:\n{text}");
    out
}

/// The line of `step` in a section, trimmed.
fn step<'a>(lines: &[&'a str], step: &str) -> &'a str {
    lines
        .iter()
        .map(|l| l.trim())
        .find(|l| l.split_whitespace().nth(1) == Some(step))
        .unwrap_or_else(|| panic!("no step {step} in {lines:#?}"))
}

fn pop3_account(dovecot: &Dovecot, name: &str, password: &str) -> AccountYaml {
    AccountYaml {
        name: name.into(),
        port: dovecot.pop3s_port(),
        tls: "tls".into(),
        ca_file: Some(dovecot.ca_file()),
        username: POP_USER.into(),
        password: Secret::Inline(password.into()),
        ..AccountYaml::default()
    }
}

fn imap_account(dovecot: &Dovecot, name: &str, folder: &str) -> AccountYaml {
    AccountYaml {
        name: name.into(),
        protocol: "imap".into(),
        port: dovecot.imap_port(),
        tls: "starttls".into(),
        ca_file: Some(dovecot.ca_file()),
        username: IMAP_USER.into(),
        password: Secret::Inline(PASS.into()),
        extra_lines: vec![format!("folder: {folder}")],
        ..AccountYaml::default()
    }
}

/// What the mailboxes hold: every message's bytes and flags, per user and folder.
fn snapshot(dovecot: &Dovecot) -> Vec<(Vec<Vec<u8>>, Vec<String>)> {
    [
        (POP_USER, "INBOX"),
        (IMAP_USER, "INBOX"),
        (IMAP_USER, "Archive"),
    ]
    .iter()
    .map(|(user, folder)| {
        let mut flags = dovecot.flags_in(user, folder);
        flags.sort();
        (
            if *folder == "INBOX" {
                dovecot.messages(user)
            } else {
                Vec::new()
            },
            flags,
        )
    })
    .collect()
}

fn start() -> (Dovecot, SmtpSink) {
    let dovecot = Dovecot::start(&[(POP_USER, PASS), (IMAP_USER, PASS)]);
    for i in 0..3 {
        dovecot.deliver(POP_USER, &numbered_message(i));
    }
    for i in 3..5 {
        dovecot.deliver(IMAP_USER, &numbered_message(i));
    }
    dovecot.deliver_to(IMAP_USER, "Archive", &numbered_message(9));
    // One message the IMAP user has read: its flag must stay as it is.
    dovecot.set_seen(IMAP_USER, "INBOX", 0, true);
    (dovecot, SmtpSink::start(&[]))
}

#[test]
fn good_pop3_and_imap_accounts_pass_every_step_and_change_nothing() {
    if support::skip_e2e() {
        return;
    }
    let (dovecot, sink) = start();
    let dir = tempfile::tempdir().unwrap();
    let config = GatewayConfig::new(dir.path().join("state"), sink.port())
        .account(pop3_account(&dovecot, "pop-good", PASS))
        .account(imap_account(&dovecot, "imap-good", "INBOX"))
        .write(dir.path());
    let config = config.display().to_string();
    let before = snapshot(&dovecot);

    let out = run_mailferry(&["test-connection", "--config", &config]);
    let text = output(&out);
    assert_eq!(out.status.code(), Some(0), "every step passes");

    let pop = section(&text, "account pop-good:");
    assert!(step(&pop, "resolve").starts_with("ok"), "{pop:#?}");
    assert!(
        step(&pop, "connect").contains("connected to 127.0.0.1:"),
        "{pop:#?}"
    );
    let tls = step(&pop, "tls");
    assert!(tls.starts_with("ok"), "{tls}");
    for words in [
        "implicit TLS, TLSv1.",
        "certificate for \"localhost\"",
        "expires 20",
        "SHA-256 ",
        "verified",
    ] {
        assert!(tls.contains(words), "{words:?} in {tls}");
    }
    assert!(step(&pop, "capabilities").contains("UIDL"), "{pop:#?}");
    let auth = step(&pop, "authenticate");
    assert!(
        auth.starts_with("ok")
            && auth.contains(POP_USER)
            && (auth.contains("with AUTH ") || auth.contains("with USER/PASS")),
        "{auth}"
    );
    let mailbox = step(&pop, "mailbox");
    assert!(
        mailbox.contains("3 message(s)") && mailbox.contains("(STAT)"),
        "{mailbox}"
    );

    let imap = section(&text, "account imap-good:");
    assert!(step(&imap, "tls").contains("STARTTLS, TLSv1."), "{imap:#?}");
    assert!(
        step(&imap, "capabilities").contains("IMAP4REV1"),
        "{imap:#?}"
    );
    assert!(
        step(&imap, "authenticate").contains("with AUTHENTICATE "),
        "{imap:#?}"
    );
    let mailbox = step(&imap, "mailbox");
    assert!(
        mailbox.contains("folder INBOX: 2 message(s)") && mailbox.contains("EXAMINE"),
        "{mailbox}"
    );
    // RFC822.SIZE counts CRLF line ends; the Maildir files have LF.
    let size: u64 = (3..5)
        .map(|i| {
            let m = numbered_message(i);
            (m.len() + m.iter().filter(|b| **b == b'\n').count()) as u64
        })
        .sum();
    assert!(
        mailbox.contains(&format!("{size} bytes")),
        "{mailbox} ({size})"
    );

    let relay = section(&text, "relay 127.0.0.1:");
    assert!(step(&relay, "connect").starts_with("ok"), "{relay:#?}");
    assert!(step(&relay, "ehlo").starts_with("ok"), "{relay:#?}");
    assert!(step(&relay, "tls").starts_with("warning"), "{relay:#?}");
    assert!(text.ends_with("result: every check passed\n"), "{text}");

    // JSON for scripts: the same verdicts.
    let out = run_mailferry(&["test-connection", "--config", &config, "--format", "json"]);
    assert_eq!(out.status.code(), Some(0));
    let json: serde_json::Value =
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", output(&out)));
    assert_eq!(json["passed"], true);
    assert_eq!(json["sections"].as_array().map(Vec::len), Some(3));
    assert_eq!(json["sections"][0]["name"], "pop-good");
    assert_eq!(json["sections"][1]["steps"][5]["step"], "mailbox");
    assert_eq!(json["sections"][2]["kind"], "relay");

    assert_eq!(
        snapshot(&dovecot),
        before,
        "nothing downloaded, flagged or deleted"
    );
    assert!(sink.transactions().is_empty(), "no mail sent to the relay");
}

#[test]
fn each_failure_is_named_in_words_and_exits_1() {
    if support::skip_e2e() {
        return;
    }
    let (dovecot, _sink) = start();
    let dir = tempfile::tempdir().unwrap();
    let closed = free_port();
    let relay_closed = free_port();
    // Each account on a mailbox of its own: the configuration refuses two on one.
    let self_signed = AccountYaml {
        ca_file: None,
        username: "someone@example.com".into(),
        ..pop3_account(&dovecot, "self-signed", PASS)
    };
    let closed_port = AccountYaml {
        port: closed,
        username: "nobody@example.com".into(),
        ..pop3_account(&dovecot, "closed-port", PASS)
    };
    let wrong_password = AccountYaml {
        username: IMAP_USER.into(),
        ..pop3_account(&dovecot, "wrong-password", "not-the-password")
    };
    let config = GatewayConfig::new(dir.path().join("state"), relay_closed)
        .account(wrong_password)
        .account(self_signed)
        .account(closed_port)
        .account(imap_account(&dovecot, "wrong-folder", "Archiv"))
        .account(pop3_account(&dovecot, "good", PASS))
        .write(dir.path());
    let config = config.display().to_string();
    let before = snapshot(&dovecot);

    let out = run_mailferry(&["test-connection", "--config", &config]);
    let text = output(&out);
    assert_eq!(
        out.status.code(),
        Some(1),
        "a failed step gives exit status 1"
    );
    assert!(
        !text.contains("not-the-password"),
        "no password in the output"
    );

    let wrong = section(&text, "account wrong-password:");
    let auth = step(&wrong, "authenticate");
    assert!(
        auth.starts_with("FAILED")
            && auth.contains("refused the login")
            && auth.contains("check username and password"),
        "{auth}"
    );
    assert!(step(&wrong, "tls").starts_with("ok"), "{wrong:#?}");
    assert!(step(&wrong, "mailbox").starts_with("skipped"), "{wrong:#?}");

    let tls = step(&section(&text, "account self-signed:"), "tls");
    assert!(
        tls.starts_with("FAILED")
            && tls.contains("self-signed and not trusted")
            && tls.contains("ca_file"),
        "{tls}"
    );

    let closed = section(&text, "account closed-port:");
    let connect = step(&closed, "connect");
    assert!(
        connect.starts_with("FAILED")
            && connect.contains("nothing accepts connections on that port"),
        "{connect}"
    );
    assert!(
        step(&closed, "authenticate").starts_with("skipped"),
        "{closed:#?}"
    );

    let folder = step(&section(&text, "account wrong-folder:"), "mailbox");
    assert!(
        folder.starts_with("FAILED")
            && folder.contains("\"Archiv\" does not exist")
            && folder.contains("Archive")
            && folder.contains("INBOX"),
        "{folder}"
    );
    assert!(
        step(&section(&text, "account good:"), "mailbox").starts_with("ok"),
        "one account's failure does not stop the others"
    );

    let relay = section(&text, "relay 127.0.0.1:");
    let connect = step(&relay, "connect");
    assert!(
        connect.starts_with("FAILED") && connect.contains("is the internal mail server running"),
        "{connect}"
    );
    assert!(text.contains("result: FAILED: account wrong-password, account self-signed, account closed-port, account wrong-folder, relay"), "{text}");

    // One account: only it (and the relay) is tested; the relay still fails here.
    let out = run_mailferry(&[
        "test-connection",
        "--config",
        &config,
        "--account",
        "good",
        "--format",
        "json",
    ]);
    let json: serde_json::Value =
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", output(&out)));
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(json["sections"].as_array().map(Vec::len), Some(2));
    assert_eq!(json["sections"][0]["passed"], true);
    assert_eq!(json["sections"][1]["passed"], false);
    let out = run_mailferry(&[
        "test-connection",
        "--config",
        &config,
        "--account",
        "nobody",
    ]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "an unknown account is a usage error"
    );

    assert_eq!(
        snapshot(&dovecot),
        before,
        "nothing downloaded, flagged or deleted"
    );
}
