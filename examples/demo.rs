//! See the gateway work: a catch-all mailbox of example.com on a real Dovecot, a real SMTP
//! receiver (Postfix's smtp-sink), and `mailferry run` moving the mail from one to the other.
//!
//! Run it with `./demo.sh` (installs the servers if needed, builds, runs this). It needs
//! root, like the integration tests: Dovecot stores the mail as the user `mailferry-test`.

#[path = "../tests/support/mod.rs"]
mod support;

use std::collections::BTreeMap;
use std::fs;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use support::{
    AccountYaml, Dovecot, GatewayConfig, Mailferry, SAMPLE_CATCHALL_USER, SAMPLE_DOMAIN,
    SAMPLE_POSTMASTER, Secret, SmtpSink, Transaction, as_sink_stores, free_port, mailferry_bin,
    sample_catchall_expected, sample_catchall_mail, wait_until, write_private,
};

/// How long the mailbox may take to empty.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);
/// How long mailferry may take to stop after SIGTERM.
const STOP_TIMEOUT: Duration = Duration::from_secs(15);
/// The catch-all mailbox's password (a throwaway for this demo; mailferry reads it from a file).
const PASSWORD: &str = "demo-only-secret";

fn main() -> ExitCode {
    let bin = mailferry_bin();
    if !bin.exists() {
        eprintln!(
            "demo: {} does not exist: build it first (cargo build --bins --examples, or ./demo.sh)",
            bin.display()
        );
        return ExitCode::FAILURE;
    }
    let started = Instant::now();
    let mails = sample_catchall_mail();

    let dovecot = Dovecot::start(&[(SAMPLE_CATCHALL_USER, PASSWORD)]);
    dovecot.deliver_all(SAMPLE_CATCHALL_USER, &mails);
    step(
        started,
        &format!(
            "Dovecot is up: POP3 on 127.0.0.1:{} (STLS offered); {SAMPLE_CATCHALL_USER} holds {} messages",
            dovecot.pop3_port(),
            dovecot.count(SAMPLE_CATCHALL_USER)
        ),
    );
    let sink = SmtpSink::start(&[]);
    step(
        started,
        &format!(
            "smtp-sink (the internal mail server) is up on 127.0.0.1:{}",
            sink.port()
        ),
    );

    let outcome = demo(started, &dovecot, &sink, &mails);
    match outcome {
        Ok(()) => {
            println!("\ndemo: OK");
            ExitCode::SUCCESS
        }
        Err(why) => {
            eprintln!("\ndemo FAILED: {why}");
            eprintln!("--- Dovecot's log\n{}", dovecot.log());
            ExitCode::FAILURE
        }
    }
}

fn demo(
    started: Instant,
    dovecot: &Dovecot,
    sink: &SmtpSink,
    mails: &[Vec<u8>],
) -> Result<(), String> {
    let root = dovecot.root();
    let metrics_port = free_port();
    let config_file = write_config(root, dovecot, sink, metrics_port)?;
    println!("\n--- {}", config_file.display());
    print!(
        "{}",
        fs::read_to_string(&config_file).map_err(|e| e.to_string())?
    );
    println!("---\n");

    let config_arg = config_file.to_string_lossy().into_owned();
    step(
        started,
        &format!("starting: mailferry run --config {config_arg}"),
    );
    let mut daemon = Mailferry::spawn(&["run", "--config", &config_arg]);

    let mut exited_early = false;
    let drained = wait_until(DRAIN_TIMEOUT, || {
        exited_early = daemon.has_exited();
        exited_early || dovecot.count(SAMPLE_CATCHALL_USER) == 0
    });
    let left = dovecot.count(SAMPLE_CATCHALL_USER);
    if exited_early {
        let out = daemon.terminate(STOP_TIMEOUT).unwrap_or_else(|o| o);
        return Err(format!(
            "mailferry exited on its own ({})\n--- its output\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    if drained {
        step(started, "the mailbox is empty: every message was delivered");
    } else {
        step(
            started,
            &format!(
                "after {DRAIN_TIMEOUT:?} the mailbox still holds {left} messages (carrying on to show why)"
            ),
        );
    }

    // The metrics, as Prometheus would scrape them.
    match scrape(metrics_port) {
        Ok(body) => {
            println!("\nGET http://127.0.0.1:{metrics_port}/metrics (mailferry_ lines):");
            for line in body.lines().filter(|l| l.starts_with("mailferry_")) {
                println!("  {line}");
            }
            println!();
        }
        Err(e) => println!("\n(could not fetch the metrics: {e})\n"),
    }

    step(started, "sending SIGTERM to mailferry");
    let stopped = daemon.terminate(STOP_TIMEOUT);
    let output = match &stopped {
        Ok(o) | Err(o) => o,
    };
    let log = String::from_utf8_lossy(&output.stderr);
    println!("--- mailferry's log");
    for line in log.lines() {
        println!("  {line}");
    }
    println!("---");
    if stopped.is_err() {
        return Err(format!(
            "mailferry did not stop within {STOP_TIMEOUT:?} of SIGTERM (killed)"
        ));
    }
    step(started, &format!("mailferry stopped ({})", output.status));

    let transactions = sink.transactions();
    print_table(&transactions);
    let now = dovecot.count(SAMPLE_CATCHALL_USER);
    println!(
        "\nmailbox {SAMPLE_CATCHALL_USER} now holds {now} messages (it held {})",
        mails.len()
    );

    if !output.status.success() {
        return Err(format!(
            "mailferry exited with {} after SIGTERM",
            output.status
        ));
    }
    if !drained {
        return Err(format!(
            "{left} messages were still upstream after {DRAIN_TIMEOUT:?}"
        ));
    }
    check_routing(&transactions)?;
    check_bodies(&transactions, mails)
}

/// Every delivered body is byte-identical to the body upstream (as smtp-sink stores it:
/// LF line ends, a final newline). Messages are matched by Message-ID.
fn check_bodies(transactions: &[Transaction], mails: &[Vec<u8>]) -> Result<(), String> {
    let message_id = |raw: &[u8]| {
        let text = String::from_utf8_lossy(raw).into_owned();
        let header_end = text.find("\n\n").unwrap_or(text.len());
        text[..header_end]
            .lines()
            .find_map(|l| l.strip_prefix("Message-ID: ").map(str::to_owned))
    };
    let body = |raw: &[u8]| match raw.windows(2).position(|w| w == b"\n\n") {
        Some(i) => raw[i + 2..].to_vec(),
        None => Vec::new(),
    };
    let mut differ = Vec::new();
    for t in transactions {
        let id = t.header("Message-ID");
        let original = mails.iter().find(|m| id.is_some() && message_id(m) == id);
        match original {
            Some(m) if body(&as_sink_stores(m)) == t.body() => {}
            Some(_) => differ.push(format!("  body differs: {}", id.unwrap_or_default())),
            None => differ.push(format!("  no such message upstream: {id:?}")),
        }
    }
    if differ.is_empty() {
        println!(
            "every body arrived byte-identical ({} messages)",
            transactions.len()
        );
        Ok(())
    } else {
        Err(format!("bodies changed on the way:\n{}", differ.join("\n")))
    }
}

/// Writes the configuration (and the password file it names) under `root`.
fn write_config(
    root: &Path,
    dovecot: &Dovecot,
    sink: &SmtpSink,
    metrics_port: u16,
) -> Result<PathBuf, String> {
    let password_file = root.join("catchall.password");
    write_private(&password_file, PASSWORD)?;
    let config = GatewayConfig::new(root.join("mailferry-state"), sink.port())
        .comment(
            "mailferry demo (examples/demo.rs): one POP3 catch-all mailbox -> the internal server",
        )
        .metrics_listen(&format!("127.0.0.1:{metrics_port}"))
        .domains(&[SAMPLE_DOMAIN])
        .postmaster(SAMPLE_POSTMASTER)
        .account(AccountYaml {
            name: "example-catchall".into(),
            host: "127.0.0.1".into(),
            port: dovecot.pop3_port(),
            tls: "starttls".into(),
            ca_file: Some(dovecot.ca_file()),
            username: SAMPLE_CATCHALL_USER.into(),
            password: Secret::File(password_file),
            extra_lines: vec![
                "mode: catch-all".into(),
                "poll_interval: 5s".into(),
                "retention: delete".into(),
            ],
            ..AccountYaml::default()
        });
    Ok(config.write(root))
}

/// `GET /metrics` with a plain HTTP/1.0 request; the body.
fn scrape(port: u16) -> Result<String, String> {
    let mut last_error = String::new();
    for _ in 0..20 {
        match TcpStream::connect((Ipv4Addr::LOCALHOST, port)) {
            Ok(mut stream) => {
                stream
                    .set_read_timeout(Some(Duration::from_secs(5)))
                    .map_err(|e| e.to_string())?;
                stream
                    .write_all(b"GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
                    .map_err(|e| e.to_string())?;
                let mut response = Vec::new();
                stream
                    .read_to_end(&mut response)
                    .map_err(|e| e.to_string())?;
                let text = String::from_utf8_lossy(&response).into_owned();
                return match text.split_once("\r\n\r\n") {
                    Some((head, body)) if head.starts_with("HTTP/1.") && head.contains(" 200") => {
                        Ok(body.to_owned())
                    }
                    _ => Err(format!(
                        "unexpected response: {}",
                        text.lines().next().unwrap_or("")
                    )),
                };
            }
            Err(e) => last_error = e.to_string(),
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Err(last_error)
}

fn print_table(transactions: &[Transaction]) {
    println!(
        "\nthe internal server received {} transactions:\n",
        transactions.len()
    );
    println!("  {:<34} {:<44} SUBJECT", "MAIL FROM", "RCPT TO");
    for t in transactions {
        let from = if t.mail_from.is_empty() {
            "<>".to_owned()
        } else {
            t.mail_from.clone()
        };
        println!(
            "  {:<34} {:<44} {}",
            from,
            t.rcpts.join(", "),
            decoded_subject(t)
        );
    }
}

/// The Subject for display, RFC 2047 decoded.
fn decoded_subject(t: &Transaction) -> String {
    mail_parser::MessageParser::default()
        .parse_headers(t.header_section())
        .and_then(|m| m.subject().map(str::to_owned))
        .unwrap_or_else(|| t.subject())
}

/// Every sample message reached exactly its expected recipients, once.
fn check_routing(transactions: &[Transaction]) -> Result<(), String> {
    let key = |from: &str, rcpts: &[String]| {
        let mut rcpts: Vec<String> = rcpts.iter().map(|r| r.to_ascii_lowercase()).collect();
        rcpts.sort();
        format!("MAIL FROM <{from}> RCPT TO {}", rcpts.join(", "))
    };
    let mut expected: BTreeMap<String, i32> = BTreeMap::new();
    for (from, rcpts) in sample_catchall_expected() {
        let rcpts: Vec<String> = rcpts.iter().map(|r| r.to_string()).collect();
        *expected.entry(key(from, &rcpts)).or_default() += 1;
    }
    for t in transactions {
        *expected.entry(key(&t.mail_from, &t.rcpts)).or_default() -= 1;
    }
    let wrong: Vec<String> = expected
        .into_iter()
        .filter(|(_, n)| *n != 0)
        .map(|(k, n)| {
            if n > 0 {
                format!("  missing {n}x: {k}")
            } else {
                format!("  unexpected {}x: {k}", -n)
            }
        })
        .collect();
    if wrong.is_empty() {
        println!(
            "every message reached exactly its expected recipients ({} transactions)",
            transactions.len()
        );
        Ok(())
    } else {
        Err(format!(
            "the deliveries differ from what the routing rules expect:\n{}",
            wrong.join("\n")
        ))
    }
}

fn step(started: Instant, what: &str) {
    println!("[{:>5.1}s] {what}", started.elapsed().as_secs_f64());
}
