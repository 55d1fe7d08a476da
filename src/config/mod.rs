//! The one YAML configuration file: the validated types every other stage reads.
//!
//! Loading is two steps, each reporting *every* problem at once with file, line and column
//! (see [`ConfigErrors`]):
//! 1. [`validate`] (pure: reads nothing but the text): YAML text to a [`Validated`]
//!    configuration that lists what it names outside the text as [`Source`]s (password files
//!    and variables, certificate and key files);
//! 2. [`Validated::resolve`]: reads those and checks them, naming the key that named each.
//!
//! Over 600 lines on purpose: the types of every key with each key's documentation, and no
//! logic beyond small accessors (the checks are in `load/`).
//!
//! [`load`] and [`from_yaml_str`] do both. A [`Config`] value is always complete and valid:
//! defaults are filled in, passwords are resolved (from `password`, `password_file` or
//! `password_env`), ports are set from the TLS mode when omitted.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::address::{Address, DomainPattern};
use crate::route::{DirectoryFile, Rewrite};

mod accounts_dir;
mod load;
mod resolve;

pub use load::validate;
pub use resolve::{DirectoryOf, KeyAt, SecretOf, SecretSource, Source, Validated};
mod proxy;

pub use proxy::{Proxy, ProxyKind};

/// The envelope headers read in catch-all mode when `envelope_headers` is not set, in order.
pub const DEFAULT_ENVELOPE_HEADERS: [&str; 4] = [
    "X-Original-To",
    "Delivered-To",
    "X-Envelope-To",
    "Envelope-To",
];

/// `dedup_window` when not set: 7 days.
pub const DEFAULT_DEDUP_WINDOW: Duration = Duration::from_secs(7 * 86_400);

/// `auth_backoff_max` when not set: a refused login is tried again at most this far apart
/// (1 hour).
pub const DEFAULT_AUTH_BACKOFF_MAX: Duration = Duration::from_secs(3_600);

/// `backoff_max` when not set: a failing mailbox (unreachable, TLS or protocol failure) is
/// tried again at most this far apart (15 minutes).
pub const DEFAULT_BACKOFF_MAX: Duration = Duration::from_secs(900);

/// `max_concurrent_accounts` when not set: passes running at once, all accounts together.
pub const DEFAULT_MAX_CONCURRENT_ACCOUNTS: usize = 16;

/// `max_message_size` when not set: 50 MB.
pub const DEFAULT_MAX_MESSAGE_SIZE: u64 = 50_000_000;

/// `memory_budget` when not set: 256 MiB.
pub const DEFAULT_MEMORY_BUDGET: u64 = 256 << 20;

/// The whole configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where the SQLite state lives (and the OAuth2 refresh tokens, with either backend).
    pub state_dir: PathBuf,
    /// `state:`: the state backend; SQLite under `state_dir` unless `state: {postgres: ...}`.
    pub state: StateBackend,
    /// The Prometheus listener.
    pub metrics: MetricsConfig,
    /// The internal mail server.
    pub relay: RelayConfig,
    /// Accepted recipient domains.
    pub domains: Vec<DomainPattern>,
    /// Where mail with no local recipient, or refused for good, goes.
    pub postmaster: Address,
    /// Envelope headers read in catch-all mode, in order of preference.
    pub envelope_headers: Vec<String>,
    /// Largest message downloaded, in bytes: a larger one is left upstream (RETR is not even
    /// tried when LIST announces it larger).
    pub max_message_size: u64,
    /// Bytes of downloaded mail all accounts together hold at once, waiting to be relayed; a
    /// message larger than this goes through alone.
    pub memory_budget: u64,
    /// What becomes of a recipient address in an accepted domain whose local part would make
    /// the internal server relay it onward (`%`, `!`, a quoted `@`, a source route).
    pub source_routed: SourceRouted,
    /// `dedup_window` (`None` with `dedup: off`): for this long, a recipient that got a
    /// message (by its Message-ID and content) does not get it again, from
    /// another copy in the mailbox, another account, or the same mail under new keys (an IMAP
    /// UIDVALIDITY change).
    pub dedup_window: Option<Duration>,
    /// `rewrite`: addresses and domains mapped to internal ones before the domain check
    /// (an account's own `rewrite` replaces it).
    pub rewrite: Vec<Rewrite>,
    /// `directory`: the file of known local addresses (an account's own replaces it).
    pub directory: Option<DirectoryFile>,
    /// `max_hops`: a copy carrying mailferry's own trace header more often is a loop.
    pub max_hops: u32,
    /// `watch_config`: the daemon reloads the file when it changes, as on SIGHUP.
    pub watch_config: bool,
    /// `max_concurrent_accounts`: at most this many passes run at once; the others wait their
    /// turn, first come first served.
    pub max_concurrent_accounts: usize,
    /// `accounts_dir`: a directory of more accounts, one YAML file each (`*.yaml`, `*.yml`;
    /// hidden files ignored), read in name order after `accounts:`, whose accounts are in
    /// `accounts` too.
    pub accounts_dir: Option<PathBuf>,
    /// The mailboxes to collect from: `accounts:`, then those of `accounts_dir`.
    pub accounts: Vec<AccountConfig>,
}

/// `lease_ttl` when not set: an instance that stops renewing (killed, paused, cut off) loses
/// its accounts after 60 s.
pub const DEFAULT_LEASE_TTL: Duration = Duration::from_secs(60);

/// `state:` — which store holds the state.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum StateBackend {
    /// SQLite in `state_dir` (the default): one process per `state_dir`.
    #[default]
    Sqlite,
    /// `state: {postgres: {...}}`: one database shared by several instances.
    Postgres(PostgresConfig),
}

/// `state.postgres:`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PostgresConfig {
    /// From `url`, `url_file` or `url_env`: a `postgres://user:password@host/db` URL (or a
    /// libpq key=value string). A secret: it holds the password.
    pub url: Password,
    /// `lease_ttl`: an account's lease lasts this long unless renewed (every third of it
    /// during a pass); a dead instance's accounts are taken over after it.
    pub lease_ttl: Duration,
}

/// `source_routed:` — what becomes of an address such as `evil%x.com@example.com`, which a
/// default Postfix or sendmail would relay to `evil@x.com`. Such an address is never sent
/// as written, whatever this says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SourceRouted {
    /// The postmaster gets the copy, with the reason (the default).
    #[default]
    Postmaster,
    /// The address is dropped and counted; the other recipients get the copy as usual.
    Reject,
}

/// `metrics:`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetricsConfig {
    /// Address of the /metrics, /healthz, /readyz listener; `None` when metrics are off.
    pub listen: Option<SocketAddr>,
}

/// How a connection is secured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsMode {
    /// Plain text; the only mode that allows plaintext authentication.
    None,
    /// Upgrade with STARTTLS/STLS, refuse to go on without it.
    Starttls,
    /// Upgrade with STARTTLS/STLS when the server offers it.
    StarttlsIfAvailable,
    /// TLS from the first byte (ports 995, 993, 465).
    Tls,
}

/// The TLS keys, the same in an account and in `relay:` (see [`crate::tls`] for how they
/// decide trust).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsOptions {
    /// `ca_file`: PEM certificates to trust besides the system store: CAs, or the server's
    /// own (self-signed) certificate.
    pub ca_file: Option<PathBuf>,
    /// `tls_fingerprint`: accept exactly the server certificate with this SHA-256
    /// fingerprint.
    pub fingerprint: Option<crate::tls::Fingerprint>,
    /// `verify_certificate`: true unless written `false` (then a warning at every start).
    pub verify_certificate: bool,
    /// `tls_server_name`: the name verified and sent as SNI; the host when `None`.
    pub server_name: Option<String>,
    /// `tls_min_version`.
    pub min_version: TlsVersion,
    /// `client_cert`: PEM certificate (chain) for mutual TLS; set with `client_key`.
    pub client_cert: Option<PathBuf>,
    /// `client_key`: PEM private key of `client_cert`.
    pub client_key: Option<PathBuf>,
}

impl Default for TlsOptions {
    /// Verify against the system store, for the host's name, TLS 1.2 or later, no client
    /// certificate.
    fn default() -> TlsOptions {
        TlsOptions {
            ca_file: None,
            fingerprint: None,
            verify_certificate: true,
            server_name: None,
            min_version: TlsVersion::V1_2,
            client_cert: None,
            client_key: None,
        }
    }
}

/// `tls_min_version`: the oldest TLS version offered. TLS 1.0 and 1.1 (RFC 8996) and SSL are
/// not implemented at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TlsVersion {
    /// TLS 1.2 or 1.3 (the default).
    #[default]
    V1_2,
    /// TLS 1.3 only.
    V1_3,
}

/// `relay:` — the internal mail server.
#[derive(Debug, Clone)]
pub struct RelayConfig {
    /// Host name or IP address.
    pub host: String,
    /// TCP port (25, or 465 with `tls: tls`, by default).
    pub port: u16,
    /// Plain, STARTTLS (required or if offered) or implicit TLS.
    pub tls: TlsMode,
    /// Name given in EHLO; defaults to the host name of this machine.
    pub helo: Option<String>,
    /// Parallel SMTP sessions.
    pub connections: u32,
    /// Trust, pinning, client certificate, versions.
    pub tls_options: TlsOptions,
    /// Time allowed for each SMTP reply.
    pub timeout: Duration,
    /// Time allowed for the reply after the final "." of DATA (RFC 5321: at least 10 min).
    pub data_timeout: Duration,
    /// How often, and how far apart, a message the relay could not take is tried again.
    pub retry: RetryPolicy,
    /// `relay.username` and its password: SMTP AUTH with the relay; `None`: no AUTH.
    pub auth: Option<RelayAuth>,
}

/// The relay's SMTP AUTH credentials (`relay.username`, and `relay.password` / `_file` /
/// `_env` or `relay.oauth`) and the mechanisms it may use.
#[derive(Debug, Clone)]
pub struct RelayAuth {
    /// The user name given in AUTH.
    pub username: String,
    /// Never logged (its `Debug` and `Display` print `***`).
    pub password: Password,
    /// `relay.auth_mechanisms` / `relay.spa`: the SASL mechanisms AUTH may use (an
    /// account's `auth_mechanisms`, SASL names only); `Auto`: the strongest offered.
    pub mechanisms: AuthMethod,
    /// `relay.oauth`: AUTH with an OAuth2 access token (XOAUTH2, OAUTHBEARER) got as an
    /// account's are; `password` is then empty.
    pub oauth: Option<OAuthConfig>,
    /// `state_dir`: where the relay's refresh token is kept (`oauth/@relay.refresh_token`).
    pub state_dir: PathBuf,
}

/// `relay.retry`: a message that failed for a reason that may pass (a 4xx reply, a download
/// that broke off) is tried again after `initial`, then after twice as long each time up to
/// `max`; after `max_attempts` attempts it is quarantined.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts before the message is quarantined.
    pub max_attempts: u32,
    /// The wait after the first failed attempt.
    pub initial: Duration,
    /// The longest wait between attempts.
    pub max: Duration,
}

impl Default for RetryPolicy {
    fn default() -> RetryPolicy {
        RetryPolicy {
            max_attempts: 10,
            initial: Duration::from_secs(60),
            max: Duration::from_secs(3_600),
        }
    }
}

impl RetryPolicy {
    /// How long to wait after the `attempts`-th failed attempt (1-based): `initial`, doubled
    /// for each attempt after the first, never more than `max`.
    pub fn delay(&self, attempts: u32) -> Duration {
        let doublings = attempts.saturating_sub(1).min(32);
        self.initial
            .saturating_mul(1u32 << doublings.min(31))
            .min(self.max)
    }
}

/// `initial`: what an account does the first time the state store sees it, when its mailbox
/// already holds mail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Initial {
    /// Deliver everything in the mailbox.
    DeliverAll,
    /// Take what is there now as already delivered; deliver only what arrives later.
    SkipExisting,
}

/// The upstream protocol: the kind of mailbox. Each says all about itself in its
/// [`MailboxKind`](crate::fetch::kind::MailboxKind); a new kind is a variant here, its line in
/// [`Protocol::ALL`] and in [`Protocol::kind`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// POP3 (RFC 1939).
    Pop3,
    /// IMAP4rev1 (RFC 3501).
    Imap,
}

impl Protocol {
    /// Every kind, in the order `protocol:`'s error lists them.
    pub const ALL: [Protocol; 2] = [Protocol::Pop3, Protocol::Imap];

    /// What the kind says about itself: its name, ports, session, `test-connection` steps.
    pub fn kind(self) -> &'static dyn crate::fetch::kind::MailboxKind {
        match self {
            Protocol::Pop3 => &crate::fetch::pop3::kind::Pop3Kind,
            Protocol::Imap => &crate::fetch::imap::kind::ImapKind,
        }
    }
}

/// `fetch_order`: which messages of a mailbox a pass works through first (it matters when
/// `max_per_pass` or `pass_deadline` ends a pass before the mailbox is done).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FetchOrder {
    /// The oldest first: POP3 message numbers, IMAP UIDs, ascending (the default).
    #[default]
    Oldest,
    /// The newest first.
    Newest,
}

/// `after_fetch` (IMAP): what becomes of a settled message when retention lets it go from
/// the folder.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum AfterFetch {
    /// It is deleted (flagged `\Deleted` and expunged): the default.
    #[default]
    Delete,
    /// `move:<folder>`: it is moved to this folder (given with either separator) instead.
    Move(String),
    /// `seen`: while retention keeps a settled message (`keep`, or `<N>d` before its day),
    /// it is flagged `\Seen`, so that people reading the mailbox see it was collected; it is
    /// deleted when retention lets it go.
    Seen,
}

/// `auth`, `auth_mechanisms`, `spa`: how an account may log in.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum AuthMethod {
    /// The strongest method the server offers ([`crate::sasl::choose`]): SCRAM-SHA-256 >
    /// SCRAM-SHA-1 > CRAM-MD5 > NTLM > PLAIN > LOGIN > USER/PASS or IMAP LOGIN. APOP is
    /// never chosen unasked. The default.
    #[default]
    Auto,
    /// Only these, the strongest of them the server offers (`auth_mechanisms: [...]`;
    /// `auth: apop` is `[apop]`, `spa: true` is `[ntlm]`).
    Only(Vec<crate::sasl::Method>),
}

impl AuthMethod {
    /// The methods allowed; empty: any.
    pub fn allowed(&self) -> &[crate::sasl::Method] {
        match self {
            AuthMethod::Auto => &[],
            AuthMethod::Only(list) => list,
        }
    }
}

/// Whom an account's mail is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mode {
    /// A mailbox holding a whole domain's mail: recipients come from the headers.
    CatchAll,
    /// Everything goes to one internal address.
    SingleUser {
        /// The one internal recipient.
        deliver_to: Address,
    },
}

/// When the upstream copy of a settled message is deleted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retention {
    /// At once, as soon as every recipient is settled.
    Delete,
    /// Never.
    Keep,
    /// This many days after the message was first seen.
    Days(u32),
}

impl fmt::Display for Retention {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Retention::Delete => f.write_str("delete"),
            Retention::Keep => f.write_str("keep"),
            Retention::Days(n) => write!(f, "{n}d"),
        }
    }
}

/// A password that never prints: `Debug` and `Display` show `***`.
/// A secret that never shows in a log, a metric or an error: `Debug` and `Display` print
/// `***`.
#[derive(Clone, PartialEq, Eq)]
pub struct Password(String);

impl Password {
    /// Wraps a secret.
    pub fn new(s: impl Into<String>) -> Password {
        Password(s.into())
    }
    /// The secret itself; call it only where it goes on the wire.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl fmt::Display for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// `oauth.provider`: whose token endpoints an account's `oauth:` block uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OAuthProvider {
    /// Microsoft 365 (Entra ID): `login.microsoftonline.com/{tenant}`.
    Microsoft,
    /// Google: `oauth2.googleapis.com`.
    Google,
    /// Any other: `token_url` (and `device_url` for `mailferry oauth login`) given.
    Generic,
}

/// `oauth.grant`: how mailferry gets its access tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OAuthGrant {
    /// The client-credentials grant (Microsoft 365 app-only access): the client secret buys
    /// each token; the mailbox is `username`.
    ClientCredentials,
    /// The refresh-token grant (delegated access): a refresh token got once by
    /// `mailferry oauth login`, kept under `state_dir`, buys each token.
    RefreshToken,
}

/// An account's `oauth:` block, with the provider's endpoints and default scope filled in:
/// the account logs in with an OAuth2 access token (XOAUTH2 or OAUTHBEARER), not a password.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OAuthConfig {
    /// Microsoft, Google or generic.
    pub provider: OAuthProvider,
    /// Client credentials or refresh token.
    pub grant: OAuthGrant,
    /// The application's (client's) id.
    pub client_id: String,
    /// From `client_secret`, `client_secret_file` or `client_secret_env`; required for the
    /// client-credentials grant, optional for public clients.
    pub client_secret: Option<Password>,
    /// The scope asked for, space-separated; may be empty (generic provider only).
    pub scope: String,
    /// The token endpoint (https, or http on loopback only).
    pub token_url: String,
    /// The device-authorization endpoint, for `mailferry oauth login`.
    pub device_url: Option<String>,
    /// `ca_file`: PEM certificates to trust for the endpoints besides the system store (a
    /// private identity provider's CA, or its own certificate); the account's TLS options
    /// are its mail server's and do not apply.
    pub ca_file: Option<PathBuf>,
}

/// One entry of `accounts:`.
#[derive(Debug, Clone)]
pub struct AccountConfig {
    /// Unique; `[A-Za-z0-9._-]`, at most 128 characters (it names state rows and metrics).
    pub name: String,
    /// POP3 or IMAP.
    pub protocol: Protocol,
    /// Host name or IP address.
    pub host: String,
    /// TCP port (from the protocol and `tls` by default).
    pub port: u16,
    /// Plain, STARTTLS (required or if offered) or implicit TLS (the default).
    pub tls: TlsMode,
    /// Trust, pinning, client certificate, versions.
    pub tls_options: TlsOptions,
    /// The login name.
    pub username: String,
    /// From `password`, `password_file` or `password_env`; empty when the account logs in
    /// with `oauth`.
    pub password: Password,
    /// Catch-all or single-user.
    pub mode: Mode,
    /// IMAP folder; `INBOX` by default.
    pub folder: String,
    /// Time between the starts of two passes.
    pub poll_interval: Duration,
    /// Messages downloaded per pass at most.
    pub max_per_pass: u32,
    /// When the upstream copy of a settled message is deleted.
    pub retention: Retention,
    /// Time allowed for each server reply.
    pub timeout: Duration,
    /// Time allowed for a whole poll pass of this account (enforced by the pipeline).
    pub pass_deadline: Duration,
    /// What to do with the mail already upstream when the state store has never seen this
    /// account; `None`: deliver it when retention deletes it, else wait for a choice (a kept
    /// mailbox whose state was lost would otherwise be delivered all over again).
    pub initial: Option<Initial>,
    /// POP3: commit deletions (QUIT and log in again) after this many, so that a dropped
    /// connection brings back at most this many delivered messages.
    pub expunge_every: u32,
    /// Oldest or newest messages first.
    pub fetch_order: FetchOrder,
    /// IMAP: delete, or move to another folder, when retention lets a message go; or flag
    /// kept messages `\Seen`.
    pub after_fetch: AfterFetch,
    /// IMAP: messages flagged `\Seen` upstream are not taken up ("first unread"); those the
    /// state store already knows go on as before.
    pub unseen_only: bool,
    /// How it may log in (`auth`, `auth_mechanisms`, `spa`).
    pub auth: AuthMethod,
    /// IMAP: between passes, wait in IDLE for new mail (when the server offers it) instead of
    /// only sleeping `poll_interval`.
    pub idle: bool,
    /// `oauth:`: the account logs in with an OAuth2 access token instead of a password.
    pub oauth: Option<OAuthConfig>,
    /// `proxy`: the SOCKS5 or HTTP CONNECT proxy the upstream connection goes through.
    pub proxy: Option<Proxy>,
    /// `auth_backoff_max`: after a refused login the next pass waits twice as long each time
    /// (from `poll_interval`), up to this, so that a wrong password does not lock the
    /// mailbox.
    pub auth_backoff_max: Duration,
    /// `backoff_max`: after a failed pass (the server unreachable, TLS or protocol failure,
    /// the pass deadline) the next waits twice as long each time (from `poll_interval`), up
    /// to this.
    pub backoff_max: Duration,
    /// The routing keys this account sets for itself.
    pub routing: AccountRouting,
}

/// An account's own routing keys: each one set replaces the top-level key for this account.
#[derive(Debug, Clone, Default)]
pub struct AccountRouting {
    /// `envelope_headers`.
    pub envelope_headers: Option<Vec<String>>,
    /// `rewrite`.
    pub rewrite: Option<Vec<Rewrite>>,
    /// `directory`.
    pub directory: Option<DirectoryFile>,
}

impl AccountConfig {
    /// What identifies the mailbox whatever the account is called: protocol, user, host (in
    /// lower case) and, for a kind with folders (IMAP), folder. The state store follows an
    /// account renamed in the configuration by it; the port and TLS mode may change without
    /// changing the mailbox.
    pub fn mailbox_id(&self) -> String {
        let kind = self.protocol.kind().facts();
        let host = self.host.to_ascii_lowercase();
        let id = format!("{}://{}@{host}", kind.name, self.username);
        if kind.folders {
            format!("{id}/{}", self.folder)
        } else {
            id
        }
    }
}

/// One problem in the configuration file, with where it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The configuration file, as named on the command line.
    pub file: String,
    /// 1-based; 0 when the problem has no place in the file (the file cannot be read).
    pub line: usize,
    /// 1-based; 0 when unknown.
    pub column: usize,
    /// What is wrong, naming the key.
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            write!(f, "{}: {}", self.file, self.message)
        } else {
            write!(
                f,
                "{}:{}:{}: {}",
                self.file, self.line, self.column, self.message
            )
        }
    }
}

/// Every problem found in a configuration file, in file order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// Parses, validates and resolves configuration text (both steps), with the accounts of its
/// `accounts_dir`; `file` names it in errors, and relative paths in it (`state_dir`,
/// `ca_file`, `password_file`, `accounts_dir`) are resolved against `file`'s directory.
pub fn from_yaml_str(text: &str, file: &str) -> Result<Config, ConfigErrors> {
    let checked = load::check(text, file);
    let mut config = checked.config;
    // Each file with its problems and what it names outside itself, main file first.
    let mut files = vec![accounts_dir::Part {
        file: file.to_string(),
        errors: checked.errors,
        sources: checked.sources,
    }];
    if let Some((dir, key)) = &checked.accounts_dir {
        let mut known = accounts_dir::Known::of_main(file, &checked.names, config.as_ref());
        let parts = accounts_dir::read(
            dir,
            key,
            file,
            &mut known,
            checked.targets.as_ref(),
            config.as_mut(),
        );
        files.extend(parts);
    }
    let mut errors = Vec::new();
    let ok = files.iter().all(|part| part.errors.is_empty());
    let mut config = config.filter(|_| ok);
    for part in files {
        // What the text names outside itself is read even when the text has problems, so
        // that one run of check-config reports every problem.
        let mut found = part.errors;
        found.extend(resolve::resolve_sources(
            &part.file,
            &part.sources,
            config.as_mut(),
        ));
        found.sort_by_key(|e| (e.line, e.column));
        errors.extend(found);
    }
    match config {
        Some(config) if errors.is_empty() => Ok(config),
        _ => Err(ConfigErrors(errors)),
    }
}

/// An account written alone outside the configuration's files: a row of PostgreSQL's
/// accounts table (`mailferry accounts add`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountText {
    /// What names it in errors, as a file would be (`accounts table[alpha]`).
    pub origin: String,
    /// The YAML of one item of `accounts:`, not indented.
    pub text: String,
}

/// `config` (loaded from `file`) with the accounts of `texts` after its own, each checked and
/// resolved as a file of `accounts_dir` is: its problems named by its origin and line, a name
/// or mailbox used twice refused. On failure every problem.
pub fn with_accounts(
    mut config: Config,
    file: &str,
    texts: &[AccountText],
) -> Result<Config, ConfigErrors> {
    let mut known = accounts_dir::Known::of_config(&config, file);
    let targets = (config.domains.clone(), config.postmaster.clone());
    let mut errors = Vec::new();
    for t in texts {
        let part = accounts_dir::add(
            &t.text,
            &t.origin,
            &mut known,
            Some(&targets),
            Some(&mut config),
        );
        let mut found = part.errors;
        // Only an account taken in has a place in `config` for its secrets.
        let into = if found.is_empty() {
            Some(&mut config)
        } else {
            None
        };
        found.extend(resolve::resolve_sources(&part.file, &part.sources, into));
        found.sort_by_key(|e| (e.line, e.column));
        errors.extend(found);
    }
    if errors.is_empty() {
        Ok(config)
    } else {
        Err(ConfigErrors(errors))
    }
}

/// Reads, validates and resolves the file at `path`.
pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
    let name = path.display().to_string();
    match std::fs::read_to_string(path) {
        Ok(text) => from_yaml_str(&text, &name),
        Err(e) => Err(ConfigErrors(vec![ConfigError {
            file: name,
            line: 0,
            column: 0,
            message: format!("cannot read the file: {e}"),
        }])),
    }
}

impl Config {
    /// The account called `name`.
    pub fn account(&self, name: &str) -> Option<&AccountConfig> {
        self.accounts.iter().find(|a| a.name == name)
    }
}
