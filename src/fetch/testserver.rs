//! A scripted fake server on 127.0.0.1 for the POP3 and IMAP client tests: it plays its side
//! of a conversation step by step (writing each reply whole, byte by byte or split in two),
//! checks each line the client sends, and records them all.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;

/// One step of the fake server's side of the conversation.
pub(crate) enum Step {
    /// Write these bytes (split as the run says).
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
}

/// `Send` of a text.
pub(crate) fn send(s: &str) -> Step {
    Step::Send(s.as_bytes().to_vec())
}

/// How each `Send` is written.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Split {
    Whole,
    /// One byte per write.
    ByteByByte,
    /// Two writes, the first of this many bytes.
    At(usize),
}

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// The fake server, serving one connection.
pub(crate) struct Fake {
    /// Where it listens.
    pub(crate) addr: SocketAddr,
    /// Every line the client sent, in order, plus "[TLS]" where the handshake happened.
    pub(crate) received: Arc<Mutex<Vec<String>>>,
    /// The server's task: its script's outcome.
    pub(crate) task: JoinHandle<Result<(), String>>,
}

impl Fake {
    /// Listens, and plays `script` to the first client.
    pub(crate) async fn start(script: Vec<Step>, split: Split, tls: Option<TlsAcceptor>) -> Fake {
        Fake::answering(script, split, tls, |_| None).await
    }

    /// [`start`](Fake::start), and after the script, `answer` each further line the client
    /// sends with what it returns (e.g. IMAP's LOGOUT with BYE).
    pub(crate) async fn answering(
        script: Vec<Step>,
        split: Split,
        tls: Option<TlsAcceptor>,
        answer: fn(&str) -> Option<String>,
    ) -> Fake {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let received = Arc::new(Mutex::new(Vec::new()));
        let log = received.clone();
        let task = tokio::spawn(async move {
            let (tcp, _) = listener.accept().await.map_err(|e| e.to_string())?;
            tcp.set_nodelay(true).unwrap();
            serve(Box::new(tcp), script, split, tls, log, answer).await
        });
        Fake {
            addr,
            received,
            task,
        }
    }

    /// The lines received so far.
    pub(crate) fn received(&self) -> Vec<String> {
        self.received.lock().unwrap().clone()
    }

    /// Waits for the server to finish its script and the client to hang up.
    pub(crate) async fn finish(self) -> Vec<String> {
        tokio::time::timeout(Duration::from_secs(10), self.task)
            .await
            .expect("fake server did not finish")
            .unwrap()
            .unwrap();
        self.received.lock().unwrap().clone()
    }
}

async fn serve(
    stream: Box<dyn Io>,
    script: Vec<Step>,
    split: Split,
    tls: Option<TlsAcceptor>,
    log: Arc<Mutex<Vec<String>>>,
    answer: fn(&str) -> Option<String>,
) -> Result<(), String> {
    let mut io = BufReader::new(stream);
    for step in script {
        match step {
            Step::Send(bytes) => write_split(io.get_mut(), &bytes, split).await?,
            Step::Expect(want) => {
                let line = read_line(&mut io).await?;
                log.lock().unwrap().push(line.clone());
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
                log.lock().unwrap().push("[TLS]".into());
                io = BufReader::new(Box::new(tls));
            }
            Step::Close => return Ok(()),
            Step::Hang => break,
            Step::Sleep(pause) => tokio::time::sleep(pause).await,
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
                    write_split(io.get_mut(), reply.as_bytes(), Split::Whole).await?;
                }
                log.lock().unwrap().push(line);
            }
            Ok(Err(_)) => return Ok(()),
            Err(_) => return Err("client neither spoke nor hung up".into()),
        }
    }
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

async fn write_split(io: &mut Box<dyn Io>, bytes: &[u8], split: Split) -> Result<(), String> {
    let pause = || tokio::time::sleep(Duration::from_millis(1));
    let result = async {
        match split {
            Split::Whole => io.write_all(bytes).await?,
            Split::ByteByByte => {
                for b in bytes {
                    io.write_all(&[*b]).await?;
                    io.flush().await?;
                    pause().await;
                }
            }
            Split::At(k) if k < bytes.len() => {
                io.write_all(&bytes[..k]).await?;
                io.flush().await?;
                pause().await;
                io.write_all(&bytes[k..]).await?;
            }
            Split::At(_) => io.write_all(bytes).await?,
        }
        io.flush().await
    };
    result.await.map_err(|e| e.to_string())
}
