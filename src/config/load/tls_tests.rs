//! The TLS keys of an account and of `relay:` (`tls.rs`).

use super::tests::{BASE, PEM_CERT, assert_one_error, base_with, load};
use crate::config::{TlsOptions, TlsVersion};
use crate::tls::Fingerprint;

const FP: &str = "sha256:01:E0:14:EE:4B:02:5A:B0:8F:51:70:2E:1C:C3:C1:5C:\
                  18:5A:47:83:F7:32:FB:9D:EE:9E:F2:C1:E8:1B:68:66";
const PEM_KEY: &str = "-----BEGIN PRIVATE KEY-----\nMAA=\n-----END PRIVATE KEY-----\n";

/// `BASE` with `lines` added to the account (after `password: pw`, line 11).
fn account_with(lines: &str) -> String {
    format!("{BASE}{lines}")
}

#[test]
fn every_tls_key_is_read_for_accounts_and_the_relay() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display();
    std::fs::write(dir.path().join("client.pem"), PEM_CERT).unwrap();
    std::fs::write(dir.path().join("client.key"), PEM_KEY).unwrap();
    std::fs::write(dir.path().join("ca.pem"), PEM_CERT).unwrap();
    let text = base_with(
        "  host: mail.corp.local\n",
        &format!(
            "  host: mail.corp.local\n  ca_file: {d}/ca.pem\n  tls_server_name: Relay.Corp.Local\n  tls_min_version: \"1.3\"\n  client_cert: {d}/client.pem\n  client_key: {d}/client.key\n"
        ),
    );
    let text = format!(
        "{text}    tls_fingerprint: \"{FP}\"\n    tls_server_name: 192.0.2.7\n    tls_min_version: 1.2\n"
    );
    let c = load(&text).unwrap();
    assert_eq!(
        c.relay.tls_options,
        TlsOptions {
            ca_file: Some(dir.path().join("ca.pem")),
            server_name: Some("relay.corp.local".to_owned()),
            min_version: TlsVersion::V1_3,
            client_cert: Some(dir.path().join("client.pem")),
            client_key: Some(dir.path().join("client.key")),
            ..TlsOptions::default()
        }
    );
    assert_eq!(
        c.accounts[0].tls_options,
        TlsOptions {
            fingerprint: Some(Fingerprint::parse(FP).unwrap()),
            server_name: Some("192.0.2.7".to_owned()),
            ..TlsOptions::default()
        }
    );
    let off = load(&account_with("    verify_certificate: false\n")).unwrap();
    assert!(!off.accounts[0].tls_options.verify_certificate);
    assert_eq!(
        crate::tls::warnings(&off).len(),
        1,
        "one warning, for the account"
    );
}

#[test]
fn old_tls_versions_are_refused_with_the_reason() {
    for old in ["\"1.0\"", "1.1", "TLSv1", "tlsv1.1"] {
        let text = account_with(&format!("    tls_min_version: {old}\n"));
        assert_one_error(&text, 12, "RFC 8996");
    }
    for ssl in ["SSLv3", "sslv2"] {
        let text = account_with(&format!("    tls_min_version: {ssl}\n"));
        assert_one_error(&text, 12, "SSLv3 and older are broken");
    }
    let text = account_with("    tls_min_version: \"1.4\"\n");
    assert_one_error(&text, 12, "allowed values: \"1.2\" | \"1.3\"");
}

#[test]
fn a_malformed_fingerprint_says_what_is_wrong() {
    let text = account_with("    tls_fingerprint: \"sha256:AB:CD\"\n");
    assert_one_error(&text, 12, "has 4 hex digits");
    let text = account_with("    tls_fingerprint: \"md5:AB:CD:EF:01\"\n");
    assert_one_error(&text, 12, "`md5` fingerprints are not accepted");
}

#[test]
fn contradictory_trust_settings_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, PEM_CERT).unwrap();
    let text = account_with(&format!(
        "    ca_file: {}\n    verify_certificate: false\n",
        ca.display()
    ));
    assert_one_error(&text, 13, "ca_file would not be used");
    let text = account_with(&format!(
        "    ca_file: {}\n    tls_fingerprint: \"{FP}\"\n",
        ca.display()
    ));
    assert_one_error(&text, 13, "ca_file would not be used");
    let text = account_with("    verify_certificate: \"no\"\n");
    assert_one_error(&text, 12, "expected true or false");
}

#[test]
fn tls_keys_without_tls_are_refused() {
    let text = account_with(&format!("    tls: none\n    tls_fingerprint: \"{FP}\"\n"));
    assert_one_error(&text, 13, "there is no TLS with `tls: none`");
}

#[test]
fn ca_file_and_client_certificate_files_are_checked_at_load() {
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("empty.pem");
    std::fs::write(&empty, "nothing\n").unwrap();
    let text = account_with(&format!("    ca_file: {}\n", empty.display()));
    assert_one_error(&text, 12, "no CERTIFICATE block");

    let cert = dir.path().join("client.pem");
    std::fs::write(&cert, PEM_CERT).unwrap();
    let text = account_with(&format!("    client_cert: {}\n", cert.display()));
    assert_one_error(&text, 12, "needs client_key");
    let text = account_with(&format!(
        "    client_cert: {}\n    client_key: {}\n",
        cert.display(),
        empty.display()
    ));
    assert_one_error(&text, 13, "no usable private key");
}

#[test]
fn tls_server_name_must_be_a_host_name() {
    let text = account_with("    tls_server_name: \"not a name\"\n");
    assert_one_error(&text, 12, "is not a host name or IP address");
}

#[test]
fn the_example_file_documents_every_key() {
    let example = include_str!("../../../conf/mailferry.example.yaml");
    let keys = super::keys_read();
    // The walk reached every section: a key of each is among those read.
    for key in [
        "state_dir",
        "listen",
        "data_timeout",
        "max_attempts",
        "idle",
        "client_key",
        "lease_ttl",
    ] {
        assert!(keys.contains(&key), "{key} not read: {keys:?}");
    }
    for key in keys {
        assert!(
            example.contains(&format!("{key}:")),
            "{key} not in the example"
        );
    }
}
