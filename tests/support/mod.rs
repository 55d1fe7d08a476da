//! The test harness: real servers on loopback, the mailferry binary, and sample mail.
//!
//! Every integration test includes it with `mod support;`; the demo includes it with
//! `#[path = "../tests/support/mod.rs"] mod support;`. So it uses only the standard library,
//! the crate's own dependencies and the dev-dependencies: `tempfile`, and the crate itself
//! with its `testkit` (the SMTP/POP3 fakes and test certificates of `src/testkit/`, shared
//! with the unit tests). Examples may use dev-dependencies too.
//!
//! - [`Dovecot`]: a private Dovecot (POP3, POP3S, IMAP, IMAPS) with Maildir users.
//! - [`Courier`]: private Courier POP3 and IMAP servers (plain text) with Maildir users.
//! - [`Cyrus`]: a private Cyrus IMAP and POP3 server (plain text), `.` or `/` as separator.
//! - [`SmtpSink`]: Postfix's `smtp-sink` recording every transaction it accepts.
//! - [`Postfix`]: a private Postfix as the internal server, with an inside and an outside sink.
//! - [`Postgres`]: a private PostgreSQL server with a password-authenticated role, for
//!   `state: {postgres: ...}`.
//! - [`free_port`], [`mailferry_bin`], [`run_mailferry`], [`Mailferry`] (a running daemon).
//! - [`RealProxy`]: microsocks (SOCKS5) or tinyproxy (HTTP CONNECT), with or without a password.
//! - [`FaultProxy`]: a TCP proxy to an upstream that drops, stalls, trickles, resets or delays.
//! - [`TokenService`]: an OAuth2 token service (token, device code, introspection) for
//!   Dovecot's `oauth2` passdb and mailferry's `oauth:` accounts.
//! - [`Tally`]: expected (recipient, Message-ID) deliveries against what arrived.
//! - [`GatewayConfig`]: a configuration "POP3 accounts → the SMTP receiver", written as YAML;
//!   its state on PostgreSQL instead of SQLite under `MAILFERRY_TEST_STATE=postgres`
//!   ([`STATE_VAR`], [`skip_under_postgres`]).
//! - [`sample_catchall_mail`] and [`message`]: realistic mail for a catch-all mailbox.
//!
//! The servers need root (Dovecot switches to the mail user, smtp-sink to `-u`) and the
//! system user `mailferry-test`: `scripts/install-deps.sh` creates it. Every test that starts
//! one begins with `if support::skip_e2e() { return; }` ([`skip_e2e`]): skipped with one
//! message where they cannot run, compulsory under `scripts/test.sh` (`MAILFERRY_E2E=1`).

// Each test binary uses a different part of the harness.
#![allow(dead_code, unused_imports)]

mod config;
mod courier;
mod cyrus;
mod dovecot;
mod e2e;
mod fault_proxy;
mod mail;
mod maildir;
mod postfix;
mod postgres;
mod proxy;
mod smtp_sink;
mod state;
mod tally;
mod token_service;
mod upstream;

pub use config::{AccountYaml, CONFIG_FILE, GatewayConfig, Secret, write_private};
pub use courier::Courier;
pub use cyrus::{CYRUS_ROOT, Cyrus, CyrusSeparator};
pub use dovecot::{Dovecot, DovecotTls};
pub use e2e::{E2E_VAR, skip_e2e};
pub use fault_proxy::{Fault, FaultProxy};
pub use mail::{
    SAMPLE_CATCHALL_USER, SAMPLE_DOMAIN, SAMPLE_POSTMASTER, mail_to, message, numbered_message,
    numbered_pairs, sample_catchall_expected, sample_catchall_mail,
};
pub use postfix::Postfix;
pub use postgres::{PG_PASSWORD, PG_USER, Postgres, postgres_bin_dir};
pub use proxy::{ProxyServer, RealProxy};
pub use smtp_sink::{SmtpSink, Transaction, as_sink_stores, parse_dump};
pub use state::{STATE_VAR, skip_under_postgres, state_is_postgres};
pub use tally::{Pair, Tally, delivery_counts, message_id, sample_catchall_pairs};
pub use token_service::{CLIENT_ID, CLIENT_SECRET, TokenPolicy, TokenService};
pub use upstream::{
    Upstream, catchall_retention_delete, catchall_retention_delete_with, pop3_retention_keep,
    upstream_config, upstream_pass,
};

use std::io::Read;
use std::net::{Ipv4Addr, TcpListener};
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::thread;
use std::time::{Duration, Instant};

/// The unprivileged system user the test servers store mail as and run smtp-sink as.
pub const MAIL_USER: &str = "mailferry-test";

/// Time `run_mailferry` allows one command before it kills it.
pub const RUN_TIMEOUT: Duration = Duration::from_secs(60);

/// A TCP port on 127.0.0.1 that was free a moment ago (the kernel picks it).
///
/// Another process may take it before it is used: the servers below retry with a new port
/// when theirs turns out to be taken.
pub fn free_port() -> u16 {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind 127.0.0.1:0");
    listener
        .local_addr()
        .expect("local_addr of a bound socket")
        .port()
}

/// `n` distinct free ports.
pub fn free_ports(n: usize) -> Vec<u16> {
    // Hold every listener until all are picked, so the kernel cannot hand out one twice.
    let listeners: Vec<TcpListener> = (0..n)
        .map(|_| TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind 127.0.0.1:0"))
        .collect();
    listeners
        .iter()
        .map(|l| l.local_addr().expect("local_addr of a bound socket").port())
        .collect()
}

/// Calls `f` every 50 ms until it returns true or `timeout` has passed; returns its last answer.
pub fn wait_until(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if f() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        thread::sleep(Duration::from_millis(50));
    }
}

/// Whether a POP3 or IMAP server on 127.0.0.1:`port` greets with a line containing
/// `greeting` (the session is ended with both protocols' goodbye).
pub fn greets(port: u16, greeting: &str) -> bool {
    use std::io::{BufRead, BufReader, Write};
    let Ok(stream) = std::net::TcpStream::connect((Ipv4Addr::LOCALHOST, port)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    let _ = reader.read_line(&mut line);
    let _ = reader.get_mut().write_all(b"QUIT\r\na LOGOUT\r\n");
    line.contains(greeting)
}

/// GET `path` on the metrics listener: (status line, body).
pub fn http_get(port: u16, path: &str) -> Option<(String, String)> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    let status = text.lines().next()?.to_owned();
    let body = text.split("\r\n\r\n").nth(1).unwrap_or_default().to_owned();
    Some((status, body))
}

/// The path of the `mailferry` binary.
///
/// In an integration test cargo names it (`CARGO_BIN_EXE_mailferry`); elsewhere (the demo)
/// it is the binary of the same profile: the running executable lives in
/// `target/<profile>/deps/` (tests) or `target/<profile>/examples/` (examples), and the
/// binary in `target/<profile>/`.
pub fn mailferry_bin() -> PathBuf {
    if let Some(path) = option_env!("CARGO_BIN_EXE_mailferry") {
        return PathBuf::from(path);
    }
    let exe = std::env::current_exe().expect("path of the running executable");
    let profile_dir = exe
        .parent()
        .and_then(|p| p.parent())
        .expect("the executable is in target/<profile>/<dir>/");
    profile_dir.join("mailferry")
}

/// Runs `mailferry ARGS...` to completion and returns its output; kills it and panics
/// (showing what it printed) if it takes longer than [`RUN_TIMEOUT`].
pub fn run_mailferry(args: &[&str]) -> Output {
    run_mailferry_timeout(args, RUN_TIMEOUT)
}

/// [`run_mailferry`] with a timeout of your choice.
pub fn run_mailferry_timeout(args: &[&str], timeout: Duration) -> Output {
    let (mut child, stdout, stderr) = start_piped(args);
    let status = wait_with_timeout(&mut child, timeout);
    let stdout = stdout.join().expect("stdout reader thread");
    let stderr = stderr.join().expect("stderr reader thread");
    match status {
        Some(status) => Output {
            status,
            stdout,
            stderr,
        },
        None => panic!(
            "mailferry {args:?} did not finish within {timeout:?}\n--- stdout\n{}\n--- stderr\n{}",
            String::from_utf8_lossy(&stdout),
            String::from_utf8_lossy(&stderr)
        ),
    }
}

/// `mailferry ARGS...` without colours, not started yet (stdio as the caller wants it).
pub fn mailferry_command(args: &[&str]) -> Command {
    let mut cmd = Command::new(mailferry_bin());
    cmd.args(args).env("NO_COLOR", "1");
    cmd
}

/// Starts `mailferry ARGS...` with no stdin, and its stdout and stderr drained by the two
/// readers; panics if it cannot start.
fn start_piped(args: &[&str]) -> (Child, Reader, Reader) {
    let mut child = mailferry_command(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", mailferry_bin().display()));
    let (stdout, stderr) = collect_output(&mut child);
    (child, stdout, stderr)
}

/// `mailferry poll-once --config CONFIG`, its output echoed to stderr (shown when a test fails).
pub fn poll_once(config: &str) -> Output {
    let out = run_mailferry(&["poll-once", "--config", config]);
    eprintln!(
        "poll-once: {}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

type Reader = thread::JoinHandle<Vec<u8>>;

/// Drains the child's piped stdout and stderr on two threads (so a full pipe cannot block it).
fn collect_output(child: &mut Child) -> (Reader, Reader) {
    fn drain(pipe: Option<impl Read + Send + 'static>) -> Reader {
        thread::spawn(move || {
            let mut buf = Vec::new();
            if let Some(mut pipe) = pipe {
                let _ = pipe.read_to_end(&mut buf);
            }
            buf
        })
    }
    (drain(child.stdout.take()), drain(child.stderr.take()))
}

/// Waits for the child; after `timeout` kills it and returns `None`.
fn wait_with_timeout(child: &mut Child, timeout: Duration) -> Option<std::process::ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// Sends `signal` (e.g. "TERM") to a process with the `kill` command (no libc needed).
pub fn send_signal(pid: u32, signal: &str) -> bool {
    Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(pid.to_string())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

/// True while a process with this pid exists and is not a zombie.
///
/// A daemon we did not start (Dovecot's master) is reaped by init, which in a container
/// may never happen: a zombie counts as gone.
pub fn process_alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the parenthesised command name, which may contain spaces.
        Ok(stat) => match stat.rfind(')') {
            Some(i) => !matches!(stat[i + 1..].trim_start().chars().next(), Some('Z' | 'X')),
            None => true,
        },
        Err(_) => false,
    }
}

/// True when this process runs as root (read from /proc, no libc needed).
pub fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|euid| euid == "0"))
        })
        .unwrap_or(false)
}

/// The uid and gid of a user, from /etc/passwd.
pub fn user_ids(name: &str) -> Option<(u32, u32)> {
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|line| {
        let f: Vec<&str> = line.split(':').collect();
        if f.len() >= 4 && f[0] == name {
            Some((f[2].parse().ok()?, f[3].parse().ok()?))
        } else {
            None
        }
    })
}

/// uid and gid of [`MAIL_USER`]; panics with the fix when the user does not exist.
pub fn mail_user_ids() -> (u32, u32) {
    user_ids(MAIL_USER).unwrap_or_else(|| {
        panic!("the system user {MAIL_USER} does not exist: run scripts/install-deps.sh as root")
    })
}

/// A running `mailferry` process (e.g. `mailferry run`), killed when dropped.
pub struct Mailferry {
    child: Child,
    stdout: Option<Reader>,
    stderr: Option<Reader>,
}

impl Mailferry {
    /// Starts `mailferry ARGS...` in the background.
    pub fn spawn(args: &[&str]) -> Mailferry {
        let (child, stdout, stderr) = start_piped(args);
        Mailferry {
            child,
            stdout: Some(stdout),
            stderr: Some(stderr),
        }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// True once the process has exited.
    pub fn has_exited(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(Some(_)))
    }

    /// Sends SIGTERM and waits up to `timeout` for the exit, with what it printed: `Ok` when
    /// it exited on its own, `Err` when it had to be killed after the timeout.
    pub fn terminate(mut self, timeout: Duration) -> Result<Output, Output> {
        send_signal(self.child.id(), "TERM");
        let status = wait_with_timeout(&mut self.child, timeout);
        let stdout = self.stdout.take().map(|t| t.join().unwrap_or_default());
        let stderr = self.stderr.take().map(|t| t.join().unwrap_or_default());
        let exited = status.is_some();
        let status = match status {
            Some(s) => s,
            None => self.child.wait().expect("wait for a killed child"),
        };
        let output = Output {
            status,
            stdout: stdout.unwrap_or_default(),
            stderr: stderr.unwrap_or_default(),
        };
        if exited { Ok(output) } else { Err(output) }
    }
}

impl Drop for Mailferry {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The pids of the live processes whose parent is `parent` (from /proc).
pub fn children_of(parent: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|stat| {
                    // "pid (comm) state ppid ...": comm may contain spaces and parentheses.
                    let rest = &stat[stat.rfind(')')? + 1..];
                    rest.split_whitespace().nth(1)?.parse::<u32>().ok()
                })
                == Some(parent)
        })
        .collect()
}
