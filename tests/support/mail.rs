//! Sample mail: what a provider's catch-all mailbox for `example.com` really holds.

/// The accepted domain the sample mail is for.
pub const SAMPLE_DOMAIN: &str = "example.com";
/// The catch-all mailbox the sample mail sits in (its own address appears in `Delivered-To`).
pub const SAMPLE_CATCHALL_USER: &str = "catchall@example.com";
/// The postmaster the expectations of [`sample_catchall_expected`] assume.
pub const SAMPLE_POSTMASTER: &str = "postmaster@example.com";

/// A short message to `to` from `sender@remote.test`, its Subject `to` (to find it at the
/// sink).
pub fn mail_to(to: &str) -> Vec<u8> {
    message(
        &[("From", "sender@remote.test"), ("To", to), ("Subject", to)],
        "hello\n",
    )
}

/// A message from header fields and a body, LF line ends (as a Maildir stores mail).
///
/// The body is taken as is: it gets no final newline unless it has one.
pub fn message(headers: &[(&str, &str)], body: &str) -> Vec<u8> {
    let mut m = String::new();
    for (name, value) in headers {
        m.push_str(name);
        m.push_str(": ");
        m.push_str(value);
        m.push('\n');
    }
    m.push('\n');
    m.push_str(body);
    m.into_bytes()
}

/// The provider's `Received:` header for the final hop (the envelope headers above it are
/// the ones the provider wrote).
fn provider_received(from_host: &str, ip: &str, id: &str, date: &str) -> String {
    format!(
        "from {from_host} ({from_host} [{ip}])\n\tby mx1.provider.net (Postfix) with ESMTPS id {id}\n\tfor <catchall@example.com>; {date}"
    )
}

/// About a dozen realistic messages as they sit in the catch-all mailbox of `example.com`
/// ([`SAMPLE_CATCHALL_USER`]), in this order (expected routing in
/// [`sample_catchall_expected`], same order):
///
///  0. copy of a message to alice, bob (To) and carol (Cc), with `X-Original-To: alice@` and
///     `Delivered-To: catchall@` above the provider's `Received:`;
///  1. the copy of the same message for bob;
///  2. `Delivered-To: sales@example.com` only (To spelled `SALES@Example.COM`);
///  3. `X-Original-To: dave@` above `Received:`, a forged `X-Original-To: ceo@` below it, and
///     `To: ceo@`: only dave may receive it;
///  4. no envelope headers: `To: alice@`, `Cc: bob@, Alice <alice@EXAMPLE.COM>` (alice named
///     in both To and Cc);
///  5. no envelope headers: `To: Dave <dave@example.com>`, `Cc: partner@other.org`;
///  6. only a foreign domain (`To: list@lists.elsewhere.net`): the postmaster gets it;
///  7. lines starting with "." (".", "..", ".signature") in the body;
///  8. 8-bit UTF-8 body and RFC 2047 encoded Subject and From;
///  9. a multipart/mixed message with a base64 attachment, `X-Original-To: carol@`;
/// 10. a body with no final newline, `To: erin@`;
/// 11. a bounce: `Return-Path: <>`, `X-Original-To: alice@`;
/// 12. a group address `To: project-team: alice@example.com, frank@example.com;`.
pub fn sample_catchall_mail() -> Vec<Vec<u8>> {
    let quarterly = |rcpt: &str, id: &str| {
        message(
            &[
                ("Return-Path", "<j.smith@partner.org>"),
                ("X-Original-To", rcpt),
                ("Delivered-To", "catchall@example.com"),
                (
                    "Received",
                    &provider_received(
                        "mail.partner.org",
                        "198.51.100.7",
                        id,
                        "Mon, 10 Nov 2025 09:14:03 +0100 (CET)",
                    ),
                ),
                ("Date", "Mon, 10 Nov 2025 09:13:58 +0100"),
                ("From", "John Smith <j.smith@partner.org>"),
                ("To", "Alice <alice@example.com>, Bob <bob@example.com>"),
                ("Cc", "carol@example.com"),
                ("Subject", "Quarterly figures"),
                ("Message-ID", "<q3-figures.4471@partner.org>"),
                ("MIME-Version", "1.0"),
                ("Content-Type", "text/plain; charset=us-ascii"),
            ],
            "Hi all,\n\nthe Q3 figures are attached to the shared folder.\n\nBest,\nJohn\n",
        )
    };
    let received = |id: &str| {
        provider_received(
            "smtp.sender.example.org",
            "203.0.113.25",
            id,
            "Tue, 11 Nov 2025 14:02:11 +0100 (CET)",
        )
    };

    vec![
        quarterly("alice@example.com", "4Xk2Lq0abcz1"),
        quarterly("bob@example.com", "4Xk2Lq0abcz2"),
        message(
            &[
                ("Return-Path", "<orders@shop.example.net>"),
                ("Delivered-To", "sales@example.com"),
                ("Received", &received("4Xk3Aa1sales")),
                ("Date", "Tue, 11 Nov 2025 14:02:05 +0100"),
                ("From", "Web Shop <orders@shop.example.net>"),
                ("To", "Sales Team <SALES@Example.COM>"),
                ("Subject", "Order 10442 confirmed"),
                ("Message-ID", "<order-10442@shop.example.net>"),
            ],
            "Your order 10442 has been confirmed.\n",
        ),
        message(
            &[
                ("Return-Path", "<attacker@bad.example.net>"),
                ("X-Original-To", "dave@example.com"),
                ("Delivered-To", "catchall@example.com"),
                ("Received", &received("4Xk3Bb2forge")),
                ("X-Original-To", "ceo@example.com"),
                ("Date", "Tue, 11 Nov 2025 14:03:00 +0100"),
                ("From", "Invoices <attacker@bad.example.net>"),
                ("To", "ceo@example.com"),
                ("Subject", "Urgent invoice"),
                ("Message-ID", "<forged-1@bad.example.net>"),
            ],
            "Please pay the attached invoice today.\n",
        ),
        message(
            &[
                ("Return-Path", "<kim@friends.example.org>"),
                ("Received", &received("4Xk3Cc3tocc")),
                ("Date", "Tue, 11 Nov 2025 15:00:00 +0100"),
                ("From", "Kim <kim@friends.example.org>"),
                ("To", "alice@example.com"),
                ("Cc", "Bob <bob@example.com>, Alice <alice@EXAMPLE.COM>"),
                ("Subject", "Lunch on Friday?"),
                ("Message-ID", "<lunch-friday@friends.example.org>"),
            ],
            "Shall we meet at noon?\n\nKim\n",
        ),
        message(
            &[
                ("Return-Path", "<sam@partner.org>"),
                ("Received", &received("4Xk3Dd4mixed")),
                ("Date", "Tue, 11 Nov 2025 15:10:00 +0100"),
                ("From", "Sam <sam@partner.org>"),
                ("To", "\"Dave\" <dave@example.com>"),
                ("Cc", "partner@other.org"),
                ("Subject", "Contract draft"),
                ("Message-ID", "<contract-draft-2@partner.org>"),
            ],
            "Dave, the draft is ready for review.\n",
        ),
        message(
            &[
                ("Return-Path", "<bounces+8812@lists.elsewhere.net>"),
                ("Received", &received("4Xk3Ee5forgn")),
                ("Date", "Tue, 11 Nov 2025 16:00:00 +0100"),
                ("From", "Weekly News <news@lists.elsewhere.net>"),
                ("To", "list@lists.elsewhere.net"),
                ("Subject", "Weekly news, issue 45"),
                ("List-Id", "<weekly.lists.elsewhere.net>"),
                ("Message-ID", "<issue-45@lists.elsewhere.net>"),
            ],
            "This week's news.\n",
        ),
        message(
            &[
                ("Return-Path", "<ops@monitor.example.org>"),
                ("X-Original-To", "alice@example.com"),
                ("Delivered-To", "catchall@example.com"),
                ("Received", &received("4Xk3Ff6dots0")),
                ("Date", "Tue, 11 Nov 2025 17:00:00 +0100"),
                ("From", "ops@monitor.example.org"),
                ("To", "alice@example.com"),
                ("Subject", "Lines starting with dots"),
                ("Message-ID", "<dots-1@monitor.example.org>"),
            ],
            "Lines that begin with a dot:\n.\n..\n...\n.signature\n. with a space\nend.\n",
        ),
        message(
            &[
                ("Return-Path", "<j.mueller@beispiel.de>"),
                ("Received", &received("4Xk3Gg7utf80")),
                ("Date", "Tue, 11 Nov 2025 18:00:00 +0100"),
                (
                    "From",
                    "=?UTF-8?Q?J=C3=BCrgen_M=C3=BCller?= <j.mueller@beispiel.de>",
                ),
                ("To", "Bob <bob@example.com>"),
                ("Subject", "=?UTF-8?Q?Gr=C3=BC=C3=9Fe_aus_M=C3=BCnchen?="),
                ("Message-ID", "<gruesse-1@beispiel.de>"),
                ("MIME-Version", "1.0"),
                ("Content-Type", "text/plain; charset=utf-8"),
                ("Content-Transfer-Encoding", "8bit"),
            ],
            "Grüße aus München! Schöne Grüße an das ganze Team — Jürgen\n日本語のテキスト\n",
        ),
        message(
            &[
                ("Return-Path", "<scanner@office.example.org>"),
                ("X-Original-To", "carol@example.com"),
                ("Delivered-To", "catchall@example.com"),
                ("Received", &received("4Xk3Hh8attch")),
                ("Date", "Tue, 11 Nov 2025 19:00:00 +0100"),
                ("From", "Scanner <scanner@office.example.org>"),
                ("To", "carol@example.com"),
                ("Subject", "Scanned document"),
                ("Message-ID", "<scan-0042@office.example.org>"),
                ("MIME-Version", "1.0"),
                (
                    "Content-Type",
                    "multipart/mixed; boundary=\"=_boundary_42\"",
                ),
            ],
            "This is a multi-part message in MIME format.\n\
             \n\
             --=_boundary_42\n\
             Content-Type: text/plain; charset=us-ascii\n\
             \n\
             The scanned document is attached.\n\
             \n\
             --=_boundary_42\n\
             Content-Type: application/pdf; name=\"scan-0042.pdf\"\n\
             Content-Disposition: attachment; filename=\"scan-0042.pdf\"\n\
             Content-Transfer-Encoding: base64\n\
             \n\
             JVBERi0xLjQKJcOkw7zDtsOfCjIgMCBvYmoKPDwvTGVuZ3RoIDMgMCBSL0ZpbHRlci9GbGF0ZURl\n\
             Y29kZT4+CnN0cmVhbQp4nDPQM1Qo5ypUMFAw0DM0MTRWMDKw0DM0UQjh5dJQ8MhMzVFIzs8tyc/L\n\
             UQguSSwpTVEEAK0bCtYKZW5kc3RyZWFtCmVuZG9iagoKMyAwIG9iago1NgplbmRvYmoKCg==\n\
             \n\
             --=_boundary_42--\n",
        ),
        message(
            &[
                ("Return-Path", "<noreply@tickets.example.org>"),
                ("Received", &received("4Xk3Ii9nonl0")),
                ("Date", "Tue, 11 Nov 2025 20:00:00 +0100"),
                ("From", "Tickets <noreply@tickets.example.org>"),
                ("To", "erin@example.com"),
                ("Subject", "Ticket 771 updated"),
                ("Message-ID", "<ticket-771@tickets.example.org>"),
            ],
            "Ticket 771 was updated.\nThis body has no final newline.",
        ),
        message(
            &[
                ("Return-Path", "<>"),
                ("X-Original-To", "alice@example.com"),
                ("Delivered-To", "catchall@example.com"),
                ("Received", &received("4Xk3Jj0bounc")),
                ("Date", "Tue, 11 Nov 2025 21:00:00 +0100"),
                (
                    "From",
                    "MAILER-DAEMON@mx.partner.org (Mail Delivery System)",
                ),
                ("To", "alice@example.com"),
                ("Subject", "Undelivered Mail Returned to Sender"),
                ("Message-ID", "<bounce-5521@mx.partner.org>"),
                ("MIME-Version", "1.0"),
                (
                    "Content-Type",
                    "multipart/report; report-type=delivery-status; boundary=\"dsn-5521\"",
                ),
            ],
            "--dsn-5521\n\
             Content-Type: text/plain; charset=us-ascii\n\
             \n\
             Your message to nobody@partner.org could not be delivered.\n\
             \n\
             --dsn-5521\n\
             Content-Type: message/delivery-status\n\
             \n\
             Reporting-MTA: dns; mx.partner.org\n\
             \n\
             Final-Recipient: rfc822; nobody@partner.org\n\
             Action: failed\n\
             Status: 5.1.1\n\
             \n\
             --dsn-5521--\n",
        ),
        message(
            &[
                ("Return-Path", "<pm@partner.org>"),
                ("Received", &received("4Xk3Kk1group")),
                ("Date", "Tue, 11 Nov 2025 22:00:00 +0100"),
                ("From", "Project Manager <pm@partner.org>"),
                (
                    "To",
                    "project-team: alice@example.com, Frank <frank@example.com>;",
                ),
                ("Subject", "Kick-off meeting"),
                ("Message-ID", "<kickoff@partner.org>"),
            ],
            "The kick-off is on Monday at 10:00.\n",
        ),
    ]
}

/// For each message of [`sample_catchall_mail`], in the same order: the MAIL FROM the relay
/// should use (`""` for `<>`) and the recipients it should reach, sorted, for `domains:
/// [example.com]` and `postmaster: postmaster@example.com`.
pub fn sample_catchall_expected() -> Vec<(&'static str, Vec<&'static str>)> {
    vec![
        ("j.smith@partner.org", vec!["alice@example.com"]),
        ("j.smith@partner.org", vec!["bob@example.com"]),
        ("orders@shop.example.net", vec!["sales@example.com"]),
        ("attacker@bad.example.net", vec!["dave@example.com"]),
        (
            "kim@friends.example.org",
            vec!["alice@example.com", "bob@example.com"],
        ),
        ("sam@partner.org", vec!["dave@example.com"]),
        ("bounces+8812@lists.elsewhere.net", vec![SAMPLE_POSTMASTER]),
        ("ops@monitor.example.org", vec!["alice@example.com"]),
        ("j.mueller@beispiel.de", vec!["bob@example.com"]),
        ("scanner@office.example.org", vec!["carol@example.com"]),
        ("noreply@tickets.example.org", vec!["erin@example.com"]),
        ("", vec!["alice@example.com"]),
        (
            "pm@partner.org",
            vec!["alice@example.com", "frank@example.com"],
        ),
    ]
}

/// Message number `i` for `user{i}@example.com` (`X-Original-To`), with Message-ID
/// `<m{i}@remote.test>` and subject `message {i}`.
pub fn numbered_message(i: usize) -> Vec<u8> {
    message(
        &[
            ("X-Original-To", &format!("user{i}@example.com")),
            ("Received", "from a by b; Mon, 2 Nov 2026 10:00:00 +0000"),
            ("From", "s@remote.test"),
            ("Subject", &format!("message {i}")),
            ("Message-ID", &format!("<m{i}@remote.test>")),
        ],
        &format!("body {i}\n"),
    )
}

/// The (recipient, Message-ID) pairs of [`numbered_message`] 0 to `n - 1`.
pub fn numbered_pairs(n: usize) -> Vec<(String, String)> {
    (0..n)
        .map(|i| {
            (
                format!("user{i}@example.com"),
                format!("<m{i}@remote.test>"),
            )
        })
        .collect()
}
