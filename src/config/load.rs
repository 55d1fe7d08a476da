//! Parsing and validation of the YAML text into a [`Validated`] configuration: pure, nothing
//! but the text is read (files and variables it names are read by `../resolve.rs`).
//!
//! The text is read into a position-keeping node tree (`yaml.rs`), then walked by hand: each
//! problem becomes a [`ConfigError`] with its line and column and the walk goes on, so one run
//! of `check-config` names every mistake. Nothing here ever puts a password into a message.
//!
//! `check.rs` checks values (strings, numbers, durations, sizes, hosts, choices) and a
//! mapping's keys: a key is declared once, where its section's reader asks for it
//! (`s.get("poll_interval")`), and that makes it allowed there. This file walks the top
//! level, `relay:` and `metrics:`; `account.rs` each entry of `accounts:`; `tls.rs` the TLS
//! keys both share.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::resolve::{
    DirectoryOf, KeyAt, SecretOf, SecretSource, Source, Validated, secret_problem,
};
use super::{
    AccountConfig, AccountRouting, AfterFetch, AuthMethod, Config, ConfigError, ConfigErrors,
    DEFAULT_AUTH_BACKOFF_MAX, DEFAULT_ENVELOPE_HEADERS, FetchOrder, Initial, MetricsConfig, Mode,
    Password, PostgresConfig, Protocol, RelayAuth, RelayConfig, Retention, RetryPolicy,
    SourceRouted, StateBackend, TlsMode,
};
use crate::address::{Address, DomainPattern, normalize_domain};

mod account;
mod check;
mod login;
mod oauth;
mod routing;
mod tls;
mod yaml;

#[cfg(test)]
mod oauth_tests;
#[cfg(test)]
mod proxy_tests;
#[cfg(test)]
mod resolve_tests;
#[cfg(test)]
mod routing_tests;
#[cfg(test)]
mod state_tests;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod tls_tests;

use check::{Section, scalar};
use yaml::{Kind, Node};

const PASSWORD_KEYS: [&str; 3] = ["password", "password_file", "password_env"];

const TLS_MODES: &[(&str, TlsMode)] = &[
    ("none", TlsMode::None),
    ("starttls", TlsMode::Starttls),
    ("starttls-if-available", TlsMode::StarttlsIfAvailable),
    ("tls", TlsMode::Tls),
];
const SOURCE_ROUTED: &[(&str, SourceRouted)] = &[
    ("postmaster", SourceRouted::Postmaster),
    ("reject", SourceRouted::Reject),
];

#[derive(Clone, Copy, PartialEq, Eq)]
enum ModeName {
    CatchAll,
    SingleUser,
}
const FETCH_ORDERS: &[(&str, FetchOrder)] = &[
    ("oldest", FetchOrder::Oldest),
    ("newest", FetchOrder::Newest),
];
const AUTH_METHODS: &[(&str, Option<crate::sasl::Method>)] =
    &[("auto", None), ("apop", Some(crate::sasl::Method::Apop))];
const INITIAL: &[(&str, Initial)] = &[
    ("deliver_all", Initial::DeliverAll),
    ("skip_existing", Initial::SkipExisting),
];
const MODES: &[(&str, ModeName)] = &[
    ("catch-all", ModeName::CatchAll),
    ("single-user", ModeName::SingleUser),
];

const POLL_INTERVAL: (u64, u64) = (5, 86_400);
const TIMEOUT: (u64, u64) = (1, 3_600);
const CONNECTIONS: (u64, u64) = (1, 64);
const PASS_DEADLINE: (u64, u64) = (1, 86_400);
const AUTH_BACKOFF_MAX: (u64, u64) = (60, 7 * 86_400);
const BACKOFF_MAX: (u64, u64) = (5, 86_400);
const MAX_CONCURRENT_ACCOUNTS: (u64, u64) = (1, 1_000);
/// `max_message_size` bounds, in bytes: 1 KiB ..= 1 GiB.
const MESSAGE_SIZE: (u64, u64) = (1_024, 1 << 30);
/// `memory_budget` bounds, in bytes: 1 MiB ..= 64 GiB.
const MEMORY_BUDGET: (u64, u64) = (1 << 20, 64 << 30);
const RETRY_DELAY: (u64, u64) = (0, 86_400);
/// `state.postgres.lease_ttl` bounds: 3 seconds ..= 1 hour.
const LEASE_TTL: (u64, u64) = (3, 3_600);
/// `dedup_window` bounds: 1 hour ..= 365 days.
const DEDUP_WINDOW: (u64, u64) = (3_600, 365 * 86_400);

/// Parses and validates configuration text, reading nothing else (the first step of
/// [`super::load`]); `file` names it in errors, and relative paths in it (`state_dir`,
/// `ca_file`, `password_file`) are resolved against `file`'s directory.
///
/// On failure every problem found is returned, sorted by line.
pub fn validate(text: &str, file: &str) -> Result<Validated, ConfigErrors> {
    let checked = check(text, file);
    match checked.config {
        Some(config) => Ok(Validated {
            file: file.to_string(),
            config,
            sources: checked.sources,
        }),
        None => Err(ConfigErrors(checked.errors)),
    }
}

/// What one walk over the text found.
pub(super) struct Checked {
    /// The configuration; `None` when there is any problem.
    pub(super) config: Option<Config>,
    /// What the text names outside itself, in file order; found also when `config` is
    /// `None`, so that `check-config` can report their problems in the same run.
    pub(super) sources: Vec<Source>,
    /// Every problem, sorted by line.
    pub(super) errors: Vec<ConfigError>,
    /// `accounts_dir`, resolved, and where it is written: read by `../accounts_dir.rs`.
    pub(super) accounts_dir: Option<(PathBuf, KeyAt)>,
    /// Each account's name and the line it is written at, for duplicates across files.
    pub(super) names: Vec<(String, usize)>,
    /// The accepted domains and the postmaster, once read: what an account file's rewrite
    /// may lead to.
    pub(super) targets: Option<(Vec<DomainPattern>, Address)>,
}

/// What one account written alone (a file of `accounts_dir`) holds, checked.
pub(super) struct CheckedAccount {
    /// The account; `None` when there is any problem.
    pub(super) account: Option<AccountConfig>,
    /// What it names outside its text (its place in the whole list in each `SecretOf`).
    pub(super) sources: Vec<Source>,
    /// Every problem, sorted by line, in its own file.
    pub(super) errors: Vec<ConfigError>,
    /// The line of its `name` (1 when it has none).
    pub(super) name_line: usize,
}

/// Checks `text` as one item of `accounts:` written alone, in `file` (relative paths in it
/// resolve against `file`'s directory); `index` is its place in the whole configuration's
/// list of accounts, `targets` the main file's domains and postmaster.
pub(super) fn check_account(
    text: &str,
    file: &str,
    index: usize,
    targets: Option<&(Vec<DomainPattern>, Address)>,
) -> CheckedAccount {
    let doc = yaml::parse(text);
    let mut c = Checker::new(file, doc.cut);
    c.targets = targets.map(|(domains, postmaster)| routing::Targets {
        domains: domains.clone(),
        postmaster: postmaster.clone(),
    });
    for e in &doc.errors {
        c.push(e.line, e.column, e.message.clone());
    }
    let mut names = Vec::new();
    let account = match &doc.root {
        Some(root) => {
            let stem = Path::new(file)
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default();
            c.account(root, index, stem, &mut names)
        }
        None if doc.errors.is_empty() => {
            c.push(1, 1, "the file is empty: it holds one account, with the keys of one item of accounts: (name, protocol, host, username, ...)");
            None
        }
        None => None,
    };
    let account = c.finish(account, "the account is incomplete");
    CheckedAccount {
        account,
        sources: c.sources,
        errors: c.errors,
        name_line: names.first().map_or(1, |(_, line)| *line),
    }
}

/// The walk behind [`validate`].
pub(super) fn check(text: &str, file: &str) -> Checked {
    let doc = yaml::parse(text);
    let mut c = Checker::new(file, doc.cut);
    for e in &doc.errors {
        c.push(e.line, e.column, e.message.clone());
    }
    let config = match &doc.root {
        Some(root) => c.section(root, "", Checker::config),
        None if doc.errors.is_empty() => {
            c.push(1, 1, "the file is empty: state_dir, relay, domains, postmaster and accounts are required");
            None
        }
        None => None,
    };
    let config = c.finish(config, "the configuration is incomplete");
    Checked {
        config,
        sources: c.sources,
        errors: c.errors,
        accounts_dir: c.accounts_dir,
        names: c.names,
        targets: c.targets.map(|t| (t.domains, t.postmaster)),
    }
}

/// Every key any section allows, from a walk over a file that has each section (empty).
#[cfg(test)]
pub(super) fn keys_read() -> Vec<&'static str> {
    let doc =
        yaml::parse("state: {postgres: {}}\nmetrics: {}\nrelay: {retry: {}}\naccounts: [{}]\n");
    let mut c = Checker::new("keys.yaml", None);
    if let Some(root) = &doc.root {
        c.section(root, "", Checker::config);
    }
    c.keys
}

/// The state of one walk over the tree: where relative paths start and what went wrong.
struct Checker<'a> {
    file: &'a str,
    dir: PathBuf,
    errors: Vec<ConfigError>,
    /// The line of the syntax error that cut the tree short: "missing" errors, and errors
    /// about nodes reaching that line, would be noise.
    cut: Option<usize>,
    /// What the file names outside its text, for the resolve step.
    sources: Vec<Source>,
    /// Every key the sections read asked for (the allowed keys), for the test that the
    /// example file documents each.
    keys: Vec<&'static str>,
    /// The accepted domains and the postmaster, once read: where a rewrite may lead.
    targets: Option<routing::Targets>,
    /// `accounts_dir`, once read.
    accounts_dir: Option<(PathBuf, KeyAt)>,
    /// The names of the accounts of `accounts:` with their lines, once read.
    names: Vec<(String, usize)>,
}

impl<'a> Checker<'a> {
    /// A walk over `file` (relative paths resolve against its directory), cut short at
    /// line `cut` by a syntax error.
    fn new(file: &'a str, cut: Option<usize>) -> Checker<'a> {
        Checker {
            file,
            dir: Path::new(file)
                .parent()
                .map(Path::to_path_buf)
                .unwrap_or_default(),
            errors: Vec::new(),
            cut,
            sources: Vec::new(),
            keys: Vec::new(),
            targets: None,
            accounts_dir: None,
            names: Vec::new(),
        }
    }
}

impl Checker<'_> {
    /// The end of a walk: `value` only if nothing was wrong, the problems sorted by line,
    /// and the sources a syntax error may have cut short dropped.
    fn finish<T>(&mut self, value: Option<T>, incomplete: &str) -> Option<T> {
        let value = match value {
            Some(value) if self.errors.is_empty() => Some(value),
            _ => {
                if self.errors.is_empty() {
                    // Every `None` comes with an error; this only guards that promise.
                    self.push(1, 1, incomplete);
                }
                None
            }
        };
        self.errors.sort_by_key(|e| (e.line, e.column));
        // A value that reaches the syntax error may have been cut short by it: not read.
        if let Some(cut) = self.cut {
            self.sources
                .retain(|source| source.keys().iter().all(|key| key.line < cut));
        }
        value
    }

    fn config(&mut self, top: &Section<'_>) -> Option<Config> {
        let state_dir = self
            .require(top, "state_dir")
            .and_then(|n| self.path(n, "state_dir"));
        let state = match top.get("state") {
            None => Some(StateBackend::Sqlite),
            Some(n) => self.section(n, "state", Self::state),
        };
        let metrics = match top.get("metrics") {
            None => Some(MetricsConfig { listen: None }),
            Some(n) => self.section(n, "metrics", Self::metrics),
        };
        let relay = self
            .require(top, "relay")
            .and_then(|n| self.section(n, "relay", Self::relay));
        let domains = self.require(top, "domains").and_then(|n| self.domains(n));
        let postmaster = self
            .require(top, "postmaster")
            .and_then(|n| self.address(n, "postmaster"));
        let envelope_headers = match top.get("envelope_headers") {
            None => Some(DEFAULT_ENVELOPE_HEADERS.map(String::from).to_vec()),
            Some(n) => self.envelope_headers(n, "envelope_headers"),
        };
        let max_message_size = match top.get("max_message_size") {
            None => Some(crate::config::DEFAULT_MAX_MESSAGE_SIZE),
            Some(n) => self.size(n, "max_message_size", MESSAGE_SIZE),
        };
        let memory_budget = match top.get("memory_budget") {
            None => Some(crate::config::DEFAULT_MEMORY_BUDGET),
            Some(n) => self.size(n, "memory_budget", MEMORY_BUDGET),
        };
        let source_routed = match top.get("source_routed") {
            None => Some(SourceRouted::default()),
            Some(n) => self.choice(n, "source_routed", SOURCE_ROUTED),
        };
        let dedup = match top.get("dedup") {
            None => Some(true),
            Some(n) => self.choice(n, "dedup", &[("on", true), ("off", false)]),
        };
        let dedup_window = match top.get("dedup_window") {
            None => Some(crate::config::DEFAULT_DEDUP_WINDOW),
            Some(n) => self.duration(n, "dedup_window", DEDUP_WINDOW),
        };
        if let (Some(domains), Some(postmaster)) = (&domains, &postmaster) {
            self.targets = Some(routing::Targets {
                domains: domains.clone(),
                postmaster: postmaster.clone(),
            });
        }
        let rewrite = match top.get("rewrite") {
            None => Some(Vec::new()),
            Some(n) => self.rewrite(n, "rewrite"),
        };
        let directory = match top.get("directory") {
            None => Some(None),
            Some(n) => self.directory(n, "directory", DirectoryOf::Top),
        };
        let max_hops = match top.get("max_hops") {
            None => Some(crate::route::DEFAULT_MAX_HOPS),
            Some(n) => self
                .integer(n, "max_hops", routing::MAX_HOPS.0, routing::MAX_HOPS.1)
                .and_then(|m| u32::try_from(m).ok()),
        };
        let watch_config = match top.get("watch_config") {
            None => Some(false),
            Some(n) => self.boolean(n, "watch_config"),
        };
        let max_concurrent_accounts = match top.get("max_concurrent_accounts") {
            None => Some(crate::config::DEFAULT_MAX_CONCURRENT_ACCOUNTS),
            Some(n) => self
                .integer(
                    n,
                    "max_concurrent_accounts",
                    MAX_CONCURRENT_ACCOUNTS.0,
                    MAX_CONCURRENT_ACCOUNTS.1,
                )
                .and_then(|m| usize::try_from(m).ok()),
        };
        let accounts_dir = match top.get("accounts_dir") {
            None => Some(None),
            Some(n) => self.path(n, "accounts_dir").map(|dir| {
                self.accounts_dir = Some((dir.clone(), self.key_at(n, "accounts_dir")));
                Some(dir)
            }),
        };
        // Accounts may all come from accounts_dir, or (PostgreSQL) the accounts table.
        let elsewhere = top.has("accounts_dir") || matches!(state, Some(StateBackend::Postgres(_)));
        let accounts = match top.get("accounts") {
            None if elsewhere => Some(Vec::new()),
            Some(n) if elsewhere && matches!(&n.kind, Kind::Seq(items) if items.is_empty()) => {
                Some(Vec::new())
            }
            _ => self.require(top, "accounts").and_then(|n| self.accounts(n)),
        };
        // The relay's refresh token is kept beside the accounts'.
        let mut relay = relay;
        if let (Some(relay), Some(dir)) = (&mut relay, &state_dir)
            && let Some(auth) = &mut relay.auth
        {
            auth.state_dir = dir.clone();
        }
        Some(Config {
            state_dir: state_dir?,
            state: state?,
            metrics: metrics?,
            relay: relay?,
            domains: domains?,
            postmaster: postmaster?,
            envelope_headers: envelope_headers?,
            max_message_size: max_message_size?,
            memory_budget: memory_budget?,
            source_routed: source_routed?,
            dedup_window: dedup?.then_some(dedup_window?),
            rewrite: rewrite?,
            directory: directory?,
            max_hops: max_hops?,
            watch_config: watch_config?,
            max_concurrent_accounts: max_concurrent_accounts?,
            accounts_dir: accounts_dir?,
            accounts: accounts?,
        })
    }

    /// `state:`: `{postgres: {url | url_file | url_env, lease_ttl}}`, or `{sqlite: {}}` (the
    /// default, said explicitly).
    fn state(&mut self, s: &Section<'_>) -> Option<StateBackend> {
        match (s.get("postgres"), s.get("sqlite")) {
            (Some(n), None) => self.section(n, "state.postgres", Self::postgres),
            // Nothing to set: SQLite lives in state_dir.
            (None, Some(n)) => self
                .section(n, "state.sqlite", |_, _| Some(()))
                .map(|()| StateBackend::Sqlite),
            (Some(_), Some(_)) => {
                self.err(s.node, "state: give one backend, `postgres` or `sqlite`");
                None
            }
            (None, None) => {
                self.err(
                    s.node,
                    "state: name a backend: `postgres: {url: ...}` or `sqlite: {}`",
                );
                None
            }
        }
    }

    fn postgres(&mut self, s: &Section<'_>) -> Option<StateBackend> {
        let url = self.secret(s, ["url", "url_file", "url_env"], SecretOf::StateUrl);
        let lease_ttl = match s.get("lease_ttl") {
            None => Some(crate::config::DEFAULT_LEASE_TTL),
            Some(n) => self.duration(n, "state.postgres.lease_ttl", LEASE_TTL),
        };
        let url = match url? {
            Some(url) => url,
            None => {
                self.err(
                    s.node,
                    "state.postgres: missing the database: set one of url, url_file, url_env",
                );
                return None;
            }
        };
        Some(StateBackend::Postgres(PostgresConfig {
            url,
            lease_ttl: lease_ttl?,
        }))
    }

    fn metrics(&mut self, s: &Section<'_>) -> Option<MetricsConfig> {
        let Some(n) = s.get("listen") else {
            return Some(MetricsConfig { listen: None });
        };
        let text = self.string(n, "metrics.listen")?;
        match text.parse::<SocketAddr>() {
            Ok(addr) if addr.port() != 0 => Some(MetricsConfig { listen: Some(addr) }),
            _ => {
                self.err(
                    n,
                    format!(
                        "metrics.listen: `{text}` is not an ip:port such as 127.0.0.1:9425 or [::1]:9425"
                    ),
                );
                None
            }
        }
    }

    fn relay(&mut self, s: &Section<'_>) -> Option<RelayConfig> {
        let host = self
            .require(s, "host")
            .and_then(|n| self.host(n, "relay.host"));
        // Asked for before `tls` (its default depends on it): the allowed keys are listed in
        // the order they are asked for.
        let port = s.get("port");
        let tls = match s.get("tls") {
            None => Some(TlsMode::StarttlsIfAvailable),
            Some(n) => self.choice(n, "relay.tls", TLS_MODES),
        };
        let port = match port {
            None => tls.map(|t| if t == TlsMode::Tls { 465 } else { 25 }),
            Some(n) => self.port(n, "relay.port"),
        };
        let helo = match s.get("helo") {
            None => Some(None),
            Some(n) => self.helo(n).map(Some),
        };
        let connections = match s.get("connections") {
            None => Some(4),
            Some(n) => self
                .integer(n, "relay.connections", CONNECTIONS.0, CONNECTIONS.1)
                .and_then(|c| u32::try_from(c).ok()),
        };
        let tls_options = self.tls_options(s, tls);
        let timeout = match s.get("timeout") {
            None => Some(Duration::from_secs(60)),
            Some(n) => self.duration(n, "relay.timeout", TIMEOUT),
        };
        let data_timeout = match s.get("data_timeout") {
            // RFC 5321 4.5.3.2.6: at least 10 minutes for the reply to the final dot.
            None => Some(Duration::from_secs(600)),
            Some(n) => self.duration(n, "relay.data_timeout", TIMEOUT),
        };
        let retry = match s.get("retry") {
            None => Some(RetryPolicy::default()),
            Some(n) => self.section(n, "relay.retry", Self::retry),
        };
        let auth = self.relay_auth(s);
        Some(RelayConfig {
            host: host?,
            port: port?,
            tls: tls?,
            helo: helo?,
            connections: connections?,
            tls_options: tls_options?,
            timeout: timeout?,
            data_timeout: data_timeout?,
            retry: retry?,
            auth: auth?,
        })
    }

    /// `relay.username` with exactly one of `relay.password`, `password_file`,
    /// `password_env` (the rules of an account's password) or `relay.oauth` (an account's
    /// `oauth:` block), and optionally `auth_mechanisms` or `spa` (as an account's); neither:
    /// no AUTH. `state_dir` is filled in by [`Checker::config`].
    fn relay_auth(&mut self, s: &Section<'_>) -> Option<Option<RelayAuth>> {
        let Some(node) = s.get("username") else {
            // Every login key asked for (each is allowed here), the first given reported.
            let given: Vec<(&str, &Node)> = PASSWORD_KEYS
                .iter()
                .chain(&["oauth", "auth_mechanisms", "spa"])
                .filter_map(|k| Some((*k, s.get(k)?)))
                .collect();
            if let Some(&(key, n)) = given.first() {
                self.err(
                    n,
                    format!("relay.{key} is set but relay.username is not: set both for SMTP AUTH, or neither"),
                );
                return None;
            }
            return Some(None);
        };
        let username = self.text(node, "relay.username");
        let (password, oauth) = match s.get("oauth") {
            None => (self.password(s, SecretOf::Relay), Some(None)),
            Some(n) => {
                let oauth = self.oauth(n, "relay.oauth", SecretOf::RelayOAuthClient);
                (self.relay_no_password(s), oauth.map(Some))
            }
        };
        let mechanisms = self.login_methods(s, login::LoginFor::Relay, s.has("oauth"));
        Some(Some(RelayAuth {
            username: username?,
            password: password?,
            mechanisms: mechanisms?,
            oauth: oauth?,
            state_dir: PathBuf::new(),
        }))
    }

    /// With `relay.oauth` the relay logs in with a token: `relay.password*` are refused.
    fn relay_no_password(&mut self, s: &Section<'_>) -> Option<Password> {
        let mut ok = true;
        for (key, node) in PASSWORD_KEYS.iter().filter_map(|k| Some((k, s.entry(k)?))) {
            self.err(
                node,
                format!(
                    "relay.{key}: with relay.oauth the relay logs in with an OAuth2 token, not a password; remove relay.{key}"
                ),
            );
            ok = false;
        }
        ok.then(|| Password::new(""))
    }

    /// `relay.retry`: each key optional; `max` may not be below `initial`.
    fn retry(&mut self, s: &Section<'_>) -> Option<RetryPolicy> {
        let default = RetryPolicy::default();
        let max_attempts = match s.get("max_attempts") {
            None => Some(default.max_attempts),
            Some(n) => self
                .integer(n, "relay.retry.max_attempts", 1, 1_000)
                .and_then(|m| u32::try_from(m).ok()),
        };
        let initial = match s.get("initial") {
            None => Some(default.initial),
            Some(n) => self.duration(n, "relay.retry.initial", RETRY_DELAY),
        };
        let max = match s.get("max") {
            None => Some(default.max.max(initial.unwrap_or_default())),
            Some(n) => self.duration(n, "relay.retry.max", RETRY_DELAY),
        };
        if let (Some(i), Some(m), Some(n)) = (initial, max, s.get("max"))
            && m < i
        {
            self.err(n, "relay.retry.max is shorter than relay.retry.initial");
            return None;
        }
        Some(RetryPolicy {
            max_attempts: max_attempts?,
            initial: initial?,
            max: max?,
        })
    }

    /// The EHLO name: a domain or an address literal, nothing that breaks the command line.
    fn helo(&mut self, node: &Node) -> Option<String> {
        let s = self.text(node, "relay.helo")?;
        if s.chars().any(|c| c.is_whitespace() || c.is_control()) {
            self.err(node, format!("relay.helo: `{s}` contains white space"));
            return None;
        }
        Some(s)
    }

    fn domains(&mut self, node: &Node) -> Option<Vec<DomainPattern>> {
        let items = self.list(node, "domains")?;
        if items.is_empty() {
            self.err(node, "domains is empty: list at least one accepted domain");
            return None;
        }
        let mut domains = Vec::new();
        let mut ok = true;
        for item in items {
            let Some(s) = self.string(item, "domains") else {
                ok = false;
                continue;
            };
            match DomainPattern::parse(&s) {
                Ok(d) => domains.push(d),
                Err(e) => {
                    self.err(item, format!("domains: {e}"));
                    ok = false;
                }
            }
        }
        ok.then_some(domains)
    }
}
