//! The metrics listener: `/metrics` (Prometheus), `/healthz` (alive), `/readyz` (ready to
//! deliver) and `/` (the status page). One HTTP/1.x request per connection, read-only.

use std::net::SocketAddr;
use std::time::{Duration, SystemTime};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::state::StateStore;

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

/// Binds the listener for /metrics, /healthz, /readyz and the status page; serve it with
/// [`serve`].
pub async fn bind(addr: SocketAddr) -> Result<TcpListener, MetricsError> {
    super::install();
    TcpListener::bind(addr)
        .await
        .map_err(|source| MetricsError::Bind { addr, source })
}

/// Answers HTTP requests on `listener` until the task is dropped; the status page lists the
/// quarantined messages of `store`.
pub async fn serve<St: StateStore>(listener: TcpListener, store: St) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                tokio::spawn(answer(stream, store.clone()));
            }
            Err(e) => {
                tracing::warn!("metrics listener: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// One HTTP/1.x request, one response, then close: scrapers and browsers need nothing more.
async fn answer<St: StateStore>(mut stream: TcpStream, store: St) {
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
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    // A query string changes nothing: the page is the same for every visitor.
    let path = target.split('?').next().unwrap_or("");
    let text = "text/plain; charset=utf-8";
    let (status, content_type, body) = match (method, path) {
        ("GET", "/metrics") => ("200 OK", "text/plain; version=0.0.4", super::render()),
        ("GET", "/healthz") => ("200 OK", text, "ok\n".to_string()),
        ("GET", "/readyz") => match super::readiness() {
            Ok(()) => ("200 OK", text, "ready\n".to_string()),
            Err(why) => (
                "503 Service Unavailable",
                text,
                format!("not ready: {}\n", why.join("; ")),
            ),
        },
        ("GET", "/") => {
            let quarantine = store.quarantined().await.map_err(|e| e.to_string());
            let page = super::page::render(
                &super::status::snapshot(),
                &quarantine,
                super::readiness(),
                SystemTime::now(),
            );
            ("200 OK", "text/html; charset=utf-8", page)
        }
        ("GET", _) => ("404 Not Found", text, "not found\n".to_string()),
        _ => (
            "405 Method Not Allowed",
            text,
            "method not allowed\n".to_string(),
        ),
    };
    // The page is read-only and has no script: a strict policy keeps anything injected inert.
    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\
         Content-Security-Policy: default-src 'none'; style-src 'unsafe-inline'\r\n\
         X-Content-Type-Options: nosniff\r\nCache-Control: no-store\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = stream.write_all(response.as_bytes()).await;
    let _ = stream.shutdown().await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::memory::MemoryStore;

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
    async fn serves_metrics_health_readiness_and_the_status_page() {
        let listener = bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(serve(listener, MemoryStore::new()));
        super::super::message_fetched("unit-test-account", 10);

        let metrics = get(addr, "/metrics").await;
        assert!(metrics.starts_with("HTTP/1.1 200"), "{metrics}");
        assert!(
            metrics.contains("mailferry_messages_fetched_total{account=\"unit-test-account\"} 1"),
            "{metrics}"
        );
        assert!(
            metrics.contains("# HELP mailferry_messages_fetched_total Messages downloaded"),
            "{metrics}"
        );
        assert!(
            metrics.contains(
                "mailferry_message_size_bytes_bucket{account=\"unit-test-account\",le=\"1024\"} 1"
            ),
            "a histogram with buckets, not a summary: {metrics}"
        );
        assert!(get(addr, "/healthz").await.starts_with("HTTP/1.1 200"));
        super::super::set_ready(false);
        assert!(get(addr, "/readyz").await.starts_with("HTTP/1.1 503"));
        // 200 again depends on the relay too, which other tests in this process fail on
        // purpose: tests/operations.rs checks it against a real one.
        super::super::set_ready(true);
        let page = get(addr, "/").await;
        assert!(page.starts_with("HTTP/1.1 200"), "{page}");
        assert!(page.contains("text/html"), "{page}");
        assert!(get(addr, "/nope").await.starts_with("HTTP/1.1 404"));
    }
}
