//! End to end over IMAP: a real Dovecot upstream (Maildir++, `.` as separator), a real SMTP
//! receiver (Postfix's smtp-sink), the real `mailferry` binary in between.

mod support;

use std::path::Path;
use std::time::Duration;

use support::{
    AccountYaml, Dovecot, GatewayConfig, Mailferry, Secret, SmtpSink, Tally, as_sink_stores,
    message_id, numbered_message, numbered_pairs, poll_once, run_mailferry, sample_catchall_mail,
    sample_catchall_pairs,
};

const USER: &str = "catchall@example.com";
/// A password with every character that breaks naive quoting, and non-ASCII.
const PASS: &str = r#"imap<&>'"\pässwörd"#;

/// How the account reaches Dovecot.
#[derive(Clone, Copy)]
enum Link {
    Starttls,
    Implicit,
}

/// The IMAP catch-all account `imap-account` on `dovecot`, then `extra_lines`.
fn account(dovecot: &Dovecot, link: Link, extra_lines: &[&str]) -> AccountYaml {
    let (port, tls) = match link {
        Link::Starttls => (dovecot.imap_port(), "starttls"),
        Link::Implicit => (dovecot.imaps_port(), "tls"),
    };
    let mut extra = vec!["poll_interval: 5s".to_owned()];
    extra.extend(extra_lines.iter().map(|l| l.to_string()));
    AccountYaml {
        name: "imap-account".into(),
        protocol: "imap".into(),
        port,
        tls: tls.into(),
        ca_file: Some(dovecot.ca_file()),
        username: USER.into(),
        // The YAML single-quoted form: only ' needs doubling.
        password: Secret::Inline(format!("'{}'", PASS.replace('\'', "''"))),
        extra_lines: extra,
        ..AccountYaml::default()
    }
}

/// Writes a configuration for one account into `dir` and returns its path.
fn write_config(dir: &Path, sink: &SmtpSink, account: AccountYaml, top: &[&str]) -> String {
    let mut config = GatewayConfig::new(dir.join("state"), sink.port()).account(account);
    for line in top {
        config = config.extra_line(line);
    }
    config.write(dir).display().to_string()
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Every transaction's body is the body of the message with its Message-ID, byte for byte.
fn assert_bodies_intact(sink: &SmtpSink, sent: &[Vec<u8>]) {
    for tx in sink.transactions() {
        let id = tx.header("Message-ID").unwrap_or_default();
        let Some(original) = sent.iter().find(|m| message_id(m) == id) else {
            continue; // a notice to the postmaster
        };
        let stored = as_sink_stores(original);
        let body_at = stored
            .windows(2)
            .position(|w| w == b"\n\n")
            .map_or(stored.len(), |i| i + 2);
        assert_eq!(tx.body(), &stored[body_at..], "body of {id} changed");
    }
}

/// A pass over the sample catch-all mail, delivered into Dovecot's `folder`.
struct Collected {
    dovecot: Dovecot,
    sink: SmtpSink,
    _dir: tempfile::TempDir,
    config: String,
    mail: Vec<Vec<u8>>,
}

/// Starts Dovecot and smtp-sink, delivers the sample catch-all mail into `folder` (and
/// into INBOX as well when `folder` is another), runs one pass of the account with
/// `extra_lines`, and asserts that it succeeded and every copy reached exactly its
/// recipients, byte for byte.
fn collect_sample(link: Link, folder: &str, extra_lines: &[&str]) -> Collected {
    let dovecot = Dovecot::start(&[(USER, PASS)]);
    let sink = SmtpSink::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    let mail = sample_catchall_mail();
    dovecot.deliver_all(USER, &mail);
    if folder != "INBOX" {
        for m in &mail {
            dovecot.deliver_to(USER, folder, m);
        }
    }
    let config = write_config(dir.path(), &sink, account(&dovecot, link, extra_lines), &[]);
    let out = poll_once(&config);
    assert!(out.status.success(), "{}\n{}", stderr(&out), dovecot.log());
    let tally = Tally::of(&sample_catchall_pairs(), &sink.transactions());
    assert!(tally.exact(), "{tally}");
    assert_bodies_intact(&sink, &mail);
    Collected {
        dovecot,
        sink,
        _dir: dir,
        config,
        mail,
    }
}

impl Collected {
    /// Another pass relays nothing.
    fn assert_nothing_more(&self) {
        let before = self.sink.transactions().len();
        assert!(poll_once(&self.config).status.success());
        assert_eq!(self.sink.transactions().len(), before);
    }
}

fn catchall_retention_delete(link: Link) {
    let c = collect_sample(link, "INBOX", &[]);
    assert_eq!(c.dovecot.count(USER), 0, "INBOX not emptied");
    c.assert_nothing_more();
}

#[test]
fn catchall_retention_delete_starttls() {
    if support::skip_e2e() {
        return;
    }
    catchall_retention_delete(Link::Starttls);
}

#[test]
fn catchall_retention_delete_implicit_tls() {
    if support::skip_e2e() {
        return;
    }
    catchall_retention_delete(Link::Implicit);
}

#[test]
fn catchall_from_a_subfolder_given_with_the_other_separator() {
    if support::skip_e2e() {
        return;
    }
    // Dovecot's Maildir++ separator is "."; the account writes "/". Every third deletion:
    // UID EXPUNGE, LOGOUT, and on in a new session.
    let c = collect_sample(
        Link::Starttls,
        "INBOX.Support",
        &["folder: INBOX/Support", "expunge_every: 3"],
    );
    assert_eq!(
        c.dovecot.count_in(USER, "INBOX.Support"),
        0,
        "subfolder not emptied"
    );
    assert_eq!(
        c.dovecot.count(USER),
        c.mail.len(),
        "INBOX must be left alone"
    );
    c.assert_nothing_more();
}

#[test]
fn a_missing_folder_fails_naming_the_folders_that_exist() {
    if support::skip_e2e() {
        return;
    }
    let dovecot = Dovecot::start(&[(USER, PASS)]);
    let sink = SmtpSink::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    dovecot.deliver_to(USER, "INBOX.Support", &sample_catchall_mail()[0]);
    dovecot.deliver_to(USER, "Archive", &sample_catchall_mail()[1]);
    let config = write_config(
        dir.path(),
        &sink,
        account(&dovecot, Link::Starttls, &["folder: INBOX/Suport"]),
        &[],
    );
    let out = poll_once(&config);
    assert_eq!(out.status.code(), Some(1));
    let all = format!("{}{}", String::from_utf8_lossy(&out.stdout), stderr(&out));
    assert!(all.contains("\"INBOX/Suport\" does not exist"), "{all}");
    for name in ["INBOX", "INBOX.Support", "Archive"] {
        assert!(all.contains(name), "{name} not named: {all}");
    }
    assert!(!all.contains("pässwörd"), "password leaked: {all}");
    assert!(sink.transactions().is_empty());
}

#[test]
fn retention_keep_over_three_passes_and_a_restart_delivers_once_and_sets_no_seen_flag() {
    if support::skip_e2e() {
        return;
    }
    let dovecot = Dovecot::start(&[(USER, PASS)]);
    let sink = SmtpSink::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    for i in 0..5 {
        dovecot.deliver(USER, &numbered_message(i));
    }
    let config = write_config(
        dir.path(),
        &sink,
        account(
            &dovecot,
            Link::Starttls,
            &["retention: keep", "initial: deliver_all"],
        ),
        &[],
    );
    for _ in 0..3 {
        let out = poll_once(&config);
        assert!(out.status.success(), "{}", stderr(&out));
    }
    assert_eq!(sink.transactions().len(), 5);
    assert_eq!(
        dovecot.count(USER),
        5,
        "retention keep must keep everything"
    );

    // A new message arrives; the daemon (a restart: a new process) delivers only that one.
    dovecot.deliver(USER, &numbered_message(5));
    let daemon = Mailferry::spawn(&["run", "--config", &config]);
    let got = sink.wait_for(6, Duration::from_secs(30));
    assert_eq!(got.len(), 6, "the daemon delivers the new message");
    let out = daemon
        .terminate(Duration::from_secs(30))
        .expect("the daemon did not stop on SIGTERM");
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(poll_once(&config).status.success());

    let tally = Tally::of(&numbered_pairs(6), &sink.transactions());
    assert!(tally.exact(), "{tally}");
    assert_eq!(dovecot.count(USER), 6);
    // BODY.PEEK[]: reading the mail left it unread for the people who share the mailbox.
    let flags = dovecot.flags_in(USER, "INBOX");
    assert!(
        flags.iter().all(|f| !f.contains('S')),
        "\\Seen was set: {flags:?}"
    );
}

#[test]
fn a_message_over_max_message_size_is_quarantined_and_left_upstream() {
    if support::skip_e2e() {
        return;
    }
    let dovecot = Dovecot::start(&[(USER, PASS)]);
    let sink = SmtpSink::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    let mut big = b"X-Original-To: bob@example.com\nReceived: from a by b; Mon, 2 Nov 2026 \
        10:00:00 +0000\nMessage-ID: <big@remote.test>\nSubject: big\n\n"
        .to_vec();
    big.extend(std::iter::repeat_n(b"x".repeat(70).into_iter().chain([b'\n']), 100).flatten());
    dovecot.deliver(USER, &big);
    dovecot.deliver(USER, &numbered_message(1));
    let config = write_config(
        dir.path(),
        &sink,
        account(&dovecot, Link::Starttls, &[]),
        &["max_message_size: 2KiB"],
    );
    let out = poll_once(&config);
    assert!(out.status.success(), "{}", stderr(&out));

    let txs = sink.transactions();
    assert_eq!(
        txs.iter()
            .filter(|t| t.rcpts == ["user1@example.com"])
            .count(),
        1
    );
    assert!(
        !txs.iter().any(|t| t.rcpts == ["bob@example.com"]),
        "the big message was relayed"
    );
    // The postmaster is told, naming the limit.
    assert!(
        txs.iter().any(|t| t.rcpts == ["postmaster@example.com"]
            && String::from_utf8_lossy(&t.message).contains("max_message_size")),
        "no notice to the postmaster"
    );
    // Only the big one is still upstream, and it is in quarantine.
    let left = dovecot.messages(USER);
    assert_eq!(left.len(), 1);
    assert!(String::from_utf8_lossy(&left[0]).contains("Subject: big"));
    let list = run_mailferry(&["state", "list", "--config", &config]);
    let list = String::from_utf8_lossy(&list.stdout).into_owned();
    assert!(list.contains("max_message_size"), "state list: {list}");

    // The next pass neither fetches nor deletes it.
    let before = sink.transactions().len();
    assert!(poll_once(&config).status.success());
    assert_eq!(sink.transactions().len(), before);
    assert_eq!(dovecot.count(USER), 1);
}

#[test]
fn wrong_password_fails_the_pass_without_leaking_it() {
    if support::skip_e2e() {
        return;
    }
    let dovecot = Dovecot::start(&[(USER, PASS)]);
    let sink = SmtpSink::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    dovecot.deliver(USER, &numbered_message(0));
    let config = write_config(
        dir.path(),
        &sink,
        AccountYaml {
            password: Secret::Inline("wrong-pässword".into()),
            ..account(&dovecot, Link::Implicit, &[])
        },
        &[],
    );
    let out = poll_once(&config);
    assert_eq!(out.status.code(), Some(1));
    let all = format!("{}{}", String::from_utf8_lossy(&out.stdout), stderr(&out));
    assert!(all.contains("authentication failed"), "{all}");
    assert!(!all.contains("wrong-pässword"), "password leaked: {all}");
    assert_eq!(dovecot.count(USER), 1);
}

#[test]
fn fetch_order_newest_takes_the_newest_first_over_imap_and_pop3() {
    if support::skip_e2e() {
        return;
    }
    let dovecot = Dovecot::start(&[(USER, PASS)]);
    for protocol in ["imap", "pop3"] {
        let sink = SmtpSink::start(&[]);
        let dir = tempfile::tempdir().unwrap();
        for i in 0..5 {
            dovecot.deliver(USER, &numbered_message(i));
        }
        let port = match protocol {
            "imap" => dovecot.imap_port(),
            _ => dovecot.pop3_port(),
        };
        let config = write_config(
            dir.path(),
            &sink,
            AccountYaml {
                protocol: protocol.into(),
                port,
                ..account(
                    &dovecot,
                    Link::Starttls,
                    &["fetch_order: newest", "max_per_pass: 2"],
                )
            },
            &[],
        );
        let out = poll_once(&config);
        assert!(out.status.success(), "{protocol}: {}", stderr(&out));
        let mut subjects: Vec<String> = sink.transactions().iter().map(|t| t.subject()).collect();
        subjects.sort();
        assert_eq!(subjects, ["message 3", "message 4"], "{protocol}");
        // The rest follows, newest first, until the mailbox is empty.
        for _ in 0..3 {
            assert!(poll_once(&config).status.success());
        }
        let tally = Tally::of(&numbered_pairs(5), &sink.transactions());
        assert!(tally.exact(), "{protocol}: {tally}");
        assert_eq!(dovecot.count(USER), 0, "{protocol}");
    }
}

#[test]
fn after_fetch_move_leaves_everything_in_the_archive_folder() {
    if support::skip_e2e() {
        return;
    }
    let c = collect_sample(
        Link::Starttls,
        "INBOX.Archive",
        &["after_fetch: move:INBOX/Archive", "expunge_every: 5"],
    );
    // Collected from INBOX, moved next to the copies already in the archive.
    let n = c.mail.len();
    assert_eq!(c.dovecot.count(USER), 0, "INBOX not emptied");
    assert_eq!(c.dovecot.count_in(USER, "INBOX.Archive"), 2 * n);
    let flags = c.dovecot.flags_in(USER, "INBOX.Archive");
    assert!(flags.iter().all(|f| !f.contains('S')), "read: {flags:?}");
    c.assert_nothing_more();
    assert_eq!(c.dovecot.count_in(USER, "INBOX.Archive"), 2 * n);
}

#[test]
fn a_uidvalidity_change_redelivers_nothing() {
    if support::skip_e2e() {
        return;
    }
    let dovecot = Dovecot::start(&[(USER, PASS)]);
    let sink = SmtpSink::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    for i in 0..3 {
        dovecot.deliver(USER, &numbered_message(i));
    }
    let config = write_config(
        dir.path(),
        &sink,
        account(
            &dovecot,
            Link::Starttls,
            &["retention: keep", "initial: deliver_all"],
        ),
        &[],
    );
    let out = poll_once(&config);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(sink.transactions().len(), 3);

    // The mailbox is recreated with the same mail: Dovecot forgets its UIDs and UIDVALIDITY.
    let maildir = dovecot.maildir(USER);
    let mut forgotten = 0;
    for entry in std::fs::read_dir(&maildir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if name == "dovecot-uidlist" || name.starts_with("dovecot.index") {
            std::fs::remove_file(&path).unwrap();
            forgotten += 1;
        }
    }
    assert!(
        forgotten > 0,
        "no Dovecot UID list in {}",
        maildir.display()
    );
    dovecot.deliver(USER, &numbered_message(3));
    let out = poll_once(&config);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("UIDVALIDITY change"),
        "{}",
        stderr(&out)
    );
    let again = poll_once(&config);
    assert!(!stderr(&again).contains("UIDVALIDITY change"), "said once");
    let sent = sink.transactions();
    assert_eq!(sent.len(), 4, "only the new message is delivered");
    assert_eq!(sent[3].rcpts, ["user3@example.com"]);
    assert_eq!(dovecot.count(USER), 4, "retention keep");
}

/// Dovecot holding `numbered(0..n)` in INBOX, smtp-sink, and a configuration for the account
/// (STARTTLS) with `extra_lines` and the top-level lines `top`.
struct Numbered {
    dovecot: Dovecot,
    sink: SmtpSink,
    _dir: tempfile::TempDir,
    config: String,
}

fn numbered_mailbox(n: usize, extra_lines: &[&str], top: &[&str]) -> Numbered {
    let dovecot = Dovecot::start(&[(USER, PASS)]);
    let sink = SmtpSink::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    for i in 0..n {
        dovecot.deliver(USER, &numbered_message(i));
    }
    let mut account = account(&dovecot, Link::Starttls, extra_lines);
    // A poll_interval in extra_lines replaces the default one (the first line).
    if extra_lines.iter().any(|l| l.starts_with("poll_interval:")) {
        account.extra_lines.remove(0);
    }
    let config = write_config(dir.path(), &sink, account, top);
    Numbered {
        dovecot,
        sink,
        _dir: dir,
        config,
    }
}

/// One `poll-once` that must succeed.
fn pass_ok(config: &str) {
    let out = poll_once(config);
    assert!(out.status.success(), "{}", stderr(&out));
}

#[test]
fn after_fetch_seen_flags_kept_mail_once_it_is_delivered() {
    // That a message not yet settled is left unflagged, and that one already \Seen gets no
    // second STORE: the pipeline's and the IMAP session's unit tests.
    if support::skip_e2e() {
        return;
    }
    let lines = [
        "retention: keep",
        "initial: deliver_all",
        "after_fetch: seen",
    ];
    let m = numbered_mailbox(3, &lines, &[]);
    for _ in 0..2 {
        pass_ok(&m.config);
    }
    let tally = Tally::of(&numbered_pairs(3), &m.sink.transactions());
    assert!(tally.exact(), "{tally}");
    assert_eq!(m.dovecot.count(USER), 3, "retention keep");
    let flags = m.dovecot.flags_in(USER, "INBOX");
    assert_eq!(flags.len(), 3);
    assert!(
        flags.iter().all(|f| f.contains('S')),
        "not \\Seen: {flags:?}"
    );
}

#[test]
fn unseen_only_skips_mail_read_upstream_and_a_read_then_unread_message_is_not_delivered_twice() {
    if support::skip_e2e() {
        return;
    }
    // dedup off: only the state store's memory of a message keeps it from a second delivery.
    let lines = [
        "retention: keep",
        "initial: deliver_all",
        "unseen_only: true",
    ];
    let m = numbered_mailbox(3, &lines, &["dedup: off"]);
    // Someone has read message 1 already.
    m.dovecot.set_seen(USER, "INBOX", 1, true);
    pass_ok(&m.config);
    let mut subjects: Vec<String> = m.sink.transactions().iter().map(|t| t.subject()).collect();
    subjects.sort();
    assert_eq!(subjects, ["message 0", "message 2"]);
    let flags = m.dovecot.flags_in(USER, "INBOX");
    assert!(
        !flags[0].contains('S') && !flags[2].contains('S'),
        "{flags:?}"
    );

    // Message 0, delivered, is read upstream, then marked unread again; message 1 is marked
    // unread: only message 1 is new to mailferry.
    m.dovecot.set_seen(USER, "INBOX", 0, true);
    pass_ok(&m.config);
    assert_eq!(m.sink.transactions().len(), 2);
    m.dovecot.set_seen(USER, "INBOX", 0, false);
    m.dovecot.set_seen(USER, "INBOX", 1, false);
    pass_ok(&m.config);
    let tally = Tally::of(&numbered_pairs(3), &m.sink.transactions());
    assert!(tally.exact(), "{tally}");
    assert_eq!(m.dovecot.count(USER), 3, "retention keep");
}

#[test]
fn idle_delivers_a_message_appended_while_idling_within_seconds() {
    if support::skip_e2e() {
        return;
    }
    // poll_interval 60 s: only IDLE can bring the second message in within 5 s.
    let m = numbered_mailbox(1, &["idle: true", "poll_interval: 60s"], &[]);
    let daemon = Mailferry::spawn(&["run", "--config", &m.config]);
    assert_eq!(m.sink.wait_for(1, Duration::from_secs(30)).len(), 1);
    // Time for the pass to end and the IDLE to begin.
    std::thread::sleep(Duration::from_secs(1));
    m.dovecot.deliver(USER, &numbered_message(1));
    let delivered = std::time::Instant::now();
    let got = m.sink.wait_for(2, Duration::from_secs(5));
    let took = delivered.elapsed();
    let out = daemon
        .terminate(Duration::from_secs(30))
        .expect("the daemon did not stop on SIGTERM");
    assert_eq!(got.len(), 2, "not delivered within 5 s\n{}", stderr(&out));
    assert!(took < Duration::from_secs(5), "{took:?}");
    let tally = Tally::of(&numbered_pairs(2), &m.sink.transactions());
    assert!(tally.exact(), "{tally}");
}

/// A message of about `mib` MiB of body to `to`, Message-ID `<big@remote.test>`.
fn big_message(mib: usize, to: &str) -> Vec<u8> {
    let line = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ-0123456789\n";
    support::message(
        &[
            ("X-Original-To", to),
            ("From", "s@remote.test"),
            ("Subject", "big"),
            ("Message-ID", "<big@remote.test>"),
        ],
        &line.repeat(mib * 1024 * 1024 / line.len()),
    )
}

#[test]
fn a_message_of_several_chunks_arrives_whole() {
    if support::skip_e2e() {
        return;
    }
    let dovecot = Dovecot::start(&[(USER, PASS)]);
    let sink = SmtpSink::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    // 9 MiB of body: three `UID FETCH ... BODY.PEEK[]<offset.4194304>` pieces.
    let big = big_message(9, "user0@example.com");
    dovecot.deliver(USER, &big);
    let config = write_config(
        dir.path(),
        &sink,
        account(&dovecot, Link::Starttls, &[]),
        &[],
    );
    let out = poll_once(&config);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(sink.transactions().len(), 1);
    assert_bodies_intact(&sink, &[big]);
    assert_eq!(dovecot.count(USER), 0);
}

#[test]
fn messages_come_several_per_uid_fetch_and_a_big_one_in_pieces_between_them() {
    if support::skip_e2e() {
        return;
    }
    let dovecot = Dovecot::start(&[(USER, PASS)]);
    let sink = SmtpSink::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    // UIDs 1-5 small, 6 of 6 MiB (two pieces), 7-9 small.
    let big = big_message(6, "user99@example.com");
    let mut sent: Vec<Vec<u8>> = (0..5).map(numbered_message).collect();
    sent.push(big);
    sent.extend((5..8).map(numbered_message));
    for m in &sent {
        dovecot.deliver(USER, m);
    }
    let config = write_config(
        dir.path(),
        &sink,
        account(&dovecot, Link::Starttls, &[]),
        &[],
    );
    let out = support::mailferry_command(&["poll-once", "--config", &config])
        .env("MAILFERRY_LOG", "mailferry=debug")
        .output()
        .unwrap();
    let log = stderr(&out);
    assert!(out.status.success(), "{log}");
    assert_eq!(sink.transactions().len(), sent.len());
    assert_bodies_intact(&sink, &sent);
    assert_eq!(dovecot.count(USER), 0);
    let fetches: Vec<&str> = (log.lines())
        .filter_map(|l| l.split_once("C: ").map(|(_, c)| c))
        .filter(|c| c.contains("UID FETCH") && c.contains("BODY.PEEK"))
        // "A5 UID FETCH ... account=imap-account": the command without tag and field.
        .map(|c| c.split_once(' ').map_or(c, |(_, rest)| rest))
        .map(|c| c.split(" account=").next().unwrap_or(c))
        .collect();
    assert_eq!(
        fetches,
        [
            "UID FETCH 1:5 BODY.PEEK[]<0.4194304>",
            "UID FETCH 6 BODY.PEEK[]<0.4194304>",
            "UID FETCH 6 BODY.PEEK[]<4194304.4194304>",
            "UID FETCH 7:9 BODY.PEEK[]<0.4194304>",
        ],
        "{log}"
    );
}
