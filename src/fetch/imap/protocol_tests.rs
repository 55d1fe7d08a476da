//! The response parser on its own: literals, odd untagged lines, codes, names.

use super::protocol::*;

fn raw(text: &str, literals: Vec<Literal>) -> RawResponse {
    RawResponse {
        text: text.as_bytes().to_vec(),
        literals,
    }
}

fn parse_text(text: &str) -> Response {
    parse(raw(text, Vec::new())).unwrap_or_else(|e| panic!("{text:?}: {e}"))
}

#[test]
fn a_literal_is_announced_only_at_the_end_of_a_line() {
    assert_eq!(literal_at_end(b"* 1 FETCH (BODY[] {42}"), Some(Ok(42)));
    assert_eq!(literal_at_end(b"A1 LOGIN {5+}"), Some(Ok(5)));
    assert_eq!(literal_at_end(b"* 1 FETCH (UID 4)"), None);
    assert_eq!(literal_at_end(b"* OK {not a number}"), None);
    assert_eq!(literal_at_end(b"* OK {}"), None);
    assert!(matches!(
        literal_at_end(b"* 1 FETCH (BODY[] {99999999999999999999999}"),
        Some(Err(ParseError::BadLiteral(_)))
    ));
}

#[test]
fn tagged_replies_with_codes() {
    assert_eq!(
        parse_text("A3 OK [READ-WRITE] SELECT completed"),
        Response::Tagged {
            tag: "A3".into(),
            status: Status::Ok,
            code: Some(Code::Other("READ-WRITE".into())),
            text: "SELECT completed".into(),
        }
    );
    let Response::Tagged { status, code, .. } =
        parse_text("A1 ok [CAPABILITY IMAP4rev1 UIDPLUS Auth=Plain] Logged in")
    else {
        panic!()
    };
    assert_eq!(status, Status::Ok);
    let Some(Code::Capability(caps)) = code else {
        panic!("{code:?}")
    };
    assert!(caps.has("uidplus") && caps.has_auth("PLAIN") && !caps.has_auth("LOGIN"));
    assert_eq!(
        parse_text("A2 NO [AUTHENTICATIONFAILED] Authentication failed."),
        Response::Tagged {
            tag: "A2".into(),
            status: Status::No,
            code: Some(Code::Other("AUTHENTICATIONFAILED".into())),
            text: "Authentication failed.".into(),
        }
    );
    assert!(matches!(
        parse_text("A9 BAD"),
        Response::Tagged { status: Status::Bad, code: None, ref text, .. } if text.is_empty()
    ));
}

#[test]
fn untagged_lines_of_every_kind() {
    assert_eq!(
        parse_text("* OK [UIDVALIDITY 3857529045] UIDs valid"),
        Response::State {
            status: Status::Ok,
            code: Some(Code::UidValidity(3_857_529_045)),
            text: "UIDs valid".into(),
        }
    );
    assert_eq!(parse_text("* 172 EXISTS"), Response::Exists(172));
    assert_eq!(parse_text("* 3 expunge"), Response::Expunge(3));
    assert_eq!(
        parse_text("* SEARCH 2 84 882"),
        Response::Search(vec![2, 84, 882])
    );
    assert_eq!(parse_text("* SEARCH"), Response::Search(vec![]));
    assert_eq!(
        parse_text("* BYE Autologout; idle for too long"),
        Response::Bye {
            text: "Autologout; idle for too long".into()
        }
    );
    assert_eq!(
        parse_text("+ Ready for literal data"),
        Response::Continue("Ready for literal data".into())
    );
    assert_eq!(parse_text("+"), Response::Continue(String::new()));
    let Response::Capability(caps) = parse_text("* CAPABILITY IMAP4rev1 STARTTLS LOGINDISABLED")
    else {
        panic!()
    };
    assert!(caps.has("STARTTLS") && caps.has("LOGINDISABLED"));
    // What the client does not use is kept as text, not an error.
    for line in [
        "* FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft)",
        "* OK [PERMANENTFLAGS (\\Deleted \\Seen \\*)] Limited",
        "* 5 RECENT",
        "* ENABLED",
        "* ID (\"name\" \"Dovecot\")",
        "* STATUS INBOX (MESSAGES 2)",
        "* NO [ALERT] Mailbox is at 95% of quota",
    ] {
        parse_text(line);
    }
}

#[test]
fn fetch_with_uid_size_and_flags_in_any_order() {
    assert_eq!(
        parse_text("* 12 FETCH (FLAGS (\\Seen $Junk) RFC822.SIZE 44827 UID 4827)"),
        Response::Fetch {
            seq: 12,
            data: FetchData {
                uid: Some(4827),
                size: Some(44827),
                body: None,
                flags: Some(vec!["\\Seen".into(), "$Junk".into()]),
            },
        }
    );
    // An unsolicited flag update carries no UID.
    let Response::Fetch { data, .. } = parse_text("* 3 FETCH (FLAGS (\\Deleted))") else {
        panic!()
    };
    assert_eq!(data.uid, None);
    // Items the client does not ask for are stepped over, nested lists and all.
    let Response::Fetch { data, .. } = parse_text(
        "* 1 FETCH (INTERNALDATE \"17-Jul-1996 02:44:25 -0700\" ENVELOPE (NIL \"s (x)\" \
         ((\"A\" NIL \"a\" \"b.c\")) NIL NIL NIL NIL NIL NIL NIL) MODSEQ (12) UID 9)",
    ) else {
        panic!()
    };
    assert_eq!(data.uid, Some(9));
}

#[test]
fn fetch_body_literal_is_taken_whole_with_its_bytes() {
    let message = b"Subject: x\r\n\r\n) {5}\r\n\"quoted\" \\ \x00\xff\r\n".to_vec();
    let text = format!(
        "* 2 FETCH (UID 7 BODY[] {{{}}} FLAGS (\\Seen))",
        message.len()
    );
    let response = parse(raw(&text, vec![Literal::Kept(message.clone())])).unwrap();
    let Response::Fetch { seq: 2, data } = response else {
        panic!("{response:?}")
    };
    assert_eq!(data.uid, Some(7));
    assert_eq!(data.body, Some(Some(Literal::Kept(message))));
    assert_eq!(data.flags, Some(vec!["\\Seen".into()]));

    let Response::Fetch { data, .. } = parse(raw(
        "* 2 FETCH (UID 7 BODY[]<0> {9})",
        vec![Literal::Dropped(9)],
    ))
    .unwrap() else {
        panic!()
    };
    assert_eq!(data.body, Some(Some(Literal::Dropped(9))));
    let Response::Fetch { data, .. } = parse_text("* 2 FETCH (UID 7 BODY[] NIL)") else {
        panic!()
    };
    assert_eq!(data.body, Some(None));
    let Response::Fetch { data, .. } = parse_text("* 2 FETCH (UID 7 BODY[] \"tiny\")") else {
        panic!()
    };
    assert_eq!(data.body, Some(Some(Literal::Kept(b"tiny".to_vec()))));
}

#[test]
fn a_header_section_is_not_the_body() {
    let Response::Fetch { data, .. } = parse(raw(
        "* 1 FETCH (UID 3 BODY[HEADER.FIELDS (SUBJECT FROM)] {4})",
        vec![Literal::Kept(b"x\r\n\r".to_vec())],
    ))
    .unwrap() else {
        panic!()
    };
    assert_eq!(data.body, None);
    assert_eq!(data.uid, Some(3));
}

#[test]
fn list_entries_with_quoted_literal_and_atom_names() {
    assert_eq!(
        parse_text("* LIST (\\HasNoChildren) \".\" INBOX.Support"),
        Response::List(ListEntry {
            attributes: vec!["\\HasNoChildren".into()],
            delimiter: Some('.'),
            name: b"INBOX.Support".to_vec(),
        })
    );
    assert_eq!(
        parse_text("* LIST (\\HasChildren \\Noselect) \"/\" \"[Gmail]/Sent \\\"Mail\\\"\""),
        Response::List(ListEntry {
            attributes: vec!["\\HasChildren".into(), "\\Noselect".into()],
            delimiter: Some('/'),
            name: b"[Gmail]/Sent \"Mail\"".to_vec(),
        })
    );
    assert!(matches!(
        parse_text("* LIST () NIL Flat"),
        Response::List(ListEntry {
            delimiter: None,
            ..
        })
    ));
    let Response::List(entry) = parse(raw(
        "* LIST () \"/\" {11}",
        vec![Literal::Kept(b"odd\r\nname\"x".to_vec())],
    ))
    .unwrap() else {
        panic!()
    };
    assert_eq!(entry.name, b"odd\r\nname\"x");
    assert!(entry.selectable());
}

#[test]
fn garbage_is_an_error_not_a_panic() {
    for line in [
        "",
        "hello",
        "A1 MAYBE done",
        "* 1 FETCH (UID)",
        "* 1 FETCH (UID x)",
        "* 1 FETCH UID 4",
        "* 1 FETCH (UID 4",
        "* LIST (\\X) \"..\" INBOX",
        "* 1 FETCH (BODY[] {5})",
    ] {
        assert!(
            parse(raw(line, Vec::new())).is_err(),
            "{line:?} should not parse"
        );
    }
}

#[test]
fn modified_utf7_names_decode() {
    assert_eq!(decode_mailbox_name(b"INBOX").as_deref(), Some("INBOX"));
    assert_eq!(
        decode_mailbox_name(b"Entw&APw-rfe").as_deref(),
        Some("Entwürfe")
    );
    assert_eq!(
        decode_mailbox_name(b"Tom &- Jerry").as_deref(),
        Some("Tom & Jerry")
    );
    assert_eq!(
        decode_mailbox_name(b"&ZeVnLIqe-").as_deref(),
        Some("日本語"),
        "RFC 3501's own example"
    );
    assert_eq!(decode_mailbox_name(b"&Jjo-!").as_deref(), Some("☺!"));
    assert_eq!(decode_mailbox_name(b"bad&"), None);
    assert_eq!(decode_mailbox_name(b"\xff"), None);
}
