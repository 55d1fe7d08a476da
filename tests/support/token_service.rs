//! A small OAuth2 authorization server for the tests, on 127.0.0.1 (std threads and a
//! `TcpListener`): `/token` (client credentials, refresh token with rotation, device code),
//! `/devicecode`, and `/introspect` for Dovecot's `oauth2` passdb. Its access tokens are
//! short-lived; a test can approve a device code as the user, and revoke every refresh
//! token. One port speaks both plain HTTP and HTTPS (a connection that opens with a TLS
//! handshake gets TLS, with a certificate of the test CA of `mailferry::testkit::tls`): the
//! `https_url`s for mailferry, plain `url`s for Dovecot's introspection.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use mailferry::testkit::tls::{TestCa, test_ca};
use tokio_rustls::rustls::{ServerConfig, ServerConnection, StreamOwned};

/// The client the service knows.
pub const CLIENT_ID: &str = "mailferry-test-client";
/// Its secret.
pub const CLIENT_SECRET: &str = "client-secret-0123456789";

/// A running token service, stopped when dropped.
pub struct TokenService {
    port: u16,
    ca: TestCa,
    state: Arc<Mutex<State>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

/// How the service issues tokens.
#[derive(Debug, Clone)]
pub struct TokenPolicy {
    /// The user a client-credentials token stands for (the shared mailbox).
    pub app_user: String,
    /// `expires_in` announced with each access token.
    pub announced: Duration,
    /// How long an access token is really accepted by `/introspect`.
    pub valid_for: Duration,
    /// The device-code poll interval announced.
    pub interval: Duration,
}

#[derive(Default)]
struct State {
    policy: Option<TokenPolicy>,
    serial: u64,
    /// Access token -> (user, accepted until).
    access: HashMap<String, (String, Instant)>,
    /// Live refresh token -> user.
    refresh: HashMap<String, String>,
    /// Device code -> (user code, approved for, slowed down once).
    devices: HashMap<String, (String, Option<String>, bool)>,
    /// Every `/token` request's grant_type, in order.
    grants: Vec<String>,
    /// When each `/token` request came, in order.
    grant_times: Vec<Instant>,
    /// Every access token `/introspect` was asked about, in order.
    introspected: Vec<String>,
    /// Every request body, to check that nothing leaked elsewhere.
    bodies: Vec<String>,
    /// Connections whose TLS handshake succeeded.
    tls_connections: usize,
}

impl TokenService {
    /// Starts the service with `policy`.
    pub fn start(policy: TokenPolicy) -> TokenService {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind the token service");
        let port = listener.local_addr().expect("local addr").port();
        listener.set_nonblocking(true).expect("nonblocking");
        let state = Arc::new(Mutex::new(State {
            policy: Some(policy),
            ..State::default()
        }));
        let stop = Arc::new(AtomicBool::new(false));
        let ca = test_ca();
        let thread = {
            let (state, stop) = (state.clone(), stop.clone());
            let tls = ca.acceptor.config().clone();
            std::thread::spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    match listener.accept() {
                        Ok((stream, _)) => {
                            let (state, tls) = (state.clone(), tls.clone());
                            std::thread::spawn(move || accept(stream, tls, &state));
                        }
                        Err(_) => std::thread::sleep(Duration::from_millis(10)),
                    }
                }
            })
        };
        TokenService {
            port,
            ca,
            state,
            stop,
            thread: Some(thread),
        }
    }

    /// The port it listens on (127.0.0.1).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `http://127.0.0.1:PORT` and `path`.
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// `https://localhost:PORT` and `path`: the same service over TLS, its certificate
    /// signed by [`TokenService::ca_file`] (not in the system store).
    pub fn https_url(&self, path: &str) -> String {
        format!("https://localhost:{}{path}", self.port)
    }

    /// The test CA's certificate (PEM), what a client needs to trust [`TokenService::https_url`].
    pub fn ca_file(&self) -> std::path::PathBuf {
        self.ca.ca_pem.clone()
    }

    /// How many connections came over TLS (handshake done) so far.
    pub fn tls_connections(&self) -> usize {
        self.state.lock().unwrap().tls_connections
    }

    /// Approves the device code whose user code is `user_code`, as `user`; false if none.
    pub fn approve(&self, user_code: &str, user: &str) -> bool {
        let mut state = self.state.lock().unwrap();
        match state
            .devices
            .values_mut()
            .find(|(code, ..)| code == user_code)
        {
            Some(entry) => {
                entry.1 = Some(user.to_owned());
                true
            }
            None => false,
        }
    }

    /// A fresh refresh token for `user`, as a past login would have left.
    pub fn issue_refresh(&self, user: &str) -> String {
        let mut state = self.state.lock().unwrap();
        let token = state.new_token("rt");
        state.refresh.insert(token.clone(), user.to_owned());
        token
    }

    /// Revokes every refresh token (the user withdrew consent).
    pub fn revoke_refresh_tokens(&self) {
        self.state.lock().unwrap().refresh.clear();
    }

    /// Whether `token` is a live refresh token.
    pub fn refresh_is_live(&self, token: &str) -> bool {
        self.state.lock().unwrap().refresh.contains_key(token)
    }

    /// The grant_type of every `/token` request so far.
    pub fn grants(&self) -> Vec<String> {
        self.state.lock().unwrap().grants.clone()
    }

    /// When each `/token` request came, in order.
    pub fn grant_times(&self) -> Vec<Instant> {
        self.state.lock().unwrap().grant_times.clone()
    }

    /// The access tokens `/introspect` was asked about, in order.
    pub fn introspected(&self) -> Vec<String> {
        self.state.lock().unwrap().introspected.clone()
    }

    /// Every request body received.
    pub fn bodies(&self) -> Vec<String> {
        self.state.lock().unwrap().bodies.clone()
    }
}

impl Drop for TokenService {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl State {
    fn new_token(&mut self, kind: &str) -> String {
        self.serial += 1;
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        format!("{kind}-{}-{nanos:x}", self.serial)
    }

    fn policy(&self) -> TokenPolicy {
        self.policy.clone().expect("a policy")
    }

    fn grant_access(&mut self, user: &str, refresh: bool) -> (u16, String) {
        let policy = self.policy();
        let access = self.new_token("at");
        self.access.insert(
            access.clone(),
            (user.to_owned(), Instant::now() + policy.valid_for),
        );
        let mut reply = format!(
            r#"{{"access_token":"{access}","token_type":"Bearer","expires_in":{}"#,
            policy.announced.as_secs()
        );
        if refresh {
            let rt = self.new_token("rt");
            self.refresh.insert(rt.clone(), user.to_owned());
            reply.push_str(&format!(r#","refresh_token":"{rt}""#));
        }
        reply.push('}');
        (200, reply)
    }
}

fn error(code: &str) -> (u16, String) {
    (
        400,
        format!(r#"{{"error":"{code}","error_description":"test service says {code}"}}"#),
    )
}

/// Serves one connection: over TLS when it opens with a handshake record, else plain.
fn accept(stream: TcpStream, tls: Arc<ServerConfig>, state: &Mutex<State>) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
    let mut first = [0u8; 1];
    if !matches!(stream.peek(&mut first), Ok(1)) {
        return;
    }
    if first[0] != 0x16 {
        let mut stream = stream;
        serve(&mut stream, state);
        return;
    }
    let Ok(conn) = ServerConnection::new(tls) else {
        return;
    };
    let mut tls = StreamOwned::new(conn, stream);
    while tls.conn.is_handshaking() {
        if tls.conn.complete_io(&mut tls.sock).is_err() {
            return;
        }
    }
    state.lock().unwrap().tls_connections += 1;
    serve(&mut tls, state);
    tls.conn.send_close_notify();
    let _ = tls.flush();
}

fn serve<S: Read + Write>(stream: &mut S, state: &Mutex<State>) {
    let mut reader = BufReader::new(&mut *stream);
    let mut request_line = String::new();
    if reader.read_line(&mut request_line).is_err() {
        return;
    }
    let mut length = 0usize;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" || line == "\n" {
            break;
        }
        if let Some((name, value)) = line.split_once(':')
            && name.eq_ignore_ascii_case("content-length")
        {
            length = value.trim().parse().unwrap_or(0);
        }
    }
    let mut body = vec![0u8; length];
    if reader.read_exact(&mut body).is_err() {
        return;
    }
    drop(reader);
    let body = String::from_utf8_lossy(&body).into_owned();
    let form = parse_form(&body);
    let path = request_line.split(' ').nth(1).unwrap_or("").to_owned();
    let (status, reply) = {
        let mut state = state.lock().unwrap();
        state.bodies.push(body.clone());
        answer(&mut state, &path, &form)
    };
    let _ = write!(
        stream,
        "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{reply}",
        reply.len()
    );
    let _ = stream.flush();
}

fn answer(state: &mut State, path: &str, form: &HashMap<String, String>) -> (u16, String) {
    let get = |k: &str| form.get(k).map(String::as_str).unwrap_or("");
    match path {
        "/token" => {
            state.grants.push(get("grant_type").to_owned());
            state.grant_times.push(Instant::now());
            if get("client_id") != CLIENT_ID {
                return error("invalid_client");
            }
            match get("grant_type") {
                "client_credentials" => {
                    if get("client_secret") != CLIENT_SECRET {
                        return error("invalid_client");
                    }
                    let user = state.policy().app_user;
                    state.grant_access(&user, false)
                }
                "refresh_token" => match state.refresh.remove(get("refresh_token")) {
                    // Rotation: the old refresh token is dead from now on.
                    Some(user) => state.grant_access(&user, true),
                    None => error("invalid_grant"),
                },
                "urn:ietf:params:oauth:grant-type:device_code" => {
                    let code = get("device_code").to_owned();
                    let Some((_, approved, slowed)) = state.devices.get_mut(&code) else {
                        return error("invalid_grant");
                    };
                    if !*slowed {
                        // Once, to see that the client slows down and goes on.
                        *slowed = true;
                        return error("slow_down");
                    }
                    match approved.clone() {
                        None => error("authorization_pending"),
                        Some(user) => {
                            state.devices.remove(&code);
                            state.grant_access(&user, true)
                        }
                    }
                }
                _ => error("unsupported_grant_type"),
            }
        }
        "/devicecode" => {
            if get("client_id") != CLIENT_ID {
                return error("invalid_client");
            }
            let device = state.new_token("dc");
            state.serial += 1;
            let user_code = format!("CODE-{}", state.serial);
            state
                .devices
                .insert(device.clone(), (user_code.clone(), None, false));
            let interval = state.policy().interval.as_secs();
            (
                200,
                format!(
                    r#"{{"device_code":"{device}","user_code":"{user_code}","verification_uri":"http://127.0.0.1/device","expires_in":120,"interval":{interval}}}"#
                ),
            )
        }
        "/introspect" => {
            let token = get("token").to_owned();
            state.introspected.push(token.clone());
            match state.access.get(&token) {
                Some((user, until)) if Instant::now() < *until => (
                    200,
                    format!(r#"{{"active":true,"username":"{user}","scope":"mail"}}"#),
                ),
                _ => (200, r#"{"active":false}"#.to_owned()),
            }
        }
        _ => (404, r#"{"error":"not_found"}"#.to_owned()),
    }
}

fn parse_form(body: &str) -> HashMap<String, String> {
    body.split('&')
        .filter_map(|pair| pair.split_once('='))
        .map(|(k, v)| (decode(k), decode(v)))
        .collect()
}

fn decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("00");
                out.push(u8::from_str_radix(hex, 16).unwrap_or(b'?'));
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}
