//! The messages of a session handed on and not finished: relayed and recorded side by side,
//! at most `window` of them, taken back in the order they finish (a slow one holds up no
//! other). Each may carry a key: the pass never hands on two messages with one key at once.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;

use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;

type Running<'a, T> = Pin<Box<dyn Future<Output = (Option<String>, T)> + Send + 'a>>;

pub(super) struct Flight<'a, T> {
    running: FuturesUnordered<Running<'a, T>>,
    /// The keys of the running messages.
    keys: Vec<String>,
    /// Finished while the session waited on something else, not yet taken.
    done: VecDeque<T>,
    window: usize,
}

impl<'a, T: Send + 'a> Flight<'a, T> {
    pub(super) fn new(window: usize) -> Flight<'a, T> {
        Flight {
            running: FuturesUnordered::new(),
            keys: Vec::new(),
            done: VecDeque::new(),
            window: window.max(1),
        }
    }

    /// Hands on one message's work, under `key` if it has one.
    pub(super) fn push(&mut self, key: Option<String>, work: impl Future<Output = T> + Send + 'a) {
        if let Some(key) = &key {
            self.keys.push(key.clone());
        }
        self.running
            .push(Box::pin(async move { (key, work.await) }));
    }

    /// Whether the next message must wait for room.
    pub(super) fn full(&self) -> bool {
        self.len() >= self.window
    }

    /// Messages handed on and not yet taken back.
    pub(super) fn len(&self) -> usize {
        self.running.len() + self.done.len()
    }

    /// Whether a message with this key is still running.
    pub(super) fn holds(&self, key: &str) -> bool {
        self.keys.iter().any(|k| k == key)
    }

    /// The next finished message, waiting for one; `None` when nothing is in flight.
    pub(super) async fn next(&mut self) -> Option<T> {
        if let Some(done) = self.done.pop_front() {
            return Some(done);
        }
        let finished = self.running.next().await?;
        Some(self.taken(finished))
    }

    /// A message that finished already, if any.
    pub(super) fn take_done(&mut self) -> Option<T> {
        self.done.pop_front()
    }

    /// Runs `f` while the messages in flight go on (what finishes is kept for `next`).
    pub(super) async fn drive<R>(&mut self, f: impl Future<Output = R>) -> R {
        let mut f = std::pin::pin!(f);
        loop {
            tokio::select! {
                biased;
                out = &mut f => return out,
                Some(finished) = self.running.next(), if !self.running.is_empty() => {
                    let done = self.taken(finished);
                    self.done.push_back(done);
                }
            }
        }
    }

    fn taken(&mut self, (key, done): (Option<String>, T)) -> T {
        if let Some(at) = key.and_then(|key| self.keys.iter().position(|k| *k == key)) {
            self.keys.swap_remove(at);
        }
        done
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use tokio::time::sleep;

    #[tokio::test(start_paused = true)]
    async fn a_slow_message_holds_up_none_of_the_others() {
        let mut flight = Flight::new(3);
        for (n, secs) in [(1, 30), (2, 10), (3, 20)] {
            flight.push(Some(format!("k{n}")), async move {
                sleep(Duration::from_secs(secs)).await;
                n
            });
        }
        assert!(flight.full());
        assert!(flight.holds("k1") && flight.holds("k3"));
        assert_eq!(flight.next().await, Some(2));
        assert!(!flight.holds("k2") && flight.holds("k1"));
        // While something else is awaited (until 25 s), what finishes is kept.
        flight.drive(sleep(Duration::from_secs(15))).await;
        assert_eq!(flight.len(), 2);
        assert_eq!(flight.take_done(), Some(3));
        assert_eq!(flight.take_done(), None);
        assert_eq!(flight.next().await, Some(1));
        assert_eq!(flight.next().await, None);
        assert!(!flight.holds("k1"));
    }
}
