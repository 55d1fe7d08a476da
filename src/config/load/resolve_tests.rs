//! The two steps apart: validation reads no file and no variable; resolving reads them and
//! names the key of each one that fails.

use super::tests::base_with;
use crate::config::{KeyAt, SecretOf, SecretSource, Source, validate};

/// `BASE` naming a CA file, a client certificate and key, a password file and an unset
/// variable, none of which exists (the directory does not either).
fn names_missing_files() -> String {
    base_with(
        "  host: mail.corp.local\n",
        "  host: mail.corp.local\n  ca_file: ca.pem\n  client_cert: client.pem\n  client_key: client.key\n",
    )
    .replace(
        "    password: pw\n",
        "    password_file: a.pw\n  - name: b\n    protocol: pop3\n    host: pop.provider.net\n    username: v@example.com\n    password_env: MAILFERRY_TEST_SURELY_UNSET_43\n",
    )
}

const FILE: &str = "/nonexistent-mailferry-dir/mailferry.yaml";

fn key(name: &str, line: usize, column: usize) -> KeyAt {
    KeyAt {
        name: name.to_string(),
        line,
        column,
    }
}

#[test]
fn validation_reads_no_file_and_lists_what_the_file_names() {
    let validated = validate(&names_missing_files(), FILE).unwrap_or_else(|e| panic!("{e}"));
    let dir = std::path::Path::new("/nonexistent-mailferry-dir");
    assert_eq!(
        validated.sources(),
        [
            Source::CaFile {
                path: dir.join("ca.pem"),
                key: key("relay.ca_file", 4, 12),
            },
            Source::ClientIdentity {
                section: "relay".to_string(),
                cert: dir.join("client.pem"),
                cert_key: key("relay.client_cert", 5, 16),
                key: dir.join("client.key"),
                key_key: key("relay.client_key", 6, 15),
            },
            Source::Secret {
                of: SecretOf::Account(0),
                from: SecretSource::File(dir.join("a.pw")),
                key: key("accounts[a].password_file", 14, 20),
            },
            Source::Secret {
                of: SecretOf::Account(1),
                from: SecretSource::Env("MAILFERRY_TEST_SURELY_UNSET_43".to_string()),
                key: key("accounts[b].password_env", 19, 19),
            },
        ]
    );
}

#[test]
fn resolve_reports_every_missing_source_at_its_key() {
    let errors = validate(&names_missing_files(), FILE)
        .unwrap_or_else(|e| panic!("{e}"))
        .resolve()
        .unwrap_err()
        .0;
    let found: Vec<(usize, &str)> = errors
        .iter()
        .map(|e| (e.line, e.message.as_str()))
        .collect();
    assert_eq!(errors.len(), 4, "{errors:#?}");
    for (line, needle) in [
        (4, "relay.ca_file: "),
        (5, "relay: "),
        (
            14,
            "accounts[a].password_file: cannot read /nonexistent-mailferry-dir/a.pw",
        ),
        (
            19,
            "accounts[b].password_env: environment variable MAILFERRY_TEST_SURELY_UNSET_43 is not set",
        ),
    ] {
        assert!(
            found.iter().any(|(l, m)| *l == line && m.contains(needle)),
            "no {needle:?} at line {line} in {found:#?}"
        );
    }
    assert!(errors.iter().all(|e| e.file == FILE && e.column >= 1));
    // Sorted by line, as validation errors are.
    assert!(errors.windows(2).all(|w| w[0].line <= w[1].line));
}

#[test]
fn resolve_fills_in_the_password_and_never_shows_it() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("a.pw"), "s3cret-from-file\r\n").unwrap();
    let text = names_missing_files()
        .replace(
            "  ca_file: ca.pem\n  client_cert: client.pem\n  client_key: client.key\n",
            "",
        )
        .replace(
            "password_env: MAILFERRY_TEST_SURELY_UNSET_43",
            "password: inline",
        );
    let file = dir.path().join("mailferry.yaml");
    let validated = validate(&text, file.to_str().unwrap()).unwrap_or_else(|e| panic!("{e}"));
    // Before resolving, the secret has not been read: it is nowhere in the value.
    assert!(!format!("{validated:?}").contains("s3cret"));
    let config = validated
        .clone()
        .resolve()
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(config.accounts[0].password.expose(), "s3cret-from-file");
    assert_eq!(config.accounts[1].password.expose(), "inline");

    // A secret the resolve step refuses is named by its key, not shown.
    std::fs::write(dir.path().join("a.pw"), "s3cret\nsecond line\n").unwrap();
    let errors = validated.resolve().unwrap_err();
    assert_eq!(errors.0.len(), 1, "{errors:#?}");
    assert_eq!(errors.0[0].line, 11);
    assert!(errors.0[0].message.contains("line break"), "{errors}");
    assert!(
        !format!("{errors}{errors:?}").contains("s3cret"),
        "{errors}"
    );
}

#[test]
fn both_steps_report_the_text_and_the_files_in_one_run() {
    // A bad port (line 4) in a file that also names missing files (lines 5, 6, 15, 20).
    let text = names_missing_files().replace(
        "  host: mail.corp.local\n",
        "  host: mail.corp.local\n  port: 0\n",
    );
    let errors = validate(&text, FILE).unwrap_err().0;
    assert_eq!(errors.len(), 1, "validation reads no file: {errors:#?}");
    assert_eq!(errors[0].line, 4);

    let errors = crate::config::from_yaml_str(&text, FILE).unwrap_err().0;
    let lines: Vec<usize> = errors.iter().map(|e| e.line).collect();
    assert_eq!(lines, [4, 5, 6, 15, 20], "{errors:#?}");
    assert!(errors[3].message.contains("cannot read"), "{}", errors[3]);
}

#[test]
fn a_directory_file_is_read_by_resolve_not_by_validation() {
    let text = base_with("accounts:\n", "directory: known\naccounts:\n");
    let validated = validate(&text, FILE).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        validated.sources(),
        [Source::Directory {
            of: crate::config::DirectoryOf::Top,
            path: std::path::Path::new("/nonexistent-mailferry-dir").join("known"),
            key: key("directory", 6, 12),
        }]
    );
    let errors = validated.resolve().unwrap_err().0;
    assert_eq!(errors.len(), 1, "{errors:#?}");
    assert_eq!(errors[0].line, 6);
    assert!(errors[0].message.contains("directory: "), "{}", errors[0]);
}

#[test]
fn the_relay_password_file_is_read_by_resolve_into_relay_auth() {
    let text = base_with(
        "  host: mail.corp.local\n",
        "  host: mail.corp.local\n  username: gateway\n  password_file: relay.pw\n",
    );
    let validated = validate(&text, FILE).unwrap_or_else(|e| panic!("{e}"));
    assert!(matches!(
        validated.sources(),
        [Source::Secret { of: SecretOf::Relay, key, .. }] if key.line == 5
    ));
    let errors = validated.resolve().unwrap_err().0;
    assert_eq!((errors.len(), errors[0].line), (1, 5), "{errors:#?}");
    assert!(
        errors[0]
            .message
            .contains("relay.password_file: cannot read")
    );
}
