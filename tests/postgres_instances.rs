//! Issue 12's acceptance, end to end: three `mailferry run` instances on one PostgreSQL
//! collect 60 POP3 accounts from Dovecot (one shared `accounts_dir`), mail arriving during the
//! run; one instance is killed with SIGKILL while it holds accounts mid-pass, another is
//! paused (SIGSTOP) past its leases and then resumed. Every message must arrive, the killed
//! instance's accounts must be taken over within lease_ttl + poll_interval (and 10 s for a
//! busy machine), every mailbox must end empty, no two sessions may work one mailbox at the
//! same time (a proxy per account times each session's commands past the login: a paused
//! session that sits idle while another comes and goes is no overlap; one that lists after it
//! resumes, beside the new holder, was, until `FencedSession::list` confirmed the lease), and
//! the copies delivered twice are at most the passes the kill and the pause cut short (an SMTP
//! transaction accepted just before the process died or froze, not yet recorded).

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use support::{
    Dovecot, Fault, FaultProxy, GatewayConfig, Mailferry, Postgres, SmtpSink, Tally, message,
    send_signal, wait_until, write_private,
};

const ACCOUNTS: usize = 60;
const PASS: &str = "Instances-Secret-3";
const LEASE_TTL: u64 = 6;

fn user(i: usize) -> String {
    format!("u{i:02}@example.com")
}

fn mail(i: usize, k: usize) -> Vec<u8> {
    message(
        &[
            ("From", "s@remote.test"),
            ("To", &format!("r{i:02}@corp.local")),
            ("Subject", &format!("m{i}-{k}")),
            ("Message-ID", &format!("<m{i}-{k}@remote.test>")),
        ],
        "hello\n",
    )
}

/// The holders (`host:pid`) of the leases held right now, with how many each holds.
fn holders(pg: &Postgres) -> BTreeMap<u32, usize> {
    let mut out = BTreeMap::new();
    for line in pg
        .query("SELECT holder FROM leases WHERE holder IS NOT NULL AND expires_at > now()")
        .lines()
    {
        if let Some(pid) = line.rsplit(':').next().and_then(|p| p.trim().parse().ok()) {
            *out.entry(pid).or_insert(0) += 1;
        }
    }
    out
}

#[test]
fn three_instances_survive_a_kill_and_a_pause_delivering_every_message_once() {
    if support::skip_e2e() {
        return;
    }
    let pg = Postgres::start();
    let users: Vec<String> = (0..ACCOUNTS).map(user).collect();
    let pairs: Vec<(&str, &str)> = users.iter().map(|u| (u.as_str(), PASS)).collect();
    let dovecot = Dovecot::start(&pairs);
    let sink = SmtpSink::start(&[]);
    // A far server (5 ms a chunk), so that passes are under way when the kill lands.
    let proxies: Vec<FaultProxy> = (0..ACCOUNTS)
        .map(|_| {
            FaultProxy::start(dovecot.pop3_port(), |_| Fault::Delay {
                delay: Duration::from_millis(5),
            })
        })
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let accounts = dir.path().join("accounts.d");
    std::fs::create_dir(&accounts).unwrap();
    for (i, proxy) in proxies.iter().enumerate() {
        let text = format!(
            "name: a{i:02}\nprotocol: pop3\nhost: 127.0.0.1\nport: {}\ntls: none\nusername: {}\npassword: {PASS}\npoll_interval: 5s\n",
            proxy.port(),
            user(i)
        );
        write_private(&accounts.join(format!("a{i:02}.yaml")), &text).unwrap();
    }
    let mut expected = Vec::new();
    for i in 0..ACCOUNTS {
        for k in 0..8 {
            dovecot.deliver(&user(i), &mail(i, k));
            expected.push((
                format!("r{i:02}@corp.local"),
                format!("<m{i}-{k}@remote.test>"),
            ));
        }
    }
    let configs: Vec<String> = (0..3)
        .map(|n| {
            let home = dir.path().join(format!("instance{n}"));
            std::fs::create_dir(&home).unwrap();
            GatewayConfig::new(home.join("state"), sink.port())
                .domains(&["corp.local"])
                .extra_line(&format!(
                    "state: {{postgres: {{url: \"{}\", lease_ttl: {LEASE_TTL}s}}}}",
                    pg.url()
                ))
                .extra_line(&format!("accounts_dir: {}", accounts.display()))
                .write(&home)
                .display()
                .to_string()
        })
        .collect();
    let mut daemons: Vec<Option<Mailferry>> = configs
        .iter()
        .map(|c| Some(Mailferry::spawn(&["run", "--config", c])))
        .collect();
    let pids: Vec<u32> = daemons.iter().flatten().map(Mailferry::pid).collect();

    // SIGKILL an instance while it holds leases (mid-pass), once mail flows (and the
    // schema is there).
    assert!(
        wait_until(Duration::from_secs(60), || sink.transactions().len() > 20),
        "no mail flowed"
    );
    let mut cut_short = 0;
    let mut killed = None;
    assert!(
        wait_until(Duration::from_secs(60), || {
            let held = holders(&pg);
            match pids
                .iter()
                .position(|p| held.get(p).is_some_and(|n| *n > 0))
            {
                Some(n) => {
                    send_signal(pids[n], "KILL");
                    cut_short += held[&pids[n]];
                    killed = Some(n);
                    true
                }
                _ => false,
            }
        }),
        "no instance held a lease while mail flowed"
    );
    let killed = killed.unwrap();
    let killed_at = std::time::Instant::now();
    daemons[killed].take();
    // More mail arrives meanwhile.
    for i in 0..ACCOUNTS {
        for k in 8..10 {
            dovecot.deliver(&user(i), &mail(i, k));
            expected.push((
                format!("r{i:02}@corp.local"),
                format!("<m{i}-{k}@remote.test>"),
            ));
        }
    }
    // SIGSTOP another while it holds leases, past lease_ttl, then SIGCONT.
    let mut paused = None;
    wait_until(Duration::from_secs(30), || {
        let held = holders(&pg);
        let n = (0..3).find(|n| *n != killed && held.get(&pids[*n]).is_some_and(|h| *h > 0));
        if let Some(n) = n {
            send_signal(pids[n], "STOP");
            cut_short += held[&pids[n]];
            paused = Some(n);
        }
        n.is_some()
    });
    std::thread::sleep(Duration::from_secs(LEASE_TTL + 4));
    if let Some(n) = paused {
        send_signal(pids[n], "CONT");
    }
    // The dead instance's accounts taken over once their leases expired and they were due
    // (poll_interval 5 s), with time for a busy machine.
    let dead = format!(
        "SELECT count(*) FROM leases WHERE holder LIKE '%:{}'",
        pids[killed]
    );
    let bound = Duration::from_secs(LEASE_TTL + 5 + 10);
    let taken_over = wait_until(bound.saturating_sub(killed_at.elapsed()), || {
        pg.query(&dead).trim() == "0"
    });
    assert!(
        taken_over,
        "the killed instance's accounts not all taken over within {bound:?}: {} left",
        pg.query(&dead)
    );
    eprintln!(
        "the dead instance's accounts were taken over {:?} after the kill",
        killed_at.elapsed()
    );

    let delivered = wait_until(Duration::from_secs(120), || {
        (0..ACCOUNTS).all(|i| dovecot.count(&user(i)) == 0)
            && Tally::of(&expected, &sink.transactions())
                .missing
                .is_empty()
    });
    let tally = Tally::of(&expected, &sink.transactions());
    let mut logs = String::new();
    for daemon in daemons.iter_mut().filter_map(Option::take) {
        let out = match daemon.terminate(Duration::from_secs(30)) {
            Ok(out) | Err(out) => out,
        };
        logs.push_str(&String::from_utf8_lossy(&out.stderr));
    }
    eprintln!(
        "killed instance {killed}, paused {paused:?}; {} deliveries, {} twice (at most {cut_short} allowed)",
        sink.transactions().len(),
        tally.duplicates
    );
    assert!(delivered, "missing {:?}\n{logs}", tally.missing);
    assert!(tally.unexpected.is_empty(), "{:?}", tally.unexpected);
    assert!(
        tally.duplicates <= cut_short,
        "{} duplicates\n{logs}",
        tally.duplicates
    );
    for (i, proxy) in proxies.iter().enumerate() {
        let overlaps = proxy.overlapping_sessions();
        let said: Vec<&str> = (logs.lines())
            .filter(|l| l.contains(&format!("a{i:02}")))
            .collect();
        assert!(
            overlaps.is_empty(),
            "account a{i:02}: two sessions at work at once: {overlaps:#?}\n{said:#?}"
        );
    }
    assert!(!logs.contains(PASS), "a password in the logs");
}
