//! The byte stream of an IMAP session: whole responses read with a timeout on every read
//! (and an overall deadline for a message download), commands written with a timeout, a
//! flag set once the session is out of step.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::ImapError;
use super::command::{Command, Part};
use super::protocol::{self, Literal, RawResponse, Response, TEXT_MAX};
use crate::fetch::transport::{Deadline, Stream, TransportError, read_within, write_within};

/// Read buffer size.
const BUF_SIZE: usize = 64 * 1024;
/// A literal is kept in memory reserved up front from its announced size, but never more
/// than this at once (a server announcing a huge literal it never sends costs nothing).
const RESERVE_MAX: u64 = 16 * 1024 * 1024;

/// An IMAP byte stream with its read buffer.
pub(super) struct Connection {
    pub(super) stream: Box<dyn Stream>,
    buf: Box<[u8]>,
    start: usize,
    end: usize,
    timeout: Duration,
    deadline: Option<Deadline>,
    lost: bool,
    /// The account's name, for the log.
    pub(super) account: String,
    next_tag: u32,
}

impl Connection {
    pub(super) fn new(stream: Box<dyn Stream>, timeout: Duration, account: String) -> Connection {
        Connection {
            stream,
            buf: vec![0; BUF_SIZE].into_boxed_slice(),
            start: 0,
            end: 0,
            timeout,
            deadline: None,
            lost: false,
            account,
            next_tag: 1,
        }
    }

    /// Whether bytes the server sent are waiting unread.
    pub(super) fn has_buffered(&self) -> bool {
        self.start < self.end
    }

    /// Whether the session is out of step or gone.
    pub(super) fn is_lost(&self) -> bool {
        self.lost
    }

    /// Marks the session dead when `result` is an error that leaves it unusable.
    pub(super) fn guard<T>(&mut self, result: Result<T, ImapError>) -> Result<T, ImapError> {
        if let Err(e) = &result
            && e.connection_lost()
        {
            self.lost = true;
        }
        result
    }

    /// A fresh tag (`A1`, `A2`, ...).
    pub(super) fn tag(&mut self) -> String {
        let tag = format!("A{}", self.next_tag);
        self.next_tag += 1;
        tag
    }

    /// Starts an overall deadline for the download `command`, of a message announced as
    /// `announced` octets; it moves with the octets received.
    pub(super) fn start_deadline(&mut self, command: &str, announced: u64) {
        self.deadline = Some(Deadline::new(
            command.to_owned(),
            self.timeout,
            announced,
            None,
        ));
    }

    pub(super) fn end_deadline(&mut self) {
        self.deadline = None;
    }

    /// Writes bytes, bounded by the timeout.
    pub(super) async fn write(&mut self, bytes: &[u8]) -> Result<(), ImapError> {
        if self.lost {
            return Err(ImapError::ConnectionClosed);
        }
        let result = write_within(&mut *self.stream, bytes, self.timeout).await;
        self.guard(result.map_err(ImapError::from))
    }

    /// Sends `command` under `tag`. A literal goes as `{n+}` when `literal_plus` (LITERAL+),
    /// else as `{n}` after which the server's `+` is awaited; a tagged reply instead (the
    /// server refuses the command early) is returned as `Some`. Untagged responses read
    /// meanwhile go to `untagged`.
    pub(super) async fn send(
        &mut self,
        tag: &str,
        command: &Command,
        literal_plus: bool,
        untagged: &mut Vec<Response>,
    ) -> Result<Option<Response>, ImapError> {
        tracing::debug!(account = %self.account, "C: {tag} {}", command.shown);
        let mut pending = format!("{tag} ").into_bytes();
        for part in &command.parts {
            match part {
                Part::Text(text) => pending.extend_from_slice(text),
                Part::Literal(bytes) => {
                    let plus = if literal_plus { "+" } else { "" };
                    pending.extend_from_slice(format!("{{{}{plus}}}\r\n", bytes.len()).as_bytes());
                    self.write(&std::mem::take(&mut pending)).await?;
                    if !literal_plus {
                        loop {
                            match self.read_response(protocol::LITERAL_MAX).await? {
                                Response::Continue(_) => break,
                                r @ Response::Tagged { .. } => return Ok(Some(r)),
                                other => untagged.push(other),
                            }
                        }
                    }
                    pending.extend_from_slice(bytes);
                }
            }
        }
        pending.extend_from_slice(b"\r\n");
        self.write(&pending).await?;
        Ok(None)
    }

    /// Reads one whole response (its literals included) and parses it. A literal longer than
    /// `literal_max` is read to its end and dropped.
    pub(super) async fn read_response(&mut self, literal_max: u64) -> Result<Response, ImapError> {
        let result = self.read_response_inner(literal_max).await;
        self.guard(result)
    }

    async fn read_response_inner(&mut self, literal_max: u64) -> Result<Response, ImapError> {
        if self.lost {
            return Err(ImapError::ConnectionClosed);
        }
        let mut raw = RawResponse::default();
        loop {
            // Only the line just read can announce a literal: after one, an empty line
            // leaves the marker of the last at the end of the text.
            let segment_start = raw.text.len();
            self.read_line_into(&mut raw.text).await?;
            let Some(announced) = protocol::literal_at_end(&raw.text[segment_start..]) else {
                break;
            };
            let size = announced.map_err(|e| ImapError::Protocol(e.to_string()))?;
            let literal = self.read_literal(size, literal_max).await?;
            raw.literals.push(literal);
        }
        tracing::debug!(account = %self.account, "S: {}", protocol::excerpt(&raw.text));
        protocol::parse(raw).map_err(|e| ImapError::Protocol(e.to_string()))
    }

    /// Appends one line to `text`, its line end removed; the text of a response is capped.
    async fn read_line_into(&mut self, text: &mut Vec<u8>) -> Result<(), ImapError> {
        loop {
            let pending = &self.buf[self.start..self.end];
            if let Some(lf) = pending.iter().position(|b| *b == b'\n') {
                text.extend_from_slice(&pending[..lf]);
                self.start += lf + 1;
                // The CR of the CRLF may have come in the read before the LF.
                if text.last() == Some(&b'\r') {
                    text.pop();
                }
                return self.check_text(text);
            }
            text.extend_from_slice(pending);
            self.start = self.end;
            self.check_text(text)?;
            self.fill().await?;
        }
    }

    fn check_text(&self, text: &[u8]) -> Result<(), ImapError> {
        if text.len() > TEXT_MAX {
            return Err(ImapError::ResponseTooLong { limit: TEXT_MAX });
        }
        Ok(())
    }

    /// Reads a literal of `size` octets: kept when at most `keep_max`, else read and dropped.
    async fn read_literal(&mut self, size: u64, keep_max: u64) -> Result<Literal, ImapError> {
        if let Some(deadline) = &mut self.deadline {
            deadline.announced = deadline.announced.max(size);
        }
        let keep = size <= keep_max;
        let mut kept = Vec::new();
        if keep {
            kept.reserve_exact(usize::try_from(size.min(RESERVE_MAX)).unwrap_or(0));
        }
        let mut left = size;
        while left > 0 {
            if self.start == self.end {
                self.fill().await?;
            }
            let available = (self.end - self.start) as u64;
            let take = available.min(left) as usize;
            if keep {
                kept.extend_from_slice(&self.buf[self.start..self.start + take]);
            }
            self.start += take;
            left -= take as u64;
        }
        Ok(if keep {
            Literal::Kept(kept)
        } else {
            Literal::Dropped(size)
        })
    }

    /// Waits up to `window` for the server to send something (IDLE): true once bytes are
    /// waiting, false when the window passed in silence. Nothing is lost when the window ends:
    /// a read that has not completed has taken no bytes.
    pub(super) async fn readable_within(&mut self, window: Duration) -> Result<bool, ImapError> {
        if self.lost {
            return Err(ImapError::ConnectionClosed);
        }
        if self.has_buffered() {
            return Ok(true);
        }
        (self.start, self.end) = (0, 0);
        let read = self.stream.read(&mut self.buf[..]);
        let result = match tokio::time::timeout(window, read).await {
            Ok(Ok(0)) => Err(ImapError::ConnectionClosed),
            Ok(Ok(n)) => {
                self.end = n;
                Ok(true)
            }
            Ok(Err(e)) => Err(TransportError::Io(e).into()),
            Err(_) => Ok(false),
        };
        self.guard(result)
    }

    /// Reads more bytes into the buffer (which holds nothing unread when this is called, or
    /// only the start of a line that is kept elsewhere).
    async fn fill(&mut self) -> Result<(), ImapError> {
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
        // The read's own timeout, cut short by the download's deadline.
        let read = read_within(
            &mut *self.stream,
            &mut self.buf[self.end..],
            self.deadline.as_mut(),
            self.timeout,
        );
        match read.await? {
            0 => Err(ImapError::ConnectionClosed),
            n => {
                self.end += n;
                Ok(())
            }
        }
    }

    /// The same session over a new stream (after the STARTTLS handshake): nothing read
    /// before is kept, the tags go on.
    pub(super) fn upgrade(self, stream: Box<dyn Stream>) -> Connection {
        Connection {
            next_tag: self.next_tag,
            ..Connection::new(stream, self.timeout, self.account)
        }
    }

    /// Ends the session politely: TLS close_notify and TCP FIN, errors ignored.
    pub(super) async fn shutdown(mut self) {
        let _ = tokio::time::timeout(self.timeout, self.stream.shutdown()).await;
    }
}
