//! Hot reload. SIGHUP (`systemctl reload`, `mailferry reload`), or a changed file with
//! `watch_config: true`, reads the configuration file again. A valid file replaces the running
//! configuration between two generations of pollers: the running pollers stop as on SIGTERM
//! (each finishes the message in hand and commits its deletions), and new ones start at once
//! on the new file — accounts added, removed or changed, domains, routing, a new relay. An
//! invalid file is refused with every problem logged, and the running configuration stays.
//! `state_dir` and `state:` cannot change under a running process (the lock, the open store):
//! a file that changes them is refused; a changed `metrics.listen` waits for a restart.
//!
//! Each attempt's outcome is written, numbered, to `state_dir/reload`: `mailferry reload`
//! signals the daemon and waits there for the answer.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use thiserror::Error;
use tokio::signal::unix::{Signal, SignalKind, signal};

use crate::config::Config;

/// The outcome of the last reload, in `state_dir`: its number on the first line, then
/// `applied: …` or `refused:` and the problems.
pub const RELOAD_FILE: &str = "reload";

/// How often `watch_config` looks at the file.
const WATCH_EVERY: Duration = Duration::from_secs(2);

/// How long `mailferry reload` waits for the daemon's answer: a refused file is answered at
/// once, an applied one as soon as it is read.
const ANSWER_WITHIN: Duration = Duration::from_secs(30);

/// What woke the daemon.
pub(super) enum Wake {
    /// SIGTERM or SIGINT.
    Stop,
    /// SIGHUP, or the watched file changed.
    Reload,
}

/// The daemon's wake-ups: the signals, and (with `watch_config`) the file's changes.
pub(super) struct Wakers {
    term: Signal,
    int: Signal,
    hup: Signal,
    path: PathBuf,
    /// The file as last seen (modification time and length), for `watch_config`.
    seen: Option<(SystemTime, u64)>,
}

impl Wakers {
    /// Installs the signal handlers; from here on SIGHUP no longer ends the process.
    pub(super) fn new(path: &Path) -> std::io::Result<Wakers> {
        Ok(Wakers {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
            hup: signal(SignalKind::hangup())?,
            path: path.to_owned(),
            seen: stamp(path),
        })
    }

    /// Waits for the next wake-up; with `watch`, a change of the file is one.
    pub(super) async fn next(&mut self, watch: bool) -> Wake {
        loop {
            tokio::select! {
                _ = self.term.recv() => return Wake::Stop,
                _ = self.int.recv() => return Wake::Stop,
                _ = self.hup.recv() => {
                    // Whatever the watch would see next is this same reload.
                    self.seen = stamp(&self.path);
                    return Wake::Reload;
                }
                _ = tokio::time::sleep(WATCH_EVERY), if watch => {
                    let now = stamp(&self.path);
                    if now != self.seen {
                        self.seen = now;
                        tracing::info!("{} changed", self.path.display());
                        return Wake::Reload;
                    }
                }
            }
        }
    }
}

/// The file's modification time and length (`None` while it cannot be read).
fn stamp(path: &Path) -> Option<(SystemTime, u64)> {
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.modified().ok()?, meta.len()))
}

/// Reads the file again: the new configuration, or every reason it is refused (one a line).
pub(super) fn reread(path: &Path, running: &Config) -> Result<Config, String> {
    let new = crate::config::load(path).map_err(|errors| errors.to_string())?;
    let fixed = unchangeable(running, &new);
    if !fixed.is_empty() {
        return Err(fixed.join("\n"));
    }
    if new.metrics.listen != running.metrics.listen {
        tracing::warn!(
            "{}: metrics.listen changed; the listener stays where it is until a restart",
            path.display()
        );
    }
    Ok(new)
}

/// What a running daemon cannot take from a new file: it holds the lock on `state_dir` and
/// has its store open.
pub fn unchangeable(running: &Config, new: &Config) -> Vec<String> {
    let mut problems = Vec::new();
    if new.state_dir != running.state_dir {
        problems.push(format!(
            "state_dir: a running daemon keeps its state directory ({}); restart it to use {}",
            running.state_dir.display(),
            new.state_dir.display()
        ));
    }
    if new.state != running.state {
        problems.push("state: a running daemon keeps its state store; restart it to change the backend or its database".to_owned());
    }
    problems
}

/// One line for the log and `mailferry reload`: what the applied file holds.
pub(super) fn applied(config: &Config) -> String {
    format!(
        "applied: {} account(s), {} accepted domain(s)",
        config.accounts.len(),
        config.domains.len()
    )
}

/// The accounts of `old` that `new` no longer has.
pub(super) fn removed<'a>(old: &'a Config, new: &Config) -> Vec<&'a str> {
    old.accounts
        .iter()
        .filter(|a| new.account(&a.name).is_none())
        .map(|a| a.name.as_str())
        .collect()
}

/// Writes a reload's outcome as the next numbered answer in `state_dir/reload` (whole, by a
/// rename, so that `mailferry reload` never reads half of it).
pub(super) fn record(state_dir: &Path, outcome: &str) {
    let number = last(state_dir).map_or(1, |(n, _)| n + 1);
    let path = state_dir.join(RELOAD_FILE);
    let part = state_dir.join(format!("{RELOAD_FILE}.new"));
    let written = std::fs::write(&part, format!("{number}\n{outcome}\n"))
        .and_then(|()| std::fs::rename(&part, &path));
    if let Err(e) = written {
        tracing::warn!(
            "cannot write {}: {e} (mailferry reload will not see this answer)",
            path.display()
        );
    }
}

/// The last answer in `state_dir/reload`: its number and text.
fn last(state_dir: &Path) -> Option<(u64, String)> {
    let text = std::fs::read_to_string(state_dir.join(RELOAD_FILE)).ok()?;
    let (number, outcome) = text.split_once('\n')?;
    Some((number.trim().parse().ok()?, outcome.trim_end().to_owned()))
}

/// Why `mailferry reload` could not get the file applied.
#[derive(Debug, Error)]
pub enum ReloadError {
    /// No process holds the lock on `state_dir`.
    #[error("no mailferry daemon is running on {0} (nothing to reload)")]
    NotRunning(PathBuf),
    /// The lock file could not be read.
    #[error(transparent)]
    State(#[from] crate::state::StateError),
    /// SIGHUP could not be sent.
    #[error("cannot signal the daemon (PID {pid}): {source}")]
    Signal {
        /// The daemon's PID.
        pid: u32,
        /// What the system said.
        #[source]
        source: std::io::Error,
    },
    /// The daemon refused the file; its reasons, one a line.
    #[error("the daemon refused the file, its configuration stays:\n{0}")]
    Refused(String),
    /// No answer in time.
    #[error(
        "no answer from the daemon (PID {pid}) within {}s; see its log",
        ANSWER_WITHIN.as_secs()
    )]
    NoAnswer {
        /// The daemon's PID.
        pid: u32,
    },
}

/// `mailferry reload`: sends SIGHUP to the daemon running on `state_dir` and waits for its
/// answer; the `applied: …` line when it took the file.
pub async fn request(state_dir: &Path) -> Result<String, ReloadError> {
    let pid = crate::state::holder_of(state_dir)?
        .ok_or_else(|| ReloadError::NotRunning(state_dir.to_owned()))?;
    let before = last(state_dir).map_or(0, |(n, _)| n);
    let target = libc::pid_t::try_from(pid).map_err(|_| ReloadError::Signal {
        pid,
        source: std::io::Error::other("not a process id"),
    })?;
    // SAFETY: kill(2) takes plain integers and touches no memory of this process.
    if unsafe { libc::kill(target, libc::SIGHUP) } != 0 {
        return Err(ReloadError::Signal {
            pid,
            source: std::io::Error::last_os_error(),
        });
    }
    let deadline = tokio::time::Instant::now() + ANSWER_WITHIN;
    while tokio::time::Instant::now() < deadline {
        if let Some((n, outcome)) = last(state_dir)
            && n > before
        {
            return match outcome.strip_prefix("refused:") {
                Some(why) => Err(ReloadError::Refused(why.trim_start().to_owned())),
                None => Ok(outcome),
            };
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err(ReloadError::NoAnswer { pid })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(extra: &str) -> Config {
        crate::config::from_yaml_str(
            &format!(
                "state_dir: /var/lib/mailferry\nrelay: {{host: 127.0.0.1, port: 25, tls: none}}\ndomains: [example.com]\npostmaster: postmaster@corp.local\n{extra}accounts:\n  - {{name: a, protocol: pop3, host: pop.example.net, username: u, password: p, mode: catch-all}}\n  - {{name: b, protocol: pop3, host: pop.example.net, username: v, password: p, mode: catch-all}}\n"
            ),
            "test.yaml",
        )
        .map_err(|e| e.to_string())
        .unwrap()
    }

    #[test]
    fn state_dir_and_backend_cannot_change_but_the_rest_can() {
        let running = config("");
        assert!(unchangeable(&running, &config("max_hops: 5\n")).is_empty());
        let mut moved = config("");
        moved.state_dir = "/srv/elsewhere".into();
        let problems = unchangeable(&running, &moved);
        assert_eq!(problems.len(), 1);
        assert!(problems[0].starts_with("state_dir:"), "{problems:?}");
        assert!(problems[0].contains("/srv/elsewhere"), "{problems:?}");
    }

    #[test]
    fn removed_names_the_accounts_the_new_file_lacks() {
        let running = config("");
        let mut new = config("");
        new.accounts.retain(|a| a.name == "b");
        assert_eq!(removed(&running, &new), ["a"]);
        assert!(removed(&new, &running).is_empty());
    }

    #[test]
    fn answers_are_numbered_and_read_back_whole() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(last(dir.path()), None);
        record(dir.path(), "applied: 2 account(s), 1 accepted domain(s)");
        record(
            dir.path(),
            "refused:\ntest.yaml:3:1: domains: expected a list",
        );
        let (n, text) = last(dir.path()).unwrap();
        assert_eq!(n, 2);
        assert_eq!(text, "refused:\ntest.yaml:3:1: domains: expected a list");
    }

    #[tokio::test]
    async fn reload_without_a_daemon_says_so() {
        let dir = tempfile::tempdir().unwrap();
        let err = request(dir.path()).await.unwrap_err();
        assert!(matches!(err, ReloadError::NotRunning(_)), "{err}");
    }
}
