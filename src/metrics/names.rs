//! Every metric mailferry exports: name, type, unit, labels and help text, in one table.
//!
//! The recorder is told about each (`describe_*`, the `# HELP` line of a scrape), and the
//! histograms get their buckets from here. The README's metrics table was generated from it.

use metrics::Unit;

/// What kind of series a metric is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Only goes up (`_total`).
    Counter,
    /// Goes up and down, or holds a time.
    Gauge,
    /// A distribution, exported as Prometheus buckets.
    Histogram,
}

/// One exported metric.
#[derive(Debug, Clone, Copy)]
pub struct Metric {
    /// The exported name.
    pub name: &'static str,
    /// Counter, gauge or histogram.
    pub kind: Kind,
    /// Its base unit.
    pub unit: Unit,
    /// Its labels; each a small fixed set of values, or `account` (from the configuration).
    pub labels: &'static [&'static str],
    /// What it means (the `# HELP` text).
    pub help: &'static str,
}

/// Messages downloaded.
pub const FETCHED: &str = "mailferry_messages_fetched_total";
/// Bytes downloaded.
pub const FETCHED_BYTES: &str = "mailferry_fetched_bytes_total";
/// Per-recipient outcomes.
pub const DELIVERIES: &str = "mailferry_deliveries_total";
/// Recipients not sent to because they had the message already.
pub const SKIPPED: &str = "mailferry_recipients_skipped_total";
/// Upstream copies deleted.
pub const DELETED: &str = "mailferry_upstream_deleted_total";
/// Messages quarantined.
pub const QUARANTINED: &str = "mailferry_quarantined_total";
/// Passes that failed, by kind.
pub const POLL_ERRORS: &str = "mailferry_poll_errors_total";
/// Passes, by result.
pub const PASSES: &str = "mailferry_passes_total";
/// Attempts at a message that did not settle it.
pub const MESSAGES_FAILED: &str = "mailferry_messages_failed_total";
/// Addresses not sent as written.
pub const ADDRESSES_REFUSED: &str = "mailferry_addresses_refused_total";
/// OAuth2 tokens that could not be had.
pub const OAUTH_FAILURES: &str = "mailferry_oauth_failures_total";
/// The end of the last successful pass.
pub const LAST_SUCCESS: &str = "mailferry_last_success_timestamp_seconds";
/// The account's poll_interval.
pub const POLL_INTERVAL: &str = "mailferry_poll_interval_seconds";
/// Messages upstream not yet settled.
pub const WAITING: &str = "mailferry_upstream_waiting_messages";
/// Messages upstream settled and kept by retention.
pub const KEPT: &str = "mailferry_upstream_kept_messages";
/// Messages in quarantine now.
pub const QUARANTINED_NOW: &str = "mailferry_quarantined_messages";
/// The OAuth2 access token's expiry.
pub const TOKEN_EXPIRY: &str = "mailferry_oauth_token_expiry_seconds";
/// Logins being refused now.
pub const LOGIN_REFUSED: &str = "mailferry_login_refused";
/// The state store takes writes.
pub const STORE_WRITABLE: &str = "mailferry_state_store_writable";
/// The last attempt to reach the relay worked.
pub const RELAY_UP: &str = "mailferry_relay_up";
/// The last time the relay answered.
pub const RELAY_LAST_SUCCESS: &str = "mailferry_relay_last_success_timestamp_seconds";
/// How long a pass took.
pub const PASS_DURATION: &str = "mailferry_pass_duration_seconds";
/// How long one SMTP transaction took.
pub const RELAY_DURATION: &str = "mailferry_relay_transaction_duration_seconds";
/// The size of a downloaded message.
pub const MESSAGE_SIZE: &str = "mailferry_message_size_bytes";

/// The values of `mailferry_deliveries_total{outcome}`.
pub const OUTCOMES: &[&str] = &["delivered", "rerouted", "temporary", "permanent"];
/// The values of `mailferry_poll_errors_total{kind}`.
pub const ERROR_KINDS: &[&str] = &[
    "connect", "tls", "login", "protocol", "timeout", "state", "relay", "other",
];
/// The values of `mailferry_quarantined_total{reason}`.
pub const QUARANTINE_REASONS: &[&str] = &["attempts", "refused", "too_large", "unreadable", "loop"];

/// Buckets of the pass duration, in seconds: a quiet mailbox takes well under a second, a
/// backlog minutes.
pub const PASS_BUCKETS: &[f64] = &[
    0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0,
];
/// Buckets of the relay transaction time, in seconds: milliseconds on a LAN, seconds when
/// the internal server scans the message.
pub const RELAY_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];
/// Buckets of the message size, in bytes: 1 KiB to 64 MiB by powers of 4.
pub const SIZE_BUCKETS: &[f64] = &[
    1024.0, 4096.0, 16384.0, 65536.0, 262144.0, 1048576.0, 4194304.0, 16777216.0, 67108864.0,
];

const ACCOUNT: &[&str] = &["account"];

/// Every metric mailferry exports.
pub const ALL: &[Metric] = &[
    Metric {
        name: FETCHED,
        kind: Kind::Counter,
        unit: Unit::Count,
        labels: ACCOUNT,
        help: "Messages downloaded from the upstream mailbox.",
    },
    Metric {
        name: FETCHED_BYTES,
        kind: Kind::Counter,
        unit: Unit::Bytes,
        labels: ACCOUNT,
        help: "Bytes of the messages downloaded from the upstream mailbox.",
    },
    Metric {
        name: DELIVERIES,
        kind: Kind::Counter,
        unit: Unit::Count,
        labels: &["account", "outcome"],
        help: "Per recipient of a message: delivered (the internal server took it), rerouted \
               (refused for good, sent to the postmaster), temporary (to be retried), permanent \
               (refused for good with nowhere to go: the message is quarantined).",
    },
    Metric {
        name: SKIPPED,
        kind: Kind::Counter,
        unit: Unit::Count,
        labels: &["account", "reason"],
        help: "Recipients not sent to because they have the message already: earlier (in an \
               earlier pass), duplicate (another copy of the same message, dedup_window).",
    },
    Metric {
        name: DELETED,
        kind: Kind::Counter,
        unit: Unit::Count,
        labels: ACCOUNT,
        help: "Upstream copies deleted (and committed) after every recipient was settled.",
    },
    Metric {
        name: QUARANTINED,
        kind: Kind::Counter,
        unit: Unit::Count,
        labels: &["account", "reason"],
        help: "Messages quarantined (left upstream, no longer tried, the postmaster told): \
               attempts, refused, too_large, unreadable, loop.",
    },
    Metric {
        name: POLL_ERRORS,
        kind: Kind::Counter,
        unit: Unit::Count,
        labels: &["account", "kind"],
        help: "Passes that failed or stopped early, by kind: connect, tls, login, protocol, \
               timeout, state, relay, other.",
    },
    Metric {
        name: PASSES,
        kind: Kind::Counter,
        unit: Unit::Count,
        labels: &["account", "result"],
        help: "Poll passes, by result (ok, failed).",
    },
    Metric {
        name: MESSAGES_FAILED,
        kind: Kind::Counter,
        unit: Unit::Count,
        labels: &["account", "reason"],
        help: "Attempts at a message that left it unsettled, by reason: relay, retrieve, \
               refused.",
    },
    Metric {
        name: ADDRESSES_REFUSED,
        kind: Kind::Counter,
        unit: Unit::Count,
        labels: &["account", "reason"],
        help: "Addresses in an accepted domain not sent as written: source_routed, \
               undecodable, unsendable.",
    },
    Metric {
        name: OAUTH_FAILURES,
        kind: Kind::Counter,
        unit: Unit::Count,
        labels: &["account", "reason"],
        help: "OAuth2 access tokens that could not be had: refused, unreachable.",
    },
    Metric {
        name: LAST_SUCCESS,
        kind: Kind::Gauge,
        unit: Unit::Seconds,
        labels: ACCOUNT,
        help: "When the last successful pass ended (unix time).",
    },
    Metric {
        name: POLL_INTERVAL,
        kind: Kind::Gauge,
        unit: Unit::Seconds,
        labels: ACCOUNT,
        help: "The account's poll_interval, for alerts on passes that stopped coming.",
    },
    Metric {
        name: WAITING,
        kind: Kind::Gauge,
        unit: Unit::Count,
        labels: ACCOUNT,
        help: "Messages upstream not yet settled (new, retrying, or beyond max_per_pass), \
               at the end of the last pass.",
    },
    Metric {
        name: KEPT,
        kind: Kind::Gauge,
        unit: Unit::Count,
        labels: ACCOUNT,
        help: "Messages upstream settled and kept there by retention, at the end of the \
               last pass.",
    },
    Metric {
        name: QUARANTINED_NOW,
        kind: Kind::Gauge,
        unit: Unit::Count,
        labels: ACCOUNT,
        help: "Messages of the account in quarantine now (forgotten ones not counted).",
    },
    Metric {
        name: TOKEN_EXPIRY,
        kind: Kind::Gauge,
        unit: Unit::Seconds,
        labels: ACCOUNT,
        help: "When the account's OAuth2 access token expires (unix time).",
    },
    Metric {
        name: LOGIN_REFUSED,
        kind: Kind::Gauge,
        unit: Unit::Count,
        labels: ACCOUNT,
        help: "1 while the server refuses the account's login (the poller backs off).",
    },
    Metric {
        name: STORE_WRITABLE,
        kind: Kind::Gauge,
        unit: Unit::Count,
        labels: &[],
        help: "1 while the state store takes writes; 0 stops delivery (and /readyz).",
    },
    Metric {
        name: RELAY_UP,
        kind: Kind::Gauge,
        unit: Unit::Count,
        labels: &[],
        help: "1 unless the last attempt to reach the relay failed (connect, TLS, greeting, \
               EHLO, AUTH, a lost connection or a timeout).",
    },
    Metric {
        name: RELAY_LAST_SUCCESS,
        kind: Kind::Gauge,
        unit: Unit::Seconds,
        labels: &[],
        help: "When the relay last answered a transaction (unix time).",
    },
    Metric {
        name: PASS_DURATION,
        kind: Kind::Histogram,
        unit: Unit::Seconds,
        labels: ACCOUNT,
        help: "How long a poll pass took.",
    },
    Metric {
        name: RELAY_DURATION,
        kind: Kind::Histogram,
        unit: Unit::Seconds,
        labels: &[],
        help: "How long one SMTP transaction with the relay took (connection set-up included \
               when it needed one).",
    },
    Metric {
        name: MESSAGE_SIZE,
        kind: Kind::Histogram,
        unit: Unit::Bytes,
        labels: ACCOUNT,
        help: "Size of the messages downloaded.",
    },
];

/// The buckets of a histogram in [`ALL`].
pub fn buckets(name: &str) -> &'static [f64] {
    match name {
        PASS_DURATION => PASS_BUCKETS,
        RELAY_DURATION => RELAY_BUCKETS,
        _ => SIZE_BUCKETS,
    }
}
