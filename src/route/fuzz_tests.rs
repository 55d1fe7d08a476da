//! The long property test over the header parser and the whole router with every rule on
//! (the router half of the address-parser fuzz, `address::fuzz`):
//! generated headers (envelope headers above and below `Received:`, `for` clauses, trace
//! headers, every address form) against generated rules (rewrites leading in and out of the
//! accepted domains, a directory, `Received-For`, single-user). Whatever comes out: no
//! panic, at least one recipient, each in an accepted domain, the single-user target or the
//! postmaster, none twice, all safe on an SMTP line. `MAILFERRY_FUZZ_CASES=1000000` makes a
//! longer run. Inputs it finds go into `tests/corpus/route-regressions/` (one file per
//! input), which [`regression_corpus`] runs under every rule set on every `cargo test`.

use super::tests::{addr, msg, rules};
use super::*;
use crate::address::fuzz::{cases, safe_on_the_wire};
use proptest::prelude::*;

/// The invariants of one routing decision.
fn check(m: &[u8], rules: &Rules) -> Result<(), TestCaseError> {
    let e = explain(m, rules);
    let r = &e.routing;
    prop_assert!(!r.recipients.is_empty());
    let mut keys = HashSet::new();
    for rcpt in &r.recipients {
        prop_assert!(keys.insert(rcpt.address.dedup_key()), "twice: {:?}", rcpt);
        prop_assert_eq!(safe_on_the_wire(&rcpt.address), Ok(()));
        let single_user =
            matches!(&rules.mode, Mode::SingleUser { deliver_to } if *deliver_to == rcpt.address);
        prop_assert!(
            single_user || rcpt.address == rules.postmaster || rules.accepts(&rcpt.address),
            "outside: {:?}",
            rcpt
        );
        if let (Some(d), false) = (
            &rules.directory,
            single_user || rcpt.address == rules.postmaster,
        ) {
            prop_assert!(d.knows(&rcpt.address), "not in the directory: {:?}", rcpt);
        }
    }
    if let Mode::SingleUser { .. } = rules.mode {
        prop_assert_eq!(r.recipients.len(), 1);
    }
    if let Some(a) = &r.return_path {
        prop_assert_eq!(safe_on_the_wire(a), Ok(()));
    }
    // A refused address is never sent as written.
    for refused in &r.refused {
        let written = refused.address.trim();
        prop_assert!(
            !r.recipients.iter().any(|x| x.address.as_str() == written),
            "{:?}",
            refused
        );
    }
    // The report and its JSON never fail either.
    let report = Report {
        account: "fuzz",
        explanation: &e,
        delivered_before: &[],
    };
    prop_assert!(report.to_string().starts_with("account: fuzz\n"));
    let json = report.json();
    prop_assert!(json.ends_with('}'), "{}", json);
    prop_assert_eq!(r.looped.is_some(), looped(m, rules).is_some());
    Ok(())
}

fn side() -> impl Strategy<Value = &'static str> {
    prop::sample::select(vec![
        "alice@example.com",
        "sales@example.com",
        "@example.com",
        "@example.net",
        "@sub.example.org",
        "x@evil.net",
        "@evil.net",
        "postmaster@corp.local",
        "bob@a.example.org",
    ])
}

/// Rules with every routing key varied.
fn any_rules() -> impl Strategy<Value = Rules> {
    let rewrites = prop::collection::vec((side(), side()), 0..5);
    let directory = prop::option::of(prop::sample::subsequence(
        vec![
            "alice@example.com",
            "*@example.com",
            "bob@a.example.org",
            "*@sub.example.org",
            "j.doe@example.com",
        ],
        0..4,
    ));
    let headers = prop::sample::subsequence(
        vec![
            "X-Original-To",
            "Delivered-To",
            RECEIVED_FOR,
            "Envelope-To",
            "X-Custom-To",
        ],
        0..5,
    );
    (
        rewrites,
        directory,
        headers,
        any::<bool>(),
        1u32..5,
        any::<bool>(),
    )
        .prop_map(|(rw, dir, headers, single, max_hops, reject)| Rules {
            rewrite: rw
                .into_iter()
                .filter_map(|(f, t)| {
                    Rewrite::new(RewriteSide::parse(f).ok()?, RewriteSide::parse(t).ok()?).ok()
                })
                .collect(),
            directory: dir.map(|d| Arc::new(Directory::parse(&d.join("\n")).unwrap_or_default())),
            envelope_headers: headers.into_iter().map(String::from).collect(),
            mode: if single {
                Mode::SingleUser {
                    deliver_to: addr("alice@corp.local"),
                }
            } else {
                Mode::CatchAll
            },
            max_hops,
            source_routed: if reject {
                SourceRouted::Reject
            } else {
                SourceRouted::Postmaster
            },
            ..rules()
        })
}

fn address() -> impl Strategy<Value = String> {
    let piece = prop::sample::select(vec![
        "alice",
        "sales",
        "Bob",
        "j.doe",
        "postmaster",
        ".",
        "@",
        "%",
        "!",
        "\"",
        " ",
        ",",
        ":",
        ";",
        "<",
        ">",
        "(",
        ")",
        "\\",
        "example.com",
        "example.net",
        "a.example.org",
        "sub.example.org",
        "evil.net",
        "corp.local",
        "=?utf-8?q?",
        "?=",
        "é",
        "\r\n ",
        "\u{7f}",
        "@a.com,@b.com:",
    ]);
    prop::collection::vec(piece, 0..12).prop_map(|p| p.concat())
}

fn message() -> impl Strategy<Value = Vec<u8>> {
    let name = prop::sample::select(vec![
        "To",
        "Cc",
        "Bcc",
        "Resent-To",
        "X-Original-To",
        "Delivered-To",
        "Envelope-To",
        "X-Custom-To",
        "Received",
        "Return-Path",
        "From",
    ]);
    let line = (name, prop::collection::vec(address(), 0..4), any::<u8>()).prop_map(
        |(n, a, shape)| match (n, shape % 4) {
            ("Received", 0) => format!(
                "Received: from a by gw (mailferry) for <{}>; d",
                a.join(",")
            ),
            ("Received", 1) => format!("Received: from a by b\r\n\tfor {}; d", a.join(", ")),
            ("Received", 2) => format!("Received: (for {}) by b; d", a.join(" ")),
            (n, _) => format!("{n}: {}", a.join(", ")),
        },
    );
    prop::collection::vec(line, 0..10).prop_map(|lines| {
        let refs: Vec<&str> = lines.iter().map(String::as_str).collect();
        msg(&refs)
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases(3000)))]

    #[test]
    fn every_rule_on_generated_headers(m in message(), rules in any_rules()) {
        check(&m, &rules)?;
    }

    #[test]
    fn every_rule_on_arbitrary_bytes(
        m in prop::collection::vec(any::<u8>(), 0..1024),
        rules in any_rules(),
    ) {
        check(&m, &rules)?;
    }
}

#[test]
fn regression_corpus() {
    let dir = std::path::Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/corpus/route-regressions"
    ));
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig::with_cases(64));
    let mut files = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "md") {
            continue;
        }
        let m = std::fs::read(&path).unwrap();
        files += 1;
        // Each input under many rule sets.
        runner
            .run(&any_rules(), |rules| check(&m, &rules))
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    }
    assert!(files > 0, "no regression input in {}", dir.display());
}
