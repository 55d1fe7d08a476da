//! `proxy:` of an account: the SOCKS5 or HTTP CONNECT proxy its upstream connection goes
//! through, written as a URL. Pure: parsing and the redacted form every message uses (the
//! proxy password never shows).

use std::fmt;

use super::Password;

/// The kind of proxy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyKind {
    /// `socks5://` (RFC 1928, user/password RFC 1929); the proxy resolves host names
    /// (SOCKS5h), so the gateway needs no DNS for the upstream.
    Socks5,
    /// `http://`: an HTTP proxy's `CONNECT host:port` tunnel (RFC 9110 9.3.6).
    HttpConnect,
}

/// A validated `proxy:` URL.
#[derive(Clone, PartialEq, Eq)]
pub struct Proxy {
    /// SOCKS5 or HTTP CONNECT.
    pub kind: ProxyKind,
    /// The proxy's host name or IP address (brackets of an IPv6 literal removed).
    pub host: String,
    /// The proxy's port.
    pub port: u16,
    /// User name and password for the proxy, if the URL has them (percent-decoded).
    pub credentials: Option<(String, Password)>,
}

impl fmt::Debug for Proxy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Proxy({self})")
    }
}

/// The URL with the password blanked: `socks5://user:***@host:port`.
impl fmt::Display for Proxy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = match self.kind {
            ProxyKind::Socks5 => "socks5",
            ProxyKind::HttpConnect => "http",
        };
        write!(f, "{scheme}://")?;
        if let Some((user, _)) = &self.credentials {
            write!(f, "{user}:***@")?;
        }
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

impl Proxy {
    /// Parses `socks5://[user:pass@]host:port` or `http://[user:pass@]host:port`. The error
    /// says what is wrong without repeating the password.
    pub fn parse(url: &str) -> Result<Proxy, String> {
        let shown = redact_url(url);
        let (kind, rest) = if let Some(rest) = strip_scheme(url, "socks5h://") {
            (ProxyKind::Socks5, rest)
        } else if let Some(rest) = strip_scheme(url, "socks5://") {
            (ProxyKind::Socks5, rest)
        } else if let Some(rest) = strip_scheme(url, "http://") {
            (ProxyKind::HttpConnect, rest)
        } else {
            let scheme = url.split_once("://").map_or("", |(s, _)| s);
            return Err(if scheme.is_empty() {
                format!(
                    "`{shown}` is not a proxy URL; write socks5://host:port or http://host:port"
                )
            } else {
                format!(
                    "the scheme `{scheme}` is not supported; use socks5:// (SOCKS5, names resolved by the proxy) or http:// (HTTP CONNECT)"
                )
            });
        };
        // Nothing after host:port (a path, a query) has a meaning for a proxy.
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        if rest.contains(['/', '?', '#']) {
            return Err(format!(
                "`{shown}`: a proxy URL is only scheme://[user:password@]host:port, without a path"
            ));
        }
        let (userinfo, hostport) = match rest.rsplit_once('@') {
            Some((u, h)) => (Some(u), h),
            None => (None, rest),
        };
        let credentials = match userinfo {
            None => None,
            Some(u) => {
                let (user, pass) = u.split_once(':').unwrap_or((u, ""));
                let user = percent_decode(user).ok_or_else(|| {
                    format!("`{shown}`: the user name is not valid UTF-8 percent-encoding")
                })?;
                let pass = percent_decode(pass).ok_or_else(|| {
                    format!("`{shown}`: the password is not valid UTF-8 percent-encoding")
                })?;
                if user.is_empty() {
                    return Err(format!("`{shown}`: the user name before `:` is empty"));
                }
                // SOCKS5 user/password authentication carries at most 255 bytes of each.
                if kind == ProxyKind::Socks5 && (user.len() > 255 || pass.len() > 255) {
                    return Err(format!(
                        "`{shown}`: SOCKS5 allows at most 255 bytes of user name and of password"
                    ));
                }
                if user.contains(['\r', '\n', '\0']) || pass.contains(['\r', '\n', '\0']) {
                    return Err(format!(
                        "`{shown}`: the credentials contain a line break or NUL"
                    ));
                }
                Some((user, Password::new(pass)))
            }
        };
        let (host, port) = split_host_port(hostport).ok_or_else(|| {
            format!(
                "`{shown}` has no port: write {}://host:port",
                scheme_of(kind)
            )
        })?;
        if host.is_empty() {
            return Err(format!("`{shown}` has no host"));
        }
        let port = match port.parse::<u16>() {
            Ok(p) if p > 0 => p,
            _ => return Err(format!("`{shown}`: `{port}` is not a port (1..=65535)")),
        };
        Ok(Proxy {
            kind,
            host: host.to_ascii_lowercase(),
            port,
            credentials,
        })
    }
}

fn scheme_of(kind: ProxyKind) -> &'static str {
    match kind {
        ProxyKind::Socks5 => "socks5",
        ProxyKind::HttpConnect => "http",
    }
}

/// The rest after `scheme`, compared without regard to letter case.
fn strip_scheme<'a>(url: &'a str, scheme: &str) -> Option<&'a str> {
    let head = url.get(..scheme.len())?;
    head.eq_ignore_ascii_case(scheme)
        .then(|| &url[scheme.len()..])
}

/// `host:port` or `[v6]:port`; `None` when there is no port.
fn split_host_port(text: &str) -> Option<(&str, &str)> {
    if let Some(v6) = text.strip_prefix('[') {
        let (host, rest) = v6.split_once(']')?;
        return Some((host, rest.strip_prefix(':')?));
    }
    let (host, port) = text.rsplit_once(':')?;
    if host.contains(':') || port.is_empty() {
        return None;
    }
    Some((host, port))
}

/// `%XX` decoded; `None` on a bad escape or a result that is not UTF-8.
fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = text.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// `url` with whatever stands between `user:` and `@` blanked, for messages about a URL
/// that may not parse.
pub fn redact_url(url: &str) -> String {
    let (scheme, rest) = match url.split_once("://") {
        Some((s, r)) => (format!("{s}://"), r),
        None => (String::new(), url),
    };
    match rest.rsplit_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split_once(':').map_or(userinfo, |(u, _)| u);
            format!("{scheme}{user}:***@{host}")
        }
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn socks5_and_http_urls_parse_with_and_without_credentials() {
        let p = Proxy::parse("socks5://127.0.0.1:1080").unwrap();
        assert_eq!(p.kind, ProxyKind::Socks5);
        assert_eq!((p.host.as_str(), p.port), ("127.0.0.1", 1080));
        assert!(p.credentials.is_none());

        let p = Proxy::parse("http://al%40ice:p%3Ass@Proxy.Corp:3128/").unwrap();
        assert_eq!(p.kind, ProxyKind::HttpConnect);
        assert_eq!((p.host.as_str(), p.port), ("proxy.corp", 3128));
        let (user, pass) = p.credentials.clone().unwrap();
        assert_eq!((user.as_str(), pass.expose()), ("al@ice", "p:ss"));
        assert_eq!(p.to_string(), "http://al@ice:***@proxy.corp:3128");
        assert!(!format!("{p:?}").contains("p:ss"));

        let p = Proxy::parse("socks5h://[::1]:9050").unwrap();
        assert_eq!((p.host.as_str(), p.port), ("::1", 9050));
        assert_eq!(p.to_string(), "socks5://[::1]:9050");
    }

    #[test]
    fn bad_urls_are_refused_without_showing_the_password() {
        for (url, needle) in [
            ("https://u:hunter2@h:1", "scheme `https` is not supported"),
            ("socks4://h:1", "scheme `socks4`"),
            ("socks5://u:hunter2@host", "has no port"),
            ("http://u:hunter2@host:0", "is not a port"),
            ("http://u:hunter2@host:99999", "is not a port"),
            ("http://u:hunter2@:80", "has no host"),
            ("host:80", "is not a proxy URL"),
            ("http://host:80/path", "without a path"),
            ("socks5://:hunter2@host:1", "user name before `:` is empty"),
            ("socks5://u:hunter2%zz@host:1", "percent-encoding"),
        ] {
            let e = Proxy::parse(url).unwrap_err();
            assert!(e.contains(needle), "{url}: {e}");
            assert!(!e.contains("hunter2"), "{url}: {e}");
        }
        assert_eq!(redact_url("socks5://u:hunter2@h:1"), "socks5://u:***@h:1");
        assert_eq!(redact_url("socks5://h:1"), "socks5://h:1");
    }
}
