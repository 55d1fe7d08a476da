//! Acceptance for "a crash at any instant loses nothing": `mailferry run` is killed with
//! SIGKILL at seeded random moments while it relays 1,500 deliveries (500 messages × 3
//! recipients) from a real Dovecot to a real smtp-sink, restarted each time, then left to
//! finish. Every (recipient, message) pair must arrive and the mailbox must end empty. A kill
//! may cost a message delivered twice only if the relay had accepted it and the process died
//! before recording it, so at most the messages in flight ([`FLIGHT`]); the goal is none, and
//! the count is printed. (Each is in that window for about a millisecond, so at the few
//! hundred messages a second of this test, about one kill in two hits one.)
//!
//! The POP3 server sits behind a proxy that delays every chunk by 5 ms (a far server), so
//! that a run takes seconds and a kill 50–400 ms after its deliveries begin hits it mid-work.
//!
//! `MAILFERRY_SIGKILL_SEED` picks another seed (the one used is printed).

mod support;

use std::collections::BTreeMap;
use std::thread;
use std::time::Duration;

use support::{
    AccountYaml, Dovecot, Fault, FaultProxy, GatewayConfig, Mailferry, Pair, Secret, SmtpSink,
    Tally, message, send_signal, wait_until,
};

const USER: &str = "catchall@example.com";
const PASS: &str = "pop-secret";
const MESSAGES: usize = 500;
/// Kills that must land while mail is still being relayed.
const KILLS: usize = 12;
/// The messages of one account in flight at once: twice `relay.connections` (4 by default).
const FLIGHT: usize = 8;

/// A small, seeded pseudo-random generator (xorshift64*), so that a failure can be replayed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in `lo..hi` milliseconds.
    fn millis(&mut self, lo: u64, hi: u64) -> Duration {
        Duration::from_millis(lo + self.next() % (hi - lo))
    }
}

/// Message `i`: three recipients in To and Cc (no envelope headers, so all three count).
fn mail(i: usize) -> (Vec<u8>, Vec<Pair>) {
    let rcpts = [
        format!("u{}@example.com", i % 7),
        format!("v{}@example.com", i % 11),
        format!("w{}@example.com", i % 13),
    ];
    let id = format!("<kill-{i}@partner.org>");
    let body = format!("Message {i}.\n").repeat(40);
    let raw = message(
        &[
            ("Return-Path", "<sender@partner.org>"),
            ("From", "Sender <sender@partner.org>"),
            ("To", &format!("{}, {}", rcpts[0], rcpts[1])),
            ("Cc", &rcpts[2]),
            ("Subject", &format!("Crash test {i}")),
            ("Message-ID", &id),
        ],
        &body,
    );
    (raw, rcpts.into_iter().map(|r| (r, id.clone())).collect())
}

#[test]
fn sigkill_at_random_moments_loses_nothing() {
    if support::skip_e2e() {
        return;
    }
    let seed = std::env::var("MAILFERRY_SIGKILL_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5EED_2026_u64);
    eprintln!("sigkill: seed {seed} (MAILFERRY_SIGKILL_SEED)");
    let mut rng = Rng(seed | 1);

    let dovecot = Dovecot::start(&[(USER, PASS)]);
    let sink = SmtpSink::start(&[]);
    let mut expected = Vec::new();
    let mut delivered_upstream = 0;
    let mut add_mail = |n: usize, expected: &mut Vec<Pair>| {
        for i in delivered_upstream..delivered_upstream + n {
            let (raw, pairs) = mail(i);
            dovecot.deliver(USER, &raw);
            expected.extend(pairs);
        }
        delivered_upstream += n;
    };
    add_mail(MESSAGES, &mut expected);
    assert!(expected.len() >= 1_000);
    // A server 5 ms away each way (as over a WAN): a pass takes seconds, not a blink, so
    // that kills at human-scale random moments land while mail is being relayed.
    let proxy = FaultProxy::start(dovecot.pop3_port(), |_| Fault::Delay {
        delay: Duration::from_millis(5),
    });
    let config = GatewayConfig::new(dovecot.root().join("state"), sink.port())
        .account(AccountYaml {
            name: "crash-test".into(),
            host: "127.0.0.1".into(),
            port: proxy.port(),
            tls: "none".into(),
            username: USER.into(),
            password: Secret::Inline(PASS.into()),
            extra_lines: vec![
                "poll_interval: 5s".into(),
                "max_per_pass: 1000".into(),
                "timeout: 10s".into(),
            ],
            ..AccountYaml::default()
        })
        .write(dovecot.root());
    let config = config.display().to_string();

    let mut kills = 0;
    let mut rounds = 0;
    let mut twice_before = 0;
    // Mail added after a run that finished everything before its kill; doubled each time
    // that happens, so that a faster mailferry (or machine) still gets killed mid-work.
    let mut batch = MESSAGES / 5;
    while kills < KILLS {
        rounds += 1;
        assert!(
            rounds <= 3 * KILLS,
            "only {kills} kills landed while relaying in {rounds} rounds"
        );
        let arrived = |expected: &[Pair]| Tally::of(expected, &sink.transactions()).arrived;
        let before = arrived(&expected);
        let daemon = Mailferry::spawn(&["run", "--config", &config]);
        // Kill at a random moment after this run's deliveries begin.
        let started = wait_until(Duration::from_secs(20), || arrived(&expected) > before);
        assert!(started, "run {rounds} delivered nothing within 20 s");
        thread::sleep(rng.millis(50, 400));
        send_signal(daemon.pid(), "KILL");
        drop(daemon); // reaps it
        let after = arrived(&expected);
        let tally = Tally::of(&expected, &sink.transactions());
        eprintln!(
            "sigkill: round {rounds}: killed after {} -> {after} deliveries; {tally}",
            before
        );
        // What this run sent twice was left unrecorded by the kill before it.
        let twice = messages_duplicated(&tally);
        assert!(
            twice - twice_before <= FLIGHT,
            "one kill cost {} messages delivered twice, more than were in flight ({FLIGHT})",
            twice - twice_before
        );
        twice_before = twice;
        if tally.missing.is_empty() {
            // Everything went through before the kill: it did not land while relaying. Give
            // the next run more to do (a faster mailferry must not make the test vacuous).
            add_mail(batch, &mut expected);
            batch = (batch * 2).min(8 * MESSAGES);
        } else {
            kills += 1;
        }
    }

    // Let it finish.
    let daemon = Mailferry::spawn(&["run", "--config", &config]);
    let done = wait_until(Duration::from_secs(60), || {
        Tally::of(&expected, &sink.transactions())
            .missing
            .is_empty()
            && dovecot.count(USER) == 0
    });
    let out = match daemon.terminate(Duration::from_secs(30)) {
        Ok(o) | Err(o) => o,
    };
    let tally = Tally::of(&expected, &sink.transactions());
    let twice = messages_duplicated(&tally);
    eprintln!("sigkill: {kills} kills; final: {tally}");
    eprintln!(
        "sigkill: DUPLICATES = {twice} message(s), {} delivery(ies) (goal 0)",
        tally.duplicates
    );
    assert!(
        done,
        "after {kills} kills: {tally}; {} message(s) left upstream\n--- last run\n{}",
        dovecot.count(USER),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        tally.missing.is_empty() && tally.unexpected.is_empty(),
        "after {kills} kills: {tally}"
    );
    assert!(
        twice - twice_before <= FLIGHT,
        "the last kill cost {} messages delivered twice, more than were in flight ({FLIGHT})",
        twice - twice_before
    );
    assert_eq!(dovecot.count(USER), 0, "the mailbox ends empty");
}

/// Extra copies of whole messages: per Message-ID, the most copies any of its recipients got
/// beyond the first (a transaction repeated for three recipients is one message twice).
fn messages_duplicated(tally: &Tally) -> usize {
    let mut per_message: BTreeMap<&str, usize> = BTreeMap::new();
    for ((_, id), n) in &tally.duplicated {
        let extra = per_message.entry(id.as_str()).or_insert(0);
        *extra = (*extra).max(n - 1);
    }
    per_message.values().sum()
}
