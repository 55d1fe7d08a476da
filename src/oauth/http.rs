//! The HTTP under the `oauth2` crate: [`Http`], its [`AsyncHttpClient`], sends each request
//! the crate builds (a form POST to a token or device endpoint) as one HTTP/1.1 exchange of
//! the project's own, and reads the reply whole. HTTPS through the project's TLS setup
//! (`src/tls/`: the system store plus `oauth.ca_file`, certificate errors in words); plain
//! HTTP only to this host. Through the account's `proxy:` when it has one ([`Route`]), with
//! the tunnel of `src/fetch/proxy.rs`. `parse_response` is free of I/O.
//!
//! Not the crate's own clients (reqwest, curl, ureq): each is another HTTP stack with its
//! own TLS set-up, trust and proxy code, where every other connection of mailferry goes
//! through `src/tls/` and the tunnel of `src/fetch/proxy.rs`.

use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::Duration;

use oauth2::{AsyncHttpClient, HttpRequest, HttpResponse, http};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Notify;

use super::OAuthError;
use crate::config::{Proxy, TlsOptions};
use crate::fetch::proxy::tunnel;
use crate::tls::TlsClient;

/// The largest reply read (token replies are a few KiB).
const REPLY_MAX: usize = 256 * 1024;

/// A token or device endpoint, split up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// `https://` (else `http://`).
    pub https: bool,
    /// The host name or IP address (IPv6 without brackets).
    pub host: String,
    /// The port (443 / 80 by default).
    pub port: u16,
    /// The path and query, `/` at least.
    pub path: String,
}

impl Endpoint {
    /// Splits `scheme://host[:port][/path]`; the error says what is wrong.
    pub fn parse(url: &str) -> Result<Endpoint, String> {
        let (https, rest) = if let Some(rest) = url.strip_prefix("https://") {
            (true, rest)
        } else if let Some(rest) = url.strip_prefix("http://") {
            (false, rest)
        } else {
            return Err(format!("`{url}` is not an https:// URL"));
        };
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        if authority.contains('@') {
            return Err(format!("`{url}`: credentials do not belong in the URL"));
        }
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let (host, after) = v6
                .split_once(']')
                .ok_or_else(|| format!("`{url}`: unclosed [ in the host"))?;
            (host, after.strip_prefix(':'))
        } else {
            match authority.rsplit_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (authority, None),
            }
        };
        let port = match port {
            None => {
                if https {
                    443
                } else {
                    80
                }
            }
            Some(p) => p
                .parse::<u16>()
                .ok()
                .filter(|p| *p > 0)
                .ok_or_else(|| format!("`{url}`: `{p}` is not a port"))?,
        };
        if host.is_empty() || host.bytes().any(|b| b.is_ascii_whitespace() || b < 0x21) {
            return Err(format!("`{url}` has no host"));
        }
        if path
            .bytes()
            .any(|b| b.is_ascii_whitespace() || b.is_ascii_control())
        {
            return Err(format!("`{url}`: spaces or control characters in the path"));
        }
        Ok(Endpoint {
            https,
            host: host.to_ascii_lowercase(),
            port,
            path: path.to_owned(),
        })
    }

    /// `host[:port]` for the Host header (the port when it is not the scheme's).
    fn authority(&self) -> String {
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        match (self.https, self.port) {
            (true, 443) | (false, 80) => host,
            (_, port) => format!("{host}:{port}"),
        }
    }

    /// Whether the host is this machine (127.0.0.0/8, ::1, localhost).
    pub fn is_loopback(&self) -> bool {
        self.host == "localhost" || self.host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
    }
}

/// How a token endpoint is reached: through the account's `proxy:` if it has one (a gateway
/// that reaches the internet only through it gets its tokens the same way; the relay's
/// tokens go direct), with the TLS trust in `tls`.
#[derive(Debug, Clone, Default)]
pub struct Route {
    /// The account's proxy.
    pub proxy: Option<Proxy>,
    /// Trust for an https endpoint.
    pub tls: TlsOptions,
}

impl Route {
    /// The route to `oauth`'s endpoints: through `proxy`, if any, trusting the system store
    /// plus `oauth.ca_file`.
    pub fn of(oauth: &crate::config::OAuthConfig, proxy: Option<Proxy>) -> Route {
        Route {
            proxy,
            tls: TlsOptions {
                ca_file: oauth.ca_file.clone(),
                ..TlsOptions::default()
            },
        }
    }
}

/// A reply: its status code, headers and body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// The HTTP status (200, 400, ...).
    pub status: u16,
    /// The headers, names and values as sent.
    pub headers: Vec<(String, String)>,
    /// The body, de-chunked.
    pub body: Vec<u8>,
}

/// Sends `request` (a whole HTTP/1.1 request) to `endpoint` by `route` and reads the reply
/// until the server closes, the whole exchange (the tunnel included) within `timeout`. The
/// error says what failed and names the proxy (redacted), never the request (it holds
/// secrets).
async fn post(
    route: &Route,
    endpoint: &Endpoint,
    request: &[u8],
    timeout: Duration,
) -> Result<Vec<u8>, String> {
    let exchange = async {
        let host = endpoint.host.as_str();
        let tcp = match &route.proxy {
            None => TcpStream::connect((host, endpoint.port))
                .await
                .map_err(|e| format!("cannot connect: {e}"))?,
            Some(proxy) => {
                let mut tcp = TcpStream::connect((proxy.host.as_str(), proxy.port))
                    .await
                    .map_err(|e| format!("cannot connect to the proxy {proxy}: {e}"))?;
                tunnel(&mut tcp, proxy, host, endpoint.port)
                    .await
                    .map_err(|e| e.to_string())?;
                tcp
            }
        };
        if endpoint.https {
            let tls = TlsClient::new(&route.tls, host).map_err(|e| e.to_string())?;
            let stream = tls.connect(tcp).await.map_err(|e| e.to_string())?;
            exchange(stream, request).await
        } else {
            exchange(tcp, request).await
        }
        .map_err(|e| format!("I/O error: {e}"))
    };
    match tokio::time::timeout(timeout, exchange).await {
        Ok(result) => result,
        Err(_) => Err(format!("no reply within {timeout:?}")),
    }
}

/// Writes the request and reads until the server closes (`Connection: close`).
async fn exchange<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(
    mut stream: S,
    request: &[u8],
) -> std::io::Result<Vec<u8>> {
    stream.write_all(request).await?;
    stream.flush().await?;
    let mut raw = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        let n = match stream.read(&mut chunk).await {
            Ok(n) => n,
            // A TLS peer that closes without close_notify: what came is all there is.
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof && !raw.is_empty() => 0,
            Err(e) => return Err(e),
        };
        if n == 0 {
            return Ok(raw);
        }
        raw.extend_from_slice(&chunk[..n]);
        if raw.len() > REPLY_MAX {
            return Err(std::io::Error::other(format!(
                "the reply is longer than {REPLY_MAX} bytes"
            )));
        }
    }
}

/// Parses a whole HTTP/1.x response: status line, headers, and the body by
/// `Content-Length`, chunked, or up to the end.
pub fn parse_response(raw: &[u8]) -> Result<Reply, String> {
    let head_end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or("the reply is not HTTP (no end of headers)")?;
    let head =
        std::str::from_utf8(&raw[..head_end]).map_err(|_| "the reply's headers are not text")?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let mut words = status_line.split(' ');
    let status = match (words.next(), words.next()) {
        (Some(v), Some(code)) if v.starts_with("HTTP/1.") => code
            .parse::<u16>()
            .map_err(|_| format!("bad status line `{status_line}`"))?,
        _ => return Err(format!("the reply is not HTTP: `{status_line}`")),
    };
    let mut length = None;
    let mut chunked = false;
    let mut headers = Vec::new();
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        headers.push((name.trim().to_owned(), value.to_owned()));
        if name.eq_ignore_ascii_case("content-length") {
            length = Some(value.parse::<usize>().map_err(|_| "bad Content-Length")?);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = value.to_ascii_lowercase().contains("chunked");
        }
    }
    let rest = &raw[head_end + 4..];
    let body = if chunked {
        dechunk(rest)?
    } else if let Some(n) = length {
        rest.get(..n)
            .ok_or("the reply ended before its Content-Length")?
            .to_vec()
    } else {
        rest.to_vec()
    };
    Ok(Reply {
        status,
        headers,
        body,
    })
}

fn dechunk(mut rest: &[u8]) -> Result<Vec<u8>, String> {
    let mut body = Vec::new();
    loop {
        let line_end = rest
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or("a chunk size line is cut off")?;
        let size_text = std::str::from_utf8(&rest[..line_end]).map_err(|_| "bad chunk size")?;
        let size_text = size_text.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size_text, 16).map_err(|_| "bad chunk size")?;
        rest = &rest[line_end + 2..];
        if size == 0 {
            return Ok(body);
        }
        let chunk = rest.get(..size).ok_or("a chunk is cut off")?;
        body.extend_from_slice(chunk);
        rest = rest.get(size + 2..).ok_or("a chunk is cut off")?;
    }
}

/// Why an exchange with a token endpoint failed before any reply: connect, proxy, TLS,
/// timeout, not HTTP. It names the endpoint, never the request (it holds secrets).
#[derive(Debug, Clone, thiserror::Error)]
#[error("{endpoint}: {why}")]
pub struct Transport {
    /// `host:port`.
    pub endpoint: String,
    /// What went wrong.
    pub why: String,
}

impl From<Transport> for OAuthError {
    fn from(t: Transport) -> OAuthError {
        OAuthError::Unreachable {
            endpoint: t.endpoint,
            why: t.why,
        }
    }
}

/// The HTTP client the `oauth2` crate runs its requests on ([`AsyncHttpClient`]): each
/// request one HTTP/1.1 exchange by [`Route`] (through the account's proxy, TLS by
/// `src/tls/`), within a timeout. It remembers the status of the last reply, for errors
/// about replies that are not OAuth2, and its last failure, so that a caller whose flow
/// would retry one (the device-code polling) can stop instead.
#[derive(Debug)]
pub struct Http {
    route: Route,
    timeout: Duration,
    status: AtomicU16,
    failed: Mutex<Option<Transport>>,
    broke: Notify,
}

impl Http {
    /// A client sending by `route`, each exchange within `timeout`.
    pub fn new(route: &Route, timeout: Duration) -> Http {
        Http {
            route: route.clone(),
            timeout,
            status: AtomicU16::new(0),
            failed: Mutex::new(None),
            broke: Notify::new(),
        }
    }

    /// The status of the last reply (0 before any).
    pub fn status(&self) -> u16 {
        self.status.load(Ordering::Relaxed)
    }

    /// Waits for an exchange to fail and returns why.
    pub async fn broken(&self) -> Transport {
        loop {
            self.broke.notified().await;
            if let Some(t) = self.failed.lock().ok().and_then(|f| f.clone()) {
                return t;
            }
        }
    }

    async fn send(&self, request: HttpRequest) -> Result<HttpResponse, Transport> {
        let result = self.exchange(request).await;
        match &result {
            Ok(reply) => self
                .status
                .store(reply.status().as_u16(), Ordering::Relaxed),
            Err(t) => {
                if let Ok(mut failed) = self.failed.lock() {
                    *failed = Some(t.clone());
                }
                self.broke.notify_one();
            }
        }
        result
    }

    async fn exchange(&self, request: HttpRequest) -> Result<HttpResponse, Transport> {
        let url = request.uri().to_string();
        let endpoint = Endpoint::parse(&url).map_err(|why| Transport {
            endpoint: url.clone(),
            why,
        })?;
        let fail = |why: String| Transport {
            endpoint: format!("{}:{}", endpoint.host, endpoint.port),
            why,
        };
        let mut head = format!(
            "{} {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: mailferry\r\n",
            request.method(),
            endpoint.path,
            endpoint.authority()
        );
        for (name, value) in request.headers() {
            let value = value
                .to_str()
                .map_err(|_| fail(format!("the {name} header is not text")))?;
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        head.push_str(&format!(
            "Content-Length: {}\r\nConnection: close\r\n\r\n",
            request.body().len()
        ));
        let mut bytes = head.into_bytes();
        bytes.extend_from_slice(request.body());
        let raw = post(&self.route, &endpoint, &bytes, self.timeout)
            .await
            .map_err(fail)?;
        let reply = parse_response(&raw).map_err(fail)?;
        let mut response = http::Response::builder().status(reply.status);
        for (name, value) in &reply.headers {
            response = response.header(name.as_str(), value.as_str());
        }
        response
            .body(reply.body)
            .map_err(|_| fail(format!("HTTP {}: a header that is not HTTP", reply.status)))
    }
}

impl<'c> AsyncHttpClient<'c> for Http {
    type Error = Transport;
    type Future = Pin<Box<dyn Future<Output = Result<HttpResponse, Transport>> + Send + 'c>>;

    fn call(&'c self, request: HttpRequest) -> Self::Future {
        Box::pin(self.send(request))
    }
}
