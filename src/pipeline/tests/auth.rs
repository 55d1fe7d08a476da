//! A refused login backs off in virtual time: the account is tried again after
//! `poll_interval`, then twice as long each time up to `auth_backoff_max`, while another
//! account goes on at its own cadence; an accepted login ends the back-off.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use super::{ByName, World, gaps, mail, run_daemon as run};
use crate::fetch::memory::MemoryMailbox;

#[tokio::test(start_paused = true)]
async fn a_refused_login_is_tried_again_ever_later_while_other_accounts_go_on() {
    let mut w = World::new("    auth_backoff_max: 8m\n");
    // A second account, `good`, on its own mailbox: polled every 60 s all along.
    let mut good = w.config.accounts[0].clone();
    good.name = "good".into();
    good.username = "other".into();
    w.config.accounts.push(good);
    let refusing = MemoryMailbox::new();
    refusing.refuse_logins(true);
    let working = MemoryMailbox::new();
    let mailboxes = ByName(Arc::new(HashMap::from([
        ("acct".to_owned(), refusing.clone()),
        ("good".to_owned(), working.clone()),
    ])));
    let later = working.clone();
    let stop = async move {
        tokio::time::sleep(Duration::from_secs(1000)).await;
        later.add(&mail("a@example.com", "arrives late"));
        tokio::time::sleep(Duration::from_secs(100)).await;
        Ok(())
    };
    run(&w, mailboxes, stop).await;
    // Logins at 0, 60, 180, 420, 900 (480 = the cap), ...: never every poll_interval.
    assert_eq!(
        gaps(&refusing),
        [60, 120, 240, 480],
        "{:?}",
        refusing.logins()
    );
    assert_eq!(
        working.sessions(),
        19,
        "the other account every 60 s, 0 to 1080 s"
    );
    assert_eq!(w.received("a@example.com"), 1, "and it delivers");
}

#[tokio::test(start_paused = true)]
async fn an_accepted_login_ends_the_back_off() {
    let w = World::new("");
    w.mailbox.refuse_logins(true);
    let mailbox = w.mailbox.clone();
    let stop = async move {
        // Refused at 0, 60, 180 s; the password is fixed at 200 s.
        tokio::time::sleep(Duration::from_secs(200)).await;
        mailbox.refuse_logins(false);
        tokio::time::sleep(Duration::from_secs(300)).await;
        Ok(())
    };
    let mailboxes = super::OneMailbox(w.mailbox.clone());
    run(&w, mailboxes, stop).await;
    // 420 s: the fourth try succeeds; then every poll_interval again.
    assert_eq!(
        gaps(&w.mailbox),
        [60, 120, 240, 60],
        "{:?}",
        w.mailbox.logins()
    );
}
