//! The test harness checks itself: Dovecot and smtp-sink start, speak their protocols, and
//! the harness reads back what they hold, with raw sockets and no mailferry code involved.

mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, TcpStream};
use std::sync::Arc;
use std::time::Duration;

use support::{
    Dovecot, SmtpSink, message, parse_dump, sample_catchall_expected, sample_catchall_mail,
};
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};
use tokio_rustls::rustls::{self, ClientConfig, ClientConnection, RootCertStore, StreamOwned};

/// A line-oriented client for POP3 and SMTP dialogues over any stream.
struct Dialogue<S: Read + Write> {
    stream: BufReader<S>,
}

impl<S: Read + Write> Dialogue<S> {
    fn new(stream: S) -> Self {
        Dialogue {
            stream: BufReader::new(stream),
        }
    }

    fn read_line(&mut self) -> String {
        let mut line = Vec::new();
        self.stream
            .read_until(b'\n', &mut line)
            .expect("read a line");
        String::from_utf8_lossy(&line).into_owned()
    }

    /// Sends one command line and returns the first reply line.
    fn cmd(&mut self, line: &str) -> String {
        self.send(format!("{line}\r\n").as_bytes());
        self.read_line()
    }

    fn send(&mut self, bytes: &[u8]) {
        self.stream.get_mut().write_all(bytes).expect("write");
        self.stream.get_mut().flush().expect("flush");
    }

    /// Reads a POP3 multi-line body up to the "." line, undoing the dot-stuffing.
    fn pop3_multiline(&mut self) -> Vec<u8> {
        let mut body = Vec::new();
        loop {
            let mut line = Vec::new();
            self.stream
                .read_until(b'\n', &mut line)
                .expect("read a line");
            assert!(!line.is_empty(), "EOF inside a multi-line response");
            if line == b".\r\n" {
                return body;
            }
            let unstuffed = line.strip_prefix(b".").unwrap_or(&line);
            body.extend_from_slice(unstuffed);
        }
    }

    /// Reads an SMTP reply (all continuation lines); returns the last line.
    fn smtp_reply(&mut self) -> String {
        loop {
            let line = self.read_line();
            if line.as_bytes().get(3) != Some(&b'-') {
                return line;
            }
        }
    }

    fn smtp(&mut self, line: &str) -> String {
        self.send(format!("{line}\r\n").as_bytes());
        self.smtp_reply()
    }

    fn into_inner(self) -> S {
        self.stream.into_inner()
    }
}

fn connect(port: u16) -> TcpStream {
    let s = TcpStream::connect((Ipv4Addr::LOCALHOST, port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("set timeout");
    s
}

/// A rustls client that trusts only `ca_file` (the same webpki checks mailferry's clients do).
fn tls_config(ca_file: &std::path::Path) -> Arc<ClientConfig> {
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca_file).expect("open ca_file") {
        roots
            .add(cert.expect("a PEM certificate"))
            .expect("add the CA");
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    Arc::new(config)
}

fn tls_connect(
    tcp: TcpStream,
    config: &Arc<ClientConfig>,
    name: &str,
) -> StreamOwned<ClientConnection, TcpStream> {
    let name = ServerName::try_from(name.to_owned()).expect("server name");
    let conn = ClientConnection::new(config.clone(), name).expect("client connection");
    StreamOwned::new(conn, tcp)
}

/// How a POP3 client sees a Maildir message: CRLF line ends.
fn crlf(raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    for &b in raw {
        if b == b'\n' {
            out.push(b'\r');
        }
        out.push(b);
    }
    out
}

fn numbered(n: usize) -> Vec<u8> {
    message(
        &[
            ("From", "sender@example.org"),
            ("To", "alice@example.com"),
            ("Subject", &format!("message {n}")),
        ],
        &format!("body {n}\n.dot line {n}\n"),
    )
}

#[test]
fn dovecot_pop3_login_stat_capa_and_order() {
    if support::skip_e2e() {
        return;
    }
    let dovecot = Dovecot::start(&[("alice@example.com", "pw-alice"), ("bob@example.com", "pw")]);
    let mails: Vec<Vec<u8>> = (0..25).map(numbered).collect();
    dovecot.deliver_all("alice@example.com", &mails);
    assert_eq!(dovecot.count("alice@example.com"), 25);
    assert_eq!(dovecot.count("bob@example.com"), 0);
    assert_eq!(dovecot.messages("alice@example.com"), mails);

    let mut pop = Dialogue::new(connect(dovecot.pop3_port()));
    assert!(pop.read_line().starts_with("+OK"));
    assert!(pop.cmd("CAPA").starts_with("+OK"));
    let capa = String::from_utf8_lossy(&pop.pop3_multiline()).into_owned();
    assert!(capa.lines().any(|l| l == "STLS"), "CAPA: {capa}");
    assert!(capa.lines().any(|l| l.starts_with("UIDL")), "CAPA: {capa}");
    assert!(pop.cmd("USER alice@example.com").starts_with("+OK"));
    let pass = pop.cmd("PASS pw-alice");
    assert!(pass.starts_with("+OK"), "PASS: {pass}\n{}", dovecot.log());
    let stat = pop.cmd("STAT");
    assert!(stat.starts_with("+OK 25 "), "STAT: {stat}");

    // Messages come out in the order delivered, byte for byte (CRLF, dots unstuffed).
    for (i, mail) in mails.iter().enumerate() {
        assert!(pop.cmd(&format!("RETR {}", i + 1)).starts_with("+OK"));
        assert_eq!(pop.pop3_multiline(), crlf(mail), "message {}", i + 1);
    }
    // Stable UIDLs, one per message.
    assert!(pop.cmd("UIDL").starts_with("+OK"));
    let uidl = String::from_utf8_lossy(&pop.pop3_multiline()).into_owned();
    assert_eq!(uidl.lines().count(), 25);

    // A deletion shows in messages()/count() once the session commits it.
    assert!(pop.cmd("DELE 1").starts_with("+OK"));
    assert!(pop.cmd("QUIT").starts_with("+OK"));
    assert!(support::wait_until(Duration::from_secs(5), || dovecot
        .count("alice@example.com")
        == 24));
    assert_eq!(dovecot.messages("alice@example.com"), mails[1..].to_vec());

    // A wrong password is refused.
    let mut pop = Dialogue::new(connect(dovecot.pop3_port()));
    pop.read_line();
    pop.cmd("USER bob@example.com");
    assert!(pop.cmd("PASS wrong").starts_with("-ERR"));
}

#[test]
fn dovecot_tls_with_its_ca_file() {
    if support::skip_e2e() {
        return;
    }
    let dovecot = Dovecot::start(&[("catchall@example.com", "secret")]);
    dovecot.deliver("catchall@example.com", &numbered(1));
    let config = tls_config(&dovecot.ca_file());

    // Implicit TLS on the pop3s port, for the name and for the IP address.
    for name in ["localhost", "127.0.0.1"] {
        let mut pop = Dialogue::new(tls_connect(connect(dovecot.pop3s_port()), &config, name));
        let greeting = pop.read_line();
        assert!(greeting.starts_with("+OK"), "{greeting}\n{}", dovecot.log());
        pop.cmd("USER catchall@example.com");
        assert!(pop.cmd("PASS secret").starts_with("+OK"));
        assert!(pop.cmd("STAT").starts_with("+OK 1 "));
    }

    // STLS on the plain port, then login inside TLS.
    let mut pop = Dialogue::new(connect(dovecot.pop3_port()));
    pop.read_line();
    assert!(pop.cmd("STLS").starts_with("+OK"));
    let tcp = pop.into_inner();
    let mut pop = Dialogue::new(tls_connect(tcp, &config, "localhost"));
    assert!(pop.cmd("USER catchall@example.com").starts_with("+OK"));
    assert!(pop.cmd("PASS secret").starts_with("+OK"));
    assert!(pop.cmd("STAT").starts_with("+OK 1 "));

    // IMAP greets on both of its ports.
    let mut imap = Dialogue::new(connect(dovecot.imap_port()));
    assert!(imap.read_line().starts_with("* OK"));
    let mut imaps = Dialogue::new(tls_connect(
        connect(dovecot.imaps_port()),
        &config,
        "localhost",
    ));
    assert!(imaps.read_line().starts_with("* OK"));
}

#[test]
fn parallel_dovecots_do_not_collide() {
    if support::skip_e2e() {
        return;
    }
    let handles: Vec<_> = (0..3)
        .map(|_| std::thread::spawn(|| Dovecot::start(&[("u@example.com", "p")])))
        .collect();
    let instances: Vec<Dovecot> = handles
        .into_iter()
        .map(|h| h.join().expect("start"))
        .collect();
    let mut ports: Vec<u16> = instances
        .iter()
        .flat_map(|d| [d.pop3_port(), d.pop3s_port(), d.imap_port(), d.imaps_port()])
        .collect();
    ports.sort();
    ports.dedup();
    assert_eq!(ports.len(), 12);
    for (i, d) in instances.iter().enumerate() {
        d.deliver("u@example.com", &numbered(i));
        let mut pop = Dialogue::new(connect(d.pop3_port()));
        pop.read_line();
        pop.cmd("USER u@example.com");
        assert!(pop.cmd("PASS p").starts_with("+OK"));
        assert!(pop.cmd("STAT").starts_with("+OK 1 "));
        assert!(pop.cmd("RETR 1").starts_with("+OK"));
        assert_eq!(pop.pop3_multiline(), crlf(&numbered(i)));
    }
}

#[test]
fn dovecot_stops_on_drop() {
    if support::skip_e2e() {
        return;
    }
    let dovecot = Dovecot::start(&[("u@example.com", "p")]);
    let port = dovecot.pop3_port();
    let root = dovecot.root().to_path_buf();
    drop(dovecot);
    assert!(TcpStream::connect((Ipv4Addr::LOCALHOST, port)).is_err());
    assert!(!root.exists());
}

/// One SMTP transaction with a raw dialogue; `data` is sent as is (already dot-stuffed,
/// CRLF, without the final ".").
fn smtp_send(port: u16, from: &str, rcpts: &[&str], data: &[u8]) -> String {
    let mut smtp = Dialogue::new(connect(port));
    assert!(smtp.smtp_reply().starts_with("220"));
    assert!(smtp.smtp("EHLO harness.test").starts_with("250"));
    assert!(smtp.smtp(&format!("MAIL FROM:<{from}>")).starts_with("250"));
    for r in rcpts {
        assert!(smtp.smtp(&format!("RCPT TO:<{r}>")).starts_with("250"));
    }
    let go = smtp.smtp("DATA");
    if !go.starts_with("354") {
        return go;
    }
    smtp.send(data);
    let reply = smtp.smtp(".");
    smtp.smtp("QUIT");
    reply
}

#[test]
fn smtp_sink_records_sender_recipients_and_exact_message() {
    if support::skip_e2e() {
        return;
    }
    let sink = SmtpSink::start(&[]);
    let wire = b"Subject: test one\r\nFrom: a@example.org\r\n\r\nfirst line\r\n\r\n..leading dot\r\n..\r\nX-Client-Addr: lookalike\r\n\r\nlast line\r\n";
    let reply = smtp_send(
        sink.port(),
        "sender@example.org",
        &["alice@example.com", "bob@example.com"],
        wire,
    );
    assert!(reply.starts_with("250"), "{reply}");
    // A second one, from the null sender, with 8-bit bytes and a trailing empty line.
    let wire2 = "Subject: zwei\r\n\r\nGrüße\r\n\r\n".as_bytes();
    assert!(smtp_send(sink.port(), "", &["carol@example.com"], wire2).starts_with("250"));

    let got = sink.transactions();
    assert_eq!(
        got.len(),
        2,
        "dump:\n{}",
        String::from_utf8_lossy(&sink.dump())
    );
    assert_eq!(got[0].mail_from, "sender@example.org");
    assert_eq!(got[0].rcpts, ["alice@example.com", "bob@example.com"]);
    assert_eq!(
        got[0].message,
        b"Subject: test one\nFrom: a@example.org\n\nfirst line\n\n.leading dot\n.\nX-Client-Addr: lookalike\n\nlast line\n"
    );
    assert_eq!(got[0].subject(), "test one");
    assert_eq!(
        got[0].body(),
        b"first line\n\n.leading dot\n.\nX-Client-Addr: lookalike\n\nlast line\n"
    );
    assert_eq!(got[1].mail_from, "");
    assert_eq!(got[1].rcpts, ["carol@example.com"]);
    assert_eq!(got[1].message, "Subject: zwei\n\nGrüße\n\n".as_bytes());
}

#[test]
fn smtp_sink_refusing_data_records_nothing() {
    if support::skip_e2e() {
        return;
    }
    let sink = SmtpSink::start(&["-f", "data"]);
    let reply = smtp_send(sink.port(), "s@example.org", &["a@example.com"], b"x\r\n");
    assert!(reply.starts_with('5'), "{reply}");
    assert!(sink.transactions().is_empty());
}

#[test]
fn dump_parser_handles_empty_messages_blank_lines_and_lookalikes() {
    let header = |from: &str, rcpts: &[&str]| {
        let mut h = format!(
            "X-Client-Addr: 127.0.0.1\nX-Client-Proto: ESMTP\nX-Helo-Args: gw\nX-Mail-Args: <{from}> BODY=8BITMIME\n"
        );
        for r in rcpts {
            h.push_str(&format!("X-Rcpt-Args: <{r}>\n"));
        }
        h.push_str("Received: from gw ([127.0.0.1])\n\tby mfs-x (smtp-sink) with ESMTP id 1;\n\tSun, 22 Nov 2026 01:57:34 +0000 (UTC)\n");
        h
    };
    let mut dump = String::new();
    dump += &header("a@x.org", &["r1@example.com", "r2@example.com"]);
    dump += "Subject: one\n\nbody\n\nX-Client-Addr: not a record\nmore\n\n\n";
    dump += "\n";
    dump += &header("", &["r3@example.com"]);
    dump += "\n"; // an empty message
    dump += &header("b@x.org", &["r4@example.com"]);
    dump += "Subject: last\n\nend\n";
    dump += "\n";

    let got = parse_dump(dump.as_bytes());
    assert_eq!(got.len(), 3);
    assert_eq!(got[0].mail_from, "a@x.org");
    assert_eq!(got[0].rcpts, ["r1@example.com", "r2@example.com"]);
    assert_eq!(
        got[0].message,
        b"Subject: one\n\nbody\n\nX-Client-Addr: not a record\nmore\n\n\n"
    );
    assert_eq!(got[1].mail_from, "");
    assert_eq!(got[1].rcpts, ["r3@example.com"]);
    assert_eq!(got[1].message, b"");
    assert_eq!(got[2].mail_from, "b@x.org");
    assert_eq!(got[2].message, b"Subject: last\n\nend\n");
    assert!(parse_dump(b"").is_empty());
}

#[test]
fn sample_mail_has_the_promised_shapes() {
    let mails = sample_catchall_mail();
    let expected = sample_catchall_expected();
    assert_eq!(mails.len(), expected.len());
    assert!((12..=14).contains(&mails.len()));
    for (i, m) in mails.iter().enumerate() {
        assert!(
            !m.contains(&b'\r'),
            "message {i} has CR: a Maildir stores LF"
        );
        let text = String::from_utf8_lossy(m);
        assert!(text.contains("\nSubject: "), "message {i} has no Subject");
        assert!(text.contains("\n\n"), "message {i} has no body separator");
    }
    assert_eq!(mails.iter().filter(|m| !m.ends_with(b"\n")).count(), 1);
    assert!(mails.iter().any(|m| !m.is_ascii()));
    assert!(mails.iter().any(|m| m.windows(2).any(|w| w == b"\n.")));
    assert!(
        mails
            .iter()
            .any(|m| String::from_utf8_lossy(m).contains("attachment;"))
    );
    // Envelope headers sit above the provider's Received in the copies that have them.
    let first = String::from_utf8_lossy(&mails[0]).into_owned();
    assert!(first.find("X-Original-To:") < first.find("Received:"));
}
