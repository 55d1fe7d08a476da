//! `accounts_dir`, end to end: `mailferry run` between a real Dovecot and smtp-sink with no
//! account in its file, only one file per account in the directory. The account of the file
//! is polled and its mail delivered; a file added and `mailferry reload` make a second account
//! polled; `check-config` names a broken file's path and line, and the daemon refuses it on
//! reload and goes on.

mod support;

use std::path::Path;
use std::time::Duration;

use support::{
    AccountYaml, Dovecot, GatewayConfig, Mailferry, SmtpSink, mail_to, run_mailferry, write_private,
};

const ALPHA: &str = "alpha@example.com";
const BETA: &str = "beta@example.com";
const PASS: &str = "dir-secret";

fn write_account(dir: &Path, file: &str, account: &AccountYaml) {
    write_private(&dir.join(file), &account.yaml()).unwrap_or_else(|e| panic!("{e}"));
}

#[test]
fn accounts_from_the_directory_are_polled_and_a_reload_picks_up_a_new_file() {
    if support::skip_e2e() {
        return;
    }
    let dovecot = Dovecot::start(&[(ALPHA, PASS), (BETA, PASS)]);
    let sink = SmtpSink::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    let accounts = dir.path().join("accounts.d");
    std::fs::create_dir(&accounts).unwrap();
    write_account(
        &accounts,
        "alpha.yaml",
        &dovecot.pop3_account("alpha", ALPHA),
    );
    let config = GatewayConfig::new(dir.path().join("state"), sink.port())
        .domains(&["corp.local"])
        .extra_line("accounts_dir: accounts.d")
        .write(dir.path());
    let config_arg = config.display().to_string();

    let out = run_mailferry(&["check-config", "--config", &config_arg]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("ok (1 account(s)"),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let daemon = Mailferry::spawn(&["run", "--config", &config_arg]);
    dovecot.deliver(ALPHA, &mail_to("ann@corp.local"));
    assert_eq!(sink.rcpts_of("ann@corp.local"), ["ann@corp.local"]);

    // A broken file: check-config names it with its line; the daemon refuses the reload.
    let broken = accounts.join("beta.yaml");
    std::fs::write(&broken, "name: beta\nprotocol: pop4\n").unwrap();
    let out = run_mailferry(&["check-config", "--config", &config_arg]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "{}:2:11: accounts[beta].protocol",
            broken.display()
        )),
        "{stderr}"
    );
    let out = run_mailferry(&["reload", "--config", &config_arg]);
    assert_eq!(out.status.code(), Some(2), "refused before any signal");

    // Fixed: the reload applies it, and the new account is polled.
    write_account(&accounts, "beta.yaml", &dovecot.pop3_account("beta", BETA));
    let out = run_mailferry(&["reload", "--config", &config_arg]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("applied: 2 account(s)"),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    dovecot.deliver(BETA, &mail_to("bob@corp.local"));
    dovecot.deliver(ALPHA, &mail_to("cat@corp.local"));
    assert_eq!(sink.rcpts_of("bob@corp.local"), ["bob@corp.local"]);
    assert_eq!(sink.rcpts_of("cat@corp.local"), ["cat@corp.local"]);

    let out = daemon
        .terminate(Duration::from_secs(30))
        .expect("the daemon stops on SIGTERM");
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{log}");
    assert!(!log.contains(PASS), "no password in the log");
    assert_eq!(sink.transactions().len(), 3, "each message once");
}
