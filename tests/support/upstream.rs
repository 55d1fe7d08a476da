//! The catch-all end-to-end checks run against each real upstream server other than Dovecot
//! (`tests/courier.rs`, `tests/cyrus.rs`): one [`Upstream`] trait over the harnesses, and the
//! checks written once against it.

use std::path::Path;

use super::{
    AccountYaml, Courier, Cyrus, GatewayConfig, Secret, SmtpSink, Tally, numbered_message,
    numbered_pairs, poll_once, sample_catchall_mail, sample_catchall_pairs,
};

/// A running upstream POP3 and IMAP server (plain text) with the test users' mailboxes.
pub trait Upstream {
    /// The server's name, for account names and messages.
    fn name(&self) -> &'static str;
    /// The plain-text port of `protocol` (`pop3` or `imap`).
    fn port(&self, protocol: &str) -> u16;
    /// Puts `mails` into the user's INBOX, in order.
    fn deliver_all(&self, user: &str, mails: &[Vec<u8>]);
    /// How many messages the user's INBOX holds now.
    fn count(&self, user: &str) -> usize;
    /// What the server logged (shown when a pass fails).
    fn log(&self) -> String;
}

impl Upstream for Courier {
    fn name(&self) -> &'static str {
        "courier"
    }
    fn port(&self, protocol: &str) -> u16 {
        match protocol {
            "imap" => self.imap_port(),
            _ => self.pop3_port(),
        }
    }
    fn deliver_all(&self, user: &str, mails: &[Vec<u8>]) {
        Courier::deliver_all(self, user, mails)
    }
    fn count(&self, user: &str) -> usize {
        Courier::count(self, user)
    }
    fn log(&self) -> String {
        Courier::log(self)
    }
}

impl Upstream for Cyrus {
    fn name(&self) -> &'static str {
        "cyrus"
    }
    fn port(&self, protocol: &str) -> u16 {
        match protocol {
            "imap" => self.imap_port(),
            _ => self.pop3_port(),
        }
    }
    fn deliver_all(&self, user: &str, mails: &[Vec<u8>]) {
        Cyrus::deliver_all(self, user, mails)
    }
    fn count(&self, user: &str) -> usize {
        Cyrus::count(self, user)
    }
    fn log(&self) -> String {
        Cyrus::log(self)
    }
}

/// The catch-all account `user`/`password` on `server` over `protocol` (`pop3` or `imap`),
/// plain text, then `extra_lines`, relaying to `sink`: the configuration's path.
pub fn upstream_config(
    dir: &Path,
    server: &dyn Upstream,
    (user, password): (&str, &str),
    sink: &SmtpSink,
    protocol: &str,
    extra_lines: &[&str],
) -> String {
    let mut extra = vec!["poll_interval: 5s".to_owned()];
    extra.extend(extra_lines.iter().map(|l| l.to_string()));
    let account = AccountYaml {
        name: format!("{}-{protocol}", server.name()),
        protocol: protocol.into(),
        port: server.port(protocol),
        tls: "none".into(),
        username: user.into(),
        // The YAML single-quoted form: only ' needs doubling.
        password: Secret::Inline(format!("'{}'", password.replace('\'', "''"))),
        extra_lines: extra,
        ..AccountYaml::default()
    };
    GatewayConfig::new(dir.join("state"), sink.port())
        .account(account)
        .write(dir)
        .display()
        .to_string()
}

/// One `poll-once` pass; panics with mailferry's and the server's output when it fails.
/// Returns mailferry's log (stderr).
pub fn upstream_pass(config: &str, server: &dyn Upstream) -> String {
    let out = poll_once(config);
    let log = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        out.status.success(),
        "poll-once failed\n{log}\n--- {}\n{}",
        server.name(),
        server.log()
    );
    log
}

/// The sample catch-all mailbox of `login` on `server`: every copy reaches exactly its
/// recipients, the mailbox is emptied, and a second pass relays nothing.
pub fn catchall_retention_delete(server: &dyn Upstream, login: (&str, &str), protocol: &str) {
    catchall_retention_delete_with(server, login, protocol, &[]);
}

/// [`catchall_retention_delete`] with the account's `extra_lines` (e.g. `spa: true`);
/// returns mailferry's log of each of the two passes.
pub fn catchall_retention_delete_with(
    server: &dyn Upstream,
    login: (&str, &str),
    protocol: &str,
    extra_lines: &[&str],
) -> [String; 2] {
    let sink = SmtpSink::start(&[]);
    let dir = tempfile::tempdir().expect("a temporary directory");
    server.deliver_all(login.0, &sample_catchall_mail());
    let config = upstream_config(dir.path(), server, login, &sink, protocol, extra_lines);
    let first = upstream_pass(&config, server);
    let tally = Tally::of(&sample_catchall_pairs(), &sink.transactions());
    assert!(tally.exact(), "{protocol}: {tally}");
    assert_eq!(server.count(login.0), 0, "{protocol}: mailbox not emptied");
    let before = sink.transactions().len();
    let second = upstream_pass(&config, server);
    assert_eq!(
        sink.transactions().len(),
        before,
        "{protocol}: the second pass relayed again"
    );
    [first, second]
}

/// POP3 with `retention: keep`: three passes over five messages deliver each once and keep
/// them all; a sixth message is then the only one delivered (the server's UIDLs are stable
/// across sessions).
pub fn pop3_retention_keep(server: &dyn Upstream, login: (&str, &str)) {
    let sink = SmtpSink::start(&[]);
    let dir = tempfile::tempdir().expect("a temporary directory");
    let user = login.0;
    server.deliver_all(user, &(0..5).map(numbered_message).collect::<Vec<_>>());
    let lines = ["retention: keep", "initial: deliver_all"];
    let config = upstream_config(dir.path(), server, login, &sink, "pop3", &lines);
    for _ in 0..3 {
        upstream_pass(&config, server);
    }
    assert_eq!(sink.transactions().len(), 5);
    assert_eq!(server.count(user), 5, "retention keep must keep everything");

    server.deliver_all(user, &[numbered_message(5)]);
    upstream_pass(&config, server);
    let tally = Tally::of(&numbered_pairs(6), &sink.transactions());
    assert!(tally.exact(), "{tally}");
    assert_eq!(server.count(user), 6);
}
