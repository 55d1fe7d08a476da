//! `mailferry check-config` through the real binary: every problem at once, with its line.

mod support;

use support::run_mailferry;

fn check(text: &str) -> (Option<i32>, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.yaml");
    std::fs::write(&path, text).unwrap();
    let out = run_mailferry(&["check-config", "--config", path.to_str().unwrap()]);
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn six_mistakes_are_all_named_with_their_lines() {
    // Each numbered comment marks the line a mistake is on.
    let text = r#"state_dir: /tmp/mailferry-check
colour: blue
relay:
  host: mail.corp.local
  port: 70000
  tls: starttls
domains: [example.com]
postmaster: "not an address"
accounts:
  - name: one
    protocol: pop4
    host: pop.provider.net
    username: u
    password: "s3cret<&>'\""
    poll_interval: 2s
  - name: one
    protocol: pop3
    host: pop.provider.net
    username: u2
    password: p
"#;
    // colour (2), port (5), postmaster (8), pop4 (11), poll_interval (15), duplicate name (16)
    let (code, _out, err) = check(text);
    assert_eq!(code, Some(2), "{err}");
    let lines: Vec<&str> = err.lines().filter(|l| l.contains("bad.yaml:")).collect();
    for line in [2, 5, 8, 11, 15, 16] {
        assert!(
            lines
                .iter()
                .any(|l| l.contains(&format!("bad.yaml:{line}:"))),
            "no error for line {line} in:\n{err}"
        );
    }
    assert!(!err.contains("s3cret"), "password leaked:\n{err}");
}

#[test]
fn a_valid_file_passes() {
    let text = r#"state_dir: /tmp/mailferry-check
relay:
  host: mail.corp.local
domains: [example.com]
postmaster: postmaster@corp.local
accounts:
  - name: one
    protocol: pop3
    host: pop.provider.net
    username: u
    password: p
"#;
    let (code, out, err) = check(text);
    assert_eq!(code, Some(0), "{out}{err}");
}

#[test]
fn the_example_configuration_is_valid() {
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/conf/mailferry.example.yaml");
    // The example names its password through an environment variable or inline; either way it
    // must load as shipped.
    let out = std::process::Command::new(support::mailferry_bin())
        .args(["check-config", "--config", example])
        .env("MAILFERRY_CATCHALL_PASSWORD", "x")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn an_imap_account_with_a_subfolder_is_valid() {
    let text = r#"state_dir: /tmp/mailferry-check
relay:
  host: mail.corp.local
domains: [example.com]
postmaster: postmaster@corp.local
accounts:
  - name: office
    protocol: imap
    host: imap.provider.net
    username: u
    password: p
    folder: INBOX/Support
"#;
    let (code, out, err) = check(text);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("ok (1 account(s)"), "{out}");
}

#[test]
fn check_config_explains_the_initial_choice_of_a_kept_mailbox() {
    let (code, out, _) = check(
        "state_dir: /tmp/mailferry-check-initial
relay: {host: mail.corp.local}
domains: [example.com]
postmaster: postmaster@corp.local
accounts:
  - {name: kept, protocol: pop3, host: pop.example.net, username: u1, password: p, retention: keep}
  - {name: chosen, protocol: pop3, host: pop.example.net, username: u2, password: p, retention: 14d, initial: deliver_all}
",
    );
    assert_eq!(code, Some(0));
    assert!(
        out.contains("account kept: retention keep without `initial`"),
        "{out}"
    );
    assert!(!out.contains("account chosen"), "{out}");
}

#[test]
fn a_bad_source_routed_value_is_named_with_line_and_column() {
    let text = r#"state_dir: /tmp/mailferry-check
relay:
  host: mail.corp.local
domains: [example.com]
postmaster: postmaster@corp.local
source_routed: relay
accounts:
  - name: one
    protocol: pop3
    host: pop.provider.net
    username: u
    password: p
"#;
    let (code, _out, err) = check(text);
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.lines().any(|l| l.contains("bad.yaml:6:16")
            && l.contains(
                "source_routed: `relay` is not allowed; allowed values: postmaster | reject"
            )),
        "{err}"
    );
    // A postmaster that would itself route onward is no usable address either.
    let text = text.replace("source_routed: relay\n", "").replace(
        "postmaster: postmaster@corp.local",
        "postmaster: pm%x.com@corp.local",
    );
    let (code, _out, err) = check(&text);
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.lines()
            .any(|l| l.contains("bad.yaml:5:") && l.contains("'%'")),
        "{err}"
    );
}

/// A `state_dir` that is a regular file stops `mailferry run` with one line that names the
/// directory and the operating system's reason, once each.
#[test]
fn run_with_a_state_dir_that_is_a_file_says_so_once() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    std::fs::write(&state, "a file, not a directory").unwrap();
    let config = dir.path().join("mailferry.yaml");
    std::fs::write(
        &config,
        format!(
            r#"state_dir: {}
relay:
  host: 127.0.0.1
  port: 1
domains: [example.com]
postmaster: postmaster@example.com
accounts:
  - name: one
    protocol: pop3
    host: 127.0.0.1
    port: 1
    tls: none
    username: u
    password: p
"#,
            state.display()
        ),
    )
    .unwrap();
    let out = run_mailferry(&["run", "--config", config.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert_eq!(
        err.matches("cannot create the state directory").count(),
        1,
        "{err}"
    );
}
