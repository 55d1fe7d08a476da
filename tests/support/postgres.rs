//! A private PostgreSQL server for the tests: `initdb` into a temporary directory as
//! [`MAIL_USER`](super::MAIL_USER), `postgres` on a free port of 127.0.0.1 (and a Unix socket
//! in the same directory), a database `mailferry` owned by a role `mailferry` that logs in with
//! a password (SCRAM over TCP, as a real deployment would), stopped and removed when dropped.
//!
//! It runs without fsync (a test's data need not survive the machine); `initdb` and the start
//! take a second or two. The server binaries are Debian's `postgresql` package
//! (`scripts/install-deps.sh`), under `/usr/lib/postgresql/VERSION/bin`.

use std::fs;
use std::os::unix::fs::{PermissionsExt, chown};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::{free_port, mail_user_ids, process_alive, send_signal, wait_until};

/// The role and the database mailferry uses.
pub const PG_USER: &str = "mailferry";
/// The role's password (URL-safe as it is).
pub const PG_PASSWORD: &str = "pg-Secret-42";

const START_ATTEMPTS: usize = 5;

/// The newest server binaries installed: `/usr/lib/postgresql/VERSION/bin`.
pub fn postgres_bin_dir() -> Option<PathBuf> {
    let mut versions: Vec<(u32, PathBuf)> = fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .flatten()
        .filter_map(|e| {
            let version = e.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = e.path().join("bin");
            bin.join("postgres").exists().then_some((version, bin))
        })
        .collect();
    versions.sort();
    versions.pop().map(|(_, bin)| bin)
}

/// A running private PostgreSQL server.
pub struct Postgres {
    root: tempfile::TempDir,
    bin: PathBuf,
    child: Child,
    port: u16,
}

impl Postgres {
    /// Initialises a cluster, starts it, and creates the role and database `mailferry`.
    /// Panics with the server's log when it cannot.
    pub fn start() -> Postgres {
        let bin = postgres_bin_dir().unwrap_or_else(|| {
            panic!("no PostgreSQL server under /usr/lib/postgresql: run scripts/install-deps.sh")
        });
        let root = tempfile::Builder::new()
            .prefix("mfpg-")
            .tempdir_in("/tmp")
            .expect("create a temporary directory under /tmp");
        let (uid, gid) = mail_user_ids();
        chown(root.path(), Some(uid), Some(gid)).expect("chown the PostgreSQL directory");
        fs::set_permissions(root.path(), fs::Permissions::from_mode(0o700))
            .expect("chmod the PostgreSQL directory");
        let superuser_pw = root.path().join("superuser.pw");
        fs::write(&superuser_pw, "unused-superuser-password\n").expect("write the password file");
        chown(&superuser_pw, Some(uid), Some(gid)).expect("chown the password file");

        // Local (socket) logins are trusted, for the setup below; TCP asks for a password.
        let out = as_mail_user(Command::new(bin.join("initdb")), root.path())
            .arg("-D")
            .arg(root.path().join("data"))
            .args([
                "-U",
                "postgres",
                "-A",
                "scram-sha-256",
                "--auth-local=trust",
            ])
            .arg(format!("--pwfile={}", superuser_pw.display()))
            .args(["--no-sync", "--locale=C", "-E", "UTF8"])
            .output()
            .expect("run initdb");
        assert!(
            out.status.success(),
            "initdb failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );

        let mut failures = String::new();
        for _ in 0..START_ATTEMPTS {
            let port = free_port();
            let log = fs::File::create(root.path().join("postgres.log")).expect("create the log");
            chown(root.path().join("postgres.log"), Some(uid), Some(gid)).expect("chown the log");
            let mut child = as_mail_user(Command::new(bin.join("postgres")), root.path())
                .arg("-D")
                .arg(root.path().join("data"))
                .arg("-k")
                .arg(root.path())
                .args(["-p", &port.to_string()])
                .args(["-c", "listen_addresses=127.0.0.1"])
                .args(["-c", "fsync=off", "-c", "synchronous_commit=off"])
                .args(["-c", "full_page_writes=off"])
                // Under MAILFERRY_TEST_STATE=postgres one server serves a whole test binary:
                // its tests run in parallel (a thread per core), each daemon with a pool of 8.
                .args(["-c", "max_connections=200"])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .expect("start postgres");
            let mut exited = false;
            let ready = wait_until(Duration::from_secs(30), || {
                exited = matches!(child.try_wait(), Ok(Some(_)));
                !exited && pg_isready(&bin, root.path(), port)
            });
            if ready {
                let pg = Postgres {
                    root,
                    bin,
                    child,
                    port,
                };
                // Two commands: CREATE DATABASE refuses to run in psql's one transaction.
                pg.psql(&format!(
                    "CREATE ROLE {PG_USER} LOGIN PASSWORD '{PG_PASSWORD}'"
                ));
                pg.psql(&format!("CREATE DATABASE {PG_USER} OWNER {PG_USER}"));
                return pg;
            }
            let _ = child.kill();
            let _ = child.wait();
            let log = fs::read_to_string(root.path().join("postgres.log")).unwrap_or_default();
            if !log.contains("could not bind") && !log.contains("in use") {
                panic!("postgres did not start on 127.0.0.1:{port}:\n{log}");
            }
            // The port was taken between picking and binding: try another.
            failures.push_str(&log);
        }
        panic!("postgres did not start:\n{failures}");
    }

    /// The TCP port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The URL mailferry connects with: the role `mailferry` and its password, over TCP.
    pub fn url(&self) -> String {
        self.database_url(PG_USER)
    }

    /// [`Postgres::url`] for another database the role owns (created with [`Postgres::psql`]).
    pub fn database_url(&self, database: &str) -> String {
        format!(
            "postgres://{PG_USER}:{PG_PASSWORD}@127.0.0.1:{}/{database}",
            self.port
        )
    }

    /// Runs `sql` in the database `mailferry` as the superuser (over the socket) and returns
    /// what it printed (unaligned, tuples only: one row a line, `|` between columns); panics
    /// when it fails.
    pub fn query(&self, sql: &str) -> String {
        self.run_psql(PG_USER, sql)
    }

    /// Runs `sql` in the database `postgres` as the superuser; panics when it fails.
    pub fn psql(&self, sql: &str) -> String {
        self.run_psql("postgres", sql)
    }

    fn run_psql(&self, database: &str, sql: &str) -> String {
        let out = Command::new(self.bin.join("psql"))
            .arg("-h")
            .arg(self.root.path())
            .args([
                "-p",
                &self.port.to_string(),
                "-U",
                "postgres",
                "-d",
                database,
            ])
            .args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-c", sql])
            .stdin(Stdio::null())
            .output()
            .expect("run psql");
        assert!(
            out.status.success(),
            "psql {sql:?} failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    /// What the server logged.
    pub fn log(&self) -> String {
        fs::read_to_string(self.root.path().join("postgres.log")).unwrap_or_default()
    }

    /// The temporary directory holding the cluster (`data/`), its socket and log.
    pub fn dir(&self) -> &Path {
        self.root.path()
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let pid = self.child.id();
        // SIGINT: the fast shutdown (ends the sessions, no checkpoint wait on clients).
        send_signal(pid, "INT");
        if !wait_until(Duration::from_secs(10), || {
            matches!(self.child.try_wait(), Ok(Some(_)))
        }) {
            send_signal(pid, "QUIT");
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
        wait_until(Duration::from_secs(2), || !process_alive(pid));
    }
}

/// `cmd` as [`MAIL_USER`](super::MAIL_USER) (PostgreSQL refuses to run as root), in `dir`.
fn as_mail_user(mut cmd: Command, dir: &Path) -> Command {
    let (uid, gid) = mail_user_ids();
    cmd.uid(uid)
        .gid(gid)
        .current_dir(dir)
        .env("LC_ALL", "C")
        .env("HOME", dir);
    cmd
}

/// Whether the server on `port` with its socket in `socket_dir` takes connections. Over the
/// socket, not TCP: another test's server that took the same port first would answer on TCP,
/// while this one is still failing to bind it.
fn pg_isready(bin: &Path, socket_dir: &Path, port: u16) -> bool {
    Command::new(bin.join("pg_isready"))
        .arg("-q")
        .arg("-h")
        .arg(socket_dir)
        .args(["-p", &port.to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}
