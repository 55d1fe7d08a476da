//! `proxy` and `auth_backoff_max` of an account: parsed, or refused with file:line:column and
//! without the proxy password in the message.

use std::time::Duration;

use super::tests::{assert_one_error, base_with, load};
use crate::config::ProxyKind;

#[test]
fn a_proxy_url_is_parsed_and_the_backoff_cap_has_a_default() {
    let c = load(&base_with(
        "    password: pw\n",
        "    password: pw\n    proxy: \"socks5://gw:s3cret@127.0.0.1:1080\"\n",
    ))
    .unwrap();
    let proxy = c.accounts[0].proxy.as_ref().unwrap();
    assert_eq!(proxy.kind, ProxyKind::Socks5);
    assert_eq!(proxy.to_string(), "socks5://gw:***@127.0.0.1:1080");
    assert_eq!(c.accounts[0].auth_backoff_max, Duration::from_secs(3_600));

    let c = load(&base_with(
        "    password: pw\n",
        "    password: pw\n    auth_backoff_max: 6h\n",
    ))
    .unwrap();
    assert!(c.accounts[0].proxy.is_none());
    assert_eq!(
        c.accounts[0].auth_backoff_max,
        Duration::from_secs(6 * 3_600)
    );
}

#[test]
fn a_bad_proxy_is_refused_with_its_line_and_without_its_password() {
    let with = |proxy: &str| {
        base_with(
            "    password: pw\n",
            &format!("    password: pw\n    proxy: \"{proxy}\"\n"),
        )
    };
    assert_one_error(
        &with("ftp://gw:s3cret@h:1"),
        12,
        "scheme `ftp` is not supported",
    );
    assert_one_error(&with("socks5://gw:s3cret@h"), 12, "has no port");
    assert_one_error(&with("http://h:http"), 12, "is not a port");
    for bad in ["ftp://gw:s3cret@h:1", "socks5://gw:s3cret@h"] {
        let Err(errors) = load(&with(bad)) else {
            panic!("accepted {bad}")
        };
        assert!(!errors.to_string().contains("s3cret"), "{errors}");
    }
    assert_one_error(
        &base_with(
            "    password: pw\n",
            "    password: pw\n    auth_backoff_max: 10s\n",
        ),
        12,
        "auth_backoff_max",
    );
}
