//! Metric names, the one place that records them, and the HTTP listener that serves them
//! with the status page.
//!
//! Every stage reports through the functions here, so that names and label values stay a
//! small fixed set: the only free label is `account`, whose values come from the
//! configuration (never from a message or a server). `names.rs` is the table of every metric
//! (help, unit, buckets), `kind.rs` the kind of a failed pass, `status.rs` what each account
//! is doing (for the status page), `page.rs` the page itself and `http.rs` the listener:
//! `/metrics`, `/healthz`, `/readyz` and `/`.

mod http;
pub mod kind;
pub mod names;
pub(crate) mod page;
pub mod status;

use std::collections::HashMap;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use metrics::{counter, gauge, histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use crate::config::AccountConfig;
use crate::fetch::Listed;
use crate::pipeline::{PassError, PassReport};
use crate::relay::RelayError;
use crate::state::MessageState;
use names::Kind;

pub use http::{MetricsError, bind, serve};

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
static READY: AtomicBool = AtomicBool::new(false);
/// Cleared while the state store refuses writes: not ready then, whatever `READY` says.
static STORE_WRITABLE: AtomicBool = AtomicBool::new(true);
/// Cleared while the last attempt to reach the relay failed: not ready then either.
static RELAY_UP: AtomicBool = AtomicBool::new(true);

/// Installs the Prometheus recorder (once per process), describes every metric, and returns
/// its handle.
pub fn install() -> &'static PrometheusHandle {
    HANDLE.get_or_init(|| {
        let mut builder = PrometheusBuilder::new();
        for m in names::ALL.iter().filter(|m| m.kind == Kind::Histogram) {
            // Only an empty bucket list is refused, and none is.
            builder = match builder
                .set_buckets_for_metric(Matcher::Full(m.name.to_owned()), names::buckets(m.name))
            {
                Ok(b) => b,
                Err(_) => unreachable!("bucket lists are not empty"),
            };
        }
        let recorder = builder.build_recorder();
        let handle = recorder.handle();
        // Fails only if another recorder is installed already (a test harness): then the
        // handle still renders this recorder's (empty) view, which is harmless.
        let _ = metrics::set_global_recorder(recorder);
        for m in names::ALL {
            match m.kind {
                Kind::Counter => metrics::describe_counter!(m.name, m.unit, m.help),
                Kind::Gauge => metrics::describe_gauge!(m.name, m.unit, m.help),
                Kind::Histogram => metrics::describe_histogram!(m.name, m.unit, m.help),
            }
        }
        // The two parts of /readyz are exported from the start, not only once they fail.
        let up = |flag: &AtomicBool| {
            if flag.load(Ordering::SeqCst) {
                1.0
            } else {
                0.0
            }
        };
        gauge!(names::STORE_WRITABLE).set(up(&STORE_WRITABLE));
        gauge!(names::RELAY_UP).set(up(&RELAY_UP));
        handle
    })
}

/// The text exposition of every metric.
pub fn render() -> String {
    let handle = install();
    handle.run_upkeep();
    handle.render()
}

/// Marks the daemon ready (/readyz answers 200): configuration loaded, state store open.
pub fn set_ready(ready: bool) {
    READY.store(ready, Ordering::SeqCst);
}

/// Whether the state store takes writes; /readyz is false while it does not, and
/// `mailferry_state_store_writable` says so.
pub fn set_store_writable(writable: bool) {
    STORE_WRITABLE.store(writable, Ordering::SeqCst);
    gauge!(names::STORE_WRITABLE).set(if writable { 1.0 } else { 0.0 });
}

/// Ready: started, the state store takes writes, and the last attempt to reach the relay
/// did not fail. Each failing part, in words, when not.
fn readiness() -> Result<(), Vec<&'static str>> {
    let mut not = Vec::new();
    if !READY.load(Ordering::SeqCst) {
        not.push("not running (starting, stopping, or no configuration loaded)");
    }
    if !STORE_WRITABLE.load(Ordering::SeqCst) {
        not.push("the state store cannot be written");
    }
    if !RELAY_UP.load(Ordering::SeqCst) {
        not.push("the last attempt to reach the relay failed");
    }
    if not.is_empty() { Ok(()) } else { Err(not) }
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64()
}

fn account_label(account: &str) -> [(&'static str, String); 1] {
    [("account", account.to_owned())]
}

/// The account's poller starts: its series exist from now on, at zero (so that a rate or
/// an alert sees the first event), and the status page lists it.
pub fn account_polling(account: &AccountConfig) {
    let name = account.name.as_str();
    let a = account_label(name);
    for m in names::ALL.iter().filter(|m| m.labels == ["account"]) {
        match m.kind {
            Kind::Counter => drop(counter!(m.name, &a)),
            Kind::Histogram => drop(histogram!(m.name, &a)),
            // Gauges say something only once set.
            Kind::Gauge => {}
        }
    }
    for outcome in names::OUTCOMES {
        counter!(names::DELIVERIES, "account" => name.to_owned(), "outcome" => *outcome)
            .increment(0);
    }
    for kind in names::ERROR_KINDS {
        counter!(names::POLL_ERRORS, "account" => name.to_owned(), "kind" => *kind).increment(0);
    }
    for reason in names::QUARANTINE_REASONS {
        counter!(names::QUARANTINED, "account" => name.to_owned(), "reason" => *reason)
            .increment(0);
    }
    for result in ["ok", "failed"] {
        counter!(names::PASSES, "account" => name.to_owned(), "result" => result).increment(0);
    }
    counter!(names::FETCHED, &a).increment(0);
    counter!(names::FETCHED_BYTES, &a).increment(0);
    counter!(names::DELETED, &a).increment(0);
    gauge!(names::POLL_INTERVAL, &a).set(account.poll_interval.as_secs_f64());
    login_refused_now(name, false);
    let protocol = account.protocol.kind().facts().name;
    status::registered(
        name,
        format!("{protocol} {}:{}", account.host, account.port),
    );
}

/// A message was quarantined (left upstream, no longer tried); `reason` is one of a fixed
/// set: `attempts` (failed too often), `refused` (refused for good, the postmaster's copy
/// too), `too_large`, `unreadable`, `loop` (more of mailferry's trace headers than `max_hops`).
pub fn message_quarantined(account: &str, reason: &'static str) {
    counter!(names::QUARANTINED, "account" => account.to_owned(), "reason" => reason).increment(1);
}

/// The first listing of a pass: what the mailbox holds (waiting, kept, quarantined), for
/// the gauges and the status page.
pub fn mailbox_listed(account: &str, listing: &[Listed], known: &HashMap<String, MessageState>) {
    let (waiting, kept, quarantined) = status::mailbox_listed(account, listing, known);
    let a = account_label(account);
    gauge!(names::WAITING, &a).set(waiting as f64);
    gauge!(names::KEPT, &a).set(kept as f64);
    gauge!(names::QUARANTINED_NOW, &a).set(quarantined as f64);
}

/// A message was downloaded from an upstream mailbox.
pub fn message_fetched(account: &str, bytes: usize) {
    let a = account_label(account);
    counter!(names::FETCHED, &a).increment(1);
    counter!(names::FETCHED_BYTES, &a).increment(bytes as u64);
    histogram!(names::MESSAGE_SIZE, &a).record(bytes as f64);
}

/// The outcome for one recipient of one message: `delivered`, `rerouted` (refused for good,
/// sent to the postmaster), `temporary` (to be retried), `permanent` (refused for good with
/// nowhere to go); or not sent, as it has the message already: `skipped` (in an earlier
/// pass), `duplicate` (another copy, `dedup_window`).
pub fn recipient_outcome(account: &str, outcome: &'static str) {
    let account = account.to_owned();
    match outcome {
        "skipped" => counter!(names::SKIPPED, "account" => account, "reason" => "earlier"),
        "duplicate" => counter!(names::SKIPPED, "account" => account, "reason" => "duplicate"),
        _ => counter!(names::DELIVERIES, "account" => account, "outcome" => outcome),
    }
    .increment(1);
}

/// An address in an accepted domain was not sent as written (`route::Routing::refused`);
/// `reason` is `route::Refusal::label()`: `source_routed`, `undecodable` or `unsendable`.
pub fn addresses_refused(account: &str, reason: &'static str) {
    counter!(names::ADDRESSES_REFUSED, "account" => account.to_owned(), "reason" => reason)
        .increment(1);
}

/// A message could not be settled in this pass; `reason` is one of a fixed set
/// (`relay`, `retrieve`, `refused`).
pub fn message_failed(account: &str, reason: &'static str) {
    counter!(names::MESSAGES_FAILED, "account" => account.to_owned(), "reason" => reason)
        .increment(1);
}

/// A transaction for a message of `account` failed as a whole: counted against the
/// message, and against the pass (`kind="relay"`) when the relay could not be reached.
pub fn relay_failed(account: &str, error: &RelayError) {
    message_failed(account, "relay");
    if kind::relay_unreachable(error) {
        counter!(names::POLL_ERRORS, "account" => account.to_owned(), "kind" => "relay")
            .increment(1);
    }
}

/// One SMTP transaction with the relay ended (began at `started`): its time, and whether
/// the relay could be reached (`mailferry_relay_up`, /readyz).
pub fn relay_transaction<T>(started: Instant, result: &Result<T, RelayError>) {
    histogram!(names::RELAY_DURATION).record(started.elapsed().as_secs_f64());
    let up = result
        .as_ref()
        .err()
        .is_none_or(|e| !kind::relay_unreachable(e));
    RELAY_UP.store(up, Ordering::SeqCst);
    gauge!(names::RELAY_UP).set(if up { 1.0 } else { 0.0 });
    if up {
        gauge!(names::RELAY_LAST_SUCCESS).set(unix_now());
    }
}

/// Upstream copies deleted (committed by QUIT).
pub fn upstream_deleted(account: &str, count: usize) {
    counter!(names::DELETED, &account_label(account)).increment(count as u64);
}

/// A poll pass of one account begins.
pub fn pass_started(account: &str) {
    status::pass_started(account);
}

/// A poll pass of one account ended after `elapsed`.
pub fn pass_finished(account: &str, result: &Result<PassReport, PassError>, elapsed: Duration) {
    let a = account_label(account);
    let ok = if result.is_ok() { "ok" } else { "failed" };
    counter!(names::PASSES, "account" => account.to_owned(), "result" => ok).increment(1);
    histogram!(names::PASS_DURATION, &a).record(elapsed.as_secs_f64());
    match result {
        Ok(_) => gauge!(names::LAST_SUCCESS, &a).set(unix_now()),
        Err(e) => counter!(names::POLL_ERRORS, "account" => account.to_owned(), "kind" => kind::of_pass(e))
            .increment(1),
    }
    let (waiting, kept) = status::pass_finished(account, result.as_ref());
    if let (Some(waiting), Some(kept)) = (waiting, kept) {
        gauge!(names::WAITING, &a).set(waiting as f64);
        gauge!(names::KEPT, &a).set(kept as f64);
    }
}

/// The account's next pass is due at `at` (a poller's clock); `backing_off` while its logins
/// are refused. For the status page.
pub fn next_pass(account: &str, at: tokio::time::Instant, backing_off: bool) {
    let wait = at.saturating_duration_since(tokio::time::Instant::now());
    status::next_pass(account, SystemTime::now() + wait, backing_off);
}

/// The account's OAuth2 access token is valid until `expires` (unix time, in
/// `mailferry_oauth_token_expiry_seconds`).
pub fn oauth_token_expiry(account: &str, expires: SystemTime) {
    let at = expires.duration_since(UNIX_EPOCH).unwrap_or_default();
    gauge!(names::TOKEN_EXPIRY, &account_label(account)).set(at.as_secs_f64());
}

/// No OAuth2 access token could be had for the account; `reason` is `refused` (the grant
/// is refused: run `mailferry oauth login` again, or fix the client) or `unreachable`
/// (the token endpoint could not be asked, or answered nonsense).
pub fn oauth_failure(account: &str, reason: &'static str) {
    counter!(names::OAUTH_FAILURES, "account" => account.to_owned(), "reason" => reason)
        .increment(1);
}

/// The server refused an account's login (wrong credentials): the account shows as failing
/// (`mailferry_login_refused` 1) until a login is accepted. The pass itself is counted in
/// `mailferry_poll_errors_total{kind="login"}`.
pub fn login_refused(account: &str) {
    login_refused_now(account, true);
}

/// Whether the account's logins are being refused now (`mailferry_login_refused`).
pub fn login_refused_now(account: &str, refused: bool) {
    gauge!(names::LOGIN_REFUSED, &account_label(account)).set(if refused { 1.0 } else { 0.0 });
}
