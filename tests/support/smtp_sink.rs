//! Postfix's `smtp-sink` as the internal mail server, recording every accepted transaction.
//!
//! What `smtp-sink -D FILE` writes, verified by experiment with Postfix 3.7: per transaction
//! whose DATA it accepted (refused ones leave nothing),
//!
//! ```text
//! X-Client-Addr: 127.0.0.1
//! X-Client-Proto: ESMTP
//! X-Helo-Args: gateway.corp.local
//! X-Mail-Args: <sender@example.org> BODY=8BITMIME      (MAIL FROM's argument, as sent)
//! X-Rcpt-Args: <alice@example.com>                     (one line per accepted RCPT)
//! Received: from gateway.corp.local ([127.0.0.1])      (added by smtp-sink)
//! \tby HOST (smtp-sink) with ESMTP id 274d83ae;
//! \tSun, 22 Nov 2026 01:57:50 +0000 (UTC)
//! <the message, dots unstuffed, every line ending in LF>
//! <one empty line>
//! ```
//!
//! Each transaction is written whole at the end of DATA (also when sessions overlap).
//! What it does to the message bytes:
//! - CRLF becomes LF; a bare LF also ends a line (kept as LF); a bare CR is dropped.
//! - 8-bit bytes (UTF-8 or not) are written unchanged.
//! - A message that does not end in a newline cannot be told apart from one that does: the
//!   SMTP client must end the data with CRLF "." CRLF, so the last line is written with its
//!   LF like every other. Compare with [`as_sink_stores`] of the original.
//! - Trailing empty lines of the message are kept, then comes the separating empty line; an
//!   empty message is just that empty line.
//!
//! [`SmtpSink::transactions`] splits the file at an empty line followed by `X-Client-Addr: `
//! (and then an `X-Mail-Args: ` line before the next empty line), so messages containing
//! empty lines, or lines that merely look like dump headers, parse correctly.

use std::io::{BufRead, BufReader};
use std::net::{Ipv4Addr, TcpStream};
use std::os::unix::fs::{PermissionsExt, chown};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use std::{fs, thread};

use super::{MAIL_USER, free_port, is_root, mail_user_ids, wait_until};

const SMTP_SINK: &str = "/usr/sbin/smtp-sink";
const START_ATTEMPTS: usize = 5;

/// One transaction smtp-sink accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transaction {
    /// MAIL FROM's address without the angle brackets; empty for the null sender `<>`.
    pub mail_from: String,
    /// Every accepted RCPT's address without the angle brackets, in order.
    pub rcpts: Vec<String>,
    /// The message as smtp-sink stored it (see the module doc): LF line ends, without
    /// smtp-sink's own `Received:` header, without the separating empty line.
    pub message: Vec<u8>,
}

impl Transaction {
    /// The message's header section (up to, not including, the empty line).
    pub fn header_section(&self) -> &[u8] {
        match find(&self.message, b"\n\n") {
            Some(i) => &self.message[..i + 1],
            None => &self.message,
        }
    }

    /// The body: everything after the first empty line (empty if there is none).
    pub fn body(&self) -> &[u8] {
        match find(&self.message, b"\n\n") {
            Some(i) => &self.message[i + 2..],
            None => &[],
        }
    }

    /// The first header field called `name` (case-insensitive), unfolded, trimmed.
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers(name).into_iter().next()
    }

    /// Every header field called `name` (case-insensitive), unfolded, trimmed, in order.
    pub fn headers(&self, name: &str) -> Vec<String> {
        let text = String::from_utf8_lossy(self.header_section()).into_owned();
        let mut fields: Vec<(String, String)> = Vec::new();
        for line in text.split('\n') {
            if line.starts_with([' ', '\t']) {
                if let Some((_, value)) = fields.last_mut() {
                    value.push(' ');
                    value.push_str(line.trim());
                }
            } else if let Some((n, v)) = line.split_once(':') {
                fields.push((n.to_owned(), v.trim().to_owned()));
            }
        }
        fields
            .into_iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v)
            .collect()
    }

    /// The Subject header as written (not RFC 2047-decoded); empty if there is none.
    pub fn subject(&self) -> String {
        self.header("Subject").unwrap_or_default()
    }
}

/// What smtp-sink stores for a message relayed from `raw` unchanged: CRLF → LF, bare CR
/// dropped, a final LF added if missing (see the module doc).
pub fn as_sink_stores(raw: &[u8]) -> Vec<u8> {
    let mut out: Vec<u8> = raw.iter().copied().filter(|&b| b != b'\r').collect();
    if !out.is_empty() && !out.ends_with(b"\n") {
        out.push(b'\n');
    }
    out
}

/// A running `smtp-sink` on 127.0.0.1, killed (and its files removed) when dropped.
pub struct SmtpSink {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
}

impl SmtpSink {
    /// Starts `smtp-sink -u mailferry-test -D FILE EXTRA... 127.0.0.1:PORT 512` and waits until
    /// it greets. `extra` are further options, e.g. `&["-f", "data"]` to refuse every DATA
    /// with 5xx, `&["-r", "rcpt"]` for 4xx to every RCPT, `&["-q", "data"]` to disconnect.
    pub fn start(extra: &[&str]) -> SmtpSink {
        let dir = tempfile::Builder::new()
            .prefix("mfs-")
            .tempdir_in("/tmp")
            .expect("create a temporary directory under /tmp");
        let root = is_root();
        if root {
            // smtp-sink opens the dump file after switching to the -u user.
            let (uid, gid) = mail_user_ids();
            chown(dir.path(), Some(uid), Some(gid)).expect("chown the smtp-sink directory");
        }
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755))
            .expect("chmod the smtp-sink directory");
        // A greeting name of our own tells our sink from anything else on the port.
        let name = dir
            .path()
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "mfs".to_owned());

        let mut failures = String::new();
        for _ in 0..START_ATTEMPTS {
            let port = free_port();
            let stderr_file =
                fs::File::create(dir.path().join("stderr")).expect("create smtp-sink's stderr");
            let mut cmd = Command::new(SMTP_SINK);
            if root {
                cmd.args(["-u", MAIL_USER]);
            }
            cmd.arg("-h")
                .arg(&name)
                .arg("-D")
                .arg(dir.path().join("dump"))
                .args(extra)
                .arg(format!("127.0.0.1:{port}"))
                .arg("512")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(stderr_file);
            let mut child = cmd.spawn().unwrap_or_else(|e| {
                panic!("cannot start {SMTP_SINK} (scripts/install-deps.sh installs postfix): {e}")
            });
            let greets = || {
                let Ok(stream) = TcpStream::connect((Ipv4Addr::LOCALHOST, port)) else {
                    return false;
                };
                let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
                let mut line = String::new();
                let _ = BufReader::new(stream).read_line(&mut line);
                line.starts_with("220 ") && line.contains(&name)
            };
            let mut exited = false;
            let ready = wait_until(Duration::from_secs(10), || {
                exited = matches!(child.try_wait(), Ok(Some(_)));
                !exited && greets()
            });
            if ready {
                return SmtpSink { child, port, dir };
            }
            let _ = child.kill();
            let _ = child.wait();
            failures.push_str(&fs::read_to_string(dir.path().join("stderr")).unwrap_or_default());
            // Exited: most likely the port was taken meanwhile; try another.
            thread::sleep(Duration::from_millis(50));
        }
        panic!("smtp-sink did not start:\n{failures}");
    }

    /// The port it listens on (127.0.0.1).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The dump file (`-D`).
    pub fn dump_file(&self) -> PathBuf {
        self.dir.path().join("dump")
    }

    /// The raw dump so far.
    pub fn dump(&self) -> Vec<u8> {
        fs::read(self.dump_file()).unwrap_or_default()
    }

    /// Every transaction accepted so far, in the order smtp-sink completed them.
    pub fn transactions(&self) -> Vec<Transaction> {
        parse_dump(&self.dump())
    }

    /// Waits up to `timeout` until at least `n` transactions were accepted; returns them all
    /// (fewer on a timeout: check how many).
    #[must_use = "on a timeout it returns fewer than `n`: assert on what it returns"]
    pub fn wait_for(&self, n: usize, timeout: Duration) -> Vec<Transaction> {
        let mut got = Vec::new();
        wait_until(timeout, || {
            got = self.transactions();
            got.len() >= n
        });
        got
    }

    /// Waits up to 20 s for the transaction whose Subject is `subject`; its RCPTs (none on a
    /// timeout).
    pub fn rcpts_of(&self, subject: &str) -> Vec<String> {
        let mut found = Vec::new();
        wait_until(Duration::from_secs(20), || {
            found = (self.transactions().into_iter())
                .filter(|t| t.subject() == subject)
                .flat_map(|t| t.rcpts)
                .collect();
            !found.is_empty()
        });
        found
    }
}

impl Drop for SmtpSink {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Splits an `smtp-sink -D` dump into transactions (format in the module doc).
pub fn parse_dump(dump: &[u8]) -> Vec<Transaction> {
    let mut out = Vec::new();
    let mut pos = 0;
    while pos < dump.len() {
        let start = pos;
        let mut mail_from = String::new();
        let mut rcpts = Vec::new();
        // The X-* lines smtp-sink writes before the message.
        while let Some(line) = line_at(dump, pos) {
            let text = String::from_utf8_lossy(line.strip_suffix(b"\n").unwrap_or(line));
            let known = ["X-Client-", "X-Helo-Args:", "X-Mail-Args:", "X-Rcpt-Args:"];
            if !known.iter().any(|k| text.starts_with(k)) {
                break;
            }
            if let Some(v) = text.strip_prefix("X-Mail-Args:") {
                mail_from = envelope_address(v);
            } else if let Some(v) = text.strip_prefix("X-Rcpt-Args:") {
                rcpts.push(envelope_address(v));
            }
            pos += line.len();
        }
        // smtp-sink's own Received header, with its continuation lines.
        let received_end = header_field_end(dump, pos);
        if dump[pos..].starts_with(b"Received: ")
            && find(&dump[pos..received_end], b"(smtp-sink)").is_some()
        {
            pos = received_end;
        }
        let message_start = pos;
        let end = next_record(dump, message_start).unwrap_or(dump.len());
        // The record ends with one separating empty line.
        let message_end = if end > message_start && dump[end - 1] == b'\n' {
            end - 1
        } else {
            end
        };
        out.push(Transaction {
            mail_from,
            rcpts,
            message: dump[message_start..message_end].to_vec(),
        });
        pos = end;
        if pos == start {
            break; // never loop without progress
        }
    }
    out
}

/// `<addr> PARAMS...` → `addr` (a quoted local part may hold spaces and `>`).
fn envelope_address(args: &str) -> String {
    let args = args.trim_start();
    if let Some(rest) = args.strip_prefix('<') {
        let mut quoted = false;
        for (i, c) in rest.char_indices() {
            match c {
                '"' => quoted = !quoted,
                '>' if !quoted => return rest[..i].to_owned(),
                _ => {}
            }
        }
    }
    args.split_whitespace().next().unwrap_or("").to_owned()
}

/// The line starting at `pos`, with its LF; `None` at the end.
fn line_at(buf: &[u8], pos: usize) -> Option<&[u8]> {
    if pos >= buf.len() {
        return None;
    }
    let end = find(&buf[pos..], b"\n").map_or(buf.len(), |i| pos + i + 1);
    Some(&buf[pos..end])
}

/// Where the header field starting at `pos` ends (after its last continuation line).
fn header_field_end(buf: &[u8], pos: usize) -> usize {
    let mut end = match line_at(buf, pos) {
        Some(l) => pos + l.len(),
        None => return pos,
    };
    while let Some(l) = line_at(buf, end) {
        if l.starts_with(b" ") || l.starts_with(b"\t") {
            end += l.len();
        } else {
            break;
        }
    }
    end
}

/// The start of the next record after a message starting at `from` (a line start): the
/// position after an empty line that is followed by `X-Client-Addr: ` and an `X-Mail-Args: `
/// line before the next empty line.
fn next_record(buf: &[u8], from: usize) -> Option<usize> {
    let mut q = from;
    while q < buf.len() {
        if buf[q] == b'\n' && looks_like_record(&buf[q + 1..]) {
            return Some(q + 1);
        }
        q += find(&buf[q..], b"\n")? + 1;
    }
    None
}

fn looks_like_record(rest: &[u8]) -> bool {
    if !rest.starts_with(b"X-Client-Addr: ") {
        return false;
    }
    let block_end = find(rest, b"\n\n").unwrap_or(rest.len());
    let block = &rest[..block_end];
    block.starts_with(b"X-Mail-Args: ") || find(block, b"\nX-Mail-Args: ").is_some()
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}
