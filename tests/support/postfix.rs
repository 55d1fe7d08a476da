//! A private Postfix instance on loopback as the internal mail server: the receiver that
//! proves no address is relayed outside (a default Postfix takes `%`, `!` and a quoted `@` in
//! a local part as routing: `evil%x.com@example.com` leaves for `evil@x.com`).
//!
//! `postfix -c DIR start` with its own `main.cf` and `master.cf`, its queue, data directory
//! and log under a temporary directory, one smtpd listener on 127.0.0.1:PORT. The accepted
//! domains are its `mydestination`; their mail goes (as `local_transport`) to the smtp-sink
//! [`Postfix::inside`], everything else (`default_transport`) to the smtp-sink
//! [`Postfix::outside`]. `mynetworks = 127.0.0.0/8`: anything from loopback may relay, as on
//! an internal server that trusts its gateway. Stopped (`postfix -c DIR stop`) when dropped.

use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::net::{Ipv4Addr, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use super::{SmtpSink, free_port, process_alive, wait_until};

const POSTFIX: &str = "/usr/sbin/postfix";
const START_ATTEMPTS: usize = 3;

/// A running private Postfix with its two smtp-sinks.
pub struct Postfix {
    dir: tempfile::TempDir,
    port: u16,
    /// Receives the mail for the accepted domains (the organisation's mailboxes).
    pub inside: SmtpSink,
    /// Receives everything Postfix relays elsewhere: must stay empty.
    pub outside: SmtpSink,
}

impl Postfix {
    /// Starts an instance whose local domains are `domains`; panics with its log if it
    /// does not greet within 30 s.
    pub fn start(domains: &[&str]) -> Postfix {
        Postfix::start_with(domains, "")
    }

    /// Like [`Postfix::start`], but mail is taken only after SMTP AUTH, checked by Dovecot
    /// through its authentication socket `dovecot_auth` ([`super::Dovecot::auth_socket`]).
    pub fn start_with_auth(domains: &[&str], dovecot_auth: &Path) -> Postfix {
        let sasl = format!(
            "smtpd_sasl_auth_enable = yes\n\
             smtpd_sasl_type = dovecot\n\
             smtpd_sasl_path = {}\n\
             smtpd_recipient_restrictions = permit_sasl_authenticated, reject\n",
            dovecot_auth.display()
        );
        Postfix::start_with(domains, &sasl)
    }

    /// Like [`Postfix::start`], but its smtpd answers RCPT for each `(address, reply)` of
    /// `refused` with that reply (`550 5.1.1 ...` for good, `450 ...` for now), as an internal
    /// server that knows its users does: a `check_recipient_access` map.
    pub fn start_refusing(domains: &[&str], refused: &[(&str, &str)]) -> Postfix {
        Postfix::start_with_access(domains, "", refused)
    }

    /// Started with `extra` lines at the end of its `main.cf`.
    fn start_with(domains: &[&str], extra: &str) -> Postfix {
        Postfix::start_with_access(domains, extra, &[])
    }

    /// Started with `extra` lines at the end of its `main.cf` and, when `refused` names any
    /// address, the recipient access map of [`Postfix::start_refusing`].
    fn start_with_access(domains: &[&str], extra: &str, refused: &[(&str, &str)]) -> Postfix {
        let inside = SmtpSink::start(&[]);
        let outside = SmtpSink::start(&[]);
        let dir = tempfile::Builder::new()
            .prefix("mfp-")
            .tempdir_in("/tmp")
            .expect("create a temporary directory under /tmp");
        // Postfix's daemons (user postfix) must traverse it to their queue.
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755))
            .expect("chmod the Postfix directory");
        // data_directory is left to Postfix: it must be owned by the postfix user.
        for sub in ["conf", "queue"] {
            fs::create_dir_all(dir.path().join(sub)).expect("create a Postfix directory");
            fs::set_permissions(dir.path().join(sub), fs::Permissions::from_mode(0o755))
                .expect("chmod a Postfix directory");
        }
        let mut postfix = Postfix {
            dir,
            port: 0,
            inside,
            outside,
        };
        let mut failures = String::new();
        for _ in 0..START_ATTEMPTS {
            // A new port each time: the last one may have been taken meanwhile.
            postfix.port = free_port();
            postfix.write_config(domains, extra, refused);
            let out = postfix.postfix("start");
            if out.status.success() && wait_until(Duration::from_secs(30), || postfix.greets()) {
                return postfix;
            }
            failures.push_str(&format!(
                "postfix start: {}\n{}{}\n{}\n",
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr),
                postfix.log()
            ));
            postfix.stop();
        }
        panic!("Postfix did not start:\n{failures}");
    }

    /// The smtpd port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Postfix's log so far (`maillog_file`).
    pub fn log(&self) -> String {
        fs::read_to_string(self.root().join("maillog")).unwrap_or_default()
    }

    /// Waits until Postfix has nothing left in its queue (every message delivered or
    /// bounced), so that what the sinks hold is final; false after `timeout`.
    pub fn wait_queue_empty(&self, timeout: Duration) -> bool {
        let queue = self.root().join("queue");
        wait_until(timeout, || {
            ["maildrop", "incoming", "active", "deferred", "hold"]
                .iter()
                .all(|q| count_files(&queue.join(q)) == 0)
        })
    }

    /// One SMTP transaction straight to this Postfix (not through mailferry): `rcpts` as
    /// written between the angle brackets. Returns each RCPT's reply line.
    pub fn send_direct(&self, from: &str, rcpts: &[&str], message: &str) -> Vec<String> {
        let stream =
            TcpStream::connect((Ipv4Addr::LOCALHOST, self.port)).expect("connect to Postfix");
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .expect("set a read timeout");
        let mut writer = stream.try_clone().expect("clone the stream");
        let mut reader = BufReader::new(stream);
        let mut reply = |writer: &mut TcpStream, line: Option<&str>| -> String {
            if let Some(line) = line {
                writer
                    .write_all(format!("{line}\r\n").as_bytes())
                    .expect("write to Postfix");
            }
            loop {
                let mut l = String::new();
                reader.read_line(&mut l).expect("read from Postfix");
                if l.is_empty() || l.as_bytes().get(3) != Some(&b'-') {
                    return l.trim_end().to_owned();
                }
            }
        };
        let greeting = reply(&mut writer, None);
        assert!(greeting.starts_with("220"), "{greeting}");
        let ehlo = reply(&mut writer, Some("EHLO gateway.test"));
        assert!(ehlo.starts_with("250"), "{ehlo}");
        let mail = reply(&mut writer, Some(&format!("MAIL FROM:<{from}>")));
        assert!(mail.starts_with("250"), "{mail}");
        let replies: Vec<String> = rcpts
            .iter()
            .map(|r| reply(&mut writer, Some(&format!("RCPT TO:<{r}>"))))
            .collect();
        if replies.iter().any(|r| r.starts_with("250")) {
            let data = reply(&mut writer, Some("DATA"));
            assert!(data.starts_with("354"), "{data}");
            let body = message.replace("\r\n", "\n").replace('\n', "\r\n");
            let end = reply(&mut writer, Some(&format!("{body}\r\n.")));
            assert!(end.starts_with("250"), "{end}");
        }
        let _ = reply(&mut writer, Some("QUIT"));
        replies
    }

    fn root(&self) -> &Path {
        self.dir.path()
    }

    fn conf_dir(&self) -> PathBuf {
        self.root().join("conf")
    }

    /// Changes the replies of [`Postfix::start_refusing`]'s map to `refused` (an address left
    /// out is accepted) and reloads Postfix; an smtpd already running may answer from the old
    /// map until it exits.
    pub fn set_refused(&self, refused: &[(&str, &str)]) {
        self.write_access_map(refused);
        let out = self.postfix("reload");
        assert!(out.status.success(), "postfix reload: {out:?}");
    }

    /// The recipient access map (`texthash`: read as smtpd starts, no postmap needed).
    fn write_access_map(&self, refused: &[(&str, &str)]) -> PathBuf {
        let map = self.conf_dir().join("recipient_access");
        let lines: String = (refused.iter())
            .map(|(address, reply)| format!("{address} {reply}\n"))
            .collect();
        fs::write(&map, lines).expect("write the recipient access map");
        map
    }

    fn write_config(&self, domains: &[&str], extra: &str, refused: &[(&str, &str)]) {
        let root = self.root().display().to_string();
        let mut extra = extra.to_owned();
        if !refused.is_empty() {
            let map = self.write_access_map(refused);
            extra.push_str(&format!(
                "smtpd_recipient_restrictions = check_recipient_access texthash:{}, permit_mynetworks, reject\n",
                map.display()
            ));
        }
        let main = format!(
            "\
compatibility_level = 3.6
queue_directory = {root}/queue
data_directory = {root}/data
meta_directory = /etc/postfix
command_directory = /usr/sbin
daemon_directory = /usr/lib/postfix/sbin
shlib_directory = /usr/lib/postfix
mail_owner = postfix
setgid_group = postdrop
maillog_file = {root}/maillog
maillog_file_prefixes = /tmp
syslog_name = postfix-mailferry-test
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
myhostname = internal.test
mydomain = internal.test
myorigin = internal.test
mydestination = {domains}
mynetworks = 127.0.0.0/8
local_recipient_maps =
alias_maps =
alias_database =
local_transport = smtp:[127.0.0.1]:{inside}
default_transport = smtp:[127.0.0.1]:{outside}
relayhost =
smtp_host_lookup = native
disable_dns_lookups = yes
smtp_tls_security_level = none
smtpd_tls_security_level = none
biff = no
append_dot_mydomain = no
{extra}",
            domains = domains.join(", "),
            inside = self.inside.port(),
            outside = self.outside.port(),
        );
        // Only what these tests need; no chroot, no pickup (nothing uses sendmail).
        let master = format!(
            "\
127.0.0.1:{port} inet n - n - - smtpd
cleanup unix n - n - 0 cleanup
qmgr unix n - n 300 1 qmgr
rewrite unix - - n - - trivial-rewrite
bounce unix - - n - 0 bounce
defer unix - - n - 0 bounce
trace unix - - n - 0 bounce
verify unix - - n - 1 verify
flush unix n - n 1000? 0 flush
proxymap unix - - n - - proxymap
smtp unix - - n - - smtp
relay unix - - n - - smtp
showq unix n - n - - showq
error unix - - n - - error
retry unix - - n - - error
discard unix - - n - - discard
anvil unix - - n - 1 anvil
scache unix - - n - 1 scache
postlog unix-dgram n - n - 1 postlogd
",
            port = self.port
        );
        fs::write(self.conf_dir().join("main.cf"), main).expect("write main.cf");
        fs::write(self.conf_dir().join("master.cf"), master).expect("write master.cf");
    }

    /// `postfix -c CONF <command>`.
    fn postfix(&self, command: &str) -> std::process::Output {
        Command::new(POSTFIX)
            .arg("-c")
            .arg(self.conf_dir())
            .arg(command)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("cannot run {POSTFIX} (package postfix): {e}"))
    }

    fn greets(&self) -> bool {
        let Ok(stream) = TcpStream::connect((Ipv4Addr::LOCALHOST, self.port)) else {
            return false;
        };
        let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
        let mut line = String::new();
        let _ = BufReader::new(stream).read_line(&mut line);
        line.starts_with("220 ") && line.contains("internal.test")
    }

    fn master_pid(&self) -> Option<u32> {
        fs::read_to_string(self.root().join("queue/pid/master.pid"))
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    /// `postfix stop`, then waits (up to 10 s) for the master to be gone.
    fn stop(&self) {
        let pid = self.master_pid();
        let _ = self.postfix("stop");
        if let Some(pid) = pid {
            wait_until(Duration::from_secs(10), || !process_alive(pid));
        }
    }
}

impl Drop for Postfix {
    fn drop(&mut self) {
        self.stop();
    }
}

fn count_files(dir: &Path) -> usize {
    let Ok(entries) = fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| {
            let path = e.path();
            if path.is_dir() { count_files(&path) } else { 1 }
        })
        .sum()
}
