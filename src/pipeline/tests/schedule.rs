//! The schedule, in virtual time: `max_concurrent_accounts` bounds the passes running at once,
//! and a failing mailbox backs off (doubling from the second failure in a row, up to
//! `backoff_max`) until a pass works again.

use std::time::Duration;

use super::{OneMailbox, World, gaps, mail, run_daemon};

/// Three accounts on one mailbox, each transaction 10 s long: how many sessions were ever
/// open at once with `max_concurrent_accounts` at `most`.
async fn open_at_once(most: usize) -> usize {
    let mut w = World::new("");
    for name in ["b", "c"] {
        let mut other = w.config.accounts[0].clone();
        other.name = name.into();
        other.username = name.into();
        w.config.accounts.push(other);
    }
    w.config.max_concurrent_accounts = most;
    for n in 0..3 {
        w.mailbox.add(&mail("a@example.com", &format!("m{n}")));
    }
    w.relay.set_delay(Duration::from_secs(10));
    let stop = async {
        tokio::time::sleep(Duration::from_secs(45)).await;
        Ok(())
    };
    run_daemon(&w, OneMailbox(w.mailbox.clone()), stop).await;
    w.mailbox.most_open_at_once()
}

#[tokio::test(start_paused = true)]
async fn max_concurrent_accounts_bounds_the_passes_running_at_once() {
    assert_eq!(open_at_once(1).await, 1);
    assert_eq!(open_at_once(2).await, 2);
    assert_eq!(open_at_once(3).await, 3, "unbounded, all three overlap");
}

#[tokio::test(start_paused = true)]
async fn a_failing_mailbox_backs_off_up_to_backoff_max_and_a_working_pass_ends_it() {
    let w = World::new("    backoff_max: 5m\n");
    w.mailbox.set_down(true);
    let mailbox = w.mailbox.clone();
    let stop = async move {
        // Down until 700 s, then back.
        tokio::time::sleep(Duration::from_secs(700)).await;
        mailbox.set_down(false);
        tokio::time::sleep(Duration::from_secs(300)).await;
        Ok(())
    };
    run_daemon(&w, OneMailbox(w.mailbox.clone()), stop).await;
    // Tried at 0 and 60 (one failure is no outage), then 120, 240, 480 and 780 (300 s, the
    // cap), which works: every 60 s again after it.
    assert_eq!(
        gaps(&w.mailbox),
        [60, 60, 120, 240, 300, 60, 60, 60],
        "{:?}",
        w.mailbox.logins()
    );
}
