//! Parsing and validation of the YAML text into a [`Config`].
//!
//! The text is read into a position-keeping node tree (`yaml.rs`), then walked by hand: each
//! problem becomes a [`ConfigError`] with its line and column and the walk goes on, so one run
//! of `check-config` names every mistake. Nothing here ever puts a password into a message.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::{
    AccountConfig, AfterFetch, AuthMethod, Config, ConfigError, ConfigErrors,
    DEFAULT_ENVELOPE_HEADERS, FetchOrder, Initial, MetricsConfig, Mode, Password, Protocol,
    RelayConfig, Retention, RetryPolicy, SourceRouted, TlsMode,
};
use crate::address::{Address, DomainPattern, normalize_domain};

mod tls;
mod yaml;

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tls_tests;

use yaml::{Kind, Node};

const TOP_KEYS: &[&str] = &[
    "state_dir",
    "metrics",
    "relay",
    "domains",
    "postmaster",
    "envelope_headers",
    "max_message_size",
    "source_routed",
    "dedup",
    "dedup_window",
    "accounts",
];
const METRICS_KEYS: &[&str] = &["listen"];
/// With [`tls::TLS_KEYS`].
const RELAY_KEYS: &[&str] = &[
    "host",
    "port",
    "tls",
    "helo",
    "connections",
    "timeout",
    "data_timeout",
    "retry",
];
const RETRY_KEYS: &[&str] = &["max_attempts", "initial", "max"];
/// With [`tls::TLS_KEYS`].
const ACCOUNT_KEYS: &[&str] = &[
    "name",
    "protocol",
    "host",
    "port",
    "tls",
    "username",
    "password",
    "password_file",
    "password_env",
    "mode",
    "deliver_to",
    "folder",
    "poll_interval",
    "max_per_pass",
    "retention",
    "timeout",
    "pass_deadline",
    "initial",
    "expunge_every",
    "fetch_order",
    "after_fetch",
    "unseen_only",
    "auth",
    "idle",
];
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
const PROTOCOLS: &[(&str, Protocol)] = &[("pop3", Protocol::Pop3), ("imap", Protocol::Imap)];

#[derive(Clone, Copy, PartialEq, Eq)]
enum ModeName {
    CatchAll,
    SingleUser,
}
const FETCH_ORDERS: &[(&str, FetchOrder)] = &[
    ("oldest", FetchOrder::Oldest),
    ("newest", FetchOrder::Newest),
];
const AUTH_METHODS: &[(&str, AuthMethod)] =
    &[("auto", AuthMethod::Auto), ("apop", AuthMethod::Apop)];
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
/// `max_message_size` bounds, in bytes: 1 KiB ..= 1 GiB.
const MESSAGE_SIZE: (u64, u64) = (1_024, 1 << 30);
const RETRY_DELAY: (u64, u64) = (0, 86_400);
/// `dedup_window` bounds: 1 hour ..= 365 days.
const DEDUP_WINDOW: (u64, u64) = (3_600, 365 * 86_400);

/// Parses and validates configuration text; `file` names it in errors, and relative paths in it
/// (`state_dir`, `ca_file`, `password_file`) are resolved against `file`'s directory.
///
/// On failure every problem found is returned, sorted by line.
pub fn from_yaml_str(text: &str, file: &str) -> Result<Config, ConfigErrors> {
    let doc = yaml::parse(text);
    let mut c = Checker {
        file,
        dir: Path::new(file)
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_default(),
        errors: Vec::new(),
        cut: doc.cut,
    };
    for e in &doc.errors {
        c.push(e.line, e.column, e.message.clone());
    }
    let config = match &doc.root {
        Some(root) => c.config(root),
        None if doc.errors.is_empty() => {
            c.push(1, 1, "the file is empty: state_dir, relay, domains, postmaster and accounts are required");
            None
        }
        None => None,
    };
    match config {
        Some(config) if c.errors.is_empty() => Ok(config),
        _ => {
            if c.errors.is_empty() {
                // Every `None` above comes with an error; this only guards that promise.
                c.push(1, 1, "the configuration is incomplete");
            }
            c.errors.sort_by_key(|e| (e.line, e.column));
            Err(ConfigErrors(c.errors))
        }
    }
}

/// The state of one walk over the tree: where relative paths start and what went wrong.
struct Checker<'a> {
    file: &'a str,
    dir: PathBuf,
    errors: Vec<ConfigError>,
    /// The line of the syntax error that cut the tree short: "missing" errors, and errors
    /// about nodes reaching that line, would be noise.
    cut: Option<usize>,
}

/// The entries of one mapping, already checked for unknown and duplicate keys.
struct Section<'n> {
    node: &'n Node,
    /// The key path in messages: `relay`, `accounts[example-catchall]`, or empty at the top.
    path: String,
    entries: Vec<(&'static str, &'n Node)>,
}

impl<'n> Section<'n> {
    /// The value of `key`; `None` when it is absent or written as null.
    fn get(&self, key: &str) -> Option<&'n Node> {
        self.entries
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, v)| *v)
            .filter(|v| !v.is_null())
    }

    /// Whether `key` was written at all, even without a value.
    fn has(&self, key: &str) -> bool {
        self.entries.iter().any(|(k, _)| *k == key)
    }

    /// `relay.port`-style name of `key` for messages.
    fn name(&self, key: &str) -> String {
        if self.path.is_empty() {
            key.to_string()
        } else {
            format!("{}.{key}", self.path)
        }
    }
}

fn scalar(node: &Node) -> Option<&str> {
    match &node.kind {
        Kind::Scalar { text, .. } if !node.is_null() => Some(text),
        _ => None,
    }
}

impl Checker<'_> {
    fn push(&mut self, line: usize, column: usize, message: impl Into<String>) {
        self.errors.push(ConfigError {
            file: self.file.to_string(),
            line,
            column,
            message: message.into(),
        });
    }

    fn err(&mut self, node: &Node, message: impl Into<String>) {
        // A node that reaches the syntax error may have been cut short by it.
        if self.cut.is_some_and(|cut| node.end_line >= cut) {
            return;
        }
        self.push(node.line, node.column, message);
    }

    /// Checks that `node` is a mapping whose keys are all in `allowed`, each once.
    fn section<'n>(
        &mut self,
        node: &'n Node,
        path: &str,
        allowed: &[&'static str],
    ) -> Option<Section<'n>> {
        let what = if path.is_empty() {
            "the configuration"
        } else {
            path
        };
        let Kind::Map(entries) = &node.kind else {
            self.err(
                node,
                format!("{what}: expected a mapping, found {}", node.describe()),
            );
            return None;
        };
        let mut section = Section {
            node,
            path: path.to_string(),
            entries: Vec::new(),
        };
        let mut first_lines: Vec<(&str, usize)> = Vec::new();
        for (key, value) in entries {
            let Some(text) = scalar(key) else {
                self.err(
                    key,
                    format!("{what}: keys must be names, found {}", key.describe()),
                );
                continue;
            };
            let Some(&known) = allowed.iter().find(|a| **a == text) else {
                let place = if path.is_empty() {
                    String::new()
                } else {
                    format!(" in {path}")
                };
                self.err(
                    key,
                    format!(
                        "unknown key `{text}`{place}; allowed keys: {}",
                        allowed.join(", ")
                    ),
                );
                continue;
            };
            if let Some((_, line)) = first_lines.iter().find(|(k, _)| *k == known) {
                self.err(
                    key,
                    format!(
                        "duplicate key `{}` (first given at line {line})",
                        section.name(known)
                    ),
                );
                continue;
            }
            first_lines.push((known, key.line));
            section.entries.push((known, value));
        }
        Some(section)
    }

    /// The value of a required key; reports it when absent or empty.
    fn require<'n>(&mut self, s: &Section<'n>, key: &str) -> Option<&'n Node> {
        let value = s.get(key);
        if value.is_none() {
            let entry = s.entries.iter().find(|(k, _)| *k == key);
            match entry {
                Some((_, v)) => self.err(v, format!("{} has no value", s.name(key))),
                None if self.cut.is_none() => {
                    let what = if s.path.is_empty() {
                        String::new()
                    } else {
                        format!(" in {}", s.path)
                    };
                    self.err(s.node, format!("missing required key `{key}`{what}"));
                }
                None => {}
            }
        }
        value
    }

    /// A string value (any scalar but null).
    fn string(&mut self, node: &Node, name: &str) -> Option<String> {
        match scalar(node) {
            Some(text) => Some(text.to_string()),
            None => {
                self.err(
                    node,
                    format!("{name}: expected a string, found {}", node.describe()),
                );
                None
            }
        }
    }

    /// `after_fetch: move:<folder>`: imap only, and only where retention lets mail go;
    /// `after_fetch: seen`: imap only, and only where retention keeps mail for a while.
    fn after_fetch(
        &mut self,
        node: &Node,
        name: &str,
        protocol: Option<Protocol>,
        retention: Option<Retention>,
    ) -> Option<AfterFetch> {
        let value = self.text(node, name)?;
        let problem = match value.strip_prefix("move:").map(str::trim) {
            _ if protocol == Some(Protocol::Pop3) => {
                "only imap accounts have folders to move mail to and flags to set".to_owned()
            }
            None if value == "seen" && retention == Some(Retention::Delete) => {
                "seen flags the messages that retention keeps upstream; with retention: delete \
                 none is kept (use keep or <N>d)"
                    .to_owned()
            }
            None if value == "seen" => return Some(AfterFetch::Seen),
            _ if retention == Some(Retention::Keep) => "the move happens when retention lets a \
                message go; with retention: keep it never does (use delete or <N>d)"
                .to_owned(),
            Some(folder) if !folder.is_empty() => return Some(AfterFetch::Move(folder.to_owned())),
            _ => format!("`{value}` is not allowed; allowed: move:<folder>, seen"),
        };
        self.err(node, format!("{name}: {problem}"));
        None
    }

    /// A string that may not be empty and may not hold a line break or NUL (it goes on the
    /// wire in a protocol command).
    fn text(&mut self, node: &Node, name: &str) -> Option<String> {
        let s = self.string(node, name)?;
        if s.is_empty() {
            self.err(node, format!("{name} is empty"));
            return None;
        }
        if s.contains(['\r', '\n', '\0']) {
            self.err(node, format!("{name} contains a line break or NUL"));
            return None;
        }
        Some(s)
    }

    fn path(&mut self, node: &Node, name: &str) -> Option<PathBuf> {
        let s = self.text(node, name)?;
        Some(self.dir.join(s))
    }

    /// A host name or IP address; host names are kept in lower-case ASCII (IDN in punycode).
    fn host(&mut self, node: &Node, name: &str) -> Option<String> {
        let s = self.text(node, name)?;
        if s.parse::<IpAddr>().is_ok() {
            return Some(s);
        }
        match normalize_domain(&s) {
            Ok(host) => Some(host),
            Err(_) => {
                self.err(
                    node,
                    format!("{name}: `{s}` is not a host name or IP address"),
                );
                None
            }
        }
    }

    /// A whole number written without quotes, checked against `min..=max`.
    fn integer(&mut self, node: &Node, name: &str, min: u64, max: u64) -> Option<u64> {
        let text = match &node.kind {
            Kind::Scalar { text, plain: true } if !node.is_null() => text,
            _ => {
                self.err(
                    node,
                    format!("{name}: expected a whole number, found {}", node.describe()),
                );
                return None;
            }
        };
        let Ok(n) = text.parse::<i128>() else {
            self.err(
                node,
                format!("{name}: expected a whole number, found `{text}`"),
            );
            return None;
        };
        if n < i128::from(min) || n > i128::from(max) {
            self.err(node, format!("{name}: {n} is outside {min}..={max}"));
            return None;
        }
        u64::try_from(n).ok()
    }

    fn port(&mut self, node: &Node, name: &str) -> Option<u16> {
        let n = self.integer(node, name, 1, 65_535)?;
        u16::try_from(n).ok()
    }

    /// One of a fixed set of words.
    fn choice<T: Copy>(&mut self, node: &Node, name: &str, allowed: &[(&str, T)]) -> Option<T> {
        let s = self.string(node, name)?;
        match allowed.iter().find(|(word, _)| *word == s) {
            Some((_, value)) => Some(*value),
            None => {
                let words: Vec<&str> = allowed.iter().map(|(w, _)| *w).collect();
                self.err(
                    node,
                    format!(
                        "{name}: `{s}` is not allowed; allowed values: {}",
                        words.join(" | ")
                    ),
                );
                None
            }
        }
    }

    /// A duration checked against `min..=max` seconds.
    fn duration(&mut self, node: &Node, name: &str, (min, max): (u64, u64)) -> Option<Duration> {
        let s = self.string(node, name)?;
        let d = match parse_duration(&s) {
            Ok(d) => d,
            Err(why) => {
                self.err(node, format!("{name}: {why}"));
                return None;
            }
        };
        if d.as_secs() < min || d.as_secs() > max {
            self.err(node, format!("{name}: {s} is outside {min}s..={max}s"));
            return None;
        }
        Some(d)
    }

    /// A size in bytes (`50MB`, `10MiB`, `500KB`, `1048576`) checked against `min..=max`.
    fn size(&mut self, node: &Node, name: &str, (min, max): (u64, u64)) -> Option<u64> {
        let s = self.string(node, name)?;
        let n = match parse_size(&s) {
            Ok(n) => n,
            Err(why) => {
                self.err(node, format!("{name}: {why}"));
                return None;
            }
        };
        if n < min || n > max {
            self.err(
                node,
                format!("{name}: {s} is outside {min}..={max} bytes (1KiB..=1GiB)"),
            );
            return None;
        }
        Some(n)
    }

    fn address(&mut self, node: &Node, name: &str) -> Option<Address> {
        let s = self.string(node, name)?;
        match Address::parse(&s) {
            Ok(a) => Some(a),
            Err(e) => {
                self.err(node, format!("{name}: `{s}` is not a usable address: {e}"));
                None
            }
        }
    }

    fn list<'n>(&mut self, node: &'n Node, name: &str) -> Option<&'n [Node]> {
        match &node.kind {
            Kind::Seq(items) => Some(items),
            _ => {
                self.err(
                    node,
                    format!("{name}: expected a list, found {}", node.describe()),
                );
                None
            }
        }
    }

    fn config(&mut self, root: &Node) -> Option<Config> {
        let top = self.section(root, "", TOP_KEYS)?;
        let state_dir = self
            .require(&top, "state_dir")
            .and_then(|n| self.path(n, "state_dir"));
        let metrics = match top.get("metrics") {
            None => Some(MetricsConfig { listen: None }),
            Some(n) => self.metrics(n),
        };
        let relay = self.require(&top, "relay").and_then(|n| self.relay(n));
        let domains = self.require(&top, "domains").and_then(|n| self.domains(n));
        let postmaster = self
            .require(&top, "postmaster")
            .and_then(|n| self.address(n, "postmaster"));
        let envelope_headers = match top.get("envelope_headers") {
            None => Some(DEFAULT_ENVELOPE_HEADERS.map(String::from).to_vec()),
            Some(n) => self.envelope_headers(n),
        };
        let max_message_size = match top.get("max_message_size") {
            None => Some(crate::config::DEFAULT_MAX_MESSAGE_SIZE),
            Some(n) => self.size(n, "max_message_size", MESSAGE_SIZE),
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
        let accounts = self
            .require(&top, "accounts")
            .and_then(|n| self.accounts(n));
        Some(Config {
            state_dir: state_dir?,
            metrics: metrics?,
            relay: relay?,
            domains: domains?,
            postmaster: postmaster?,
            envelope_headers: envelope_headers?,
            max_message_size: max_message_size?,
            source_routed: source_routed?,
            dedup_window: dedup?.then_some(dedup_window?),
            accounts: accounts?,
        })
    }

    fn metrics(&mut self, node: &Node) -> Option<MetricsConfig> {
        let s = self.section(node, "metrics", METRICS_KEYS)?;
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

    fn relay(&mut self, node: &Node) -> Option<RelayConfig> {
        let s = self.section(node, "relay", &[RELAY_KEYS, &tls::TLS_KEYS].concat())?;
        let host = self
            .require(&s, "host")
            .and_then(|n| self.host(n, "relay.host"));
        let tls = match s.get("tls") {
            None => Some(TlsMode::StarttlsIfAvailable),
            Some(n) => self.choice(n, "relay.tls", TLS_MODES),
        };
        let port = match s.get("port") {
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
        let tls_options = self.tls_options(&s, tls);
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
            Some(n) => self.retry(n),
        };
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
        })
    }

    /// `relay.retry`: each key optional; `max` may not be below `initial`.
    fn retry(&mut self, node: &Node) -> Option<RetryPolicy> {
        let s = self.section(node, "relay.retry", RETRY_KEYS)?;
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

    fn envelope_headers(&mut self, node: &Node) -> Option<Vec<String>> {
        let items = self.list(node, "envelope_headers")?;
        let mut headers = Vec::new();
        let mut ok = true;
        for item in items {
            let Some(s) = self.string(item, "envelope_headers") else {
                ok = false;
                continue;
            };
            // RFC 5322 field-name: printable ASCII except ':'.
            if s.is_empty() || !s.bytes().all(|b| (33..=126).contains(&b) && b != b':') {
                self.err(
                    item,
                    format!("envelope_headers: `{s}` is not a header name"),
                );
                ok = false;
            } else {
                headers.push(s);
            }
        }
        ok.then_some(headers)
    }

    fn accounts(&mut self, node: &Node) -> Option<Vec<AccountConfig>> {
        let items = self.list(node, "accounts")?;
        if items.is_empty() {
            self.err(node, "accounts is empty: list at least one mailbox");
            return None;
        }
        let mut accounts = Vec::new();
        let mut ok = true;
        let mut names: Vec<(String, usize)> = Vec::new();
        for (i, item) in items.iter().enumerate() {
            match self.account(item, i, &mut names) {
                Some(a) => {
                    // Two accounts on one mailbox would deliver it twice (and share its state).
                    let twin = accounts
                        .iter()
                        .find(|other: &&AccountConfig| other.mailbox_id() == a.mailbox_id());
                    if let Some(twin) = twin {
                        self.err(
                            item,
                            format!(
                                "accounts {} and {} collect the same mailbox ({}): each mailbox once",
                                twin.name,
                                a.name,
                                a.mailbox_id()
                            ),
                        );
                        ok = false;
                    }
                    accounts.push(a);
                }
                None => ok = false,
            }
        }
        ok.then_some(accounts)
    }

    fn account(
        &mut self,
        node: &Node,
        index: usize,
        names: &mut Vec<(String, usize)>,
    ) -> Option<AccountConfig> {
        // The label in messages: the name when it is usable, else the position.
        let label = match &node.kind {
            Kind::Map(entries) => entries
                .iter()
                .find(|(k, _)| scalar(k) == Some("name"))
                .and_then(|(_, v)| scalar(v))
                .filter(|n| valid_account_name(n))
                .map(str::to_string),
            _ => None,
        };
        let path = format!(
            "accounts[{}]",
            label.unwrap_or_else(|| format!("#{}", index + 1))
        );
        let s = self.section(node, &path, &[ACCOUNT_KEYS, &tls::TLS_KEYS].concat())?;
        let name = self.require(&s, "name").and_then(|n| {
            let name = self.string(n, &s.name("name"))?;
            if !valid_account_name(&name) {
                self.err(
                    n,
                    format!(
                        "account name `{name}` is not allowed: use 1 to 128 of A-Z a-z 0-9 . _ -"
                    ),
                );
                return None;
            }
            if let Some((_, line)) = names.iter().find(|(other, _)| *other == name) {
                self.err(
                    n,
                    format!("duplicate account name `{name}` (also used at line {line})"),
                );
                return None;
            }
            names.push((name.clone(), n.line));
            Some(name)
        });
        let protocol = self
            .require(&s, "protocol")
            .and_then(|n| self.choice(n, &s.name("protocol"), PROTOCOLS));
        let host = self
            .require(&s, "host")
            .and_then(|n| self.host(n, &s.name("host")));
        let tls = match s.get("tls") {
            None => Some(TlsMode::Tls),
            Some(n) => self.choice(n, &s.name("tls"), TLS_MODES),
        };
        let port = match s.get("port") {
            None => match (protocol, tls) {
                (Some(p), Some(t)) => Some(default_port(p, t)),
                _ => None,
            },
            Some(n) => self.port(n, &s.name("port")),
        };
        let tls_options = self.tls_options(&s, tls);
        let username = self
            .require(&s, "username")
            .and_then(|n| self.text(n, &s.name("username")));
        let password = self.password(&s);
        let mode = self.mode(&s);
        let folder = match s.get("folder") {
            Some(n) if protocol == Some(Protocol::Pop3) => {
                self.err(
                    n,
                    format!(
                        "{}: only imap accounts have folders (a pop3 mailbox has one)",
                        s.name("folder")
                    ),
                );
                None
            }
            Some(n) => self.text(n, &s.name("folder")),
            None => Some("INBOX".to_string()),
        };
        let poll_interval = match s.get("poll_interval") {
            None => Some(Duration::from_secs(60)),
            Some(n) => self.duration(n, &s.name("poll_interval"), POLL_INTERVAL),
        };
        let max_per_pass = match s.get("max_per_pass") {
            None => Some(200),
            Some(n) => self
                .integer(n, &s.name("max_per_pass"), 1, u64::from(u32::MAX))
                .and_then(|m| u32::try_from(m).ok()),
        };
        let retention = match s.get("retention") {
            None => Some(Retention::Delete),
            Some(n) => self.retention(n, &s.name("retention")),
        };
        let timeout = match s.get("timeout") {
            None => Some(Duration::from_secs(180)),
            Some(n) => self.duration(n, &s.name("timeout"), TIMEOUT),
        };
        let pass_deadline = match s.get("pass_deadline") {
            None => Some(Duration::from_secs(30 * 60)),
            Some(n) => self.duration(n, &s.name("pass_deadline"), PASS_DEADLINE),
        };
        let initial = match s.get("initial") {
            None => Some(None),
            Some(n) => self.choice(n, &s.name("initial"), INITIAL).map(Some),
        };
        let expunge_every = match s.get("expunge_every") {
            None => Some(50),
            Some(n) => self
                .integer(n, &s.name("expunge_every"), 1, u64::from(u32::MAX))
                .and_then(|m| u32::try_from(m).ok()),
        };
        let fetch_order = match s.get("fetch_order") {
            None => Some(FetchOrder::Oldest),
            Some(n) => self.choice(n, &s.name("fetch_order"), FETCH_ORDERS),
        };
        let after_fetch = match s.get("after_fetch") {
            None => Some(AfterFetch::Delete),
            Some(n) => self.after_fetch(n, &s.name("after_fetch"), protocol, retention),
        };
        let unseen_only = match s.get("unseen_only") {
            None => Some(false),
            Some(n) if protocol == Some(Protocol::Pop3) => {
                self.err(
                    n,
                    format!(
                        "{}: only imap accounts have a \\Seen flag to go by (pop3 has none)",
                        s.name("unseen_only")
                    ),
                );
                None
            }
            Some(n) => self.boolean(n, &s.name("unseen_only")),
        };
        let auth = match s.get("auth") {
            None => Some(AuthMethod::Auto),
            Some(n) => match self.choice(n, &s.name("auth"), AUTH_METHODS) {
                Some(AuthMethod::Apop) if protocol == Some(Protocol::Imap) => {
                    let name = s.name("auth");
                    self.err(n, format!("{name}: APOP is a POP3 command; imap logs in with AUTHENTICATE PLAIN or LOGIN (auto)"));
                    None
                }
                other => other,
            },
        };
        let idle = match s.get("idle") {
            None => Some(false),
            Some(n) if protocol == Some(Protocol::Pop3) => {
                let name = s.name("idle");
                self.err(
                    n,
                    format!(
                        "{name}: IDLE is an IMAP command; a pop3 account polls every poll_interval"
                    ),
                );
                None
            }
            Some(n) => self.boolean(n, &s.name("idle")),
        };
        if let (Some(n), Some(Initial::SkipExisting), Some(Retention::Delete)) =
            (s.get("initial"), initial.flatten(), retention)
        {
            self.err(
                n,
                format!(
                    "{}: skip_existing with retention: delete would delete the mail already upstream without delivering it; use deliver_all, or keep / <N>d",
                    s.name("initial")
                ),
            );
            return None;
        }
        Some(AccountConfig {
            name: name?,
            protocol: protocol?,
            host: host?,
            port: port?,
            tls: tls?,
            tls_options: tls_options?,
            username: username?,
            password: password?,
            mode: mode?,
            folder: folder?,
            poll_interval: poll_interval?,
            max_per_pass: max_per_pass?,
            retention: retention?,
            timeout: timeout?,
            pass_deadline: pass_deadline?,
            initial: initial?,
            expunge_every: expunge_every?,
            fetch_order: fetch_order?,
            after_fetch: after_fetch?,
            unseen_only: unseen_only?,
            auth: auth?,
            idle: idle?,
        })
    }

    /// `mode` with its `deliver_to`: required for single-user, refused for catch-all.
    fn mode(&mut self, s: &Section<'_>) -> Option<Mode> {
        let mode = match s.get("mode") {
            None => Some(ModeName::CatchAll),
            Some(n) => self.choice(n, &s.name("mode"), MODES),
        };
        let name = s.name("deliver_to");
        match (mode, s.get("deliver_to")) {
            (Some(ModeName::CatchAll), Some(n)) => {
                self.err(
                    n,
                    format!("{name} is only for mode: single-user (a catch-all account routes by the headers)"),
                );
                None
            }
            (Some(ModeName::CatchAll), None) => Some(Mode::CatchAll),
            (Some(ModeName::SingleUser), None) => {
                if s.has("deliver_to") {
                    self.require(s, "deliver_to");
                } else if self.cut.is_none() {
                    self.err(
                        s.node,
                        format!("{}: mode single-user needs deliver_to", s.path),
                    );
                }
                None
            }
            (Some(ModeName::SingleUser), Some(n)) => self
                .address(n, &name)
                .map(|deliver_to| Mode::SingleUser { deliver_to }),
            (None, Some(n)) => {
                self.address(n, &name);
                None
            }
            (None, None) => None,
        }
    }

    /// Exactly one of `password`, `password_file`, `password_env`, resolved. No message here
    /// may contain the secret.
    fn password(&mut self, s: &Section<'_>) -> Option<Password> {
        let given: Vec<(&str, &Node)> = s
            .entries
            .iter()
            .filter(|(k, _)| PASSWORD_KEYS.contains(k))
            .map(|(k, v)| (*k, *v))
            .collect();
        let (key, node) = match given.as_slice() {
            [] => {
                if self.cut.is_none() {
                    self.err(
                        s.node,
                        format!(
                            "{}: missing a password: set one of password, password_file, password_env",
                            s.path
                        ),
                    );
                }
                return None;
            }
            [one] => *one,
            [first, rest @ ..] => {
                for (k, n) in rest {
                    self.err(
                        n,
                        format!(
                            "{}: `{k}` conflicts with `{}` (line {}): use only one of password, password_file, password_env",
                            s.path, first.0, first.1.line
                        ),
                    );
                }
                return None;
            }
        };
        let name = s.name(key);
        let secret = match key {
            "password" => match scalar(node) {
                Some(p) => p.to_string(),
                None => {
                    self.err(
                        node,
                        format!("{name}: expected a string, found {}", node.describe()),
                    );
                    return None;
                }
            },
            "password_file" => {
                let path = self.path(node, &name)?;
                match std::fs::read_to_string(&path) {
                    Ok(mut p) => {
                        if p.ends_with('\n') {
                            p.pop();
                            if p.ends_with('\r') {
                                p.pop();
                            }
                        }
                        p
                    }
                    Err(e) => {
                        self.err(node, format!("{name}: cannot read {}: {e}", path.display()));
                        return None;
                    }
                }
            }
            _ => {
                let var = self.text(node, &name)?;
                match std::env::var(&var) {
                    Ok(p) => p,
                    Err(std::env::VarError::NotPresent) => {
                        self.err(
                            node,
                            format!("{name}: environment variable {var} is not set"),
                        );
                        return None;
                    }
                    Err(std::env::VarError::NotUnicode(_)) => {
                        self.err(
                            node,
                            format!("{name}: environment variable {var} is not valid UTF-8"),
                        );
                        return None;
                    }
                }
            }
        };
        if secret.is_empty() {
            self.err(node, format!("{name}: the password is empty"));
            return None;
        }
        if secret.contains(['\r', '\n', '\0']) {
            self.err(
                node,
                format!("{name}: the password contains a line break or NUL"),
            );
            return None;
        }
        Some(Password::new(secret))
    }

    fn retention(&mut self, node: &Node, name: &str) -> Option<Retention> {
        let s = self.string(node, name)?;
        match s.as_str() {
            "delete" => return Some(Retention::Delete),
            "keep" => return Some(Retention::Keep),
            _ => {}
        }
        let days = s
            .strip_suffix('d')
            .filter(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|n| n.parse::<u32>().ok());
        match days {
            Some(0) => {
                self.err(
                    node,
                    format!("{name}: 0d is not allowed; use `delete` to delete at once"),
                );
                None
            }
            Some(n) => Some(Retention::Days(n)),
            None => {
                self.err(
                    node,
                    format!(
                        "{name}: `{s}` is not allowed; allowed values: delete | keep | <N>d (days, e.g. 14d)"
                    ),
                );
                None
            }
        }
    }
}

fn default_port(protocol: Protocol, tls: TlsMode) -> u16 {
    match (protocol, tls == TlsMode::Tls) {
        (Protocol::Pop3, false) => 110,
        (Protocol::Pop3, true) => 995,
        (Protocol::Imap, false) => 143,
        (Protocol::Imap, true) => 993,
    }
}

fn valid_account_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 128
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

const DURATION_UNITS: &str = "s (seconds), m (minutes), h (hours), d (days), e.g. 30s, 5m, 1h, 14d";

/// `30s`, `5m`, `1h`, `14d`: a whole number and a unit.
const SIZE_UNITS: &str = "B, KB, MB, GB (powers of 1000), KiB, MiB, GiB (powers of 1024)";

/// `50MB`, `10MiB`, `500KB`, `1048576` (bytes) as a number of bytes; units are not
/// case-sensitive and may follow a space.
fn parse_size(s: &str) -> Result<u64, String> {
    let digits = s.bytes().take_while(u8::is_ascii_digit).count();
    let (number, unit) = s.split_at(digits);
    if number.is_empty() {
        return Err(format!(
            "`{s}` is not a size; write a whole number of bytes, or with a unit: {SIZE_UNITS}"
        ));
    }
    let scale: u64 = match unit.trim_start().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        "kib" => 1 << 10,
        "mib" => 1 << 20,
        "gib" => 1 << 30,
        _ => {
            return Err(format!(
                "`{s}` has an unknown unit `{}`; units: {SIZE_UNITS}",
                unit.trim_start()
            ));
        }
    };
    number
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(scale))
        .ok_or_else(|| format!("`{s}` is too large"))
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    let digits = s.bytes().take_while(u8::is_ascii_digit).count();
    let (number, unit) = s.split_at(digits);
    if number.is_empty() {
        return Err(format!(
            "`{s}` is not a duration; write a whole number and a unit: {DURATION_UNITS}"
        ));
    }
    let scale = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3_600,
        "d" => 86_400,
        "" => {
            return Err(format!("`{s}` has no unit; units: {DURATION_UNITS}"));
        }
        _ => {
            return Err(format!(
                "`{s}` has an unknown unit `{unit}`; units: {DURATION_UNITS}"
            ));
        }
    };
    number
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(scale))
        .map(Duration::from_secs)
        .ok_or_else(|| format!("`{s}` is too long"))
}
