//! `mailferry status` beside a running daemon: the daemon's account is held by its PID (with
//! SQLite; with PostgreSQL while a pass holds the lease), its last pass worked, its next is
//! due, the message it could not deliver is waiting;
//! `--json` says the same. The lock and the database stay the daemon's (status writes
//! nothing), and no password is shown.

mod support;

use std::time::Duration;

use support::{Dovecot, GatewayConfig, Mailferry, SmtpSink, mail_to, run_mailferry, wait_until};

const ALPHA: &str = "alpha@example.com";
const PASS: &str = "status-secret";

#[test]
fn status_shows_the_daemons_accounts_while_it_runs() {
    if support::skip_e2e() {
        return;
    }
    let dovecot = Dovecot::start(&[(ALPHA, PASS)]);
    // Every RCPT refused for now (4xx): the message waits upstream for a retry.
    let sink = SmtpSink::start(&["-r", "rcpt"]);
    let dir = tempfile::tempdir().unwrap();
    let config = GatewayConfig::new(dir.path().join("state"), sink.port())
        .domains(&["corp.local"])
        .account(dovecot.pop3_account("alpha", ALPHA))
        .write(dir.path());
    let config_arg = config.display().to_string();
    dovecot.deliver(ALPHA, &mail_to("ann@corp.local"));
    let daemon = Mailferry::spawn(&["run", "--config", &config_arg]);

    let mut table = String::new();
    let passed = wait_until(Duration::from_secs(20), || {
        let out = run_mailferry(&["status", "--config", &config_arg]);
        table = String::from_utf8_lossy(&out.stdout).into_owned();
        out.status.success() && table.contains(" ok")
    });
    assert!(passed, "{table}");
    let lines: Vec<&str> = table.lines().collect();
    assert!(lines[0].starts_with("ACCOUNT  HELD BY"), "{table}");
    let row = lines[1];
    if support::state_is_postgres() {
        // PostgreSQL: the account's lease holder (`host:PID`), held only for the length of
        // a pass; between passes nobody.
        let held_by = row.split_whitespace().nth(1).unwrap_or_default();
        assert!(
            held_by == "-" || held_by.ends_with(&format!(":{}", daemon.pid())),
            "{table}"
        );
    } else {
        // SQLite: the daemon holding the lock on state_dir.
        assert!(row.starts_with("alpha    PID "), "{table}");
        assert!(
            row.contains(&format!("PID {} (this host)", daemon.pid())),
            "{table}"
        );
    }
    assert!(row.contains(" ago ") && row.contains(" in "), "{table}");

    let out = run_mailferry(&["status", "--config", &config_arg, "--json"]);
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    let alpha = &json["accounts"][0];
    assert_eq!(alpha["account"], "alpha");
    assert_eq!(alpha["waiting"], 1, "{json}");
    assert_eq!(alpha["failures"], 0, "{json}");
    assert!(
        alpha["next_pass"].as_u64() > alpha["last_pass"].as_u64(),
        "{json}"
    );
    assert!(!table.contains(PASS) && !json.to_string().contains(PASS));

    // Status took nothing from the daemon: it stops cleanly, and a reload still finds it.
    let out = run_mailferry(&["reload", "--config", &config_arg]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = daemon.terminate(Duration::from_secs(30)).expect("stops");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // No daemon: nobody holds the account, and nothing is due.
    let out = run_mailferry(&["status", "--config", &config_arg]);
    let table = String::from_utf8_lossy(&out.stdout);
    let row = table.lines().nth(1).unwrap_or_default();
    assert!(row.starts_with("alpha    -  "), "{table}");

    // The store was the one MAILFERRY_TEST_STATE chose: SQLite's file only with SQLite.
    let sqlite_file = dir.path().join("state").join("state.sqlite3");
    assert_eq!(
        sqlite_file.exists(),
        !support::state_is_postgres(),
        "{}",
        sqlite_file.display()
    );
}
