//! An on-demand benchmark: mailferry against fetchmail (multidrop), same mailbox, same run.
//!
//! Builds a catch-all mailbox of N messages (~7 KB each, an `X-Original-To: userK@example.com`
//! above the provider's `Received:`), then for each tool in turn starts a fresh Dovecot and a
//! fresh smtp-sink on loopback, seeds the mailbox, and times one pass of the tool: mailferry
//! `poll-once`, fetchmail `--nodetach` in multidrop mode. It reports wall time, messages/s,
//! CPU time and peak RSS, checks that every message reached its recipient exactly once and
//! that the mailbox is empty afterwards, and prints medians over `--runs` and the throughput
//! ratio mailferry/fetchmail (only the ratio means something on a shared machine).
//!
//! `--delay-ms D` puts a TCP proxy in front of Dovecot that delays every chunk by D ms in each
//! direction (round trip 2·D), like a far server; both tools go through it.
//!
//! `--server courier` collects from Courier's POP3 server instead of Dovecot's (it leaves
//! Nagle's algorithm on: a client that delays its ACKs waits 40 ms per message).
//!
//! Run it with `./bench.sh [OPTIONS]` (installs what is missing, builds in release mode). It
//! needs root, like the integration tests.

#[path = "../tests/support/mod.rs"]
mod support;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, Shutdown, TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, mpsc};
use std::thread;
use std::time::{Duration, Instant};

use support::{
    AccountYaml, CONFIG_FILE, Courier, Dovecot, GatewayConfig, Secret, SmtpSink, as_sink_stores,
    is_root, mailferry_bin, message, wait_until, write_private,
};

/// The catch-all mailbox both tools collect from.
const CATCHALL: &str = "catchall@example.com";
/// A throwaway password for the throwaway Dovecot.
const PASSWORD: &str = "bench-only-secret";
const DOMAIN: &str = "example.com";
const POSTMASTER: &str = "postmaster@example.com";
/// How many distinct recipients the messages are spread over.
const RECIPIENTS: usize = 50;
/// `/usr/bin/time -v` gives peak RSS and CPU time of the measured process.
const GNU_TIME: &str = "/usr/bin/time";
const USAGE: &str = "usage: bench [--messages N] [--runs R] [--delay-ms D] [--tools mailferry,fetchmail] [--server dovecot|courier] [--timeout-secs S] [--strace]";

#[derive(Debug, Clone)]
struct Options {
    messages: usize,
    runs: usize,
    delay_ms: u64,
    tools: Vec<Tool>,
    /// Time allowed for one pass of one tool; `None`: derived from N and D.
    timeout: Option<Duration>,
    /// After the timed runs, one untimed pass per tool under `strace -f -c -w`.
    strace: bool,
    /// The POP3 server both tools collect from.
    server: Server,
}

/// The POP3 server of a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Server {
    Dovecot,
    Courier,
}

/// A running POP3 server with the catch-all mailbox.
enum Upstream {
    Dovecot(Dovecot),
    Courier(Courier),
}

impl Upstream {
    fn start(server: Server) -> Upstream {
        let users = [(CATCHALL, PASSWORD)];
        match server {
            Server::Dovecot => Upstream::Dovecot(Dovecot::start(&users)),
            Server::Courier => Upstream::Courier(Courier::start(&users)),
        }
    }

    fn pop3_port(&self) -> u16 {
        match self {
            Upstream::Dovecot(d) => d.pop3_port(),
            Upstream::Courier(c) => c.pop3_port(),
        }
    }

    fn root(&self) -> &Path {
        match self {
            Upstream::Dovecot(d) => d.root(),
            Upstream::Courier(c) => c.root(),
        }
    }

    fn deliver_all(&self, mails: &[Vec<u8>]) {
        match self {
            Upstream::Dovecot(d) => d.deliver_all(CATCHALL, mails),
            Upstream::Courier(c) => c.deliver_all(CATCHALL, mails),
        }
    }

    fn count(&self) -> usize {
        match self {
            Upstream::Dovecot(d) => d.count(CATCHALL),
            Upstream::Courier(c) => c.count(CATCHALL),
        }
    }

    fn messages(&self) -> Vec<Vec<u8>> {
        match self {
            Upstream::Dovecot(d) => d.messages(CATCHALL),
            Upstream::Courier(c) => c.messages(CATCHALL),
        }
    }
}

/// How a pass is watched: timed under `/usr/bin/time`, or counted under `strace -f -c -w`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Watch {
    Timed,
    Strace,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tool {
    Mailferry,
    Fetchmail,
}

impl Tool {
    fn name(self) -> &'static str {
        match self {
            Tool::Mailferry => "mailferry",
            Tool::Fetchmail => "fetchmail",
        }
    }
}

/// What one pass of one tool did.
#[derive(Debug)]
struct RunResult {
    tool: Tool,
    wall: Duration,
    /// `None` when the pass was killed at the timeout.
    status: Option<ExitStatus>,
    peak_rss_kb: Option<u64>,
    cpu_secs: Option<f64>,
    check: Check,
    /// Chunks the proxy forwarded client→server (only with `--delay-ms`).
    upstream_chunks: Option<u64>,
    /// `strace -c`'s summary (only under [`Watch::Strace`]).
    strace: Option<String>,
}

impl RunResult {
    fn ok(&self) -> bool {
        self.status.is_some_and(|s| s.success()) && self.check.is_perfect()
    }
    /// Messages that reached their recipient, per second of wall time.
    fn rate(&self) -> f64 {
        self.check.delivered as f64 / self.wall.as_secs_f64()
    }
}

/// The correctness of one pass: what the internal server received and what was left upstream.
#[derive(Debug, Default)]
struct Check {
    transactions: usize,
    /// Messages that reached their recipient (once or more).
    delivered: usize,
    /// Messages never delivered and gone from the mailbox.
    lost: usize,
    /// Messages never delivered but still upstream (a later pass could deliver them).
    undelivered: usize,
    /// Messages delivered more than once.
    duplicated: usize,
    /// Deliveries to an address that was not the message's recipient, or of unknown messages.
    misrouted: usize,
    /// Deliveries whose body differs from the original.
    altered: usize,
    /// Messages still in the mailbox afterwards.
    left_upstream: usize,
}

impl Check {
    fn is_perfect(&self) -> bool {
        self.lost == 0
            && self.undelivered == 0
            && self.duplicated == 0
            && self.misrouted == 0
            && self.altered == 0
            && self.left_upstream == 0
    }

    fn summary(&self) -> String {
        if self.is_perfect() {
            return format!("ok ({} delivered once, mailbox empty)", self.delivered);
        }
        let mut parts = Vec::new();
        for (n, what) in [
            (self.lost, "LOST"),
            (self.undelivered, "NOT DELIVERED (still upstream)"),
            (self.duplicated, "DUPLICATED"),
            (self.misrouted, "MISROUTED"),
            (self.altered, "ALTERED"),
            (self.left_upstream, "LEFT UPSTREAM"),
        ] {
            if n > 0 {
                parts.push(format!("{n} {what}"));
            }
        }
        format!(
            "WRONG: {} ({} delivered, {} SMTP transactions)",
            parts.join(", "),
            self.delivered,
            self.transactions
        )
    }
}

fn main() -> ExitCode {
    let options = match parse_args(std::env::args().skip(1)) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("bench: {e}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    if let Err(e) = preflight(&options) {
        eprintln!("bench: {e}");
        return ExitCode::FAILURE;
    }
    let mails = build_mailbox(options.messages);
    let bytes: usize = mails.iter().map(Vec::len).sum();
    println!(
        "bench: {} messages ({:.1} MB, {:.1} KB average) for {RECIPIENTS} recipients; {} run(s) per tool; {}",
        mails.len(),
        bytes as f64 / 1e6,
        bytes as f64 / mails.len().max(1) as f64 / 1e3,
        options.runs,
        if options.delay_ms > 0 {
            format!(
                "POP3 through a proxy delaying each chunk {} ms (round trip {} ms)",
                options.delay_ms,
                2 * options.delay_ms
            )
        } else {
            "POP3 and SMTP on loopback, no added delay".to_owned()
        }
    );
    println!("bench: upstream POP3 server: {:?}", options.server);
    let timeout = options.timeout.unwrap_or_else(|| {
        Duration::from_secs(60)
            + Duration::from_millis(options.messages as u64 * (100 + 20 * options.delay_ms))
    });
    println!(
        "bench: each pass may take {timeout:?}; peak RSS and CPU from {}\n",
        if Path::new(GNU_TIME).exists() {
            "/usr/bin/time -v"
        } else {
            "sampling /proc/PID/status VmHWM"
        }
    );

    let mut results: Vec<RunResult> = Vec::new();
    // Alternate the tools run by run, so a slow phase of the machine hits both.
    for run in 1..=options.runs {
        for &tool in &options.tools {
            let r = measure(tool, &mails, &options, timeout, Watch::Timed);
            println!(
                "run {run}/{} {:<9} {:>8.2} s {:>8.1} msg/s  rss {:>7}  cpu {:>7}  {}{}  {}",
                options.runs,
                tool.name(),
                r.wall.as_secs_f64(),
                r.rate(),
                r.peak_rss_kb
                    .map_or("?".to_owned(), |kb| format!("{:.1}M", kb as f64 / 1024.0)),
                r.cpu_secs.map_or("?".to_owned(), |s| format!("{s:.2}s")),
                match r.status {
                    Some(s) if s.success() => "exit 0".to_owned(),
                    Some(s) => format!(
                        "EXIT {}",
                        s.code().map_or("signal".into(), |c| c.to_string())
                    ),
                    None => "TIMEOUT".to_owned(),
                },
                r.upstream_chunks.map_or(String::new(), |c| format!(
                    "  {:.1} client->server chunks/msg",
                    c as f64 / options.messages.max(1) as f64
                )),
                r.check.summary()
            );
            results.push(r);
        }
    }
    print_table(&results, &options);
    if options.strace {
        for &tool in &options.tools {
            let r = measure(tool, &mails, &options, timeout * 3, Watch::Strace);
            println!(
                "\n{} under strace -f -c -w (untimed; {}): system calls by wall time, all threads",
                tool.name(),
                r.check.summary()
            );
            print_strace(r.strace.as_deref().unwrap_or(""), options.messages);
        }
    }
    if results.iter().all(RunResult::ok) {
        ExitCode::SUCCESS
    } else {
        println!("\nbench: at least one pass failed or lost/duplicated mail (see above)");
        ExitCode::FAILURE
    }
}

fn parse_args(mut args: impl Iterator<Item = String>) -> Result<Options, String> {
    let mut o = Options {
        messages: 2000,
        runs: 3,
        delay_ms: 0,
        tools: vec![Tool::Mailferry, Tool::Fetchmail],
        timeout: None,
        strace: false,
        server: Server::Dovecot,
    };
    while let Some(arg) = args.next() {
        let mut value = |name: &str| args.next().ok_or(format!("{name} needs a value"));
        match arg.as_str() {
            "--messages" => o.messages = number(&value("--messages")?, 1, 1_000_000)? as usize,
            "--runs" => o.runs = number(&value("--runs")?, 1, 100)? as usize,
            "--delay-ms" => o.delay_ms = number(&value("--delay-ms")?, 0, 10_000)?,
            "--timeout-secs" => {
                o.timeout = Some(Duration::from_secs(number(
                    &value("--timeout-secs")?,
                    1,
                    86_400,
                )?))
            }
            "--tools" => {
                o.tools = value("--tools")?
                    .split(',')
                    .map(|t| match t.trim() {
                        "mailferry" => Ok(Tool::Mailferry),
                        "fetchmail" => Ok(Tool::Fetchmail),
                        other => Err(format!("unknown tool {other:?}")),
                    })
                    .collect::<Result<_, _>>()?
            }
            "--strace" => o.strace = true,
            "--server" => {
                o.server = match value("--server")?.as_str() {
                    "dovecot" => Server::Dovecot,
                    "courier" => Server::Courier,
                    other => return Err(format!("unknown server {other:?}")),
                }
            }
            "-h" | "--help" => return Err("help".to_owned()),
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    Ok(o)
}

fn number(text: &str, min: u64, max: u64) -> Result<u64, String> {
    match text.parse::<u64>() {
        Ok(n) if (min..=max).contains(&n) => Ok(n),
        _ => Err(format!("{text:?} is not a number in {min}..={max}")),
    }
}

fn preflight(options: &Options) -> Result<(), String> {
    if !is_root() {
        return Err("run as root (Dovecot and smtp-sink switch to the test mail user)".into());
    }
    if options.tools.contains(&Tool::Mailferry) && !mailferry_bin().exists() {
        return Err(format!(
            "{} does not exist: cargo build --release --bins --examples (or ./bench.sh)",
            mailferry_bin().display()
        ));
    }
    if options.tools.contains(&Tool::Fetchmail) && which("fetchmail").is_none() {
        return Err("fetchmail is not installed (apt-get install fetchmail, or ./bench.sh)".into());
    }
    Ok(())
}

fn which(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(program))
        .find(|p| p.is_file())
}

/// The recipient of message `i`.
fn recipient(i: usize) -> String {
    format!("user{}@{DOMAIN}", i % RECIPIENTS)
}

fn message_id(i: usize) -> String {
    format!("<bench-{i}.{}@sender.example.org>", i * 7919 % 100_003)
}

/// N messages as a provider's catch-all mailbox holds them: `X-Original-To` (and
/// `Delivered-To` naming the mailbox) above the provider's `Received:`, then an ordinary
/// message of about 7 KB with plain-text lines, one of them starting with a dot.
fn build_mailbox(n: usize) -> Vec<Vec<u8>> {
    const WORDS: [&str; 16] = [
        "invoice", "delivery", "meeting", "quarter", "figures", "project", "schedule", "review",
        "customer", "contract", "update", "draft", "report", "budget", "office", "team",
    ];
    (0..n)
        .map(|i| {
            let rcpt = recipient(i);
            let received = format!(
                "from smtp{}.sender.example.org (smtp.sender.example.org [203.0.113.{}])\n\
                 \tby mx1.provider.net (Postfix) with ESMTPS id 4Xb{i:08}\n\
                 \tfor <{CATCHALL}>; Tue, 11 Nov 2025 14:02:11 +0100 (CET)",
                i % 7,
                i % 250 + 1
            );
            let mut body = String::with_capacity(7200);
            body.push_str(&format!("Hello user{},\n\n", i % RECIPIENTS));
            let mut line_no = 0usize;
            while body.len() < 6400 {
                let mut line = String::new();
                let mut w = i.wrapping_mul(31).wrapping_add(line_no * 17);
                while line.len() < 66 {
                    line.push_str(WORDS[w % WORDS.len()]);
                    line.push(' ');
                    w = w.wrapping_mul(1_103_515_245).wrapping_add(12_345) >> 3;
                }
                if line_no == 40 {
                    body.push_str(". this line starts with a dot\n");
                }
                body.push_str(line.trim_end());
                body.push('\n');
                line_no += 1;
            }
            body.push_str("\n-- \nSender\n");
            message(
                &[
                    (
                        "Return-Path",
                        &format!("<sender{}@sender.example.org>", i % 13),
                    ),
                    ("X-Original-To", &rcpt),
                    ("Delivered-To", CATCHALL),
                    ("Received", &received),
                    ("Date", "Tue, 11 Nov 2025 14:02:05 +0100"),
                    (
                        "From",
                        &format!("Sender {} <sender{}@sender.example.org>", i % 13, i % 13),
                    ),
                    ("To", &format!("User {} <{rcpt}>", i % RECIPIENTS)),
                    ("Subject", &format!("Benchmark message {i}")),
                    ("Message-ID", &message_id(i)),
                    ("MIME-Version", "1.0"),
                    ("Content-Type", "text/plain; charset=us-ascii"),
                ],
                &body,
            )
        })
        .collect()
}

/// One pass of `tool`: fresh servers, the mailbox seeded, the tool timed, the result checked.
fn measure(
    tool: Tool,
    mails: &[Vec<u8>],
    options: &Options,
    timeout: Duration,
    watch: Watch,
) -> RunResult {
    let dovecot = Upstream::start(options.server);
    dovecot.deliver_all(mails);
    let sink = SmtpSink::start(&[]);
    let proxy = (options.delay_ms > 0)
        .then(|| DelayProxy::start(dovecot.pop3_port(), Duration::from_millis(options.delay_ms)));
    let pop3_port = proxy.as_ref().map_or(dovecot.pop3_port(), |p| p.port);
    let work = dovecot.root().join(format!("bench-{}", tool.name()));
    let prepared = fs::create_dir(&work)
        .map_err(|e| format!("create {}: {e}", work.display()))
        .and_then(|()| match tool {
            Tool::Mailferry => mailferry_command(&work, pop3_port, sink.port(), mails.len()),
            Tool::Fetchmail => fetchmail_command(&work, pop3_port, sink.port()),
        });
    let command = match prepared {
        Ok(c) => c,
        Err(e) => {
            eprintln!("bench: cannot prepare {}: {e}", tool.name());
            std::process::exit(1);
        }
    };

    let measured = run_measured(command, &work, timeout, watch);
    // BENCH_LOG_DIR=DIR keeps each run's stderr (with MAILFERRY_LOG=debug: a timeline).
    if let Ok(dir) = std::env::var("BENCH_LOG_DIR") {
        let kept = Path::new(&dir).join(format!("{}-{}.stderr", tool.name(), std::process::id()));
        let _ = fs::create_dir_all(&dir).and_then(|()| fs::copy(work.join("stderr"), &kept));
    }
    // smtp-sink writes each transaction before its 250; give it a moment anyway. What
    // arrived is checked below.
    let _ = sink.wait_for(mails.len(), Duration::from_secs(3));
    wait_until(Duration::from_secs(3), || dovecot.count() == 0);
    let check = check(&sink, &dovecot, mails);
    let upstream_chunks = proxy
        .as_ref()
        .map(|p| p.client_chunks.load(Ordering::Relaxed));
    drop(proxy);

    let result = RunResult {
        tool,
        wall: measured.wall,
        status: measured.status,
        peak_rss_kb: measured.peak_rss_kb,
        cpu_secs: measured.cpu_secs,
        check,
        upstream_chunks,
        strace: (watch == Watch::Strace)
            .then(|| fs::read_to_string(work.join("strace.txt")).unwrap_or_default()),
    };
    if !result.ok() {
        for name in ["stdout", "stderr"] {
            let text = fs::read_to_string(work.join(name)).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            let tail = &lines[lines.len().saturating_sub(15)..];
            eprintln!(
                "--- {} {name} (last lines)\n{}",
                tool.name(),
                tail.join("\n")
            );
        }
    }
    result
}

/// The command line of a mailferry pass: `poll-once` with a fresh state directory.
fn mailferry_command(
    work: &Path,
    pop3_port: u16,
    smtp_port: u16,
    n: usize,
) -> Result<Command, String> {
    let password_file = work.join("catchall.password");
    write_private(&password_file, PASSWORD)?;
    let config = GatewayConfig::new(work.join("state"), smtp_port)
        .domains(&[DOMAIN])
        .postmaster(POSTMASTER)
        .account(AccountYaml {
            name: "bench-catchall".into(),
            host: "127.0.0.1".into(),
            port: pop3_port,
            username: CATCHALL.into(),
            password: Secret::File(password_file),
            extra_lines: vec![
                "mode: catch-all".into(),
                format!("max_per_pass: {}", n.max(1)),
                "retention: delete".into(),
            ],
            ..AccountYaml::default()
        });
    let config_file = work.join(CONFIG_FILE);
    write_private(&config_file, &config.yaml())?;
    let mut cmd = support::mailferry_command(&["poll-once", "--config"]);
    cmd.arg(&config_file);
    Ok(cmd)
}

/// The command line of a fetchmail pass: multidrop on `X-Original-To`, one pass in the
/// foreground, its state (UIDs, pid file) in `work`. It deletes what it delivered (no `keep`).
fn fetchmail_command(work: &Path, pop3_port: u16, smtp_port: u16) -> Result<Command, String> {
    let home = work.join("fetchmail-home");
    fs::create_dir(&home).map_err(|e| format!("create {}: {e}", home.display()))?;
    fs::set_permissions(&home, fs::Permissions::from_mode(0o700))
        .map_err(|e| format!("chmod {}: {e}", home.display()))?;
    let rc = format!(
        "set postmaster \"{POSTMASTER}\"
set no bouncemail
poll 127.0.0.1 service {pop3_port} protocol pop3 no dns
    envelope \"X-Original-To\"
    localdomains {DOMAIN}
  user \"{CATCHALL}\" there with password \"{PASSWORD}\" to * here
    sslproto ''
    smtphost 127.0.0.1/{smtp_port}
    smtpaddress {DOMAIN}
"
    );
    let rc_file = work.join("fetchmailrc");
    write_private(&rc_file, &rc)?;
    let fetchmail = which("fetchmail").ok_or("fetchmail is not installed")?;
    let mut cmd = Command::new(fetchmail);
    cmd.arg("-f")
        .arg(&rc_file)
        .arg("-i")
        .arg(work.join("fetchids"))
        .arg("--pidfile")
        .arg(work.join("fetchmail.pid"))
        .arg("--nodetach")
        .arg("--nosyslog")
        .env("FETCHMAILHOME", &home);
    Ok(cmd)
}

struct Measured {
    wall: Duration,
    status: Option<ExitStatus>,
    peak_rss_kb: Option<u64>,
    cpu_secs: Option<f64>,
}

/// `command` run by `wrapper ARGS...` (same environment).
fn wrapped(wrapper: &str, args: &[&std::ffi::OsStr], command: &Command) -> Command {
    let mut c = Command::new(wrapper);
    c.args(args)
        .arg(command.get_program())
        .args(command.get_args());
    for (k, v) in command.get_envs() {
        match v {
            Some(v) => c.env(k, v),
            None => c.env_remove(k),
        };
    }
    c
}

/// Runs `command` (under `/usr/bin/time -v` when there is one, or `strace -f -c -w`) in its own
/// process group, stdout/stderr to files in `work`; kills the group at `timeout`.
fn run_measured(command: Command, work: &Path, timeout: Duration, watch: Watch) -> Measured {
    let time_file = work.join("time.txt");
    let strace_file = work.join("strace.txt");
    let gnu_time = watch == Watch::Timed && Path::new(GNU_TIME).exists();
    let mut cmd = if watch == Watch::Strace {
        wrapped(
            "strace",
            &[
                "-f".as_ref(),
                "-c".as_ref(),
                "-w".as_ref(),
                "-o".as_ref(),
                strace_file.as_os_str(),
            ],
            &command,
        )
    } else if gnu_time {
        wrapped(
            GNU_TIME,
            &["-v".as_ref(), "-o".as_ref(), time_file.as_os_str()],
            &command,
        )
    } else {
        command
    };
    let out = |name: &str| {
        fs::File::create(work.join(name))
            .map(Stdio::from)
            .unwrap_or_else(|_| Stdio::null())
    };
    cmd.current_dir(work)
        .stdin(Stdio::null())
        .stdout(out("stdout"))
        .stderr(out("stderr"))
        .process_group(0);

    let started = Instant::now();
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("bench: cannot start {:?}: {e}", cmd.get_program());
            std::process::exit(1);
        }
    };
    let pid = child.id();
    let deadline = started + timeout;
    let mut sampled_hwm: Option<u64> = None;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Some(status),
            Ok(None) => {}
            Err(e) => {
                eprintln!("bench: wait for {pid}: {e}");
                break None;
            }
        }
        if Instant::now() >= deadline {
            // The whole group: /usr/bin/time and the tool under it.
            let _ = Command::new("kill")
                .args(["-KILL", "--", &format!("-{pid}")])
                .status();
            let _ = child.wait();
            break None;
        }
        if !gnu_time && let Some(kb) = vm_hwm_kb(pid) {
            sampled_hwm = Some(sampled_hwm.map_or(kb, |old| old.max(kb)));
        }
        thread::sleep(Duration::from_millis(if gnu_time { 10 } else { 5 }));
    };
    let wall = started.elapsed();

    let (peak_rss_kb, cpu_secs) = if gnu_time {
        parse_gnu_time(&fs::read_to_string(&time_file).unwrap_or_default())
    } else {
        (sampled_hwm, None)
    };
    Measured {
        wall,
        status,
        peak_rss_kb,
        cpu_secs,
    }
}

/// The peak resident set size so far of a running process (`VmHWM`), in kB.
fn vm_hwm_kb(pid: u32) -> Option<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
}

/// Peak RSS (kB) and user+system CPU seconds from `/usr/bin/time -v`'s report.
fn parse_gnu_time(report: &str) -> (Option<u64>, Option<f64>) {
    let field = |name: &str| {
        report
            .lines()
            .find_map(|l| l.trim().strip_prefix(name))
            .map(|v| v.trim().to_owned())
    };
    let rss = field("Maximum resident set size (kbytes):").and_then(|v| v.parse().ok());
    let user: Option<f64> = field("User time (seconds):").and_then(|v| v.parse().ok());
    let system: Option<f64> = field("System time (seconds):").and_then(|v| v.parse().ok());
    (rss, user.zip(system).map(|(u, s)| u + s))
}

/// Every message reached its recipient exactly once, unchanged, and nothing is left upstream.
fn check(sink: &SmtpSink, dovecot: &Upstream, mails: &[Vec<u8>]) -> Check {
    let expected: HashMap<String, usize> = (0..mails.len()).map(|i| (message_id(i), i)).collect();
    let transactions = sink.transactions();
    let mut counts = vec![0usize; mails.len()];
    let upstream: HashSet<usize> = dovecot
        .messages()
        .iter()
        .filter_map(|raw| {
            let text = String::from_utf8_lossy(raw);
            let head = text.split("\n\n").next().unwrap_or("");
            head.lines()
                .find_map(|l| l.strip_prefix("Message-ID: "))
                .and_then(|id| expected.get(id.trim()).copied())
        })
        .collect();
    let mut c = Check {
        transactions: transactions.len(),
        left_upstream: dovecot.count(),
        ..Check::default()
    };
    for t in &transactions {
        let index = t
            .header("Message-ID")
            .and_then(|id| expected.get(&id).copied());
        let Some(i) = index else {
            c.misrouted += t.rcpts.len().max(1);
            continue;
        };
        let want = recipient(i);
        for r in &t.rcpts {
            if r.eq_ignore_ascii_case(&want) {
                counts[i] += 1;
            } else {
                c.misrouted += 1;
            }
        }
        let original = as_sink_stores(&mails[i]);
        let body_at = original
            .windows(2)
            .position(|w| w == b"\n\n")
            .map_or(original.len(), |p| p + 2);
        if t.body() != &original[body_at..] {
            c.altered += 1;
        }
    }
    for (i, n) in counts.into_iter().enumerate() {
        match n {
            0 if upstream.contains(&i) => c.undelivered += 1,
            0 => c.lost += 1,
            1 => c.delivered += 1,
            _ => {
                c.delivered += 1;
                c.duplicated += 1;
            }
        }
    }
    c
}

/// The busiest lines of `strace -c`'s table, and the sync calls per message.
fn print_strace(report: &str, n: usize) {
    let rows: Vec<&str> = report
        .lines()
        .filter(|l| l.trim_start().starts_with(|c: char| c.is_ascii_digit()))
        .collect();
    if rows.is_empty() {
        println!("  (no strace report: is strace installed?)");
        return;
    }
    for line in report.lines().take(2) {
        println!("  {line}");
    }
    for line in rows.iter().take(12) {
        println!("  {line}");
    }
    if let Some(total) = report.lines().find(|l| l.contains("total")) {
        println!("  {total}");
    }
    let calls = |name: &str| {
        rows.iter()
            .find(|l| l.split_whitespace().last() == Some(name))
            .and_then(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                // % time, seconds, usecs/call, calls, [errors], syscall
                f.get(3)?.parse::<u64>().ok()
            })
            .unwrap_or(0)
    };
    let syncs = calls("fsync") + calls("fdatasync") + calls("sync_file_range");
    println!(
        "  fsync+fdatasync: {syncs} calls, {:.2} per message",
        syncs as f64 / n.max(1) as f64
    );
}

fn median(values: &mut [f64]) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    values.sort_by(|a, b| a.total_cmp(b));
    let m = values.len() / 2;
    Some(if values.len() % 2 == 1 {
        values[m]
    } else {
        (values[m - 1] + values[m]) / 2.0
    })
}

fn print_table(results: &[RunResult], options: &Options) {
    let n = options.messages;
    println!(
        "\n{n} messages, {} run(s), {}:\n",
        options.runs,
        if options.delay_ms > 0 {
            format!("POP3 round trip +{} ms", 2 * options.delay_ms)
        } else {
            "loopback".to_owned()
        }
    );
    println!(
        "  {:<10} {:>12} {:>12} {:>14} {:>12}  correctness",
        "tool", "wall s (med)", "msg/s (med)", "peak RSS MiB", "CPU s (med)"
    );
    let mut rates: BTreeMap<&str, f64> = BTreeMap::new();
    for &tool in &options.tools {
        let mine: Vec<&RunResult> = results.iter().filter(|r| r.tool == tool).collect();
        let med = |f: &dyn Fn(&RunResult) -> Option<f64>| {
            median(&mut mine.iter().filter_map(|r| f(r)).collect::<Vec<f64>>())
        };
        let wall = med(&|r| Some(r.wall.as_secs_f64()));
        let rate = med(&|r| Some(r.rate()));
        let rss = med(&|r| r.peak_rss_kb.map(|kb| kb as f64 / 1024.0));
        let cpu = med(&|r| r.cpu_secs);
        let good = mine.iter().filter(|r| r.ok()).count();
        if let Some(rate) = rate {
            rates.insert(tool.name(), rate);
        }
        let show =
            |v: Option<f64>, digits: usize| v.map_or("?".to_owned(), |v| format!("{v:.digits$}"));
        println!(
            "  {:<10} {:>12} {:>12} {:>14} {:>12}  {}",
            tool.name(),
            show(wall, 2),
            show(rate, 1),
            show(rss, 1),
            show(cpu, 2),
            if good == mine.len() {
                format!("all {good} runs correct")
            } else {
                format!(
                    "{} of {} runs WRONG (see above)",
                    mine.len() - good,
                    mine.len()
                )
            }
        );
    }
    if let (Some(m), Some(f)) = (rates.get("mailferry"), rates.get("fetchmail")) {
        println!(
            "\n  throughput ratio mailferry/fetchmail (medians): {:.2}x",
            m / f
        );
    }
}

/// A TCP proxy in front of `upstream` that delays every chunk it forwards by `delay`, in both
/// directions, keeping the order (one reader and one writer thread per direction).
struct DelayProxy {
    port: u16,
    stop: Arc<AtomicBool>,
    /// Chunks read from clients (a rough count of the client's request round trips).
    client_chunks: Arc<AtomicU64>,
    acceptor: Option<thread::JoinHandle<()>>,
}

/// Time a proxied connection may stay silent before the proxy gives up on it.
const PROXY_IDLE: Duration = Duration::from_secs(300);

impl DelayProxy {
    fn start(upstream: u16, delay: Duration) -> DelayProxy {
        let listener = match TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .and_then(|l| l.set_nonblocking(true).map(|()| l))
        {
            Ok(l) => l,
            Err(e) => {
                eprintln!("bench: proxy: cannot listen on 127.0.0.1: {e}");
                std::process::exit(1);
            }
        };
        let port = listener.local_addr().map(|a| a.port()).unwrap_or(0);
        let stop = Arc::new(AtomicBool::new(false));
        let client_chunks = Arc::new(AtomicU64::new(0));
        let acceptor = {
            let stop = stop.clone();
            let chunks = client_chunks.clone();
            thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    match listener.accept() {
                        Ok((client, _)) => {
                            if let Err(e) = proxy_connection(client, upstream, delay, &chunks) {
                                eprintln!("bench: proxy: {e}");
                            }
                        }
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                            thread::sleep(Duration::from_millis(5));
                        }
                        Err(e) => {
                            eprintln!("bench: proxy: accept: {e}");
                            thread::sleep(Duration::from_millis(50));
                        }
                    }
                }
            })
        };
        DelayProxy {
            port,
            stop,
            client_chunks,
            acceptor: Some(acceptor),
        }
    }
}

impl Drop for DelayProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(a) = self.acceptor.take() {
            let _ = a.join();
        }
    }
}

fn proxy_connection(
    client: TcpStream,
    upstream: u16,
    delay: Duration,
    client_chunks: &Arc<AtomicU64>,
) -> std::io::Result<()> {
    client.set_nonblocking(false)?;
    let server = TcpStream::connect_timeout(
        &(Ipv4Addr::LOCALHOST, upstream).into(),
        Duration::from_secs(10),
    )?;
    for s in [&client, &server] {
        s.set_nodelay(true)?;
        s.set_read_timeout(Some(PROXY_IDLE))?;
        s.set_write_timeout(Some(PROXY_IDLE))?;
    }
    pump(
        client.try_clone()?,
        server.try_clone()?,
        delay,
        Some(client_chunks.clone()),
    );
    pump(server, client, delay, None);
    Ok(())
}

/// Forwards `from` → `to`, each chunk `delay` after it was read, in order.
fn pump(mut from: TcpStream, mut to: TcpStream, delay: Duration, count: Option<Arc<AtomicU64>>) {
    let (tx, rx) = mpsc::channel::<(Instant, Vec<u8>)>();
    thread::spawn(move || {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match from.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if let Some(c) = &count {
                        c.fetch_add(1, Ordering::Relaxed);
                    }
                    if tx
                        .send((Instant::now() + delay, buf[..n].to_vec()))
                        .is_err()
                    {
                        break;
                    }
                }
            }
        }
    });
    thread::spawn(move || {
        for (due, chunk) in rx {
            let now = Instant::now();
            if due > now {
                thread::sleep(due - now);
            }
            if to.write_all(&chunk).is_err() {
                break;
            }
        }
        let _ = to.shutdown(Shutdown::Write);
    });
}
