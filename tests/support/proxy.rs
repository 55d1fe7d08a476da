//! Real proxies on loopback for the `proxy:` tests: microsocks (SOCKS5, package microsocks)
//! and tinyproxy (HTTP CONNECT, package tinyproxy), each with or without a user name and
//! password, in the foreground, killed when dropped.

use std::fs;
use std::net::{Ipv4Addr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::{free_port, wait_until};

/// Which proxy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyServer {
    /// microsocks: `socks5://`.
    Socks5,
    /// tinyproxy: `http://`.
    HttpConnect,
}

/// A running proxy on 127.0.0.1.
pub struct RealProxy {
    child: Child,
    port: u16,
    kind: ProxyServer,
    credentials: Option<(String, String)>,
    dir: tempfile::TempDir,
}

impl RealProxy {
    /// Starts the proxy, requiring `credentials` (user, password) when given, and waits until
    /// it accepts connections. Panics (with its output) if it cannot start.
    pub fn start(kind: ProxyServer, credentials: Option<(&str, &str)>) -> RealProxy {
        let dir = tempfile::tempdir().expect("a temporary directory for the proxy");
        let port = free_port();
        let log = dir.path().join("proxy.log");
        let out = fs::File::create(&log).expect("create the proxy log");
        let err = out.try_clone().expect("clone the proxy log handle");
        let mut command = match kind {
            ProxyServer::Socks5 => {
                let mut c = Command::new("microsocks");
                c.args(["-i", "127.0.0.1", "-p", &port.to_string()]);
                if let Some((user, password)) = credentials {
                    c.args(["-u", user, "-P", password]);
                }
                c
            }
            ProxyServer::HttpConnect => {
                let mut conf = format!(
                    "Port {port}\nListen 127.0.0.1\nTimeout 60\nAllow 127.0.0.1\nUser nobody\nGroup nogroup\nLogLevel Info\nMaxClients 20\n"
                );
                if let Some((user, password)) = credentials {
                    conf.push_str(&format!("BasicAuth {user} {password}\n"));
                }
                let path = dir.path().join("tinyproxy.conf");
                fs::write(&path, conf).expect("write tinyproxy.conf");
                let mut c = Command::new("tinyproxy");
                c.arg("-d").arg("-c").arg(&path);
                c
            }
        };
        let child = command
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot start the {kind:?} proxy (scripts/install-deps.sh installs microsocks and tinyproxy): {e}")
            });
        let mut proxy = RealProxy {
            child,
            port,
            kind,
            credentials: credentials.map(|(u, p)| (u.to_owned(), p.to_owned())),
            dir,
        };
        let up = wait_until(Duration::from_secs(10), || {
            TcpStream::connect((Ipv4Addr::LOCALHOST, port)).is_ok()
        });
        if !up || proxy.child.try_wait().ok().flatten().is_some() {
            panic!(
                "the {kind:?} proxy did not start on 127.0.0.1:{port}:\n{}",
                proxy.log()
            );
        }
        proxy
    }

    /// Its port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The `proxy:` URL for it, with its credentials, or with `password` instead of its own.
    pub fn url_with(&self, password: Option<&str>) -> String {
        let scheme = match self.kind {
            ProxyServer::Socks5 => "socks5",
            ProxyServer::HttpConnect => "http",
        };
        match &self.credentials {
            Some((user, own)) => format!(
                "{scheme}://{user}:{}@127.0.0.1:{}",
                password.unwrap_or(own),
                self.port
            ),
            None => format!("{scheme}://127.0.0.1:{}", self.port),
        }
    }

    /// The `proxy:` URL for it, with its credentials.
    pub fn url(&self) -> String {
        self.url_with(None)
    }

    /// What it printed so far.
    pub fn log(&self) -> String {
        fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("proxy.log")
    }
}

impl Drop for RealProxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
