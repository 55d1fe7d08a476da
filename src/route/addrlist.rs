//! The addresses an address-list header names (RFC 5322 3.4, with the obsolete forms of 4.4),
//! read from the raw field value: groups (`team: a@x, b@y;`, `undisclosed-recipients:;`),
//! quoted strings (display names with commas, quoted local parts), comments (anywhere, even
//! inside an address: `bob(the builder)@example.com`), angle addresses, white space around
//! `@` and `.` (`<bob @ example.com>`), obsolete routes (kept attached, so that they are
//! refused), raw 8-bit text. Only addresses come out: display names are never decoded (an
//! RFC 2047 encoded word cannot be an address), so nothing a display name says can become a
//! recipient.
//!
//! mail-parser 0.11.9 gets several of these wrong for routing: it drops the local part before
//! a comment (`bob(x)@example.com` becomes `@example.com`), the domain after one, keeps the
//! spaces of `<bob @ example.com>` in the local part (a different mailbox), and unquotes quoted
//! local parts; so routing reads the raw value itself (tests below, and the corpus).
//!
//! Liberal where a sender obviously meant several addresses: a missing comma between two
//! addresses (`a@x b@y`, `A <a@x> B <b@y>`) yields both. Every address is still validated by
//! the router afterwards: this only finds candidates.

/// One lexical piece of a field value.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    /// A run of characters that are not special, not white space.
    Atom(String),
    /// A quoted string, with its quotes and any `\` escapes as written.
    Quoted(String),
    /// One of `<>,;:@.`.
    Special(char),
    /// White space (a comment counts as white space).
    Space,
}

fn tokens(value: &str) -> Vec<Token> {
    let mut out = Vec::new();
    let mut chars = value.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '"' => {
                let mut q = String::from('"');
                while let Some(c) = chars.next() {
                    q.push(c);
                    match c {
                        '\\' => {
                            if let Some(next) = chars.next() {
                                q.push(next);
                            }
                        }
                        '"' => break,
                        _ => {}
                    }
                }
                out.push(Token::Quoted(q));
            }
            '(' => {
                // A comment, nested, with escapes; an unclosed one runs to the end.
                let mut depth = 1;
                while let Some(c) = chars.next() {
                    match c {
                        '\\' => {
                            chars.next();
                        }
                        '(' => depth += 1,
                        ')' => {
                            depth -= 1;
                            if depth == 0 {
                                break;
                            }
                        }
                        _ => {}
                    }
                }
                out.push(Token::Space);
            }
            '<' | '>' | ',' | ';' | ':' | '@' | '.' => out.push(Token::Special(c)),
            c if c.is_whitespace() => out.push(Token::Space),
            c => {
                let mut atom = String::from(c);
                while let Some(&n) = chars.peek() {
                    if n.is_whitespace() || "\"()<>,;:@.".contains(n) {
                        break;
                    }
                    atom.push(n);
                    chars.next();
                }
                out.push(Token::Atom(atom));
            }
        }
    }
    out
}

/// The addresses named by an address-list field value (folding and all), in order, each as
/// `local@domain` with a quoted local part kept quoted; what cannot be an address (a lone
/// phrase, an empty angle) is left out, what is malformed but addressed is given as found.
pub(super) fn addresses(value: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut entry: Vec<Token> = Vec::new();
    let mut angle = false;
    for token in tokens(value) {
        match token {
            Token::Special('<') if !angle => {
                angle = true;
                entry.push(token);
            }
            Token::Special('>') if angle => {
                angle = false;
                entry.push(token);
            }
            // A group's name ends at its colon; its end at the semicolon: both end an entry.
            Token::Special(',' | ';') if !angle => {
                entry_addresses(&std::mem::take(&mut entry), &mut out)
            }
            Token::Special(':') if !angle => entry.clear(),
            t => entry.push(t),
        }
    }
    entry_addresses(&entry, &mut out);
    out
}

/// The addresses of one list entry: each angle address in it, or else its bare words that
/// hold an `@`.
fn entry_addresses(entry: &[Token], out: &mut Vec<String>) {
    let mut angles = Vec::new();
    let mut inside: Option<String> = None;
    for t in entry {
        match (t, inside.as_mut()) {
            (Token::Special('<'), None) => inside = Some(String::new()),
            (Token::Special('>'), Some(_)) => angles.extend(inside.take()),
            // Inside an angle address white space and comments mean nothing (obs-addr-spec).
            (Token::Space, Some(_)) => {}
            (t, Some(text)) => text.push_str(&text_of(t)),
            _ => {}
        }
    }
    // `<alice@example.com` (never closed): what was inside counts.
    angles.extend(inside);
    if !entry.contains(&Token::Special('<')) {
        angles = bare_words(entry);
    }
    out.extend(angles.into_iter().filter(|a| !a.trim().is_empty()));
}

/// Words of a bare entry (no angle brackets), white space around `@` and `.` ignored; only
/// those with an `@` (a display name without an address names nobody), unless none has one
/// (then the whole, for the router to report).
fn bare_words(entry: &[Token]) -> Vec<String> {
    let mut words: Vec<String> = Vec::new();
    let mut current = String::new();
    let mut glue = false;
    let mut spaced = false;
    for t in entry {
        match t {
            Token::Space => spaced = true,
            Token::Special(c @ ('@' | '.')) => {
                current.push(*c);
                glue = true;
                spaced = false;
            }
            t => {
                if spaced && !glue && !current.is_empty() {
                    words.push(std::mem::take(&mut current));
                }
                current.push_str(&text_of(t));
                glue = false;
                spaced = false;
            }
        }
    }
    if !current.is_empty() {
        words.push(current);
    }
    let addressed: Vec<String> = words.iter().filter(|w| w.contains('@')).cloned().collect();
    if addressed.is_empty() {
        // Nothing addressed: a phrase alone (`Undisclosed recipients`) names nobody.
        Vec::new()
    } else {
        addressed
    }
}

fn text_of(t: &Token) -> String {
    match t {
        Token::Atom(a) | Token::Quoted(a) => a.clone(),
        Token::Special(c) => c.to_string(),
        Token::Space => " ".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[track_caller]
    fn is(value: &str, want: &[&str]) {
        assert_eq!(addresses(value), want, "{value:?}");
    }

    #[test]
    fn plain_lists_angles_and_display_names() {
        is("alice@example.com", &["alice@example.com"]);
        is(
            " Alice <alice@example.com>, <bob@example.com>,carol@example.com ",
            &["alice@example.com", "bob@example.com", "carol@example.com"],
        );
        is(
            "\"Doe, John\" <jd@example.com>, \"a <x@evil.net>\" <b@example.com>",
            &["jd@example.com", "b@example.com"],
        );
        is(
            "=?utf-8?q?M=C3=BCller=2C_Hans?= <hans@example.com>",
            &["hans@example.com"],
        );
        is(
            "\"alice@example.com\" <mallory@evil.net>",
            &["mallory@evil.net"],
        );
        is(
            ", alice@example.com,, ,bob@example.com,",
            &["alice@example.com", "bob@example.com"],
        );
        is("J. Doe <jd@example.com>", &["jd@example.com"]);
        is(
            "'Alice' <alice@example.com>; Bob <bob@example.com>",
            &["alice@example.com", "bob@example.com"],
        );
    }

    #[test]
    fn groups() {
        is("undisclosed-recipients:;", &[]);
        is("Undisclosed recipients: ;", &[]);
        is(
            "team: alice@example.com, Bob <bob@example.com>;, carol@example.com",
            &["alice@example.com", "bob@example.com", "carol@example.com"],
        );
        is("a: \"x, y\" <x@example.com>;b: ;", &["x@example.com"]);
    }

    #[test]
    fn comments_and_white_space_anywhere() {
        is("bob(the builder)@example.com", &["bob@example.com"]);
        is("bob@(the)example.com", &["bob@example.com"]);
        is("Bob <bob @ example . com>", &["bob@example.com"]);
        is(
            "alice@example.com (Alice (the (real) one)), bob@example.com (cc: mallory@evil.net)",
            &["alice@example.com", "bob@example.com"],
        );
        is(
            "alice@example.com (unclosed, bob@example.com",
            &["alice@example.com"],
        );
        is("<alice@example.com> (Alice)", &["alice@example.com"]);
        is("a.b @ example.com", &["a.b@example.com"]);
    }

    #[test]
    fn quoted_local_parts_stay_quoted_and_routes_attached() {
        is("\"john doe\"@example.com", &["\"john doe\"@example.com"]);
        is(
            "\"a@evil.net\"@example.com",
            &["\"a@evil.net\"@example.com"],
        );
        is("\"a\\\"b\"@example.com", &["\"a\\\"b\"@example.com"]);
        is(
            "<@relay.net,@b.net:ivan@example.com>",
            &["@relay.net,@b.net:ivan@example.com"],
        );
        is(
            "evil%x.net@example.com, x.net!evil@example.com",
            &["evil%x.net@example.com", "x.net!evil@example.com"],
        );
    }

    #[test]
    fn missing_commas_and_broken_brackets() {
        is(
            "alice@example.com bob@example.com",
            &["alice@example.com", "bob@example.com"],
        );
        is(
            "Alice <alice@example.com> Bob <bob@example.com>",
            &["alice@example.com", "bob@example.com"],
        );
        is("<alice@example.com", &["alice@example.com"]);
        is("alice@example.com>", &["alice@example.com>"]);
        is("<>", &[]);
        is("nobody", &[]);
        is("", &[]);
    }

    #[test]
    fn folding_and_raw_eight_bit() {
        is(
            "Jörg <jörg@example.com>,\r\n\t M\u{FFFD}ller <m@example.com>",
            &["jörg@example.com", "m@example.com"],
        );
        is(
            "a@example.com,\r\n b@example.com",
            &["a@example.com", "b@example.com"],
        );
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        fn mailbox() -> impl Strategy<Value = (String, String)> {
            let local = prop::sample::select(vec![
                "alice",
                "j.doe",
                "o'brien+tag",
                "\"john doe\"",
                "\"a,b\"",
                "\"x@y\"",
                "jörg",
            ]);
            let domain = prop::sample::select(vec![
                "example.com",
                "sub.example.org",
                "xn--bcher-kva.example",
            ]);
            let display = prop::sample::select(vec![
                "",
                "Alice",
                "\"Doe, John\"",
                "=?utf-8?q?M=C3=BCller=2C_H?=",
                "\"a <b@evil.net>\"",
                "J. Doe",
            ]);
            let comment = prop::sample::select(vec!["", " (Alice)", " (cc: x@evil.net (nested))"]);
            (local, domain, display, comment).prop_map(|(l, d, name, c)| {
                let spec = format!("{l}@{d}");
                let written = if name.is_empty() {
                    format!("{spec}{c}")
                } else {
                    format!("{name} <{spec}>{c}")
                };
                (written, spec)
            })
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(crate::address::fuzz::cases(2000)))]

            /// Whatever the display names, comments, groups and folding, exactly the written
            /// addresses come out, in order.
            #[test]
            fn the_written_addresses_come_out_in_order(
                entries in prop::collection::vec(mailbox(), 0..8),
                group in any::<bool>(),
                fold in any::<bool>(),
            ) {
                let sep = if fold { ",\r\n\t" } else { ", " };
                let list: Vec<&str> = entries.iter().map(|(w, _)| w.as_str()).collect();
                let value = if group {
                    format!("team: {};, undisclosed-recipients:;", list.join(sep))
                } else {
                    list.join(sep)
                };
                let want: Vec<&str> = entries.iter().map(|(_, s)| s.as_str()).collect();
                prop_assert_eq!(addresses(&value), want);
            }

            #[test]
            fn never_panics(value in any::<String>()) {
                let _ = addresses(&value);
            }
        }
    }
}
