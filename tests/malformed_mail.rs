//! A mailbox of malformed mail, end to end: no header/body separator, no header at all, a
//! 2 MB header line, NUL bytes, bare CR and LF, invalid UTF-8 (in a header, in an address,
//! in the body), truncated MIME, a 60 MB message over `max_message_size` and a 30 MB one
//! under it, between two ordinary messages. One poll-once: no crash, each one delivered or
//! quarantined as specified, the rest of the mailbox delivered; the process's peak RSS is
//! reported (VmHWM), not asserted.

mod support;

use std::fs::File;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use support::{
    AccountYaml, Dovecot, GatewayConfig, Secret, SmtpSink, Transaction, mailferry_command,
};

const USER: &str = "catchall@example.com";
const PASS: &str = "pop-secret";
const POSTMASTER: &str = "postmaster@example.com";

/// A header section to `user`, with `subject`, then `rest` appended as is.
fn mail(user: &str, subject: &str, rest: &[u8]) -> Vec<u8> {
    let mut m =
        format!("From: sender@outside.example\nTo: {user}\nSubject: {subject}\n").into_bytes();
    m.extend_from_slice(rest);
    m
}

/// A body of `size` bytes in lines of 76 characters.
fn body(size: usize) -> Vec<u8> {
    let line = [b"A".repeat(76), b"\n".to_vec()].concat();
    line.iter().copied().cycle().take(size).collect()
}

/// The corpus, in mailbox order: (subject or marker, message).
fn corpus() -> Vec<(&'static str, Vec<u8>)> {
    let mut long_header = mail("user3@example.com", "long-header", b"X-Long: ");
    long_header.extend(std::iter::repeat_n(b'a', 2 << 20));
    long_header.extend_from_slice(b"\n\nafter a 2 MB header line\n");
    let truncated_mime = mail(
        "user8@example.com",
        "truncated-mime",
        b"MIME-Version: 1.0\nContent-Type: multipart/mixed; boundary=\"b1\"\n\n--b1\n\
          Content-Type: text/plain\n\nfirst part\n--b1\nContent-Type: application/pdf\n\
          Content-Transfer-Encoding: base64\n\nJVBERi0xLjQKJcfsj6IKNSAwIG9iago8PC9MZW5n",
    );
    let mut huge = mail("user9@example.com", "sixty-mb", b"\n");
    huge.extend(body(60 << 20));
    let mut large = mail("user10@example.com", "thirty-mb", b"\n");
    large.extend(body(30 << 20));
    vec![
        ("first", mail("user0@example.com", "first", b"\nordinary\n")),
        (
            "no-separator",
            b"From: sender@outside.example\nTo: user1@example.com\nSubject: no-separator\n".to_vec(),
        ),
        (
            "no-header",
            b"This message has no header section at all.\nJust text.\n".to_vec(),
        ),
        ("long-header", long_header),
        ("nul", mail("user4@example.com", "nul", b"X-Nul: a\0b\n\nbody\0with NUL\n")),
        (
            "bare-cr",
            b"From: sender@outside.example\r\nTo: user5@example.com\nSubject: bare-cr\rX-Injected: yes\r\n\nbody\rwith\r\nmixed\nends\r"
                .to_vec(),
        ),
        (
            "bad-utf8",
            mail("user6@example.com", "bad-utf8 \u{fffd}", b"X-Bad: \xff\xfe\xc3\x28\n\nbody \xc3\x28 \xff\n"),
        ),
        (
            "bad-utf8-address",
            b"From: sender@outside.example\nTo: us\xffer7@example.com, user7@example.com\nSubject: bad-utf8-address\n\nhi\n"
                .to_vec(),
        ),
        ("truncated-mime", truncated_mime),
        ("sixty-mb", huge),
        ("thirty-mb", large),
        ("last", mail("user11@example.com", "last", b"\nordinary\n")),
    ]
}

/// Runs `mailferry poll-once`, sampling its peak RSS: (exit success, stderr, VmHWM in KiB).
fn poll_once_measured(config: &Path, dir: &Path) -> (bool, String, u64) {
    let log = dir.join("poll-once.log");
    let mut child = mailferry_command(&["poll-once", "--config", &config.display().to_string()])
        .stdin(Stdio::null())
        .stdout(File::create(dir.join("poll-once.out")).unwrap())
        .stderr(File::create(&log).unwrap())
        .spawn()
        .expect("start mailferry");
    let status_file = format!("/proc/{}/status", child.id());
    let started = Instant::now();
    let mut peak = 0;
    let status = loop {
        // VmHWM is the process's own high-water mark: sampling only has to catch it alive.
        if let Ok(text) = std::fs::read_to_string(&status_file) {
            peak = peak.max(vm_hwm(&text).unwrap_or(0));
        }
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > Duration::from_secs(300) {
            child.kill().ok();
            panic!("poll-once did not finish within 300 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let stderr = std::fs::read_to_string(&log).unwrap_or_default();
    eprintln!("--- mailferry poll-once stderr\n{stderr}");
    (status.success(), stderr, peak)
}

fn vm_hwm(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// The transactions that went to exactly `rcpt` (alone or with others).
fn to<'a>(txs: &'a [Transaction], rcpt: &str) -> Vec<&'a Transaction> {
    txs.iter()
        .filter(|t| t.rcpts.iter().any(|r| r == rcpt))
        .collect()
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn a_mailbox_of_malformed_mail_is_delivered_or_quarantined_message_by_message() {
    if support::skip_e2e() {
        return;
    }
    let dovecot = Dovecot::start(&[(USER, PASS)]);
    let sink = SmtpSink::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    let corpus = corpus();
    for (_, m) in &corpus {
        dovecot.deliver(USER, m);
    }
    let config = GatewayConfig::new(dir.path().join("state"), sink.port())
        .postmaster(POSTMASTER)
        .account(AccountYaml {
            name: "malformed".into(),
            port: dovecot.pop3_port(),
            username: USER.into(),
            password: Secret::Inline(PASS.into()),
            extra_lines: vec!["max_per_pass: 100".into()],
            ..AccountYaml::default()
        })
        .write(dir.path());

    let (ok, stderr, peak_kib) = poll_once_measured(&config, dir.path());
    let largest = corpus
        .iter()
        .map(|(_, m)| m.len())
        .filter(|&n| n <= 50_000_000)
        .max()
        .unwrap();
    eprintln!(
        "peak RSS (VmHWM) of poll-once: {} MiB; largest message delivered: {} MiB ({:.1}x)",
        peak_kib / 1024,
        largest >> 20,
        (peak_kib * 1024) as f64 / largest as f64
    );
    assert!(!stderr.contains("panicked"), "no panic: {stderr}");
    // What failed (the 60 MB message) is settled in quarantine: the run is a success.
    assert!(ok, "poll-once exits 0: {stderr}");

    let txs = sink.transactions();
    let summary: Vec<(String, Vec<String>)> =
        txs.iter().map(|t| (t.subject(), t.rcpts.clone())).collect();
    // Each rightful recipient got its message exactly once.
    for (user, subject) in [
        ("user0", "first"),
        ("user1", "no-separator"),
        ("user3", "long-header"),
        ("user4", "nul"),
        ("user5", "bare-cr"),
        ("user6", "bad-utf8"),
        ("user7", "bad-utf8-address"),
        ("user8", "truncated-mime"),
        ("user10", "thirty-mb"),
        ("user11", "last"),
    ] {
        let got = to(&txs, &format!("{user}@example.com"));
        assert_eq!(got.len(), 1, "{user} gets {subject:?} once: {summary:?}");
        assert!(
            got[0].subject().starts_with(subject),
            "{user} gets {subject:?}: {summary:?}"
        );
    }
    // Nobody got the 60 MB message.
    assert!(to(&txs, "user9@example.com").is_empty(), "{summary:?}");

    let postmaster = to(&txs, POSTMASTER);
    // A message without a header section has no recipient: the postmaster gets it, its text
    // kept as body.
    assert!(
        postmaster
            .iter()
            .any(|t| contains(&t.message, b"This message has no header section at all.")),
        "the header-less message reaches the postmaster: {summary:?}"
    );
    // The undecodable address is reported to the postmaster, the rest of the To delivered.
    assert!(
        postmaster.iter().any(|t| t.subject() == "bad-utf8-address"),
        "{summary:?}"
    );
    // The 60 MB message is quarantined, with a notice naming the limit.
    assert!(
        postmaster
            .iter()
            .any(|t| contains(&t.message, b"max_message_size")),
        "a quarantine notice about max_message_size: {summary:?}"
    );

    // A bare CR in a header made no header at the receiver.
    let bare_cr = to(&txs, "user5@example.com")[0];
    assert_eq!(bare_cr.header("X-Injected"), None);
    // The long header line and the 30 MB body arrived whole.
    let long = to(&txs, "user3@example.com")[0];
    assert!(long.message.len() > 2 << 20, "the 2 MB header line arrived");
    let thirty = to(&txs, "user10@example.com")[0];
    assert!(thirty.message.len() >= 30 << 20, "the 30 MB body arrived");

    // Retention delete: only the quarantined 60 MB message is left upstream.
    let left = dovecot.messages(USER);
    assert_eq!(left.len(), 1, "only the quarantined message stays upstream");
    assert!(contains(&left[0][..200], b"Subject: sixty-mb"));

    // It shows in `state list`.
    let out = support::run_mailferry(&["state", "list", "--config", &config.display().to_string()]);
    let list = String::from_utf8_lossy(&out.stdout);
    assert!(list.contains("max_message_size"), "state list: {list}");
}
