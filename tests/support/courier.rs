//! Private Courier POP3 and IMAP servers on free loopback ports (plain text), serving Maildir
//! users: the second real upstream, with other habits than Dovecot (Nagle left on, a login
//! process that hands over after authentication, `.` as separator under `INBOX.`).
//!
//! Courier's packages conflict with Dovecot's in apt, so `scripts/install-deps.sh` unpacks
//! them into [`COURIER_ROOT`] and installs only `courier-authdaemon` with its userdb module.
//! authdaemond is one per machine and its socket path is compiled in: the test users go into
//! the system's userdb (`/etc/courier/userdb/mailferry-tests`), so instances take turns
//! (a lock held for an instance's lifetime, across test processes).

use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::maildir::Maildirs;
use super::{children_of, free_ports, greets, mail_user_ids, send_signal, wait_until};

/// Where `scripts/install-deps.sh` unpacks courier-base, courier-pop and courier-imap.
pub const COURIER_ROOT: &str = "/var/cache/mailferry-tests/courier/root";

/// The directory authuserdb reads (every file in it) when `makeuserdb` compiles it.
const USERDB_DIR: &str = "/etc/courier/userdb";

/// This harness's file in [`USERDB_DIR`].
const USERDB_FILE: &str = "/etc/courier/userdb/mailferry-tests";

/// Held (locked) for as long as an instance's users are in the userdb.
const LOCK_FILE: &str = "/etc/courier/mailferry-tests.lock";

/// Attempts at starting, each with new ports (a port may be taken between pick and bind).
const START_ATTEMPTS: usize = 5;

/// Courier POP3 and IMAP on 127.0.0.1, killed (and their files and users removed) when dropped.
pub struct Courier {
    /// `couriertcpd` for POP3, then for IMAP.
    servers: Vec<Child>,
    pop3: u16,
    imap: u16,
    users: Vec<(String, String)>,
    maildirs: Maildirs,
    root: tempfile::TempDir,
    /// Locked: no other instance rewrites the userdb while this one runs.
    _lock: fs::File,
}

impl Courier {
    /// Starts POP3 and IMAP with these `(user, password)` pairs, each with an empty Maildir,
    /// and waits until both greet. Panics, saying why, if they cannot start.
    pub fn start(users: &[(&str, &str)]) -> Courier {
        let bin = Path::new(COURIER_ROOT);
        assert!(
            bin.join("usr/sbin/couriertcpd").exists(),
            "Courier is not unpacked in {COURIER_ROOT}: run scripts/install-deps.sh as root"
        );
        let lock = fs::File::create(LOCK_FILE).unwrap_or_else(|e| {
            panic!("create {LOCK_FILE} (is courier-authdaemon installed? run as root): {e}")
        });
        lock.lock().expect("lock the Courier test userdb");

        let (uid, gid) = mail_user_ids();
        let root = tempfile::Builder::new()
            .prefix("mfc-")
            .tempdir_in("/tmp")
            .expect("create a temporary directory under /tmp");
        let rp = root.path().to_path_buf();
        // mktemp makes 0700; the mail user must traverse it to its home.
        for dir in [rp.clone(), rp.join("home")] {
            if !dir.exists() {
                fs::create_dir(&dir).expect("create the home directory");
            }
            fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).expect("chmod 755");
        }
        let maildirs = Maildirs::new(uid, gid);
        let mut userdb = String::new();
        for (user, password) in users {
            assert!(
                !user.is_empty() && !user.contains(['/', '\t', '\n', '|', ' ']),
                "unsuitable test user name {user:?}"
            );
            let home = rp.join("home").join(user);
            maildirs.create_dir(&home);
            maildirs.create(&home.join("Maildir"));
            userdb.push_str(&format!(
                "{user}\tuid={uid}|gid={gid}|home={}|systempw={}\n",
                home.display(),
                crypt(password)
            ));
        }
        install_userdb(&userdb);
        ensure_authdaemond();

        let mut courier = Courier {
            servers: Vec::new(),
            pop3: 0,
            imap: 0,
            users: users
                .iter()
                .map(|(u, p)| (u.to_string(), p.to_string()))
                .collect(),
            maildirs,
            root,
            _lock: lock,
        };
        for attempt in 1..=START_ATTEMPTS {
            let ports = free_ports(2);
            (courier.pop3, courier.imap) = (ports[0], ports[1]);
            courier.servers = vec![
                courier.spawn(
                    "pop3d",
                    courier.pop3,
                    "usr/lib/courier/courier/courierpop3login",
                    "usr/lib/courier/courier/courierpop3d",
                ),
                courier.spawn(
                    "imapd",
                    courier.imap,
                    "usr/lib/courier/courier/imaplogin",
                    "usr/bin/imapd",
                ),
            ];
            if courier.wait_ready(Duration::from_secs(20)) {
                return courier;
            }
            courier.stop();
            if attempt == START_ATTEMPTS {
                panic!("Courier does not greet:\n{}", courier.log());
            }
        }
        unreachable!("the last attempt panics")
    }

    /// The POP3 port (plain text; Courier offers no STLS here).
    pub fn pop3_port(&self) -> u16 {
        self.pop3
    }

    /// The IMAP port (plain text).
    pub fn imap_port(&self) -> u16 {
        self.imap
    }

    /// The temporary root this instance's homes live under.
    pub fn root(&self) -> &Path {
        self.root.path()
    }

    /// The password of a user given to [`Courier::start`].
    pub fn password(&self, user: &str) -> &str {
        self.users
            .iter()
            .find(|(u, _)| u == user)
            .map(|(_, p)| p.as_str())
            .unwrap_or_else(|| panic!("no such test user {user:?}"))
    }

    /// What the servers wrote on stderr so far (print it when a test fails).
    pub fn log(&self) -> String {
        ["pop3d", "imapd"]
            .iter()
            .map(|n| fs::read_to_string(self.root.path().join(format!("{n}.log"))))
            .filter_map(Result::ok)
            .collect::<Vec<_>>()
            .join("")
    }

    /// The user's Maildir (INBOX).
    pub fn maildir(&self, user: &str) -> PathBuf {
        assert!(
            self.users.iter().any(|(u, _)| u == user),
            "no such test user {user:?}"
        );
        self.root.path().join("home").join(user).join("Maildir")
    }

    /// Puts one message into the user's INBOX, as a Maildir delivery agent would; messages
    /// keep the order in which they were delivered.
    pub fn deliver(&self, user: &str, raw: &[u8]) {
        self.maildirs.deliver(&self.maildir(user), raw);
    }

    /// Delivers every message of `mails`, in order.
    pub fn deliver_all(&self, user: &str, mails: &[Vec<u8>]) {
        for m in mails {
            self.deliver(user, m);
        }
    }

    /// What the user's INBOX holds now (`new/` and `cur/`), in delivery order.
    pub fn messages(&self, user: &str) -> Vec<Vec<u8>> {
        self.maildirs
            .message_files(&self.maildir(user))
            .iter()
            .filter_map(|p| fs::read(p).ok())
            .collect()
    }

    /// How many messages the user's INBOX holds now.
    pub fn count(&self, user: &str) -> usize {
        self.maildirs.message_files(&self.maildir(user)).len()
    }

    /// The Maildir flags of each message in the INBOX, in delivery order.
    pub fn flags(&self, user: &str) -> Vec<String> {
        self.maildirs.flags(&self.maildir(user))
    }

    /// `couriertcpd` on `port` running `login` then `server` (paths under [`COURIER_ROOT`])
    /// with the environment of `etc/courier/<config>`, as the init script does.
    fn spawn(&self, config: &str, port: u16, login: &str, server: &str) -> Child {
        let r = COURIER_ROOT;
        let script = format!(
            "set -a; . {r}/etc/courier/{config}; exec {r}/usr/sbin/couriertcpd \
             -address=127.0.0.1 -nodnslookup -noidentlookup -maxprocs=40 -maxperip=40 \
             {port} {r}/{login} {r}/{server} Maildir"
        );
        let log = fs::File::create(self.root.path().join(format!("{config}.log")))
            .expect("create the server's log");
        Command::new("sh")
            .arg("-c")
            .arg(script)
            .env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("run couriertcpd")
    }

    /// Waits until both ports greet as Courier does, while our servers still run (one that
    /// could not bind its port exits).
    fn wait_ready(&mut self, timeout: Duration) -> bool {
        let (pop3, imap) = (self.pop3, self.imap);
        let mut running = true;
        wait_until(timeout, || {
            running = self
                .servers
                .iter_mut()
                .all(|c| matches!(c.try_wait(), Ok(None)));
            !running || (greets(pop3, "+OK Hello there") && greets(imap, "Courier-IMAP ready"))
        }) && running
    }

    /// Stops the servers and the sessions they forked.
    fn stop(&mut self) {
        for child in &mut self.servers {
            for session in children_of(child.id()) {
                send_signal(session, "KILL");
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        self.servers.clear();
    }
}

impl Drop for Courier {
    fn drop(&mut self) {
        self.stop();
        install_userdb("");
    }
}

/// The crypt(3) hash of `password` (SHA-512), as the userdb's `systempw` wants it.
fn crypt(password: &str) -> String {
    let mut child = Command::new("openssl")
        .args(["passwd", "-6", "-stdin"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("run openssl passwd");
    child
        .stdin
        .take()
        .expect("openssl's stdin")
        .write_all(password.as_bytes())
        .expect("write the password to openssl");
    let out = child.wait_with_output().expect("openssl passwd");
    assert!(out.status.success(), "openssl passwd failed");
    String::from_utf8(out.stdout)
        .expect("a crypt hash is ASCII")
        .trim()
        .to_owned()
}

/// Makes the harness's userdb file hold `text` and compiles the userdb (`makeuserdb`), which
/// authdaemond reads on each login.
fn install_userdb(text: &str) {
    let dir = Path::new(USERDB_DIR);
    if !dir.is_dir() {
        assert!(
            !dir.exists(),
            "{USERDB_DIR} is a file: the harness needs it as a directory (move it into one)"
        );
        fs::create_dir(dir).expect("create the userdb directory");
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700)).expect("chmod the userdb");
    }
    fs::write(USERDB_FILE, text).expect("write the test userdb");
    fs::set_permissions(USERDB_FILE, fs::Permissions::from_mode(0o600))
        .expect("chmod the test userdb");
    let out = Command::new("makeuserdb")
        .output()
        .expect("run makeuserdb (is courier-authlib-userdb installed?)");
    assert!(
        out.status.success(),
        "makeuserdb failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Starts Courier's authdaemond unless it runs (a container starts no services by itself).
fn ensure_authdaemond() {
    let socket = Path::new("/run/courier/authdaemon/socket");
    if socket.exists() && std::os::unix::net::UnixStream::connect(socket).is_ok() {
        return;
    }
    let status = Command::new("service")
        .args(["courier-authdaemon", "start"])
        .stdout(Stdio::null())
        .status()
        .expect("run service courier-authdaemon start");
    assert!(status.success(), "cannot start courier-authdaemon");
    assert!(
        wait_until(Duration::from_secs(10), || {
            std::os::unix::net::UnixStream::connect(socket).is_ok()
        }),
        "courier-authdaemon does not answer on {}",
        socket.display()
    );
}
