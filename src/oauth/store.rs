//! Where an account's refresh token is kept: `<state_dir>/oauth/<account>.refresh_token`,
//! mode 0600 in a 0700 directory, replaced atomically (written aside, synced, renamed), so
//! that a crash leaves the old token or the new one, never half of one.

use std::fs;
use std::io::Write as _;
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use super::OAuthError;
use crate::config::Password;

/// The refresh-token file of one account.
#[derive(Debug, Clone)]
pub struct RefreshStore {
    path: PathBuf,
}

impl RefreshStore {
    /// The file of `account` under `state_dir`.
    pub fn new(state_dir: &Path, account: &str) -> RefreshStore {
        RefreshStore {
            path: state_dir
                .join("oauth")
                .join(format!("{account}.refresh_token")),
        }
    }

    /// The file's path (for messages).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The token kept, if there is one.
    pub fn load(&self) -> Result<Option<Password>, OAuthError> {
        match fs::read_to_string(&self.path) {
            Ok(text) => {
                let token = text.trim();
                Ok((!token.is_empty()).then(|| Password::new(token)))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(self.error(source)),
        }
    }

    /// When the file was last written (`None`: there is none): a token refused once is
    /// asked with again only after the file changed (`mailferry oauth login` ran).
    pub fn stamp(&self) -> Option<SystemTime> {
        fs::metadata(&self.path).and_then(|m| m.modified()).ok()
    }

    /// Replaces the kept token with `token`, durably, before returning.
    pub fn save(&self, token: &Password) -> Result<(), OAuthError> {
        let dir = self.path.parent().unwrap_or(Path::new("."));
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| self.error(e))?;
        let aside = self.path.with_extension("refresh_token.new");
        let _ = fs::remove_file(&aside);
        let mut file = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&aside)
            .map_err(|e| self.error(e))?;
        file.write_all(token.expose().as_bytes())
            .and_then(|()| file.write_all(b"\n"))
            .and_then(|()| file.sync_all())
            .map_err(|e| self.error(e))?;
        fs::rename(&aside, &self.path).map_err(|e| self.error(e))?;
        // The rename itself must survive a crash.
        fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| self.error(e))
    }

    fn error(&self, source: std::io::Error) -> OAuthError {
        OAuthError::Store {
            path: self.path.display().to_string(),
            source,
        }
    }
}
