//! `directory`: the known local addresses (design.md, Routing step 6). A recipient in an
//! accepted domain that the directory does not know goes to the postmaster instead, with the
//! reason.
//!
//! The file holds one entry per line: an address (`alice@example.com`) or a whole domain
//! (`*@example.org`); `#` starts a comment, blank lines are ignored. [`DirectoryFile`] reads it
//! again when its modification time or size changes, at the start of each pass; a version
//! that cannot be read or has a bad line is not taken (the last good one stays, with a
//! warning), so a half-written file never sends everyone's mail to the postmaster.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use crate::address::{Address, normalize_domain};

/// The parsed directory: which addresses and domains are known.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Directory {
    /// [`Address::dedup_key`] of each listed address.
    addresses: HashSet<String>,
    /// Domains listed as `*@domain` (normalised).
    domains: HashSet<String>,
}

/// Why a directory file was not taken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DirectoryError {
    /// The file could not be read.
    #[error("cannot read {path}: {error}")]
    Read {
        /// The file.
        path: String,
        /// The I/O error's text.
        error: String,
    },
    /// Lines that are neither an address nor `*@domain`.
    #[error("{path}: {}", lines.iter().map(|(n, why)| format!("line {n}: {why}")).collect::<Vec<_>>().join("; "))]
    BadLines {
        /// The file.
        path: String,
        /// 1-based line number and the problem, for each bad line.
        lines: Vec<(usize, String)>,
    },
}

impl Directory {
    /// Parses the text of a directory file; every bad line is returned (1-based).
    pub fn parse(text: &str) -> Result<Directory, Vec<(usize, String)>> {
        let mut directory = Directory::default();
        let mut bad = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let entry = line.split('#').next().unwrap_or_default().trim();
            if entry.is_empty() {
                continue;
            }
            let parsed = match entry.strip_prefix("*@") {
                Some(domain) => normalize_domain(domain)
                    .map(|d| {
                        directory.domains.insert(d);
                    })
                    .map_err(|e| e.to_string()),
                None => Address::parse(entry)
                    .map(|a| {
                        directory.addresses.insert(a.dedup_key());
                    })
                    .map_err(|e| format!("`{entry}` is not an address or *@domain: {e}")),
            };
            if let Err(why) = parsed {
                bad.push((i + 1, why));
            }
        }
        if bad.is_empty() {
            Ok(directory)
        } else {
            Err(bad)
        }
    }

    /// Whether `address` is a known local recipient.
    pub fn knows(&self, address: &Address) -> bool {
        self.domains.contains(address.domain()) || self.addresses.contains(&address.dedup_key())
    }

    /// How many entries (addresses and domains) it lists.
    pub fn len(&self) -> usize {
        self.addresses.len() + self.domains.len()
    }

    /// Whether it lists nothing.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A directory file and the version last read from it, shared by every pass (clones share
/// it).
#[derive(Debug, Clone)]
pub struct DirectoryFile {
    path: PathBuf,
    loaded: Arc<Mutex<Loaded>>,
}

#[derive(Debug)]
struct Loaded {
    /// Modification time and size of the version read.
    stamp: Option<(SystemTime, u64)>,
    directory: Arc<Directory>,
}

impl DirectoryFile {
    /// Reads `path` for the first time: it must exist and parse.
    pub fn open(path: &Path) -> Result<DirectoryFile, DirectoryError> {
        let (stamp, directory) = read(path)?;
        Ok(DirectoryFile {
            path: path.to_path_buf(),
            loaded: Arc::new(Mutex::new(Loaded {
                stamp,
                directory: Arc::new(directory),
            })),
        })
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The directory as the file now says, read again if it changed since the last call; when
    /// the new version cannot be taken, the last good one (and a warning in the log).
    pub fn current(&self) -> Arc<Directory> {
        let mut loaded = match self.loaded.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        let stamp = stamp_of(&self.path);
        if stamp.is_some() && stamp == loaded.stamp {
            return loaded.directory.clone();
        }
        match read(&self.path) {
            Ok((stamp, directory)) => {
                tracing::info!(
                    "directory {}: read again ({} entries)",
                    self.path.display(),
                    directory.len()
                );
                loaded.stamp = stamp;
                loaded.directory = Arc::new(directory);
            }
            Err(e) => {
                tracing::warn!("directory not read again, the last good version stays: {e}");
                // Said once per change, not once per pass.
                loaded.stamp = stamp;
            }
        }
        loaded.directory.clone()
    }
}

fn stamp_of(path: &Path) -> Option<(SystemTime, u64)> {
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.modified().ok()?, meta.len()))
}

fn read(path: &Path) -> Result<(Option<(SystemTime, u64)>, Directory), DirectoryError> {
    let shown = path.display().to_string();
    // The stamp is taken before the read: a change during the read is seen next time.
    let stamp = stamp_of(path);
    let text = std::fs::read_to_string(path).map_err(|e| DirectoryError::Read {
        path: shown.clone(),
        error: e.to_string(),
    })?;
    let directory =
        Directory::parse(&text).map_err(|lines| DirectoryError::BadLines { path: shown, lines })?;
    Ok((stamp, directory))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(s: &str) -> Address {
        Address::parse(s).unwrap()
    }

    #[test]
    fn addresses_and_domains_compare_without_case() {
        let d = Directory::parse(
            "# staff\nAlice@Example.com\n\n  bob@example.com  # the boss\n*@Sales.Example.com\n",
        )
        .unwrap();
        assert_eq!(d.len(), 3);
        assert!(d.knows(&a("alice@example.COM")));
        assert!(d.knows(&a("ALICE@example.com")));
        assert!(d.knows(&a("anyone@sales.example.com")));
        assert!(!d.knows(&a("carol@example.com")));
        assert!(!d.knows(&a("x@sub.sales.example.com")));
    }

    #[test]
    fn every_bad_line_is_named() {
        let bad =
            Directory::parse("alice@example.com\nnot an address\n*@-bad-\nevil%x@example.com\n")
                .unwrap_err();
        let lines: Vec<usize> = bad.iter().map(|(n, _)| *n).collect();
        assert_eq!(lines, [2, 3, 4]);
    }

    #[test]
    fn the_file_is_read_again_when_it_changes_and_a_bad_version_is_not_taken() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("directory");
        std::fs::write(&path, "alice@example.com\n").unwrap();
        let file = DirectoryFile::open(&path).unwrap();
        assert!(file.current().knows(&a("alice@example.com")));
        assert!(!file.current().knows(&a("bob@example.com")));

        std::fs::write(&path, "alice@example.com\nbob@example.com\n").unwrap();
        assert!(file.current().knows(&a("bob@example.com")));

        // A broken version: the last good one stays.
        std::fs::write(&path, "alice@example.com\nbroken line\ncarol@example.com\n").unwrap();
        let d = file.current();
        assert!(d.knows(&a("bob@example.com")));
        assert!(!d.knows(&a("carol@example.com")));

        // Gone: the last good one stays too.
        std::fs::remove_file(&path).unwrap();
        assert!(file.current().knows(&a("bob@example.com")));

        assert!(matches!(
            DirectoryFile::open(&path),
            Err(DirectoryError::Read { .. })
        ));
    }
}
