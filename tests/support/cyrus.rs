//! A private Cyrus IMAP and POP3 server (cyrus-imapd 3.6 from Debian, plain text) on free
//! loopback ports: the third real upstream, with its own habits (a mail store of its own, not
//! a Maildir; `user.NAME` mailboxes; `.` as the hierarchy separator unless
//! `unixhierarchysep` is on; PIPELINING offered; LOGIN-DELAY from `popminpoll`).
//!
//! `cyrus-imapd` and `cyrus-pop3d` conflict with Dovecot's packages in apt (`imap-server`,
//! `pop3-server`), so `scripts/install-deps.sh` unpacks them with `cyrus-common` into
//! [`CYRUS_ROOT`] and installs only the libraries they link against. Each instance has its own
//! `imapd.conf` and `cyrus.conf` under a temporary root, its own sasldb (SASL `auxprop`, made
//! with `saslpasswd2`, passwords in clear text as the challenge-response mechanisms need), and
//! its `master` runs as the unprivileged mail user. It offers PLAIN and LOGIN, or with
//! [`Cyrus::start_offering`] the mechanisms asked for, NTLM among them (Cyrus SASL's
//! `libntlm` plugin, package libsasl2-modules, checking NTLMv2 against the sasldb's password).
//! Mailboxes are
//! created over IMAP by the instance's admin, mail is put in with IMAP APPEND and read back
//! over IMAP: what a delivery agent and a user would do.

use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, TcpStream};
use std::os::unix::fs::{PermissionsExt, chown};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::{children_of, free_ports, greets, mail_user_ids, send_signal, wait_until};

/// Where `scripts/install-deps.sh` unpacks cyrus-common, cyrus-imapd and cyrus-pop3d.
pub const CYRUS_ROOT: &str = "/var/cache/mailferry-tests/cyrus/root";

/// The instance's administrator (IMAP `admins:`), who creates the users' mailboxes.
const ADMIN: &str = "cyrus";
/// A throwaway password for the throwaway administrator.
const ADMIN_PASSWORD: &str = "cyrus-admin-test-only";
/// The server name, and the SASL realm of users without a domain (the administrator).
const SERVER_NAME: &str = "localhost";

/// The SASL mechanisms an instance offers unless told otherwise (`sasl_mech_list`).
const MECHANISMS: &[&str] = &["PLAIN", "LOGIN"];

/// Attempts at starting, each with new ports (a port may be taken between pick and bind).
const START_ATTEMPTS: usize = 5;

/// How long the harness waits for one reply of the server.
const REPLY_TIMEOUT: Duration = Duration::from_secs(30);

/// The IMAP hierarchy separator of an instance (`unixhierarchysep`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CyrusSeparator {
    /// `INBOX.Support` (Cyrus's traditional default, as Courier).
    Dot,
    /// `INBOX/Support` (`unixhierarchysep: yes`, Cyrus 3's built-in default).
    Slash,
}

impl CyrusSeparator {
    fn char(self) -> char {
        match self {
            CyrusSeparator::Dot => '.',
            CyrusSeparator::Slash => '/',
        }
    }
}

/// Cyrus IMAP and POP3 on 127.0.0.1, killed (and its files removed) when dropped.
pub struct Cyrus {
    master: Option<Child>,
    pop3: u16,
    imap: u16,
    separator: CyrusSeparator,
    mechanisms: String,
    users: Vec<(String, String)>,
    root: tempfile::TempDir,
}

impl Cyrus {
    /// Starts an instance with these `(user, password)` pairs, each with an empty INBOX, `.`
    /// as the separator, and waits until both services greet. Panics, saying why, if it
    /// cannot start.
    pub fn start(users: &[(&str, &str)]) -> Cyrus {
        Cyrus::start_with(users, CyrusSeparator::Dot)
    }

    /// [`Cyrus::start`] with the hierarchy separator `separator`.
    pub fn start_with(users: &[(&str, &str)], separator: CyrusSeparator) -> Cyrus {
        Cyrus::launch(users, separator, MECHANISMS)
    }

    /// [`Cyrus::start`] offering the SASL mechanisms `mechanisms` (e.g. `["NTLM"]`) over
    /// POP3 (`CAPA` `SASL`) and IMAP (`AUTH=`). The harness's own sessions use IMAP `LOGIN`,
    /// which works whatever is offered.
    ///
    /// NTLM: Cyrus SASL looks the NTLM user name up as it stands (`user@domain` in the
    /// domain's realm) and computes NTLMv2 over the upper-cased user name and the upper-cased
    /// NTLM domain; a `user@domain` login sends no NTLM domain, so both sides agree.
    pub fn start_offering(users: &[(&str, &str)], mechanisms: &[&str]) -> Cyrus {
        Cyrus::launch(users, CyrusSeparator::Dot, mechanisms)
    }

    fn launch(users: &[(&str, &str)], separator: CyrusSeparator, mechanisms: &[&str]) -> Cyrus {
        let bin = Path::new(CYRUS_ROOT).join("usr/lib/cyrus/bin/master");
        assert!(
            bin.exists(),
            "Cyrus is not unpacked in {CYRUS_ROOT}: run scripts/install-deps.sh as root"
        );
        let (uid, gid) = mail_user_ids();
        // A short path under /tmp: the service sockets live in it.
        let root = tempfile::Builder::new()
            .prefix("mfy-")
            .tempdir_in("/tmp")
            .expect("create a temporary directory under /tmp");
        let rp = root.path().to_path_buf();
        for dir in ["", "conf", "spool", "run"] {
            let dir = rp.join(dir);
            if !dir.exists() {
                fs::create_dir(&dir).expect("create a Cyrus directory");
            }
            fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).expect("chmod 755");
            chown(&dir, Some(uid), Some(gid)).expect("chown to the mail user (run as root)");
        }
        let mut cyrus = Cyrus {
            master: None,
            pop3: 0,
            imap: 0,
            separator,
            mechanisms: mechanisms.join(" "),
            users: users
                .iter()
                .map(|(u, p)| (u.to_string(), p.to_string()))
                .collect(),
            root,
        };
        cyrus.write_imapd_conf();
        cyrus.write_sasldb(uid, gid);
        for attempt in 1..=START_ATTEMPTS {
            let ports = free_ports(2);
            (cyrus.pop3, cyrus.imap) = (ports[0], ports[1]);
            cyrus.write_cyrus_conf();
            cyrus.master = Some(cyrus.spawn_master(uid, gid));
            if cyrus.wait_ready(Duration::from_secs(20)) {
                cyrus.create_mailboxes();
                return cyrus;
            }
            cyrus.stop();
            if attempt == START_ATTEMPTS {
                panic!("Cyrus does not greet:\n{}", cyrus.log());
            }
        }
        unreachable!("the last attempt panics")
    }

    /// The POP3 port (plain text).
    pub fn pop3_port(&self) -> u16 {
        self.pop3
    }

    /// The IMAP port (plain text).
    pub fn imap_port(&self) -> u16 {
        self.imap
    }

    /// The temporary root of this instance.
    pub fn root(&self) -> &Path {
        self.root.path()
    }

    /// The hierarchy separator this instance uses.
    pub fn separator(&self) -> char {
        self.separator.char()
    }

    /// The password of a user given to [`Cyrus::start`].
    pub fn password(&self, user: &str) -> &str {
        self.users
            .iter()
            .find(|(u, _)| u == user)
            .map(|(_, p)| p.as_str())
            .unwrap_or_else(|| panic!("no such test user {user:?}"))
    }

    /// What `master` wrote on stderr so far (the services log to syslog, when there is one).
    pub fn log(&self) -> String {
        fs::read_to_string(self.root.path().join("master.log")).unwrap_or_default()
    }

    /// Creates the subfolder `folder` (a name under INBOX, with this instance's separator,
    /// e.g. `INBOX.Support`) of the user's mailbox.
    pub fn create_folder(&self, user: &str, folder: &str) {
        let mut s = self.login(user);
        s.ok(&format!("CREATE {}", quoted(folder)));
        s.logout();
    }

    /// Puts one message into the user's INBOX with IMAP APPEND (LF line ends become CRLF, as
    /// an MTA's delivery would make them); messages keep the order in which they came.
    pub fn deliver(&self, user: &str, raw: &[u8]) {
        self.deliver_all_to(user, "INBOX", std::slice::from_ref(&raw.to_vec()));
    }

    /// Delivers every message of `mails` to the INBOX, in order, in one session.
    pub fn deliver_all(&self, user: &str, mails: &[Vec<u8>]) {
        self.deliver_all_to(user, "INBOX", mails);
    }

    /// Delivers every message of `mails` to `folder` (e.g. `INBOX.Support`), in order.
    pub fn deliver_all_to(&self, user: &str, folder: &str, mails: &[Vec<u8>]) {
        let mut s = self.login(user);
        for m in mails {
            let crlf = to_crlf(m);
            // LITERAL+: no continuation to wait for.
            let mut command =
                format!("APPEND {} {{{}+}}\r\n", quoted(folder), crlf.len()).into_bytes();
            command.extend_from_slice(&crlf);
            s.ok_bytes(&command);
        }
        s.logout();
    }

    /// What the user's INBOX holds now, in order, with LF line ends (as the Maildir harnesses
    /// return them).
    pub fn messages(&self, user: &str) -> Vec<Vec<u8>> {
        self.messages_in(user, "INBOX")
    }

    /// What `folder` of the user holds now, in order, with LF line ends.
    pub fn messages_in(&self, user: &str, folder: &str) -> Vec<Vec<u8>> {
        let mut s = self.login(user);
        let exists = s.examine(folder);
        let bodies = if exists == 0 {
            Vec::new()
        } else {
            s.ok("FETCH 1:* (BODY.PEEK[])")
                .literals
                .into_iter()
                .map(|m| from_crlf(&m))
                .collect()
        };
        s.logout();
        bodies
    }

    /// How many messages the user's INBOX holds now (expunged ones do not count).
    pub fn count(&self, user: &str) -> usize {
        self.count_in(user, "INBOX")
    }

    /// How many messages `folder` of the user holds now.
    pub fn count_in(&self, user: &str, folder: &str) -> usize {
        let mut s = self.login(user);
        let exists = s.examine(folder);
        s.logout();
        exists
    }

    /// The IMAP flags of each message in the INBOX, in order (e.g. `\Seen`), space-separated.
    pub fn flags(&self, user: &str) -> Vec<String> {
        let mut s = self.login(user);
        let exists = s.examine("INBOX");
        let flags = if exists == 0 {
            Vec::new()
        } else {
            s.ok("FETCH 1:* (FLAGS)")
                .lines
                .iter()
                .filter_map(|l| {
                    let at = l.find("FLAGS (")? + "FLAGS (".len();
                    let end = l[at..].find(')')? + at;
                    Some(l[at..end].to_owned())
                })
                .collect()
        };
        s.logout();
        flags
    }

    /// An IMAP session of `user`, logged in.
    fn login(&self, user: &str) -> Session {
        Session::login(self.imap, user, self.password_of(user))
    }

    fn password_of(&self, user: &str) -> &str {
        if user == ADMIN {
            ADMIN_PASSWORD
        } else {
            self.password(user)
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.root.path().join(name)
    }

    fn write_imapd_conf(&self) {
        let r = self.root.path().display();
        let unixhierarchysep = match self.separator {
            CyrusSeparator::Dot => "no",
            CyrusSeparator::Slash => "yes",
        };
        // virtdomains: "user@domain" logins (the catch-all address) map to the domain's
        // mailboxes. popminpoll 0: the tests poll more than once a minute. munge8bit off:
        // the messages are kept as delivered.
        let conf = format!(
            "configdirectory: {r}/conf\n\
             defaultpartition: default\n\
             partition-default: {r}/spool\n\
             proc_path: {r}/run/proc\n\
             mboxname_lockpath: {r}/run/lock\n\
             lmtpsocket: {r}/run/lmtp\n\
             idlesocket: {r}/run/idle\n\
             notifysocket: {r}/run/notify\n\
             servername: {SERVER_NAME}\n\
             altnamespace: no\n\
             unixhierarchysep: {unixhierarchysep}\n\
             virtdomains: userid\n\
             admins: {ADMIN}\n\
             allowplaintext: yes\n\
             sasl_pwcheck_method: auxprop\n\
             sasl_auxprop_plugin: sasldb\n\
             sasl_sasldb_path: {r}/sasldb2\n\
             sasl_mech_list: {mechanisms}\n\
             popminpoll: 0\n\
             munge8bit: no\n\
             cyrus_user: {user}\n\
             syslog_prefix: mailferry-test-cyrus\n",
            user = super::MAIL_USER,
            mechanisms = self.mechanisms,
        );
        fs::write(self.path("imapd.conf"), conf).expect("write imapd.conf");
    }

    fn write_cyrus_conf(&self) {
        let bin = format!("{CYRUS_ROOT}/usr/lib/cyrus/bin");
        let conf = self.path("imapd.conf");
        let c = conf.display();
        // Every command names the instance's imapd.conf: the default is /etc/imapd.conf.
        let text = format!(
            "START {{\n  recover cmd=\"{bin}/ctl_cyrusdb -C {c} -r\"\n}}\n\
             SERVICES {{\n  \
             imap cmd=\"{bin}/imapd -C {c}\" listen=\"127.0.0.1:{imap}\" prefork=0\n  \
             pop3 cmd=\"{bin}/pop3d -C {c}\" listen=\"127.0.0.1:{pop3}\" prefork=0\n}}\n\
             EVENTS {{\n}}\n",
            imap = self.imap,
            pop3 = self.pop3,
        );
        fs::write(self.path("cyrus.conf"), text).expect("write cyrus.conf");
    }

    /// The sasldb with the administrator and the users (`saslpasswd2`, realm = the domain of
    /// a `user@domain`, else the server name).
    fn write_sasldb(&self, uid: u32, gid: u32) {
        let db = self.path("sasldb2");
        let mut all = vec![(ADMIN.to_owned(), ADMIN_PASSWORD.to_owned())];
        all.extend(self.users.iter().cloned());
        for (user, password) in &all {
            let (name, realm) = match user.split_once('@') {
                Some((name, domain)) => (name, domain),
                None => (user.as_str(), SERVER_NAME),
            };
            let mut child = Command::new("saslpasswd2")
                .arg("-p")
                .arg("-c")
                .arg("-f")
                .arg(&db)
                .args(["-u", realm, name])
                .stdin(Stdio::piped())
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .expect("run saslpasswd2 (is sasl2-bin installed?)");
            child
                .stdin
                .take()
                .expect("saslpasswd2's stdin")
                .write_all(password.as_bytes())
                .expect("write the password to saslpasswd2");
            let out = child.wait_with_output().expect("saslpasswd2");
            assert!(
                out.status.success(),
                "saslpasswd2 for {user} failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        chown(&db, Some(uid), Some(gid)).expect("chown the sasldb");
    }

    fn spawn_master(&self, uid: u32, gid: u32) -> Child {
        let log = fs::File::create(self.path("master.log")).expect("create master.log");
        // -D: stay in the foreground with stderr open (the harness owns the process).
        Command::new(format!("{CYRUS_ROOT}/usr/lib/cyrus/bin/master"))
            .arg("-D")
            .arg("-C")
            .arg(self.path("imapd.conf"))
            .arg("-M")
            .arg(self.path("cyrus.conf"))
            .arg("-p")
            .arg(self.path("run/master.pid"))
            .env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .env(
                "LD_LIBRARY_PATH",
                format!("{CYRUS_ROOT}/usr/lib/x86_64-linux-gnu"),
            )
            .uid(uid)
            .gid(gid)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("run Cyrus's master")
    }

    /// Waits until both ports greet as Cyrus does, while master still runs.
    fn wait_ready(&mut self, timeout: Duration) -> bool {
        let (pop3, imap) = (self.pop3, self.imap);
        let mut running = true;
        wait_until(timeout, || {
            running = self
                .master
                .as_mut()
                .is_some_and(|m| matches!(m.try_wait(), Ok(None)));
            !running || (greets(pop3, "Cyrus POP3") && greets(imap, "Cyrus IMAP"))
        }) && running
    }

    /// Each user's INBOX (`user.NAME` in the admin's namespace), created by the admin.
    fn create_mailboxes(&self) {
        let mut s = Session::login(self.imap, ADMIN, ADMIN_PASSWORD);
        for (user, _) in &self.users {
            let mailbox = format!("user{}{user}", self.separator.char());
            s.ok(&format!("CREATE {}", quoted(&mailbox)));
        }
        s.logout();
    }

    /// Stops master and the services it forked.
    fn stop(&mut self) {
        if let Some(mut master) = self.master.take() {
            for service in children_of(master.id()) {
                send_signal(service, "KILL");
            }
            let _ = master.kill();
            let _ = master.wait();
        }
    }
}

impl Drop for Cyrus {
    fn drop(&mut self) {
        self.stop();
    }
}

/// What a tagged command returned: the untagged lines (literals left out) and the literals.
#[derive(Debug, Default)]
struct Reply {
    lines: Vec<String>,
    literals: Vec<Vec<u8>>,
}

/// A plain IMAP session of the harness: one command at a time, every reply checked.
struct Session {
    reader: BufReader<TcpStream>,
    tag: u32,
    /// The literals of the reply being read.
    literals: Vec<Vec<u8>>,
}

impl Session {
    fn login(port: u16, user: &str, password: &str) -> Session {
        let stream = TcpStream::connect((Ipv4Addr::LOCALHOST, port))
            .unwrap_or_else(|e| panic!("connect to Cyrus IMAP on port {port}: {e}"));
        stream
            .set_read_timeout(Some(REPLY_TIMEOUT))
            .expect("set a read timeout");
        let mut s = Session {
            reader: BufReader::new(stream),
            tag: 0,
            literals: Vec::new(),
        };
        let greeting = s.line();
        assert!(
            greeting.starts_with("* OK"),
            "Cyrus greets with {greeting:?}"
        );
        // Literals: the password may hold anything.
        let mut command = Vec::new();
        write!(command, "LOGIN {{{}+}}\r\n{user} ", user.len()).expect("write to a Vec");
        write!(command, "{{{}+}}\r\n{password}", password.len()).expect("write to a Vec");
        s.ok_bytes(&command);
        s
    }

    /// EXAMINE `folder`; returns how many messages it holds.
    fn examine(&mut self, folder: &str) -> usize {
        let reply = self.ok(&format!("EXAMINE {}", quoted(folder)));
        reply
            .lines
            .iter()
            .find_map(|l| l.strip_suffix(" EXISTS")?.strip_prefix("* ")?.parse().ok())
            .unwrap_or(0)
    }

    fn ok(&mut self, command: &str) -> Reply {
        self.ok_bytes(command.as_bytes())
    }

    /// Sends `command` (without its tag and final CRLF) and reads to its tagged reply, which
    /// must be OK.
    fn ok_bytes(&mut self, command: &[u8]) -> Reply {
        self.tag += 1;
        let tag = format!("H{}", self.tag);
        let mut line = format!("{tag} ").into_bytes();
        line.extend_from_slice(command);
        line.extend_from_slice(b"\r\n");
        self.reader
            .get_mut()
            .write_all(&line)
            .expect("write to Cyrus IMAP");
        let mut reply = Reply::default();
        loop {
            let l = self.line();
            if let Some(status) = l.strip_prefix(&format!("{tag} ")) {
                let shown = String::from_utf8_lossy(command);
                let shown = shown.lines().next().unwrap_or_default();
                assert!(
                    status.starts_with("OK"),
                    "Cyrus refused {shown:?}: {status}"
                );
                reply.literals = std::mem::take(&mut self.literals);
                return reply;
            }
            reply.lines.push(l);
        }
    }

    /// One response line without its CRLF; a literal it announces is kept in `literals`
    /// (and the line goes on after it).
    fn line(&mut self) -> String {
        let mut text = String::new();
        loop {
            let mut raw = Vec::new();
            let n = self
                .reader
                .read_until(b'\n', &mut raw)
                .expect("read from Cyrus IMAP");
            assert!(n > 0, "Cyrus IMAP closed the connection");
            let l = String::from_utf8_lossy(&raw).trim_end().to_owned();
            match literal_size(&l) {
                Some(size) => {
                    text.push_str(&l);
                    let mut literal = vec![0; size];
                    self.reader
                        .read_exact(&mut literal)
                        .expect("read a literal from Cyrus IMAP");
                    self.literals.push(literal);
                }
                None => {
                    text.push_str(&l);
                    return text;
                }
            }
        }
    }

    fn logout(mut self) {
        let _ = self.ok("LOGOUT");
    }
}

/// The size `n` of a line that ends in `{n}`.
fn literal_size(line: &str) -> Option<usize> {
    let open = line.strip_suffix('}')?.rfind('{')?;
    line[open + 1..line.len() - 1].parse().ok()
}

/// An IMAP quoted string.
fn quoted(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

/// LF line ends as CRLF (CRLF kept).
fn to_crlf(raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(raw.len() + raw.len() / 32);
    for (i, b) in raw.iter().enumerate() {
        if *b == b'\n' && (i == 0 || raw[i - 1] != b'\r') {
            out.push(b'\r');
        }
        out.push(*b);
    }
    out
}

/// CRLF line ends as LF.
fn from_crlf(raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(raw.len());
    for (i, b) in raw.iter().enumerate() {
        if *b == b'\r' && raw.get(i + 1) == Some(&b'\n') {
            continue;
        }
        out.push(*b);
    }
    out
}
