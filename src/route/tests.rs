use super::*;

pub(super) fn addr(s: &str) -> Address {
    Address::parse(s).unwrap()
}

pub(super) fn rules() -> Rules {
    Rules {
        domains: vec![
            DomainPattern::parse("example.com").unwrap(),
            DomainPattern::parse("*.example.org").unwrap(),
        ],
        envelope_headers: crate::config::DEFAULT_ENVELOPE_HEADERS
            .iter()
            .map(|s| s.to_string())
            .collect(),
        postmaster: addr("postmaster@corp.local"),
        mode: Mode::CatchAll,
        own_address: Some(addr("catchall@example.com")),
        source_routed: SourceRouted::Postmaster,
        rewrite: Vec::new(),
        directory: None,
        max_hops: DEFAULT_MAX_HOPS,
    }
}

/// A message from header lines (CRLF endings) and a short body.
pub(super) fn msg(headers: &[&str]) -> Vec<u8> {
    let mut m = headers.join("\r\n").into_bytes();
    m.extend_from_slice(b"\r\n\r\nbody\r\n");
    m
}

/// The recipients as `(address, reason)` strings, in order.
pub(super) fn rcpts(message: &[u8], rules: &Rules) -> Vec<(String, Reason)> {
    route(message, rules)
        .recipients
        .into_iter()
        .map(|r| (r.address.to_string(), r.reason))
        .collect()
}

pub(super) fn env(name: &str) -> Reason {
    Reason::EnvelopeHeader(name.to_string())
}

pub(super) fn hdr(name: &str) -> Reason {
    Reason::Header(name.to_string())
}

pub(super) fn pair(a: &str, r: Reason) -> (String, Reason) {
    (a.to_string(), r)
}

pub(super) const RECEIVED: &str =
    "Received: from mx.provider.net by pop.provider.net; Mon, 1 Jan 2024 00:00:00 +0000";

#[test]
fn envelope_header_above_received_is_used_and_to_cc_are_not_added() {
    let m = msg(&[
        "Return-Path: <sender@remote.net>",
        "X-Original-To: alice@example.com",
        RECEIVED,
        "To: alice@example.com, bob@example.com",
        "Cc: carol@example.com",
    ]);
    assert_eq!(
        rcpts(&m, &rules()),
        vec![pair("alice@example.com", env("X-Original-To"))]
    );
}

#[test]
fn envelope_header_below_received_is_ignored_as_forgery() {
    let m = msg(&[
        RECEIVED,
        "X-Original-To: ceo@example.com",
        "Delivered-To: ceo@example.com",
        "To: bob@example.com",
    ]);
    let e = explain(&m, &rules());
    let got: Vec<_> = e
        .routing
        .recipients
        .iter()
        .map(|r| r.address.as_str())
        .collect();
    assert_eq!(got, ["bob@example.com"]);
    assert_eq!(e.routing.recipients[0].reason, hdr("To"));
    assert_eq!(e.skipped().len(), 2);
    assert!(
        e.skipped()
            .iter()
            .all(|s| s.why == SkipReason::BelowReceived)
    );
}

#[test]
fn envelope_headers_count_when_there_is_no_received_header() {
    let m = msg(&["Delivered-To: alice@example.com", "To: bob@example.com"]);
    assert_eq!(
        rcpts(&m, &rules()),
        vec![pair("alice@example.com", env("Delivered-To"))]
    );
}

#[test]
fn envelope_header_names_compare_case_insensitively() {
    let m = msg(&[
        "x-ORIGINAL-to: alice@example.com",
        RECEIVED,
        "To: bob@example.com",
    ]);
    assert_eq!(
        rcpts(&m, &rules()),
        vec![pair("alice@example.com", env("X-Original-To"))]
    );
}

#[test]
fn own_address_in_envelope_header_is_skipped() {
    let m = msg(&[
        "Delivered-To: CatchAll@Example.com",
        "X-Original-To: alice@example.com",
        RECEIVED,
        "To: bob@example.com",
    ]);
    let e = explain(&m, &rules());
    assert_eq!(
        e.routing.recipients,
        vec![Routed {
            address: addr("alice@example.com"),
            reason: env("X-Original-To")
        }]
    );
    assert_eq!(e.skipped().len(), 1);
    assert_eq!(e.skipped()[0].why, SkipReason::OwnAddress);
    assert_eq!(e.skipped()[0].header, "Delivered-To");
}

#[test]
fn envelope_header_with_only_own_or_foreign_address_falls_back_to_message_headers() {
    let m = msg(&[
        "Delivered-To: catchall@example.com",
        "X-Envelope-To: example.com-catchall@provider.net",
        RECEIVED,
        "To: bob@example.com",
    ]);
    assert_eq!(
        rcpts(&m, &rules()),
        vec![pair("bob@example.com", hdr("To"))]
    );
}

#[test]
fn several_envelope_headers_are_united_without_duplicates() {
    let m = msg(&[
        "Delivered-To: alice@example.com",
        "X-Original-To: Alice@EXAMPLE.com",
        "Envelope-To: bob@example.com",
        RECEIVED,
    ]);
    // Reasons follow the configured order of preference, not the order in the message.
    assert_eq!(
        rcpts(&m, &rules()),
        vec![
            pair("Alice@example.com", env("X-Original-To")),
            pair("bob@example.com", env("Envelope-To")),
        ]
    );
}

#[test]
fn envelope_header_values_may_be_bare_bracketed_or_lists() {
    let m = msg(&[
        "X-Original-To: <alice@example.com>",
        "Delivered-To: bob@example.com",
        "X-Envelope-To: carol@example.com, <dave@example.com>,erin@example.com",
        "Envelope-To: frank@example.com (the provider's comment)",
    ]);
    let got: Vec<_> = rcpts(&m, &rules()).into_iter().map(|(a, _)| a).collect();
    assert_eq!(
        got,
        [
            "alice@example.com",
            "bob@example.com",
            "carol@example.com",
            "dave@example.com",
            "erin@example.com",
            "frank@example.com"
        ]
    );
}

#[test]
fn configured_envelope_header_names_are_used() {
    let mut r = rules();
    r.envelope_headers = vec!["X-Rcpt".to_string()];
    let m = msg(&[
        "X-Original-To: alice@example.com",
        "X-RCPT: bob@example.com",
    ]);
    assert_eq!(rcpts(&m, &r), vec![pair("bob@example.com", env("X-Rcpt"))]);
}

#[test]
fn each_recipient_once_when_named_in_to_and_cc_in_different_case() {
    let m = msg(&[
        "TO: Bob <bob@example.com>, alice@example.com",
        "cc: BOB@Example.COM, alice@EXAMPLE.COM",
        "Bcc: bob@example.com",
    ]);
    assert_eq!(
        rcpts(&m, &rules()),
        vec![
            pair("bob@example.com", hdr("To")),
            pair("alice@example.com", hdr("To")),
        ]
    );
}

#[test]
fn wildcard_domains_accept_subdomains_only() {
    let m = msg(&[
        "To: a@sales.example.org, b@EU.Sales.Example.ORG, c@example.org, d@badexample.org",
        "Cc: e@sub.example.com",
    ]);
    let got: Vec<_> = rcpts(&m, &rules()).into_iter().map(|(a, _)| a).collect();
    assert_eq!(got, ["a@sales.example.org", "b@eu.sales.example.org"]);
}

#[test]
fn foreign_addresses_are_dropped() {
    let m = msg(&[
        "To: alice@example.com, stranger@gmail.com",
        "Cc: other@example.net",
    ]);
    let e = explain(&m, &rules());
    assert_eq!(e.routing.recipients.len(), 1);
    assert_eq!(e.routing.recipients[0].address, addr("alice@example.com"));
    let foreign: Vec<_> = e
        .skipped()
        .into_iter()
        .map(|s| (s.address, s.why))
        .collect();
    assert_eq!(
        foreign,
        [
            ("stranger@gmail.com".to_string(), SkipReason::ForeignDomain),
            ("other@example.net".to_string(), SkipReason::ForeignDomain)
        ]
    );
}

#[test]
fn bcc_resent_and_apparently_to_are_read() {
    let m = msg(&[
        "To: outside@remote.net",
        "Bcc: a@example.com",
        "Resent-To: b@example.com",
        "Resent-Cc: c@example.com",
        "Resent-Bcc: d@example.com",
        "apparently-to: e@example.com",
    ]);
    assert_eq!(
        rcpts(&m, &rules()),
        vec![
            pair("a@example.com", hdr("Bcc")),
            pair("b@example.com", hdr("Resent-To")),
            pair("c@example.com", hdr("Resent-Cc")),
            pair("d@example.com", hdr("Resent-Bcc")),
            pair("e@example.com", hdr("Apparently-To")),
        ]
    );
}

#[test]
fn groups_are_flattened_and_empty_groups_name_nobody() {
    let m = msg(&[
        "To: Team: alice@example.com, Bob <bob@example.com>;, carol@example.com",
        "Cc: undisclosed-recipients:;",
        "Bcc: Others: ;",
    ]);
    let got: Vec<_> = rcpts(&m, &rules()).into_iter().map(|(a, _)| a).collect();
    assert_eq!(
        got,
        ["alice@example.com", "bob@example.com", "carol@example.com"]
    );
}

#[test]
fn quoted_display_names_and_local_parts() {
    let m = msg(&[
        r#"To: "Doe, John" <john@example.com>, "Smith; Jane <x@evil.net>" <jane@example.com>"#,
        r#"Cc: "john doe"@example.com, "mary.major"@example.com"#,
        // Not a quoted local part: the name must not be glued onto the domain.
        "Bcc: Mallory <@example.com>",
    ]);
    let e = explain(&m, &rules());
    let got: Vec<_> = e
        .routing
        .recipients
        .iter()
        .map(|r| r.address.as_str())
        .collect();
    // A quoted local part that needs no quotes is the same mailbox; one that needs them
    // (a space) stays quoted, as it must go on the wire.
    assert_eq!(
        got,
        [
            "john@example.com",
            "jane@example.com",
            "\"john doe\"@example.com",
            "mary.major@example.com"
        ]
    );
    assert_eq!(e.routing.recipients[2].address.local_part(), "john doe");
    assert!(e.routing.refused.is_empty(), "{:?}", e.routing.refused);
}

#[test]
fn quoted_local_parts_in_every_form_are_kept_or_refused_never_lost() {
    let m = msg(&[
        r#"To: <"john doe"@example.com>, Mary <"mary major"@example.com>"#,
        r#"Cc: "a\"b"@example.com, "evil@x.com"@example.com, bob@example.com"#,
    ]);
    let e = explain(&m, &rules());
    let got: Vec<_> = e
        .routing
        .recipients
        .iter()
        .map(|r| r.address.to_string())
        .collect();
    assert_eq!(
        got,
        [
            "\"john doe\"@example.com",
            "\"mary major\"@example.com",
            "bob@example.com",
            "postmaster@corp.local"
        ]
    );
    // Neither the escaped quote nor the quoted '@' is lost silently.
    let refused: Vec<_> = e
        .routing
        .refused
        .iter()
        .map(|r| r.address.as_str())
        .collect();
    // As written, quotes and all.
    assert_eq!(
        refused,
        ["\"a\\\"b\"@example.com", "\"evil@x.com\"@example.com"]
    );
}

#[test]
fn rfc2047_display_names_and_comments() {
    let m = msg(&[
        "To: =?UTF-8?B?w4Rrw6Ugw5ZzdGVy?= <ake@example.com>, =?ISO-8859-1?Q?J=F6rg?= <joerg@example.com>",
        "Cc: alice@example.com (Alice Smith), (the boss) <boss@example.com>",
        "Bcc: =?utf-8?q?=3Cx=40evil=2Enet=3E?= <carol@example.com>",
    ]);
    let got: Vec<_> = rcpts(&m, &rules()).into_iter().map(|(a, _)| a).collect();
    assert_eq!(
        got,
        [
            "ake@example.com",
            "joerg@example.com",
            "alice@example.com",
            "boss@example.com",
            "carol@example.com"
        ]
    );
}

#[test]
fn obsolete_route_syntax_is_refused_not_stripped() {
    // A route through (or to) an accepted domain is refused and reported: the internal
    // server must never see a source route, and stripping it would guess.
    let m = msg(&["To: Dave <@relay.net,@other.net:dave@example.com>, alice@example.com"]);
    let e = explain(&m, &rules());
    let got: Vec<_> = e
        .routing
        .recipients
        .iter()
        .map(|r| r.address.to_string())
        .collect();
    assert_eq!(got, ["alice@example.com", "postmaster@corp.local"]);
    assert_eq!(
        e.routing.refused[0].why,
        Refusal::SourceRouted(AddressError::RouteSyntax)
    );
    // A route that names no accepted domain is just foreign.
    let m = msg(&["To: <@a.net,@b.net:evil@x.net>, alice@example.com"]);
    assert_eq!(
        rcpts(&m, &rules()),
        vec![pair("alice@example.com", hdr("To"))]
    );
    let m = msg(&["To: <@example.com:evil@x.net>"]);
    assert_eq!(route(&m, &rules()).refused.len(), 1);
}

#[test]
fn folded_header_values_are_read_whole() {
    let m = msg(&[
        "To: Alice <alice@example.com>,",
        "\tBob",
        "  <bob@example.com>",
        "Subject: folded",
        " subject",
    ]);
    let got: Vec<_> = rcpts(&m, &rules()).into_iter().map(|(a, _)| a).collect();
    assert_eq!(got, ["alice@example.com", "bob@example.com"]);

    let m = msg(&[
        "X-Original-To:",
        " alice@example.com",
        RECEIVED,
        "To: bob@example.com",
    ]);
    assert_eq!(
        rcpts(&m, &rules()),
        vec![pair("alice@example.com", env("X-Original-To"))]
    );
}

#[test]
fn bare_lf_line_endings_work() {
    let m = b"X-Original-To: alice@example.com\nReceived: by x\nTo: bob@example.com\n\nbody\n";
    assert_eq!(
        rcpts(m, &rules()),
        vec![pair("alice@example.com", env("X-Original-To"))]
    );
}

#[test]
fn eight_bit_and_invalid_utf8_headers_do_not_stop_routing() {
    let mut m = Vec::new();
    m.extend_from_slice(b"Subject: \xff\xfe\x80 caf\xe9\r\n");
    m.extend_from_slice(b"X-Junk: \xc3\x28\x00\x01\r\n");
    m.extend_from_slice(b"To: J\xf6rg M\xfcller <joerg@example.com>, b\xffd@example.com\r\n");
    m.extend_from_slice(b"Cc: alice@example.com\r\n\r\nbody\r\n");
    let e = explain(&m, &rules());
    let got: Vec<_> = e
        .routing
        .recipients
        .iter()
        .map(|r| r.address.as_str())
        .collect();
    // The address with an invalid byte is in our domain: refused, the postmaster gets it.
    assert_eq!(
        got,
        [
            "joerg@example.com",
            "alice@example.com",
            "postmaster@corp.local"
        ]
    );
    assert_eq!(e.routing.refused.len(), 1, "{:?}", e.routing.refused);
    assert_eq!(e.routing.refused[0].why, Refusal::Undecodable);
    assert_eq!(e.routing.refused[0].header, "To");
}

#[test]
fn malformed_header_lines_are_skipped() {
    // (A first line that is no header field means no header section at all, as the relay
    // sends it: `header_section_ends_at_the_first_empty_line_and_at_the_cap`.)
    let m = msg(&[
        "Subject: hello",
        "this line has no colon",
        ": no name",
        "To: <<<>>>, alice@example.com, @example.com, bob@, <a\u{7f}b@example.com>",
        "Cc: bob@example.com",
    ]);
    let got: Vec<_> = rcpts(&m, &rules()).into_iter().map(|(a, _)| a).collect();
    // The DEL inside an address in our domain cannot be sent: the postmaster is told.
    assert_eq!(
        got,
        [
            "alice@example.com",
            "bob@example.com",
            "postmaster@corp.local"
        ]
    );
}

#[test]
fn source_routed_addresses_go_to_the_postmaster_with_the_reason() {
    let m = msg(&[
        "To: evil%x.com@example.com, alice@example.com",
        "Cc: x.com!evil@example.com, \"evil@x.com\"@example.com",
        "Bcc: <@a.com,@example.com:evil@x.com>",
    ]);
    let e = explain(&m, &rules());
    let got: Vec<_> = e
        .routing
        .recipients
        .iter()
        .map(|r| r.address.to_string())
        .collect();
    assert_eq!(got, ["alice@example.com", "postmaster@corp.local"]);
    let refused: Vec<_> = e
        .routing
        .refused
        .iter()
        .map(|r| r.address.as_str())
        .collect();
    assert_eq!(
        refused,
        [
            "evil%x.com@example.com",
            "x.com!evil@example.com",
            "\"evil@x.com\"@example.com",
            "@a.com,@example.com:evil@x.com"
        ]
    );
    assert!(e.routing.refused.iter().all(|r| r.to_postmaster));
    assert!(
        e.routing
            .refused
            .iter()
            .all(|r| r.why.label() == "source_routed")
    );
    // The postmaster's reason names the first refused address and why.
    let reason = e.routing.recipients[1].reason.to_string();
    assert!(reason.contains("evil%x.com@example.com"), "{reason}");
    assert!(reason.contains("'%'"), "{reason}");
    // The dry run lists each of them.
    let skipped: Vec<_> = e
        .skipped()
        .into_iter()
        .filter(|s| matches!(s.why, SkipReason::Refused(_)))
        .collect();
    assert_eq!(skipped.len(), 4);
}

#[test]
fn refused_notice_names_each_refused_address_on_one_line() {
    let m = b"To: evil%x.com@example.com, alice@example.com\r\nCc: \"a\\\r\n b@x.com\"@example.com, x.com!evil@example.com\r\n\r\nbody\r\n";
    let routing = route(m, &rules());
    let notice = routing.refused_notice();
    let lines: Vec<&str> = notice.split_terminator("\r\n").collect();
    assert_eq!(lines.len(), routing.refused.len(), "{notice:?}");
    assert!(
        lines[0]
            .starts_with("X-Mailferry-Refused: \"evil%x.com@example.com\" in To: source-routed")
    );
    assert!(
        lines.iter().all(|l| !l.contains(['\r', '\n'])),
        "{notice:?}"
    );
    let reject = Rules {
        source_routed: SourceRouted::Reject,
        ..rules()
    };
    let m = msg(&["To: evil%x.com@example.com, alice@example.com"]);
    assert_eq!(route(&m, &reject).refused_notice(), "");
}

#[test]
fn source_routed_alone_goes_to_the_postmaster_not_as_no_local_recipient() {
    let m = msg(&["To: evil%x.com@example.com"]);
    let r = rcpts(&m, &rules());
    assert_eq!(r.len(), 1);
    assert_eq!(r[0].0, "postmaster@corp.local");
    assert!(matches!(r[0].1, Reason::Refused(_)), "{:?}", r[0].1);
}

#[test]
fn source_routed_reject_drops_and_reports() {
    let rules = Rules {
        source_routed: SourceRouted::Reject,
        ..rules()
    };
    let m = msg(&["To: evil%x.com@example.com, alice@example.com"]);
    let routing = route(&m, &rules);
    assert_eq!(
        rcpts(&m, &rules),
        vec![pair("alice@example.com", hdr("To"))]
    );
    assert_eq!(routing.refused.len(), 1);
    assert!(!routing.refused[0].to_postmaster);
    // Nothing else: the postmaster as for any message without a local recipient.
    let m = msg(&["To: x.com!evil@example.com"]);
    assert_eq!(
        rcpts(&m, &rules),
        vec![pair("postmaster@corp.local", Reason::NoLocalRecipient)]
    );
    // Undecodable is not source-routed: the postmaster still gets it.
    let m = b"To: b\xffd@example.com, alice@example.com\r\n\r\nbody\r\n";
    let got: Vec<_> = rcpts(m, &rules).into_iter().map(|(a, _)| a).collect();
    assert_eq!(got, ["alice@example.com", "postmaster@corp.local"]);
}

#[test]
fn source_routed_envelope_headers_are_refused_too() {
    let m = msg(&[
        "X-Original-To: evil%x.com@example.com",
        "Delivered-To: \"evil@x.com\"@example.com",
        RECEIVED,
        "To: alice@example.com",
    ]);
    let e = explain(&m, &rules());
    let got: Vec<_> = e
        .routing
        .recipients
        .iter()
        .map(|r| r.address.to_string())
        .collect();
    // No usable envelope recipient: the message headers decide, and the postmaster is told.
    assert_eq!(got, ["alice@example.com", "postmaster@corp.local"]);
    let headers: Vec<_> = e
        .routing
        .refused
        .iter()
        .map(|r| r.header.as_str())
        .collect();
    assert_eq!(headers, ["X-Original-To", "Delivered-To"]);
}

#[test]
fn foreign_source_routed_addresses_are_only_foreign() {
    let m = msg(&["To: evil%x.com@remote.net, alice@example.com"]);
    let routing = route(&m, &rules());
    assert!(routing.refused.is_empty());
    assert_eq!(
        rcpts(&m, &rules()),
        vec![pair("alice@example.com", hdr("To"))]
    );
}

#[test]
fn a_huge_header_section_is_parsed_only_up_to_the_cap() {
    // 40 MB of header lines, with a local address at the start and one past the cap.
    let line = "X-Filler: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n";
    let mut m = b"To: alice@example.com\r\n".to_vec();
    while m.len() < 40 << 20 {
        m.extend_from_slice(line.as_bytes());
    }
    m.extend_from_slice(b"Cc: bob@example.com\r\n\r\nbody\r\n");
    let e = explain(&m, &rules());
    assert!(e.header_truncated);
    assert!(e.header_bytes <= HEADER_CAP, "{}", e.header_bytes);
    assert!(e.header_bytes > HEADER_CAP - line.len());
    let got: Vec<_> = e
        .routing
        .recipients
        .iter()
        .map(|r| r.address.to_string())
        .collect();
    assert_eq!(got, ["alice@example.com"]);

    // The body is never parsed as headers.
    let m = b"To: alice@example.com\r\n\r\nTo: bob@example.com\r\n";
    let e = explain(m, &rules());
    assert!(!e.header_truncated);
    assert_eq!(e.header_bytes, "To: alice@example.com\r\n".len());
    assert_eq!(e.routing.recipients.len(), 1);
}

#[test]
fn source_routed_return_path_is_not_used() {
    // Found by the fuzz with `%` allowed: a From: that routes onward is no MAIL FROM.
    let m = b"From: %@a.com,@b.com:\r\n\r\nbody\r\n";
    assert_eq!(route(m, &rules()).return_path, None);
    for from in ["evil%x.com@example.com", "x.com!evil@example.com"] {
        let m = msg(&[&format!("Return-Path: <{from}>"), &format!("From: {from}")]);
        assert_eq!(route(&m, &rules()).return_path, None, "{from}");
    }
}

#[test]
fn no_local_recipient_goes_to_the_postmaster() {
    let m = msg(&["To: someone@remote.net", "Cc: undisclosed-recipients:;"]);
    assert_eq!(
        rcpts(&m, &rules()),
        vec![pair("postmaster@corp.local", Reason::NoLocalRecipient)]
    );
    for empty in [&b""[..], b"\r\n\r\nno headers", b"garbage without newline"] {
        assert_eq!(
            rcpts(empty, &rules()),
            vec![pair("postmaster@corp.local", Reason::NoLocalRecipient)]
        );
    }
}

#[test]
fn single_user_mode_ignores_the_headers() {
    let mut r = rules();
    r.mode = Mode::SingleUser {
        deliver_to: addr("alice@corp.local"),
    };
    let m = msg(&[
        "Return-Path: <sender@remote.net>",
        "X-Original-To: bob@example.com",
        "To: carol@example.com",
    ]);
    let routing = route(&m, &r);
    assert_eq!(
        routing.recipients,
        vec![Routed {
            address: addr("alice@corp.local"),
            reason: Reason::SingleUser
        }]
    );
    assert_eq!(routing.return_path, Some(addr("sender@remote.net")));
    assert_eq!(
        rcpts(b"", &r),
        vec![pair("alice@corp.local", Reason::SingleUser)]
    );
}

fn return_path_of(headers: &[&str]) -> Option<String> {
    route(&msg(headers), &rules())
        .return_path
        .map(|a| a.to_string())
}

#[test]
fn return_path_cases() {
    let some = |s: &str| Some(s.to_string());
    assert_eq!(
        return_path_of(&["Return-Path: <bounce@Remote.NET>", "From: x@y.net"]),
        some("bounce@remote.net")
    );
    // The null path stays null: a bounce must not be answered with another bounce.
    assert_eq!(return_path_of(&["Return-Path: <>", "From: x@y.net"]), None);
    // The topmost one wins.
    assert_eq!(
        return_path_of(&[
            "Return-Path: <a@one.net>",
            RECEIVED,
            "Return-Path: <b@two.net>"
        ]),
        some("a@one.net")
    );
    assert_eq!(
        return_path_of(&[
            "Sender: list-owner@lists.net",
            "From: Author <author@x.net>"
        ]),
        some("list-owner@lists.net")
    );
    assert_eq!(
        return_path_of(&["From: Author <author@x.net>"]),
        some("author@x.net")
    );
    assert_eq!(
        return_path_of(&["Return-Path: <not an address>", "From: author@x.net"]),
        some("author@x.net")
    );
    assert_eq!(
        return_path_of(&["Return-Path: <a\"b@x.net>", "From: author@x.net"]),
        some("author@x.net")
    );
    assert_eq!(
        return_path_of(&["From: undisclosed:;", "To: a@example.com"]),
        None
    );
    assert_eq!(return_path_of(&["To: a@example.com"]), None);
}

#[test]
fn reason_reads_as_text() {
    assert_eq!(
        env("X-Original-To").to_string(),
        "envelope header X-Original-To"
    );
    assert_eq!(hdr("Cc").to_string(), "header Cc");
    assert_eq!(Reason::SingleUser.to_string(), "single-user account");
    assert!(Reason::NoLocalRecipient.to_string().contains("postmaster"));
}

#[test]
fn rules_for_account_take_the_config_and_the_username() {
    use crate::config::{MetricsConfig, Protocol, RelayConfig, Retention, TlsMode};
    use std::time::Duration;
    let account = |username: &str| AccountConfig {
        name: "a".into(),
        protocol: Protocol::Pop3,
        host: "pop.provider.net".into(),
        port: 995,
        tls: TlsMode::Tls,
        tls_options: Default::default(),
        username: username.into(),
        password: crate::config::Password::new("s3cret"),
        mode: Mode::CatchAll,
        folder: "INBOX".into(),
        poll_interval: Duration::from_secs(60),
        max_per_pass: 200,
        retention: Retention::Delete,
        timeout: Duration::from_secs(180),
        pass_deadline: Duration::from_secs(1800),
        initial: None,
        expunge_every: 50,
        fetch_order: Default::default(),
        after_fetch: Default::default(),
        unseen_only: false,
        auth: Default::default(),
        idle: false,
        oauth: None,
        proxy: None,
        auth_backoff_max: crate::config::DEFAULT_AUTH_BACKOFF_MAX,
        backoff_max: crate::config::DEFAULT_BACKOFF_MAX,
        routing: Default::default(),
    };
    let config = Config {
        state_dir: "/tmp".into(),
        state: Default::default(),
        metrics: MetricsConfig { listen: None },
        relay: RelayConfig {
            host: "mail.corp.local".into(),
            port: 25,
            tls: TlsMode::None,
            helo: None,
            connections: 1,
            tls_options: Default::default(),
            timeout: Duration::from_secs(30),
            data_timeout: Duration::from_secs(600),
            retry: crate::config::RetryPolicy::default(),
            auth: None,
        },
        domains: rules().domains,
        postmaster: addr("postmaster@corp.local"),
        envelope_headers: vec!["Delivered-To".into()],
        max_message_size: crate::config::DEFAULT_MAX_MESSAGE_SIZE,
        memory_budget: crate::config::DEFAULT_MEMORY_BUDGET,
        source_routed: SourceRouted::Reject,
        dedup_window: None,
        rewrite: Vec::new(),
        directory: None,
        max_hops: DEFAULT_MAX_HOPS,
        watch_config: false,
        max_concurrent_accounts: crate::config::DEFAULT_MAX_CONCURRENT_ACCOUNTS,
        accounts_dir: None,
        accounts: vec![account("Catchall@Example.com")],
    };
    let r = Rules::for_account(&config, &config.accounts[0]);
    assert_eq!(r.own_address, Some(addr("Catchall@example.com")));
    assert_eq!(r.envelope_headers, ["Delivered-To"]);
    assert_eq!(r.postmaster, config.postmaster);
    assert_eq!(r.mode, Mode::CatchAll);
    assert_eq!(r.source_routed, SourceRouted::Reject);
    assert!(r.accepts(&addr("x@a.example.org")));
    let r = Rules::for_account(&config, &account("example.com-main"));
    assert_eq!(r.own_address, None);
}

mod properties {
    use super::*;
    use proptest::prelude::*;

    /// Whether an address could make the internal server relay onward: `%`, `!` or `@` in
    /// the local part, route syntax, or anything that could bend the SMTP line.
    pub(super) fn routes_onward(a: &Address) -> bool {
        let wire = a.as_str();
        a.local_part().contains(['%', '!', '@'])
            || wire.starts_with('@')
            || wire.contains(|c: char| c.is_control() || c == '<' || c == '>')
            || wire.matches('@').count() != 1
    }

    fn address() -> impl Strategy<Value = String> {
        let local = prop::sample::select(vec![
            "alice",
            "Bob",
            "catchall",
            "c.d",
            "o'x",
            "a b",
            "\"q\"",
            "",
            "evil%x.com",
            "x.com!evil",
            "\"evil@x.com\"",
            "\"john doe\"",
            "@example.com:evil",
            "@a.com,@b.com:evil",
            "a\u{7f}b",
        ]);
        let domain = prop::sample::select(vec![
            "example.com",
            "EXAMPLE.COM",
            "sub.example.org",
            "example.org",
            "evil.net",
            "example.com.evil.net",
            "corp.local",
            "",
        ]);
        (local, domain, any::<bool>()).prop_map(|(l, d, angle)| {
            if angle {
                format!("Name <{l}@{d}>")
            } else {
                format!("{l}@{d}")
            }
        })
    }

    fn header_line() -> impl Strategy<Value = String> {
        let name = prop::sample::select(vec![
            "To",
            "cc",
            "Bcc",
            "Resent-To",
            "Apparently-To",
            "X-Original-To",
            "Delivered-To",
            "Envelope-To",
            "Received",
            "Return-Path",
            "From",
            "Subject",
        ]);
        let sep = prop::sample::select(vec![", ", ",\r\n ", ";", " "]);
        (name, prop::collection::vec(address(), 0..4), sep)
            .prop_map(|(n, addrs, sep)| format!("{n}: {}", addrs.join(sep)))
    }

    fn message() -> impl Strategy<Value = Vec<u8>> {
        prop::collection::vec(header_line(), 0..12).prop_map(|lines| {
            let refs: Vec<&str> = lines.iter().map(String::as_str).collect();
            msg(&refs)
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(300))]

        #[test]
        fn only_accepted_domains_or_the_postmaster_and_each_once(m in message()) {
            let r = rules();
            let routing = route(&m, &r);
            prop_assert!(!routing.recipients.is_empty());
            let mut keys = HashSet::new();
            for rcpt in &routing.recipients {
                prop_assert!(keys.insert(rcpt.address.dedup_key()), "duplicate {:?}", rcpt);
                prop_assert!(!routes_onward(&rcpt.address), "{:?}", rcpt);
                if rcpt.reason == Reason::NoLocalRecipient {
                    prop_assert_eq!(&rcpt.address, &r.postmaster);
                    prop_assert_eq!(routing.recipients.len(), 1);
                } else if matches!(rcpt.reason, Reason::Refused(_)) {
                    prop_assert_eq!(&rcpt.address, &r.postmaster);
                    prop_assert!(!routing.refused.is_empty());
                } else {
                    prop_assert!(r.accepts(&rcpt.address), "{:?}", rcpt);
                    if matches!(rcpt.reason, Reason::EnvelopeHeader(_)) {
                        prop_assert_ne!(Some(&rcpt.address), r.own_address.as_ref());
                    }
                }
            }
        }

        #[test]
        fn envelope_and_message_header_recipients_never_mix(m in message()) {
            let routing = route(&m, &rules());
            let envelope = routing
                .recipients
                .iter()
                .filter(|r| matches!(r.reason, Reason::EnvelopeHeader(_)))
                .count();
            let refused = routing
                .recipients
                .iter()
                .filter(|r| matches!(r.reason, Reason::Refused(_)))
                .count();
            prop_assert!(envelope == 0 || envelope + refused == routing.recipients.len());
        }

        #[test]
        fn never_panics_on_arbitrary_bytes(m in prop::collection::vec(any::<u8>(), 0..512)) {
            let routing = route(&m, &rules());
            prop_assert!(!routing.recipients.is_empty());
        }

        #[test]
        fn never_panics_on_header_like_noise(
            m in "([A-Za-z-]{1,12}:[ -~\t\u{80}-\u{10ffff}<>@,;:\"()\\\\]{0,60}\r?\n[ \t]?){0,10}\r?\n?"
        ) {
            let routing = route(m.as_bytes(), &rules());
            prop_assert!(!routing.recipients.is_empty());
        }
    }
}
