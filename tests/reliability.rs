//! End to end, with faults made on purpose: two processes on one state directory, a state
//! store that cannot be written or is replaced, a kept mailbox whose state was lost, a
//! message that cannot be read. Real Dovecot, real smtp-sink, the real binary. The faults of
//! the SQLite file and its directory are skipped under `MAILFERRY_TEST_STATE=postgres`.

mod support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use support::{
    AccountYaml, Dovecot, Fault, FaultProxy, GatewayConfig, Mailferry, Secret, SmtpSink, free_port,
    http_get, message, poll_once, run_mailferry,
};

const USER: &str = "catchall@example.com";
const PASS: &str = "pop-secret";

/// Message `i`, for `user{i}@example.com`.
fn numbered(i: usize) -> Vec<u8> {
    message(
        &[
            ("From", "sender@outside.example"),
            ("To", &format!("user{i}@example.com")),
            ("Subject", &format!("message {i}")),
            ("Message-ID", &format!("<m{i}@outside.example>")),
        ],
        &format!("Body of message {i}.\n"),
    )
}

/// The configuration: one plain-POP3 catch-all account with `extra` lines, state in
/// `state_dir`, metrics on `metrics` when given.
fn config(
    dir: &Path,
    state_dir: &Path,
    pop3_port: u16,
    sink: &SmtpSink,
    metrics: Option<u16>,
    extra: &[&str],
) -> String {
    let mut lines = vec!["poll_interval: 5s".to_owned()];
    lines.extend(extra.iter().map(|l| l.to_string()));
    let mut gateway = GatewayConfig::new(state_dir, sink.port())
        .postmaster("postmaster@example.com")
        .relay_line("retry: {max_attempts: 2, initial: 0s}");
    if let Some(port) = metrics {
        gateway = gateway.metrics_listen(&format!("127.0.0.1:{port}"));
    }
    gateway
        .account(AccountYaml {
            name: "test-account".into(),
            port: pop3_port,
            username: USER.into(),
            password: Secret::Inline(PASS.into()),
            extra_lines: lines,
            ..AccountYaml::default()
        })
        .write(dir)
        .display()
        .to_string()
}

/// Messages received per recipient, by subject.
fn received(sink: &SmtpSink) -> BTreeMap<String, Vec<String>> {
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for t in sink.transactions() {
        for r in &t.rcpts {
            out.entry(r.clone()).or_default().push(t.subject());
        }
    }
    out
}

fn stderr_of(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn wait_until(timeout: Duration, mut ok: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if ok() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    ok()
}

#[test]
fn a_second_process_on_the_same_state_dir_refuses_to_start_naming_the_first() {
    if support::skip_e2e() {
        return;
    }
    if support::skip_under_postgres(
        "the lock on state_dir is SQLite's; instances on PostgreSQL share one database by design",
    ) {
        return;
    }
    let dovecot = Dovecot::start(&[(USER, PASS)]);
    let sink = SmtpSink::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    // Different metrics ports: the second must fail on the lock, not on the port.
    let first_cfg = config(
        dir.path(),
        &state,
        dovecot.pop3_port(),
        &sink,
        Some(free_port()),
        &[],
    );
    let first = Mailferry::spawn(&["run", "--config", &first_cfg]);
    assert!(
        wait_until(Duration::from_secs(20), || state.join("lock").exists()),
        "the first daemon did not take the lock"
    );
    std::thread::sleep(Duration::from_millis(300));

    let second_dir = dir.path().join("second");
    std::fs::create_dir_all(&second_dir).unwrap();
    let second_cfg = config(
        &second_dir,
        &state,
        dovecot.pop3_port(),
        &sink,
        Some(free_port()),
        &[],
    );
    for command in ["run", "poll-once"] {
        let started = Instant::now();
        let out = support::run_mailferry_timeout(
            &[command, "--config", &second_cfg],
            Duration::from_secs(20),
        );
        let err = stderr_of(&out);
        assert_eq!(out.status.code(), Some(1), "{command}: {err}");
        assert!(
            err.contains("in use by another mailferry")
                && err.contains(&format!("PID {}", first.pid())),
            "{command} must name the holder: {err}"
        );
        assert!(started.elapsed() < Duration::from_secs(10), "not at once");
    }
    let out = first.terminate(Duration::from_secs(30)).expect("TERM");
    assert!(out.status.success());
    // Free again once the first has gone.
    assert!(poll_once(&second_cfg).status.success());
}

#[test]
fn a_full_disk_under_the_state_store_sends_nothing_twice() {
    if support::skip_e2e() {
        return;
    }
    if support::skip_under_postgres(
        "fills the disk under state_dir, where a PostgreSQL store keeps nothing",
    ) {
        return;
    }
    let dovecot = Dovecot::start(&[(USER, PASS)]);
    let sink = SmtpSink::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    let state = Tmpfs::mount(&dir.path().join("state"), "4m");
    let cfg = config(
        dir.path(),
        &state.path,
        dovecot.pop3_port(),
        &sink,
        None,
        &[],
    );
    for i in 0..3 {
        dovecot.deliver(USER, &numbered(i));
    }
    assert!(poll_once(&cfg).status.success());
    assert_eq!(sink.transactions().len(), 3);
    assert_eq!(dovecot.count(USER), 0);

    for i in 3..6 {
        dovecot.deliver(USER, &numbered(i));
    }
    state.fill();
    for pass in 0..2 {
        let out = poll_once(&cfg);
        assert_eq!(out.status.code(), Some(1), "pass {pass} with a full disk");
        assert_eq!(
            sink.transactions().len(),
            3,
            "pass {pass}: mail was sent that could not be recorded"
        );
        assert_eq!(dovecot.count(USER), 3, "pass {pass}: deleted upstream");
    }
    state.unfill();
    assert!(poll_once(&cfg).status.success());
    let got = received(&sink);
    assert_eq!(got.len(), 6, "{got:?}");
    assert!(got.values().all(|v| v.len() == 1), "duplicates: {got:?}");
    assert_eq!(dovecot.count(USER), 0);
}

#[test]
fn the_daemon_stops_delivering_while_its_store_cannot_write_and_readyz_says_so() {
    if support::skip_e2e() {
        return;
    }
    if support::skip_under_postgres(
        "makes state.sqlite3 immutable, a file PostgreSQL does not have",
    ) {
        return;
    }
    let dovecot = Dovecot::start(&[(USER, PASS)]);
    let sink = SmtpSink::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let metrics = free_port();
    let cfg = config(
        dir.path(),
        &state,
        dovecot.pop3_port(),
        &sink,
        Some(metrics),
        &[],
    );
    dovecot.deliver(USER, &numbered(0));
    let daemon = Mailferry::spawn(&["run", "--config", &cfg]);
    assert_eq!(sink.wait_for(1, Duration::from_secs(30)).len(), 1);
    assert!(wait_until(Duration::from_secs(10), || {
        http_get(metrics, "/readyz").is_some_and(|(s, _)| s.contains("200"))
    }));

    // Read-only for root too: the database and its write-ahead log made immutable. (A full
    // disk alone does not stop SQLite here: the log reuses the space it already has.)
    let files = [state.join("state.sqlite3"), state.join("state.sqlite3-wal")];
    chattr("+i", &files);
    for i in 1..4 {
        dovecot.deliver(USER, &numbered(i));
    }
    if !wait_until(Duration::from_secs(30), || {
        http_get(metrics, "/readyz").is_some_and(|(s, _)| s.contains("503"))
    }) {
        chattr("-i", &files);
        let out = daemon.terminate(Duration::from_secs(30));
        let out = out.unwrap_or_else(|o| o);
        panic!(
            "/readyz must turn false while the store cannot write:\n{}",
            stderr_of(&out)
        );
    }
    // Two more passes (poll_interval 5s): still nothing sent, nothing deleted.
    std::thread::sleep(Duration::from_secs(11));
    assert_eq!(
        sink.transactions().len(),
        1,
        "sent without being able to record"
    );
    assert_eq!(dovecot.count(USER), 3);

    chattr("-i", &files);
    let all = sink.wait_for(4, Duration::from_secs(30));
    assert_eq!(all.len(), 4);
    assert!(wait_until(Duration::from_secs(20), || dovecot.count(USER) == 0));
    assert!(wait_until(Duration::from_secs(10), || {
        http_get(metrics, "/readyz").is_some_and(|(s, _)| s.contains("200"))
    }));
    let out = daemon.terminate(Duration::from_secs(30)).expect("TERM");
    let err = stderr_of(&out);
    let said = err.matches("state store write failed").count();
    assert_eq!(
        said, 1,
        "the failure must be said once, not every pass:\n{err}"
    );
    let got = received(&sink);
    assert!(got.values().all(|v| v.len() == 1), "duplicates: {got:?}");
}

#[test]
fn a_state_file_deleted_under_the_daemon_stops_it() {
    if support::skip_e2e() {
        return;
    }
    if support::skip_under_postgres("deletes state.sqlite3, a file PostgreSQL does not have") {
        return;
    }
    let dovecot = Dovecot::start(&[(USER, PASS)]);
    let sink = SmtpSink::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let cfg = config(dir.path(), &state, dovecot.pop3_port(), &sink, None, &[]);
    dovecot.deliver(USER, &numbered(0));
    let mut daemon = Mailferry::spawn(&["run", "--config", &cfg]);
    assert_eq!(sink.wait_for(1, Duration::from_secs(30)).len(), 1);
    std::fs::remove_file(state.join("state.sqlite3")).unwrap();
    dovecot.deliver(USER, &numbered(1));
    assert!(
        wait_until(Duration::from_secs(30), || daemon.has_exited()),
        "the daemon went on with its database deleted"
    );
    let out = daemon.terminate(Duration::from_secs(5)).expect("exited");
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr_of(&out).contains("was deleted or replaced"),
        "{}",
        stderr_of(&out)
    );
    assert_eq!(sink.transactions().len(), 1, "delivered with no state");
}

#[test]
fn a_kept_mailbox_the_store_has_never_seen_waits_for_a_stated_choice() {
    if support::skip_e2e() {
        return;
    }
    let dovecot = Dovecot::start(&[(USER, PASS)]);
    let sink = SmtpSink::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    for i in 0..3 {
        dovecot.deliver(USER, &numbered(i));
    }
    // As after a lost state file: retention keep, a mailbox full of mail already delivered.
    let state = dir.path().join("state");
    let cfg = config(
        dir.path(),
        &state,
        dovecot.pop3_port(),
        &sink,
        None,
        &["retention: keep"],
    );
    let out = poll_once(&cfg);
    assert_eq!(out.status.code(), Some(1));
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        stderr_of(&out)
    );
    assert!(
        said.contains("initial: deliver_all") && said.contains("initial: skip_existing"),
        "{said}"
    );
    assert!(sink.transactions().is_empty(), "delivered without a choice");

    // skip_existing: what is there counts as delivered; only new mail goes.
    let cfg = config(
        dir.path(),
        &state,
        dovecot.pop3_port(),
        &sink,
        None,
        &["retention: keep", "initial: skip_existing"],
    );
    assert!(poll_once(&cfg).status.success());
    assert!(sink.transactions().is_empty());
    dovecot.deliver(USER, &numbered(3));
    assert!(poll_once(&cfg).status.success());
    let got = received(&sink);
    assert_eq!(got.keys().collect::<Vec<_>>(), ["user3@example.com"]);
    assert_eq!(dovecot.count(USER), 4, "kept mail was deleted");

    // deliver_all on another fresh store: everything, once.
    let fresh = dir.path().join("fresh-state");
    let cfg = config(
        dir.path(),
        &fresh,
        dovecot.pop3_port(),
        &sink,
        None,
        &["retention: keep", "initial: deliver_all"],
    );
    assert!(poll_once(&cfg).status.success());
    assert!(poll_once(&cfg).status.success());
    assert_eq!(sink.transactions().len(), 1 + 4);
}

#[test]
fn an_unreadable_message_is_quarantined_and_the_rest_delivered() {
    if support::skip_e2e() {
        return;
    }
    let dovecot = Dovecot::start(&[(USER, PASS)]);
    let sink = SmtpSink::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    dovecot.deliver(USER, &numbered(0));
    // A message whose download breaks every connection it is tried on.
    let mut huge = numbered(1);
    huge.extend(std::iter::repeat_n(b'x', 2 * 1024 * 1024));
    huge.extend_from_slice(b"\n");
    dovecot.deliver(USER, &huge);
    dovecot.deliver(USER, &numbered(2));
    let proxy = FaultProxy::start(dovecot.pop3_port(), |_| Fault::DropLargeRetr {
        bytes: 1024 * 1024,
    });
    let cfg = config(dir.path(), &state, proxy.port(), &sink, None, &[]);

    // Attempt 1 of 2: the others are delivered; the pass reports a failure.
    assert_eq!(poll_once(&cfg).status.code(), Some(1));
    let got = received(&sink);
    assert!(got.contains_key("user0@example.com") && got.contains_key("user2@example.com"));
    // Attempt 2 of 2: quarantined; settled, so the pass is a success.
    assert_eq!(poll_once(&cfg).status.code(), Some(0));
    assert_eq!(
        dovecot.count(USER),
        1,
        "the quarantined message must stay upstream"
    );
    let notices: Vec<_> = sink
        .transactions()
        .into_iter()
        .filter(|t| t.rcpts == ["postmaster@example.com"])
        .collect();
    assert_eq!(notices.len(), 1, "the postmaster is told once");
    assert!(notices[0].subject().contains("quarantined"));
    assert_eq!(
        notices[0].mail_from, "",
        "a notice goes with the null sender"
    );

    let list = run_mailferry(&["state", "list", "--config", &cfg]);
    let list = String::from_utf8_lossy(&list.stdout).into_owned();
    assert_eq!(list.lines().count(), 1, "{list}");
    let id = list.split('\t').next().unwrap().to_owned();
    // Quarantined: not tried on later passes, the postmaster not told again.
    assert_eq!(poll_once(&cfg).status.code(), Some(0));
    assert_eq!(sink.transactions().len(), 3);

    // retry: tried again (and fails again: attempt 1 of 2 anew).
    let out = run_mailferry(&["state", "retry", &id, "--config", &cfg]);
    assert!(out.status.success(), "{}", stderr_of(&out));
    assert_eq!(poll_once(&cfg).status.code(), Some(1));
    assert_eq!(poll_once(&cfg).status.code(), Some(0));
    // forget: off the list, still upstream, never tried.
    let list = run_mailferry(&["state", "list", "--config", &cfg]);
    let list = String::from_utf8_lossy(&list.stdout).into_owned();
    let id = list.split('\t').next().unwrap().to_owned();
    let out = run_mailferry(&["state", "forget", &id, "--config", &cfg]);
    assert!(out.status.success(), "{}", stderr_of(&out));
    let list = run_mailferry(&["state", "list", "--config", &cfg]);
    assert_eq!(
        String::from_utf8_lossy(&list.stdout).trim(),
        "no message in quarantine"
    );
    assert_eq!(poll_once(&cfg).status.code(), Some(0));
    assert_eq!(dovecot.count(USER), 1);
}

/// `chattr FLAG FILES...`; panics if it fails (needs root and a file system with attributes).
fn chattr(flag: &str, files: &[PathBuf]) {
    let ok = Command::new("chattr")
        .arg(flag)
        .args(files)
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "chattr {flag} {files:?} failed");
}

/// A small tmpfs for a state directory, to fill on purpose (disk full); unmounted on drop.
struct Tmpfs {
    path: PathBuf,
}

impl Tmpfs {
    fn mount(path: &Path, size: &str) -> Tmpfs {
        std::fs::create_dir_all(path).unwrap();
        let ok = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "tmpfs",
            ])
            .arg(path)
            .status()
            .is_ok_and(|s| s.success());
        assert!(
            ok,
            "cannot mount a tmpfs at {} (root needed)",
            path.display()
        );
        Tmpfs {
            path: path.to_owned(),
        }
    }

    /// Fills the file system to the last byte.
    fn fill(&self) {
        let filler = self.path.join("filler");
        // dd stops with "No space left on device"; that is the point.
        let _ = Command::new("dd")
            .args(["if=/dev/zero", "bs=64k"])
            .arg(format!("of={}", filler.display()))
            .stderr(std::process::Stdio::null())
            .status();
        // The last blocks, one byte at a time, so that nothing at all is left.
        let _ = Command::new("dd")
            .args(["if=/dev/zero", "bs=1", "oflag=append", "conv=notrunc"])
            .arg(format!("of={}", filler.display()))
            .stderr(std::process::Stdio::null())
            .status();
    }

    fn unfill(&self) {
        std::fs::remove_file(self.path.join("filler")).unwrap();
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.path).status();
    }
}

#[test]
fn deletions_are_committed_every_expunge_every_messages() {
    if support::skip_e2e() {
        return;
    }
    let dovecot = Dovecot::start(&[(USER, PASS)]);
    let sink = SmtpSink::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    for i in 0..7 {
        dovecot.deliver(USER, &numbered(i));
    }
    let state = dir.path().join("state");
    let cfg = config(
        dir.path(),
        &state,
        dovecot.pop3_port(),
        &sink,
        None,
        &["expunge_every: 3"],
    );
    assert!(poll_once(&cfg).status.success());
    assert_eq!(dovecot.count(USER), 0);
    assert_eq!(sink.transactions().len(), 7);
    // Dovecot logs each POP3 logout with what it deleted: 3, 3, then 1.
    let log = dovecot.log();
    let deleted: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("Logged out"))
        .filter_map(|l| l.split("del=").nth(1))
        .filter_map(|d| d.split('/').next())
        .filter(|d| *d != "0")
        .collect();
    assert_eq!(deleted, ["3", "3", "1"], "{log}");
}
