//! `memory_budget`: the bytes of downloaded mail that all passes together hold at once. A
//! pass reserves a message's size before downloading it and gives it back when the message is
//! finished; while the budget is used up, downloading waits (relaying and recording go on).

use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The budget is counted in KiB: a semaphore holds at most `usize::MAX >> 3` permits.
const UNIT: u64 = 1024;

/// One budget for the process (every account's passes share it), made anew when a reload
/// changes `memory_budget`: reservations on the old one are given back to it.
static SHARED: Mutex<Option<(u64, Arc<Semaphore>)>> = Mutex::new(None);

/// The process's budget of `bytes`.
pub(super) fn shared(bytes: u64) -> Budget {
    let mut shared = SHARED.lock().unwrap_or_else(PoisonError::into_inner);
    let units = units(bytes);
    let semaphore = match &*shared {
        Some((n, semaphore)) if *n == units => Arc::clone(semaphore),
        _ => {
            let semaphore = Arc::new(Semaphore::new(units as usize));
            *shared = Some((units, Arc::clone(&semaphore)));
            semaphore
        }
    };
    Budget { units, semaphore }
}

/// A share of memory for downloaded mail.
#[derive(Clone)]
pub(super) struct Budget {
    units: u64,
    semaphore: Arc<Semaphore>,
}

/// Bytes reserved for one message, given back on drop.
pub(super) struct Reserved {
    _permit: Option<OwnedSemaphorePermit>,
}

impl Budget {
    /// A budget of `bytes` of its own (tests).
    #[cfg(test)]
    pub(super) fn new(bytes: u64) -> Budget {
        Budget {
            units: units(bytes),
            semaphore: Arc::new(Semaphore::new(units(bytes) as usize)),
        }
    }

    /// Reserves `bytes`, waiting while the budget is used up; a message larger than the whole
    /// budget waits for all of it, and so goes alone.
    pub(super) async fn reserve(&self, bytes: u64) -> Reserved {
        let wanted = units(bytes).min(self.units);
        let wanted = u32::try_from(wanted).unwrap_or(u32::MAX);
        // Closed only if the semaphore were closed, which nothing does.
        let permit = Arc::clone(&self.semaphore).acquire_many_owned(wanted).await;
        Reserved {
            _permit: permit.ok(),
        }
    }

    /// Bytes not reserved now.
    #[cfg(test)]
    pub(super) fn available(&self) -> u64 {
        self.semaphore.available_permits() as u64 * UNIT
    }
}

/// `bytes` in whole KiB, at least one.
fn units(bytes: u64) -> u64 {
    bytes.div_ceil(UNIT).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test(start_paused = true)]
    async fn a_reservation_waits_while_the_budget_is_used_and_a_larger_one_goes_alone() {
        let budget = Budget::new(100 * UNIT);
        let first = budget.reserve(60 * UNIT).await;
        assert_eq!(budget.available(), 40 * UNIT);
        // 50 KiB more does not fit beside the 60 held.
        let waiting = tokio::time::timeout(Duration::from_secs(1), budget.reserve(50 * UNIT));
        assert!(waiting.await.is_err());
        drop(first);
        // Larger than the whole budget: takes all of it.
        let alone = budget.reserve(500 * UNIT).await;
        assert_eq!(budget.available(), 0);
        drop(alone);
        assert_eq!(budget.available(), 100 * UNIT);
    }
}
