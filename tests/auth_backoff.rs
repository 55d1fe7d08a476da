//! A wrong password backs off, end to end: `mailferry run` with one account whose password
//! Dovecot refuses and one that works. The refused account's log lines come ever further
//! apart (poll_interval 5 s: attempts at about 0, 5, 15, 35 s), the metrics show it failing,
//! /readyz stays 200 (the daemon works), and the other account delivers meanwhile.

mod support;

use std::time::Duration;

use support::{
    AccountYaml, Dovecot, GatewayConfig, Mailferry, Secret, SmtpSink, free_port, http_get,
    numbered_message, wait_until,
};

const BAD_USER: &str = "locked@example.com";
const GOOD_USER: &str = "fine@example.com";
const PASS: &str = "the-password";

/// Seconds since midnight of a tracing timestamp (`2026-12-03T18:20:01.123456Z ...`).
fn seconds(line: &str) -> Option<f64> {
    let time = line.split_whitespace().next()?.split('T').nth(1)?;
    let time = time.trim_end_matches('Z');
    let mut parts = time.split(':');
    let h: f64 = parts.next()?.parse().ok()?;
    let m: f64 = parts.next()?.parse().ok()?;
    let s: f64 = parts.next()?.parse().ok()?;
    Some(h * 3600.0 + m * 60.0 + s)
}

#[test]
fn a_refused_login_is_retried_ever_later_while_the_other_account_delivers() {
    if support::skip_e2e() {
        return;
    }
    let dovecot = Dovecot::start(&[(BAD_USER, PASS), (GOOD_USER, PASS)]);
    dovecot.deliver(BAD_USER, &numbered_message(1));
    let sink = SmtpSink::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    let metrics = free_port();
    let account = |name: &str, user: &str, password: &str| AccountYaml {
        name: name.into(),
        port: dovecot.pop3_port(),
        tls: "starttls".into(),
        ca_file: Some(dovecot.ca_file()),
        username: user.into(),
        password: Secret::Inline(password.into()),
        extra_lines: vec!["poll_interval: 5s".into()],
        ..AccountYaml::default()
    };
    let config = GatewayConfig::new(dir.path().join("state"), sink.port())
        .metrics_listen(&format!("127.0.0.1:{metrics}"))
        .account(account("bad", BAD_USER, "wrong-password"))
        .account(account("good", GOOD_USER, PASS))
        .write(dir.path());
    let daemon = Mailferry::spawn(&["run", "--config", &config.display().to_string()]);

    // The other account goes on: mail that arrives meanwhile is delivered.
    std::thread::sleep(Duration::from_secs(8));
    dovecot.deliver(GOOD_USER, &numbered_message(2));
    assert_eq!(sink.wait_for(1, Duration::from_secs(20)).len(), 1);
    assert!(
        wait_until(Duration::from_secs(40), || {
            http_get(metrics, "/metrics").is_some_and(|(_, body)| {
                body.contains("mailferry_poll_errors_total{account=\"bad\",kind=\"login\"} 4")
            })
        }),
        "a fourth refused login within 40 s"
    );
    let (_, body) = http_get(metrics, "/metrics").unwrap_or_default();
    assert!(
        body.contains("mailferry_login_refused{account=\"bad\"} 1"),
        "{body}"
    );
    assert!(
        body.contains("mailferry_login_refused{account=\"good\"} 0"),
        "{body}"
    );
    let (status, _) = http_get(metrics, "/readyz").unwrap_or_default();
    assert!(status.contains("200"), "the daemon is ready: {status}");

    let out = daemon
        .terminate(Duration::from_secs(20))
        .unwrap_or_else(|out| panic!("{}", String::from_utf8_lossy(&out.stderr)));
    let log = String::from_utf8_lossy(&out.stderr).into_owned();
    eprintln!("{log}");
    let attempts: Vec<f64> = log
        .lines()
        .filter(|l| l.contains("account=bad") && l.contains("refused the login"))
        .filter_map(seconds)
        .collect();
    assert!(attempts.len() >= 4, "{attempts:?}");
    let gaps: Vec<f64> = attempts.windows(2).map(|w| w[1] - w[0]).collect();
    // Announced: 5, 10, 20, 40 s. Each log line is written at the end of a pass, whose length
    // varies (Dovecot delays a refusal, the first login is slower), so the gaps are 5, 10,
    // 20 s give or take a few seconds; at full speed they would all be 5.
    for wait in [5, 10, 20, 40] {
        assert!(log.contains(&format!("next attempt in {wait}s")), "{log}");
    }
    assert!(gaps[2] > 15.0 && gaps[2] > gaps[0] + 8.0, "gaps {gaps:?}");
    let span = attempts[3] - attempts[0];
    assert!(
        (29.0..41.0).contains(&span),
        "35 s from the first to the fourth: {gaps:?}"
    );
    assert!(!log.contains("wrong-password"), "no password in the log");
    assert!(log.contains("check username and password"), "{log}");
    assert_eq!(
        dovecot.count(BAD_USER),
        1,
        "nothing taken from the refused mailbox"
    );
    assert_eq!(dovecot.count(GOOD_USER), 0, "delivered and deleted");
}
