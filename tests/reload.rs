//! Hot reload, end to end: `mailferry run` between a real Dovecot and smtp-sink, its
//! configuration file edited under it. `mailferry reload` (SIGHUP) applies a new domain (its
//! mail is then delivered, not re-routed) and an account added and one removed; a broken edit
//! is refused with its line, by `mailferry reload` before any signal and by the daemon on a
//! bare SIGHUP (as `systemctl reload` sends it), and delivery goes on; with `watch_config` a
//! saved file is applied without any signal.

mod support;

use std::path::Path;
use std::time::Duration;

use support::{
    Dovecot, GatewayConfig, Mailferry, SmtpSink, mail_to, run_mailferry, send_signal, wait_until,
};

const ALPHA: &str = "alpha@example.com";
const BETA: &str = "beta@example.com";
const PASS: &str = "reload-secret";
const POSTMASTER: &str = "postmaster@corp.local";

/// `state_dir/reload`, the daemon's numbered answers.
fn answer(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("state").join("reload")).unwrap_or_default()
}

#[test]
fn sighup_applies_domains_and_accounts_and_refuses_a_broken_file() {
    if support::skip_e2e() {
        return;
    }
    let dovecot = Dovecot::start(&[(ALPHA, PASS), (BETA, PASS)]);
    let sink = SmtpSink::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    let base = GatewayConfig::new(dir.path().join("state"), sink.port()).postmaster(POSTMASTER);
    let config = base
        .clone()
        .domains(&["corp.local"])
        .account(dovecot.pop3_account("alpha", ALPHA))
        .write(dir.path());
    let config_arg = config.display().to_string();
    let daemon = Mailferry::spawn(&["run", "--config", &config_arg]);

    // Not an accepted domain yet: the postmaster gets it.
    dovecot.deliver(ALPHA, &mail_to("bob@new.example"));
    assert_eq!(sink.rcpts_of("bob@new.example"), [POSTMASTER]);

    // The domain added and reloaded: its mail goes to its recipient.
    base.clone()
        .domains(&["corp.local", "new.example"])
        .account(dovecot.pop3_account("alpha", ALPHA))
        .write(dir.path());
    let out = run_mailferry(&["reload", "--config", &config_arg]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("applied: 1 account(s), 2 accepted domain(s)"),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    dovecot.deliver(ALPHA, &mail_to("carol@new.example"));
    assert_eq!(sink.rcpts_of("carol@new.example"), ["carol@new.example"]);

    // A broken edit: `mailferry reload` names the line and signals nothing (exit 2); a bare
    // SIGHUP makes the daemon refuse it, and it goes on with what it had.
    let good = std::fs::read_to_string(&config).unwrap();
    let broken = good.replace("domains:", "domains: [corp.local\nbroken:");
    std::fs::write(&config, &broken).unwrap();
    let before = answer(dir.path());
    let out = run_mailferry(&["reload", "--config", &config_arg]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("mailferry.yaml:"),
        "names the line: {stderr}"
    );
    assert_eq!(answer(dir.path()), before, "the daemon was not asked");
    assert!(send_signal(daemon.pid(), "HUP"));
    assert!(
        wait_until(Duration::from_secs(10), || answer(dir.path())
            .contains("refused:")),
        "the daemon answers: {}",
        answer(dir.path())
    );
    dovecot.deliver(ALPHA, &mail_to("dave@new.example"));
    assert_eq!(sink.rcpts_of("dave@new.example"), ["dave@new.example"]);

    // An account added, the other removed: the new one is polled, the old one no longer.
    base.clone()
        .domains(&["corp.local", "new.example"])
        .account(dovecot.pop3_account("beta", BETA))
        .write(dir.path());
    let out = run_mailferry(&["reload", "--config", &config_arg]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    dovecot.deliver(ALPHA, &mail_to("frank@corp.local"));
    dovecot.deliver(BETA, &mail_to("erin@corp.local"));
    assert_eq!(sink.rcpts_of("erin@corp.local"), ["erin@corp.local"]);
    // Two poll intervals and more: alpha's new mail stays where it is.
    std::thread::sleep(Duration::from_secs(11));
    assert_eq!(dovecot.count(ALPHA), 1, "the removed account is not polled");
    assert!(
        sink.transactions()
            .iter()
            .all(|t| t.subject() != "frank@corp.local")
    );

    let out = daemon
        .terminate(Duration::from_secs(30))
        .expect("the daemon stops on SIGTERM after its reloads");
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{log}");
    assert!(
        log.lines()
            .any(|l| l.contains("refused") && l.contains("running configuration stays")),
        "{log}"
    );
    // Every problem, with its line, in the daemon's log.
    assert!(log.contains("mailferry.yaml:"), "{log}");
    assert!(!log.contains(PASS), "no password in the log");
    // Each message reached exactly one recipient once.
    assert_eq!(sink.transactions().len(), 4);
}

#[test]
fn with_watch_config_a_saved_file_is_applied_without_a_signal() {
    if support::skip_e2e() {
        return;
    }
    let dovecot = Dovecot::start(&[(ALPHA, PASS)]);
    let sink = SmtpSink::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    let config = |domains: &[&str]| {
        GatewayConfig::new(dir.path().join("state"), sink.port())
            .postmaster(POSTMASTER)
            .domains(domains)
            .extra_line("watch_config: true")
            .account(dovecot.pop3_account("alpha", ALPHA))
            .write(dir.path())
    };
    let path = config(&["corp.local"]).display().to_string();
    let daemon = Mailferry::spawn(&["run", "--config", &path]);
    // Running (its first pass done) before the file changes.
    dovecot.deliver(ALPHA, &mail_to("bob@new.example"));
    assert_eq!(sink.rcpts_of("bob@new.example"), [POSTMASTER]);

    config(&["corp.local", "new.example"]);
    assert!(
        wait_until(Duration::from_secs(10), || answer(dir.path())
            .contains("applied: 1 account(s), 2 accepted domain(s)")),
        "applied within 10 s: {:?}",
        answer(dir.path())
    );
    dovecot.deliver(ALPHA, &mail_to("carol@new.example"));
    assert_eq!(sink.rcpts_of("carol@new.example"), ["carol@new.example"]);
    let out = daemon.terminate(Duration::from_secs(30)).expect("stops");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
