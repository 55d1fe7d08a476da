//! The in-memory relay of the pipeline's unit tests: a reply per recipient as scripted
//! (250 unless told otherwise), a whole-transaction failure on demand, an optional delay per
//! transaction (in tokio time, so virtual time in paused tests), a limit on transactions at
//! once, every transaction kept.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use crate::address::Address;

use super::{Relay, RelayError, Reply};
use crate::recipient::{Recipient, Status};

/// A relay held in memory; clones share it.
#[derive(Debug, Clone, Default)]
pub struct MemoryRelay {
    inner: Arc<Mutex<Inner>>,
}

#[derive(Debug, Default)]
struct Inner {
    /// Replies to RCPT by address (`dedup_key`); 250 for the others.
    rcpt: HashMap<String, Reply>,
    /// Set: every transaction fails this way.
    failure: Option<Failure>,
    delay: Duration,
    /// Set: at most this many transactions at once, as the real relay's `connections`.
    sessions: Option<Arc<tokio::sync::Semaphore>>,
    sent: Vec<Sent>,
}

/// How a whole transaction fails.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// No session could be set up (the server is down).
    Down,
    /// MAIL FROM refused with this reply.
    MailFrom(Reply),
    /// The message refused after DATA with this reply.
    Data(Reply),
}

/// One transaction that reached DATA.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sent {
    /// `None`: the null reverse path.
    pub reverse_path: Option<Address>,
    /// The recipients that were accepted.
    pub recipients: Vec<Address>,
    /// The message as it went to DATA.
    pub message: Vec<u8>,
}

impl MemoryRelay {
    /// A relay that accepts everything.
    pub fn new() -> MemoryRelay {
        MemoryRelay::default()
    }

    /// RCPT TO:<address> is answered `code text` from now on.
    pub fn set_rcpt(&self, address: &str, code: u16, text: &str) {
        let key = Address::parse(address).expect("address").dedup_key();
        let reply = Reply {
            code,
            text: text.to_owned(),
        };
        self.lock().rcpt.insert(key, reply);
    }

    /// Every transaction fails this way from now on (`None`: none does).
    pub fn set_failure(&self, failure: Option<Failure>) {
        self.lock().failure = failure;
    }

    /// Each transaction takes this long.
    pub fn set_delay(&self, delay: Duration) {
        self.lock().delay = delay;
    }

    /// At most `n` transactions at once from now on; the others wait their turn (the real
    /// relay's pool of `relay.connections` sessions).
    pub fn set_sessions(&self, n: usize) {
        self.lock().sessions = Some(Arc::new(tokio::sync::Semaphore::new(n)));
    }

    /// The transactions that reached DATA, in order.
    pub fn sent(&self) -> Vec<Sent> {
        self.lock().sent.clone()
    }

    /// How many copies each recipient received.
    pub fn received(&self) -> HashMap<String, usize> {
        let mut out = HashMap::new();
        for sent in &self.lock().sent {
            for r in &sent.recipients {
                *out.entry(r.as_str().to_owned()).or_default() += 1;
            }
        }
        out
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Relay for MemoryRelay {
    fn helo_name(&self) -> String {
        "gateway.test".to_owned()
    }

    async fn send(
        &self,
        reverse_path: Option<&Address>,
        recipients: &[Address],
        message: &[u8],
    ) -> Result<Vec<Recipient>, RelayError> {
        let (delay, sessions) = {
            let inner = self.lock();
            (inner.delay, inner.sessions.clone())
        };
        // Closed only if the semaphore were closed, which nothing does.
        let _session = match &sessions {
            Some(s) => s.acquire().await.ok(),
            None => None,
        };
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        let mut inner = self.lock();
        match inner.failure.clone() {
            Some(Failure::Down) => {
                return Err(RelayError::Tcp {
                    host: "relay.test".to_owned(),
                    port: 25,
                    source: std::io::ErrorKind::ConnectionRefused.into(),
                });
            }
            Some(Failure::MailFrom(reply)) => return Err(RelayError::MailFrom { reply }),
            Some(Failure::Data(reply)) => return Err(RelayError::Data { reply }),
            None => {}
        }
        let results: Vec<Recipient> = recipients
            .iter()
            .map(|r| {
                let reply = inner.rcpt.get(&r.dedup_key()).cloned();
                let status = match reply {
                    None => Status::Delivered(Reply {
                        code: 250,
                        text: "2.0.0 queued".to_owned(),
                    }),
                    Some(reply) if reply.is_success() => Status::Delivered(reply),
                    Some(reply) if reply.is_permanent() => Status::Permanent(reply),
                    Some(reply) => Status::Temporary(reply),
                };
                Recipient {
                    address: r.clone(),
                    status,
                }
            })
            .collect();
        let accepted: Vec<Address> = results
            .iter()
            .filter(|r| matches!(r.status, Status::Delivered(_)))
            .map(|r| r.address.clone())
            .collect();
        if !accepted.is_empty() {
            inner.sent.push(Sent {
                reverse_path: reverse_path.cloned(),
                recipients: accepted,
                message: message.to_vec(),
            });
        }
        Ok(results)
    }
}
