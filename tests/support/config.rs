//! mailferry configurations for "POP3 or IMAP accounts → one SMTP receiver on 127.0.0.1",
//! as YAML.
//!
//! ```ignore
//! let path = GatewayConfig::new(dir.join("state"), sink.port())
//!     .postmaster("postmaster@corp.local")
//!     .account(AccountYaml {
//!         name: "test-account".into(),
//!         port: dovecot.pop3_port(),
//!         tls: "starttls".into(),
//!         ca_file: Some(dovecot.ca_file()),
//!         username: "catchall@example.com".into(),
//!         password: Secret::Inline("pop-secret".into()),
//!         extra_lines: vec!["poll_interval: 5s".into()],
//!         ..AccountYaml::default()
//!     })
//!     .write(dir);
//! ```

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// The file name [`GatewayConfig::write`] writes in its directory.
pub const CONFIG_FILE: &str = "mailferry.yaml";

/// How an account gives its password.
#[derive(Debug, Clone)]
pub enum Secret {
    /// `password: ...` in the configuration itself.
    Inline(String),
    /// `password_file: ...`: the file holds the password.
    File(PathBuf),
    /// No password line (an account with `oauth:`, given in `extra_lines`).
    None,
}

/// One account of a [`GatewayConfig`].
#[derive(Debug, Clone)]
pub struct AccountYaml {
    /// `name`.
    pub name: String,
    /// `protocol`: `pop3` (the default) or `imap`.
    pub protocol: String,
    /// `host` (default `localhost`).
    pub host: String,
    /// `port`.
    pub port: u16,
    /// `tls`: `none`, `starttls`, `starttls-if-available` or `tls` (default `none`).
    pub tls: String,
    /// `ca_file`, when set.
    pub ca_file: Option<PathBuf>,
    /// `username`.
    pub username: String,
    /// `password` or `password_file`.
    pub password: Secret,
    /// Further `key: value` lines of the account, in order (e.g. `poll_interval: 5s`,
    /// `mode: single-user`, `deliver_to: ...`), without indentation.
    pub extra_lines: Vec<String>,
}

impl AccountYaml {
    /// The account's keys, one a line, not indented: a file of `accounts_dir`.
    pub fn yaml(&self) -> String {
        let mut y = vec![
            format!("name: {}", self.name),
            format!("protocol: {}", self.protocol),
            format!("host: {}", self.host),
            format!("port: {}", self.port),
            format!("tls: {}", self.tls),
        ];
        if let Some(ca) = &self.ca_file {
            y.push(format!("ca_file: {}", ca.display()));
        }
        y.push(format!("username: {}", self.username));
        match &self.password {
            Secret::Inline(p) => y.push(format!("password: {p}")),
            Secret::File(f) => y.push(format!("password_file: {}", f.display())),
            Secret::None => {}
        }
        y.extend(self.extra_lines.iter().cloned());
        y.push(String::new());
        y.join("\n")
    }
}

impl Default for AccountYaml {
    fn default() -> AccountYaml {
        AccountYaml {
            name: String::new(),
            protocol: "pop3".to_owned(),
            host: "localhost".to_owned(),
            port: 0,
            tls: "none".to_owned(),
            ca_file: None,
            username: String::new(),
            password: Secret::Inline(String::new()),
            extra_lines: Vec::new(),
        }
    }
}

/// A whole configuration: state directory, relay to `127.0.0.1:<smtp_port>`, domains,
/// postmaster, optional metrics, and the accounts. The state is in SQLite under the state
/// directory, or in a PostgreSQL database of its own under `MAILFERRY_TEST_STATE=postgres`
/// (`state.rs`).
#[derive(Debug, Clone)]
pub struct GatewayConfig {
    comment: Option<String>,
    state_dir: PathBuf,
    metrics_listen: Option<String>,
    smtp_port: u16,
    relay_tls: String,
    helo: Option<String>,
    relay_timeout: Option<String>,
    relay_lines: Vec<String>,
    domains: Vec<String>,
    postmaster: String,
    extra_lines: Vec<String>,
    accounts: Vec<AccountYaml>,
}

impl GatewayConfig {
    /// A configuration relaying to `127.0.0.1:<smtp_port>` without TLS, for `domains:
    /// [example.com]` with `postmaster: postmaster@example.com`, and no account yet.
    pub fn new(state_dir: impl Into<PathBuf>, smtp_port: u16) -> GatewayConfig {
        GatewayConfig {
            comment: None,
            state_dir: state_dir.into(),
            metrics_listen: None,
            smtp_port,
            relay_tls: "none".to_owned(),
            helo: None,
            relay_timeout: None,
            relay_lines: Vec::new(),
            domains: vec!["example.com".to_owned()],
            postmaster: "postmaster@example.com".to_owned(),
            extra_lines: Vec::new(),
            accounts: Vec::new(),
        }
    }

    /// A `# ...` line on top of the file.
    pub fn comment(mut self, text: &str) -> GatewayConfig {
        self.comment = Some(text.to_owned());
        self
    }

    /// `postmaster`.
    pub fn postmaster(mut self, address: &str) -> GatewayConfig {
        self.postmaster = address.to_owned();
        self
    }

    /// `domains` (patterns such as `*.example.org` are quoted).
    pub fn domains(mut self, domains: &[&str]) -> GatewayConfig {
        self.domains = domains.iter().map(|d| d.to_string()).collect();
        self
    }

    /// `relay.tls`.
    pub fn relay_tls(mut self, tls: &str) -> GatewayConfig {
        self.relay_tls = tls.to_owned();
        self
    }

    /// `relay.helo`.
    pub fn helo(mut self, name: &str) -> GatewayConfig {
        self.helo = Some(name.to_owned());
        self
    }

    /// `relay.timeout` (e.g. `20s`).
    pub fn relay_timeout(mut self, timeout: &str) -> GatewayConfig {
        self.relay_timeout = Some(timeout.to_owned());
        self
    }

    /// A further `key: value` line of the `relay` section (e.g. `retry: {initial: 0s}`).
    pub fn relay_line(mut self, line: &str) -> GatewayConfig {
        self.relay_lines.push(line.to_owned());
        self
    }

    /// `metrics.listen` (e.g. `127.0.0.1:9100`).
    pub fn metrics_listen(mut self, listen: &str) -> GatewayConfig {
        self.metrics_listen = Some(listen.to_owned());
        self
    }

    /// A further top-level `key: value` line (e.g. `envelope_headers: [X-Original-To]`).
    pub fn extra_line(mut self, line: &str) -> GatewayConfig {
        self.extra_lines.push(line.to_owned());
        self
    }

    /// Adds an account (after those added before).
    pub fn account(mut self, account: AccountYaml) -> GatewayConfig {
        self.accounts.push(account);
        self
    }

    /// The YAML text.
    pub fn yaml(&self) -> String {
        let mut y: Vec<String> = Vec::new();
        if let Some(comment) = &self.comment {
            y.push(format!("# {comment}"));
        }
        y.push(format!("state_dir: {}", self.state_dir.display()));
        // MAILFERRY_TEST_STATE=postgres: the same test on PostgreSQL, unless it chose its
        // backend itself.
        let own_state = self.extra_lines.iter().any(|l| l.starts_with("state:"));
        if !own_state && let Some(line) = super::state::state_line(&self.state_dir) {
            y.push(line);
        }
        if let Some(listen) = &self.metrics_listen {
            y.push(format!("metrics:\n  listen: {listen}"));
        }
        y.push(format!(
            "relay:\n  host: 127.0.0.1\n  port: {}",
            self.smtp_port
        ));
        y.push(format!("  tls: {}", self.relay_tls));
        if let Some(helo) = &self.helo {
            y.push(format!("  helo: {helo}"));
        }
        if let Some(timeout) = &self.relay_timeout {
            y.push(format!("  timeout: {timeout}"));
        }
        y.extend(self.relay_lines.iter().map(|l| format!("  {l}")));
        let domains: Vec<String> = self.domains.iter().map(|d| yaml_scalar(d)).collect();
        y.push(format!("domains: [{}]", domains.join(", ")));
        y.push(format!("postmaster: {}", self.postmaster));
        y.extend(self.extra_lines.iter().cloned());
        y.push("accounts:".to_owned());
        for a in &self.accounts {
            // An item of the list: the account's lines, indented under `- `.
            for (i, line) in a.yaml().lines().enumerate() {
                let lead = if i == 0 { "  - " } else { "    " };
                y.push(format!("{lead}{line}"));
            }
        }
        y.push(String::new());
        y.join("\n")
    }

    /// Writes [`GatewayConfig::yaml`] to `dir/mailferry.yaml`, readable by its owner only (it
    /// may hold a password), and returns that path; panics if it cannot.
    pub fn write(&self, dir: &Path) -> PathBuf {
        let path = dir.join(CONFIG_FILE);
        write_private(&path, &self.yaml()).unwrap_or_else(|e| panic!("{e}"));
        path
    }
}

/// Writes `content` to `path` readable by its owner only (a password, a configuration;
/// fetchmail insists on 0600 for its rc file).
pub fn write_private(path: &Path, content: &str) -> Result<(), String> {
    fs::write(path, content).map_err(|e| format!("write {}: {e}", path.display()))?;
    fs::set_permissions(path, fs::Permissions::from_mode(0o600))
        .map_err(|e| format!("chmod {}: {e}", path.display()))
}

/// `s` as a YAML flow scalar: quoted unless it is a plain domain name.
fn yaml_scalar(s: &str) -> String {
    if s.chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-'))
    {
        s.to_owned()
    } else {
        format!("{s:?}")
    }
}
