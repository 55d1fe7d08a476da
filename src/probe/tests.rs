//! The pure parts of `test-connection`: which step a failure is reported at, and what the
//! capabilities and the relay's SIZE are said to mean.

use std::time::Duration;

use super::relay::{session_steps as relay_steps, size_step};
use super::*;
use crate::config::from_yaml_str;
use crate::fetch::Pop3Error;
use crate::fetch::pop3::kind::{pop3_capabilities, pop3_failure};
use crate::relay::RelayError;
use crate::relay::check::{SessionCheck, Stage as RelayStage};

fn account(extra: &str) -> AccountConfig {
    let yaml = format!(
        "state_dir: /nonexistent
relay:
  host: relay.test
domains: [example.com]
postmaster: postmaster@example.com
accounts:
  - name: a
    protocol: pop3
    host: pop.test
    username: u
    password: p
{extra}"
    );
    let mut config = from_yaml_str(&yaml, "t.yaml").expect("test configuration");
    config.accounts.remove(0)
}

fn statuses(steps: &[Step]) -> Vec<(&'static str, Status)> {
    steps.iter().map(|s| (s.step, s.status)).collect()
}

#[test]
fn a_refused_login_fails_at_authenticate_after_the_steps_that_passed() {
    let a = account("");
    let progress = Progress {
        peer: Some("127.0.0.1:995".parse().unwrap()),
        capabilities: Some(vec!["USER".into()]),
        mechanism: Some("USER/PASS".into()),
        ..Progress::default()
    };
    let e = Pop3Error::AuthFailed {
        method: "USER/PASS".into(),
        text: "[AUTH] no".into(),
        temporary: false,
    };
    let steps = session_steps(&a, &progress, Some(pop3_failure(&e, false)));
    assert_eq!(steps[0].status, Status::Ok);
    assert_eq!(steps[3].step, "authenticate");
    assert_eq!(steps[3].status, Status::Failed);
    assert!(steps[3].detail.contains("USER/PASS"), "{}", steps[3].detail);
    assert!(steps[3].detail.contains("check username and password"));
}

#[test]
fn a_refused_connection_fails_at_connect_and_skips_the_rest() {
    let a = account("");
    let progress = Progress::default();
    let e = Pop3Error::from(TransportError::Connect {
        addr: "pop.test:995".into(),
        error: std::io::Error::from(std::io::ErrorKind::ConnectionRefused),
    });
    let steps = session_steps(&a, &progress, Some(pop3_failure(&e, false)));
    assert_eq!(
        statuses(&steps),
        [
            ("connect", Status::Failed),
            ("tls", Status::Skipped),
            ("capabilities", Status::Skipped),
            ("authenticate", Status::Skipped),
        ]
    );
    assert!(steps[0].detail.contains("nothing accepts connections"));
}

#[test]
fn a_silent_server_after_connect_fails_at_the_next_step() {
    let a = account("    tls: none\n");
    let progress = Progress {
        peer: Some("127.0.0.1:110".parse().unwrap()),
        ..Progress::default()
    };
    let e = Pop3Error::from(TransportError::Timeout(Duration::from_secs(180)));
    let steps = session_steps(&a, &progress, Some(pop3_failure(&e, false)));
    assert_eq!(steps[0].status, Status::Ok);
    assert_eq!(steps[1].status, Status::Warning, "tls: none is said");
    assert_eq!(steps[2].status, Status::Failed, "{steps:#?}");
    assert!(steps[2].detail.contains("no answer"), "{}", steps[2].detail);
}

#[test]
fn login_delay_and_expire_are_explained() {
    let a = account("    poll_interval: 60s\n");
    let lines = [
        "USER".to_owned(),
        "LOGIN-DELAY 900".to_owned(),
        "EXPIRE 0".to_owned(),
    ];
    let text = pop3_capabilities(&lines, &a);
    assert!(
        text.contains("LOGIN-DELAY 900s: the poll interval honours it (a pass every 900s)"),
        "{text}"
    );
    assert!(
        text.contains("EXPIRE 0: the server deletes every message once it was downloaded"),
        "{text}"
    );
    let text = pop3_capabilities(&["EXPIRE NEVER".to_owned()], &a);
    assert!(text.contains("never deletes"), "{text}");
}

#[test]
fn the_relay_s_size_limit_is_weighed_against_max_message_size() {
    let ehlo = |size: &str| vec!["relay.test".to_owned(), size.to_owned()];
    assert_eq!(
        size_step(&ehlo("SIZE 10240000"), 50_000_000).status,
        Status::Warning
    );
    assert_eq!(
        size_step(&ehlo("SIZE 104857600"), 50_000_000).status,
        Status::Ok
    );
    assert!(
        size_step(&ehlo("PIPELINING"), 1)
            .detail
            .contains("no SIZE limit")
    );
    assert!(
        size_step(&ehlo("SIZE"), 1)
            .detail
            .contains("without a limit")
    );
}

#[test]
fn an_unverified_certificate_is_a_warning_in_words() {
    let a = account("    verify_certificate: false\n");
    let progress = Progress {
        peer: Some("127.0.0.1:995".parse().unwrap()),
        tls: Some(PeerTls {
            version: "TLSv1.3".into(),
            cipher: "TLS13_AES_256_GCM_SHA384".into(),
            subject: Some("pop.test".into()),
            issuer: Some("Some CA".into()),
            self_issued: false,
            expires: Some("2030-01-01 00:00:00 UTC".into()),
            fingerprint: None,
        }),
        capabilities: Some(vec!["USER".into()]),
        mechanism: Some("USER/PASS".into()),
        ..Progress::default()
    };
    let steps = session_steps(&a, &progress, None);
    assert_eq!(steps[1].status, Status::Warning);
    assert!(
        steps[1].detail.contains("NOT verified"),
        "{}",
        steps[1].detail
    );
    assert!(
        steps[1].detail.contains("issued by \"Some CA\""),
        "{}",
        steps[1].detail
    );
    assert_eq!(steps[3].status, Status::Ok);
}

fn relay_config(extra: &str) -> Config {
    let yaml = format!(
        "state_dir: /nonexistent
relay:
  host: relay.test
{extra}domains: [example.com]
postmaster: postmaster@example.com
accounts:
  - name: a
    protocol: pop3
    host: pop.test
    username: u
    password: p
"
    );
    from_yaml_str(&yaml, "t.yaml").expect("test configuration")
}

fn check(failed: Option<(RelayStage, RelayError)>) -> SessionCheck {
    SessionCheck {
        helo: "gw.test".into(),
        peer: Some("127.0.0.1:25".parse().unwrap()),
        tls: None,
        ehlo: vec![
            "relay.test".into(),
            "AUTH PLAIN XOAUTH2".into(),
            "SIZE 1000".into(),
        ],
        mechanism: None,
        failed,
    }
}

#[test]
fn a_refused_relay_login_fails_at_authenticate_with_what_to_check() {
    let config = relay_config("  username: gw\n  password: pw\n");
    let refused = RelayError::AuthRefused {
        host: "relay.test".into(),
        mechanism: "PLAIN",
        reply: crate::relay::Reply {
            code: 535,
            text: "5.7.8 no".into(),
        },
    };
    let steps = relay_steps(&config, &check(Some((RelayStage::Authenticate, refused))));
    assert_eq!(
        statuses(&steps),
        [
            ("connect", Status::Ok),
            ("tls", Status::Warning),
            ("ehlo", Status::Ok),
            ("authenticate", Status::Failed),
            ("size", Status::Warning),
        ]
    );
    assert!(steps[3].detail.contains("PLAIN"), "{}", steps[3].detail);
    assert!(
        steps[3]
            .detail
            .contains("check relay.username and relay.password")
    );
    assert!(
        steps[2].detail.contains("AUTH PLAIN XOAUTH2"),
        "{}",
        steps[2].detail
    );
}

#[test]
fn a_relay_that_does_not_answer_skips_the_steps_after_connect() {
    let config = relay_config("");
    let e = RelayError::Tcp {
        host: "relay.test".into(),
        port: 25,
        source: std::io::Error::from(std::io::ErrorKind::ConnectionRefused),
    };
    let steps = relay_steps(&config, &check(Some((RelayStage::Connect, e))));
    assert_eq!(
        statuses(&steps),
        [
            ("connect", Status::Failed),
            ("tls", Status::Skipped),
            ("ehlo", Status::Skipped),
            ("authenticate", Status::Skipped),
            ("size", Status::Skipped),
        ]
    );
    assert!(
        steps[0]
            .detail
            .contains("is the internal mail server running")
    );
    let mut passed = check(None);
    passed.mechanism = None;
    let steps = relay_steps(&config, &passed);
    assert!(
        steps[3].detail.contains("relay.username not set")
            && steps[3].detail.contains("AUTH PLAIN"),
        "{}",
        steps[3].detail
    );
}

#[test]
fn a_missing_token_takes_the_place_of_the_login_failure_but_not_of_an_earlier_one() {
    let token = Some("no OAuth2 access token: refused".to_owned());
    let login = Some((None, "XOAUTH2 needs an OAuth2 token".to_owned()));
    assert_eq!(
        with_token_error(login, token.clone()),
        Some((
            Some(Stage::Authenticate),
            "no OAuth2 access token: refused".into()
        ))
    );
    let tls = Some((Some(Stage::Tls), "certificate".to_owned()));
    assert_eq!(with_token_error(tls.clone(), token), tls);
    assert_eq!(with_token_error(None, None), None);
}
