//! A scripted fake ESMTP server: answers each command from a [`Script`] (changeable while it
//! runs, e.g. between two passes) and records every command and every transaction: the data
//! exactly as it came over the wire (still dot-stuffed) and the message it stands for.
//! It can speak implicit TLS or offer STARTTLS (with an acceptor from [`super::tls`]).
//!
//! It runs on a thread and runtime of its own, so the same fake serves `#[tokio::test]`s and
//! plain `#[test]`s that run the mailferry binary; it stops when dropped.
//!
//! ```ignore
//! let smtp = FakeSmtp::start(Script::default().rcpt("b@example.com", "450 4.2.1 busy"));
//! // ... relay a message to a@ and b@ through port smtp.port() ...
//! smtp.change(|s| s.rcpt("b@example.com", "250 2.1.5 ok"));
//! let seen = smtp.take();
//! assert_eq!(seen.rcpts_tried(), ["a@example.com", "b@example.com"]);
//! ```

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, BufReader};
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio_rustls::TlsAcceptor;

mod auth;
mod data;
mod record;

pub use record::{Log, Tx};

use super::{Split, write_split};

/// How the server answers. Replies are whole reply lines, code first (`"550 5.1.1 no"`);
/// several lines are joined by CRLF. Addresses are matched without regard to case.
#[derive(Clone)]
pub struct Script {
    greeting: String,
    extensions: Vec<String>,
    mail: String,
    mail_for: HashMap<String, String>,
    rcpt: HashMap<String, String>,
    data: String,
    data_end: Option<String>,
    data_end_for: HashMap<String, String>,
    data_end_delay: Duration,
    drop_after_data: usize,
    /// Recipients whose next transaction is dropped at the end of its data.
    drop_after_data_for: Vec<String>,
    close_after_data: bool,
    drop_after_rcpts: Option<usize>,
    no_reply_to: Vec<String>,
    auth: Option<(String, String)>,
    auth_offer: String,
    split: Split,
    implicit_tls: Option<TlsAcceptor>,
    starttls: Option<TlsAcceptor>,
}

impl Default for Script {
    /// Accepts everything: 8BITMIME and SMTPUTF8, every sender and recipient, every message.
    fn default() -> Script {
        Script {
            greeting: "220 fake.test ESMTP".to_owned(),
            extensions: vec!["8BITMIME".to_owned(), "SMTPUTF8".to_owned()],
            mail: "250 2.1.0 ok".to_owned(),
            mail_for: HashMap::new(),
            rcpt: HashMap::new(),
            data: "354 go ahead".to_owned(),
            data_end: Some("250 2.0.0 queued as 1234".to_owned()),
            data_end_for: HashMap::new(),
            data_end_delay: Duration::ZERO,
            drop_after_data: 0,
            drop_after_data_for: Vec::new(),
            close_after_data: false,
            drop_after_rcpts: None,
            no_reply_to: Vec::new(),
            auth: None,
            auth_offer: "PLAIN LOGIN".to_owned(),
            split: Split::Whole,
            implicit_tls: None,
            starttls: None,
        }
    }
}

impl Script {
    /// The EHLO keywords after the greeting line (default `8BITMIME`, `SMTPUTF8`).
    pub fn extensions(mut self, keywords: &[&str]) -> Script {
        self.extensions = keywords.iter().map(|k| k.to_string()).collect();
        self
    }

    /// The reply to every MAIL FROM without a reply of its own (default 250).
    pub fn mail(mut self, reply: &str) -> Script {
        self.mail = reply.to_owned();
        self
    }

    /// The reply to MAIL FROM:<sender>.
    pub fn mail_for(mut self, sender: &str, reply: &str) -> Script {
        self.mail_for
            .insert(sender.to_lowercase(), reply.to_owned());
        self
    }

    /// The reply to RCPT TO:<address> (others get `250 2.1.5 ok`).
    pub fn rcpt(mut self, address: &str, reply: &str) -> Script {
        self.rcpt.insert(address.to_lowercase(), reply.to_owned());
        self
    }

    /// The reply to DATA (default `354 go ahead`); one that is not 3xx ends the transaction.
    pub fn data(mut self, reply: &str) -> Script {
        self.data = reply.to_owned();
        self
    }

    /// The reply after the final dot (default `250 2.0.0 queued as 1234`).
    pub fn data_end(mut self, reply: &str) -> Script {
        self.data_end = Some(reply.to_owned());
        self
    }

    /// Never answer the final dot: hold the connection until the client goes away.
    pub fn no_data_end(mut self) -> Script {
        self.data_end = None;
        self
    }

    /// The reply after the final dot of a transaction with this recipient among those
    /// accepted (the first such recipient's reply counts).
    pub fn data_end_for(mut self, rcpt: &str, reply: &str) -> Script {
        self.data_end_for
            .insert(rcpt.to_lowercase(), reply.to_owned());
        self
    }

    /// Wait this long before the reply after the final dot.
    pub fn data_end_delay(mut self, delay: Duration) -> Script {
        self.data_end_delay = delay;
        self
    }

    /// For the next `n` ends of DATA, drop the connection instead of replying.
    pub fn drop_after_data(mut self, n: usize) -> Script {
        self.drop_after_data = n;
        self
    }

    /// For the next transaction to `rcpt` (whichever of several sessions it comes on), drop
    /// the connection at the end of its data instead of replying.
    pub fn drop_after_data_for(mut self, rcpt: &str) -> Script {
        self.drop_after_data_for.push(rcpt.to_lowercase());
        self
    }

    /// Close the connection after answering the final dot.
    pub fn close_after_data(mut self) -> Script {
        self.close_after_data = true;
        self
    }

    /// In each connection, drop it right after answering the `n`-th RCPT (a pipelined
    /// response cut mid-way).
    pub fn drop_after_rcpts(mut self, n: usize) -> Script {
        self.drop_after_rcpts = Some(n);
        self
    }

    /// Never answer RCPT TO:<address>, and go on with the next command (a server that
    /// sends too few replies).
    pub fn no_reply_to(mut self, address: &str) -> Script {
        self.no_reply_to.push(address.to_lowercase());
        self
    }

    /// Offer `AUTH PLAIN LOGIN` and demand it before MAIL: only `user` with `password` gets
    /// 235 (others 535). [`Log::logins`] records who logged in.
    pub fn auth(mut self, user: &str, password: &str) -> Script {
        self.auth = Some((user.to_owned(), password.to_owned()));
        self
    }

    /// The mechanisms offered on the EHLO `AUTH` line when [`Script::auth`] is set (default
    /// `PLAIN LOGIN`).
    pub fn auth_offer(mut self, mechanisms: &str) -> Script {
        self.auth_offer = mechanisms.to_owned();
        self
    }

    /// Write every reply as `split` says.
    pub fn split(mut self, split: Split) -> Script {
        self.split = split;
        self
    }

    /// Implicit TLS: the handshake comes first, then the greeting.
    pub fn implicit_tls(mut self, acceptor: TlsAcceptor) -> Script {
        self.implicit_tls = Some(acceptor);
        self
    }

    /// Offer STARTTLS (on a plain connection) and upgrade with this acceptor.
    pub fn starttls(mut self, acceptor: TlsAcceptor) -> Script {
        self.starttls = Some(acceptor);
        self
    }
}

/// The script and the log, shared by the server's sessions and the test.
struct Shared {
    script: Mutex<Script>,
    log: Mutex<Log>,
}

/// A running fake SMTP server on 127.0.0.1; stops when dropped.
pub struct FakeSmtp {
    port: u16,
    shared: Arc<Shared>,
    /// Dropping it ends the server's thread (and every session with it).
    _stop: oneshot::Sender<()>,
}

impl FakeSmtp {
    /// Starts a server following `script` on its own thread; callable with or without a
    /// tokio runtime.
    pub fn start(script: Script) -> FakeSmtp {
        let listener = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind");
        listener
            .set_nonblocking(true)
            .expect("non-blocking listener");
        let port = listener.local_addr().expect("local_addr").port();
        let shared = Arc::new(Shared {
            script: Mutex::new(script),
            log: Mutex::new(Log::default()),
        });
        let (stop, stopped) = oneshot::channel();
        let server = serve(listener, Arc::clone(&shared), stopped);
        std::thread::spawn(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime for the fake SMTP server")
                .block_on(server);
        });
        FakeSmtp {
            port,
            shared,
            _stop: stop,
        }
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Changes the script from the next command on: `smtp.change(|s| s.mail("451 later"))`.
    pub fn change(&self, edit: impl FnOnce(Script) -> Script) {
        let mut script = lock(&self.shared.script);
        *script = edit(script.clone());
    }

    /// What it saw so far.
    pub fn log(&self) -> MutexGuard<'_, Log> {
        lock(&self.shared.log)
    }

    /// What it saw since the last call (and forgets it).
    pub fn take(&self) -> Log {
        std::mem::take(&mut *self.log())
    }

    /// The command lines received, in order.
    pub fn commands(&self) -> Vec<String> {
        self.log().commands.clone()
    }

    /// The command lines received, each with whether it came over TLS.
    pub fn commands_tls(&self) -> Vec<(String, bool)> {
        let log = self.log();
        let tls = log.commands_tls.iter().copied();
        log.commands.iter().cloned().zip(tls).collect()
    }

    /// Waits (up to 2 s) until `n` connections have ended; panics if they do not.
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

/// A poisoned lock only means another session panicked: the data is still what it saw.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Accepts connections until `stopped`, a session each.
async fn serve(
    listener: std::net::TcpListener,
    shared: Arc<Shared>,
    stopped: oneshot::Receiver<()>,
) {
    let listener = tokio::net::TcpListener::from_std(listener).expect("tokio listener");
    let accept = async {
        while let Ok((stream, _)) = listener.accept().await {
            {
                let mut log = lock(&shared.log);
                log.connections += 1;
                // saturating: `take` may have reset the counts while a session was open.
                let open = log.connections.saturating_sub(log.closed);
                log.most_open = log.most_open.max(open);
            }
            let shared = Arc::clone(&shared);
            tokio::spawn(async move {
                // A client going away mid-session is not the fake's problem.
                let _ = session(stream, &shared).await;
                lock(&shared.log).closed += 1;
            });
        }
    };
    tokio::select! {
        _ = accept => {}
        _ = stopped => {}
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

async fn session(tcp: TcpStream, shared: &Shared) -> std::io::Result<()> {
    let (implicit, starttls) = {
        let script = lock(&shared.script);
        (script.implicit_tls.clone(), script.starttls.clone())
    };
    let mut stream: Box<dyn Stream> = match &implicit {
        Some(acceptor) => Box::new(handshake(acceptor, tcp, shared).await?),
        None => Box::new(tcp),
    };
    let mut tls = implicit.is_some();
    let mut greet = true;
    loop {
        match dialogue(stream, greet, tls, shared).await? {
            Next::Done => return Ok(()),
            Next::StartTls(plain) => {
                let Some(acceptor) = &starttls else {
                    unreachable!("STARTTLS is accepted only when offered");
                };
                stream = Box::new(handshake(acceptor, plain, shared).await?);
                (tls, greet) = (true, false);
            }
        }
    }
}

async fn handshake<S: Stream>(
    acceptor: &TlsAcceptor,
    stream: S,
    shared: &Shared,
) -> std::io::Result<tokio_rustls::server::TlsStream<S>> {
    let result = acceptor.accept(stream).await;
    if result.is_err() {
        lock(&shared.log).failed_handshakes += 1;
    }
    result
}

/// The transaction under way: after an accepted MAIL FROM.
struct Open {
    mail_from: String,
    rcpts: Vec<String>,
    /// The BDAT chunks so far.
    chunks: Vec<u8>,
}

/// The SMTP dialogue over one stream, until the connection ends or is upgraded.
async fn dialogue(
    stream: Box<dyn Stream>,
    greet: bool,
    tls: bool,
    shared: &Shared,
) -> std::io::Result<Next> {
    let mut io = BufReader::new(stream);
    let split = lock(&shared.script).split;
    let script = || lock(&shared.script);
    if greet {
        let greeting = script().greeting.clone();
        send(&mut io, &greeting, split).await?;
    }
    let mut open: Option<Open> = None;
    let mut rcpts_answered = 0;
    let mut logged_in = false;
    let mut line = Vec::new();
    loop {
        line.clear();
        if io.read_until(b'\n', &mut line).await? == 0 {
            return Ok(Next::Done);
        }
        let command = String::from_utf8_lossy(&line)
            .trim_end_matches(['\r', '\n'])
            .to_owned();
        {
            let mut log = lock(&shared.log);
            log.commands.push(command.clone());
            log.commands_tls.push(tls);
            log.commands_waiting.push(!io.buffer().is_empty());
        }
        let verb = command
            .split([' ', ':'])
            .next()
            .unwrap_or("")
            .to_ascii_uppercase();
        let offer_starttls = script().starttls.is_some() && !tls;
        let reply: String = match verb.as_str() {
            "EHLO" => {
                let mut lines = vec!["fake.test".to_owned()];
                lines.extend(script().extensions.iter().cloned());
                if offer_starttls {
                    lines.push("STARTTLS".to_owned());
                }
                if script().auth.is_some() {
                    lines.push(format!("AUTH {}", script().auth_offer));
                }
                let last = lines.len() - 1;
                lines
                    .iter()
                    .enumerate()
                    .map(|(i, l)| format!("250{}{l}", if i == last { ' ' } else { '-' }))
                    .collect::<Vec<_>>()
                    .join("\r\n")
            }
            "HELO" => "250 fake.test".to_owned(),
            "STARTTLS" if offer_starttls => {
                send(&mut io, "220 2.0.0 ready", split).await?;
                // Anything the client sent after STARTTLS in plain text would be an injection.
                if !io.buffer().is_empty() {
                    return Err(std::io::Error::other("plain text after STARTTLS"));
                }
                return Ok(Next::StartTls(io.into_inner()));
            }
            "AUTH" => match auth::auth(&mut io, &command, shared, split).await? {
                Some(user) => {
                    logged_in = true;
                    lock(&shared.log).logins.push(user);
                    "235 2.7.0 authenticated".to_owned()
                }
                None => "535 5.7.8 authentication failed".to_owned(),
            },
            "MAIL" if script().auth.is_some() && !logged_in => {
                "530 5.7.0 authentication required".to_owned()
            }
            "MAIL" => {
                let sender = angle_addr(command.get("MAIL FROM:".len()..).unwrap_or(""));
                let reply = {
                    let script = script();
                    let own = script.mail_for.get(&sender.to_lowercase());
                    own.unwrap_or(&script.mail).clone()
                };
                open = reply.starts_with('2').then(|| Open {
                    mail_from: sender,
                    rcpts: Vec::new(),
                    chunks: Vec::new(),
                });
                reply
            }
            "RCPT" => match open.as_mut() {
                None => "503 5.5.1 need MAIL first".to_owned(),
                Some(open) => {
                    let address = angle_addr(command.get("RCPT TO:".len()..).unwrap_or(""));
                    let address = address.to_lowercase();
                    if script().no_reply_to.contains(&address) {
                        continue;
                    }
                    let reply = script().rcpt.get(&address).cloned();
                    let reply = reply.unwrap_or_else(|| "250 2.1.5 ok".to_owned());
                    if reply.starts_with('2') {
                        open.rcpts.push(address);
                    }
                    rcpts_answered += 1;
                    if script().drop_after_rcpts == Some(rcpts_answered) {
                        send(&mut io, &reply, split).await?;
                        return Ok(Next::Done);
                    }
                    reply
                }
            },
            "BDAT" => {
                // BDAT <size> [LAST] (RFC 3030): exactly <size> octets follow.
                let mut words = command.split_ascii_whitespace().skip(1);
                let size = words.next().and_then(|n| n.parse::<usize>().ok());
                let last = words.next().is_some_and(|w| w.eq_ignore_ascii_case("LAST"));
                let Some(size) = size else {
                    send(&mut io, "501 5.5.4 BDAT needs a size", split).await?;
                    continue;
                };
                let mut chunk = vec![0u8; size];
                io.read_exact(&mut chunk).await?;
                let Some(tx) = open.as_mut().filter(|t| !t.rcpts.is_empty()) else {
                    send(&mut io, "503 5.5.1 no valid recipients", split).await?;
                    continue;
                };
                tx.chunks.extend_from_slice(&chunk);
                if !last {
                    format!("250 2.0.0 {size} octets received")
                } else {
                    let Some(mut tx) = open.take() else { continue };
                    let received = std::mem::take(&mut tx.chunks);
                    match data::end_of_data(&mut io, tx, received, true, tls, shared).await? {
                        Some(()) => continue,
                        None => return Ok(Next::Done),
                    }
                }
            }
            "DATA" => {
                let Some(tx) = open.take().filter(|t| !t.rcpts.is_empty()) else {
                    send(&mut io, "503 5.5.1 no valid recipients", split).await?;
                    continue;
                };
                let go_ahead = script().data.clone();
                send(&mut io, &go_ahead, split).await?;
                if !go_ahead.starts_with('3') {
                    continue;
                }
                match data::data(&mut io, tx, tls, shared).await? {
                    Some(()) => continue,
                    None => return Ok(Next::Done),
                }
            }
            "RSET" => {
                open = None;
                "250 2.0.0 ok".to_owned()
            }
            "NOOP" => "250 2.0.0 ok".to_owned(),
            "QUIT" => {
                send(&mut io, "221 2.0.0 bye", split).await?;
                return Ok(Next::Done);
            }
            _ => "500 5.5.2 unknown command".to_owned(),
        };
        send(&mut io, &reply, split).await?;
    }
}

/// The address inside the first `<...>` of an SMTP path argument (`<>` gives "").
fn angle_addr(arg: &str) -> String {
    let arg = arg.trim();
    match (arg.find('<'), arg.find('>')) {
        (Some(open), Some(close)) if open < close => arg[open + 1..close].to_owned(),
        _ => arg.split_whitespace().next().unwrap_or("").to_owned(),
    }
}

/// Writes one reply (lines joined by CRLF) with its final CRLF, as `split` says.
async fn send<S: AsyncWrite + Unpin + ?Sized>(
    io: &mut S,
    reply: &str,
    split: Split,
) -> std::io::Result<()> {
    write_split(io, format!("{reply}\r\n").as_bytes(), split).await
}
