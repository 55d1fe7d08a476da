//! A fake line-protocol server (POP3, IMAP) that follows a conversation step by step: expect
//! this command line, send these bytes, upgrade to TLS, close, hang, trickle; after the
//! script, optionally answer each further line (IMAP's LOGOUT with BYE). It serves one
//! connection and records every line the client sent; a line other than the one expected
//! ends it with an error that [`Scripted::finish`] reports. For the clients' wire tests, where
//! the exact bytes and their order are the point (Dovecot serves the end-to-end tests).
//!
//! ```ignore
//! let fake = Scripted::start(vec![send("+OK ready\r\n"), Step::Expect("CAPA"), ...],
//!     Split::ByteByByte, None).await;
//! // ... connect a client to fake.addr() ...
//! assert_eq!(fake.finish().await, ["CAPA", "USER alice", "PASS s3cret", "QUIT"]);
//! ```

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;

use super::{Split, write_split};

/// One step of the fake server's side of the conversation.
pub enum Step {
    /// Write these bytes (split as the fake was told).
    Send(Vec<u8>),
    /// Read one command line; it must be exactly this.
    Expect(&'static str),
    /// TLS handshake as the server; recorded as "[TLS]".
    StartTls,
    /// Close the connection at once.
    Close,
    /// Stop answering, keep the connection open until the client goes.
    Hang,
    /// Wait this long.
    Sleep(Duration),
    /// Write these bytes one at a time, this long apart (whatever the split); stop quietly
    /// when the client has gone.
    Trickle(Vec<u8>, Duration),
    /// Fail unless the client has acknowledged (TCP ACK) every byte written so far. A server
    /// that leaves Nagle's algorithm on holds a small segment until then: after a
    /// [`Step::Sleep`] shorter than the 40 ms delayed ACK, this tells a client that ACKs
    /// promptly from one that would stall such a server.
    ExpectAcked,
    /// Fail if the client sends anything within this time (before a reply it must wait
    /// for: a pipelining client that does not wait for the login to complete).
    Quiet(Duration),
    /// Read one command line and send what the function makes of it (e.g. a SASL challenge
    /// built from the client's nonce); an `Err` ends the conversation with that error.
    Reply(fn(&str) -> Result<Vec<u8>, String>),
}

/// [`Step::Send`] of a string.
pub fn send(s: &str) -> Step {
    Step::Send(s.as_bytes().to_vec())
}

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// A scripted server serving one connection on 127.0.0.1, on the caller's tokio runtime.
pub struct Scripted {
    addr: SocketAddr,
    /// Every line the client sent, in order, plus "[TLS]" where the handshake happened.
    received: Arc<Mutex<Vec<String>>>,
    task: JoinHandle<Result<(), String>>,
}

impl Scripted {
    /// Listens and serves the first connection with `script`, writing as `split` says;
    /// `tls` is the acceptor for [`Step::StartTls`].
    pub async fn start(script: Vec<Step>, split: Split, tls: Option<TlsAcceptor>) -> Scripted {
        Scripted::answering(script, split, tls, |_| None).await
    }

    /// [`start`](Scripted::start), and after the script, `answer` each further line the
    /// client sends with what it returns (e.g. IMAP's LOGOUT with BYE).
    pub async fn answering(
        script: Vec<Step>,
        split: Split,
        tls: Option<TlsAcceptor>,
        answer: fn(&str) -> Option<String>,
    ) -> Scripted {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("local_addr");
        let received = Arc::new(Mutex::new(Vec::new()));
        let log = received.clone();
        let task = tokio::spawn(async move {
            let (tcp, peer) = listener.accept().await.map_err(|e| e.to_string())?;
            tcp.set_nodelay(true).map_err(|e| e.to_string())?;
            let ends = (addr, peer);
            serve(Box::new(tcp), ends, script, split, tls, log, answer).await
        });
        Scripted {
            addr,
            received,
            task,
        }
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The lines received so far.
    pub fn received(&self) -> Vec<String> {
        self.received
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Waits (up to 10 s) for the server to finish its script and the client to hang up;
    /// returns the lines received, or the server's error (a line not as expected, a failed
    /// handshake). Panics if it does not finish.
    pub async fn outcome(self) -> Result<Vec<String>, String> {
        tokio::time::timeout(Duration::from_secs(10), self.task)
            .await
            .expect("fake server did not finish")
            .expect("fake server panicked")?;
        Ok(self
            .received
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone())
    }

    /// [`Scripted::outcome`], panicking on the server's error.
    pub async fn finish(self) -> Vec<String> {
        self.outcome().await.unwrap_or_else(|e| panic!("{e}"))
    }

    /// Stops serving at once (for a conversation the client never starts).
    pub fn abort(self) {
        self.task.abort();
    }
}

/// Serves the connection between `ends` (ours, the client's).
async fn serve(
    stream: Box<dyn Io>,
    ends: (SocketAddr, SocketAddr),
    script: Vec<Step>,
    split: Split,
    tls: Option<TlsAcceptor>,
    log: Arc<Mutex<Vec<String>>>,
    answer: fn(&str) -> Option<String>,
) -> Result<(), String> {
    let record = |line: String| log.lock().unwrap_or_else(|e| e.into_inner()).push(line);
    let mut io = BufReader::new(stream);
    for step in script {
        match step {
            Step::Send(bytes) => write_split(io.get_mut(), &bytes, split)
                .await
                .map_err(|e| e.to_string())?,
            Step::Expect(want) => {
                let line = read_line(&mut io).await?;
                record(line.clone());
                if line != want {
                    return Err(format!("expected {want:?}, got {line:?}"));
                }
            }
            Step::StartTls => {
                if !io.buffer().is_empty() {
                    return Err("client sent data before the handshake".into());
                }
                let acceptor = tls.clone().ok_or("no TLS acceptor")?;
                let tls = acceptor
                    .accept(io.into_inner())
                    .await
                    .map_err(|e| format!("server handshake: {e}"))?;
                record("[TLS]".into());
                io = BufReader::new(Box::new(tls));
            }
            Step::Reply(reply) => {
                let line = read_line(&mut io).await?;
                record(line.clone());
                let bytes = reply(&line)?;
                write_split(io.get_mut(), &bytes, split)
                    .await
                    .map_err(|e| e.to_string())?;
            }
            Step::Close => return Ok(()),
            Step::Hang => break,
            Step::Sleep(pause) => tokio::time::sleep(pause).await,
            Step::Quiet(window) => {
                if let Ok(Ok(early)) = tokio::time::timeout(window, io.fill_buf()).await
                    && !early.is_empty()
                {
                    let early = String::from_utf8_lossy(early).into_owned();
                    return Err(format!("client sent {early:?} before it was answered"));
                }
            }
            Step::ExpectAcked => match unacked(ends)? {
                0 => {}
                n => return Err(format!("{n} byte(s) sent not acknowledged by the client")),
            },
            Step::Trickle(bytes, every) => {
                for b in bytes {
                    let write = async {
                        io.get_mut().write_all(&[b]).await?;
                        io.get_mut().flush().await
                    };
                    if write.await.is_err() {
                        return Ok(());
                    }
                    tokio::time::sleep(every).await;
                }
            }
        }
    }
    // Record whatever else the client says until it hangs up.
    loop {
        match tokio::time::timeout(Duration::from_secs(10), read_line(&mut io)).await {
            Ok(Ok(line)) => {
                if let Some(reply) = answer(&line) {
                    write_split(io.get_mut(), reply.as_bytes(), Split::Whole)
                        .await
                        .map_err(|e| e.to_string())?;
                }
                record(line);
            }
            Ok(Err(_)) => return Ok(()),
            Err(_) => return Err("client neither spoke nor hung up".into()),
        }
    }
}

/// How many bytes we sent on the connection between `ends` (ours, the peer's) that the peer
/// has not acknowledged yet: the `tx_queue` of its line in /proc/net/tcp (Linux; IPv4).
fn unacked((local, peer): (SocketAddr, SocketAddr)) -> Result<u64, String> {
    // Addresses there are "0100007F:1F90": the IPv4 address as the host-order u32, the port.
    let hex = |addr: SocketAddr| match addr.ip() {
        IpAddr::V4(ip) => Ok(format!(
            "{:08X}:{:04X}",
            u32::from_ne_bytes(ip.octets()),
            addr.port()
        )),
        IpAddr::V6(_) => Err("ExpectAcked needs an IPv4 connection".to_owned()),
    };
    let (local, peer) = (hex(local)?, hex(peer)?);
    let table = std::fs::read_to_string("/proc/net/tcp").map_err(|e| e.to_string())?;
    table
        .lines()
        .skip(1)
        .find_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.get(1) != Some(&local.as_str()) || f.get(2) != Some(&peer.as_str()) {
                return None;
            }
            let tx = f.get(4)?.split(':').next()?;
            u64::from_str_radix(tx, 16).ok()
        })
        .ok_or_else(|| format!("connection {local} -> {peer} not in /proc/net/tcp"))
}

async fn read_line(io: &mut BufReader<Box<dyn Io>>) -> Result<String, String> {
    let mut line = Vec::new();
    let n = io
        .read_until(b'\n', &mut line)
        .await
        .map_err(|e| e.to_string())?;
    if n == 0 {
        return Err("client closed".into());
    }
    let line = String::from_utf8(line).map_err(|e| e.to_string())?;
    Ok(line.trim_end_matches("\r\n").to_owned())
}
