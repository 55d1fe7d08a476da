//! One process per state directory: an exclusive lock on `state_dir/lock`, held for the life
//! of the process (two daemons on one store would each deliver every message).

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, Write};
use std::path::Path;

use super::{StateError, create_dir};

/// The lock file inside `state_dir`; it holds the PID of the process that has the lock.
pub const LOCK_FILE: &str = "lock";

/// The held lock; released when dropped (or when the process dies, however it dies).
#[derive(Debug)]
pub struct StateLock {
    _file: File,
}

impl StateLock {
    /// Takes the lock on `state_dir` (creating the directory if needed) and writes this
    /// process's PID into it; fails at once, naming the holder's PID, if another process has it.
    pub fn acquire(state_dir: &Path) -> Result<StateLock, StateError> {
        create_dir(state_dir)?;
        let path = state_dir.join(LOCK_FILE);
        let io = |error| StateError::Lock {
            path: path.clone(),
            error,
        };
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                return Err(StateError::Locked {
                    dir: state_dir.to_owned(),
                    holder: holder(&mut file),
                });
            }
            Err(TryLockError::Error(e)) => return Err(io(e)),
        }
        file.set_len(0).map_err(io)?;
        file.rewind().map_err(io)?;
        writeln!(file, "{}", std::process::id()).map_err(io)?;
        Ok(StateLock { _file: file })
    }
}

/// The PID of the process that holds the lock on `state_dir` (a running daemon), or `None`
/// when nobody holds it; for `mailferry reload`, which signals that process.
pub fn holder_of(state_dir: &Path) -> Result<Option<u32>, StateError> {
    let path = state_dir.join(LOCK_FILE);
    let mut file = match OpenOptions::new().read(true).write(true).open(&path) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(error) => return Err(StateError::Lock { path, error }),
    };
    match file.try_lock() {
        // Free: released again when `file` is dropped.
        Ok(()) => Ok(None),
        Err(TryLockError::WouldBlock) => Ok(holder(&mut file).parse().ok()),
        Err(TryLockError::Error(error)) => Err(StateError::Lock { path, error }),
    }
}

/// The PID of the process holding the lock on `state_dir`, as the kernel lists it in
/// `/proc/locks`, without opening, let alone locking, the file (`mailferry status`: a daemon
/// starting at that moment must not find it taken). `None` when nobody holds it, or on a
/// system without `/proc/locks`.
pub fn holder_seen(state_dir: &Path) -> Option<u32> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(state_dir.join(LOCK_FILE)).ok()?;
    let dev = meta.dev();
    // glibc's gnu_dev_major and gnu_dev_minor, as the kernel prints them: `08:01:1234`.
    let major = ((dev >> 8) & 0xfff) | ((dev >> 32) & 0xffff_f000);
    let minor = (dev & 0xff) | ((dev >> 12) & 0xffff_ff00);
    let file = format!("{major:02x}:{minor:02x}:{}", meta.ino());
    let locks = std::fs::read_to_string("/proc/locks").ok()?;
    locks.lines().find_map(|line| {
        // `1: FLOCK  ADVISORY  WRITE 1234 08:01:1234 0 EOF`; a waiter's line has `->`.
        let fields: Vec<&str> = line.split_whitespace().collect();
        match fields.as_slice() {
            [_, "FLOCK", _, _, pid, at, ..] if *at == file => pid.parse().ok(),
            _ => None,
        }
    })
}

/// The PID written by the holder, as text (`unknown` when it cannot be read).
fn holder(file: &mut File) -> String {
    let mut text = String::new();
    let _ = file.read_to_string(&mut text);
    let pid = text.trim();
    if !pid.is_empty() && pid.bytes().all(|b| b.is_ascii_digit()) {
        pid.to_owned()
    } else {
        "unknown".to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_holder_is_seen_without_touching_the_lock() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(holder_seen(dir.path()), None);
        let held = StateLock::acquire(dir.path()).unwrap();
        assert_eq!(holder_seen(dir.path()), Some(std::process::id()));
        drop(held);
        assert_eq!(holder_seen(dir.path()), None);
    }

    #[test]
    fn a_second_lock_on_the_same_directory_fails_naming_the_holder() {
        let dir = tempfile::tempdir().unwrap();
        let first = StateLock::acquire(dir.path()).unwrap();
        let err = StateLock::acquire(dir.path()).unwrap_err();
        let text = err.to_string();
        assert!(matches!(err, StateError::Locked { .. }), "{text}");
        assert!(text.contains(&std::process::id().to_string()), "{text}");
        // A lock held in this process is still held against another open of the file.
        assert_eq!(holder_of(dir.path()).unwrap(), Some(std::process::id()));
        drop(first);
        assert_eq!(holder_of(dir.path()).unwrap(), None);
        StateLock::acquire(dir.path()).expect("free again once dropped");
    }
}
