//! The message as it goes to DATA, made in one pass and one copy: mailferry's own header
//! lines on top, and line ends normalised so that the receiver sees exactly the lines the
//! sender wrote — no header line that the sender did not write, no body text taken for a
//! header.

/// `header` (mailferry's own header lines, e.g. the `Received:` trace, each ending in CRLF)
/// followed by `raw`, ready for [`super::Relay::send`]:
///
/// - in `raw`'s header section (up to its first empty line), a bare CR becomes a space: a
///   receiver would end the line there and read the rest as a header of its own; a bare LF
///   is a line end (LF-only mail is common) and becomes CRLF;
/// - in the body, a bare CR or LF becomes CRLF; every other byte is kept;
/// - when `header` is not empty and `raw` does not begin with a header section (its first
///   line is neither a header field `name:` nor empty, e.g. "Hello,"), an empty line follows
///   `header`, so that the text stays body;
/// - the result ends in CRLF (unless it is empty).
///
/// One allocation, sized beforehand.
pub fn prepare(header: &[u8], raw: &[u8]) -> Vec<u8> {
    debug_assert!(header.is_empty() || header.ends_with(b"\r\n"));
    let bare = raw
        .iter()
        .enumerate()
        .filter(|&(i, &b)| is_bare_line_end(raw, i, b))
        .count();
    let mut out = Vec::with_capacity(header.len() + raw.len() + bare + 4);
    out.extend_from_slice(header);
    let mut in_header = begins_with_header_section(raw);
    if !header.is_empty() && !in_header {
        out.extend_from_slice(b"\r\n");
    }
    // Nothing written yet on the current line.
    let mut line_start = true;
    let mut rest = raw;
    while !rest.is_empty() {
        let Some(k) = rest.iter().position(|&b| b == b'\r' || b == b'\n') else {
            out.extend_from_slice(rest);
            line_start = false;
            break;
        };
        out.extend_from_slice(&rest[..k]);
        let empty = line_start && k == 0;
        let taken = match (rest[k], rest.get(k + 1)) {
            (b'\r', Some(b'\n')) => 2,
            (b'\r', _) if in_header => {
                out.push(b' ');
                line_start = false;
                rest = &rest[k + 1..];
                continue;
            }
            _ => 1,
        };
        out.extend_from_slice(b"\r\n");
        if in_header && empty {
            in_header = false;
        }
        line_start = true;
        rest = &rest[k + taken..];
    }
    if !line_start {
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// Whether `message` has no bare CR or LF: every line end is CRLF, as [`prepare`] makes it.
pub(super) fn is_prepared(message: &[u8]) -> bool {
    !message
        .iter()
        .enumerate()
        .any(|(i, &b)| is_bare_line_end(message, i, b))
}

/// Whether `b`, at `i` in `bytes`, is a CR not followed by LF or an LF not preceded by CR.
fn is_bare_line_end(bytes: &[u8], i: usize, b: u8) -> bool {
    match b {
        b'\r' => bytes.get(i + 1) != Some(&b'\n'),
        b'\n' => i == 0 || bytes[i - 1] != b'\r',
        _ => false,
    }
}

/// Whether `raw`'s first line is a header field (`name:`, the name printable ASCII without
/// ':') or empty (an empty header section). The router reads no header of a message that
/// has none, as the relay sends its text as body.
pub(crate) fn begins_with_header_section(raw: &[u8]) -> bool {
    if raw.starts_with(b"\n") || raw.starts_with(b"\r\n") {
        return true;
    }
    let name_len = raw
        .iter()
        .take_while(|&&b| (33..=126).contains(&b) && b != b':')
        .count();
    name_len > 0 && raw.get(name_len) == Some(&b':')
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const TRACE: &[u8] = b"Received: from pop.test by gw.test; Tue, 1 Dec 2026 08:00:00 +0000\r\n";

    fn with_trace(rest: &[u8]) -> Vec<u8> {
        [TRACE, rest].concat()
    }

    #[test]
    fn bare_cr_in_a_header_line_is_a_space_not_a_line_break() {
        assert_eq!(
            prepare(TRACE, b"Subject: hi\rBcc: evil@x.test\r\n\r\nbody\r\n"),
            with_trace(b"Subject: hi Bcc: evil@x.test\r\n\r\nbody\r\n")
        );
        // CR CR LF: the first CR is bare.
        assert_eq!(
            prepare(b"", b"To: a@b.test\r\r\n\r\nx"),
            b"To: a@b.test \r\n\r\nx\r\n"
        );
    }

    #[test]
    fn bare_lf_ends_a_line_everywhere_and_bare_cr_in_the_body() {
        assert_eq!(
            prepare(TRACE, b"Subject: lf\nTo: a@b.test\n\nline\rnext\nlast"),
            with_trace(b"Subject: lf\r\nTo: a@b.test\r\n\r\nline\r\nnext\r\nlast\r\n")
        );
    }

    #[test]
    fn a_message_starting_with_body_text_keeps_it_as_body() {
        assert_eq!(
            prepare(TRACE, b"Hello,\r\nthis is text: not a header\r\n"),
            with_trace(b"\r\nHello,\r\nthis is text: not a header\r\n")
        );
        // A first line without a colon, or with a space in the "name".
        assert_eq!(
            prepare(TRACE, b"no colon here\n"),
            with_trace(b"\r\nno colon here\r\n")
        );
        assert_eq!(
            prepare(
                TRACE,
                b"From a@b.test Mon Dec  1 08:00:00 2026\nSubject: x\n\nb"
            ),
            with_trace(b"\r\nFrom a@b.test Mon Dec  1 08:00:00 2026\r\nSubject: x\r\n\r\nb\r\n")
        );
        // A header section, even an empty one, gets no extra line.
        assert_eq!(prepare(TRACE, b"\r\nbody"), with_trace(b"\r\nbody\r\n"));
        assert_eq!(prepare(TRACE, b"X:y"), with_trace(b"X:y\r\n"));
        assert_eq!(prepare(TRACE, b""), with_trace(b"\r\n"));
        // Without a header of ours, nothing is added.
        assert_eq!(prepare(b"", b"Hello,\n"), b"Hello,\r\n");
    }

    #[test]
    fn crlf_mail_is_copied_as_it_is() {
        let raw = b"Subject: x\r\n\r\n.dot\r\n\xff\x00\r\n";
        assert_eq!(prepare(TRACE, raw), with_trace(raw));
        assert!(is_prepared(raw));
        assert!(!is_prepared(b"a\nb"));
        assert!(!is_prepared(b"a\rb"));
        assert!(!is_prepared(b"\n"));
    }

    fn message() -> impl Strategy<Value = Vec<u8>> {
        let piece = prop_oneof![
            Just(b"\r".to_vec()),
            Just(b"\n".to_vec()),
            Just(b"\r\n".to_vec()),
            Just(b"Subject: x".to_vec()),
            Just(b":".to_vec()),
            Just(b".".to_vec()),
            Just(b" ".to_vec()),
            proptest::collection::vec(any::<u8>(), 0..8),
        ];
        proptest::collection::vec(piece, 0..24).prop_map(|p| p.concat())
    }

    /// Where the header section of a prepared message ends (after its empty line).
    fn header_end(out: &[u8]) -> usize {
        out.windows(4)
            .position(|w| w == b"\r\n\r\n")
            .map_or(out.len(), |p| p + 4)
    }

    /// Line ends made uniform (CRLF, bare CR, bare LF each become LF).
    fn lf(bytes: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut i = 0;
        while i < bytes.len() {
            match bytes[i] {
                b'\r' if bytes.get(i + 1) == Some(&b'\n') => {
                    out.push(b'\n');
                    i += 1;
                }
                b'\r' | b'\n' => out.push(b'\n'),
                b => out.push(b),
            }
            i += 1;
        }
        out
    }

    proptest! {
        #[test]
        fn no_bare_cr_or_lf_survives(raw in message()) {
            let out = prepare(TRACE, &raw);
            prop_assert!(is_prepared(&out));
            prop_assert!(out.starts_with(TRACE));
            prop_assert!(out.ends_with(b"\r\n"));
            // Prepared once is prepared for good.
            prop_assert_eq!(prepare(b"", &out), out);
        }

        #[test]
        fn header_lines_are_the_senders_lines(raw in message()) {
            let out = prepare(TRACE, &raw);
            if begins_with_header_section(&raw) {
                // As many lines up to the first empty one as the sender ended with CRLF or
                // LF: a bare CR made none.
                let (mut lines, mut empty_seen, mut i, mut start) = (0, false, 0, 0);
                while i < raw.len() && !empty_seen {
                    let end = match (raw[i], raw.get(i + 1)) {
                        (b'\r', Some(b'\n')) => 2,
                        (b'\n', _) => 1,
                        _ => 0,
                    };
                    if end == 0 {
                        i += 1;
                        continue;
                    }
                    empty_seen = i == start;
                    lines += 1;
                    i += end;
                    start = i;
                }
                if !empty_seen && start < raw.len() {
                    lines += 1; // the last line, given its CRLF
                }
                let end = header_end(&out).max(TRACE.len());
                let made = out[TRACE.len()..end].windows(2).filter(|w| w == b"\r\n").count();
                prop_assert_eq!(made, lines);
            } else {
                prop_assert!(out[TRACE.len()..].starts_with(b"\r\n"));
                // Every byte after the empty line is the sender's, line ends aside.
                let mut want = lf(&raw);
                if !want.is_empty() && !want.ends_with(b"\n") {
                    want.push(b'\n');
                }
                prop_assert_eq!(lf(&out[TRACE.len() + 2..]), want);
            }
        }

        #[test]
        fn body_bytes_are_kept_but_line_ends(head in "[A-Z][a-z]{0,6}: [ -~]{0,10}", body in message()) {
            let raw = [head.as_bytes(), b"\n\n", &body].concat();
            let out = prepare(TRACE, &raw);
            let end = header_end(&out);
            prop_assert_eq!(&out[..end], &with_trace(format!("{head}\r\n\r\n").as_bytes())[..]);
            let mut want = lf(&body);
            if !want.is_empty() && !want.ends_with(b"\n") { want.push(b'\n'); }
            prop_assert_eq!(lf(&out[end..]), want);
        }
    }
}
