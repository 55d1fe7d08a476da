//! RFC 2449 PIPELINING for the POP3 client: the pass says which messages it will fetch
//! ([`Pop3Client::plan`]), each RETR sends the next few of them ahead, bounded by a count and
//! by their LIST sizes, and DELEs go out without waiting for their reply
//! ([`Pop3Client::dele_pipelined`]). Responses are read in the order the commands were sent;
//! one that the pass no longer wants (a planned message it skipped) is read and dropped.
//! Pipelining starts only once logged in, and never when CAPA does not offer it: then every
//! command waits for its reply, as before.

use std::collections::VecDeque;
use std::time::Duration;

use super::protocol::{DATA_LINE_MAX, DotDecoder, Status};
use super::{Pop3Client, Pop3Error};
use crate::fetch::transport::{Deadline, TransportError};

/// RETRs in flight at most: at a 20 ms round trip and a message every ~0.3 ms, enough to
/// keep the link busy (32 was not: 400 messages took 0.82 s, 0.52 s with 128); few enough
/// that a skipped tail costs little.
pub const WINDOW_COUNT: usize = 128;
/// Octets (by LIST) of the RETRs in flight at most, beyond the first: the server's replies
/// wait in the socket buffers, not in our memory, but a dropped tail is downloaded for
/// nothing.
pub const WINDOW_BYTES: u64 = 2 * 1024 * 1024;
/// The size a message LIST did not name counts for in the window.
const UNKNOWN_SIZE: u64 = 64 * 1024;

/// A command sent whose response is not read yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pending {
    Retr(u32),
    Dele(u32),
}

/// The pipelining state of a session.
#[derive(Debug, Default)]
pub(super) struct Pipe {
    /// PIPELINING in use: offered by CAPA, logged in, and not turned off.
    pub(super) on: bool,
    /// Sent, response not read yet, oldest first.
    inflight: VecDeque<Pending>,
    /// Planned by the pass, not sent yet, in order.
    ahead: VecDeque<u32>,
    /// Messages whose DELE the server refused, not yet reported.
    pub(super) refused: Vec<u32>,
    /// A pipelined RETR failed (the server may not really pipeline).
    broke: bool,
}

impl Pop3Client {
    /// Turns pipelining on (when the server's CAPA offers PIPELINING; it is on by default
    /// then) or off. Anything in flight is still read in order.
    pub fn set_pipelining(&mut self, wanted: bool) {
        let offered = self.capabilities().is_some_and(|c| c.pipelining);
        self.pipe.on = wanted && offered;
    }

    /// Whether commands are pipelined in this session.
    pub fn pipelining(&self) -> bool {
        self.pipe.on
    }

    /// Whether a pipelined RETR failed in this session as a server that does not keep to
    /// its PIPELINING would make it fail (no answer in time, a reply out of step, `-ERR`): a
    /// new session had better wait for each reply.
    pub fn pipelining_failed(&self) -> bool {
        self.pipe.broke
    }

    /// The messages the caller will [`retr`](Pop3Client::retr) next, in that order: with
    /// pipelining, each RETR sends the following ones ahead. Replaces the earlier plan; a
    /// planned message not fetched in the end costs its download. Ignored without
    /// pipelining.
    pub fn plan(&mut self, upcoming: impl IntoIterator<Item = u32>) {
        if self.pipe.on {
            self.pipe.ahead = upcoming.into_iter().collect();
        }
    }

    /// DELE without waiting for the reply when pipelining (the reply is read with a later
    /// response; a refusal is reported by [`quit_reporting`](Pop3Client::quit_reporting)),
    /// else as [`dele`](Pop3Client::dele). Either way the server deletes only at QUIT.
    pub async fn dele_pipelined(&mut self, msg: u32) -> Result<(), Pop3Error> {
        if !self.pipe.on {
            return self.dele(msg).await;
        }
        let command = format!("DELE {msg}");
        self.conn.queue(&command, &command)?;
        self.pipe.inflight.push_back(Pending::Dele(msg));
        Ok(())
    }

    /// RETR with pipelining: the planned messages before `msg` are dropped from the plan,
    /// the window is topped up, and the responses before `msg`'s are read (a skipped RETR's
    /// is dropped).
    pub(super) async fn retr_pipelined(
        &mut self,
        msg: u32,
        until: Option<Duration>,
    ) -> Result<Vec<u8>, Pop3Error> {
        if !self.pipe.inflight.contains(&Pending::Retr(msg)) {
            // Looked for only here: the plan may be a whole mailbox long.
            if let Some(at) = self.pipe.ahead.iter().position(|n| *n == msg) {
                self.pipe.ahead.drain(..=at);
            }
            let command = format!("RETR {msg}");
            self.conn.queue(&command, &command)?;
            self.pipe.inflight.push_back(Pending::Retr(msg));
        }
        self.top_up()?;
        while self.pipe.inflight.front() != Some(&Pending::Retr(msg)) {
            if let Err(e) = self.read_pending().await {
                self.note_failure(&e);
                return Err(e);
            }
        }
        self.pipe.inflight.pop_front();
        let result = self.read_retr(msg, until).await;
        if let Err(e) = &result {
            self.note_failure(e);
        }
        result
    }

    /// Takes note of a pipelined response that failed in a way a server that drops or
    /// garbles pipelined commands would cause: silence, a reply out of step, a refusal. A
    /// closed connection or a trickle is the network's doing, not pipelining's.
    fn note_failure(&mut self, e: &Pop3Error) {
        if matches!(
            e,
            Pop3Error::Transport(TransportError::Timeout(_))
                | Pop3Error::Protocol(_)
                | Pop3Error::LineTooLong { .. }
                | Pop3Error::ServerError { .. }
        ) {
            self.pipe.broke = true;
        }
    }

    /// Queues RETRs for the planned messages while the window has room.
    fn top_up(&mut self) -> Result<(), Pop3Error> {
        let size =
            |client: &Pop3Client, n: u32| client.sizes.get(&n).copied().unwrap_or(UNKNOWN_SIZE);
        let mut count = 0;
        let mut bytes = 0;
        for pending in &self.pipe.inflight {
            if let Pending::Retr(n) = pending {
                count += 1;
                bytes += size(self, *n);
            }
        }
        while let Some(&next) = self.pipe.ahead.front() {
            let more = size(self, next);
            if count >= WINDOW_COUNT || (count > 0 && bytes + more > WINDOW_BYTES) {
                break;
            }
            self.pipe.ahead.pop_front();
            // Refused before it is asked for (see retr).
            if more > self.message_max {
                continue;
            }
            let command = format!("RETR {next}");
            self.conn.queue(&command, &command)?;
            self.pipe.inflight.push_back(Pending::Retr(next));
            count += 1;
            bytes += more;
        }
        Ok(())
    }

    /// Reads the oldest response in flight: a DELE's status (a refusal is noted), or a RETR
    /// no longer wanted, read to its end within its deadline and dropped.
    async fn read_pending(&mut self) -> Result<(), Pop3Error> {
        let Some(pending) = self.pipe.inflight.pop_front() else {
            return Ok(());
        };
        match pending {
            Pending::Dele(n) => match self.conn.read_status().await? {
                Status::Ok(_) => Ok(()),
                Status::Err { text, .. } => {
                    tracing::debug!(account = %self.conn.account, "S: -ERR {text} (DELE {n})");
                    self.pipe.refused.push(n);
                    Ok(())
                }
            },
            Pending::Retr(n) => {
                let command = format!("RETR {n}");
                let announced = self.sizes.get(&n).copied().unwrap_or(0);
                self.conn.deadline = Some(Deadline::new(command, self.timeout, announced, None));
                let result = self.discard_response().await;
                self.conn.deadline = None;
                result
            }
        }
    }

    /// Reads a multi-line response to its end, keeping nothing.
    async fn discard_response(&mut self) -> Result<(), Pop3Error> {
        if let Status::Ok(_) = self.conn.read_status().await? {
            let mut decoder = DotDecoder::new(DATA_LINE_MAX, 0);
            self.conn
                .read_body(&mut decoder, &mut Vec::new(), 0)
                .await?;
        }
        Ok(())
    }

    /// Reads every response in flight, in order: before a command that waits for its own.
    pub(super) async fn drain(&mut self) -> Result<(), Pop3Error> {
        while !self.pipe.inflight.is_empty() {
            self.read_pending().await?;
        }
        Ok(())
    }
}
