//! The accounts table, end to end: `mailferry accounts list | add FILE | remove NAME` against
//! a real PostgreSQL (`support::Postgres`), and `mailferry run` with no account in its file
//! collecting the table's accounts from Dovecot: one added is polled (the daemon looks at the
//! table every poll_interval), one removed and reloaded is no longer. An invalid file is
//! refused with its path and line, a mailbox already collected is refused, no password is
//! ever printed, and with SQLite the commands say they need PostgreSQL.

mod support;

use std::path::Path;
use std::process::Output;
use std::time::Duration;

use support::{
    Dovecot, GatewayConfig, Mailferry, Postgres, SmtpSink, mail_to, run_mailferry, write_private,
};

const ALPHA: &str = "alpha@example.com";
const BETA: &str = "beta@example.com";
const PASS: &str = "Table-Secret-9";

fn accounts(args: &[&str], config: &str) -> Output {
    let mut all = vec!["accounts"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["--config", config]);
    run_mailferry(&all)
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn write(dir: &Path, name: &str, content: &str) -> String {
    let path = dir.join(name);
    write_private(&path, content).unwrap_or_else(|e| panic!("{e}"));
    path.display().to_string()
}

#[test]
fn with_sqlite_the_accounts_commands_say_they_need_postgres() {
    let dir = tempfile::tempdir().unwrap();
    let config = GatewayConfig::new(dir.path().join("state"), 25)
        .extra_line("accounts_dir: acc")
        .write(dir.path());
    std::fs::create_dir(dir.path().join("acc")).unwrap();
    write(
        &dir.path().join("acc"),
        "a.yaml",
        "name: a\nprotocol: pop3\nhost: localhost\nusername: u\npassword: p\n",
    );
    let out = accounts(&["list"], &config.display().to_string());
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        text(&out).contains("needs state: postgres"),
        "{}",
        text(&out)
    );
}

#[test]
fn the_accounts_table_is_managed_and_every_instance_collects_it() {
    if support::skip_e2e() {
        return;
    }
    let pg = Postgres::start();
    let dovecot = Dovecot::start(&[(ALPHA, PASS), (BETA, PASS)]);
    let sink = SmtpSink::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    let config = GatewayConfig::new(dir.path().join("state"), sink.port())
        .domains(&["corp.local"])
        .extra_line(&format!(
            "state: {{postgres: {{url: \"{}\", lease_ttl: 10s}}}}",
            pg.url()
        ))
        .write(dir.path())
        .display()
        .to_string();

    let out = accounts(&["list"], &config);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("no account in the accounts table"));

    // Invalid: refused with its path and line, nothing stored.
    let bad = write(
        dir.path(),
        "bad.yaml",
        "name: bad\nprotocol: pop3\nhost: localhost\nusername: u\npassword: p\npol_interval: 5m\n",
    );
    let out = accounts(&["add", &bad], &config);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        text(&out).contains(&format!("{bad}:6:1: unknown key `pol_interval`")),
        "{}",
        text(&out)
    );

    let alpha = write(
        dir.path(),
        "alpha.yaml",
        &dovecot.pop3_account("alpha", ALPHA).yaml(),
    );
    let out = accounts(&["add", &alpha], &config);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("account alpha added"), "{}", text(&out));
    // The same mailbox under another name is refused.
    let twin = write(
        dir.path(),
        "twin.yaml",
        &dovecot.pop3_account("twin", ALPHA).yaml(),
    );
    let out = accounts(&["add", &twin], &config);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        text(&out).contains("collect the same mailbox"),
        "{}",
        text(&out)
    );

    let out = accounts(&["list"], &config);
    let listed = text(&out);
    assert!(
        listed.starts_with("alpha  pop3://alpha@example.com@localhost  added "),
        "{listed}"
    );
    assert_eq!(listed.lines().count(), 1, "{listed}");

    // A daemon with no account in its file collects the table's.
    let daemon = Mailferry::spawn(&["run", "--config", &config]);
    dovecot.deliver(ALPHA, &mail_to("ann@corp.local"));
    assert_eq!(sink.rcpts_of("ann@corp.local"), ["ann@corp.local"]);

    // Added: polled without a reload (the daemon looks at the table every poll_interval).
    let beta = write(
        dir.path(),
        "beta.yaml",
        &dovecot.pop3_account("beta", BETA).yaml(),
    );
    assert!(accounts(&["add", &beta], &config).status.success());
    dovecot.deliver(BETA, &mail_to("bob@corp.local"));
    assert_eq!(sink.rcpts_of("bob@corp.local"), ["bob@corp.local"]);
    // Removed and reloaded: no longer polled.
    let out = accounts(&["remove", "alpha"], &config);
    assert!(out.status.success(), "{}", text(&out));
    let out = accounts(&["remove", "alpha"], &config);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let out = run_mailferry(&["reload", "--config", &config]);
    assert!(
        text(&out).contains("applied: 1 account(s)"),
        "{}",
        text(&out)
    );
    dovecot.deliver(BETA, &mail_to("dan@corp.local"));
    dovecot.deliver(ALPHA, &mail_to("cat@corp.local"));
    assert_eq!(sink.rcpts_of("dan@corp.local"), ["dan@corp.local"]);
    // Two poll intervals and more: alpha's new mail stays where it is.
    std::thread::sleep(Duration::from_secs(11));
    assert_eq!(dovecot.count(ALPHA), 1, "the removed account is not polled");

    let status = run_mailferry(&["status", "--config", &config]);
    assert!(text(&status).contains("\nbeta "), "{}", text(&status));

    let out = daemon.terminate(Duration::from_secs(30)).expect("stops");
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{log}");
    for shown in [log.to_string(), listed, text(&status)] {
        assert!(!shown.contains(PASS), "a password in: {shown}");
    }
    assert_eq!(sink.transactions().len(), 3, "each message once");
}
