//! `accounts:`: each mailbox to collect from, with its protocol, login, mode and retention.

use super::login::LoginFor;
use super::*;
use crate::fetch::kind::Facts;

/// The account's protocol is known and its kind has no use for a key: `has` is false.
fn lacks(protocol: Option<Protocol>, has: fn(&Facts) -> bool) -> bool {
    protocol.is_some_and(|p| !has(p.kind().facts()))
}

pub(super) fn valid_account_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 128
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

impl Checker<'_> {
    pub(super) fn accounts(&mut self, node: &Node) -> Option<Vec<AccountConfig>> {
        let items = self.list(node, "accounts")?;
        if items.is_empty() {
            self.err(node, "accounts is empty: list at least one mailbox");
            return None;
        }
        let mut accounts = Vec::new();
        let mut ok = true;
        let mut names: Vec<(String, usize)> = Vec::new();
        for (i, item) in items.iter().enumerate() {
            match self.account(item, i, format!("#{}", i + 1), &mut names) {
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
        self.names = names;
        ok.then_some(accounts)
    }

    /// One account: an item of `accounts:` (`index` in the list) or a file of
    /// `accounts_dir`; `fallback` labels it in messages when it has no usable name.
    pub(super) fn account(
        &mut self,
        node: &Node,
        index: usize,
        fallback: String,
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
        let path = format!("accounts[{}]", label.unwrap_or(fallback));
        self.section(node, &path, |c, s| c.account_keys(s, index, names))
    }

    /// The keys of one account (`index` in the list); `names` are the names of the accounts
    /// before it.
    fn account_keys(
        &mut self,
        s: &Section<'_>,
        index: usize,
        names: &mut Vec<(String, usize)>,
    ) -> Option<AccountConfig> {
        let name = self.require(s, "name").and_then(|n| {
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
        let protocols = Protocol::ALL.map(|p| (p.kind().facts().name, p));
        let protocol = self
            .require(s, "protocol")
            .and_then(|n| self.choice(n, &s.name("protocol"), &protocols));
        let host = self
            .require(s, "host")
            .and_then(|n| self.host(n, &s.name("host")));
        let tls = match s.get("tls") {
            None => Some(TlsMode::Tls),
            Some(n) => self.choice(n, &s.name("tls"), TLS_MODES),
        };
        let port = match s.get("port") {
            None => match (protocol, tls) {
                (Some(p), Some(t)) => Some(p.kind().facts().default_port(t)),
                _ => None,
            },
            Some(n) => self.port(n, &s.name("port")),
        };
        let tls_options = self.tls_options(s, tls);
        let username = self
            .require(s, "username")
            .and_then(|n| self.text(n, &s.name("username")));
        let oauth = match s.get("oauth") {
            None => Some(None),
            Some(n) => self
                .oauth(n, &s.name("oauth"), SecretOf::OAuthClient(index))
                .map(Some),
        };
        // An OAuth2 account has a token instead of a password.
        let password = if s.has("oauth") {
            self.no_password(s)
        } else {
            self.password(s, SecretOf::Account(index))
        };
        let mode = self.mode(s);
        let folder = match s.get("folder") {
            Some(n) if lacks(protocol, |k| k.folders) => {
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
            None => Some(1000),
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
            Some(n) if lacks(protocol, |k| k.seen_flag) => {
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
        let auth = self.login_methods(s, LoginFor::Account(protocol), s.has("oauth"));
        let idle = match s.get("idle") {
            None => Some(false),
            Some(n) if lacks(protocol, |k| k.idle) => {
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
        let proxy = match s.get("proxy") {
            None => Some(None),
            Some(n) => self.proxy(n, &s.name("proxy")).map(Some),
        };
        if let (Some(Some(o)), Some(Some(p)), Some(n)) = (&oauth, &proxy, s.get("proxy")) {
            self.plain_endpoint_through_proxy(n, &s.name("proxy"), o, p);
        }
        let auth_backoff_max = match s.get("auth_backoff_max") {
            None => Some(DEFAULT_AUTH_BACKOFF_MAX),
            Some(n) => self.duration(n, &s.name("auth_backoff_max"), AUTH_BACKOFF_MAX),
        };
        let backoff_max = match s.get("backoff_max") {
            None => Some(crate::config::DEFAULT_BACKOFF_MAX),
            Some(n) => self.duration(n, &s.name("backoff_max"), BACKOFF_MAX),
        };
        let routing = self.account_routing(s, index);
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
            routing: routing?,
            oauth: oauth?,
            proxy: proxy?,
            auth_backoff_max: auth_backoff_max?,
            backoff_max: backoff_max?,
        })
    }

    /// The account's own `envelope_headers`, `rewrite` and `directory` (catch-all only:
    /// a single-user account does not read the headers).
    fn account_routing(&mut self, s: &Section<'_>, index: usize) -> Option<AccountRouting> {
        let single_user = s
            .get("mode")
            .and_then(scalar)
            .is_some_and(|m| m == "single-user");
        let mut ok = true;
        for key in ["envelope_headers", "rewrite", "directory"] {
            if let (true, Some(n)) = (single_user, s.get(key)) {
                let name = s.name(key);
                self.err(
                    n,
                    format!("{name} is only for mode: catch-all (a single-user account delivers everything to deliver_to)"),
                );
                ok = false;
            }
        }
        let envelope_headers = match s.get("envelope_headers") {
            None => Some(None),
            Some(n) => self
                .envelope_headers(n, &s.name("envelope_headers"))
                .map(Some),
        };
        let rewrite = match s.get("rewrite") {
            None => Some(None),
            Some(n) => self.rewrite(n, &s.name("rewrite")).map(Some),
        };
        let directory = match s.get("directory") {
            None => Some(None),
            Some(n) => self.directory(n, &s.name("directory"), DirectoryOf::Account(index)),
        };
        if !ok {
            return None;
        }
        Some(AccountRouting {
            envelope_headers: envelope_headers?,
            rewrite: rewrite?,
            directory: directory?,
        })
    }

    /// `proxy`: a `socks5://` or `http://` URL (see [`crate::config::Proxy::parse`]); no
    /// message repeats its password.
    pub(super) fn proxy(&mut self, node: &Node, name: &str) -> Option<crate::config::Proxy> {
        let url = self.string(node, name)?;
        match crate::config::Proxy::parse(&url) {
            Ok(proxy) => Some(proxy),
            Err(why) => {
                self.err(node, format!("{name}: {why}"));
                None
            }
        }
    }

    /// `mode` with its `deliver_to`: required for single-user, refused for catch-all.
    pub(super) fn mode(&mut self, s: &Section<'_>) -> Option<Mode> {
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

    /// Exactly one of `password`, `password_file`, `password_env`: the secret `of` an account
    /// (or another section), as [`secret`](Checker::secret) reads it.
    pub(super) fn password(&mut self, s: &Section<'_>, of: SecretOf) -> Option<Password> {
        match self.secret(s, PASSWORD_KEYS, of)? {
            Some(password) => Some(password),
            None => {
                if self.cut.is_none() {
                    self.err(
                        s.node,
                        format!(
                            "{}: missing a password: set one of password, password_file, password_env",
                            s.path
                        ),
                    );
                }
                None
            }
        }
    }

    /// At most one of `keys` (`X`, `X_file`, `X_env`): `Some(None)` when none is given,
    /// `None` after an error. An inline secret is checked here; a file or variable is listed
    /// for the resolve step, and the secret left empty until then. No message here may
    /// contain the secret.
    pub(super) fn secret(
        &mut self,
        s: &Section<'_>,
        keys: [&'static str; 3],
        of: SecretOf,
    ) -> Option<Option<Password>> {
        let mut given: Vec<(&str, &Node)> = keys
            .iter()
            .filter_map(|k| Some((*k, s.entry(k)?)))
            .collect();
        given.sort_by_key(|(_, n)| (n.line, n.column));
        let (key, node) = match given.as_slice() {
            [] => return Some(None),
            [one] => *one,
            [first, rest @ ..] => {
                for (k, n) in rest {
                    self.err(
                        n,
                        format!(
                            "{}: `{k}` conflicts with `{}` (line {}): use only one of {}",
                            s.path,
                            first.0,
                            first.1.line,
                            keys.join(", ")
                        ),
                    );
                }
                return None;
            }
        };
        let name = s.name(key);
        let from = if key == keys[0] {
            let Some(secret) = scalar(node) else {
                self.err(
                    node,
                    format!("{name}: expected a string, found {}", node.describe()),
                );
                return None;
            };
            if let Some(problem) = secret_problem(secret) {
                self.err(node, format!("{name}: {problem}"));
                return None;
            }
            return Some(Some(Password::new(secret)));
        } else if key == keys[1] {
            SecretSource::File(self.path(node, &name)?)
        } else {
            SecretSource::Env(self.text(node, &name)?)
        };
        let key = self.key_at(node, &name);
        self.sources.push(Source::Secret { of, from, key });
        Some(Some(Password::new(String::new())))
    }

    pub(super) fn retention(&mut self, node: &Node, name: &str) -> Option<Retention> {
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

    /// `after_fetch: move:<folder>`: imap only, and only where retention lets mail go;
    /// `after_fetch: seen`: imap only, and only where retention keeps mail for a while.
    pub(super) fn after_fetch(
        &mut self,
        node: &Node,
        name: &str,
        protocol: Option<Protocol>,
        retention: Option<Retention>,
    ) -> Option<AfterFetch> {
        let value = self.text(node, name)?;
        let problem = match value.strip_prefix("move:").map(str::trim) {
            _ if lacks(protocol, |k| k.folders || k.seen_flag) => {
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
}
