//! A private Dovecot instance: POP3 (plain + STLS), POP3S, IMAP (plain + STARTTLS), IMAPS on
//! free loopback ports, Maildir users with folders, a self-signed certificate for
//! `localhost`/127.0.0.1.

use std::fs;
use std::io::{BufRead, BufReader};
use std::net::{Ipv4Addr, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use super::maildir::Maildirs;
use super::{AccountYaml, Secret};
use super::{children_of, free_ports, mail_user_ids, process_alive, send_signal, wait_until};

/// Attempts at starting, each with new ports (a port may be taken between pick and bind).
const START_ATTEMPTS: usize = 5;

/// A running Dovecot of its own, on 127.0.0.1, killed (and its files removed) when dropped.
///
/// Everything lives under a short temporary root (`/tmp/mfd-XXXXXX`): the configuration,
/// `base_dir` (sockets, `master.pid`), `state_dir`, the certificate, the passwd-file, the
/// log, and one home with a Maildir per user. Mail is stored as the uid/gid of
/// [`super::MAIL_USER`].
pub struct Dovecot {
    root: tempfile::TempDir,
    id: String,
    pop3: u16,
    pop3s: u16,
    imap: u16,
    imaps: u16,
    uid: u32,
    gid: u32,
    users: Vec<(String, String)>,
    maildirs: Maildirs,
    /// `ssl_ca` for client certificates, when they are required.
    client_ca: Option<PathBuf>,
    /// The token service's introspection URL, when OAuth2 logins are on.
    oauth: Option<String>,
}

/// How a [`Dovecot`]'s TLS is set up (the default is what [`Dovecot::start`] does).
#[derive(Debug, Clone, Default)]
pub struct DovecotTls {
    /// Present a certificate made by a plain `openssl req -x509 -subj /CN=localhost`
    /// (CA:TRUE, no subjectAltName) instead of the usual self-signed CA:FALSE one.
    pub plain_x509: bool,
    /// Require a client certificate issued by the CA in this PEM file
    /// (`ssl_verify_client_cert`, `auth_ssl_require_client_cert`).
    pub require_client_cert: Option<PathBuf>,
}

impl Dovecot {
    /// Starts an instance with these `(user, password)` pairs, each with an empty Maildir,
    /// and waits until it greets on its POP3 and IMAP ports. Panics (with Dovecot's log)
    /// if it cannot start.
    pub fn start(users: &[(&str, &str)]) -> Dovecot {
        Dovecot::start_with(users, DovecotTls::default())
    }

    /// [`Dovecot::start`] with its TLS set up as `tls` says.
    pub fn start_with(users: &[(&str, &str)], tls: DovecotTls) -> Dovecot {
        Dovecot::start_full(users, tls, None)
    }

    /// [`Dovecot::start`] that also takes OAuth2 logins (`auth_mechanisms` xoauth2 and
    /// oauthbearer; an `oauth2` passdb asking `introspection_url`, in `post` mode, whether a
    /// token is active and whose it is). Passwords still work.
    pub fn start_oauth(users: &[(&str, &str)], introspection_url: &str) -> Dovecot {
        Dovecot::start_full(
            users,
            DovecotTls::default(),
            Some(introspection_url.to_owned()),
        )
    }

    fn start_full(users: &[(&str, &str)], tls: DovecotTls, oauth: Option<String>) -> Dovecot {
        let (uid, gid) = mail_user_ids();
        let root = tempfile::Builder::new()
            .prefix("mfd-")
            .tempdir_in("/tmp")
            .expect("create a temporary directory under /tmp");
        let rp = root.path().to_path_buf();
        // mktemp makes 0700; the mail user and Dovecot's own users must traverse it.
        fs::set_permissions(&rp, fs::Permissions::from_mode(0o755)).expect("chmod the root");
        let id = rp
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "mfd".to_owned());
        for dir in ["run", "state", "home"] {
            fs::create_dir(rp.join(dir)).expect("create a directory under the root");
            fs::set_permissions(rp.join(dir), fs::Permissions::from_mode(0o755))
                .expect("chmod a directory under the root");
        }
        // A self-signed, non-CA certificate, as administrators make: the tests trust it as
        // `ca_file` (Dovecot::ca_file).
        if tls.plain_x509 {
            mailferry::testkit::tls::plain_x509(&rp, "localhost");
        } else {
            mailferry::testkit::tls::self_signed(&rp);
        }

        let maildirs = Maildirs::new(uid, gid);
        let mut passwd = String::new();
        for (user, password) in users {
            assert!(
                !user.is_empty() && !user.contains(['/', ':', '\n']) && !user.starts_with('.'),
                "unsuitable test user name {user:?}"
            );
            assert!(
                !password.contains([':', '\n']),
                "a passwd-file password cannot contain ':' or a newline"
            );
            let home = rp.join("home").join(user);
            maildirs.create_dir(&home);
            maildirs.create(&home.join("Maildir"));
            passwd.push_str(&format!(
                "{user}:{{PLAIN}}{password}:{uid}:{gid}::{}::\n",
                home.display()
            ));
        }
        fs::write(rp.join("passwd"), passwd).expect("write the passwd-file");

        let mut dovecot = Dovecot {
            root,
            id,
            pop3: 0,
            pop3s: 0,
            imap: 0,
            imaps: 0,
            uid,
            gid,
            users: users
                .iter()
                .map(|(u, p)| (u.to_string(), p.to_string()))
                .collect(),
            maildirs,
            client_ca: tls.require_client_cert.clone(),
            oauth,
        };
        if let Some(url) = &dovecot.oauth {
            fs::write(
                rp.join("oauth2.conf"),
                format!(
                    "introspection_url = {url}\nintrospection_mode = post\nusername_attribute = username\nactive_attribute = active\nactive_value = true\nforce_introspection = yes\n"
                ),
            )
            .expect("write oauth2.conf");
        }

        for attempt in 1..=START_ATTEMPTS {
            let ports = free_ports(4);
            (dovecot.pop3, dovecot.pop3s, dovecot.imap, dovecot.imaps) =
                (ports[0], ports[1], ports[2], ports[3]);
            fs::write(dovecot.config_file(), dovecot.config_text()).expect("write dovecot.conf");
            // Not .output(): the daemonised master inherits the pipes and keeps them open.
            let stderr_file = dovecot.root.path().join("start.err");
            let status = Command::new("dovecot")
                .arg("-c")
                .arg(dovecot.config_file())
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(fs::File::create(&stderr_file).expect("create start.err"))
                .status()
                .expect("run dovecot (is dovecot-pop3d installed? scripts/install-deps.sh)");
            if status.success() {
                if dovecot.wait_ready(Duration::from_secs(20)) {
                    return dovecot;
                }
                panic!(
                    "Dovecot started but does not greet on 127.0.0.1:{}\n--- log\n{}",
                    dovecot.pop3,
                    dovecot.log()
                );
            }
            let why = format!(
                "{}{}",
                fs::read_to_string(&stderr_file).unwrap_or_default(),
                dovecot.log()
            );
            if !why.contains("in use") || attempt == START_ATTEMPTS {
                panic!(
                    "dovecot -c {} failed:\n{why}",
                    dovecot.config_file().display()
                );
            }
            // A port was taken between picking and binding: try new ones.
            let _ = fs::remove_file(dovecot.log_file());
        }
        unreachable!("the last attempt panics")
    }

    /// The plain POP3 port (STLS offered).
    pub fn pop3_port(&self) -> u16 {
        self.pop3
    }

    /// The POP3-over-TLS port (TLS from the first byte).
    pub fn pop3s_port(&self) -> u16 {
        self.pop3s
    }

    /// The plain IMAP port (STARTTLS offered).
    pub fn imap_port(&self) -> u16 {
        self.imap
    }

    /// The IMAP-over-TLS port.
    pub fn imaps_port(&self) -> u16 {
        self.imaps
    }

    /// The certificate the server presents; self-signed, so it is also the CA to trust.
    pub fn ca_file(&self) -> PathBuf {
        self.root.path().join("cert.pem")
    }

    /// The temporary root everything of this instance lives under (a test may put its own
    /// files here, e.g. mailferry's state_dir).
    pub fn root(&self) -> &Path {
        self.root.path()
    }

    /// The password of a user given to [`Dovecot::start`].
    pub fn password(&self, user: &str) -> &str {
        self.users
            .iter()
            .find(|(u, _)| u == user)
            .map(|(_, p)| p.as_str())
            .unwrap_or_else(|| panic!("no such test user {user:?}"))
    }

    /// An account on `user`'s mailbox: POP3 with STARTTLS, this server's certificate trusted,
    /// polled every 5 s.
    pub fn pop3_account(&self, name: &str, user: &str) -> AccountYaml {
        AccountYaml {
            name: name.into(),
            port: self.pop3_port(),
            tls: "starttls".into(),
            ca_file: Some(self.ca_file()),
            username: user.into(),
            password: Secret::Inline(self.password(user).into()),
            extra_lines: vec!["poll_interval: 5s".into()],
            ..AccountYaml::default()
        }
    }

    /// Dovecot's log so far (print it when a test fails).
    pub fn log(&self) -> String {
        fs::read_to_string(self.log_file()).unwrap_or_default()
    }

    /// The user's Maildir.
    pub fn maildir(&self, user: &str) -> PathBuf {
        assert!(
            self.users.iter().any(|(u, _)| u == user),
            "no such test user {user:?}"
        );
        self.root.path().join("home").join(user).join("Maildir")
    }

    /// The directory of one of the user's folders (Maildir++: `INBOX` is the Maildir itself,
    /// `INBOX.Support` is `.INBOX.Support` in it), created empty if it is not there yet.
    /// Dovecot's separator here is `.`.
    pub fn folder(&self, user: &str, folder: &str) -> PathBuf {
        let maildir = self.maildir(user);
        if folder.eq_ignore_ascii_case("INBOX") {
            return maildir;
        }
        assert!(
            !folder.is_empty() && !folder.contains(['/', '\n']) && !folder.starts_with('.'),
            "unsuitable test folder name {folder:?}"
        );
        let dir = maildir.join(format!(".{folder}"));
        self.maildirs.create(&dir);
        dir
    }

    /// Puts one message into the user's mailbox, as a Maildir delivery agent would: written
    /// to `tmp/` as the mail user, then renamed into `new/`. The bytes are stored as given
    /// (a Maildir keeps LF line ends). Messages keep the order in which they were delivered.
    pub fn deliver(&self, user: &str, raw: &[u8]) {
        self.deliver_to(user, "INBOX", raw);
    }

    /// [`Dovecot::deliver`] into one of the user's folders (`INBOX.Support`), made if needed.
    pub fn deliver_to(&self, user: &str, folder: &str, raw: &[u8]) {
        self.maildirs.deliver(&self.folder(user, folder), raw);
    }

    /// Delivers every message of `mails`, in order.
    pub fn deliver_all(&self, user: &str, mails: &[Vec<u8>]) {
        for m in mails {
            self.deliver(user, m);
        }
    }

    /// What the user's mailbox holds now (`new/` and `cur/`), in delivery order.
    pub fn messages(&self, user: &str) -> Vec<Vec<u8>> {
        self.message_files(user, "INBOX")
            .iter()
            .filter_map(|p| fs::read(p).ok())
            .collect()
    }

    /// How many messages the user's mailbox (INBOX) holds now.
    pub fn count(&self, user: &str) -> usize {
        self.message_files(user, "INBOX").len()
    }

    /// How many messages one of the user's folders holds now.
    pub fn count_in(&self, user: &str, folder: &str) -> usize {
        self.message_files(user, folder).len()
    }

    /// The Maildir flags of each message in a folder (`"S"` for `\Seen`, `"ST"`, ...), in
    /// delivery order; empty for a message Dovecot has not flagged (or not moved to `cur/`).
    pub fn flags_in(&self, user: &str, folder: &str) -> Vec<String> {
        self.maildirs.flags(&self.folder(user, folder))
    }

    /// Flags the `index`th message of a folder (delivery order) `\Seen`, or takes the flag
    /// away, as a mail client reading it would: the Maildir file moves to `cur/` with its
    /// flags in its name; Dovecot keeps its UID (the base name stays).
    pub fn set_seen(&self, user: &str, folder: &str, index: usize, seen: bool) {
        let files = self.message_files(user, folder);
        let path = &files[index];
        let name = path.file_name().unwrap_or_default().to_string_lossy();
        let (base, flags) = name.split_once(":2,").unwrap_or((&name, ""));
        let mut flags: Vec<char> = flags.chars().filter(|c| *c != 'S').collect();
        if seen {
            flags.push('S');
        }
        flags.sort_unstable();
        let flags: String = flags.into_iter().collect();
        let target = self
            .folder(user, folder)
            .join("cur")
            .join(format!("{base}:2,{flags}"));
        fs::rename(path, target).expect("rename a Maildir message to change its flags");
    }

    fn message_files(&self, user: &str, folder: &str) -> Vec<PathBuf> {
        self.maildirs.message_files(&self.folder(user, folder))
    }

    /// The authentication socket for an MTA (Postfix's `smtpd_sasl_path`): this Dovecot's
    /// users and passwords, every mechanism of `auth_mechanisms`.
    pub fn auth_socket(&self) -> PathBuf {
        self.root.path().join("run/auth-mta")
    }

    fn config_file(&self) -> PathBuf {
        self.root.path().join("dovecot.conf")
    }

    fn log_file(&self) -> PathBuf {
        self.root.path().join("dovecot.log")
    }

    fn config_text(&self) -> String {
        let r = self.root.path().display();
        // Dovecot 2.3: the certificate is asked for in the handshake, and a login without
        // a valid one fails; there is no CRL for the test CA.
        let client_cert = match &self.client_ca {
            Some(ca) => format!(
                "ssl_ca = <{}\nssl_verify_client_cert = yes\nauth_ssl_require_client_cert = yes\nssl_require_crl = no\n",
                ca.display()
            ),
            None => String::new(),
        };
        // OAuth2: the token mechanisms, and a passdb that asks the token service; the
        // passwd-file passdb keeps the password mechanisms.
        let (oauth_mechanisms, password_mechanisms, oauth_passdb) = match &self.oauth {
            Some(_) => (
                " xoauth2 oauthbearer",
                "  mechanisms = plain login cram-md5 scram-sha-1 scram-sha-256 apop\n",
                format!(
                    "passdb {{\n  driver = oauth2\n  mechanisms = xoauth2 oauthbearer\n  args = {r}/oauth2.conf\n}}\n"
                ),
            ),
            None => ("", "", String::new()),
        };
        format!(
            "# A private Dovecot for mailferry's tests (tests/support/dovecot.rs).
instance_name = {id}
protocols = pop3 imap
listen = 127.0.0.1
base_dir = {r}/run
state_dir = {r}/state
log_path = {r}/dovecot.log
info_log_path = {r}/dovecot.log
auth_verbose = yes
login_greeting = {id} ready
default_login_user = dovenull
default_internal_user = dovecot
first_valid_uid = {uid}
first_valid_gid = 1

ssl = yes
ssl_cert = <{r}/cert.pem
ssl_key = <{r}/key.pem
{client_cert}disable_plaintext_auth = no
# Every mechanism mailferry speaks that this Dovecot has ({{PLAIN}} passwords serve each);
# Debian's 2.3.19 offers NTLM only through Samba's winbind, so not here.
auth_mechanisms = plain login cram-md5 scram-sha-1 scram-sha-256 apop{oauth_mechanisms}

mail_location = maildir:~/Maildir
pop3_uidl_format = %g

passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {r}/passwd
{password_mechanisms}}}
{oauth_passdb}
userdb {{
  driver = passwd-file
  args = username_format=%u {r}/passwd
}}

# For an MTA's SASL (Postfix `smtpd_sasl_type = dovecot`, see Dovecot::auth_socket).
service auth {{
  unix_listener auth-mta {{
    mode = 0666
  }}
}}

service pop3-login {{
  inet_listener pop3 {{
    port = {pop3}
  }}
  inet_listener pop3s {{
    port = {pop3s}
    ssl = yes
  }}
}}
service imap-login {{
  inet_listener imap {{
    port = {imap}
  }}
  inet_listener imaps {{
    port = {imaps}
    ssl = yes
  }}
}}
",
            id = self.id,
            uid = self.uid,
            pop3 = self.pop3,
            pop3s = self.pop3s,
            imap = self.imap,
            imaps = self.imaps,
        )
    }

    /// Waits until the POP3 and IMAP ports greet with this instance's own greeting (so a
    /// port taken by someone else cannot pass for ours) and `master.pid` is written. The
    /// TLS ports were bound by the master along with these (a bare connect to them would
    /// leave a login process waiting for a handshake, which slows the shutdown).
    fn wait_ready(&self, timeout: Duration) -> bool {
        let greets = |port: u16| {
            let Ok(stream) = TcpStream::connect((Ipv4Addr::LOCALHOST, port)) else {
                return false;
            };
            let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
            let mut line = String::new();
            let _ = BufReader::new(stream).read_line(&mut line);
            line.contains(&self.id)
        };
        wait_until(timeout, || {
            self.master_pid().is_some() && greets(self.pop3) && greets(self.imap)
        })
    }

    fn master_pid(&self) -> Option<u32> {
        fs::read_to_string(self.root.path().join("run/master.pid"))
            .ok()?
            .trim()
            .parse()
            .ok()
    }
}

impl Drop for Dovecot {
    fn drop(&mut self) {
        let Some(pid) = self.master_pid() else {
            return;
        };
        send_signal(pid, "TERM");
        // A clean shutdown takes about a second. A login process that was just handed a
        // connection can block the master's shutdown for 5 s more: don't wait for that.
        if !wait_until(Duration::from_millis(1500), || !process_alive(pid)) {
            for child in children_of(pid) {
                send_signal(child, "KILL");
            }
            send_signal(pid, "KILL");
            wait_until(Duration::from_secs(5), || !process_alive(pid));
        }
    }
}
