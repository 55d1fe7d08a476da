//! The routing keys: `envelope_headers` (top level and per account), `rewrite`, `directory`,
//! `max_hops`.

use super::tests::{BASE, assert_one_error, base_with, load};
use crate::address::Address;
use crate::route::{RewriteSide, Rules};

#[test]
fn routing_keys_default() {
    let c = load(BASE).unwrap();
    assert!(c.rewrite.is_empty());
    assert!(c.directory.is_none());
    assert_eq!(c.max_hops, 3);
    let r = &c.accounts[0].routing;
    assert!(r.envelope_headers.is_none() && r.rewrite.is_none() && r.directory.is_none());
}

#[test]
fn account_routing_keys_replace_the_top_level_ones() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("known"), "alice@example.com\n").unwrap();
    let text = base_with(
        "accounts:\n",
        "envelope_headers: [Delivered-To]\nrewrite:\n  \"@example.net\": \"@example.com\"\nmax_hops: 5\naccounts:\n",
    ) + "    envelope_headers: [X-Original-To, received-for]\n    rewrite: {sales@example.com: bob@example.com}\n    directory: known\n";
    let file = dir.path().join("mailferry.yaml");
    let c = crate::config::from_yaml_str(&text, file.to_str().unwrap()).unwrap();
    assert_eq!(c.envelope_headers, ["Delivered-To"]);
    assert_eq!(c.rewrite.len(), 1);
    assert_eq!(c.rewrite[0].from, RewriteSide::Domain("example.net".into()));
    assert_eq!(c.max_hops, 5);
    let rules = Rules::for_account(&c, &c.accounts[0]);
    assert_eq!(rules.envelope_headers, ["X-Original-To", "received-for"]);
    assert_eq!(rules.rewrite.len(), 1);
    assert_eq!(
        rules.rewrite[0].to,
        RewriteSide::Address(Address::parse("bob@example.com").unwrap())
    );
    let directory = rules.directory.expect("the account's directory");
    assert!(directory.knows(&Address::parse("alice@example.com").unwrap()));
    assert_eq!(rules.max_hops, 5);
}

#[test]
fn a_rewrite_out_of_the_accepted_domains_is_refused_with_its_line() {
    // Line 6: the entry; its target is the value on that line.
    let text = base_with(
        "accounts:\n",
        "rewrite:\n  sales@example.com: j.doe@gmail.com\naccounts:\n",
    );
    assert_one_error(&text, 7, "not in an accepted domain");
    let text = base_with(
        "accounts:\n",
        "rewrite:\n  \"@example.com\": \"@elsewhere.net\"\naccounts:\n",
    );
    assert_one_error(&text, 7, "not in an accepted domain");
    // The postmaster is the one target outside them.
    let text = base_with(
        "accounts:\n",
        "rewrite:\n  abuse@example.com: postmaster@corp.local\naccounts:\n",
    );
    assert!(load(&text).is_ok());
    // In an account too.
    let text = BASE.to_string() + "    rewrite: {\"@example.com\": x@evil.net}\n";
    assert_one_error(&text, 12, "not in an accepted domain");
}

#[test]
fn bad_rewrite_entries_are_each_reported() {
    for (entry, needle) in [
        (
            "sales@example.com: \"@example.com\"",
            "only be rewritten to an address",
        ),
        (
            "\"evil%x@example.com\": a@example.com",
            "neither an address nor @domain",
        ),
        ("a@example.com: \"@\"", "neither an address nor @domain"),
        ("\"@example.com\": [a]", "expected a string"),
    ] {
        let text = base_with("accounts:\n", &format!("rewrite:\n  {entry}\naccounts:\n"));
        assert_one_error(&text, 7, needle);
    }
    let text = base_with("accounts:\n", "rewrite: [a@example.com]\naccounts:\n");
    assert_one_error(&text, 6, "expected a mapping");
    let text = base_with(
        "accounts:\n",
        "rewrite:\n  A@example.com: b@example.com\n  a@Example.com: c@example.com\naccounts:\n",
    );
    assert_one_error(&text, 8, "rewritten twice (also at line 7)");
}

#[test]
fn a_directory_that_cannot_be_read_or_has_bad_lines_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("mailferry.yaml");
    let text = base_with("accounts:\n", "directory: missing\naccounts:\n");
    let e = crate::config::from_yaml_str(&text, file.to_str().unwrap()).unwrap_err();
    assert_eq!((e.0.len(), e.0[0].line), (1, 6), "{e}");
    assert!(e.0[0].message.contains("cannot read"), "{e}");
    std::fs::write(
        dir.path().join("bad"),
        "alice@example.com\nnot an address\n",
    )
    .unwrap();
    let text = base_with("accounts:\n", "directory: bad\naccounts:\n");
    let e = crate::config::from_yaml_str(&text, file.to_str().unwrap()).unwrap_err();
    assert!(e.0[0].message.contains("line 2:"), "{e}");
}

#[test]
fn bad_envelope_headers_and_max_hops_are_reported() {
    let text = base_with("accounts:\n", "envelope_headers: [Received]\naccounts:\n");
    assert_one_error(&text, 6, "write `Received-For`");
    let text = BASE.to_string() + "    envelope_headers: [\"X Bad\"]\n";
    assert_one_error(&text, 12, "not a header name");
    let text = base_with("accounts:\n", "max_hops: 0\naccounts:\n");
    assert_one_error(&text, 6, "max_hops");
}

#[test]
fn single_user_accounts_take_no_routing_keys() {
    let text = BASE.to_string()
        + "    mode: single-user\n    deliver_to: a@corp.local\n    rewrite: {a@example.com: b@example.com}\n";
    assert_one_error(&text, 14, "only for mode: catch-all");
}

#[test]
fn each_pass_sees_the_directory_as_the_file_now_says() {
    let dir = tempfile::tempdir().unwrap();
    let known = dir.path().join("known");
    std::fs::write(&known, "alice@example.com\n").unwrap();
    let text = base_with("accounts:\n", "directory: known\naccounts:\n");
    let file = dir.path().join("mailferry.yaml");
    let c = crate::config::from_yaml_str(&text, file.to_str().unwrap()).unwrap();
    let message = b"To: alice@example.com, bob@example.com\r\n\r\nbody\r\n";
    let rcpts = |c: &crate::config::Config| {
        // What a pass does first: the rules, with the directory read again if it changed.
        let rules = Rules::for_account(c, &c.accounts[0]);
        crate::route::route(message, &rules)
            .recipients
            .iter()
            .map(|r| r.address.to_string())
            .collect::<Vec<_>>()
    };
    assert_eq!(rcpts(&c), ["alice@example.com", "postmaster@corp.local"]);
    std::fs::write(&known, "alice@example.com\nbob@example.com\n").unwrap();
    assert_eq!(rcpts(&c), ["alice@example.com", "bob@example.com"]);
}
