//! What routing reads in `Received:` fields: the `for <addr>` clause of the topmost one
//! (the opt-in `Received-For` envelope source), and how many of them mailferry wrote itself
//! (loop protection; `relay/trace.rs` writes them as `by HOST (mailferry)`).

/// The marker in mailferry's own trace header.
const TRACE_MARK: &str = "(mailferry)";

/// How many `Received:` fields of `header` (a header section) mailferry wrote: a scan of the
/// lines, folding followed, no full parse (the pipeline checks this before routing).
pub(super) fn trace_hops(header: &[u8]) -> usize {
    let mut hops = 0;
    let mut field: Option<Vec<u8>> = None;
    let mut finish = |field: &mut Option<Vec<u8>>| {
        if let Some(value) = field.take()
            && is_ours(&String::from_utf8_lossy(&value))
        {
            hops += 1;
        }
    };
    for line in header.split(|&b| b == b'\n') {
        let folded = line.first().is_some_and(|b| *b == b' ' || *b == b'\t');
        if folded {
            if let Some(value) = field.as_mut() {
                value.push(b' ');
                value.extend_from_slice(line);
            }
            continue;
        }
        finish(&mut field);
        let name_end = line.iter().position(|&b| b == b':');
        if let Some(colon) = name_end
            && line[..colon].trim_ascii().eq_ignore_ascii_case(b"received")
        {
            field = Some(line[colon + 1..].to_vec());
        }
    }
    finish(&mut field);
    hops
}

/// Whether a raw `Received:` value was written by mailferry.
pub(super) fn is_ours(raw: &str) -> bool {
    strip_comments_except_mark(raw).contains(TRACE_MARK)
}

/// The `for` clause's addresses of a raw `Received:` value: `for <a@x>`, `for a@x`, or a list
/// (`for <a@x>, <b@y>`), up to the `;` before the date. Comments are ignored, so a
/// `(... for x ...)` comment names nobody. Empty when there is no `for` clause.
pub(super) fn for_clause(raw: &str) -> Vec<String> {
    let text = without_comments(&unfold(raw));
    let clause = text.split(';').next().unwrap_or_default();
    let mut words = clause.split_whitespace();
    if !words.any(|w| w.eq_ignore_ascii_case("for")) {
        return Vec::new();
    }
    // The rest of the clause, until the next keyword (`id`, `with`, `via`, ...) that may
    // follow `for` in some servers' order.
    let mut list = String::new();
    for w in words {
        let keyword = ["from", "by", "via", "with", "id", "for"]
            .iter()
            .any(|k| w.eq_ignore_ascii_case(k));
        if keyword {
            break;
        }
        list.push_str(w);
        list.push(' ');
    }
    list.split(',')
        .map(|a| {
            a.trim()
                .trim_start_matches('<')
                .trim_end_matches('>')
                .trim()
        })
        .filter(|a| !a.is_empty())
        .map(str::to_string)
        .collect()
}

fn unfold(raw: &str) -> String {
    raw.replace(['\r', '\n', '\t'], " ")
}

/// `raw` without RFC 5322 comments (nested parentheses, quoted text and `\` escapes kept
/// apart); an unclosed comment runs to the end.
fn without_comments(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    let mut depth = 0usize;
    let mut quoted = false;
    let mut escaped = false;
    for c in raw.chars() {
        if escaped {
            escaped = false;
            if depth == 0 {
                out.push(c);
            }
            continue;
        }
        match c {
            '\\' => {
                escaped = true;
                if depth == 0 {
                    out.push(c);
                }
            }
            '"' if depth == 0 => {
                quoted = !quoted;
                out.push(c);
            }
            '(' if !quoted => {
                depth += 1;
                out.push(' ');
            }
            ')' if !quoted && depth > 0 => depth -= 1,
            _ if depth == 0 => out.push(c),
            _ => {}
        }
    }
    out
}

/// The text with comments removed, except the exact `(mailferry)` comment (which is how the
/// trace names itself): `(x (mailferry) y)` is not ours, `by gw (mailferry)` is.
fn strip_comments_except_mark(raw: &str) -> String {
    let text = unfold(raw).replace(TRACE_MARK, "\u{0}mark\u{0}");
    without_comments(&text).replace("\u{0}mark\u{0}", TRACE_MARK)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn for_clauses_in_the_forms_servers_write() {
        let cases: [(&str, &[&str]); 9] = [
            (
                "from mx.a.net (mx.a.net [1.2.3.4]) by mx.provider.net (Postfix) with ESMTPS id 4F\r\n\tfor <alice@example.com>; Mon, 1 Jan 2024 00:00:00 +0000",
                &["alice@example.com"],
            ),
            (
                "from a by b with esmtp (Exim 4.96) id 1q\n\t(envelope-from <s@x.net>) for bob@example.com; Tue, 2 Jan 2024",
                &["bob@example.com"],
            ),
            (
                "by 2002:a05::1 with SMTP id x; Mon, 1 Jan 2024 (for carol@example.com)",
                &[],
            ),
            (
                "from a by b FOR <A@Example.com>,\r\n <b@example.com>; date",
                &["A@Example.com", "b@example.com"],
            ),
            (
                "from a by b for <a@example.com> id 7; date",
                &["a@example.com"],
            ),
            (
                "from a by b (comment for <x@example.com>) with smtp; date",
                &[],
            ),
            ("from a (for (nested) <x@example.com>) by b; date", &[]),
            ("from forest.example by b; date", &[]),
            ("from a by b for; date", &[]),
        ];
        for (raw, want) in cases {
            assert_eq!(for_clause(raw), want, "{raw:?}");
        }
    }

    #[test]
    fn trace_hops_count_only_our_received_fields_folded_or_not() {
        let header = b"Received: from pop.p.net by gw (mailferry)\r\n\twith POP3 id 1; date\r\n\
            X-Note: by gw (mailferry)\r\n\
            Received: from a by b (Postfix); date\r\n\
            received: from pop.p.net\r\n by gw2 (mailferry) with IMAP id 2; date\r\n\
            Received: from x (mailferry\r\n\t) by y; date\r\n";
        assert_eq!(trace_hops(header), 2);
        assert_eq!(trace_hops(b""), 0);
        assert_eq!(trace_hops(b"Received:\n(mailferry)\n"), 0);
    }

    #[test]
    fn the_trace_mark_counts_only_outside_other_comments() {
        assert!(is_ours(
            "from pop.provider.net by gw.corp.local (mailferry) with POP3 id 1;\r\n\tMon, 1 Jan 2024"
        ));
        assert!(!is_ours("from a by b (Postfix) with ESMTP; date"));
        assert!(!is_ours("from a (helo (mailferry)) by b; date"));
    }
}
