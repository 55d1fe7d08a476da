//! The second step of loading: what a validated configuration names outside its own text
//! (password files, environment variables, the `directory` file, certificate and key files) is
//! read and checked.
//!
//! Validation (`load/`) reads nothing but the YAML text, so it can be tested without files;
//! it lists each outside source as a [`Source`] with the key that named it. Resolving reads
//! them all and reports every problem at once, each at its key's line and column, never with
//! the secret in it.

use std::path::PathBuf;

use super::{Config, ConfigError, ConfigErrors, Password};
use crate::route::DirectoryFile;
use crate::tls;

/// A key of the configuration file: its name in messages (`accounts[a].password_file`) and
/// where its value is written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyAt {
    /// The dotted key name.
    pub name: String,
    /// 1-based line of the value.
    pub line: usize,
    /// 1-based column of the value.
    pub column: usize,
}

/// Whose secret a [`Source::Secret`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SecretOf {
    /// The password of `accounts[i]` (position in the list, 0-based).
    Account(usize),
    /// `relay.password`, for SMTP AUTH.
    Relay,
    /// The `oauth.client_secret` of `accounts[i]` (position in the list, 0-based).
    OAuthClient(usize),
    /// `state.postgres.url`: the database URL, with its password.
    StateUrl,
    /// `relay.oauth.client_secret`.
    RelayOAuthClient,
}

/// Whose `directory` a [`Source::Directory`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DirectoryOf {
    /// The top level's.
    Top,
    /// The one of `accounts[i]` (position in the list, 0-based).
    Account(usize),
}

/// Where a secret is read from; a secret written in the file itself needs no resolving.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretSource {
    /// `password_file`: the file's content, less one final line break.
    File(PathBuf),
    /// `password_env`: the value of this environment variable.
    Env(String),
}

/// Something outside the YAML text that the configuration names, still unread.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// A password kept in a file or an environment variable.
    Secret {
        /// Where the secret goes once read.
        of: SecretOf,
        /// Where it is read from.
        from: SecretSource,
        /// The key that named it.
        key: KeyAt,
    },
    /// `directory`: a file of known local addresses; read again by every pass when it
    /// changes, but it must exist and parse at start.
    Directory {
        /// Where the directory goes once read.
        of: DirectoryOf,
        /// The file, resolved against the configuration's directory.
        path: PathBuf,
        /// The key that named it.
        key: KeyAt,
    },
    /// `ca_file`: must hold PEM certificates.
    CaFile {
        /// The file, resolved against the configuration's directory.
        path: PathBuf,
        /// The key that named it.
        key: KeyAt,
    },
    /// `client_cert` with `client_key`: a PEM certificate chain and its private key.
    ClientIdentity {
        /// The section they are in (`relay`, `accounts[a]`), for messages.
        section: String,
        /// The certificate file.
        cert: PathBuf,
        /// The `client_cert` key.
        cert_key: KeyAt,
        /// The private key file.
        key: PathBuf,
        /// The `client_key` key.
        key_key: KeyAt,
    },
}

/// A configuration whose text is valid, before anything it names outside the text is read:
/// the result of [`super::validate`]. [`Validated::resolve`] makes it a [`Config`].
#[derive(Debug, Clone)]
pub struct Validated {
    /// The configuration file, as named in errors.
    pub(super) file: String,
    /// Complete but for the secrets in `sources`, whose passwords are empty here; private so
    /// that only `resolve` hands it out.
    pub(super) config: Config,
    /// Every outside source, in file order.
    pub(super) sources: Vec<Source>,
}

impl Validated {
    /// What the configuration names outside its text, in file order.
    pub fn sources(&self) -> &[Source] {
        &self.sources
    }

    /// Reads the secrets and checks the certificate and key files; on failure every problem,
    /// sorted by line.
    pub fn resolve(self) -> Result<Config, ConfigErrors> {
        let Validated {
            file,
            mut config,
            sources,
        } = self;
        let errors = resolve_sources(&file, &sources, Some(&mut config));
        if errors.is_empty() {
            Ok(config)
        } else {
            Err(ConfigErrors(errors))
        }
    }
}

impl Source {
    /// The keys that named this source.
    pub fn keys(&self) -> Vec<&KeyAt> {
        match self {
            Source::Secret { key, .. }
            | Source::Directory { key, .. }
            | Source::CaFile { key, .. } => vec![key],
            Source::ClientIdentity {
                cert_key, key_key, ..
            } => vec![cert_key, key_key],
        }
    }
}

/// Reads and checks every source; each secret goes into `config`, when there is one (there
/// is none when the text itself has problems: the sources are then read only to report
/// theirs too). Every problem, sorted by line.
pub(super) fn resolve_sources(
    file: &str,
    sources: &[Source],
    mut config: Option<&mut Config>,
) -> Vec<ConfigError> {
    let mut errors = Vec::new();
    let mut fail = |key: &KeyAt, message: String| {
        errors.push(ConfigError {
            file: file.to_string(),
            line: key.line,
            column: key.column,
            message,
        });
    };
    for source in sources {
        match source {
            Source::Secret { of, from, key } => match read_secret(from, &key.name) {
                Ok(secret) => match (of, config.as_deref_mut()) {
                    (SecretOf::Account(i), Some(config)) => match config.accounts.get_mut(*i) {
                        Some(account) => account.password = secret,
                        None => fail(key, format!("{}: no such account", key.name)),
                    },
                    (SecretOf::Relay, Some(config)) => match config.relay.auth.as_mut() {
                        Some(auth) => auth.password = secret,
                        None => fail(key, format!("{}: no relay.username", key.name)),
                    },
                    (SecretOf::RelayOAuthClient, Some(config)) => {
                        match config.relay.auth.as_mut().and_then(|a| a.oauth.as_mut()) {
                            Some(oauth) => oauth.client_secret = Some(secret),
                            None => fail(key, format!("{}: no relay.oauth", key.name)),
                        }
                    }
                    (SecretOf::OAuthClient(i), Some(config)) => {
                        match config.accounts.get_mut(*i).and_then(|a| a.oauth.as_mut()) {
                            Some(oauth) => oauth.client_secret = Some(secret),
                            None => fail(key, format!("{}: no such account", key.name)),
                        }
                    }
                    (SecretOf::StateUrl, Some(config)) => match &mut config.state {
                        super::StateBackend::Postgres(pg) => pg.url = secret,
                        super::StateBackend::Sqlite => {
                            fail(key, format!("{}: no state.postgres", key.name))
                        }
                    },
                    (_, None) => {}
                },
                Err(message) => fail(key, message),
            },
            Source::Directory { of, path, key } => match DirectoryFile::open(path) {
                Ok(directory) => match (of, config.as_deref_mut()) {
                    (DirectoryOf::Top, Some(config)) => config.directory = Some(directory),
                    (DirectoryOf::Account(i), Some(config)) => match config.accounts.get_mut(*i) {
                        Some(account) => account.routing.directory = Some(directory),
                        None => fail(key, format!("{}: no such account", key.name)),
                    },
                    (_, None) => {}
                },
                Err(e) => fail(key, format!("{}: {e}", key.name)),
            },
            Source::CaFile { path, key } => {
                if let Err(e) = tls::load_ca_file(path) {
                    fail(key, format!("{}: {e}", key.name));
                }
            }
            Source::ClientIdentity {
                section,
                cert,
                cert_key,
                key,
                key_key,
            } => {
                if let Err(e) = tls::load_client_identity(cert, key) {
                    let at = match &e {
                        tls::TlsError::ClientIdentity { path, .. } if path == key => key_key,
                        _ => cert_key,
                    };
                    fail(at, format!("{section}: {e}"));
                }
            }
        }
    }
    errors.sort_by_key(|e| (e.line, e.column));
    errors
}

/// The secret from a file or the environment, checked like one written inline; the error
/// names `name` and the file or variable, never the secret.
fn read_secret(from: &SecretSource, name: &str) -> Result<Password, String> {
    let secret = match from {
        SecretSource::File(path) => match std::fs::read_to_string(path) {
            Ok(mut p) => {
                if p.ends_with('\n') {
                    p.pop();
                    if p.ends_with('\r') {
                        p.pop();
                    }
                }
                p
            }
            Err(e) => return Err(format!("{name}: cannot read {}: {e}", path.display())),
        },
        SecretSource::Env(var) => match std::env::var(var) {
            Ok(p) => p,
            Err(std::env::VarError::NotPresent) => {
                return Err(format!("{name}: environment variable {var} is not set"));
            }
            Err(std::env::VarError::NotUnicode(_)) => {
                return Err(format!(
                    "{name}: environment variable {var} is not valid UTF-8"
                ));
            }
        },
    };
    match secret_problem(&secret) {
        Some(problem) => Err(format!("{name}: {problem}")),
        None => Ok(Password::new(secret)),
    }
}

/// What makes a secret unusable, wherever it came from: empty, or holding a character that
/// would end the protocol line it is sent in.
pub(super) fn secret_problem(secret: &str) -> Option<&'static str> {
    if secret.is_empty() {
        Some("the password is empty")
    } else if secret.contains(['\r', '\n', '\0']) {
        Some("the password contains a line break or NUL")
    } else {
        None
    }
}
