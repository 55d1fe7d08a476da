//! End to end, the real `mailferry` binary against a scripted slow POP3 server (real servers
//! do not trickle on demand), smtp-sink, and Dovecot for a second account: a message fetch
//! has an overall deadline, and a slow upstream never holds the relay from other accounts.

mod support;

use std::io::{BufRead, BufReader, Write};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread;
use std::time::Duration;

use support::{
    AccountYaml, Dovecot, GatewayConfig, Mailferry, Secret, SmtpSink, poll_once, wait_until,
    write_private,
};

/// How the slow server sends message 2 on its first connection (later ones send it at once).
#[derive(Clone, Copy)]
enum Slow {
    /// One byte every this long, for ever: just under any read timeout.
    Trickle(Duration),
    /// A large message at this many bytes per second, steady (a slow but honest link).
    Steady(usize),
}

/// A POP3 server on 127.0.0.1 holding two messages for any login. Message 1 comes at once;
/// message 2 as `slow` says on the first connection.
struct SlowPop3 {
    port: u16,
    stop: Arc<AtomicBool>,
    connections: Arc<AtomicUsize>,
}

const MESSAGE_1: &[u8] =
    b"From: a@remote.test\r\nTo: one@example.com\r\nSubject: one\r\n\r\nfirst\r\n";
const MESSAGE_2: &[u8] =
    b"From: a@remote.test\r\nTo: two@example.com\r\nSubject: two\r\n\r\nsecond\r\n";

impl SlowPop3 {
    fn start(slow: Slow) -> SlowPop3 {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let port = listener.local_addr().unwrap().port();
        let stop = Arc::new(AtomicBool::new(false));
        let connections = Arc::new(AtomicUsize::new(0));
        let (stop2, count) = (stop.clone(), connections.clone());
        thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { return };
                let first = count.fetch_add(1, Ordering::SeqCst) == 0;
                let stop = stop2.clone();
                thread::spawn(move || {
                    let _ = serve(stream, first.then_some(slow), &stop);
                });
            }
        });
        SlowPop3 {
            port,
            stop,
            connections,
        }
    }
}

impl Drop for SlowPop3 {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

fn serve(stream: TcpStream, slow: Option<Slow>, stop: &AtomicBool) -> std::io::Result<()> {
    let mut out = stream.try_clone()?;
    let mut reader = BufReader::new(stream);
    out.write_all(b"+OK slow server ready\r\n")?;
    let mut line = String::new();
    loop {
        line.clear();
        if reader.read_line(&mut line)? == 0 {
            return Ok(());
        }
        let command = line.trim_end().to_ascii_uppercase();
        let reply: Vec<u8> = match command.as_str() {
            "CAPA" => b"-ERR no CAPA here\r\n".to_vec(),
            "UIDL" => b"+OK\r\n1 slow-one\r\n2 slow-two\r\n.\r\n".to_vec(),
            "LIST" => format!(
                "+OK\r\n1 {}\r\n2 {}\r\n.\r\n",
                MESSAGE_1.len(),
                MESSAGE_2.len()
            )
            .into_bytes(),
            "RETR 1" => [b"+OK\r\n", MESSAGE_1, b".\r\n"].concat(),
            "RETR 2" => match slow {
                None => [b"+OK\r\n", MESSAGE_2, b".\r\n"].concat(),
                Some(slow) => {
                    out.write_all(b"+OK\r\n")?;
                    out.write_all(MESSAGE_2)?;
                    return send_slowly(&mut out, slow, stop);
                }
            },
            "QUIT" => {
                out.write_all(b"+OK bye\r\n")?;
                return Ok(());
            }
            c if c.starts_with("USER") || c.starts_with("PASS") || c.starts_with("DELE") => {
                b"+OK\r\n".to_vec()
            }
            "NOOP" | "RSET" => b"+OK\r\n".to_vec(),
            _ => b"-ERR unknown\r\n".to_vec(),
        };
        out.write_all(&reply)?;
    }
}

/// Body lines for ever (until `stop`, or the client goes), never the terminator.
fn send_slowly(out: &mut TcpStream, slow: Slow, stop: &AtomicBool) -> std::io::Result<()> {
    while !stop.load(Ordering::SeqCst) {
        match slow {
            Slow::Trickle(every) => {
                out.write_all(b"x")?;
                thread::sleep(every);
            }
            Slow::Steady(per_second) => {
                let line = [b"y".repeat(78), b"\r\n".to_vec()].concat();
                let chunk = line.repeat((per_second / 10 / line.len()).max(1));
                out.write_all(&chunk)?;
                thread::sleep(Duration::from_millis(100));
            }
        }
    }
    Ok(())
}

/// The account on the slow server, `timeout` as given.
fn slow_account(server: &SlowPop3, timeout: &str) -> AccountYaml {
    AccountYaml {
        name: "slow-account".into(),
        host: "127.0.0.1".into(),
        port: server.port,
        tls: "none".into(),
        username: "slow@example.com".into(),
        password: Secret::Inline("pw".into()),
        extra_lines: vec![format!("timeout: {timeout}"), "poll_interval: 5s".into()],
        ..AccountYaml::default()
    }
}

/// Writes `gateway` with `relay.connections: connections` into `dir`; returns the path.
fn write(dir: &Path, gateway: &GatewayConfig, connections: u32) -> String {
    let yaml = gateway.yaml().replacen(
        "\n  tls: none\n",
        &format!("\n  tls: none\n  connections: {connections}\n"),
        1,
    );
    assert!(yaml.contains("  connections: "), "{yaml}");
    let path = dir.join("mailferry.yaml");
    write_private(&path, &yaml).unwrap();
    path.display().to_string()
}

fn subjects(sink: &SmtpSink) -> Vec<String> {
    sink.transactions().iter().map(|t| t.subject()).collect()
}

#[test]
fn a_trickling_server_fails_the_fetch_at_its_deadline_and_the_next_pass_delivers() {
    if support::skip_e2e() {
        return;
    }
    let server = SlowPop3::start(Slow::Trickle(Duration::from_millis(500)));
    let sink = SmtpSink::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    let gateway = GatewayConfig::new(dir.path().join("state"), sink.port())
        .account(slow_account(&server, "1s"));
    let config = write(dir.path(), &gateway, 1);

    // A byte every half timeout: no read ever times out; only the deadline ends the RETR.
    let out = poll_once(&config);
    assert_eq!(
        out.status.code(),
        Some(1),
        "poll-once must end by itself, with the pass failed"
    );
    let said = [out.stdout, out.stderr].concat();
    let said = String::from_utf8_lossy(&said);
    assert!(
        said.contains("RETR 2 did not finish within its deadline"),
        "{said}"
    );
    assert_eq!(subjects(&sink), ["one"]);

    // The next pass (a new connection: the server sends at once now) delivers the rest.
    let out = poll_once(&config);
    assert!(out.status.success());
    assert_eq!(subjects(&sink), ["one", "two"]);
    // The first pass went on over a second connection (without trying "two" again).
    assert_eq!(server.connections.load(Ordering::SeqCst), 3);
}

#[test]
fn a_slow_upstream_does_not_hold_the_relay_from_another_account() {
    if support::skip_e2e() {
        return;
    }
    const USER: &str = "catchall@example.com";
    const PASS: &str = "pop-secret";
    // 20 KiB/s: honest (above the 16 KiB/s floor), so the fetch goes on for as long as the
    // test runs.
    let server = SlowPop3::start(Slow::Steady(20 * 1024));
    let dovecot = Dovecot::start(&[(USER, PASS)]);
    let sink = SmtpSink::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    let fast = AccountYaml {
        name: "fast-account".into(),
        port: dovecot.pop3_port(),
        tls: "none".into(),
        ca_file: Some(dovecot.ca_file()),
        username: USER.into(),
        password: Secret::Inline(PASS.into()),
        extra_lines: vec!["poll_interval: 5s".into()],
        ..AccountYaml::default()
    };
    let gateway = GatewayConfig::new(dir.path().join("state"), sink.port())
        .account(slow_account(&server, "5s"))
        .account(fast);
    // One relay session for both accounts.
    let config = write(dir.path(), &gateway, 1);
    let daemon = Mailferry::spawn(&["run", "--config", &config]);

    // The slow account has relayed its first message and is now downloading the second.
    assert!(
        wait_until(Duration::from_secs(30), || subjects(&sink) == ["one"]),
        "{:?}",
        subjects(&sink)
    );
    dovecot.deliver(
        USER,
        b"From: b@remote.test\nTo: fast@example.com\nSubject: fast\n\nhello\n",
    );
    let delivered = wait_until(Duration::from_secs(30), || {
        subjects(&sink).contains(&"fast".to_owned())
    });
    let still_slow = server.connections.load(Ordering::SeqCst) == 1;
    let _ = daemon.terminate(Duration::from_secs(10));
    assert!(
        delivered,
        "the other account's mail waited for the slow upstream: {:?}",
        subjects(&sink)
    );
    assert!(
        still_slow,
        "the slow download ended: the test proves nothing"
    );
}

/// A measurement, not a check: `cargo test --test relay_deadlines peak_rss -- --ignored
/// --nocapture` prints the peak RSS of `poll-once` relaying one 48 MB message
/// (`MAILFERRY_MEASURE_BIN=PATH` measures another build, e.g. an older one).
#[test]
#[ignore = "a measurement: run by hand"]
fn peak_rss_of_relaying_a_48_mb_message() {
    if support::skip_e2e() {
        return;
    }
    const USER: &str = "catchall@example.com";
    const PASS: &str = "pop-secret";
    let dovecot = Dovecot::start(&[(USER, PASS)]);
    let sink = SmtpSink::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    let mut big = b"From: a@remote.test\nTo: big@example.com\nSubject: big\n\n".to_vec();
    let line = [b"z".repeat(76), b"\n".to_vec()].concat();
    // Under the default max_message_size also with CRLF line ends (as LIST counts them).
    while big.len() < 48_000_000 {
        big.extend_from_slice(&line);
    }
    dovecot.deliver(USER, &big);
    let account = AccountYaml {
        name: "big".into(),
        port: dovecot.pop3_port(),
        tls: "none".into(),
        ca_file: Some(dovecot.ca_file()),
        username: USER.into(),
        password: Secret::Inline(PASS.into()),
        extra_lines: vec!["timeout: 60s".into()],
        ..AccountYaml::default()
    };
    let gateway = GatewayConfig::new(dir.path().join("state"), sink.port()).account(account);
    let config = write(dir.path(), &gateway, 1);
    let out = std::process::Command::new("/usr/bin/time")
        .args(["-f", "peak RSS %M KiB"])
        .arg(
            std::env::var_os("MAILFERRY_MEASURE_BIN")
                .filter(|p| !p.is_empty())
                .unwrap_or(support::mailferry_bin().into()),
        )
        .args(["poll-once", "--config", &config])
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stderr);
    let peak = said
        .lines()
        .find(|l| l.starts_with("peak RSS"))
        .unwrap_or("?");
    println!("{peak} for a {} byte message", big.len());
    assert!(out.status.success(), "{said}");
    assert_eq!(sink.transactions().len(), 1);
}
