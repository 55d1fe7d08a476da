//! The POP3 connection under the client: status lines and multi-line responses read with a
//! timeout on every read, an overall deadline per RETR, and size limits enforced while
//! reading (nothing of an over-long response is kept).

use std::time::Duration;

use tokio::io::AsyncWriteExt;

use super::Pop3Error;
use super::client::BUF_SIZE;
use super::protocol::{self, DotDecoder, Overflow, STATUS_LINE_MAX, Status};
use crate::fetch::transport::{Deadline, Stream, read_within, write_within};

/// A byte stream with a read buffer, a timeout on every read and write, and a flag that is
/// set once the session is out of step.
pub(super) struct Connection {
    pub(super) stream: Box<dyn Stream>,
    pub(super) buf: Box<[u8]>,
    pub(super) start: usize,
    pub(super) end: usize,
    pub(super) timeout: Duration,
    /// When the command being read (RETR) must be done.
    pub(super) deadline: Option<Deadline>,
    pub(super) lost: bool,
    pub(super) account: String,
    /// Command lines queued (PIPELINING) and not yet written: they go out in one write before
    /// the next read, or with the next command sent.
    pub(super) out: Vec<u8>,
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
            out: Vec::new(),
        }
    }

    /// Marks the session dead when `result` is an error that leaves it unusable.
    pub(super) fn guard<T>(&mut self, result: Result<T, Pop3Error>) -> Result<T, Pop3Error> {
        if let Err(e) = &result
            && e.connection_lost()
        {
            self.lost = true;
        }
        result
    }

    /// Sends one command line (after any queued ones). `shown` is what the log may show
    /// (credentials blanked).
    pub(super) async fn send(&mut self, command: &str, shown: &str) -> Result<(), Pop3Error> {
        self.queue(command, shown)?;
        self.flush_queued().await
    }

    /// Queues one command line, to be written with the next write (PIPELINING).
    pub(super) fn queue(&mut self, command: &str, shown: &str) -> Result<(), Pop3Error> {
        if self.lost {
            return Err(Pop3Error::ConnectionClosed);
        }
        tracing::debug!(account = %self.account, "C: {shown}");
        self.out.extend_from_slice(command.as_bytes());
        self.out.extend_from_slice(b"\r\n");
        Ok(())
    }

    /// Writes the queued command lines, within the timeout.
    pub(super) async fn flush_queued(&mut self) -> Result<(), Pop3Error> {
        if self.out.is_empty() {
            return Ok(());
        }
        let line = std::mem::take(&mut self.out);
        let result = write_within(&mut *self.stream, &line, self.timeout).await;
        self.guard(result.map_err(Pop3Error::from))
    }

    /// Reads more bytes into the buffer, after what is already there.
    pub(super) async fn fill(&mut self) -> Result<(), Pop3Error> {
        // A reply is awaited: whatever was queued must be on its way first.
        self.flush_queued().await?;
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        } else if self.end == self.buf.len() && self.start > 0 {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        if self.end == self.buf.len() {
            // Only a status line can fill the buffer without being consumed.
            return Err(Pop3Error::LineTooLong {
                limit: STATUS_LINE_MAX,
            });
        }
        // The read's own timeout, cut short by the command's deadline.
        let read = read_within(
            &mut *self.stream,
            &mut self.buf[self.end..],
            self.deadline.as_mut(),
            self.timeout,
        );
        match read.await? {
            0 => Err(Pop3Error::ConnectionClosed),
            n => {
                self.end += n;
                Ok(())
            }
        }
    }

    /// Reads one line (up to LF), returned without its line end.
    pub(super) async fn read_line(&mut self) -> Result<Vec<u8>, Pop3Error> {
        let result = self.read_line_inner().await;
        self.guard(result)
    }

    pub(super) async fn read_line_inner(&mut self) -> Result<Vec<u8>, Pop3Error> {
        if self.lost {
            return Err(Pop3Error::ConnectionClosed);
        }
        let mut searched = 0;
        loop {
            let pending = &self.buf[self.start..self.end];
            if let Some(lf) = pending[searched..].iter().position(|b| *b == b'\n') {
                let line = protocol::strip_line_end(&pending[..searched + lf + 1]).to_vec();
                self.start += searched + lf + 1;
                if line.len() > STATUS_LINE_MAX {
                    return Err(Pop3Error::LineTooLong {
                        limit: STATUS_LINE_MAX,
                    });
                }
                return Ok(line);
            }
            searched = pending.len();
            if searched > STATUS_LINE_MAX + 1 {
                return Err(Pop3Error::LineTooLong {
                    limit: STATUS_LINE_MAX,
                });
            }
            self.fill().await?;
        }
    }

    /// Reads a status line and parses it.
    pub(super) async fn read_status(&mut self) -> Result<Status, Pop3Error> {
        let line = self.read_line().await?;
        let status = protocol::parse_status(&line).map_err(|e| Pop3Error::Protocol(e.to_string()));
        self.guard(status)
    }

    /// Reads the body of a multi-line response into `out`, to its terminator; `out` never
    /// grows much beyond `limit` bytes.
    pub(super) async fn read_body(
        &mut self,
        decoder: &mut DotDecoder,
        out: &mut Vec<u8>,
        limit: usize,
    ) -> Result<Option<Overflow>, Pop3Error> {
        loop {
            if self.start < self.end {
                reserve_within(out, self.end - self.start, limit);
                let fed = decoder.feed(&self.buf[self.start..self.end], out);
                self.start += fed.consumed;
                if fed.done {
                    return Ok(decoder.overflow());
                }
            }
            let filled = self.fill().await;
            self.guard(filled)?;
        }
    }

    /// Whether bytes the server sent are waiting unread.
    pub(super) fn has_buffered(&self) -> bool {
        self.start < self.end
    }

    /// Ends the session politely: TLS close_notify and TCP FIN, errors ignored.
    pub(super) async fn shutdown(mut self) {
        let _ = tokio::time::timeout(self.timeout, self.stream.shutdown()).await;
    }
}

/// Makes room in `out` for `more` bytes, doubling as a `Vec` does but not past `limit` (a
/// message that would go past it is dropped, so the room would be wasted).
pub(super) fn reserve_within(out: &mut Vec<u8>, more: usize, limit: usize) {
    if out.capacity() - out.len() >= more {
        return;
    }
    let doubled = out.capacity().saturating_mul(2).min(limit);
    let target = doubled.max(out.len() + more);
    out.reserve_exact(target - out.len());
}
