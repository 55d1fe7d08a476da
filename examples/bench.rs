//! An on-demand benchmark: mailferry against fetchmail (multidrop), same mailbox, same run.
//!
//! Builds a catch-all mailbox of N messages (~7 KB each, an `X-Original-To: userK@example.com`
//! above the provider's `Received:`), then for each tool in turn starts a fresh Dovecot and a
//! fresh smtp-sink on loopback, seeds the mailbox, and times one pass of the tool: mailferry
//! `poll-once`, fetchmail `--nodetach` in multidrop mode. It reports wall time, messages/s,
//! MB/s (bytes of mail delivered per second of wall time), CPU time and peak RSS, checks that
//! every message reached its recipient exactly once and that the mailbox is empty afterwards,
//! and prints medians over `--runs` and the throughput ratio mailferry/fetchmail (only the
//! ratio means something on a shared machine).
//!
//! Other scenarios (at most one per run; each checks delivery the same way):
//!
//! - `--accounts A` (`--messages` per mailbox, default 50): A catch-all mailboxes (A Dovecot
//!   users) of N messages each. mailferry: one `poll-once` with A accounts in its
//!   configuration (`max_concurrent_accounts` at its default); fetchmail: one rc file, one
//!   `poll` entry with A `user` entries (it collects them one after the other). Every message
//!   delivered once, every mailbox empty.
//! - `--size-mb S`: one message of S MB (10^6 bytes, numbered text lines) and `--messages`
//!   (default 3) ordinary ones; mailferry's `max_message_size` is set above S. Compare the
//!   peak RSS with S.
//! - `--kept K` (`--messages` new ones, default 100): mailferry only, `retention: keep`. The
//!   mailbox holds K messages; pass 1 (`initial: skip_existing`) takes them as handled; N new
//!   messages are added; pass 2 must deliver just those; pass 3 finds nothing new. Each pass
//!   is timed (same state directory, same Dovecot): pass 2 should cost about pass 3 plus the
//!   N messages, and pass 3 little, however large K is. Every message stays upstream. Then a
//!   bare POP3 session (login, UIDL, LIST, QUIT) is timed: the server's share of any pass
//!   over that mailbox.
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

use std::collections::{BTreeMap, HashSet};
use std::fmt::Write as _;
use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, Shutdown, TcpListener, TcpStream};
use std::ops::Range;
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
/// The `--kept` seed is generated and delivered this many messages at a time.
const SEED_CHUNK: usize = 1000;
const USAGE: &str = "usage: bench [--messages N] [--runs R] [--delay-ms D] [--tools mailferry,fetchmail] [--server dovecot|courier] [--timeout-secs S] [--strace]
             [--accounts A | --size-mb S | --kept K]
  (default)      one catch-all mailbox of N messages (default 2000)
  --accounts A   A mailboxes of N messages each (default 50), one mailferry config with A accounts
  --size-mb S    one message of S MB and N ordinary ones (default 3)
  --kept K       mailferry only, retention: keep: K messages already handled, then N new (default 100)";

#[derive(Debug, Clone)]
struct Options {
    /// `--messages`, or the scenario's default.
    messages: usize,
    scenario: Scenario,
    runs: usize,
    delay_ms: u64,
    tools: Vec<Tool>,
    /// Time allowed for one pass of one tool; `None`: derived from the scenario and D.
    timeout: Option<Duration>,
    /// After the timed runs, one untimed pass per tool under `strace -f -c -w`.
    strace: bool,
    /// The POP3 server both tools collect from.
    server: Server,
}

/// What is measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scenario {
    /// One catch-all mailbox of `--messages` messages.
    Catchall,
    /// `--accounts A`: A mailboxes of `--messages` messages each.
    Accounts(usize),
    /// `--size-mb S`: one message of S MB beside `--messages` ordinary ones.
    Large(usize),
    /// `--kept K`: K messages handled before, kept upstream; then `--messages` new ones.
    Kept(usize),
}

impl Scenario {
    fn default_messages(self) -> usize {
        match self {
            Scenario::Catchall => 2000,
            Scenario::Accounts(_) => 50,
            Scenario::Large(_) => 3,
            Scenario::Kept(_) => 100,
        }
    }
}

/// The POP3 server of a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Server {
    Dovecot,
    Courier,
}

/// A running POP3 server with the mailboxes of a run (one user each, password [`PASSWORD`]).
struct Upstream {
    server: UpstreamServer,
    users: Vec<String>,
}

enum UpstreamServer {
    Dovecot(Dovecot),
    Courier(Courier),
}

impl Upstream {
    fn start(server: Server, users: &[String]) -> Upstream {
        let pairs: Vec<(&str, &str)> = users.iter().map(|u| (u.as_str(), PASSWORD)).collect();
        Upstream {
            server: match server {
                Server::Dovecot => UpstreamServer::Dovecot(Dovecot::start(&pairs)),
                Server::Courier => UpstreamServer::Courier(Courier::start(&pairs)),
            },
            users: users.to_vec(),
        }
    }

    fn pop3_port(&self) -> u16 {
        match &self.server {
            UpstreamServer::Dovecot(d) => d.pop3_port(),
            UpstreamServer::Courier(c) => c.pop3_port(),
        }
    }

    fn root(&self) -> &Path {
        match &self.server {
            UpstreamServer::Dovecot(d) => d.root(),
            UpstreamServer::Courier(c) => c.root(),
        }
    }

    fn deliver_all(&self, user: &str, mails: &[Vec<u8>]) {
        match &self.server {
            UpstreamServer::Dovecot(d) => d.deliver_all(user, mails),
            UpstreamServer::Courier(c) => c.deliver_all(user, mails),
        }
    }

    /// Messages in all the mailboxes.
    fn count(&self) -> usize {
        self.users
            .iter()
            .map(|u| match &self.server {
                UpstreamServer::Dovecot(d) => d.count(u),
                UpstreamServer::Courier(c) => c.count(u),
            })
            .sum()
    }

    /// The bench message numbers (see [`message_index`]) in all the mailboxes.
    fn message_indices(&self) -> HashSet<usize> {
        let mut found = HashSet::new();
        for u in &self.users {
            let mails = match &self.server {
                UpstreamServer::Dovecot(d) => d.messages(u),
                UpstreamServer::Courier(c) => c.messages(u),
            };
            found.extend(mails.iter().filter_map(|raw| {
                let text = String::from_utf8_lossy(raw);
                let head = text.split("\n\n").next().unwrap_or("");
                head.lines()
                    .find_map(|l| l.strip_prefix("Message-ID: "))
                    .and_then(|id| message_index(id.trim()))
            }));
        }
        found
    }
}

/// The messages of a pass and where they lie: mailbox `b` (user `users[b]`) holds
/// `mails[b * per_box .. (b + 1) * per_box]`; `mails[j]` is bench message `first + j`.
struct Corpus {
    users: Vec<String>,
    first: usize,
    mails: Vec<Vec<u8>>,
    /// Messages that must still be upstream after the pass (`retention: keep`).
    kept: usize,
}

impl Corpus {
    /// Messages `first..` in the catch-all mailbox, nothing kept.
    fn catchall(first: usize, mails: Vec<Vec<u8>>) -> Corpus {
        Corpus {
            users: vec![CATCHALL.to_owned()],
            first,
            mails,
            kept: 0,
        }
    }

    /// Messages per mailbox (at least 1).
    fn per_box(&self) -> usize {
        self.mails.len().div_ceil(self.users.len()).max(1)
    }

    /// Each mailbox's user and its messages.
    fn boxes(&self) -> impl Iterator<Item = (&str, &[Vec<u8>])> {
        self.users
            .iter()
            .map(String::as_str)
            .zip(self.mails.chunks(self.per_box()))
    }

    fn bytes(&self) -> usize {
        self.mails.iter().map(Vec::len).sum()
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
    /// The tool, or which pass of the tool (`--kept`): rows of the table.
    label: String,
    wall: Duration,
    /// `None` when the pass was killed at the timeout.
    status: Option<ExitStatus>,
    peak_rss_kb: Option<u64>,
    cpu_secs: Option<f64>,
    check: Check,
    /// Chunks the proxy forwarded client→server during the pass, and the messages the pass
    /// had to deliver (only with `--delay-ms`).
    client_chunks: Option<(u64, usize)>,
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
    /// Megabytes (10^6 bytes, as stored upstream) of the messages that reached their
    /// recipient, per second of wall time.
    fn mb_rate(&self) -> f64 {
        self.check.bytes as f64 / 1e6 / self.wall.as_secs_f64()
    }
}

/// The correctness of one pass: what the internal server received and what was left upstream.
#[derive(Debug, Default)]
struct Check {
    transactions: usize,
    /// Messages that reached their recipient (once or more).
    delivered: usize,
    /// Their size, as stored upstream.
    bytes: usize,
    /// Messages never delivered and gone from the mailbox.
    lost: usize,
    /// Messages never delivered but still upstream (a later pass could deliver them).
    undelivered: usize,
    /// Messages delivered more than once.
    duplicated: usize,
    /// Deliveries to an address that was not the message's recipient, or of unknown messages.
    misrouted: usize,
    /// Deliveries of messages handled before this pass (`--kept`).
    redelivered: usize,
    /// Deliveries whose body differs from the original.
    altered: usize,
    /// Messages expected to stay upstream (`retention: keep`).
    kept: usize,
    /// How many mailboxes the pass collected from.
    mailboxes: usize,
    /// Messages still in the mailboxes afterwards beyond those kept.
    left_upstream: usize,
    /// Messages gone from the mailboxes that should have been kept.
    deleted_kept: usize,
}

impl Check {
    fn is_perfect(&self) -> bool {
        self.lost == 0
            && self.undelivered == 0
            && self.duplicated == 0
            && self.misrouted == 0
            && self.redelivered == 0
            && self.altered == 0
            && self.left_upstream == 0
            && self.deleted_kept == 0
    }

    fn summary(&self) -> String {
        if self.is_perfect() {
            let upstream = match (self.kept, self.mailboxes) {
                (0, 0 | 1) => "mailbox empty".to_owned(),
                (0, m) => format!("all {m} mailboxes empty"),
                (n, _) => format!("{n} kept upstream"),
            };
            return format!("ok ({} delivered once, {upstream})", self.delivered);
        }
        let mut parts = Vec::new();
        for (n, what) in [
            (self.lost, "LOST"),
            (self.undelivered, "NOT DELIVERED (still upstream)"),
            (self.duplicated, "DUPLICATED"),
            (self.misrouted, "MISROUTED"),
            (self.redelivered, "DELIVERED AGAIN (handled before)"),
            (self.altered, "ALTERED"),
            (self.left_upstream, "LEFT UPSTREAM"),
            (self.deleted_kept, "DELETED THOUGH KEPT"),
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
    let timeout = options.timeout.unwrap_or_else(|| default_timeout(&options));
    let results = match options.scenario {
        Scenario::Kept(k) => run_kept(k, &options, timeout),
        _ => run_tools(&options, timeout),
    };
    if results.iter().all(RunResult::ok) {
        ExitCode::SUCCESS
    } else {
        println!("\nbench: at least one pass failed or lost/duplicated mail (see above)");
        ExitCode::FAILURE
    }
}

/// Time allowed for one pass: a minute plus what a slow tool needs for the scenario.
fn default_timeout(options: &Options) -> Duration {
    let per_message = Duration::from_millis(100 + 20 * options.delay_ms);
    let n = options.messages as u32;
    Duration::from_secs(60)
        + match options.scenario {
            Scenario::Catchall => per_message * n,
            // And a login per mailbox.
            Scenario::Accounts(a) => (per_message * n + Duration::from_secs(1)) * a as u32,
            Scenario::Large(mb) => per_message * n + Duration::from_secs(2) * mb as u32,
            // Pass 1 reads the whole kept mailbox once (the server indexes it).
            Scenario::Kept(k) => per_message * n + Duration::from_millis(10) * k as u32,
        }
}

/// The transport line of the header: loopback or the delay proxy.
fn transport(options: &Options) -> String {
    if options.delay_ms > 0 {
        format!(
            "POP3 through a proxy delaying each chunk {} ms (round trip {} ms)",
            options.delay_ms,
            2 * options.delay_ms
        )
    } else {
        "POP3 and SMTP on loopback, no added delay".to_owned()
    }
}

fn print_header(options: &Options, corpus: &Corpus, timeout: Duration) {
    let n = options.messages;
    match options.scenario {
        Scenario::Catchall => println!(
            "bench: scenario catch-all: one mailbox of {n} messages; one pass of each tool timed"
        ),
        Scenario::Accounts(a) => println!(
            "bench: scenario --accounts {a}: {a} mailboxes of {n} messages each; mailferry: one \
             poll-once with {a} accounts (max_concurrent_accounts at its default); fetchmail: one \
             rc file, one poll entry with {a} users"
        ),
        Scenario::Large(mb) => println!(
            "bench: scenario --size-mb {mb}: one message of {} bytes and {n} ordinary ones in one \
             mailbox; mailferry's max_message_size {}MB",
            corpus.mails.first().map_or(0, Vec::len),
            max_message_mb(mb)
        ),
        Scenario::Kept(k) => println!(
            "bench: scenario --kept {k}: mailferry only, retention: keep; pass 1 takes {k} \
             messages upstream as handled (initial: skip_existing); {n} new ones are added; \
             pass 2 delivers them; pass 3 finds nothing new. Each pass timed, then a bare POP3 \
             session listing the mailbox"
        ),
    }
    let bytes = corpus.bytes();
    println!(
        "bench: {} messages ({:.1} MB, {:.1} KB average) for {RECIPIENTS} recipients in {} \
         mailbox(es); {} run(s) per tool; {}",
        corpus.mails.len(),
        bytes as f64 / 1e6,
        bytes as f64 / corpus.mails.len().max(1) as f64 / 1e3,
        corpus.users.len(),
        options.runs,
        transport(options)
    );
    println!("bench: upstream POP3 server: {:?}", options.server);
    println!(
        "bench: each pass may take {timeout:?}; peak RSS and CPU from {}\n",
        if Path::new(GNU_TIME).exists() {
            "/usr/bin/time -v"
        } else {
            "sampling /proc/PID/status VmHWM"
        }
    );
}

/// The catch-all, `--accounts` and `--size-mb` scenarios: each tool on the same corpus, run
/// after run; the table; the strace passes.
fn run_tools(options: &Options, timeout: Duration) -> Vec<RunResult> {
    let n = options.messages;
    let corpus = match options.scenario {
        Scenario::Accounts(a) => Corpus {
            users: (0..a).map(account_user).collect(),
            first: 0,
            mails: (0..a)
                .flat_map(|b| build_mails(b * n..(b + 1) * n, &account_user(b)))
                .collect(),
            kept: 0,
        },
        Scenario::Large(mb) => {
            let mut mails = vec![large_message(0, mb * 1_000_000)];
            mails.extend(build_mails(1..n + 1, CATCHALL));
            Corpus::catchall(0, mails)
        }
        Scenario::Catchall | Scenario::Kept(_) => Corpus::catchall(0, build_mails(0..n, CATCHALL)),
    };
    print_header(options, &corpus, timeout);

    let mut results: Vec<RunResult> = Vec::new();
    // Alternate the tools run by run, so a slow phase of the machine hits both.
    for run in 1..=options.runs {
        for &tool in &options.tools {
            let r = measure(tool, &corpus, options, timeout, Watch::Timed);
            print_run(&format!("run {run}/{}", options.runs), 9, &r);
            results.push(r);
        }
    }
    let title = match options.scenario {
        Scenario::Accounts(a) => format!("{} messages in {a} mailboxes", corpus.mails.len()),
        Scenario::Large(mb) => format!("one {mb} MB message and {n} others"),
        Scenario::Catchall | Scenario::Kept(_) => format!("{n} messages"),
    };
    print_table(&results, &title, options);
    if options.strace {
        for &tool in &options.tools {
            let r = measure(tool, &corpus, options, timeout * 3, Watch::Strace);
            println!(
                "\n{} under strace -f -c -w (untimed; {}): system calls by wall time, all threads",
                tool.name(),
                r.check.summary()
            );
            print_strace(r.strace.as_deref().unwrap_or(""), corpus.mails.len());
        }
    }
    results
}

/// `--kept K`: per run, a fresh Dovecot with K messages; pass 1 takes them as handled, N new
/// ones are added, pass 2 delivers them, pass 3 finds nothing new; all three timed.
fn run_kept(k: usize, options: &Options, timeout: Duration) -> Vec<RunResult> {
    let n = options.messages;
    let new = Corpus {
        kept: k + n,
        ..Corpus::catchall(k, build_mails(k..k + n, CATCHALL))
    };
    print_header(options, &new, timeout);
    let labels = [
        format!("pass 1: {k} upstream, skip_existing"),
        format!("pass 2: {} upstream, {n} new", k + n),
        format!("pass 3: {} upstream, 0 new", k + n),
    ];
    let width = labels.iter().map(String::len).max().unwrap_or(0);
    let mut results: Vec<RunResult> = Vec::new();
    let mut bare: Vec<f64> = Vec::new();
    for run in 1..=options.runs {
        let stage = Stage::start(options, &new.users, Tool::Mailferry);
        let started = Instant::now();
        for from in (0..k).step_by(SEED_CHUNK) {
            stage.upstream.deliver_all(
                CATCHALL,
                &build_mails(from..k.min(from + SEED_CHUNK), CATCHALL),
            );
        }
        println!(
            "run {run}/{}: {k} messages put into the mailbox in {:.1} s (untimed)",
            options.runs,
            started.elapsed().as_secs_f64()
        );
        let seen = Corpus {
            kept: k,
            ..Corpus::catchall(k, Vec::new())
        };
        let none_new = Corpus {
            kept: k + n,
            ..Corpus::catchall(k + n, Vec::new())
        };
        for (pass, corpus) in [&seen, &new, &none_new].into_iter().enumerate() {
            if pass == 1 {
                for (user, mails) in new.boxes() {
                    stage.upstream.deliver_all(user, mails);
                }
            }
            // Same configuration, same state directory each pass.
            let command = stage.prepare(Tool::Mailferry, options, &new);
            let r = stage.run(&labels[pass], command, corpus, timeout, Watch::Timed);
            print_run(&format!("run {run}/{}", options.runs), width, &r);
            results.push(r);
        }
        match bare_listing(stage.pop3_port(), CATCHALL, timeout) {
            Ok((wall, listed)) => {
                println!(
                    "run {run}/{} {:<width$} {:>8.2} s  (login, UIDL, LIST of {listed}, QUIT: \
                     the server's and the wire's part of any pass)",
                    options.runs,
                    "bare POP3 session",
                    wall.as_secs_f64()
                );
                bare.push(wall.as_secs_f64());
            }
            Err(e) => println!("run {run}/{}: bare POP3 session failed: {e}", options.runs),
        }
    }
    print_table(
        &results,
        &format!("{k} messages kept upstream, {n} new"),
        options,
    );
    if let Some(wall) = median(&mut bare) {
        println!(
            "\n  a bare POP3 session listing the {} messages (login, UIDL, LIST, QUIT) took {wall:.2} s (median)",
            k + n
        );
    }
    results
}

/// One POP3 session on 127.0.0.1:`port` that logs in as `user`, lists the mailbox (UIDL,
/// then LIST) and quits, timed; and how many messages UIDL gave.
fn bare_listing(port: u16, user: &str, timeout: Duration) -> Result<(Duration, usize), String> {
    let started = Instant::now();
    let stream = TcpStream::connect((Ipv4Addr::LOCALHOST, port)).map_err(|e| e.to_string())?;
    stream
        .set_read_timeout(Some(timeout))
        .map_err(|e| e.to_string())?;
    let mut writer = stream.try_clone().map_err(|e| e.to_string())?;
    let mut reader = BufReader::new(stream);
    // Sends `command` (none: the greeting), reads the status line and, if `multi`, the lines
    // up to the final "."; returns how many there were.
    let mut ask = |command: Option<&str>, multi: bool| -> Result<usize, String> {
        if let Some(c) = command {
            writer
                .write_all(format!("{c}\r\n").as_bytes())
                .map_err(|e| e.to_string())?;
        }
        let mut line = Vec::new();
        let mut read = |line: &mut Vec<u8>| {
            line.clear();
            match reader.read_until(b'\n', line) {
                Ok(0) => Err("connection closed".to_owned()),
                Ok(_) => Ok(()),
                Err(e) => Err(e.to_string()),
            }
        };
        read(&mut line)?;
        if !line.starts_with(b"+OK") {
            return Err(format!(
                "{}: {}",
                command.unwrap_or("greeting"),
                String::from_utf8_lossy(&line).trim_end()
            ));
        }
        let mut lines = 0;
        if multi {
            loop {
                read(&mut line)?;
                if line == b".\r\n" {
                    break;
                }
                lines += 1;
            }
        }
        Ok(lines)
    };
    ask(None, false)?;
    ask(Some(&format!("USER {user}")), false)?;
    ask(Some(&format!("PASS {PASSWORD}")), false)?;
    let listed = ask(Some("UIDL"), true)?;
    ask(Some("LIST"), true)?;
    ask(Some("QUIT"), false)?;
    Ok((started.elapsed(), listed))
}

/// One line per pass, its label padded to `width`.
fn print_run(prefix: &str, width: usize, r: &RunResult) {
    println!(
        "{prefix} {:<width$} {:>8.2} s {:>8.1} msg/s {:>7.2} MB/s  rss {:>7}  cpu {:>7}  {}{}  {}",
        r.label,
        r.wall.as_secs_f64(),
        r.rate(),
        r.mb_rate(),
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
        match r.client_chunks {
            None => String::new(),
            Some((c, 0)) => format!("  {c} client->server chunks"),
            Some((c, n)) => format!("  {:.1} client->server chunks/msg", c as f64 / n as f64),
        },
        r.check.summary()
    );
}

fn parse_args(mut args: impl Iterator<Item = String>) -> Result<Options, String> {
    let mut o = Options {
        messages: 0,
        scenario: Scenario::Catchall,
        runs: 3,
        delay_ms: 0,
        tools: vec![Tool::Mailferry, Tool::Fetchmail],
        timeout: None,
        strace: false,
        server: Server::Dovecot,
    };
    let mut messages = None;
    while let Some(arg) = args.next() {
        let mut value = |name: &str| args.next().ok_or(format!("{name} needs a value"));
        let scenario = |s: Scenario| match o.scenario {
            Scenario::Catchall => Ok(s),
            _ => Err("only one of --accounts, --size-mb, --kept".to_owned()),
        };
        match arg.as_str() {
            "--messages" => messages = Some(number(&value("--messages")?, 1, 1_000_000)? as usize),
            "--accounts" => {
                o.scenario = scenario(Scenario::Accounts(
                    number(&value("--accounts")?, 1, 10_000)? as usize,
                ))?
            }
            "--size-mb" => {
                o.scenario = scenario(Scenario::Large(
                    number(&value("--size-mb")?, 1, 900)? as usize
                ))?
            }
            "--kept" => {
                o.scenario = scenario(Scenario::Kept(
                    number(&value("--kept")?, 0, 1_000_000)? as usize
                ))?
            }
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
    o.messages = messages.unwrap_or(o.scenario.default_messages());
    if let Scenario::Kept(_) = o.scenario {
        if o.strace {
            return Err("--strace does not go with --kept".to_owned());
        }
        if o.tools.contains(&Tool::Fetchmail) {
            println!("bench: --kept measures mailferry only (fetchmail left out)");
        }
        o.tools = vec![Tool::Mailferry];
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

/// The `i` of a [`message_id`], if it is one.
fn message_index(id: &str) -> Option<usize> {
    let i = id
        .strip_prefix("<bench-")?
        .split('.')
        .next()?
        .parse()
        .ok()?;
    (message_id(i) == id).then_some(i)
}

/// The user of mailbox `a` in `--accounts`.
fn account_user(a: usize) -> String {
    format!("box{a}@{DOMAIN}")
}

/// mailferry's `max_message_size` in MB for `--size-mb S`: above the message as LIST gives
/// it (CRLF line ends add 1/76).
fn max_message_mb(size_mb: usize) -> usize {
    size_mb + size_mb / 10 + 1
}

/// Messages `range` as the provider's catch-all mailbox `mailbox` holds them: `X-Original-To`
/// (and `Delivered-To` naming the mailbox) above the provider's `Received:`, then an ordinary
/// message of about 7 KB with plain-text lines, one of them starting with a dot.
fn build_mails(range: Range<usize>, mailbox: &str) -> Vec<Vec<u8>> {
    const WORDS: [&str; 16] = [
        "invoice", "delivery", "meeting", "quarter", "figures", "project", "schedule", "review",
        "customer", "contract", "update", "draft", "report", "budget", "office", "team",
    ];
    range
        .map(|i| {
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
            bench_message(i, mailbox, &body)
        })
        .collect()
}

/// Message `i` with a plain-text body of at least `bytes` bytes: numbered lines of 75
/// characters and LF, every 1000th with a dot in front.
fn large_message(i: usize, bytes: usize) -> Vec<u8> {
    const TEXT: &str = "the quick brown fox jumps over the lazy dog while the mail ferry waits ";
    let mut body = String::with_capacity(bytes + 80);
    let mut line_no = 0usize;
    while body.len() < bytes {
        let dot = if line_no % 1000 == 999 { "." } else { "" };
        let start = line_no % 5;
        let _ = writeln!(body, "{dot}{line_no:08} {}", &TEXT[start..start + 66]);
        line_no += 1;
    }
    bench_message(i, CATCHALL, &body)
}

/// Message `i` in `mailbox`: its header (its recipient in `X-Original-To` above the
/// provider's `Received:`, the mailbox in `Delivered-To`) and `body`.
fn bench_message(i: usize, mailbox: &str, body: &str) -> Vec<u8> {
    let rcpt = recipient(i);
    let received = format!(
        "from smtp{}.sender.example.org (smtp.sender.example.org [203.0.113.{}])\n\
         \tby mx1.provider.net (Postfix) with ESMTPS id 4Xb{i:08}\n\
         \tfor <{mailbox}>; Tue, 11 Nov 2025 14:02:11 +0100 (CET)",
        i % 7,
        i % 250 + 1
    );
    message(
        &[
            (
                "Return-Path",
                &format!("<sender{}@sender.example.org>", i % 13),
            ),
            ("X-Original-To", &rcpt),
            ("Delivered-To", mailbox),
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
        body,
    )
}

/// The servers of a pass (or of the passes of one `--kept` run): a fresh Dovecot (or Courier)
/// with the mailboxes, a fresh smtp-sink, the delay proxy if asked for, a work directory.
struct Stage {
    upstream: Upstream,
    sink: SmtpSink,
    proxy: Option<DelayProxy>,
    work: PathBuf,
    tool: Tool,
}

impl Stage {
    fn start(options: &Options, users: &[String], tool: Tool) -> Stage {
        let upstream = Upstream::start(options.server, users);
        let sink = SmtpSink::start(&[]);
        let proxy = (options.delay_ms > 0).then(|| {
            DelayProxy::start(
                upstream.pop3_port(),
                Duration::from_millis(options.delay_ms),
            )
        });
        let work = upstream.root().join(format!("bench-{}", tool.name()));
        if let Err(e) = fs::create_dir(&work) {
            eprintln!("bench: create {}: {e}", work.display());
            std::process::exit(1);
        }
        Stage {
            upstream,
            sink,
            proxy,
            work,
            tool,
        }
    }

    /// The POP3 port clients connect to: the proxy's, if there is one.
    fn pop3_port(&self) -> u16 {
        self.proxy
            .as_ref()
            .map_or(self.upstream.pop3_port(), |p| p.port)
    }

    /// The tool's command line for this stage's servers and `corpus`'s mailboxes.
    fn prepare(&self, tool: Tool, options: &Options, corpus: &Corpus) -> Command {
        let pop3_port = self.pop3_port();
        let smtp_port = self.sink.port();
        let prepared = match tool {
            Tool::Mailferry => mailferry_command(&self.work, pop3_port, smtp_port, options, corpus),
            Tool::Fetchmail => fetchmail_command(&self.work, pop3_port, smtp_port, &corpus.users),
        };
        prepared.unwrap_or_else(|e| {
            eprintln!("bench: cannot prepare {}: {e}", tool.name());
            std::process::exit(1);
        })
    }

    /// Runs `command` once, watched, and checks what it did against `corpus`: the messages it
    /// must have delivered (and nothing delivered before it ran), `corpus.kept` left upstream.
    fn run(
        &self,
        label: &str,
        command: Command,
        corpus: &Corpus,
        timeout: Duration,
        watch: Watch,
    ) -> RunResult {
        let chunks = || {
            self.proxy
                .as_ref()
                .map(|p| p.client_chunks.load(Ordering::Relaxed))
        };
        let (before, chunks_before) = (self.sink.transactions().len(), chunks());
        let measured = run_measured(command, &self.work, timeout, watch);
        // BENCH_LOG_DIR=DIR keeps each run's stderr (with MAILFERRY_LOG=debug: a timeline).
        if let Ok(dir) = std::env::var("BENCH_LOG_DIR") {
            let kept = Path::new(&dir).join(format!(
                "{}-{}-{}.stderr",
                self.tool.name(),
                std::process::id(),
                before
            ));
            let _ =
                fs::create_dir_all(&dir).and_then(|()| fs::copy(self.work.join("stderr"), &kept));
        }
        // smtp-sink writes each transaction before its 250; give it a moment anyway. What
        // arrived is checked below.
        let _ = self
            .sink
            .wait_for(before + corpus.mails.len(), Duration::from_secs(3));
        wait_until(Duration::from_secs(3), || {
            self.upstream.count() == corpus.kept
        });
        let check = check(&self.sink, before, &self.upstream, corpus);
        let result = RunResult {
            label: label.to_owned(),
            wall: measured.wall,
            status: measured.status,
            peak_rss_kb: measured.peak_rss_kb,
            cpu_secs: measured.cpu_secs,
            check,
            client_chunks: chunks()
                .zip(chunks_before)
                .map(|(c, b)| (c - b, corpus.mails.len())),
            strace: (watch == Watch::Strace)
                .then(|| fs::read_to_string(self.work.join("strace.txt")).unwrap_or_default()),
        };
        if !result.ok() {
            for name in ["stdout", "stderr"] {
                let text = fs::read_to_string(self.work.join(name)).unwrap_or_default();
                let lines: Vec<&str> = text.lines().collect();
                let tail = &lines[lines.len().saturating_sub(15)..];
                eprintln!("--- {label} {name} (last lines)\n{}", tail.join("\n"));
            }
        }
        result
    }
}

/// One pass of `tool`: fresh servers, the mailboxes seeded, the tool timed, the result checked.
fn measure(
    tool: Tool,
    corpus: &Corpus,
    options: &Options,
    timeout: Duration,
    watch: Watch,
) -> RunResult {
    let stage = Stage::start(options, &corpus.users, tool);
    for (user, mails) in corpus.boxes() {
        stage.upstream.deliver_all(user, mails);
    }
    let command = stage.prepare(tool, options, corpus);
    stage.run(tool.name(), command, corpus, timeout, watch)
}

/// The command line of a mailferry pass: `poll-once` with one account per mailbox of
/// `corpus`, its state directory in `work` (fresh, unless an earlier pass left it).
fn mailferry_command(
    work: &Path,
    pop3_port: u16,
    smtp_port: u16,
    options: &Options,
    corpus: &Corpus,
) -> Result<Command, String> {
    let password_file = work.join("bench.password");
    write_private(&password_file, PASSWORD)?;
    let mut config = GatewayConfig::new(work.join("state"), smtp_port)
        .domains(&[DOMAIN])
        .postmaster(POSTMASTER);
    if let Scenario::Large(mb) = options.scenario {
        config = config.extra_line(&format!("max_message_size: {}MB", max_message_mb(mb)));
    }
    let retention: &[&str] = match options.scenario {
        Scenario::Kept(_) => &["retention: keep", "initial: skip_existing"],
        _ => &["retention: delete"],
    };
    for (index, user) in corpus.users.iter().enumerate() {
        let mut extra_lines = vec![
            "mode: catch-all".to_owned(),
            format!("max_per_pass: {}", corpus.per_box()),
        ];
        extra_lines.extend(retention.iter().map(|l| l.to_string()));
        config = config.account(AccountYaml {
            name: if corpus.users.len() == 1 {
                "bench-catchall".into()
            } else {
                format!("bench-box{index}")
            },
            host: "127.0.0.1".into(),
            port: pop3_port,
            username: user.clone(),
            password: Secret::File(password_file.clone()),
            extra_lines,
            ..AccountYaml::default()
        });
    }
    let config_file = work.join(CONFIG_FILE);
    write_private(&config_file, &config.yaml())?;
    let mut cmd = support::mailferry_command(&["poll-once", "--config"]);
    cmd.arg(&config_file);
    Ok(cmd)
}

/// The command line of a fetchmail pass: multidrop on `X-Original-To`, one `user` entry per
/// mailbox under one `poll` entry, one pass in the foreground, its state (UIDs, pid file) in
/// `work`. It deletes what it delivered (no `keep`).
fn fetchmail_command(
    work: &Path,
    pop3_port: u16,
    smtp_port: u16,
    users: &[String],
) -> Result<Command, String> {
    let home = work.join("fetchmail-home");
    fs::create_dir(&home).map_err(|e| format!("create {}: {e}", home.display()))?;
    fs::set_permissions(&home, fs::Permissions::from_mode(0o700))
        .map_err(|e| format!("chmod {}: {e}", home.display()))?;
    let mut rc = format!(
        "set postmaster \"{POSTMASTER}\"
set no bouncemail
poll 127.0.0.1 service {pop3_port} protocol pop3 no dns
    envelope \"X-Original-To\"
    localdomains {DOMAIN}
"
    );
    for user in users {
        let _ = write!(
            rc,
            "  user \"{user}\" there with password \"{PASSWORD}\" to * here
    sslproto ''
    smtphost 127.0.0.1/{smtp_port}
    smtpaddress {DOMAIN}
"
        );
    }
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

/// What a pass did: the transactions smtp-sink accepted after the first `before` must deliver
/// each message of `corpus` exactly once to its recipient, unchanged, and nothing else; the
/// mailboxes must hold `corpus.kept` messages afterwards.
fn check(sink: &SmtpSink, before: usize, upstream: &Upstream, corpus: &Corpus) -> Check {
    let mails = &corpus.mails;
    let first = corpus.first;
    let transactions = sink.transactions();
    let transactions = transactions.get(before..).unwrap_or_default();
    let mut counts = vec![0usize; mails.len()];
    let left = upstream.count();
    let mut c = Check {
        transactions: transactions.len(),
        kept: corpus.kept,
        mailboxes: corpus.users.len(),
        left_upstream: left.saturating_sub(corpus.kept),
        deleted_kept: corpus.kept.saturating_sub(left),
        ..Check::default()
    };
    for t in transactions {
        let index = t.header("Message-ID").and_then(|id| message_index(&id));
        let j = match index {
            Some(i) if (first..first + mails.len()).contains(&i) => i - first,
            Some(i) if i < first => {
                c.redelivered += 1;
                continue;
            }
            _ => {
                c.misrouted += t.rcpts.len().max(1);
                continue;
            }
        };
        let want = recipient(first + j);
        for r in &t.rcpts {
            if r.eq_ignore_ascii_case(&want) {
                counts[j] += 1;
            } else {
                c.misrouted += 1;
            }
        }
        let original = as_sink_stores(&mails[j]);
        let body_at = original
            .windows(2)
            .position(|w| w == b"\n\n")
            .map_or(original.len(), |p| p + 2);
        if t.body() != &original[body_at..] {
            c.altered += 1;
        }
    }
    // Read back (all of the mailboxes) only when something was not delivered.
    let mut still_upstream: Option<HashSet<usize>> = None;
    for (j, n) in counts.into_iter().enumerate() {
        match n {
            0 => {
                let found = still_upstream.get_or_insert_with(|| upstream.message_indices());
                if found.contains(&(first + j)) {
                    c.undelivered += 1;
                } else {
                    c.lost += 1;
                }
            }
            _ => {
                c.delivered += 1;
                c.bytes += mails[j].len();
                c.duplicated += usize::from(n > 1);
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

/// Medians per row label (a tool, or a pass of `--kept`), in the order the rows first ran;
/// the throughput ratio when both tools ran.
fn print_table(results: &[RunResult], title: &str, options: &Options) {
    println!(
        "\n{title}, {} run(s), {}:\n",
        options.runs,
        if options.delay_ms > 0 {
            format!("POP3 round trip +{} ms", 2 * options.delay_ms)
        } else {
            "loopback".to_owned()
        }
    );
    let mut labels: Vec<&str> = Vec::new();
    for r in results {
        if !labels.contains(&r.label.as_str()) {
            labels.push(&r.label);
        }
    }
    let width = labels.iter().map(|l| l.len()).max().unwrap_or(0).max(10);
    println!(
        "  {:<width$} {:>12} {:>12} {:>11} {:>14} {:>12}  correctness",
        "tool", "wall s (med)", "msg/s (med)", "MB/s (med)", "peak RSS MiB", "CPU s (med)"
    );
    let mut rates: BTreeMap<&str, f64> = BTreeMap::new();
    for label in labels {
        let mine: Vec<&RunResult> = results.iter().filter(|r| r.label == label).collect();
        let med = |f: &dyn Fn(&RunResult) -> Option<f64>| {
            median(&mut mine.iter().filter_map(|r| f(r)).collect::<Vec<f64>>())
        };
        let wall = med(&|r| Some(r.wall.as_secs_f64()));
        let rate = med(&|r| Some(r.rate()));
        let mb_rate = med(&|r| Some(r.mb_rate()));
        let rss = med(&|r| r.peak_rss_kb.map(|kb| kb as f64 / 1024.0));
        let cpu = med(&|r| r.cpu_secs);
        let good = mine.iter().filter(|r| r.ok()).count();
        if let Some(rate) = rate {
            rates.insert(label, rate);
        }
        let show =
            |v: Option<f64>, digits: usize| v.map_or("?".to_owned(), |v| format!("{v:.digits$}"));
        println!(
            "  {:<width$} {:>12} {:>12} {:>11} {:>14} {:>12}  {}",
            label,
            show(wall, 2),
            show(rate, 1),
            show(mb_rate, 2),
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
