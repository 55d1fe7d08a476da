//! A TCP proxy on loopback that forwards to an upstream server (Dovecot's plain POP3 port)
//! and injects one fault per connection: a connection dropped in the middle of a RETR
//! response, a stall, a trickle, a reset when the client sends DELE, or a delay per chunk.
//!
//! ```ignore
//! // The first connection is cut 200 bytes into the first RETR response; later ones pass.
//! let proxy = FaultProxy::start(dovecot.pop3_port(), |n| match n {
//!     0 => Fault::DropMidRetr { retr: 1, bytes: 200 },
//!     _ => Fault::None,
//! });
//! // ... point the account at proxy.port() with `tls: none` ...
//! assert_eq!(proxy.fired(), 1);
//! ```
//!
//! Standard threads only (the harness is also compiled into the examples); tokio's `TcpSocket`
//! only to set `SO_LINGER` to zero, which std cannot. Each direction of a connection is pumped
//! by its own thread, with short read timeouts so that a fault or the proxy's end is noticed
//! at once.

use std::io::{ErrorKind, Read, Write};
use std::net::{Ipv4Addr, Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// How often a pump looks at the flags while nothing arrives.
const POLL: Duration = Duration::from_millis(20);

/// What the proxy does to one connection. `retr` counts the RETR commands of that
/// connection from 1: the fault hits the response to that RETR (and what follows it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// Forward everything unchanged.
    None,
    /// After `bytes` bytes of the response to RETR number `retr`, close both sides.
    DropMidRetr { retr: usize, bytes: usize },
    /// After `bytes` bytes of the response to RETR number `retr`, forward nothing from the
    /// server for `duration`, then go on (unless the client left meanwhile).
    Stall {
        retr: usize,
        bytes: usize,
        duration: Duration,
    },
    /// From the response to RETR number `retr` on, forward the server's bytes one at a time,
    /// one every `every` (until [`FaultProxy::release`]).
    Trickle { retr: usize, every: Duration },
    /// When the client sends DELE, reset the client's connection (RST: `SO_LINGER` 0) and
    /// close the server's without forwarding the DELE, so the server never commits it.
    ResetOnDele,
    /// Every RETR response longer than `bytes`: after `bytes` of it, close both sides (a
    /// message that breaks every connection it is downloaded on).
    DropLargeRetr { bytes: usize },
    /// Hold every chunk, in both directions, for `delay` before forwarding it (order kept):
    /// a far-away server.
    Delay { delay: Duration },
}

/// A command a client sent: when, and its verb.
type Sent = (Instant, String);

/// Which fault the n-th connection (from 0) gets.
type Plan = Arc<dyn Fn(usize) -> Fault + Send + Sync>;

/// State shared by the proxy and all its connections.
struct Shared {
    upstream: u16,
    plan: Mutex<Plan>,
    /// Set on drop: every thread ends.
    stop: AtomicBool,
    /// Set by [`FaultProxy::release`]: trickles and stalls in progress end.
    released: AtomicBool,
    connections: AtomicUsize,
    /// Connections currently open (client side).
    open: AtomicUsize,
    fired: AtomicUsize,
    commands: Mutex<Vec<String>>,
    /// Each connection's (by number) commands.
    active: Mutex<Vec<(usize, Vec<Sent>)>>,
}

/// A running proxy on 127.0.0.1; stops (and closes every connection) when dropped.
pub struct FaultProxy {
    port: u16,
    shared: Arc<Shared>,
    acceptor: Option<thread::JoinHandle<()>>,
}

impl FaultProxy {
    /// Starts a proxy to `127.0.0.1:<upstream>`; `plan(n)` is the fault of the n-th
    /// connection (from 0).
    pub fn start(
        upstream: u16,
        plan: impl Fn(usize) -> Fault + Send + Sync + 'static,
    ) -> FaultProxy {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind the proxy");
        let port = listener
            .local_addr()
            .expect("local_addr of a bound socket")
            .port();
        let shared = Arc::new(Shared {
            upstream,
            plan: Mutex::new(Arc::new(plan)),
            stop: AtomicBool::new(false),
            released: AtomicBool::new(false),
            connections: AtomicUsize::new(0),
            open: AtomicUsize::new(0),
            fired: AtomicUsize::new(0),
            commands: Mutex::new(Vec::new()),
            active: Mutex::new(Vec::new()),
        });
        let s = Arc::clone(&shared);
        let acceptor = thread::spawn(move || accept_loop(listener, s));
        FaultProxy {
            port,
            shared,
            acceptor: Some(acceptor),
        }
    }

    /// The port to point the account at (`host: 127.0.0.1` or `localhost`, `tls: none`).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Replaces the plan for the connections accepted from now on (numbering goes on).
    pub fn set_plan(&self, plan: impl Fn(usize) -> Fault + Send + Sync + 'static) {
        *lock(&self.shared.plan) = Arc::new(plan);
    }

    /// Ends the trickles and stalls in progress (and any later one): traffic flows freely.
    pub fn release(&self) {
        self.shared.released.store(true, Ordering::SeqCst);
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> usize {
        self.shared.connections.load(Ordering::SeqCst)
    }

    /// Connections open right now.
    pub fn open_connections(&self) -> usize {
        self.shared.open.load(Ordering::SeqCst)
    }

    /// How many times a fault actually struck (a drop, a stall or a trickle began, a reset).
    /// A test asserts it, so that it cannot pass with a fault that never happened.
    pub fn fired(&self) -> usize {
        self.shared.fired.load(Ordering::SeqCst)
    }

    /// Pairs of sessions that worked the mailbox at the same time, with their commands: each
    /// sent a mailbox command (anything but the login: CAPA, STLS, AUTH and its SASL lines,
    /// USER, PASS, APOP) between two of the other's. A session that sat idle (its client
    /// paused) while another came and went is not one; nor are sessions one after the other.
    pub fn overlapping_sessions(&self) -> Vec<String> {
        let active = lock(&self.shared.active);
        let login = ["CAPA", "STLS", "AUTH", "USER", "PASS", "APOP", "…", ""];
        let work = |c: &[Sent]| -> Vec<Instant> {
            (c.iter())
                .filter(|(_, v)| !login.contains(&v.as_str()))
                .map(|(t, _)| *t)
                .collect()
        };
        let within = |a: &[Sent], b: &[Sent]| {
            let b = work(b);
            let (Some(first), Some(last)) = (b.first(), b.last()) else {
                return false;
            };
            work(a).iter().any(|t| first < t && t < last)
        };
        let mut pairs = Vec::new();
        for (i, (n, a)) in active.iter().enumerate() {
            for (m, b) in &active[i + 1..] {
                if within(a, b) && within(b, a) {
                    let verbs = |c: &[Sent]| c.iter().map(|(_, v)| v.clone()).collect::<Vec<_>>();
                    pairs.push(format!("#{n} {:?} / #{m} {:?}", verbs(a), verbs(b)));
                }
            }
        }
        pairs
    }

    /// The command lines the clients sent, in order (for diagnostics; they hold passwords).
    pub fn commands(&self) -> Vec<String> {
        lock(&self.shared.commands).clone()
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        // Wake the blocking accept.
        let _ = TcpStream::connect((Ipv4Addr::LOCALHOST, self.port));
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.join();
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    for client in listener.incoming() {
        if shared.stop.load(Ordering::SeqCst) {
            return;
        }
        let Ok(client) = client else { continue };
        let n = shared.connections.fetch_add(1, Ordering::SeqCst);
        let plan = Arc::clone(&lock(&shared.plan));
        let fault = plan(n);
        let shared = Arc::clone(&shared);
        thread::spawn(move || {
            shared.open.fetch_add(1, Ordering::SeqCst);
            if let Ok(upstream) = TcpStream::connect((Ipv4Addr::LOCALHOST, shared.upstream)) {
                Connection::new(client, upstream, fault, Arc::clone(&shared), n).run();
            }
            shared.open.fetch_sub(1, Ordering::SeqCst);
        });
    }
}

/// One proxied connection.
struct Connection {
    client: TcpStream,
    upstream: TcpStream,
    fault: Fault,
    shared: Arc<Shared>,
    /// RETR commands the client sent so far.
    retrs: Arc<AtomicUsize>,
    /// Either side ended (or a fault ended the connection): both pumps stop.
    done: Arc<AtomicBool>,
    /// The connection is being reset: no graceful shutdown of the client side.
    reset: Arc<AtomicBool>,
    /// Its number (from 0), for [`FaultProxy::overlapping_sessions`].
    number: usize,
}

impl Connection {
    fn new(
        client: TcpStream,
        upstream: TcpStream,
        fault: Fault,
        shared: Arc<Shared>,
        number: usize,
    ) -> Self {
        Connection {
            client,
            upstream,
            fault,
            shared,
            retrs: Arc::new(AtomicUsize::new(0)),
            done: Arc::new(AtomicBool::new(false)),
            reset: Arc::new(AtomicBool::new(false)),
            number,
        }
    }

    fn clone_streams(&self) -> Option<(TcpStream, TcpStream)> {
        Some((
            self.client.try_clone().ok()?,
            self.upstream.try_clone().ok()?,
        ))
    }

    fn stopped(&self) -> bool {
        self.done.load(Ordering::SeqCst) || self.shared.stop.load(Ordering::SeqCst)
    }

    /// Pumps client → server on a new thread and server → client on this one.
    fn run(self) {
        let _ = self.client.set_read_timeout(Some(POLL));
        let _ = self.upstream.set_read_timeout(Some(POLL));
        let _ = self.client.set_nodelay(true);
        let _ = self.upstream.set_nodelay(true);
        let Some((client, upstream)) = self.clone_streams() else {
            return;
        };
        let up = Connection {
            client,
            upstream,
            fault: self.fault.clone(),
            shared: Arc::clone(&self.shared),
            retrs: Arc::clone(&self.retrs),
            done: Arc::clone(&self.done),
            reset: Arc::clone(&self.reset),
            number: self.number,
        };
        let client_to_server = thread::spawn(move || up.client_to_server());
        self.server_to_client();
        let _ = client_to_server.join();
        if !self.reset.load(Ordering::SeqCst) {
            let _ = self.client.shutdown(Shutdown::Both);
        }
        let _ = self.upstream.shutdown(Shutdown::Both);
    }

    /// Forwards the client's commands, counting RETRs and watching for DELE.
    fn client_to_server(mut self) {
        let delay = match self.fault {
            Fault::Delay { delay } => Some(delay),
            _ => None,
        };
        let mut out = Delayed::new(self.upstream.try_clone().ok(), delay);
        let mut line = Vec::new();
        let mut buf = [0u8; 16 * 1024];
        while !self.stopped() {
            let n = match self.client.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if is_timeout(&e) => continue,
                Err(_) => break,
            };
            for &b in &buf[..n] {
                line.push(b);
                if b == b'\n' {
                    self.command(&line);
                    line.clear();
                }
            }
            if self.fault == Fault::ResetOnDele && self.reset.load(Ordering::SeqCst) {
                // Not forwarded: the server never sees the DELE (nor a QUIT).
                self.shared.fired.fetch_add(1, Ordering::SeqCst);
                if let Ok(copy) = self.client.try_clone() {
                    let _ = tokio::net::TcpSocket::from_std_stream(copy).set_zero_linger();
                }
                break;
            }
            if !out.send(&buf[..n]) {
                break;
            }
        }
        out.finish();
        let _ = self.upstream.shutdown(Shutdown::Write);
        self.done.store(true, Ordering::SeqCst);
    }

    /// Notes one command line from the client.
    fn command(&self, line: &[u8]) {
        let text = String::from_utf8_lossy(line).trim_end().to_owned();
        let verb = text
            .split_whitespace()
            .next()
            .unwrap_or("")
            .to_ascii_uppercase();
        match verb.as_str() {
            "RETR" => {
                self.retrs.fetch_add(1, Ordering::SeqCst);
            }
            "DELE" if self.fault == Fault::ResetOnDele => self.reset.store(true, Ordering::SeqCst),
            _ => {}
        }
        lock(&self.shared.commands).push(text);
        // The verb only: a SASL line (bare base64) is not one to show.
        let shown = if verb.len() <= 4 && verb.bytes().all(|b| b.is_ascii_uppercase()) {
            verb
        } else {
            "…".to_owned()
        };
        let mut active = lock(&self.shared.active);
        let index = match active.iter().position(|(n, _)| *n == self.number) {
            Some(i) => i,
            None => {
                active.push((self.number, Vec::new()));
                active.len() - 1
            }
        };
        active[index].1.push((Instant::now(), shown));
    }

    /// Forwards the server's replies, applying the fault.
    fn server_to_client(&self) {
        let Ok(client) = self.client.try_clone() else {
            return;
        };
        let Ok(mut upstream) = self.upstream.try_clone() else {
            return;
        };
        let delay = match self.fault {
            Fault::Delay { delay } => Some(delay),
            _ => None,
        };
        let mut out = Delayed::new(Some(client), delay);
        // Bytes forwarded since the faulty RETR was sent; `None` before it.
        let mut since_retr: Option<usize> = None;
        let mut struck = false;
        // For DropLargeRetr: the RETR being answered, and the bytes of its answer so far.
        let (mut answering, mut answered) = (0, 0);
        let mut buf = [0u8; 16 * 1024];
        'pump: while !self.stopped() {
            let n = match upstream.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if is_timeout(&e) => continue,
                Err(_) => break,
            };
            let mut chunk = &buf[..n];
            if let Fault::DropLargeRetr { bytes } = self.fault {
                if self.retrs() != answering {
                    (answering, answered) = (self.retrs(), 0);
                }
                let take = if answering == 0 {
                    n
                } else {
                    bytes.saturating_sub(answered).min(n)
                };
                if !out.send(&chunk[..take]) {
                    break;
                }
                answered += take;
                if take < n {
                    self.shared.fired.fetch_add(1, Ordering::SeqCst);
                    self.done.store(true, Ordering::SeqCst);
                    break;
                }
                continue;
            }
            if since_retr.is_none() && self.fault_retr().is_some_and(|r| self.retrs() >= r) {
                since_retr = Some(0);
            }
            let Some(sent) = since_retr.as_mut() else {
                if !out.send(chunk) {
                    break;
                }
                continue;
            };
            match self.fault {
                Fault::DropMidRetr { bytes, .. } | Fault::Stall { bytes, .. } if !struck => {
                    let take = bytes.saturating_sub(*sent).min(chunk.len());
                    if !out.send(&chunk[..take]) {
                        break;
                    }
                    *sent += take;
                    chunk = &chunk[take..];
                    if *sent < bytes {
                        continue;
                    }
                    struck = true;
                    self.shared.fired.fetch_add(1, Ordering::SeqCst);
                    if let Fault::Stall { duration, .. } = self.fault {
                        let until = Instant::now() + duration;
                        while Instant::now() < until && !self.stopped() && !self.released() {
                            thread::sleep(POLL);
                        }
                        if !out.send(chunk) {
                            break;
                        }
                    } else {
                        // Drop: the client sees the connection end mid-response.
                        self.done.store(true, Ordering::SeqCst);
                        break;
                    }
                }
                Fault::Trickle { every, .. } => {
                    if !struck {
                        struck = true;
                        self.shared.fired.fetch_add(1, Ordering::SeqCst);
                    }
                    for i in 0..chunk.len() {
                        if self.stopped() {
                            break 'pump;
                        }
                        if self.released() {
                            if !out.send(&chunk[i..]) {
                                break 'pump;
                            }
                            continue 'pump;
                        }
                        if !out.send(&chunk[i..=i]) {
                            break 'pump;
                        }
                        thread::sleep(every);
                    }
                }
                _ => {
                    if !out.send(chunk) {
                        break;
                    }
                }
            }
        }
        out.finish();
        self.done.store(true, Ordering::SeqCst);
    }

    fn fault_retr(&self) -> Option<usize> {
        match self.fault {
            Fault::DropMidRetr { retr, .. }
            | Fault::Stall { retr, .. }
            | Fault::Trickle { retr, .. } => Some(retr),
            _ => None,
        }
    }

    fn retrs(&self) -> usize {
        self.retrs.load(Ordering::SeqCst)
    }

    fn released(&self) -> bool {
        self.shared.released.load(Ordering::SeqCst)
    }
}

/// A writer that forwards at once, or (with a delay) through a thread that holds each chunk
/// until `delay` after it arrived, in order.
struct Delayed {
    direct: Option<TcpStream>,
    queue: Option<mpsc::Sender<(Instant, Vec<u8>)>>,
    writer: Option<thread::JoinHandle<()>>,
    failed: Arc<AtomicBool>,
}

impl Delayed {
    fn new(stream: Option<TcpStream>, delay: Option<Duration>) -> Delayed {
        let failed = Arc::new(AtomicBool::new(stream.is_none()));
        let Some(delay) = delay else {
            return Delayed {
                direct: stream,
                queue: None,
                writer: None,
                failed,
            };
        };
        let (tx, rx) = mpsc::channel::<(Instant, Vec<u8>)>();
        let f = Arc::clone(&failed);
        let writer = thread::spawn(move || {
            let Some(mut stream) = stream else { return };
            for (arrived, chunk) in rx {
                let due = arrived + delay;
                let now = Instant::now();
                if due > now {
                    thread::sleep(due - now);
                }
                if stream.write_all(&chunk).is_err() {
                    f.store(true, Ordering::SeqCst);
                    return;
                }
            }
        });
        Delayed {
            direct: None,
            queue: Some(tx),
            writer: Some(writer),
            failed,
        }
    }

    /// Forwards `chunk`; false once the destination is gone.
    fn send(&mut self, chunk: &[u8]) -> bool {
        if self.failed.load(Ordering::SeqCst) {
            return false;
        }
        if chunk.is_empty() {
            return true;
        }
        if let Some(stream) = self.direct.as_mut() {
            if stream.write_all(chunk).is_err() {
                self.failed.store(true, Ordering::SeqCst);
                return false;
            }
            return true;
        }
        match &self.queue {
            Some(q) => q.send((Instant::now(), chunk.to_vec())).is_ok(),
            None => false,
        }
    }

    /// Waits until every held chunk was written.
    fn finish(&mut self) {
        self.queue = None;
        if let Some(writer) = self.writer.take() {
            let _ = writer.join();
        }
    }
}

fn is_timeout(e: &std::io::Error) -> bool {
    matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut)
}
