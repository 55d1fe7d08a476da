//! The fault proxy checks itself against a real Dovecot with raw sockets (no mailferry code):
//! each fault does what `tests/faults.rs` relies on it doing.

mod support;

use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{Ipv4Addr, TcpStream};
use std::time::Duration;

use support::{Dovecot, Fault, FaultProxy, message, wait_until};

const USER: &str = "catchall@example.com";
const PASS: &str = "pop-secret";

/// A Dovecot whose mailbox holds two messages of about 4 KB.
fn dovecot() -> Dovecot {
    let dovecot = Dovecot::start(&[(USER, PASS)]);
    for i in 0..2 {
        let body = format!("line {i} of a test message\n").repeat(160);
        dovecot.deliver(
            USER,
            &message(
                &[
                    ("From", "a@partner.org"),
                    ("To", "b@example.com"),
                    ("Message-ID", &format!("<self-{i}@partner.org>")),
                ],
                &body,
            ),
        );
    }
    dovecot
}

/// A POP3 session through the proxy, logged in.
struct Session {
    reader: BufReader<TcpStream>,
}

impl Session {
    fn login(port: u16) -> Session {
        let stream = TcpStream::connect((Ipv4Addr::LOCALHOST, port)).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .expect("set a read timeout");
        let mut s = Session {
            reader: BufReader::new(stream),
        };
        assert!(s.line().starts_with("+OK"), "greeting");
        assert!(s.cmd(&format!("USER {USER}")).starts_with("+OK"));
        assert!(s.cmd(&format!("PASS {PASS}")).starts_with("+OK"));
        s
    }

    fn line(&mut self) -> String {
        let mut line = String::new();
        self.reader.read_line(&mut line).expect("read a line");
        line
    }

    fn send(&mut self, line: &str) {
        self.reader
            .get_mut()
            .write_all(format!("{line}\r\n").as_bytes())
            .expect("send a command");
    }

    fn cmd(&mut self, line: &str) -> String {
        self.send(line);
        self.line()
    }

    /// Everything until the connection ends (or the read timeout), with how it ended.
    fn rest(&mut self) -> (Vec<u8>, Option<ErrorKind>) {
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            match self.reader.read(&mut buf) {
                Ok(0) => return (got, None),
                Ok(n) => got.extend_from_slice(&buf[..n]),
                Err(e) => return (got, Some(e.kind())),
            }
        }
    }

    /// A whole multi-line response body after its status line, terminator included.
    fn multiline(&mut self) -> Vec<u8> {
        let mut body = Vec::new();
        loop {
            let mut line = Vec::new();
            self.reader.read_until(b'\n', &mut line).expect("read");
            assert!(!line.is_empty(), "connection ended inside a response");
            body.extend_from_slice(&line);
            if line == b".\r\n" {
                return body;
            }
        }
    }
}

#[test]
fn no_fault_and_delay_pass_everything_through_in_order() {
    if support::skip_e2e() {
        return;
    }
    let dovecot = dovecot();
    let mut direct = Session::login(dovecot.pop3_port());
    assert!(direct.cmd("RETR 2").starts_with("+OK"));
    let expected = direct.multiline();
    for fault in [
        Fault::None,
        Fault::Delay {
            delay: Duration::from_millis(20),
        },
    ] {
        let proxy = FaultProxy::start(dovecot.pop3_port(), move |_| fault.clone());
        let mut s = Session::login(proxy.port());
        // Pipelined: both responses, in order.
        s.send("RETR 1");
        s.send("RETR 2");
        assert!(s.line().starts_with("+OK"));
        let _ = s.multiline();
        assert!(s.line().starts_with("+OK"));
        assert_eq!(s.multiline(), expected);
        assert!(s.cmd("QUIT").starts_with("+OK"));
        assert_eq!(proxy.fired(), 0);
    }
}

#[test]
fn drop_mid_retr_cuts_the_chosen_response_after_n_bytes() {
    if support::skip_e2e() {
        return;
    }
    let dovecot = dovecot();
    let proxy = FaultProxy::start(dovecot.pop3_port(), |n| match n {
        0 => Fault::DropMidRetr {
            retr: 2,
            bytes: 1_000,
        },
        _ => Fault::None,
    });
    let mut s = Session::login(proxy.port());
    assert!(
        s.cmd("RETR 1").starts_with("+OK"),
        "the first RETR is whole"
    );
    let _ = s.multiline();
    s.send("RETR 2");
    let (got, _) = s.rest();
    assert_eq!(got.len(), 1_000, "exactly the bytes allowed, then the end");
    assert_eq!(proxy.fired(), 1);
    // The second connection is not faulty, and nothing was deleted.
    let mut again = Session::login(proxy.port());
    assert!(again.cmd("STAT").starts_with("+OK 2 "));
}

#[test]
fn stall_holds_the_response_until_released() {
    if support::skip_e2e() {
        return;
    }
    let dovecot = dovecot();
    let proxy = FaultProxy::start(dovecot.pop3_port(), |_| Fault::Stall {
        retr: 1,
        bytes: 100,
        duration: Duration::from_secs(600),
    });
    let mut s = Session::login(proxy.port());
    s.send("RETR 1");
    s.reader
        .get_ref()
        .set_read_timeout(Some(Duration::from_millis(500)))
        .expect("set a read timeout");
    let (got, end) = s.rest();
    assert_eq!(got.len(), 100, "the bytes before the stall");
    assert!(
        matches!(end, Some(ErrorKind::WouldBlock | ErrorKind::TimedOut)),
        "then nothing: {end:?}"
    );
    assert_eq!(proxy.fired(), 1);
    proxy.release();
    s.reader
        .get_ref()
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("set a read timeout");
    let mut rest = Vec::new();
    while !rest.ends_with(b"\r\n.\r\n") {
        let mut buf = [0u8; 4096];
        let n = s.reader.read(&mut buf).expect("the rest after the release");
        assert!(n > 0, "the connection ended instead");
        rest.extend_from_slice(&buf[..n]);
    }
}

#[test]
fn trickle_forwards_one_byte_at_a_time() {
    if support::skip_e2e() {
        return;
    }
    let dovecot = dovecot();
    let proxy = FaultProxy::start(dovecot.pop3_port(), |_| Fault::Trickle {
        retr: 1,
        every: Duration::from_millis(200),
    });
    let mut s = Session::login(proxy.port());
    s.send("RETR 1");
    let stream = s.reader.get_mut();
    // 200 ms apart, each byte is read before the next one is sent.
    for _ in 0..5 {
        let mut buf = [0u8; 4096];
        let n = stream.read(&mut buf).expect("a byte");
        assert_eq!(n, 1, "one byte per read");
    }
    assert_eq!(proxy.fired(), 1);
}

#[test]
fn reset_on_dele_resets_and_the_server_keeps_the_message() {
    if support::skip_e2e() {
        return;
    }
    let dovecot = dovecot();
    let proxy = FaultProxy::start(dovecot.pop3_port(), |n| match n {
        0 => Fault::ResetOnDele,
        _ => Fault::None,
    });
    let mut s = Session::login(proxy.port());
    assert!(s.cmd("STAT").starts_with("+OK 2 "));
    s.send("DELE 1");
    let (got, end) = s.rest();
    assert!(got.is_empty(), "no reply to DELE: {got:?}");
    assert_eq!(end, Some(ErrorKind::ConnectionReset), "an RST, not a FIN");
    assert_eq!(proxy.fired(), 1);
    assert!(
        wait_until(Duration::from_secs(5), || proxy.open_connections() == 0),
        "the proxy let go of the connection"
    );
    let mut again = Session::login(proxy.port());
    assert!(
        again.cmd("STAT").starts_with("+OK 2 "),
        "the DELE was never committed"
    );
    assert_eq!(dovecot.count(USER), 2);
}
