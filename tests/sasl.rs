//! End to end: each login mechanism against a real Dovecot (which offers `plain login
//! cram-md5 scram-sha-1 scram-sha-256 apop`), over POP3 and IMAP, forced in turn with
//! `auth_mechanisms`, a message delivered through smtp-sink each time; and without a
//! restriction the strongest, SCRAM-SHA-256, chosen. The mechanism is asserted from both
//! ends: mailferry's "logged in with" line and Dovecot's `method=` login line. Debian's
//! Dovecot has NTLM only through Samba's winbind: `spa: true` meets a server without NTLM
//! here, and must fetch nothing. NTLM itself is tested against MS-NLMP's examples, the
//! scripted fake, Cyrus SASL's sample server (below), and delivered end to end over POP3 and
//! IMAP against Cyrus (`tests/cyrus.rs`).

mod support;

use std::path::Path;
use std::time::{Duration, Instant};

use support::{AccountYaml, Dovecot, GatewayConfig, Secret, SmtpSink, message, poll_once};

const USER: &str = "sasl@example.com";
const PASS: &str = "sasl-secret";

/// A single-user account on `dovecot` over implicit TLS, `extra` lines added.
fn account(dovecot: &Dovecot, protocol: &str, extra: &[&str]) -> AccountYaml {
    let port = match protocol {
        "imap" => dovecot.imaps_port(),
        _ => dovecot.pop3s_port(),
    };
    let mut extra_lines = vec![
        "mode: single-user".to_owned(),
        "deliver_to: sasl.user@corp.local".to_owned(),
    ];
    extra_lines.extend(extra.iter().map(|l| l.to_string()));
    AccountYaml {
        name: "sasl".into(),
        protocol: protocol.into(),
        port,
        tls: "tls".into(),
        ca_file: Some(dovecot.ca_file()),
        username: USER.into(),
        password: Secret::Inline(PASS.into()),
        extra_lines,
        ..AccountYaml::default()
    }
}

/// Delivers one message with `subject` to the mailbox, runs one pass with the account's
/// `extra` lines, and asserts it reached smtp-sink and left the mailbox; returns
/// mailferry's stderr.
fn deliver_once(
    dovecot: &Dovecot,
    sink: &SmtpSink,
    dir: &Path,
    protocol: &str,
    extra: &[&str],
) -> String {
    let subject = format!("{protocol} {}", extra.join(" "));
    dovecot.deliver(
        USER,
        &message(&[("From", "x@remote.test"), ("Subject", &subject)], "hi\n"),
    );
    let before = sink.transactions().len();
    let config = GatewayConfig::new(dir.join("state"), sink.port())
        .domains(&["corp.local"])
        .postmaster("postmaster@corp.local")
        .account(account(dovecot, protocol, extra))
        .write(dir);
    let out = poll_once(&config.display().to_string());
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        out.status.success(),
        "{subject}: {stderr}\n{}",
        dovecot.log()
    );
    let txs = sink.transactions();
    assert_eq!(txs.len(), before + 1, "{subject}: {stderr}");
    let last = &txs[before];
    assert_eq!(last.rcpts, ["sasl.user@corp.local"]);
    assert!(
        String::from_utf8_lossy(&last.message).contains(&subject),
        "{subject}"
    );
    assert_eq!(dovecot.count(USER), 0, "{subject}: left upstream");
    assert!(!stderr.contains(PASS), "the password in the log: {stderr}");
    stderr
}

fn spa_without_ntlm_fetches_nothing(
    dovecot: &Dovecot,
    sink: &SmtpSink,
    dir: &Path,
    protocol: &str,
) {
    dovecot.deliver(
        USER,
        &message(&[("From", "x@remote.test"), ("Subject", "spa")], "hi\n"),
    );
    let before = sink.transactions().len();
    let config = GatewayConfig::new(dir.join("state"), sink.port())
        .domains(&["corp.local"])
        .postmaster("postmaster@corp.local")
        .account(account(dovecot, protocol, &["spa: true"]))
        .write(dir);
    let out = poll_once(&config.display().to_string());
    assert!(!out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("no login method fits") && stdout.contains("the account allows ntlm"),
        "{stdout}"
    );
    assert_eq!(sink.transactions().len(), before);
    assert_eq!(dovecot.count(USER), 1, "the message stays upstream");
}

/// Dovecot's `method=` login lines for the protocol, in order, once there are at least
/// `n` (its log process writes them a moment after the login; 10 s at most).
fn dovecot_methods(dovecot: &Dovecot, protocol: &str, n: usize) -> Vec<String> {
    let login = format!("{protocol}-login: Info: Login:");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let methods: Vec<String> = dovecot
            .log()
            .lines()
            .filter(|l| l.contains(&login))
            .filter_map(|l| l.split("method=").nth(1))
            .map(|m| m.split(',').next().unwrap_or(m).to_owned())
            .collect();
        if methods.len() >= n || Instant::now() > deadline {
            return methods;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// (auth_mechanisms entry, Dovecot's name, mailferry's log name over POP3 / IMAP).
const FORCED: &[(&str, &str, &str, &str)] = &[
    (
        "scram-sha-256",
        "SCRAM-SHA-256",
        "AUTH SCRAM-SHA-256",
        "AUTHENTICATE SCRAM-SHA-256",
    ),
    (
        "scram-sha-1",
        "SCRAM-SHA-1",
        "AUTH SCRAM-SHA-1",
        "AUTHENTICATE SCRAM-SHA-1",
    ),
    (
        "cram-md5",
        "CRAM-MD5",
        "AUTH CRAM-MD5",
        "AUTHENTICATE CRAM-MD5",
    ),
    ("plain", "PLAIN", "AUTH PLAIN", "AUTHENTICATE PLAIN"),
    ("login", "LOGIN", "AUTH LOGIN", "AUTHENTICATE LOGIN"),
    ("password", "PLAIN", "USER/PASS", "LOGIN"),
];

fn each_mechanism_forced(protocol: &str) {
    let dovecot = Dovecot::start(&[(USER, PASS)]);
    let sink = SmtpSink::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    let mut want = Vec::new();
    for (name, dovecot_name, pop3_shown, imap_shown) in FORCED {
        let line = format!("auth_mechanisms: [{name}]");
        let stderr = deliver_once(&dovecot, &sink, dir.path(), protocol, &[&line]);
        let shown = if protocol == "imap" {
            imap_shown
        } else {
            pop3_shown
        };
        assert!(
            stderr.contains(&format!("logged in with {shown}")),
            "{name}: {stderr}"
        );
        want.push(dovecot_name.to_string());
    }
    if protocol == "pop3" {
        let stderr = deliver_once(&dovecot, &sink, dir.path(), protocol, &["auth: apop"]);
        assert!(stderr.contains("logged in with APOP"), "{stderr}");
        want.push("APOP".to_owned());
    }
    // spa: true is NTLM, which this Dovecot does not offer: no login, nothing fetched.
    spa_without_ntlm_fetches_nothing(&dovecot, &sink, dir.path(), protocol);
    // Dovecot saw the same, one login each (a pass may log in again to commit: dedup).
    let mut seen = dovecot_methods(&dovecot, protocol, want.len());
    seen.dedup();
    let mut want_dedup = want.clone();
    want_dedup.dedup();
    assert_eq!(seen, want_dedup, "{}", dovecot.log());
}

#[test]
fn pop3_delivers_with_each_mechanism_forced() {
    if support::skip_e2e() {
        return;
    }
    each_mechanism_forced("pop3");
}

#[test]
fn imap_delivers_with_each_mechanism_forced() {
    if support::skip_e2e() {
        return;
    }
    each_mechanism_forced("imap");
}

#[test]
fn without_a_restriction_the_strongest_is_chosen() {
    if support::skip_e2e() {
        return;
    }
    let dovecot = Dovecot::start(&[(USER, PASS)]);
    let sink = SmtpSink::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    for (protocol, shown) in [
        ("pop3", "AUTH SCRAM-SHA-256"),
        ("imap", "AUTHENTICATE SCRAM-SHA-256"),
    ] {
        let stderr = deliver_once(&dovecot, &sink, dir.path(), protocol, &[]);
        assert!(
            stderr.contains(&format!("logged in with {shown}")),
            "{stderr}"
        );
        let methods = dovecot_methods(&dovecot, protocol, 1);
        assert!(!methods.is_empty(), "{}", dovecot.log());
        assert!(
            methods.iter().all(|m| m == "SCRAM-SHA-256"),
            "{methods:?}\n{}",
            dovecot.log()
        );
    }
}

/// Cyrus SASL's NTLM server (its sample server, on stdin and stdout, with a sasldb holding
/// `User` in realm `DOMAIN`) against mailferry's NTLM client: an implementation of the
/// server side that is not ours accepts our NTLMv2 answer, and refuses it for a wrong
/// password. (Cyrus upper-cases the domain too, unlike MS-NLMP; with the upper-case NetBIOS
/// domain names Windows uses, both agree.)
fn cyrus_ntlm(password: &str) -> bool {
    use std::io::{BufRead, BufReader, Write};
    use std::process::{Command, Stdio};

    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("sasldb");
    let mut saslpasswd = Command::new("saslpasswd2")
        .args(["-p", "-c", "-u", "DOMAIN", "-f"])
        .arg(&db)
        .arg("User")
        .stdin(Stdio::piped())
        .spawn()
        .expect("saslpasswd2 (package sasl2-bin; scripts/install-deps.sh)");
    saslpasswd
        .stdin
        .take()
        .unwrap()
        .write_all(b"Password")
        .unwrap();
    assert!(saslpasswd.wait().unwrap().success());
    std::fs::write(
        dir.path().join("sample.conf"),
        format!(
            "pwcheck_method: auxprop\nauxprop_plugin: sasldb\nsasldb_path: {}\nmech_list: NTLM\n",
            db.display()
        ),
    )
    .unwrap();
    // Line-buffered (its stdio would hold every line back on a pipe), and never for long.
    let mut server = Command::new("timeout")
        .args([
            "30",
            "stdbuf",
            "-oL",
            "sasl-sample-server",
            "-s",
            "sample",
            "-m",
            "NTLM",
            "-u",
            "DOMAIN",
        ])
        .env("SASL_CONF_PATH", dir.path())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("sasl-sample-server (package sasl2-bin)");
    let mut errors = server.stderr.take().unwrap();
    let mut to_server = server.stdin.take().unwrap();
    let mut from_server = BufReader::new(server.stdout.take().unwrap());
    let mut transcript = String::new();
    // The server's next "S: base64" line; everything else it prints goes to the transcript.
    let mut next_challenge = |transcript: &mut String| -> Option<Vec<u8>> {
        loop {
            let mut line = String::new();
            if from_server.read_line(&mut line).unwrap() == 0 {
                return None;
            }
            transcript.push_str(&line);
            if let Some(data) = line.trim_end().strip_prefix("S:") {
                return Some(mailferry::sasl::decode_base64(data.as_bytes()).unwrap());
            }
        }
    };
    let credentials = mailferry::sasl::Credentials {
        username: "DOMAIN\\User",
        secret: mailferry::sasl::Secret::Password(password),
    };
    let mut exchange =
        mailferry::sasl::Exchange::new(mailferry::sasl::Mechanism::Ntlm, &credentials).unwrap();
    let mechanisms = next_challenge(&mut transcript).expect("the mechanism list");
    assert_eq!(mechanisms, b"NTLM", "{transcript}");
    writeln!(to_server, "C: {}", mailferry::sasl::encode_base64(b"NTLM")).unwrap();
    // The server's empty go-ahead, then the CHALLENGE_MESSAGE.
    while let Some(challenge) = next_challenge(&mut transcript) {
        let response = exchange.respond(&challenge).expect("a response");
        writeln!(
            to_server,
            "C: {}",
            mailferry::sasl::encode_base64(&response)
        )
        .unwrap();
        if response.starts_with(b"NTLMSSP\0\x03") {
            break;
        }
    }
    drop(to_server);
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut from_server, &mut rest).unwrap();
    transcript.push_str(&rest);
    std::io::Read::read_to_string(&mut errors, &mut transcript).unwrap();
    let _ = server.wait();
    let accepted = transcript.contains("Negotiation complete");
    assert!(
        accepted || transcript.contains("uthentication fail") || transcript.contains("failed"),
        "neither accepted nor refused:\n{transcript}"
    );
    eprintln!("{transcript}");
    accepted
}

#[test]
fn cyrus_sasl_accepts_mailferrys_ntlm_v2() {
    if support::skip_e2e() {
        return;
    }
    assert!(cyrus_ntlm("Password"), "the right password refused");
    assert!(!cyrus_ntlm("Wrong"), "a wrong password accepted");
}
