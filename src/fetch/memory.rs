//! The in-memory mailbox of the pipeline's unit tests: messages by key, deletions that take
//! effect only at commit (as POP3's QUIT), sessions counted, and scripted failures (a
//! connection dropped while a given message is fetched).

use std::collections::HashSet;
use std::sync::{Arc, Mutex, MutexGuard};

use super::pop3::Pop3Error;
use super::{FetchError, Listed, Mailbox, Source, TransportError};

/// A mailbox held in memory; clones share it. It is its own [`Source`].
#[derive(Debug, Clone, Default)]
pub struct MemoryMailbox {
    inner: Arc<Mutex<Inner>>,
}

#[derive(Debug, Default)]
struct Inner {
    /// (key, message), oldest first.
    messages: Vec<(String, Vec<u8>)>,
    next_key: u32,
    /// Fetching these drops the connection, each once.
    drop_on_fetch: HashSet<String>,
    sessions: usize,
    fetches: usize,
    /// Flagged `\Seen`.
    seen: HashSet<String>,
    /// The keys [`Mailbox::settled`] was called for, in order.
    kept: Vec<String>,
    /// What the server says of LOGIN-DELAY.
    login_delay: Option<std::time::Duration>,
    /// Logins are refused (a wrong password).
    refuse_login: bool,
    /// The server is down: every session fails before the login.
    down: bool,
    /// Sessions open at this moment, and the most ever open at once.
    open_now: usize,
    open_most: usize,
    /// When each session was opened (or its login refused).
    logins: Vec<tokio::time::Instant>,
    /// How long marking a message deleted takes (a far server answering DELE).
    delete_delay: std::time::Duration,
}

impl MemoryMailbox {
    /// An empty mailbox.
    pub fn new() -> MemoryMailbox {
        MemoryMailbox::default()
    }

    /// Adds a message; returns its key.
    pub fn add(&self, message: &[u8]) -> String {
        let mut inner = self.lock();
        inner.next_key += 1;
        let key = format!("uid-{}", inner.next_key);
        inner.messages.push((key.clone(), message.to_vec()));
        key
    }

    /// Adds a message under `key` (e.g. `UIDVALIDITY:UID`).
    pub fn add_as(&self, key: &str, message: &[u8]) {
        self.lock()
            .messages
            .push((key.to_owned(), message.to_vec()));
    }

    /// The keys of the messages in the mailbox.
    pub fn keys(&self) -> Vec<String> {
        self.lock()
            .messages
            .iter()
            .map(|(k, _)| k.clone())
            .collect()
    }

    /// The connection drops (once) when the message `key` is fetched.
    pub fn drop_on_fetch(&self, key: &str) {
        self.lock().drop_on_fetch.insert(key.to_owned());
    }

    /// Flags the message `key` `\Seen` (`true`) or not, as a person reading the mailbox
    /// would.
    pub fn set_seen(&self, key: &str, seen: bool) {
        let mut inner = self.lock();
        if seen {
            inner.seen.insert(key.to_owned());
        } else {
            inner.seen.remove(key);
        }
    }

    /// The keys the pass told were settled and kept upstream ([`Mailbox::settled`]), in
    /// order, over every session.
    pub fn kept(&self) -> Vec<String> {
        self.lock().kept.clone()
    }

    /// From now on the server refuses every login (`false`: accepts them again).
    pub fn refuse_logins(&self, refuse: bool) {
        self.lock().refuse_login = refuse;
    }

    /// From now on the server cannot be reached (`false`: it is back).
    pub fn set_down(&self, down: bool) {
        self.lock().down = down;
    }

    /// The most sessions that were ever open at the same moment.
    pub fn most_open_at_once(&self) -> usize {
        self.lock().open_most
    }

    /// When each login was tried, in order.
    pub fn logins(&self) -> Vec<tokio::time::Instant> {
        self.lock().logins.clone()
    }

    /// The server announces this LOGIN-DELAY.
    pub fn set_login_delay(&self, delay: std::time::Duration) {
        self.lock().login_delay = Some(delay);
    }

    /// Marking a message deleted takes this long.
    pub fn set_delete_delay(&self, delay: std::time::Duration) {
        self.lock().delete_delay = delay;
    }

    /// Sessions opened so far.
    pub fn sessions(&self) -> usize {
        self.lock().sessions
    }

    /// Messages downloaded so far.
    pub fn fetches(&self) -> usize {
        self.lock().fetches
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// One session on a [`MemoryMailbox`].
#[derive(Debug)]
pub struct MemorySession {
    mailbox: MemoryMailbox,
    marked: HashSet<String>,
    lost: bool,
}

impl MemorySession {
    fn alive(&self) -> Result<(), FetchError> {
        if self.lost {
            return Err(Pop3Error::ConnectionClosed.into());
        }
        Ok(())
    }
}

impl Source for MemoryMailbox {
    type Session = MemorySession;

    async fn open(&self) -> Result<MemorySession, FetchError> {
        let mut inner = self.lock();
        inner.sessions += 1;
        inner.logins.push(tokio::time::Instant::now());
        if inner.down {
            return Err(FetchError::Pop3(
                TransportError::Timeout(std::time::Duration::from_secs(180)).into(),
            ));
        }
        if inner.refuse_login {
            return Err(FetchError::Pop3(Pop3Error::AuthFailed {
                method: "USER/PASS".to_owned(),
                text: "[AUTH] Authentication failed.".to_owned(),
                temporary: false,
            }));
        }
        inner.open_now += 1;
        inner.open_most = inner.open_most.max(inner.open_now);
        drop(inner);
        Ok(MemorySession {
            mailbox: self.clone(),
            marked: HashSet::new(),
            lost: false,
        })
    }
}

impl Drop for MemorySession {
    fn drop(&mut self) {
        self.mailbox.lock().open_now -= 1;
    }
}

impl Mailbox for MemorySession {
    async fn list(&mut self) -> Result<Vec<Listed>, FetchError> {
        self.alive()?;
        let inner = self.mailbox.lock();
        Ok(inner
            .messages
            .iter()
            .enumerate()
            .map(|(i, (key, raw))| Listed {
                key: key.clone(),
                handle: i as u32 + 1,
                size: Some(raw.len() as u64),
                seen: inner.seen.contains(key),
            })
            .collect())
    }

    async fn fetch(&mut self, msg: &Listed) -> Result<Vec<u8>, FetchError> {
        self.alive()?;
        let mut inner = self.mailbox.lock();
        if inner.drop_on_fetch.remove(&msg.key) {
            self.lost = true;
            return Err(Pop3Error::ConnectionClosed.into());
        }
        inner.fetches += 1;
        let found = inner.messages.iter().find(|(k, _)| k == &msg.key);
        found.map(|(_, raw)| raw.clone()).ok_or_else(|| {
            Pop3Error::ServerError {
                command: format!("RETR {}", msg.handle),
                text: "no such message".to_owned(),
            }
            .into()
        })
    }

    async fn settled(&mut self, msg: &Listed) -> Result<(), FetchError> {
        self.alive()?;
        self.mailbox.lock().kept.push(msg.key.clone());
        Ok(())
    }

    fn login_delay(&self) -> Option<std::time::Duration> {
        self.mailbox.lock().login_delay
    }

    async fn delete(&mut self, msg: &Listed) -> Result<(), FetchError> {
        self.alive()?;
        let delay = self.mailbox.lock().delete_delay;
        tokio::time::sleep(delay).await;
        self.marked.insert(msg.key.clone());
        Ok(())
    }

    async fn commit(mut self) -> Result<Vec<u32>, FetchError> {
        self.alive()?;
        let marked = std::mem::take(&mut self.marked);
        self.mailbox
            .lock()
            .messages
            .retain(|(k, _)| !marked.contains(k));
        Ok(Vec::new())
    }
}
