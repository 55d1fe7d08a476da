//! The log as an administrator reads it, end to end through Dovecot and smtp-sink: with
//! `--log-format json` every line is one JSON object, and each message and recipient has its
//! audit line (account, uid, Message-ID, recipient, outcome, reply, ms); under systemd
//! (`JOURNAL_STREAM` set) text lines carry no timestamp of their own.

mod support;

use std::process::Stdio;

use support::{AccountYaml, Dovecot, GatewayConfig, Secret, SmtpSink, mailferry_command, message};

const USER: &str = "catchall@example.com";
const PASS: &str = "log-secret";

/// `mailferry poll-once` (with `args` and `env`) on a catch-all account holding one message
/// for two local recipients: its output, and the receiver.
fn poll_once_with(args: &[&str], env: &[(&str, &str)]) -> (std::process::Output, SmtpSink) {
    let dovecot = Dovecot::start(&[(USER, PASS)]);
    let sink = SmtpSink::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    let config = setup(&dovecot, &sink, dir.path());
    let mut command = mailferry_command(&["poll-once", "--config", &config]);
    command
        .args(args)
        .envs(env.iter().copied())
        .stdin(Stdio::null());
    (command.output().unwrap(), sink)
}

/// The account and its message; the config's path.
fn setup(dovecot: &Dovecot, sink: &SmtpSink, dir: &std::path::Path) -> String {
    dovecot.deliver(
        USER,
        &message(
            &[
                ("From", "sender@remote.test"),
                ("To", "alice@corp.local, carol@corp.local"),
                ("Message-ID", "<audit-1@remote.test>"),
                ("Subject", "audit"),
            ],
            "hello\n",
        ),
    );
    GatewayConfig::new(dir.join("state"), sink.port())
        .domains(&["corp.local"])
        .postmaster("postmaster@corp.local")
        .account(AccountYaml {
            name: "catchall".into(),
            port: dovecot.pop3_port(),
            tls: "starttls".into(),
            ca_file: Some(dovecot.ca_file()),
            username: USER.into(),
            password: Secret::Inline(PASS.into()),
            ..AccountYaml::default()
        })
        .write(dir)
        .display()
        .to_string()
}

#[test]
fn json_lines_carry_one_audit_line_per_recipient() {
    if support::skip_e2e() {
        return;
    }
    let (out, sink) = poll_once_with(&["--log-format", "json"], &[]);
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{log}");
    assert!(!log.contains(PASS), "no password in the log");
    let lines: Vec<serde_json::Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let mut audited: Vec<String> = lines
        .iter()
        .filter(|l| l["fields"]["outcome"] == "delivered")
        .map(|l| {
            let f = &l["fields"];
            assert_eq!(f["account"], "catchall", "{l}");
            assert_eq!(f["message_id"], "audit-1@remote.test", "{l}");
            assert!(f["uid"].as_str().is_some_and(|u| !u.is_empty()), "{l}");
            assert!(f["ms"].as_u64().is_some(), "{l}");
            let said = f["message"].as_str().unwrap_or_default();
            assert!(said.starts_with("delivered: 250"), "the reply: {l}");
            f["recipient"].as_str().unwrap_or_default().to_owned()
        })
        .collect();
    audited.sort();
    assert_eq!(audited, ["alice@corp.local", "carol@corp.local"]);
    assert_eq!(sink.transactions().len(), 1);
}

#[test]
fn under_systemd_text_lines_have_no_timestamp_of_their_own() {
    if support::skip_e2e() {
        return;
    }
    let (out, _sink) = poll_once_with(&[], &[("JOURNAL_STREAM", "8:12345")]);
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{log}");
    assert!(log.contains("delivered: 250"), "{log}");
    for line in log.lines() {
        assert!(
            line.starts_with(" INFO") || line.starts_with(" WARN") || line.starts_with("ERROR"),
            "starts with its level, not a time: {line:?}"
        );
    }
}
