//! The relay's part of `test-connection`: resolve, connect, TLS (implicit or STARTTLS, with
//! the one TLS setup of [`crate::tls`]), EHLO and what it announces (the SIZE limit, AUTH),
//! then QUIT. No message is sent. A minimal EHLO exchange of its own, written while the
//! relay's own SMTP client (relay/conn.rs, auth.rs) was being replaced: moving this onto
//! `relay::conn::open` (and trying `relay.username`'s AUTH) is the next step.

use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use super::report::{Section, Status, Step};
use super::{resolve_host, tls_words};
use crate::config::{Config, TlsMode};
use crate::tls::{PeerTls, TlsClient};

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// The longest reply read (an EHLO reply is far shorter).
const REPLY_MAX: usize = 64 * 1024;

/// Every step of the relay.
pub(super) async fn test_relay(config: &Config) -> Section {
    let relay = &config.relay;
    let mode = match relay.tls {
        TlsMode::None => "none",
        TlsMode::Starttls => "starttls",
        TlsMode::StarttlsIfAvailable => "starttls-if-available",
        TlsMode::Tls => "tls",
    };
    let mut section = Section {
        kind: "relay",
        name: format!("{}:{}", relay.host, relay.port),
        target: format!("smtp {}:{} (tls: {mode})", relay.host, relay.port),
        steps: Vec::new(),
    };
    let steps = &mut section.steps;
    if let Err(failed) = probe(config, steps).await {
        steps.push(Step::failed(failed.0, failed.1));
        for name in ["resolve", "connect", "tls", "ehlo", "size"] {
            if !steps.iter().any(|s| s.step == name) {
                steps.push(Step::skipped(name));
            }
        }
    }
    section
}

/// The steps that passed go into `steps`; the first that fails is returned.
async fn probe(config: &Config, steps: &mut Vec<Step>) -> Result<(), (&'static str, String)> {
    let relay = &config.relay;
    let host = relay.host.trim_start_matches('[').trim_end_matches(']');
    let limit = relay.timeout;
    let resolved = resolve_host(host, relay.port, limit)
        .await
        .map_err(|why| ("resolve", why))?;
    steps.push(Step::ok("resolve", resolved));

    let connect = TcpStream::connect((host, relay.port));
    let tcp = match tokio::time::timeout(limit, connect).await {
        Ok(Ok(tcp)) => tcp,
        Ok(Err(e)) => {
            let hint = match e.kind() {
                std::io::ErrorKind::ConnectionRefused => {
                    "; nothing accepts connections there: is the internal mail server running, and are relay.host and relay.port right?"
                }
                _ => "",
            };
            return Err((
                "connect",
                format!("cannot connect to {}:{}: {e}{hint}", relay.host, relay.port),
            ));
        }
        Err(_) => {
            return Err((
                "connect",
                format!(
                    "no connection to {}:{} within {limit:?}",
                    relay.host, relay.port
                ),
            ));
        }
    };
    let peer = tcp
        .peer_addr()
        .map_or_else(|_| String::new(), |p| p.to_string());
    steps.push(Step::ok("connect", format!("connected to {peer}")));

    let tls = match relay.tls {
        TlsMode::None => None,
        _ => Some(
            TlsClient::new(&relay.tls_options, &relay.host).map_err(|e| ("tls", e.to_string()))?,
        ),
    };
    let mut session = Smtp {
        stream: Box::new(tcp),
        buf: Vec::new(),
        limit,
    };
    let mut peer_tls = None;
    if relay.tls == TlsMode::Tls {
        let tls = tls.clone().ok_or(("tls", String::new()))?;
        let (stream, peer) = handshake(session.stream, &tls, limit).await?;
        session.stream = stream;
        peer_tls = Some(peer);
    }
    let greeting = session.reply().await.map_err(|e| ("ehlo", e))?;
    if greeting.0 != 220 {
        return Err((
            "ehlo",
            format!(
                "the relay's greeting is not 220: {}",
                greeting.1.join(" / ")
            ),
        ));
    }
    let helo = config.relay.helo.clone().unwrap_or_else(host_name);
    let mut ehlo = session.ehlo(&helo).await?;

    let offered = has(&ehlo, "STARTTLS");
    match (relay.tls, offered) {
        (TlsMode::Starttls | TlsMode::StarttlsIfAvailable, true) => {
            session.command("STARTTLS").await.map_err(|e| ("tls", e))?;
            let reply = session.reply().await.map_err(|e| ("tls", e))?;
            if reply.0 != 220 {
                return Err(("tls", format!("STARTTLS refused: {}", reply.1.join(" / "))));
            }
            let tls = tls.clone().ok_or(("tls", String::new()))?;
            let (stream, peer) = handshake(session.stream, &tls, limit).await?;
            session.stream = stream;
            session.buf.clear();
            peer_tls = Some(peer);
            ehlo = session.ehlo(&helo).await?;
        }
        (TlsMode::Starttls, false) => {
            return Err((
                "tls",
                "the relay does not offer STARTTLS, and relay.tls is starttls".to_owned(),
            ));
        }
        _ => {}
    }
    steps.push(match (&peer_tls, relay.tls) {
        (Some(peer), mode) => {
            let words = tls_words(peer, &relay.tls_options, mode);
            match relay.tls_options.verify_certificate {
                true => Step::ok("tls", words),
                false => Step::new("tls", Status::Warning, words),
            }
        }
        (None, TlsMode::None) => {
            Step::new("tls", Status::Warning, "not encrypted (relay.tls: none)")
        }
        (None, _) => Step::new(
            "tls",
            Status::Warning,
            "the relay offers no STARTTLS: the mail goes to it unencrypted",
        ),
    });
    let mut extensions: Vec<&str> = ehlo.iter().skip(1).map(String::as_str).collect();
    extensions.retain(|e| !e.is_empty());
    let auth = ehlo
        .iter()
        .skip(1)
        .find(|l| l.to_ascii_uppercase().starts_with("AUTH"))
        .map_or_else(|| "no AUTH offered".to_owned(), |l| format!("{l} offered"));
    // The login itself is the relay session's (relay/auth.rs); not tried from here yet.
    let auth = match &relay.auth {
        Some(a) => format!(
            "{auth}; relay.username {} is set: test-connection does not try the AUTH itself",
            a.username
        ),
        None => auth,
    };
    steps.push(Step::ok(
        "ehlo",
        format!("EHLO {helo}: {}; {auth}", extensions.join(", ")),
    ));
    steps.push(size_step(&ehlo, config.max_message_size));
    let _ = session.command("QUIT").await;
    let _ = session.reply().await;
    Ok(())
}

/// What the relay's SIZE says against `max_message_size`.
pub(super) fn size_step(ehlo: &[String], max_message_size: u64) -> Step {
    let size = ehlo.iter().skip(1).find_map(|line| {
        let mut words = line.split_ascii_whitespace();
        let word = words.next()?;
        word.eq_ignore_ascii_case("SIZE").then(|| {
            words
                .next()
                .and_then(|n| n.parse::<u64>().ok())
                .unwrap_or(0)
        })
    });
    match size {
        None => Step::ok("size", "the relay announces no SIZE limit"),
        Some(0) => Step::ok("size", "SIZE without a limit"),
        Some(n) if n < max_message_size => Step::new(
            "size",
            Status::Warning,
            format!(
                "the relay takes messages up to {n} bytes, less than max_message_size ({max_message_size}): a message in between is refused by it and goes to the postmaster"
            ),
        ),
        Some(n) => Step::ok(
            "size",
            format!(
                "the relay takes messages up to {n} bytes (max_message_size {max_message_size})"
            ),
        ),
    }
}

/// Whether an EHLO reply lists `keyword`.
fn has(ehlo: &[String], keyword: &str) -> bool {
    ehlo.iter().skip(1).any(|line| {
        line.split_ascii_whitespace()
            .next()
            .is_some_and(|w| w.eq_ignore_ascii_case(keyword))
    })
}

async fn handshake(
    stream: Box<dyn Io>,
    tls: &TlsClient,
    limit: Duration,
) -> Result<(Box<dyn Io>, PeerTls), (&'static str, String)> {
    match tokio::time::timeout(limit, tls.connect(stream)).await {
        Ok(Ok(stream)) => {
            let peer = PeerTls::of(stream.get_ref().1);
            Ok((Box::new(stream), peer))
        }
        Ok(Err(e)) => Err(("tls", e.to_string())),
        Err(_) => Err(("tls", format!("no TLS handshake within {limit:?}"))),
    }
}

/// This machine's host name, for EHLO when `relay.helo` is not set.
fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".to_owned())
}

/// A plain or TLS SMTP connection with a read buffer.
struct Smtp {
    stream: Box<dyn Io>,
    buf: Vec<u8>,
    limit: Duration,
}

impl Smtp {
    async fn command(&mut self, line: &str) -> Result<(), String> {
        let bytes = format!("{line}\r\n");
        let write = self.stream.write_all(bytes.as_bytes());
        match tokio::time::timeout(self.limit, write).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(format!("sending {line}: {e}")),
            Err(_) => Err(format!(
                "sending {line}: no progress within {:?}",
                self.limit
            )),
        }
    }

    /// EHLO: the reply's lines (the first is the greeting line), or the step's failure.
    async fn ehlo(&mut self, helo: &str) -> Result<Vec<String>, (&'static str, String)> {
        self.command(&format!("EHLO {helo}"))
            .await
            .map_err(|e| ("ehlo", e))?;
        let (code, lines) = self.reply().await.map_err(|e| ("ehlo", e))?;
        if code != 250 {
            return Err((
                "ehlo",
                format!("EHLO refused: {code} {}", lines.join(" / ")),
            ));
        }
        Ok(lines)
    }

    /// One reply, every line of it: (code, texts).
    async fn reply(&mut self) -> Result<(u16, Vec<String>), String> {
        let mut lines = Vec::new();
        loop {
            let line = self.line().await?;
            let code = line
                .get(..3)
                .and_then(|c| c.parse::<u16>().ok())
                .ok_or_else(|| format!("the relay sent {line:?}, which is not an SMTP reply"))?;
            let last = line.as_bytes().get(3) != Some(&b'-');
            lines.push(line.get(4..).unwrap_or_default().to_owned());
            if last {
                return Ok((code, lines));
            }
        }
    }

    async fn line(&mut self) -> Result<String, String> {
        loop {
            if let Some(lf) = self.buf.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = self.buf.drain(..=lf).collect();
                return Ok(String::from_utf8_lossy(&line).trim_end().to_owned());
            }
            if self.buf.len() > REPLY_MAX {
                return Err(format!("a reply line longer than {REPLY_MAX} bytes"));
            }
            let mut chunk = [0u8; 4096];
            match tokio::time::timeout(self.limit, self.stream.read(&mut chunk)).await {
                Ok(Ok(0)) => return Err("the relay closed the connection".to_owned()),
                Ok(Ok(n)) => self.buf.extend_from_slice(&chunk[..n]),
                Ok(Err(e)) => return Err(format!("reading from the relay: {e}")),
                Err(_) => return Err(format!("no answer from the relay within {:?}", self.limit)),
            }
        }
    }
}
