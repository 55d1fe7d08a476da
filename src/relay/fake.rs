//! A scripted fake SMTP server for the relay tests: answers each command from a table and
//! records what it received, the data exactly as it came over the wire (still dot-stuffed).
//! It can speak implicit TLS or offer STARTTLS (with an acceptor from `crate::testutil`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;

/// How the server answers.
#[derive(Clone)]
pub struct Script {
    /// EHLO keywords after the greeting line, e.g. `["8BITMIME", "STARTTLS"]`.
    pub extensions: Vec<&'static str>,
    pub mail: &'static str,
    /// Reply per RCPT address; others get `250 2.1.5 ok`.
    pub rcpt: HashMap<&'static str, &'static str>,
    pub data: &'static str,
    /// Reply after the final dot; `None`: never answer.
    pub data_end: Option<&'static str>,
    /// Wait this long before the reply after the final dot.
    pub data_end_delay: Duration,
    /// Close the connection after answering the final dot.
    pub close_after_data: bool,
    /// Implicit TLS: the handshake comes first, then the greeting.
    pub implicit_tls: Option<TlsAcceptor>,
    /// Offer STARTTLS (on a plain connection) and upgrade with this acceptor.
    pub starttls: Option<TlsAcceptor>,
}

impl Default for Script {
    fn default() -> Script {
        Script {
            extensions: vec!["8BITMIME", "SMTPUTF8"],
            mail: "250 2.1.0 ok",
            rcpt: HashMap::new(),
            data: "354 go ahead",
            data_end: Some("250 2.0.0 queued as 1234"),
            data_end_delay: Duration::ZERO,
            close_after_data: false,
            implicit_tls: None,
            starttls: None,
        }
    }
}

/// What the server saw.
#[derive(Default, Debug)]
pub struct Log {
    /// Connections accepted.
    pub connections: usize,
    /// Connections that ended (client closed, or QUIT).
    pub closed: usize,
    /// Every command line, without CRLF, in order.
    pub commands: Vec<String>,
    /// For each of `commands`: whether it came over TLS.
    pub commands_tls: Vec<bool>,
    /// The data of each message, as received, without the final ".\r\n" line.
    pub data: Vec<Vec<u8>>,
    /// For each of `data`: whether the transaction ran over TLS.
    pub data_tls: Vec<bool>,
    /// Server-side TLS handshakes that failed (e.g. the client refused the certificate).
    pub failed_handshakes: usize,
    /// The most connections open at the same time.
    pub most_open: usize,
}

pub struct FakeSmtp {
    pub port: u16,
    log: Arc<Mutex<Log>>,
}

impl FakeSmtp {
    pub async fn start(script: Script) -> FakeSmtp {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let log = Arc::new(Mutex::new(Log::default()));
        let shared = Arc::clone(&log);
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                {
                    let mut log = shared.lock().unwrap();
                    log.connections += 1;
                    log.most_open = log.most_open.max(log.connections - log.closed);
                }
                let (script, log) = (script.clone(), Arc::clone(&shared));
                tokio::spawn(async move {
                    let _ = session(stream, &script, &log).await;
                    log.lock().unwrap().closed += 1;
                });
            }
        });
        FakeSmtp { port, log }
    }

    pub fn log(&self) -> std::sync::MutexGuard<'_, Log> {
        self.log.lock().unwrap()
    }

    /// The command lines received, in order.
    pub fn commands(&self) -> Vec<String> {
        self.log().commands.clone()
    }

    /// The command lines received, each with whether it came over TLS.
    pub fn commands_tls(&self) -> Vec<(String, bool)> {
        let log = self.log();
        log.commands
            .iter()
            .cloned()
            .zip(log.commands_tls.iter().copied())
            .collect()
    }

    /// Waits until `n` connections have ended.
    pub async fn wait_closed(&self, n: usize) {
        for _ in 0..200 {
            if self.log().closed >= n {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!(
            "only {} connections closed, expected {n}",
            self.log().closed
        );
    }
}

/// Any stream the dialogue can run over: TCP, or TLS over it.
trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}

impl<S: AsyncRead + AsyncWrite + Unpin + Send> Stream for S {}

/// How a dialogue ended.
enum Next {
    /// The connection is over.
    Done,
    /// "STARTTLS" was answered with 220: upgrade this stream, then go on.
    StartTls(Box<dyn Stream>),
}

async fn session(tcp: TcpStream, script: &Script, log: &Mutex<Log>) -> std::io::Result<()> {
    let mut stream: Box<dyn Stream> = match &script.implicit_tls {
        Some(acceptor) => Box::new(handshake(acceptor, tcp, log).await?),
        None => Box::new(tcp),
    };
    let mut tls = script.implicit_tls.is_some();
    let mut greet = true;
    loop {
        match dialogue(stream, greet, tls, script, log).await? {
            Next::Done => return Ok(()),
            Next::StartTls(plain) => {
                let Some(acceptor) = &script.starttls else {
                    unreachable!("STARTTLS is accepted only when offered");
                };
                stream = Box::new(handshake(acceptor, plain, log).await?);
                (tls, greet) = (true, false);
            }
        }
    }
}

async fn handshake<S: Stream>(
    acceptor: &TlsAcceptor,
    stream: S,
    log: &Mutex<Log>,
) -> std::io::Result<tokio_rustls::server::TlsStream<S>> {
    let result = acceptor.accept(stream).await;
    if result.is_err() {
        log.lock().unwrap().failed_handshakes += 1;
    }
    result
}

/// The SMTP dialogue over one stream, until the connection ends or is upgraded.
async fn dialogue(
    stream: Box<dyn Stream>,
    greet: bool,
    tls: bool,
    script: &Script,
    log: &Mutex<Log>,
) -> std::io::Result<Next> {
    let mut io = BufReader::new(stream);
    if greet {
        send(&mut io, "220 fake.test ESMTP").await?;
    }
    let mut line = Vec::new();
    loop {
        line.clear();
        if io.read_until(b'\n', &mut line).await? == 0 {
            return Ok(Next::Done);
        }
        let command = String::from_utf8_lossy(&line)
            .trim_end_matches("\r\n")
            .to_owned();
        {
            let mut log = log.lock().unwrap();
            log.commands.push(command.clone());
            log.commands_tls.push(tls);
        }
        let upper = command.to_ascii_uppercase();
        let offer_starttls = script.starttls.is_some() && !tls;
        let reply: String = if upper.starts_with("EHLO") {
            let mut lines = vec!["fake.test".to_owned()];
            lines.extend(script.extensions.iter().map(|s| s.to_string()));
            if offer_starttls {
                lines.push("STARTTLS".to_owned());
            }
            let last = lines.len() - 1;
            lines
                .iter()
                .enumerate()
                .map(|(i, l)| format!("250{}{l}", if i == last { ' ' } else { '-' }))
                .collect::<Vec<_>>()
                .join("\r\n")
        } else if upper == "STARTTLS" && offer_starttls {
            send(&mut io, "220 2.0.0 ready").await?;
            // Anything the client sent after STARTTLS in plain text would be an injection.
            if !io.buffer().is_empty() {
                return Err(std::io::Error::other("plain text after STARTTLS"));
            }
            return Ok(Next::StartTls(io.into_inner()));
        } else if upper.starts_with("MAIL FROM:") {
            script.mail.to_owned()
        } else if upper.starts_with("RCPT TO:<") {
            let address = command["RCPT TO:<".len()..].split('>').next().unwrap_or("");
            script
                .rcpt
                .get(address)
                .copied()
                .unwrap_or("250 2.1.5 ok")
                .to_owned()
        } else if upper == "DATA" {
            send(&mut io, script.data).await?;
            if !script.data.starts_with('3') {
                continue;
            }
            let mut data = Vec::new();
            loop {
                line.clear();
                if io.read_until(b'\n', &mut line).await? == 0 {
                    return Ok(Next::Done);
                }
                if line == b".\r\n" {
                    break;
                }
                data.extend_from_slice(&line);
            }
            {
                let mut log = log.lock().unwrap();
                log.data.push(data);
                log.data_tls.push(tls);
            }
            tokio::time::sleep(script.data_end_delay).await;
            let Some(end) = script.data_end else {
                // Never answer; hold the connection until the client goes away.
                while io.read_until(b'\n', &mut line).await? > 0 {}
                return Ok(Next::Done);
            };
            send(&mut io, end).await?;
            if script.close_after_data {
                return Ok(Next::Done);
            }
            continue;
        } else if upper == "RSET" || upper == "NOOP" {
            "250 2.0.0 ok".to_owned()
        } else if upper == "QUIT" {
            send(&mut io, "221 2.0.0 bye").await?;
            return Ok(Next::Done);
        } else {
            "500 5.5.2 unknown command".to_owned()
        };
        send(&mut io, &reply).await?;
    }
}

/// Writes one reply line (or lines joined by CRLF) and flushes it: over TLS, a write may stay
/// in the TLS buffer until flushed.
async fn send<S: AsyncWrite + Unpin>(io: &mut S, reply: &str) -> std::io::Result<()> {
    io.write_all(format!("{reply}\r\n").as_bytes()).await?;
    io.flush().await
}
