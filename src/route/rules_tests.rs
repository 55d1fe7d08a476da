//! The rules added to the router: `Received-For`, per-account envelope headers, `rewrite`,
//! `directory`, loop protection, and the explanation of each decision.

use super::tests::{RECEIVED, addr, env, hdr, msg, pair, rcpts, rules};
use super::*;

use super::rewrite::rule as rewrite;

fn with_directory(text: &str) -> Rules {
    Rules {
        directory: Some(Arc::new(Directory::parse(text).unwrap())),
        ..rules()
    }
}

const TRACE: &str = "Received: from pop.provider.net by gw.corp.local (mailferry) with POP3 id 1\r\n\tfor <alice@example.com>; Mon, 1 Jan 2024 00:00:00 +0000";

#[test]
fn received_for_is_read_only_when_configured_and_only_from_the_topmost() {
    let m = msg(&[
        "Received: from mx.a.net by mx.provider.net with ESMTP id 1\r\n\tfor <alice@example.com>; Mon, 1 Jan 2024",
        "Received: from evil by mx.a.net for <mallory@example.com>; Mon, 1 Jan 2024",
        "To: bob@example.com",
    ]);
    // Not configured (the default): To decides.
    assert_eq!(rcpts(&m, &rules()), [pair("bob@example.com", hdr("To"))]);
    let opt_in = Rules {
        envelope_headers: vec!["X-Original-To".into(), RECEIVED_FOR.into()],
        ..rules()
    };
    assert_eq!(
        rcpts(&m, &opt_in),
        [pair("alice@example.com", Reason::ReceivedFor)]
    );
    // A topmost Received without a for clause: the message headers decide.
    let m = msg(&[
        RECEIVED,
        "Received: from evil by mx.a.net for <mallory@example.com>; Mon, 1 Jan 2024",
        "To: bob@example.com",
    ]);
    assert_eq!(rcpts(&m, &opt_in), [pair("bob@example.com", hdr("To"))]);
}

#[test]
fn received_for_skips_mailferrys_own_trace_and_foreign_or_own_addresses() {
    let opt_in = Rules {
        envelope_headers: vec![RECEIVED_FOR.into()],
        ..rules()
    };
    let m = msg(&[TRACE, "To: bob@example.com"]);
    assert_eq!(rcpts(&m, &opt_in), [pair("bob@example.com", hdr("To"))]);
    let m = msg(&[
        "Received: by mx.provider.net for <catchall@example.com>, <x@gmail.com>; Mon, 1 Jan 2024",
        "To: bob@example.com",
    ]);
    let e = explain(&m, &opt_in);
    let why: Vec<_> = e.skipped().into_iter().map(|s| s.why).collect();
    assert_eq!(why, [SkipReason::OwnAddress, SkipReason::ForeignDomain]);
    assert_eq!(e.routing.recipients[0].reason, hdr("To"));
}

#[test]
fn a_rewrite_comes_before_the_domain_check() {
    let r = Rules {
        rewrite: vec![
            rewrite("@example.net", "@example.com"),
            rewrite("sales@example.com", "j.doe@example.com"),
            rewrite("abuse@example.com", "postmaster@corp.local"),
            // A rule the loader would refuse: the router refuses its result all the same.
            rewrite("info@example.com", "info@evil.net"),
        ],
        ..rules()
    };
    let m = msg(&[
        "To: Bob <bob@example.net>, sales@example.com, abuse@example.com",
        "Cc: info@example.com, j.doe@example.com",
    ]);
    let e = explain(&m, &r);
    let got: Vec<_> = e
        .routing
        .recipients
        .iter()
        .map(|r| (r.address.to_string(), r.reason.to_string()))
        .collect();
    assert_eq!(
        got,
        [
            (
                "bob@example.com".to_string(),
                "header To, rewritten from bob@example.net".to_string()
            ),
            (
                "j.doe@example.com".into(),
                "header To, rewritten from sales@example.com".into()
            ),
            (
                "postmaster@corp.local".into(),
                "header To, rewritten from abuse@example.com".into()
            ),
        ]
    );
    let skipped = e.skipped();
    assert_eq!(skipped.len(), 1);
    assert_eq!(
        skipped[0].why,
        SkipReason::RewrittenOutside(addr("info@evil.net"))
    );
    // j.doe named again in Cc: listed as a repeat, not a second recipient.
    assert!(e.found.iter().any(|f| f.address == "j.doe@example.com"
        && f.decision == Decision::Again(addr("j.doe@example.com"))));
}

#[test]
fn the_own_address_is_checked_before_a_rewrite() {
    let r = Rules {
        rewrite: vec![rewrite("catchall@example.com", "alice@example.com")],
        ..rules()
    };
    let m = msg(&["Delivered-To: catchall@example.com", "To: bob@example.com"]);
    assert_eq!(rcpts(&m, &r), [pair("bob@example.com", hdr("To"))]);
}

#[test]
fn a_recipient_the_directory_does_not_know_goes_to_the_postmaster() {
    let r = with_directory("alice@example.com\n*@sales.example.org\n");
    let m = msg(&[
        "To: alice@example.com, carol@example.com, dan@example.com",
        "Cc: eve@sales.example.org",
    ]);
    let e = explain(&m, &r);
    assert_eq!(
        rcpts(&m, &r),
        [
            pair("alice@example.com", hdr("To")),
            pair("eve@sales.example.org", hdr("Cc")),
            pair(
                "postmaster@corp.local",
                Reason::NotInDirectory(addr("carol@example.com"))
            ),
        ]
    );
    let unknown: Vec<_> = e.skipped().into_iter().map(|s| s.address).collect();
    assert_eq!(unknown, ["carol@example.com", "dan@example.com"]);
}

#[test]
fn an_unknown_envelope_recipient_decides_and_to_is_not_added() {
    let r = with_directory("alice@example.com\n");
    let m = msg(&[
        "X-Original-To: ghost@example.com",
        RECEIVED,
        "To: alice@example.com",
    ]);
    assert_eq!(
        rcpts(&m, &r),
        [pair(
            "postmaster@corp.local",
            Reason::NotInDirectory(addr("ghost@example.com"))
        )]
    );
    assert!(!explain(&m, &r).message_headers_read);
}

#[test]
fn the_directory_applies_to_the_rewritten_address() {
    let r = Rules {
        rewrite: vec![rewrite("@example.net", "@example.com")],
        ..with_directory("bob@example.com\n")
    };
    let m = msg(&["To: bob@example.net"]);
    let got = rcpts(&m, &r);
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].0, "bob@example.com");
}

#[test]
fn over_max_hops_is_a_loop() {
    let trace = |n: usize| {
        let mut lines = vec![RECEIVED; 1];
        lines.extend(std::iter::repeat_n(TRACE, n));
        lines.push("To: alice@example.com");
        msg(&lines)
    };
    for (hops, is_loop) in [(0, false), (3, false), (4, true), (9, true)] {
        let m = trace(hops);
        let routing = route(&m, &rules());
        assert_eq!(routing.hops, hops);
        assert_eq!(routing.looped.is_some(), is_loop, "{hops} hops");
        assert_eq!(looped(&m, &rules()).is_some(), is_loop);
        assert_eq!(routing.recipients[0].address, addr("alice@example.com"));
    }
    let r = Rules {
        max_hops: 1,
        ..rules()
    };
    let l = looped(&trace(2), &r).unwrap();
    assert_eq!(
        l.to_string(),
        "mail loop: the message went through mailferry 2 times (max_hops 1)"
    );
}

#[test]
fn the_report_names_every_address_and_the_envelope() {
    let m = msg(&[
        "Return-Path: <>",
        "X-Original-To: alice@example.com",
        "Delivered-To: catchall@example.com",
        RECEIVED,
        "X-Original-To: mallory@example.com",
        "To: bob@example.com",
    ]);
    let e = explain(&m, &rules());
    let report = Report {
        account: "main",
        explanation: &e,
        delivered_before: &[],
    };
    let text = report.to_string();
    let want = "account: main\n\
        MAIL FROM:<>\n\
        RCPT TO:<alice@example.com>  (envelope header X-Original-To)\n\
        taken    \"alice@example.com\" in X-Original-To\n\
        skipped  \"mallory@example.com\" in X-Original-To: envelope header below the first Received header (could be forged)\n\
        skipped  \"catchall@example.com\" in Delivered-To: the catch-all mailbox's own address\n\
        To, Cc, Bcc, Resent-*, Apparently-To not read: the envelope headers named the recipients\n";
    assert_eq!(text, want);
    let json = report.json();
    assert!(json.starts_with("{\"account\":\"main\",\"mail_from\":null,\"recipients\":[{\"address\":\"alice@example.com\",\"reason\":\"envelope header X-Original-To\",\"delivered_before\":false}],\"found\":[{\"header\":\"X-Original-To\",\"address\":\"alice@example.com\",\"decision\":\"taken\",\"recipient\":\"alice@example.com\"},"), "{json}");
    assert!(
        json.ends_with(
            ",\"loop\":null,\"hops\":0,\"message_headers_read\":false,\"header_truncated\":false}"
        ),
        "{json}"
    );
}

#[test]
fn per_account_envelope_headers_are_used() {
    let r = Rules {
        envelope_headers: vec!["X-Forwarded-To".into()],
        ..rules()
    };
    let m = msg(&[
        "X-Forwarded-To: alice@example.com",
        "X-Original-To: bob@example.com",
        RECEIVED,
    ]);
    assert_eq!(
        rcpts(&m, &r),
        [pair("alice@example.com", env("X-Forwarded-To"))]
    );
}
