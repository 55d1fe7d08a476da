//! Loop protection: a copy carrying mailferry's own trace header more than `max_hops` times
//! is quarantined (left upstream, recorded, counted, the postmaster told once), never
//! delivered.

use super::{World, mail};

/// `mail` with `hops` of mailferry's trace headers on top.
fn traced(hops: usize) -> Vec<u8> {
    let trace = "Received: from pop.provider.net by gw.corp.local (mailferry) with POP3 id 7\r\n\tfor <a@example.com>; Mon, 1 Jan 2024 00:00:00 +0000\r\n";
    let mut m = trace.repeat(hops).into_bytes();
    m.extend_from_slice(&mail("a@example.com", "again"));
    m
}

#[tokio::test]
async fn a_loop_is_quarantined_and_the_postmaster_told_once() {
    let w = World::new("");
    let key = w.mailbox.add(&traced(4));
    let report = w.pass().await.unwrap();
    assert_eq!(
        (report.quarantined, report.delivered, report.deleted),
        (1, 0, 0)
    );
    assert_eq!(w.received("a@example.com"), 0, "a loop is never delivered");
    assert_eq!(
        w.mailbox.keys(),
        std::slice::from_ref(&key),
        "left upstream"
    );
    let q = w.store.message("acct", &key).unwrap().quarantine.unwrap();
    assert!(q.reason.contains("mail loop"), "{}", q.reason);
    assert_eq!(
        w.received("postmaster@example.com"),
        1,
        "the postmaster told"
    );
    let notice = String::from_utf8_lossy(&w.relay.sent()[0].message).into_owned();
    assert!(notice.contains("max_hops 3"), "{notice}");

    let report = w.pass().await.unwrap();
    assert_eq!((report.fetched, report.quarantined), (0, 0));
    assert_eq!(w.received("postmaster@example.com"), 1, "told once");
}

#[tokio::test]
async fn up_to_max_hops_is_delivered() {
    let w = World::new("");
    w.mailbox.add(&traced(3));
    let report = w.pass().await.unwrap();
    assert_eq!((report.quarantined, report.delivered), (0, 1));
}
