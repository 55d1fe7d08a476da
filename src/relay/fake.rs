//! A scripted fake SMTP server for the relay tests: answers each command from a table and
//! records what it received, the data exactly as it came over the wire (still dot-stuffed).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

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
    /// Close the connection after answering the final dot.
    pub close_after_data: bool,
}

impl Default for Script {
    fn default() -> Script {
        Script {
            extensions: vec!["8BITMIME", "SMTPUTF8"],
            mail: "250 2.1.0 ok",
            rcpt: HashMap::new(),
            data: "354 go ahead",
            data_end: Some("250 2.0.0 queued as 1234"),
            close_after_data: false,
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
    /// The data of each message, as received, without the final ".\r\n" line.
    pub data: Vec<Vec<u8>>,
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
                shared.lock().unwrap().connections += 1;
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

async fn session(stream: TcpStream, script: &Script, log: &Mutex<Log>) -> std::io::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut read = BufReader::new(read);
    write.write_all(b"220 fake.test ESMTP\r\n").await?;
    let mut line = Vec::new();
    loop {
        line.clear();
        if read.read_until(b'\n', &mut line).await? == 0 {
            return Ok(());
        }
        let command = String::from_utf8_lossy(&line)
            .trim_end_matches("\r\n")
            .to_owned();
        log.lock().unwrap().commands.push(command.clone());
        let upper = command.to_ascii_uppercase();
        let reply: String = if upper.starts_with("EHLO") {
            let mut lines = vec!["fake.test".to_owned()];
            lines.extend(script.extensions.iter().map(|s| s.to_string()));
            let last = lines.len() - 1;
            lines
                .iter()
                .enumerate()
                .map(|(i, l)| format!("250{}{l}", if i == last { ' ' } else { '-' }))
                .collect::<Vec<_>>()
                .join("\r\n")
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
            write
                .write_all(format!("{}\r\n", script.data).as_bytes())
                .await?;
            if !script.data.starts_with('3') {
                continue;
            }
            let mut data = Vec::new();
            loop {
                line.clear();
                if read.read_until(b'\n', &mut line).await? == 0 {
                    return Ok(());
                }
                if line == b".\r\n" {
                    break;
                }
                data.extend_from_slice(&line);
            }
            log.lock().unwrap().data.push(data);
            let Some(end) = script.data_end else {
                // Never answer; hold the connection until the client goes away.
                while read.read_until(b'\n', &mut line).await? > 0 {}
                return Ok(());
            };
            write.write_all(format!("{end}\r\n").as_bytes()).await?;
            if script.close_after_data {
                return Ok(());
            }
            continue;
        } else if upper == "RSET" || upper == "NOOP" {
            "250 2.0.0 ok".to_owned()
        } else if upper == "QUIT" {
            write.write_all(b"221 2.0.0 bye\r\n").await?;
            return Ok(());
        } else {
            "500 5.5.2 unknown command".to_owned()
        };
        write.write_all(format!("{reply}\r\n").as_bytes()).await?;
    }
}
