//! Maildirs written and read as a delivery agent would, for the test servers that serve them
//! (Dovecot, Courier): owned by the mail user, messages kept in delivery order.

use std::fs;
use std::os::unix::fs::{PermissionsExt, chown};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// Writes messages into Maildirs owned by one uid/gid and lists them back.
pub struct Maildirs {
    uid: u32,
    gid: u32,
    /// File names start with `base_secs + seq`, so a server that sorts new files by that
    /// number (Dovecot, Courier) keeps the order of delivery.
    base_secs: u64,
    seq: AtomicU64,
}

impl Maildirs {
    /// Maildirs owned by `uid`/`gid`.
    pub fn new(uid: u32, gid: u32) -> Maildirs {
        let base_secs = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(1_700_000_000)
            - 86_400;
        Maildirs {
            uid,
            gid,
            base_secs,
            seq: AtomicU64::new(0),
        }
    }

    /// Creates `dir` (and its `cur`, `new`, `tmp`) where missing, mode 0700, owned by the
    /// mail user. Panics when not root (chown).
    pub fn create(&self, dir: &Path) {
        for sub in ["", "cur", "new", "tmp"] {
            self.create_dir(&dir.join(sub));
        }
    }

    /// Creates one directory (a home) where missing, mode 0700, owned by the mail user.
    pub fn create_dir(&self, path: &Path) {
        if path.exists() {
            return;
        }
        fs::create_dir(path).expect("create a directory for the mail user");
        fs::set_permissions(path, fs::Permissions::from_mode(0o700))
            .expect("chmod a directory of the mail user");
        chown(path, Some(self.uid), Some(self.gid))
            .expect("chown to the mail user (the harness must run as root)");
    }

    /// Puts one message into the Maildir `dir`: written to `tmp/` as the mail user, then
    /// renamed into `new/`. The bytes are stored as given (a Maildir keeps LF line ends).
    pub fn deliver(&self, dir: &Path, raw: &[u8]) {
        let seq = self.seq.fetch_add(1, Ordering::SeqCst);
        // No ",S=<size>" in the name: Dovecot would insist on it being the exact size.
        let name = format!(
            "{}.M{}P{}Q{seq}.mailferry-harness",
            self.base_secs + seq,
            seq % 1_000_000,
            std::process::id()
        );
        let tmp = dir.join("tmp").join(&name);
        fs::write(&tmp, raw).expect("write a message into Maildir/tmp");
        fs::set_permissions(&tmp, fs::Permissions::from_mode(0o600)).expect("chmod a message");
        chown(&tmp, Some(self.uid), Some(self.gid)).expect("chown a message to the mail user");
        fs::rename(&tmp, dir.join("new").join(&name)).expect("move a message into new/");
    }

    /// The message files in `dir` (`new/` and `cur/`), in delivery order.
    pub fn message_files(&self, dir: &Path) -> Vec<PathBuf> {
        let mut files: Vec<(u64, String, PathBuf)> = Vec::new();
        for sub in ["new", "cur"] {
            let Ok(entries) = fs::read_dir(dir.join(sub)) else {
                continue;
            };
            for entry in entries.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                if name.starts_with('.') {
                    continue;
                }
                let secs = name
                    .split('.')
                    .next()
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(u64::MAX);
                files.push((secs, name, entry.path()));
            }
        }
        files.sort();
        files.into_iter().map(|(_, _, p)| p).collect()
    }

    /// The Maildir flags of each message in `dir` (`"S"` for `\Seen`, `"ST"`, ...), in
    /// delivery order; empty for a message the server has not flagged.
    pub fn flags(&self, dir: &Path) -> Vec<String> {
        self.message_files(dir)
            .iter()
            .map(|p| {
                let name = p.file_name().unwrap_or_default().to_string_lossy();
                name.rsplit_once(":2,")
                    .map(|(_, flags)| flags.to_owned())
                    .unwrap_or_default()
            })
            .collect()
    }
}
