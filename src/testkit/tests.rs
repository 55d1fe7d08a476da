//! The fakes' own tests: what the end-to-end tests rely on them for, proven without root.

use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

use super::Split;
use super::smtp::{FakeSmtp, Script};

/// A bare SMTP client: sends a line, reads one whole reply (every line up to "NNN ").
struct Client(BufReader<TcpStream>);

impl Client {
    async fn connect(fake: &FakeSmtp) -> Client {
        let tcp = TcpStream::connect(("127.0.0.1", fake.port()))
            .await
            .unwrap();
        let mut client = Client(BufReader::new(tcp));
        assert!(client.reply().await.starts_with("220 "));
        client
    }

    async fn reply(&mut self) -> String {
        let mut reply = String::new();
        loop {
            let mut line = String::new();
            if self.0.read_line(&mut line).await.unwrap() == 0 {
                return reply + "[closed]";
            }
            reply.push_str(&line);
            if line.as_bytes().get(3) != Some(&b'-') {
                return reply.trim_end().to_owned();
            }
        }
    }

    async fn say(&mut self, line: &str) -> String {
        self.0
            .get_mut()
            .write_all(format!("{line}\r\n").as_bytes())
            .await
            .unwrap();
        self.reply().await
    }

    /// MAIL, each RCPT, DATA and `data` (already stuffed) with its final dot: the replies.
    async fn transaction(&mut self, from: &str, rcpts: &[&str], data: &str) -> Vec<String> {
        let mut replies = vec![self.say(&format!("MAIL FROM:<{from}>")).await];
        for rcpt in rcpts {
            replies.push(self.say(&format!("RCPT TO:<{rcpt}>")).await);
        }
        replies.push(self.say("DATA").await);
        if replies.last().is_some_and(|r| r.starts_with("354")) {
            replies.push(self.say(&format!("{data}.")).await);
        }
        replies
    }
}

#[tokio::test]
async fn replies_follow_the_script_per_sender_recipient_and_recipient_set() {
    let fake = FakeSmtp::start(
        Script::default()
            .mail_for("Blocked@Remote.test", "550 5.7.1 sender blocked")
            .rcpt("busy@example.com", "450 4.2.1 busy")
            .data_end_for("spam@example.com", "554 5.7.1 spam"),
    );
    let mut c = Client::connect(&fake).await;
    assert!(c.say("EHLO me").await.ends_with("250 SMTPUTF8"));
    assert_eq!(
        c.transaction("blocked@remote.test", &["a@example.com"], "x\r\n")
            .await,
        [
            "550 5.7.1 sender blocked",
            "503 5.5.1 need MAIL first",
            "503 5.5.1 no valid recipients"
        ]
    );
    assert_eq!(
        c.transaction(
            "s@r.test",
            &["A@example.com", "busy@example.com"],
            "..hi\r\n"
        )
        .await,
        [
            "250 2.1.0 ok",
            "250 2.1.5 ok",
            "450 4.2.1 busy",
            "354 go ahead",
            "250 2.0.0 queued as 1234"
        ]
    );
    let refused = c
        .transaction("s@r.test", &["spam@example.com"], "x\r\n")
        .await;
    assert_eq!(refused.last().unwrap(), "554 5.7.1 spam");
    assert_eq!(c.say("QUIT").await, "221 2.0.0 bye");
    fake.wait_closed(1).await;

    let log = fake.take();
    assert_eq!(log.accepted().len(), 1);
    let tx = log.accepted()[0];
    assert_eq!(
        (tx.mail_from.as_str(), &tx.rcpts[..]),
        ("s@r.test", &["a@example.com".to_owned()][..]),
        "accepted recipients only, lower-cased"
    );
    assert_eq!(tx.data, b"..hi\r\n", "the data as on the wire");
    assert_eq!(tx.message(), b".hi\r\n", "the message, unstuffed");
    assert_eq!(log.refused().len(), 1);
    assert_eq!(
        log.rcpts_tried(),
        [
            "a@example.com",
            "a@example.com",
            "busy@example.com",
            "spam@example.com"
        ]
    );
    assert_eq!(log.mail_commands(), 3);
    assert!(fake.take().commands.is_empty(), "take forgets");
}

#[tokio::test]
async fn drop_after_data_drops_that_many_then_answers_and_the_script_can_change() {
    let fake = FakeSmtp::start(Script::default().drop_after_data(1));
    let mut c = Client::connect(&fake).await;
    let replies = c
        .transaction("s@r.test", &["a@example.com"], "one\r\n")
        .await;
    assert_eq!(replies.last().unwrap(), "[closed]");

    fake.change(|s| s.rcpt("a@example.com", "550 5.1.1 gone"));
    let mut c = Client::connect(&fake).await;
    let replies = c.transaction("s@r.test", &["a@example.com", "b@example.com"], "two\r\n");
    assert_eq!(replies.await.last().unwrap(), "250 2.0.0 queued as 1234");

    let log = fake.take();
    assert_eq!(log.unanswered().len(), 1);
    assert_eq!(log.unanswered()[0].message(), b"one\r\n");
    let by = log.received_by();
    assert_eq!(by.keys().collect::<Vec<_>>(), ["b@example.com"]);
    assert_eq!(by["b@example.com"], [b"two\r\n".to_vec()]);
}

#[tokio::test]
async fn a_split_reply_arrives_in_pieces() {
    let fake = FakeSmtp::start(Script::default().split(Split::ByteByByte));
    let mut tcp = TcpStream::connect(("127.0.0.1", fake.port()))
        .await
        .unwrap();
    let (mut got, mut reads) = (Vec::new(), 0);
    while !got.ends_with(b"\r\n") {
        let mut buf = [0u8; 64];
        let read = tokio::io::AsyncReadExt::read(&mut tcp, &mut buf);
        let n = tokio::time::timeout(Duration::from_secs(5), read)
            .await
            .unwrap()
            .unwrap();
        assert!(n > 0, "closed after {got:?}");
        got.extend_from_slice(&buf[..n]);
        reads += 1;
    }
    assert_eq!(got, b"220 fake.test ESMTP\r\n");
    assert!(reads > 1, "the greeting came in one read");
}

#[tokio::test]
async fn an_ehlo_keyword_of_spaces_makes_a_blank_last_line() {
    // fuzz_parsers.rs relies on it (lettre 0.11 panicked on this reply; the relay must not).
    let fake = FakeSmtp::start(Script::default().extensions(&[" "]));
    let mut c = Client::connect(&fake).await;
    c.0.get_mut().write_all(b"EHLO me\r\n").await.unwrap();
    let mut raw = String::new();
    for _ in 0..2 {
        c.0.read_line(&mut raw).await.unwrap();
    }
    assert_eq!(raw, "250-fake.test\r\n250  \r\n");
}
