//! A pass over a real POP3 client on the scripted server: the connection cut in the middle
//! of the third of five pipelined RETRs. The first two are delivered and recorded, nothing
//! is deleted that was not committed, and the next pass delivers the other three, each once.

use tokio::sync::watch;

use super::{config, mail};
use crate::config::Config;
use crate::fetch::Upstream;
use crate::fetch::pop3::protocol::dot_stuff;
use crate::pipeline::pass::{PassError, PassReport, run_pass};
use crate::relay::memory::MemoryRelay;
use crate::state::StateStore;
use crate::state::memory::MemoryStore;
use crate::testkit::Split;
use crate::testkit::script::{Scripted, Step, send};

fn message(n: u32) -> Vec<u8> {
    mail(&format!("user{n}@example.com"), &format!("message {n}"))
}

fn retr_reply(n: u32) -> Vec<u8> {
    let mut reply = b"+OK\r\n".to_vec();
    reply.extend_from_slice(&dot_stuff(&message(n)));
    reply
}

/// Greeting, CAPA with PIPELINING, USER/PASS, UIDL and LIST of five messages.
fn session_start() -> Vec<Step> {
    let uidl: String = (1..=5).map(|i| format!("{i} uid-{i}\r\n")).collect();
    let list: String = (1..=5)
        .map(|i| format!("{i} {}\r\n", message(i).len()))
        .collect();
    vec![
        send("+OK ready\r\n"),
        Step::Expect("CAPA"),
        send("+OK\r\nUSER\r\nUIDL\r\nPIPELINING\r\n.\r\n"),
        Step::Expect("USER u"),
        send("+OK\r\n"),
        Step::Expect("PASS p"),
        send("+OK logged in.\r\n"),
        Step::Expect("UIDL"),
        Step::Send(format!("+OK\r\n{uidl}.\r\n").into_bytes()),
        Step::Expect("LIST"),
        Step::Send(format!("+OK\r\n{list}.\r\n").into_bytes()),
    ]
}

/// How many times each of user1..user5 received mail.
fn delivered(relay: &MemoryRelay) -> Vec<usize> {
    let received = relay.received();
    (1..=5)
        .map(|n| {
            received
                .get(&format!("user{n}@example.com"))
                .copied()
                .unwrap_or(0)
        })
        .collect()
}

/// One pass of the account against `fake`.
async fn pass(
    config: &mut Config,
    fake: &Scripted,
    store: &MemoryStore,
    relay: &MemoryRelay,
) -> Result<PassReport, PassError> {
    config.accounts[0].port = fake.addr().port();
    let account = &config.accounts[0];
    let upstream = Upstream {
        account,
        max_message_size: config.max_message_size,
        token: None,
    };
    let (_stop_tx, stop) = watch::channel(false);
    run_pass(&upstream, config, account, store, relay, &stop).await
}

#[tokio::test]
async fn a_connection_cut_in_the_third_of_five_pipelined_retrs_loses_and_repeats_nothing() {
    let mut config = config("");
    config.accounts[0].name = "pipelined-cut".into();
    config.accounts[0].host = "127.0.0.1".into();
    let store = MemoryStore::new();
    let relay = MemoryRelay::new();

    let mut script = session_start();
    for n in ["RETR 1", "RETR 2", "RETR 3", "RETR 4", "RETR 5"] {
        script.push(Step::Expect(n));
    }
    let third = retr_reply(3);
    script.push(Step::Send(
        [
            retr_reply(1),
            retr_reply(2),
            third[..third.len() / 2].to_vec(),
        ]
        .concat(),
    ));
    script.push(Step::Close);
    let fake = Scripted::start(script, Split::Whole, None).await;
    // The reconnect finds nobody listening: the pass ends with what it recorded.
    let err = pass(&mut config, &fake, &store, &relay).await.unwrap_err();
    assert!(err.to_string().contains("connect"), "{err}");
    fake.finish().await;
    assert_eq!(delivered(&relay), [1, 1, 0, 0, 0]);
    let known = store.load_account(&config.accounts[0].name).await.unwrap();
    assert!(known["uid-1"].settled_at.is_some() && known["uid-1"].deleted_at.is_none());
    assert!(known["uid-2"].settled_at.is_some() && known["uid-2"].deleted_at.is_none());
    assert_eq!(known["uid-3"].attempts, 1);
    assert!(!known.contains_key("uid-4") && !known.contains_key("uid-5"));

    // Next pass: the two delivered are deleted (no QUIT committed it before), the other
    // three delivered, everything still pipelined.
    let mut script = session_start();
    for line in ["DELE 1", "DELE 2", "RETR 3", "RETR 4", "RETR 5"] {
        script.push(Step::Expect(line));
    }
    script.push(Step::Send(
        [
            b"+OK\r\n+OK\r\n".to_vec(),
            retr_reply(3),
            retr_reply(4),
            retr_reply(5),
        ]
        .concat(),
    ));
    script.extend([
        Step::Expect("DELE 3"),
        Step::Expect("DELE 4"),
        Step::Expect("DELE 5"),
        Step::Expect("QUIT"),
        send("+OK\r\n+OK\r\n+OK\r\n+OK bye\r\n"),
        Step::Close,
    ]);
    let fake = Scripted::start(script, Split::Whole, None).await;
    let report = pass(&mut config, &fake, &store, &relay).await.unwrap();
    fake.finish().await;
    assert_eq!((report.fetched, report.deleted), (3, 5));
    assert_eq!(delivered(&relay), [1, 1, 1, 1, 1]);
}
