//! Operations (issue 11), end to end against the real binary: the counters of `/metrics`
//! against what the SMTP receiver really got after a pass through Dovecot and smtp-sink;
//! `/readyz` following the relay down and up again; the Grafana dashboard and the alert
//! rules of `deploy/` naming only metrics that a real scrape has; and the status page in a
//! real headless browser (Debian's chromium), a hostile Subject shown as text.
//!
//! smtp-sink cannot refuse one recipient among several, so the relay address is a small
//! [`RelayFront`] that passes each session through to smtp-sink and answers 550 to the RCPT
//! of the addresses it is told to refuse (that recipient is then re-routed to the postmaster).

mod support;

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Write};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU16, Ordering};
use std::time::Duration;

use mailferry::metrics::names::{self, Kind};
use support::{
    AccountYaml, CLIENT_ID, CLIENT_SECRET, Dovecot, GatewayConfig, Mailferry, Secret, SmtpSink,
    TokenPolicy, TokenService, Transaction, free_port, http_get, message, wait_until,
};

const CATCHALL: &str = "catchall@example.com";
const SHARED: &str = "shared@example.com";
const PASS: &str = "pop-secret";
/// The recipient the relay refuses for good (550): re-routed to the postmaster.
const GHOST: &str = "ghost@example.com";
const POSTMASTER: &str = "postmaster@example.com";
/// The relay's reply to a RCPT it refuses for good.
const UNKNOWN: &str = "550 5.1.1 Recipient address rejected: User unknown";
const DASHBOARD: &str = "deploy/grafana/mailferry-dashboard.json";
const ALERTS: &str = "deploy/prometheus/mailferry-alerts.yml";
/// A Subject that would run a script and change the page's title if it were not escaped.
const HOSTILE_SUBJECT: &str = "<script>document.title='pwned'</script><b>x</b>";

// ---------------------------------------------------------------------------------------
// The relay address: smtp-sink behind a front that can refuse a recipient
// ---------------------------------------------------------------------------------------

/// A relay address on 127.0.0.1 in front of smtp-sink: each SMTP session is passed through
/// to the sink on `upstream`, command by command (PIPELINING and CHUNKING are taken out of
/// the EHLO reply), except that a RCPT for one of the `refuse` addresses is answered here
/// with the reply given for it. While nothing listens on `upstream` a session is closed before the greeting: the
/// relay is down. Stops accepting when dropped.
struct RelayFront {
    port: u16,
    upstream: Arc<AtomicU16>,
    stop: Arc<AtomicBool>,
}

impl RelayFront {
    /// `refuse`: (address, the reply to its RCPT, e.g. [`UNKNOWN`]).
    fn start(upstream: u16, refuse: &[(&str, &str)]) -> RelayFront {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind the relay front");
        let port = listener.local_addr().expect("local addr").port();
        listener.set_nonblocking(true).expect("nonblocking");
        let upstream = Arc::new(AtomicU16::new(upstream));
        let stop = Arc::new(AtomicBool::new(false));
        let refuse: Arc<Vec<(String, String)>> = Arc::new(
            (refuse.iter())
                .map(|(a, r)| (format!("<{}>", a.to_ascii_lowercase()), format!("{r}\r\n")))
                .collect(),
        );
        {
            let (upstream, stop) = (upstream.clone(), stop.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    match listener.accept() {
                        Ok((client, _)) => {
                            let (to, refuse) = (upstream.load(Ordering::SeqCst), refuse.clone());
                            std::thread::spawn(move || {
                                let _ = pass_through(client, to, &refuse);
                            });
                        }
                        Err(_) => std::thread::sleep(Duration::from_millis(10)),
                    }
                }
            });
        }
        RelayFront {
            port,
            upstream,
            stop,
        }
    }

    /// From the next session on, pass through to the sink on `port`.
    fn set_upstream(&self, port: u16) {
        self.upstream.store(port, Ordering::SeqCst);
    }
}

impl Drop for RelayFront {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

/// One SMTP session from `client` to the sink on `upstream` (see [`RelayFront`]).
fn pass_through(
    client: TcpStream,
    upstream: u16,
    refuse: &[(String, String)],
) -> std::io::Result<()> {
    let server = TcpStream::connect((Ipv4Addr::LOCALHOST, upstream))?;
    for s in [&server, &client] {
        s.set_read_timeout(Some(Duration::from_secs(60)))?;
    }
    let (mut to_server, mut from_server) = (server.try_clone()?, BufReader::new(server));
    let (mut to_client, mut from_client) = (client.try_clone()?, BufReader::new(client));
    to_client.write_all(reply(&mut from_server)?.concat().as_bytes())?;
    let mut in_data = false;
    loop {
        let mut line = Vec::new();
        if from_client.read_until(b'\n', &mut line)? == 0 {
            return Ok(());
        }
        if in_data {
            to_server.write_all(&line)?;
            if line == b".\r\n" {
                in_data = false;
                to_client.write_all(reply(&mut from_server)?.concat().as_bytes())?;
            }
            continue;
        }
        let command = String::from_utf8_lossy(&line).to_ascii_lowercase();
        let refused =
            (refuse.iter()).find(|(a, _)| command.starts_with("rcpt to:") && command.contains(a));
        if let Some((_, reply)) = refused {
            to_client.write_all(reply.as_bytes())?;
            continue;
        }
        to_server.write_all(&line)?;
        let mut lines = reply(&mut from_server)?;
        if command.starts_with("ehlo") {
            lines = lock_step(lines);
        }
        in_data = lines.last().is_some_and(|l| l.starts_with("354"));
        to_client.write_all(lines.concat().as_bytes())?;
        if command.starts_with("quit") {
            return Ok(());
        }
    }
}

/// One SMTP reply, every line with its line end.
fn reply(from: &mut impl BufRead) -> std::io::Result<Vec<String>> {
    let mut lines = Vec::new();
    loop {
        let mut line = String::new();
        if from.read_line(&mut line)? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        let last = line.as_bytes().get(3) != Some(&b'-');
        lines.push(line);
        if last {
            return Ok(lines);
        }
    }
}

/// An EHLO reply without PIPELINING and CHUNKING, continuation marks set again.
fn lock_step(lines: Vec<String>) -> Vec<String> {
    let kept: Vec<String> = lines
        .into_iter()
        .filter(|l| {
            let keyword = l.get(4..).unwrap_or("").trim().to_ascii_uppercase();
            keyword != "PIPELINING" && keyword != "CHUNKING"
        })
        .collect();
    let n = kept.len();
    kept.iter()
        .enumerate()
        .map(|(i, l)| {
            let mark = if i + 1 < n { '-' } else { ' ' };
            format!("{}{mark}{}", &l[..3], l.get(4..).unwrap_or("\r\n"))
        })
        .collect()
}

// ---------------------------------------------------------------------------------------
// Mail, accounts, scrapes
// ---------------------------------------------------------------------------------------

/// A message for the catch-all mailbox: `X-Original-To` (when given) above the provider's
/// `Received:`, then `to` and `cc` as headers.
fn catchall_mail(envelope: Option<&str>, to: &str, cc: Option<&str>, id: &str) -> Vec<u8> {
    let mut headers = Vec::new();
    if let Some(rcpt) = envelope {
        headers.push(("X-Original-To", rcpt.to_owned()));
    }
    headers.push((
        "Received",
        "from mx.remote.test by mx1.provider.net; Mon, 7 Dec 2026 10:00:00 +0000".to_owned(),
    ));
    headers.push(("From", "Someone <someone@remote.test>".to_owned()));
    headers.push(("To", to.to_owned()));
    if let Some(cc) = cc {
        headers.push(("Cc", cc.to_owned()));
    }
    headers.push(("Subject", format!("about {id}")));
    headers.push(("Message-ID", format!("<{id}@remote.test>")));
    let headers: Vec<(&str, &str)> = headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
    message(&headers, &format!("The text of {id}.\n"))
}

/// A copy that has been through mailferry twice already: with `max_hops: 1` it is a loop,
/// quarantined (left upstream, the postmaster told) with its headers on the status page.
fn looping_mail(subject: &str, id: &str) -> Vec<u8> {
    let ours = "from pop.provider.net by gw.corp.local (mailferry) with POP3 id 1; \
                Mon, 7 Dec 2026 09:00:00 +0000";
    message(
        &[
            ("Received", ours),
            ("Received", ours),
            ("From", "Looper <loop@remote.test>"),
            ("To", "alice@example.com"),
            ("Subject", subject),
            ("Message-ID", &format!("<{id}@remote.test>")),
        ],
        "Round and round.\n",
    )
}

/// A plain-text POP3 catch-all account on `dovecot`, polled every 5 s.
fn catchall_account(dovecot: &Dovecot) -> AccountYaml {
    AccountYaml {
        name: "catchall".into(),
        port: dovecot.pop3_port(),
        username: CATCHALL.into(),
        password: Secret::Inline(PASS.into()),
        extra_lines: vec!["poll_interval: 5s".into()],
        ..AccountYaml::default()
    }
}

/// An OAuth2 (client-credentials) account for the mailbox `user` over POP3S; `secret` is
/// the client secret it presents (a wrong one is refused by the token service).
fn oauth_account(
    name: &str,
    user: &str,
    (dovecot, service): (&Dovecot, &TokenService),
    secret: &str,
) -> AccountYaml {
    AccountYaml {
        name: name.into(),
        port: dovecot.pop3s_port(),
        tls: "tls".into(),
        ca_file: Some(dovecot.ca_file()),
        username: user.into(),
        password: Secret::None,
        extra_lines: vec![
            "mode: single-user".to_owned(),
            format!("deliver_to: {SHARED}"),
            "poll_interval: 5s".to_owned(),
            "oauth:".to_owned(),
            "  provider: generic".to_owned(),
            "  grant: client_credentials".to_owned(),
            format!("  client_id: {CLIENT_ID}"),
            format!("  client_secret: {secret}"),
            "  scope: mail".to_owned(),
            format!("  token_url: {}", service.url("/token")),
        ],
        ..AccountYaml::default()
    }
}

/// A token service whose access tokens are announced and accepted for `valid`, and a Dovecot
/// that asks it, with the catch-all mailbox and the shared (OAuth2) one.
fn oauth_servers(valid: Duration) -> (TokenService, Dovecot) {
    let service = TokenService::start(TokenPolicy {
        app_user: SHARED.to_owned(),
        announced: valid,
        valid_for: valid,
        interval: Duration::from_secs(1),
    });
    let dovecot = Dovecot::start_oauth(
        &[(CATCHALL, PASS), (SHARED, "not-used")],
        &service.url("/introspect"),
    );
    (service, dovecot)
}

/// `gateway` with three accounts: the catch-all, the shared mailbox over OAuth2, and one
/// whose client secret the token service refuses.
fn with_accounts(
    gateway: GatewayConfig,
    dovecot: &Dovecot,
    service: &TokenService,
) -> GatewayConfig {
    let servers = (dovecot, service);
    gateway
        .account(catchall_account(dovecot))
        .account(oauth_account("shared", SHARED, servers, CLIENT_SECRET))
        .account(oauth_account(
            "shared-revoked",
            "revoked@example.com",
            servers,
            "a-wrong-secret",
        ))
}

/// `mailferry run --config CONFIG`.
fn run(config: &Path) -> Mailferry {
    Mailferry::spawn(&["run", "--config", &config.display().to_string()])
}

/// The body of `/metrics` (empty if the listener does not answer).
fn scrape(port: u16) -> String {
    http_get(port, "/metrics")
        .map(|(_, body)| body)
        .unwrap_or_default()
}

/// The value of one series, written as in the exposition (`name{label="v",...}`).
fn value(scrape: &str, series: &str) -> Option<f64> {
    scrape.lines().find_map(|l| {
        l.strip_prefix(series)?
            .strip_prefix(' ')?
            .trim()
            .parse()
            .ok()
    })
}

/// The status line of `/readyz`.
fn readyz(port: u16) -> String {
    http_get(port, "/readyz")
        .map(|(status, body)| format!("{status} {}", body.trim()))
        .unwrap_or_default()
}

// ---------------------------------------------------------------------------------------
// What smtp-sink received, sorted by kind
// ---------------------------------------------------------------------------------------

/// The transactions of one run, sorted: deliveries to their recipients, copies re-routed to
/// the postmaster (`X-Mailferry-Rerouted:`), and quarantine notices.
#[derive(Debug, Default)]
struct Received {
    deliveries: Vec<Transaction>,
    reroutes: Vec<Transaction>,
    notices: Vec<Transaction>,
}

impl Received {
    fn of(transactions: Vec<Transaction>) -> Received {
        let mut r = Received::default();
        for t in transactions {
            if t.header("Auto-Submitted").as_deref() == Some("auto-generated")
                && t.subject().starts_with("mailferry quarantined")
            {
                r.notices.push(t);
            } else if !t.headers("X-Mailferry-Rerouted").is_empty() {
                r.reroutes.push(t);
            } else {
                r.deliveries.push(t);
            }
        }
        r
    }

    /// Recipients the relay took (every RCPT of a delivery).
    fn delivered(&self) -> usize {
        self.deliveries.iter().map(|t| t.rcpts.len()).sum()
    }

    /// Recipients refused for good and sent to the postmaster instead (one
    /// `X-Mailferry-Rerouted:` line each).
    fn rerouted(&self) -> usize {
        self.reroutes
            .iter()
            .map(|t| t.headers("X-Mailferry-Rerouted").len())
            .sum()
    }

    /// The Message-IDs of the messages delivered or re-routed: settled, so deleted upstream.
    fn settled(&self) -> BTreeSet<String> {
        (self.deliveries.iter().chain(&self.reroutes))
            .filter_map(|t| t.header("Message-ID"))
            .collect()
    }

    /// The Message-IDs of the quarantined messages, from the notices' header excerpts.
    fn quarantined(&self) -> BTreeSet<String> {
        self.notices
            .iter()
            .filter_map(|t| {
                let body = String::from_utf8_lossy(t.body()).into_owned();
                body.lines().find_map(|l| {
                    let l = l.trim();
                    l.get(..11)
                        .filter(|n| n.eq_ignore_ascii_case("message-id:"))
                        .map(|_| l[11..].trim().to_owned())
                })
            })
            .collect()
    }
}

// ---------------------------------------------------------------------------------------
// The metric names the dashboard and the alert rules use
// ---------------------------------------------------------------------------------------

/// Every `mailferry_*` name in `query`, the `_bucket`, `_sum` and `_count` of a histogram
/// taken back to the histogram's name.
fn metric_names(query: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = query;
    while let Some(at) = rest.find("mailferry_") {
        // Part of a longer identifier (e.g. `not_mailferry_x`): not a name of ours.
        let glued = rest[..at]
            .chars()
            .next_back()
            .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_');
        let tail = &rest[at..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        if !glued {
            let name = &tail[..end];
            let base = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| name.strip_suffix(s))
                .filter(|base| {
                    names::ALL
                        .iter()
                        .any(|m| m.name == *base && m.kind == Kind::Histogram)
                })
                .unwrap_or(name);
            names.insert(base.to_owned());
        }
        rest = &tail[end..];
    }
    names
}

/// One rule of the alert file.
#[derive(Debug, serde::Deserialize)]
struct Rule {
    alert: String,
    expr: String,
    #[serde(default)]
    labels: std::collections::BTreeMap<String, String>,
    #[serde(default)]
    annotations: std::collections::BTreeMap<String, String>,
}

#[derive(Debug, serde::Deserialize)]
struct Group {
    name: String,
    rules: Vec<Rule>,
}

#[derive(Debug, serde::Deserialize)]
struct RuleFile {
    groups: Vec<Group>,
}

fn repo_file(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

/// The alert rules of `deploy/prometheus/`.
fn alert_rules() -> Vec<Rule> {
    let text = std::fs::read_to_string(repo_file(ALERTS)).expect("read the alert rules");
    let file: RuleFile = serde_saphyr::from_str(&text).expect("the alert rules are YAML");
    (file.groups.into_iter())
        .inspect(|g| assert!(!g.name.is_empty(), "a group without a name"))
        .flat_map(|g| g.rules)
        .collect()
}

/// (panel title, query) of every target of the dashboard of `deploy/grafana/`.
fn dashboard_queries() -> Vec<(String, String)> {
    let text = std::fs::read_to_string(repo_file(DASHBOARD)).expect("read the dashboard");
    let dashboard: serde_json::Value = serde_json::from_str(&text).expect("the dashboard is JSON");
    let panels = dashboard["panels"].as_array().expect("a list of panels");
    panels
        .iter()
        .flat_map(|p| {
            let title = p["title"].as_str().unwrap_or("").to_owned();
            let targets = p["targets"].as_array().cloned().unwrap_or_default();
            targets.into_iter().map(move |t| {
                let expr = t["expr"].as_str().unwrap_or("").to_owned();
                (title.clone(), expr)
            })
        })
        .collect()
}

/// Every metric name the dashboard and the alert rules use.
fn names_used() -> BTreeSet<String> {
    let dashboard = dashboard_queries().into_iter().map(|(_, q)| q);
    let alerts = alert_rules().into_iter().map(|r| r.expr);
    dashboard
        .chain(alerts)
        .flat_map(|q| metric_names(&q))
        .collect()
}

#[test]
fn the_dashboard_and_the_alert_rules_use_only_metrics_mailferry_exports() {
    let queries = dashboard_queries();
    assert!(queries.len() >= 10, "{queries:?}");
    for (title, query) in &queries {
        assert!(
            !metric_names(query).is_empty(),
            "panel {title:?} has a query on no mailferry metric: {query}"
        );
    }
    let rules = alert_rules();
    for rule in &rules {
        assert!(
            !rule.alert.is_empty() && !rule.expr.trim().is_empty(),
            "{rule:?}"
        );
        assert!(rule.labels.contains_key("severity"), "{rule:?}");
        assert!(rule.annotations.contains_key("summary"), "{rule:?}");
    }
    let alerts: Vec<&str> = rules.iter().map(|r| r.alert.as_str()).collect();
    for wanted in [
        "MailferryNoSuccessfulPass",
        "MailferryDeliveriesTemporaryFailures",
        "MailferryDeliveriesPermanentFailures",
        "MailferryQuarantineGrowing",
        "MailferryOAuthTokenExpiring",
        "MailferryOAuthRefused",
        "MailferryRelayDown",
    ] {
        assert!(alerts.contains(&wanted), "no alert {wanted}: {alerts:?}");
    }
    let no_pass = rules
        .iter()
        .find(|r| r.alert == "MailferryNoSuccessfulPass")
        .map(|r| metric_names(&r.expr));
    assert!(
        no_pass.is_some_and(|n| n.contains(names::POLL_INTERVAL)),
        "the pass alert takes its threshold from {}",
        names::POLL_INTERVAL
    );
    let known: BTreeSet<&str> = names::ALL.iter().map(|m| m.name).collect();
    let unknown: Vec<String> = names_used()
        .into_iter()
        .filter(|n| !known.contains(n.as_str()))
        .collect();
    assert!(
        unknown.is_empty(),
        "not in src/metrics/names.rs: {unknown:?}"
    );
    // The extraction itself.
    assert_eq!(
        metric_names("rate(mailferry_pass_duration_seconds_bucket[5m]) + x_mailferry_no"),
        BTreeSet::from(["mailferry_pass_duration_seconds".to_owned()])
    );
}

// ---------------------------------------------------------------------------------------
// (a) The counters against what arrived, and every name the dashboard uses in a real scrape
// ---------------------------------------------------------------------------------------

#[test]
fn the_counters_match_what_the_relay_received_and_every_dashboard_metric_is_scraped() {
    if support::skip_e2e() {
        return;
    }
    let (service, dovecot) = oauth_servers(Duration::from_secs(3600));
    let mails = [
        catchall_mail(Some("alice@example.com"), "alice@example.com", None, "m1"),
        catchall_mail(None, "bob@example.com", Some("carol@example.com"), "m2"),
        // Nobody of ours: the postmaster gets it.
        catchall_mail(None, "list@lists.elsewhere.net", None, "m3"),
        // The relay refuses ghost for good: re-routed to the postmaster; dave gets it.
        catchall_mail(None, "dave@example.com", Some(GHOST), "m4"),
        catchall_mail(Some("erin@example.com"), "erin@example.com", None, "m5"),
        looping_mail("round and round", "m6"),
    ];
    dovecot.deliver_all(CATCHALL, &mails);
    let sink = SmtpSink::start(&[]);
    let relay = RelayFront::start(sink.port(), &[(GHOST, UNKNOWN)]);
    let dir = tempfile::tempdir().unwrap();
    let metrics = free_port();
    let gateway = GatewayConfig::new(dir.path().join("state"), relay.port)
        .metrics_listen(&format!("127.0.0.1:{metrics}"))
        .postmaster(POSTMASTER)
        .extra_line("max_hops: 1");
    let config = with_accounts(gateway, &dovecot, &service).write(dir.path());
    let daemon = run(&config);

    // Five deliveries (m1, m2, m3, m4 to dave, m5), m4's copy for ghost, m6's notice.
    let got = sink.wait_for(7, Duration::from_secs(60));
    assert_eq!(got.len(), 7, "{got:#?}");
    let received = Received::of(got);
    let settled = received.settled();
    let quarantined = received.quarantined();
    let fetched = settled.union(&quarantined).count();
    assert_eq!(received.rerouted(), 1, "{received:#?}");
    assert_eq!(quarantined.len(), 1, "{received:#?}");

    let a = |name: &str, labels: &str| format!("{name}{{account=\"catchall\"{labels}}}");
    let want = [
        (a(names::FETCHED, ""), fetched as f64),
        (
            a(names::DELIVERIES, ",outcome=\"delivered\""),
            received.delivered() as f64,
        ),
        (
            a(names::DELIVERIES, ",outcome=\"rerouted\""),
            received.rerouted() as f64,
        ),
        (a(names::DELIVERIES, ",outcome=\"permanent\""), 0.0),
        (a(names::DELETED, ""), settled.len() as f64),
        (
            a(names::QUARANTINED, ",reason=\"loop\""),
            quarantined.len() as f64,
        ),
        (a(names::QUARANTINED_NOW, ""), quarantined.len() as f64),
        (a(names::WAITING, ""), 0.0),
        (a(names::KEPT, ""), 0.0),
    ];
    let expiry_series = format!("{}{{account=\"shared\"}}", names::TOKEN_EXPIRY);
    let refused_series = format!(
        "{}{{account=\"shared-revoked\",reason=\"refused\"}}",
        names::OAUTH_FAILURES
    );
    // The counters are written after the relay took the mail, the deletions at QUIT and
    // the quarantine gauge at the next pass's listing: wait for the last of them.
    let mut body = String::new();
    let all_there = wait_until(Duration::from_secs(30), || {
        body = scrape(metrics);
        value(&body, &expiry_series).is_some()
            && value(&body, &refused_series).is_some_and(|n| n >= 1.0)
            && want
                .iter()
                .all(|(series, n)| value(&body, series) == Some(*n))
    });
    let seen: Vec<(String, Option<f64>)> = want
        .iter()
        .map(|(s, _)| (s.clone(), value(&body, s)))
        .collect();
    assert!(all_there, "want {want:?}\ngot {seen:?}\n{body}");
    assert!(
        value(&body, &a(names::FETCHED_BYTES, "")).is_some_and(|b| b > 0.0),
        "{body}"
    );
    // The mailbox holds only the quarantined loop now.
    assert_eq!(dovecot.count(CATCHALL), quarantined.len());
    let expiry = value(&body, &expiry_series);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert!(
        expiry.is_some_and(|e| e > now + 3000.0 && e < now + 3700.0),
        "the token is announced for an hour: {expiry:?}"
    );
    let (status, _) = http_get(metrics, "/healthz").unwrap_or_default();
    assert!(status.contains("200"), "{status}");
    assert!(readyz(metrics).contains("200"), "{}", readyz(metrics));

    // Every metric the dashboard and the alerts query is in this scrape (`# TYPE` line).
    let missing: Vec<String> = names_used()
        .into_iter()
        .filter(|n| !body.lines().any(|l| l.starts_with(&format!("# TYPE {n} "))))
        .collect();
    assert!(missing.is_empty(), "not in the scrape: {missing:?}\n{body}");

    let out = daemon
        .terminate(Duration::from_secs(20))
        .unwrap_or_else(|out| panic!("{}", String::from_utf8_lossy(&out.stderr)));
    eprintln!("{}", String::from_utf8_lossy(&out.stderr));
}

// ---------------------------------------------------------------------------------------
// (b) /readyz follows the relay
// ---------------------------------------------------------------------------------------

#[test]
fn readyz_turns_unready_while_the_relay_is_down_and_ready_when_it_is_back() {
    if support::skip_e2e() {
        return;
    }
    let dovecot = Dovecot::start(&[(CATCHALL, PASS)]);
    let first = SmtpSink::start(&[]);
    let relay = RelayFront::start(first.port(), &[]);
    let dir = tempfile::tempdir().unwrap();
    let metrics = free_port();
    let config = GatewayConfig::new(dir.path().join("state"), relay.port)
        .metrics_listen(&format!("127.0.0.1:{metrics}"))
        .relay_timeout("10s")
        .relay_line("retry: {initial: 0s}")
        .account(catchall_account(&dovecot))
        .write(dir.path());
    let daemon = run(&config);
    let relay_up = || value(&scrape(metrics), names::RELAY_UP);

    dovecot.deliver(
        CATCHALL,
        &catchall_mail(Some("alice@example.com"), "alice@example.com", None, "r1"),
    );
    assert_eq!(first.wait_for(1, Duration::from_secs(30)).len(), 1);
    assert!(
        wait_until(Duration::from_secs(10), || readyz(metrics).contains("200")),
        "ready while the relay takes mail: {}",
        readyz(metrics)
    );
    assert_eq!(relay_up(), Some(1.0));

    // The relay goes away; new mail makes the next pass try it.
    drop(first);
    dovecot.deliver(
        CATCHALL,
        &catchall_mail(Some("bob@example.com"), "bob@example.com", None, "r2"),
    );
    assert!(
        wait_until(Duration::from_secs(30), || readyz(metrics).contains("503")),
        "not ready while the relay is down: {}",
        readyz(metrics)
    );
    assert!(readyz(metrics).contains("relay"), "{}", readyz(metrics));
    assert_eq!(relay_up(), Some(0.0));
    let body = scrape(metrics);
    assert!(
        value(
            &body,
            "mailferry_poll_errors_total{account=\"catchall\",kind=\"relay\"}"
        )
        .is_some_and(|n| n >= 1.0),
        "{body}"
    );
    assert_eq!(dovecot.count(CATCHALL), 1, "the message waits upstream");
    let (status, _) = http_get(metrics, "/healthz").unwrap_or_default();
    assert!(status.contains("200"), "alive all the same: {status}");

    // A relay listens again at the same address: the message goes, ready again.
    let second = SmtpSink::start(&[]);
    relay.set_upstream(second.port());
    let got = second.wait_for(1, Duration::from_secs(30));
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].rcpts, ["bob@example.com"]);
    assert!(
        wait_until(Duration::from_secs(10), || readyz(metrics).contains("200")),
        "ready again: {}",
        readyz(metrics)
    );
    assert_eq!(relay_up(), Some(1.0));
    assert!(
        wait_until(Duration::from_secs(15), || dovecot.count(CATCHALL) == 0),
        "deleted upstream once delivered"
    );
    drop(daemon);
}

// ---------------------------------------------------------------------------------------
// (c) The status page in a real browser
// ---------------------------------------------------------------------------------------

const CHROMIUM: &str = "/usr/bin/chromium";

/// `chromium --headless ... ARGS URL` with a profile of its own, at most 90 s; its stdout.
fn chromium(profile: &Path, args: &[&str], url: &str) -> String {
    let out = Command::new("timeout")
        .arg("90")
        .arg(CHROMIUM)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(args)
        .arg(url)
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run {CHROMIUM} (scripts/install-deps.sh installs it): {e}")
        });
    assert!(
        out.status.success(),
        "chromium {args:?}: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn the_status_page_in_a_browser_shows_the_account_and_a_hostile_subject_as_text() {
    if support::skip_e2e() {
        return;
    }
    assert!(
        Path::new(CHROMIUM).exists(),
        "{CHROMIUM} is missing: run scripts/install-deps.sh as root"
    );
    let dovecot = Dovecot::start(&[(CATCHALL, PASS)]);
    dovecot.deliver_all(
        CATCHALL,
        &[
            catchall_mail(Some("alice@example.com"), "alice@example.com", None, "p1"),
            looping_mail(HOSTILE_SUBJECT, "p2"),
        ],
    );
    let sink = SmtpSink::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    let metrics = free_port();
    let config = GatewayConfig::new(dir.path().join("state"), sink.port())
        .metrics_listen(&format!("127.0.0.1:{metrics}"))
        .extra_line("max_hops: 1")
        .account(catchall_account(&dovecot))
        .write(dir.path());
    let daemon = run(&config);
    // The delivery and the quarantine notice.
    assert_eq!(sink.wait_for(2, Duration::from_secs(60)).len(), 2);
    assert!(
        wait_until(Duration::from_secs(15), || {
            http_get(metrics, "/").is_some_and(|(_, page)| page.contains("class=\"quarantined\""))
        }),
        "the page lists the quarantined message"
    );

    let url = format!("http://127.0.0.1:{metrics}/");
    let profile = tempfile::tempdir().unwrap();
    let dom = chromium(profile.path(), &["--dump-dom"], &url);
    assert!(dom.contains("<h2>Accounts</h2>"), "{dom}");
    assert!(dom.contains("<td>catchall</td>"), "the account: {dom}");
    assert!(dom.contains("<td>mail loop: "), "the reason: {dom}");
    assert!(
        dom.contains("<td>p2@remote.test</td>"),
        "the Message-ID: {dom}"
    );
    // The Subject as text: escaped in the serialised DOM, no element made of it.
    assert!(
        dom.contains(
            "<td class=\"subject\">&lt;script&gt;document.title='pwned'&lt;/script&gt;\
             &lt;b&gt;x&lt;/b&gt;</td>"
        ),
        "the subject as text: {dom}"
    );
    assert!(!dom.contains("<script"), "a script element: {dom}");
    assert!(!dom.contains("<b>x</b>"), "markup from the subject: {dom}");
    assert!(
        dom.contains("<title>mailferry status</title>") && !dom.contains("pwned</title>"),
        "the title unchanged: {dom}"
    );

    let shot = dir.path().join("status.png");
    let shot_arg = format!("--screenshot={}", shot.display());
    chromium(profile.path(), &[&shot_arg, "--window-size=1200,900"], &url);
    let png = std::fs::read(&shot).expect("the screenshot");
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "a PNG");
    assert!(
        png.len() > 10_000,
        "a page, not a blank: {} bytes",
        png.len()
    );
    if let Ok(keep) = std::env::var("MAILFERRY_SCREENSHOT") {
        let _ = std::fs::copy(&shot, keep);
    }
    drop(daemon);
}

// ---------------------------------------------------------------------------------------
// (d) A run for the dashboard picture
// ---------------------------------------------------------------------------------------

/// Not a check: a daemon fed mail every second for `MAILFERRY_PICTURE_SECONDS` (120 by
/// default), some of it for a recipient the relay refuses, one it defers, or a loop, with
/// the relay down for a while in the middle; `deploy/grafana/render.py` runs it, scrapes
/// its metrics every second and plots the dashboard's main panels. It prints `metrics on
/// 127.0.0.1:PORT` first.
#[test]
#[ignore = "a run for deploy/grafana/render.py, not a check"]
fn a_run_for_the_dashboard_picture() {
    if support::skip_e2e() {
        return;
    }
    let seconds: u64 = std::env::var("MAILFERRY_PICTURE_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(120);
    let (service, dovecot) = oauth_servers(Duration::from_secs(600));
    let mut sinks = vec![SmtpSink::start(&[])];
    let busy = "busy@example.com";
    let relay = RelayFront::start(
        sinks[0].port(),
        &[
            (GHOST, UNKNOWN),
            (busy, "450 4.2.1 Mailbox busy, try later"),
        ],
    );
    let dir = tempfile::tempdir().unwrap();
    let metrics = free_port();
    let gateway = GatewayConfig::new(dir.path().join("state"), relay.port)
        .metrics_listen(&format!("127.0.0.1:{metrics}"))
        .relay_line("retry: {initial: 5s, max: 20s, max_attempts: 3}")
        .extra_line("max_hops: 1");
    let config = with_accounts(gateway, &dovecot, &service).write(dir.path());
    let daemon = run(&config);
    eprintln!("metrics on 127.0.0.1:{metrics}");
    let start = std::time::Instant::now();
    let mut n = 0;
    while start.elapsed() < Duration::from_secs(seconds) {
        let t = start.elapsed().as_secs();
        // Waves of 1 to 4 messages a second.
        for _ in 0..1 + (t / 8) % 4 {
            n += 1;
            let id = format!("d{n}");
            let mail = match n % 23 {
                0 => looping_mail(&format!("loop {n}"), &id),
                7 | 15 => catchall_mail(None, "dave@example.com", Some(GHOST), &id),
                11 => catchall_mail(None, busy, None, &id),
                _ => {
                    let to = format!("user{}@example.com", n % 9);
                    catchall_mail(Some(&to), &to, None, &id)
                }
            };
            dovecot.deliver(CATCHALL, &mail);
        }
        // The relay is down from 40 % to 60 % of the run.
        let part = t * 100 / seconds;
        if (40..60).contains(&part) && !sinks.is_empty() {
            sinks.clear();
            eprintln!("relay down at {t} s");
        } else if part >= 60 && sinks.is_empty() {
            sinks.push(SmtpSink::start(&[]));
            relay.set_upstream(sinks[0].port());
            eprintln!("relay back at {t} s");
        }
        std::thread::sleep(Duration::from_secs(1));
    }
    drop(daemon);
}
