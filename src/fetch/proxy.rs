//! The tunnel through an account's `proxy:` to its upstream server: SOCKS5 (RFC 1928, with
//! user/password authentication of RFC 1929; the proxy resolves the host name) or an HTTP
//! proxy's CONNECT. Requests are built and replies parsed by pure functions; [`tunnel`] runs
//! them over the TCP connection to the proxy. TLS to the upstream then runs inside the tunnel.
//!
//! No message here shows the proxy password: the proxy is named by its redacted URL.

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::config::{Proxy, ProxyKind};

/// Why the tunnel through the proxy could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// The proxy wants credentials and the URL has none, or offers no method we speak.
    #[error("the proxy {proxy} accepts none of the authentication methods offered ({offered}){}",
        if *offered == "none" { "; it probably requires a user name and password in the proxy URL" } else { "" })]
    NoMethod {
        /// The proxy, redacted.
        proxy: String,
        /// What mailferry offered.
        offered: &'static str,
    },
    /// The proxy refused the user name or password.
    #[error(
        "the proxy {proxy} refused the user name or password (check the credentials in the proxy URL)"
    )]
    AuthRefused {
        /// The proxy, redacted.
        proxy: String,
    },
    /// The proxy would not connect to the upstream server.
    #[error("the proxy {proxy} could not connect to {target}: {why}")]
    ConnectRefused {
        /// The proxy, redacted.
        proxy: String,
        /// `host:port` of the upstream.
        target: String,
        /// The proxy's reason, in words.
        why: String,
    },
    /// The proxy answered something that is not the protocol.
    #[error("the proxy {proxy} answered something that is not {protocol}: {what}")]
    Protocol {
        /// The proxy, redacted.
        proxy: String,
        /// `SOCKS5` or `HTTP`.
        protocol: &'static str,
        /// What was wrong.
        what: String,
    },
    /// Reading from or writing to the proxy failed.
    #[error("talking to the proxy {proxy}: {source}")]
    Io {
        /// The proxy, redacted.
        proxy: String,
        /// What the operating system said.
        source: std::io::Error,
    },
}

/// The longest HTTP response head to CONNECT accepted.
const HTTP_HEAD_MAX: usize = 8 * 1024;

/// The SOCKS5 greeting: version 5, the methods offered (no authentication, or
/// user/password only when the URL has credentials).
pub fn socks5_greeting(with_credentials: bool) -> Vec<u8> {
    if with_credentials {
        // Only user/password: a proxy must not be able to downgrade to no authentication
        // when the administrator configured some (it would mean another proxy answers).
        vec![5, 1, 2]
    } else {
        vec![5, 1, 0]
    }
}

/// The method the proxy chose (its two-byte reply to the greeting).
pub fn socks5_method(reply: [u8; 2]) -> Result<u8, String> {
    match reply {
        [5, 0xff] => Err("no acceptable method".to_owned()),
        [5, method @ (0 | 2)] => Ok(method),
        [5, other] => Err(format!("it chose method {other}, which was not offered")),
        [v, _] => Err(format!("version {v} instead of 5")),
    }
}

/// RFC 1929: version 1, user name and password, each with its length.
pub fn socks5_auth_request(user: &str, password: &str) -> Vec<u8> {
    let (user, password) = (user.as_bytes(), password.as_bytes());
    let mut out = Vec::with_capacity(3 + user.len() + password.len());
    out.push(1);
    // The configuration refuses longer ones; cut rather than wrap should one get here.
    out.push(user.len().min(255) as u8);
    out.extend_from_slice(&user[..user.len().min(255)]);
    out.push(password.len().min(255) as u8);
    out.extend_from_slice(&password[..password.len().min(255)]);
    out
}

/// CONNECT to `host:port`: an IP literal as an address, anything else as a domain name
/// resolved by the proxy (SOCKS5h).
pub fn socks5_connect_request(host: &str, port: u16) -> Vec<u8> {
    let mut out = vec![5, 1, 0];
    match host.parse::<std::net::IpAddr>() {
        Ok(std::net::IpAddr::V4(ip)) => {
            out.push(1);
            out.extend_from_slice(&ip.octets());
        }
        Ok(std::net::IpAddr::V6(ip)) => {
            out.push(4);
            out.extend_from_slice(&ip.octets());
        }
        Err(_) => {
            let name = &host.as_bytes()[..host.len().min(255)];
            out.push(3);
            out.push(name.len() as u8);
            out.extend_from_slice(name);
        }
    }
    out.extend_from_slice(&port.to_be_bytes());
    out
}

/// The first four bytes of the CONNECT reply: `Ok(bytes of address and port that follow)`
/// on success, else the proxy's reason in words.
pub fn socks5_reply_head(head: [u8; 4]) -> Result<Result<usize, String>, String> {
    let [version, code, _, atyp] = head;
    if version != 5 {
        return Err(format!("version {version} instead of 5"));
    }
    let rest = match atyp {
        1 => 4 + 2,
        4 => 16 + 2,
        // A domain: its length byte is read first, by the caller, as part of this count.
        3 => 1,
        other => return Err(format!("address type {other}")),
    };
    let why = match code {
        0 => return Ok(Ok(rest)),
        1 => "general failure of the proxy",
        2 => "the proxy's rules do not allow this connection",
        3 => "the network is unreachable from the proxy",
        4 => "the host is unreachable from the proxy",
        5 => "the server refused the connection (nothing listens on that port?)",
        6 => "the connection timed out",
        7 => "the proxy does not support CONNECT",
        8 => "the proxy does not support this address type",
        _ => "an unknown error",
    };
    Ok(Err(format!("{why} (SOCKS5 reply {code})")))
}

/// The HTTP CONNECT request for `host:port`, with Basic credentials when given.
pub fn http_connect_request(host: &str, port: u16, credentials: Option<(&str, &str)>) -> String {
    let authority = if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    };
    let mut request = format!("CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n");
    if let Some((user, password)) = credentials {
        let token = crate::sasl::encode_base64(format!("{user}:{password}").as_bytes());
        request.push_str(&format!("Proxy-Authorization: Basic {token}\r\n"));
    }
    request.push_str("\r\n");
    request
}

/// What the status line of the CONNECT response says: `Ok(())` for 2xx, else the status
/// code and the reason phrase.
pub fn http_connect_status(head: &[u8]) -> Result<(), (Option<u16>, String)> {
    let line = head.split(|b| *b == b'\n').next().unwrap_or_default();
    let line = String::from_utf8_lossy(line).trim_end().to_owned();
    let mut words = line.splitn(3, ' ');
    let version = words.next().unwrap_or_default();
    let code = words.next().and_then(|c| c.parse::<u16>().ok());
    let reason = words.next().unwrap_or_default().to_owned();
    match code {
        Some(200..=299) if version.starts_with("HTTP/") => Ok(()),
        Some(code) if version.starts_with("HTTP/") => Err((Some(code), reason)),
        _ => Err((None, line)),
    }
}

/// Opens the tunnel to `host:port` over `stream`, a fresh connection to `proxy`. The caller
/// bounds the time it takes.
pub async fn tunnel<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    proxy: &Proxy,
    host: &str,
    port: u16,
) -> Result<(), ProxyError> {
    let shown = proxy.to_string();
    let io = |source| ProxyError::Io {
        proxy: shown.clone(),
        source,
    };
    let protocol = |protocol, what: String| ProxyError::Protocol {
        proxy: proxy.to_string(),
        protocol,
        what,
    };
    let target = if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    };
    match proxy.kind {
        ProxyKind::Socks5 => {
            let creds = proxy.credentials.as_ref();
            stream
                .write_all(&socks5_greeting(creds.is_some()))
                .await
                .map_err(io)?;
            let mut reply = [0u8; 2];
            stream.read_exact(&mut reply).await.map_err(io)?;
            match socks5_method(reply) {
                Ok(0) => {}
                Ok(_) => {
                    let Some((user, password)) = creds else {
                        return Err(protocol("SOCKS5", "it chose a method not offered".into()));
                    };
                    stream
                        .write_all(&socks5_auth_request(user, password.expose()))
                        .await
                        .map_err(io)?;
                    let mut status = [0u8; 2];
                    stream.read_exact(&mut status).await.map_err(io)?;
                    if status[1] != 0 {
                        return Err(ProxyError::AuthRefused { proxy: shown });
                    }
                }
                Err(_) if reply == [5, 0xff] => {
                    return Err(ProxyError::NoMethod {
                        proxy: shown,
                        offered: if creds.is_some() {
                            "user name and password"
                        } else {
                            "none"
                        },
                    });
                }
                Err(what) => return Err(protocol("SOCKS5", what)),
            }
            stream
                .write_all(&socks5_connect_request(host, port))
                .await
                .map_err(io)?;
            let mut head = [0u8; 4];
            stream.read_exact(&mut head).await.map_err(io)?;
            let mut rest = match socks5_reply_head(head) {
                Ok(Ok(rest)) => rest,
                Ok(Err(why)) => {
                    return Err(ProxyError::ConnectRefused {
                        proxy: shown,
                        target,
                        why,
                    });
                }
                Err(what) => return Err(protocol("SOCKS5", what)),
            };
            if head[3] == 3 {
                let mut len = [0u8; 1];
                stream.read_exact(&mut len).await.map_err(io)?;
                rest = usize::from(len[0]) + 2;
            }
            // The address the proxy bound: of no use to us, but it must be read off.
            let mut bound = vec![0u8; rest];
            stream.read_exact(&mut bound).await.map_err(io)?;
            Ok(())
        }
        ProxyKind::HttpConnect => {
            let creds = proxy
                .credentials
                .as_ref()
                .map(|(u, p)| (u.as_str(), p.expose()));
            let request = http_connect_request(host, port, creds);
            stream.write_all(request.as_bytes()).await.map_err(io)?;
            // Byte by byte: whatever follows the head is the upstream server's (a POP3
            // greeting) and must stay in the stream.
            let mut head = Vec::with_capacity(256);
            while !head.ends_with(b"\r\n\r\n") && !head.ends_with(b"\n\n") {
                if head.len() >= HTTP_HEAD_MAX {
                    return Err(protocol(
                        "HTTP",
                        format!("a response head longer than {HTTP_HEAD_MAX} bytes"),
                    ));
                }
                let mut byte = [0u8; 1];
                if stream.read(&mut byte).await.map_err(io)? == 0 {
                    return Err(protocol("HTTP", "it closed the connection".into()));
                }
                head.push(byte[0]);
            }
            match http_connect_status(&head) {
                Ok(()) => Ok(()),
                // 407 is the proxy's "authentication required"; tinyproxy answers 401.
                Err((Some(401 | 407), _)) => Err(if creds.is_some() {
                    ProxyError::AuthRefused { proxy: shown }
                } else {
                    ProxyError::NoMethod {
                        proxy: shown,
                        offered: "none",
                    }
                }),
                Err((Some(code), reason)) => Err(ProxyError::ConnectRefused {
                    proxy: shown,
                    target,
                    why: format!("HTTP {code} {reason}"),
                }),
                Err((None, line)) => Err(protocol(
                    "HTTP",
                    format!(
                        "status line {:?}",
                        line.chars().take(80).collect::<String>()
                    ),
                )),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Password;

    #[test]
    fn socks5_requests_are_built_as_rfc_1928_and_1929_say() {
        assert_eq!(socks5_greeting(false), [5, 1, 0]);
        assert_eq!(socks5_greeting(true), [5, 1, 2]);
        assert_eq!(socks5_auth_request("al", "pw!"), b"\x01\x02al\x03pw!");
        assert_eq!(
            socks5_connect_request("pop.example", 995),
            b"\x05\x01\x00\x03\x0bpop.example\x03\xe3"
        );
        assert_eq!(
            socks5_connect_request("127.0.0.1", 110),
            [5, 1, 0, 1, 127, 0, 0, 1, 0, 110]
        );
        assert_eq!(socks5_connect_request("::1", 1)[3], 4);
        assert_eq!(socks5_connect_request("::1", 1).len(), 4 + 16 + 2);
    }

    #[test]
    fn socks5_replies_are_read_into_words() {
        assert_eq!(socks5_method([5, 0]), Ok(0));
        assert_eq!(socks5_method([5, 2]), Ok(2));
        assert!(socks5_method([5, 0xff]).is_err());
        assert!(socks5_method([4, 0]).unwrap_err().contains("version 4"));
        assert_eq!(socks5_reply_head([5, 0, 0, 1]), Ok(Ok(6)));
        assert_eq!(socks5_reply_head([5, 0, 0, 4]), Ok(Ok(18)));
        assert_eq!(socks5_reply_head([5, 0, 0, 3]), Ok(Ok(1)));
        let refused = socks5_reply_head([5, 5, 0, 1]).unwrap().unwrap_err();
        assert!(refused.contains("refused the connection"), "{refused}");
        assert!(socks5_reply_head([5, 0, 0, 9]).is_err());
        assert!(socks5_reply_head([1, 0, 0, 1]).is_err());
    }

    #[test]
    fn http_connect_request_and_status() {
        assert_eq!(
            http_connect_request("pop.example", 995, None),
            "CONNECT pop.example:995 HTTP/1.1\r\nHost: pop.example:995\r\n\r\n"
        );
        let with = http_connect_request("::1", 110, Some(("u", "p")));
        assert!(with.starts_with("CONNECT [::1]:110 HTTP/1.1\r\n"), "{with}");
        assert!(
            with.contains("Proxy-Authorization: Basic dTpw\r\n"),
            "{with}"
        );
        assert_eq!(
            http_connect_status(b"HTTP/1.0 200 Connection established\r\n\r\n"),
            Ok(())
        );
        assert_eq!(
            http_connect_status(b"HTTP/1.1 407 Proxy Authentication Required\r\n"),
            Err((Some(407), "Proxy Authentication Required".to_owned()))
        );
        assert_eq!(
            http_connect_status(b"SSH-2.0-OpenSSH\r\n"),
            Err((None, "SSH-2.0-OpenSSH".to_owned()))
        );
    }

    /// A scripted SOCKS5 proxy on a duplex pipe: the tunnel sends what RFC 1928 says and
    /// leaves the server's first bytes in the stream.
    #[tokio::test]
    async fn tunnel_through_socks5_with_credentials() {
        let (mut client, mut server) = tokio::io::duplex(1024);
        let proxy = Proxy {
            kind: ProxyKind::Socks5,
            host: "127.0.0.1".into(),
            port: 1080,
            credentials: Some(("u".into(), Password::new("secret"))),
        };
        let fake = tokio::spawn(async move {
            let mut buf = [0u8; 3];
            server.read_exact(&mut buf).await.unwrap();
            assert_eq!(buf, [5, 1, 2]);
            server.write_all(&[5, 2]).await.unwrap();
            let mut auth = [0u8; 10];
            server.read_exact(&mut auth).await.unwrap();
            assert_eq!(&auth, b"\x01\x01u\x06secret");
            server.write_all(&[1, 0]).await.unwrap();
            let mut req = vec![0u8; 4 + 1 + 8 + 2];
            server.read_exact(&mut req).await.unwrap();
            assert_eq!(&req[5..13], b"pop.test");
            server
                .write_all(&[
                    5, 0, 0, 3, 4, b'h', b'o', b's', b't', 0, 1, b'+', b'O', b'K',
                ])
                .await
                .unwrap();
        });
        tunnel(&mut client, &proxy, "pop.test", 110).await.unwrap();
        let mut greeting = [0u8; 3];
        client.read_exact(&mut greeting).await.unwrap();
        assert_eq!(&greeting, b"+OK");
        fake.await.unwrap();
    }

    #[tokio::test]
    async fn a_refused_password_is_said_without_it() {
        let (mut client, mut server) = tokio::io::duplex(1024);
        let proxy = Proxy::parse("http://u:hunter2@127.0.0.1:3128").unwrap();
        tokio::spawn(async move {
            let mut buf = [0u8; 512];
            let _ = server.read(&mut buf).await;
            let _ = server
                .write_all(b"HTTP/1.1 407 Proxy Authentication Required\r\nX: y\r\n\r\n")
                .await;
        });
        let e = tunnel(&mut client, &proxy, "pop.test", 110)
            .await
            .unwrap_err();
        assert!(matches!(e, ProxyError::AuthRefused { .. }), "{e:?}");
        let text = e.to_string();
        assert!(text.contains("refused the user name or password"), "{text}");
        assert!(!text.contains("hunter2"), "{text}");
    }
}
