//! TLS as an administrator meets it: a server whose certificate was made with a plain
//! `openssl req -x509` (self-signed, CA:TRUE, no subjectAltName), trusted by `ca_file` or by
//! `tls_fingerprint`, refused otherwise with the certificate's fingerprint in the error; and
//! a client certificate for a server that requires one.
//!
//! POP3 and IMAP against a real Dovecot over implicit TLS and STLS/STARTTLS, end to end with
//! the binary; the
//! relay against the testkit's SMTP fake speaking STARTTLS or implicit TLS, in process
//! (and once end to end, to see that a refused relay deletes nothing upstream).

mod support;

use std::path::Path;
use std::time::Duration;

use mailferry::address::Address;
use mailferry::config::{RelayConfig, RetryPolicy, TlsMode, TlsOptions};
use mailferry::recipient::Status;
use mailferry::relay::{Relay, SmtpRelay};
use mailferry::testkit::smtp::{FakeSmtp, Script};
use mailferry::testkit::tls::{acceptor, plain_x509, test_ca};
use mailferry::tls::{Fingerprint, load_ca_file};
use support::{AccountYaml, Dovecot, DovecotTls, GatewayConfig, Secret, SmtpSink, message};

const USER: &str = "catchall@example.com";
const PASS: &str = "pop-secret";
/// A fingerprint no test certificate has.
const WRONG: &str = "sha256:00:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:FF:\
                     00:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:FF";

/// The fingerprint of the first certificate in a PEM file.
fn fingerprint(pem: &Path) -> Fingerprint {
    Fingerprint::of(&load_ca_file(pem).unwrap()[0])
}

fn mail(subject: &str) -> Vec<u8> {
    message(
        &[
            ("X-Original-To", "alice@example.com"),
            ("From", "Sender <sender@remote.test>"),
            ("To", "alice@example.com"),
            ("Subject", subject),
            ("Message-ID", &format!("<{subject}@remote.test>")),
        ],
        "Hello.\n",
    )
}

/// How the account reaches Dovecot.
#[derive(Clone, Copy, Debug)]
enum Link {
    Stls,
    Implicit,
}

/// Which of Dovecot's services the account collects from.
#[derive(Clone, Copy, Debug)]
enum Proto {
    Pop3,
    Imap,
}

/// Runs `poll-once` for one catch-all account on `dovecot` with these extra account lines
/// (and `ca_file` if given), relaying to `relay`; returns whether it succeeded, and what it
/// printed (stdout, where the summary names a failed account, then stderr, the log).
fn poll(
    dovecot: &Dovecot,
    (proto, link): (Proto, Link),
    ca_file: Option<&Path>,
    lines: &[String],
    relay: GatewayConfig,
    dir: &Path,
) -> (bool, String) {
    let (port, tls) = match (proto, link) {
        (Proto::Pop3, Link::Stls) => (dovecot.pop3_port(), "starttls"),
        (Proto::Pop3, Link::Implicit) => (dovecot.pop3s_port(), "tls"),
        (Proto::Imap, Link::Stls) => (dovecot.imap_port(), "starttls"),
        (Proto::Imap, Link::Implicit) => (dovecot.imaps_port(), "tls"),
    };
    let protocol = match proto {
        Proto::Pop3 => "pop3",
        Proto::Imap => "imap",
    };
    let config = relay
        .postmaster("postmaster@corp.local")
        .account(AccountYaml {
            name: "tls-account".into(),
            protocol: protocol.into(),
            port,
            tls: tls.into(),
            ca_file: ca_file.map(Path::to_path_buf),
            username: USER.into(),
            password: Secret::Inline(PASS.into()),
            extra_lines: lines.to_vec(),
            ..AccountYaml::default()
        })
        .write(dir);
    let out = support::poll_once(&config.display().to_string());
    let printed = [out.stdout, out.stderr].concat();
    (
        out.status.success(),
        String::from_utf8_lossy(&printed).into_owned(),
    )
}

/// Refused without trust and with a wrong fingerprint (nothing delivered, nothing deleted,
/// one error line with the fingerprint); accepted with the certificate in `ca_file` and with
/// its fingerprint pinned.
fn trust_matrix(proto: Proto, link: Link) {
    let what = format!("{proto:?} over {link:?}");
    let dovecot = Dovecot::start_with(
        &[(USER, PASS)],
        DovecotTls {
            plain_x509: true,
            ..DovecotTls::default()
        },
    );
    let sink = SmtpSink::start(&[]);
    let cert = dovecot.ca_file();
    let fp = fingerprint(&cert).to_string();
    let pin = format!("tls_fingerprint: \"sha256:{fp}\"");
    dovecot.deliver(USER, &mail("first"));

    let refusals: [(&str, Vec<String>, Vec<&str>); 2] = [
        (
            "no trust",
            vec![],
            vec!["self-signed and not trusted", "ca_file", "tls_fingerprint"],
        ),
        (
            "a wrong fingerprint",
            vec![format!("tls_fingerprint: \"{WRONG}\"")],
            vec!["but tls_fingerprint pins 00:11:22"],
        ),
    ];
    for (case, lines, needles) in refusals {
        let dir = tempfile::tempdir().unwrap();
        let relay = GatewayConfig::new(dir.path().join("state"), sink.port());
        let (ok, stderr) = poll(&dovecot, (proto, link), None, &lines, relay, dir.path());
        assert!(!ok, "{what}, {case}: poll-once succeeded\n{stderr}");
        for needle in needles.iter().chain([&fp.as_str()]) {
            assert!(
                stderr.contains(needle),
                "{what}, {case}: {needle:?} not in\n{stderr}"
            );
        }
        let lines_with_fp = stderr.lines().filter(|l| l.contains(&fp)).count();
        assert_eq!(lines_with_fp, 1, "{what}, {case}: one error line\n{stderr}");
        assert!(sink.transactions().is_empty(), "{what}, {case}: delivered");
        assert_eq!(dovecot.count(USER), 1, "{what}, {case}: deleted upstream");
    }

    let dir = tempfile::tempdir().unwrap();
    let relay = GatewayConfig::new(dir.path().join("state"), sink.port());
    let (ok, stderr) = poll(&dovecot, (proto, link), Some(&cert), &[], relay, dir.path());
    assert!(ok, "{what}, ca_file: refused\n{stderr}");
    assert_eq!(sink.wait_for(1, Duration::from_secs(10)).len(), 1);
    assert_eq!(dovecot.count(USER), 0, "{what}, ca_file: left upstream");

    dovecot.deliver(USER, &mail("second"));
    let dir = tempfile::tempdir().unwrap();
    let relay = GatewayConfig::new(dir.path().join("state"), sink.port());
    let (ok, stderr) = poll(&dovecot, (proto, link), None, &[pin], relay, dir.path());
    assert!(ok, "{what}, tls_fingerprint: refused\n{stderr}");
    assert_eq!(sink.wait_for(2, Duration::from_secs(10)).len(), 2);
    assert_eq!(
        dovecot.count(USER),
        0,
        "{what}, tls_fingerprint: left upstream"
    );
}

#[test]
fn pop3_over_implicit_tls_trusts_a_plain_openssl_certificate_only_when_told() {
    if support::skip_e2e() {
        return;
    }
    trust_matrix(Proto::Pop3, Link::Implicit);
}

#[test]
fn pop3_over_stls_trusts_a_plain_openssl_certificate_only_when_told() {
    if support::skip_e2e() {
        return;
    }
    trust_matrix(Proto::Pop3, Link::Stls);
}

#[test]
fn imap_over_implicit_tls_trusts_a_plain_openssl_certificate_only_when_told() {
    if support::skip_e2e() {
        return;
    }
    trust_matrix(Proto::Imap, Link::Implicit);
}

#[test]
fn imap_over_starttls_trusts_a_plain_openssl_certificate_only_when_told() {
    if support::skip_e2e() {
        return;
    }
    trust_matrix(Proto::Imap, Link::Stls);
}

#[test]
fn dovecot_requiring_a_client_certificate_accepts_mailferry_only_with_one() {
    if support::skip_e2e() {
        return;
    }
    let ca = test_ca();
    let (cert, key) = ca.issue_client("gateway");
    let dovecot = Dovecot::start_with(
        &[(USER, PASS)],
        DovecotTls {
            require_client_cert: Some(ca.ca_pem.clone()),
            ..DovecotTls::default()
        },
    );
    let sink = SmtpSink::start(&[]);
    dovecot.deliver(USER, &mail("mtls"));

    let dir = tempfile::tempdir().unwrap();
    let relay = GatewayConfig::new(dir.path().join("state"), sink.port());
    let server_cert = dovecot.ca_file();
    let (ok, stderr) = poll(
        &dovecot,
        (Proto::Pop3, Link::Implicit),
        Some(&server_cert),
        &[],
        relay,
        dir.path(),
    );
    assert!(!ok, "accepted without a client certificate\n{stderr}");
    // Dovecot's words: "Client didn't present valid SSL certificate".
    assert!(stderr.contains("certificate"), "{stderr}");
    assert!(sink.transactions().is_empty());
    assert_eq!(dovecot.count(USER), 1);

    let lines = [
        format!("client_cert: {}", cert.display()),
        format!("client_key: {}", key.display()),
    ];
    let dir = tempfile::tempdir().unwrap();
    let relay = GatewayConfig::new(dir.path().join("state"), sink.port());
    let (ok, stderr) = poll(
        &dovecot,
        (Proto::Pop3, Link::Implicit),
        Some(&server_cert),
        &lines,
        relay,
        dir.path(),
    );
    assert!(
        ok,
        "refused with a client certificate\n{stderr}\n{}",
        dovecot.log()
    );
    assert_eq!(sink.wait_for(1, Duration::from_secs(10)).len(), 1);
    assert_eq!(dovecot.count(USER), 0);
}

#[test]
fn a_relay_with_an_untrusted_certificate_deletes_nothing_upstream() {
    if support::skip_e2e() {
        return;
    }
    let dovecot = Dovecot::start(&[(USER, PASS)]);
    let certs = tempfile::tempdir().unwrap();
    plain_x509(certs.path(), "localhost");
    let fp = fingerprint(&certs.path().join("cert.pem")).to_string();
    let relay = FakeSmtp::start(Script::default().starttls(acceptor(certs.path())));
    dovecot.deliver(USER, &mail("relayed"));

    let dir = tempfile::tempdir().unwrap();
    let config = GatewayConfig::new(dir.path().join("state"), relay.port())
        .relay_tls("starttls")
        .relay_line("tls_server_name: localhost");
    let (ok, stderr) = poll(
        &dovecot,
        (Proto::Pop3, Link::Implicit),
        Some(&dovecot.ca_file()),
        &[],
        config,
        dir.path(),
    );
    assert!(!ok, "relayed to an untrusted server\n{stderr}");
    assert!(
        stderr.contains(&fp) && stderr.contains("self-signed"),
        "{stderr}"
    );
    assert!(relay.log().data().is_empty());
    assert_eq!(dovecot.count(USER), 1, "deleted upstream");

    // A new state directory: the failed attempt above may have set a back-off.
    let dir = tempfile::tempdir().unwrap();
    let config = GatewayConfig::new(dir.path().join("state"), relay.port())
        .relay_tls("starttls")
        .relay_line(&format!("tls_fingerprint: \"{fp}\""));
    let (ok, stderr) = poll(
        &dovecot,
        (Proto::Pop3, Link::Implicit),
        Some(&dovecot.ca_file()),
        &[],
        config,
        dir.path(),
    );
    assert!(ok, "{stderr}");
    assert_eq!(relay.log().data().len(), 1);
    assert_eq!(relay.log().data_tls(), [true]);
    assert_eq!(dovecot.count(USER), 0);
}

// --- The relay in process: no root needed. ---

fn relay_config(port: u16, tls: TlsMode, tls_options: TlsOptions) -> RelayConfig {
    RelayConfig {
        host: "127.0.0.1".to_owned(),
        port,
        tls,
        helo: Some("gw.test".to_owned()),
        connections: 1,
        tls_options,
        timeout: Duration::from_secs(10),
        data_timeout: Duration::from_secs(10),
        retry: RetryPolicy::default(),
        auth: None,
    }
}

#[tokio::test]
async fn the_relay_trusts_a_plain_openssl_certificate_only_when_told() {
    let certs = tempfile::tempdir().unwrap();
    plain_x509(certs.path(), "localhost");
    let cert = certs.path().join("cert.pem");
    let fp = fingerprint(&cert);
    // The certificate is for localhost; the relay host is written as 127.0.0.1.
    let named = |o: TlsOptions| TlsOptions {
        server_name: Some("localhost".to_owned()),
        ..o
    };
    let cases = [
        ("no trust", named(TlsOptions::default()), false),
        (
            "ca_file",
            named(TlsOptions {
                ca_file: Some(cert.clone()),
                ..TlsOptions::default()
            }),
            true,
        ),
        (
            "tls_fingerprint",
            TlsOptions {
                fingerprint: Some(fp),
                ..TlsOptions::default()
            },
            true,
        ),
        (
            "a wrong fingerprint",
            TlsOptions {
                fingerprint: Some(Fingerprint::parse(WRONG).unwrap()),
                ..TlsOptions::default()
            },
            false,
        ),
    ];
    let message = mail("relay");
    let rcpt = [Address::parse("alice@example.com").unwrap()];
    for mode in [TlsMode::Starttls, TlsMode::Tls] {
        for (case, options, trusted) in cases.clone() {
            let script = match mode {
                TlsMode::Tls => Script::default().implicit_tls(acceptor(certs.path())),
                _ => Script::default().starttls(acceptor(certs.path())),
            };
            let server = FakeSmtp::start(script);
            let relay = SmtpRelay::new(relay_config(server.port(), mode, options));
            let result = relay.send(None, &rcpt, &message).await;
            let log = server.take();
            if trusted {
                let results = result.unwrap_or_else(|e| panic!("{mode:?}, {case}: {e}"));
                assert!(
                    matches!(results[0].status, Status::Delivered(_)),
                    "{mode:?}, {case}: {results:?}"
                );
                assert_eq!(log.data_tls(), [true], "{mode:?}, {case}");
            } else {
                let err = result.expect_err(case);
                assert!(err.is_unavailable(), "{mode:?}, {case}: {err:?}");
                let text = err.to_string();
                assert!(text.contains(&fp.to_string()), "{mode:?}, {case}: {text}");
                assert!(std::error::Error::source(&err).is_none(), "{text}");
                assert!(log.data().is_empty(), "{mode:?}, {case}");
                let plain: Vec<&str> = match mode {
                    TlsMode::Tls => vec![],
                    _ => vec!["EHLO gw.test", "STARTTLS"],
                };
                assert_eq!(
                    log.commands, plain,
                    "{mode:?}, {case}: nothing after STARTTLS"
                );
            }
        }
    }
}

#[test]
fn verify_certificate_false_is_warned_about_at_every_start() {
    let dir = tempfile::tempdir().unwrap();
    let config = GatewayConfig::new(dir.path().join("state"), 2525)
        .account(AccountYaml {
            name: "careless".into(),
            port: 995,
            tls: "tls".into(),
            username: USER.into(),
            password: Secret::Inline(PASS.into()),
            extra_lines: vec!["verify_certificate: false".into()],
            ..AccountYaml::default()
        })
        .write(dir.path());
    let out = support::run_mailferry(&["check-config", "--config", &config.display().to_string()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("account careless: verify_certificate is false") && stderr.contains("WARN"),
        "{stderr}"
    );
}
