//! Metric names, the one place that records them, and the HTTP listener that serves them.
//!
//! Every stage reports through the functions here, so that names and label values stay a
//! small fixed set: the only free label is `account`, whose values come from the
//! configuration (never from a message or a server).

use std::net::SocketAddr;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use metrics::{counter, gauge};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Why the metrics listener could not start.
#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    /// The listen address could not be bound.
    #[error("cannot listen for metrics on {addr}: {source}")]
    Bind {
        /// `metrics.listen`.
        addr: SocketAddr,
        /// What the operating system said.
        source: std::io::Error,
    },
}

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
static READY: AtomicBool = AtomicBool::new(false);
/// Cleared while the state store refuses writes: not ready then, whatever `READY` says.
static STORE_WRITABLE: AtomicBool = AtomicBool::new(true);

/// Installs the Prometheus recorder (once per process) and returns its handle.
pub fn install() -> &'static PrometheusHandle {
    HANDLE.get_or_init(|| {
        let recorder = PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        // Fails only if another recorder is installed already (a test harness): then the
        // handle still renders this recorder's (empty) view, which is harmless.
        let _ = metrics::set_global_recorder(recorder);
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
    gauge!("mailferry_state_store_writable").set(if writable { 1.0 } else { 0.0 });
}

/// Ready: started, and the state store takes writes.
fn is_ready() -> bool {
    READY.load(Ordering::SeqCst) && STORE_WRITABLE.load(Ordering::SeqCst)
}

/// A message was quarantined (left upstream, no longer tried); `reason` is one of a fixed
/// set: `attempts` (failed too often), `refused` (refused for good, the postmaster's copy
/// too), `too_large`, `unreadable`, `loop` (more of mailferry's trace headers than `max_hops`).
pub fn message_quarantined(account: &str, reason: &'static str) {
    counter!("mailferry_messages_quarantined_total", "account" => account.to_string(), "reason" => reason)
        .increment(1);
}

/// Messages of the account in quarantine now (forgotten ones not counted).
pub fn quarantined_now(account: &str, count: usize) {
    gauge!("mailferry_quarantined_messages", "account" => account.to_string()).set(count as f64);
}

/// A message was downloaded from an upstream mailbox.
pub fn message_fetched(account: &str, bytes: usize) {
    counter!("mailferry_messages_fetched_total", "account" => account.to_string()).increment(1);
    counter!("mailferry_fetched_bytes_total", "account" => account.to_string())
        .increment(bytes as u64);
}

/// The outcome for one recipient of one message: `delivered`, `rerouted` (refused for good,
/// sent to the postmaster), `temporary` (to be retried), `skipped` (done in an earlier pass).
pub fn recipient_outcome(account: &str, outcome: &'static str) {
    counter!("mailferry_recipients_total", "account" => account.to_string(), "outcome" => outcome)
        .increment(1);
}

/// An address in an accepted domain was not sent as written (`route::Routing::refused`);
/// `reason` is `route::Refusal::label()`: `source_routed`, `undecodable` or `unsendable`.
pub fn addresses_refused(account: &str, reason: &'static str) {
    counter!("mailferry_addresses_refused_total", "account" => account.to_string(), "reason" => reason)
        .increment(1);
}

/// A message could not be settled in this pass; `reason` is one of a fixed set
/// (`relay`, `retrieve`, `temporary`, `refused`, `state`).
pub fn message_failed(account: &str, reason: &'static str) {
    counter!("mailferry_messages_failed_total", "account" => account.to_string(), "reason" => reason)
        .increment(1);
}

/// Upstream copies deleted (committed by QUIT).
pub fn upstream_deleted(account: &str, count: usize) {
    counter!("mailferry_upstream_deleted_total", "account" => account.to_string())
        .increment(count as u64);
}

/// A poll pass of one account ended.
pub fn pass_finished(account: &str, ok: bool, elapsed: Duration, upstream_messages: Option<usize>) {
    let result = if ok { "ok" } else { "failed" };
    counter!("mailferry_passes_total", "account" => account.to_string(), "result" => result)
        .increment(1);
    gauge!("mailferry_last_pass_duration_seconds", "account" => account.to_string())
        .set(elapsed.as_secs_f64());
    if ok {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        gauge!("mailferry_last_success_timestamp_seconds", "account" => account.to_string())
            .set(now.as_secs_f64());
    }
    if let Some(n) = upstream_messages {
        gauge!("mailferry_upstream_messages", "account" => account.to_string()).set(n as f64);
    }
}

/// The account's OAuth2 access token is valid until `expires` (unix time, in
/// `mailferry_oauth_token_expiry_seconds`).
pub fn oauth_token_expiry(account: &str, expires: SystemTime) {
    let at = expires.duration_since(UNIX_EPOCH).unwrap_or_default();
    gauge!("mailferry_oauth_token_expiry_seconds", "account" => account.to_string())
        .set(at.as_secs_f64());
}

/// No OAuth2 access token could be had for the account; `reason` is `refused` (the grant
/// is refused: run `mailferry oauth login` again, or fix the client) or `unreachable`
/// (the token endpoint could not be asked, or answered nonsense).
pub fn oauth_failure(account: &str, reason: &'static str) {
    counter!("mailferry_oauth_failures_total", "account" => account.to_string(), "reason" => reason)
        .increment(1);
}

/// The server refused an account's login (wrong credentials): counted, and the account
/// shows as failing (`mailferry_login_refused` 1) until a login is accepted.
pub fn login_refused(account: &str) {
    counter!("mailferry_auth_failures_total", "account" => account.to_string()).increment(1);
    login_refused_now(account, true);
}

/// Whether the account's logins are being refused now (`mailferry_login_refused`).
pub fn login_refused_now(account: &str, refused: bool) {
    gauge!("mailferry_login_refused", "account" => account.to_string()).set(if refused {
        1.0
    } else {
        0.0
    });
}

/// Binds the listener for /metrics, /healthz and /readyz; serve it with [`serve`].
pub async fn bind(addr: SocketAddr) -> Result<TcpListener, MetricsError> {
    install();
    TcpListener::bind(addr)
        .await
        .map_err(|source| MetricsError::Bind { addr, source })
}

/// Answers HTTP requests on `listener` until the task is dropped.
pub async fn serve(listener: TcpListener) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                tokio::spawn(answer(stream));
            }
            Err(e) => {
                tracing::warn!("metrics listener: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// One HTTP/1.x request, one response, then close: scrapers need nothing more.
async fn answer(mut stream: TcpStream) {
    let mut buf = vec![0u8; 4096];
    let mut len = 0;
    // Read until the end of the request head, with a size and time bound.
    let read = tokio::time::timeout(Duration::from_secs(5), async {
        while len < buf.len() {
            match stream.read(&mut buf[len..]).await {
                Ok(0) | Err(_) => break,
                Ok(n) => len += n,
            }
            if buf[..len].windows(4).any(|w| w == b"\r\n\r\n")
                || buf[..len].windows(2).any(|w| w == b"\n\n")
            {
                break;
            }
        }
    })
    .await;
    if read.is_err() {
        return;
    }
    let head = String::from_utf8_lossy(&buf[..len]);
    let mut parts = head.split_whitespace();
    let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let (status, content_type, body) = match (method, path) {
        ("GET", "/metrics") => ("200 OK", "text/plain; version=0.0.4", render()),
        ("GET", "/healthz") => ("200 OK", "text/plain", "ok\n".to_string()),
        ("GET", "/readyz") if is_ready() => ("200 OK", "text/plain", "ready\n".to_string()),
        ("GET", "/readyz") => (
            "503 Service Unavailable",
            "text/plain",
            "not ready\n".to_string(),
        ),
        ("GET", _) => ("404 Not Found", "text/plain", "not found\n".to_string()),
        _ => (
            "405 Method Not Allowed",
            "text/plain",
            "method not allowed\n".to_string(),
        ),
    };
    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = stream.write_all(response.as_bytes()).await;
    let _ = stream.shutdown().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn get(addr: SocketAddr, path: &str) -> String {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
            .await
            .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        out
    }

    #[tokio::test]
    async fn serves_metrics_health_and_readiness() {
        let listener = bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(serve(listener));
        message_fetched("unit-test-account", 10);

        let metrics = get(addr, "/metrics").await;
        assert!(metrics.starts_with("HTTP/1.1 200"), "{metrics}");
        assert!(
            metrics.contains("mailferry_messages_fetched_total{account=\"unit-test-account\"} 1"),
            "{metrics}"
        );
        assert!(get(addr, "/healthz").await.starts_with("HTTP/1.1 200"));
        set_ready(false);
        assert!(get(addr, "/readyz").await.starts_with("HTTP/1.1 503"));
        set_ready(true);
        assert!(get(addr, "/readyz").await.starts_with("HTTP/1.1 200"));
        assert!(get(addr, "/nope").await.starts_with("HTTP/1.1 404"));
    }
}
