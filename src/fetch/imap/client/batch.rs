//! Several messages per `UID FETCH`: the pass says which messages it will fetch
//! ([`ImapClient::plan`]); when it asks for a planned one, it and the planned ones after it
//! come in one command over their UID set (`UID FETCH 7:9,12 BODY.PEEK[]<0.4194304>`),
//! bounded by a count and by their announced sizes, and wait here until asked for. Each
//! still arrives as a first piece of at most [`CHUNK`] octets; a longer one goes on piece by
//! piece as before. A message of unknown size, or one not planned, is fetched alone.

use std::collections::{HashMap, VecDeque};

use super::super::ImapError;
use super::super::command::{self, Command};
use super::super::protocol::{Literal, Response};
use super::{CHUNK, ImapClient};

/// Messages fetched by one command at most.
pub const BATCH_COUNT: usize = 32;
/// Announced octets fetched by one command at most (past the first message): what is held
/// here before the pass asks for it.
pub const BATCH_BYTES: u64 = 4 * 1024 * 1024;

/// A message fetched ahead, waiting to be asked for.
#[derive(Debug)]
pub(super) enum Fetched {
    /// The whole message.
    Whole(Vec<u8>),
    /// Its first piece, [`CHUNK`] octets: the rest is still to fetch.
    Start(Vec<u8>),
    /// Larger than `max_message_size` (at least this many octets): nothing kept.
    TooLarge(u64),
    /// The server sent no body for it (expunged meanwhile).
    Gone,
}

/// The plan and what was fetched ahead.
#[derive(Debug, Default)]
pub(super) struct Ahead {
    /// Planned, not fetched yet, in order: (UID, announced size).
    planned: VecDeque<(u32, Option<u64>)>,
    /// Fetched by the last batch, not yet asked for.
    fetched: HashMap<u32, Fetched>,
}

impl ImapClient {
    /// The messages the caller will [`fetch`](ImapClient::fetch) next, in that order, with
    /// their announced sizes: fetching one of them brings the next few with it. Replaces the
    /// earlier plan.
    pub fn plan(&mut self, upcoming: impl IntoIterator<Item = (u32, Option<u64>)>) {
        self.ahead.planned = upcoming.into_iter().collect();
    }

    /// `uid` as fetched ahead: taken from the last batch, or fetched now with the planned
    /// messages after it. `None` when it is not planned, or its batch would hold only it, or
    /// the server refused the batch: then it is fetched alone.
    pub(super) async fn fetched_ahead(&mut self, uid: u32) -> Result<Option<Fetched>, ImapError> {
        if let Some(found) = self.ahead.fetched.remove(&uid) {
            return Ok(Some(found));
        }
        let Some(at) = self.ahead.planned.iter().position(|(u, _)| *u == uid) else {
            return Ok(None);
        };
        // What the pass skipped is not fetched; what the last batch brought and the pass
        // did not want is dropped.
        self.ahead.planned.drain(..at);
        self.ahead.fetched.clear();
        let batch = self.next_batch();
        if batch.len() < 2 {
            return Ok(None);
        }
        let uids: Vec<u32> = batch.iter().map(|(u, _)| *u).collect();
        let expected: u64 = batch.iter().map(|(_, size)| *size).sum();
        let mut responses = Vec::new();
        for set in command::uid_sets(&uids) {
            let text = format!("UID FETCH {set} BODY.PEEK[]<0.{CHUNK}>");
            self.conn.start_deadline(&text, expected);
            let result = self.run_with(Command::new(&text), self.message_max).await;
            self.conn.end_deadline();
            match result {
                Ok(got) => responses.extend(got),
                // Refused as a whole (one bad message?): each is asked for alone.
                Err(e) if !e.connection_lost() => {
                    tracing::debug!(account = %self.conn.account, "batched fetch refused: {e}");
                    return Ok(None);
                }
                Err(e) => return Err(e),
            }
        }
        let mut bodies: HashMap<u32, Option<Literal>> = HashMap::new();
        for r in responses {
            if let Response::Fetch { data, .. } = r
                && let (Some(u), Some(body)) = (data.uid, data.body)
            {
                bodies.insert(u, body);
            }
        }
        for u in uids {
            let fetched = match bodies.remove(&u) {
                Some(Some(Literal::Kept(bytes))) if (bytes.len() as u64) < CHUNK => {
                    Fetched::Whole(bytes)
                }
                Some(Some(Literal::Kept(bytes))) => Fetched::Start(bytes),
                Some(Some(Literal::Dropped(size))) => Fetched::TooLarge(size),
                Some(None) | None => Fetched::Gone,
            };
            self.ahead.fetched.insert(u, fetched);
        }
        Ok(self.ahead.fetched.remove(&uid))
    }

    /// Takes the next batch off the plan: the first message, and those after it while the
    /// count and bytes allow; a message of unknown size or over the size cap ends it.
    fn next_batch(&mut self) -> Vec<(u32, u64)> {
        let mut batch = Vec::new();
        let mut bytes = 0;
        while let Some(&(uid, size)) = self.ahead.planned.front() {
            let Some(size) = size.filter(|s| *s <= CHUNK && *s <= self.message_max) else {
                break;
            };
            if batch.len() >= BATCH_COUNT || (!batch.is_empty() && bytes + size > BATCH_BYTES) {
                break;
            }
            self.ahead.planned.pop_front();
            batch.push((uid, size));
            bytes += size;
        }
        if batch.is_empty() {
            // Fetched alone.
            self.ahead.planned.pop_front();
        }
        batch
    }
}
