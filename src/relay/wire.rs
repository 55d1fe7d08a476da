//! The SMTP client's words, apart from any I/O: replies parsed from whatever bytes have
//! arrived (a reply may be split across reads at any byte), the EHLO capabilities, and the
//! dot-stuffing of DATA done piece by piece as the message goes out.

use super::Reply;

/// Longest reply line accepted (RFC 5321 4.5.3.1.5 says 512 octets; servers write longer
/// EHLO lines, so there is room).
pub const LINE_MAX: usize = 4096;
/// Longest whole reply accepted (a multi-line EHLO reply is far smaller).
pub const REPLY_MAX: usize = 64 * 1024;

/// Why bytes from the server are not an SMTP reply.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReplyError {
    /// A line does not start with a three-digit code and ` `, `-` or its end.
    #[error("a reply line that is not `NNN text`")]
    NotAReply,
    /// The lines of one multi-line reply carry different codes.
    #[error("a multi-line reply whose lines carry different codes")]
    MixedCodes,
    /// A code outside 200..=599 (1xx is not used by SMTP).
    #[error("a reply code outside 2xx to 5xx")]
    BadCode,
    /// A line or the whole reply is longer than mailferry accepts.
    #[error("a reply longer than {} bytes", LINE_MAX)]
    TooLong,
}

/// One parsed reply: its code, each line's text (after the code and separator, the enhanced
/// status code included), and how many bytes of the buffer it took.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Parsed {
    /// The three-digit code.
    pub code: u16,
    /// Each line's text.
    pub lines: Vec<String>,
    /// Bytes of the buffer this reply took, its last CRLF included.
    pub used: usize,
}

impl Parsed {
    /// The reply as the relay's callers see it: the lines joined by spaces.
    pub fn reply(&self) -> Reply {
        Reply {
            code: self.code,
            text: self.lines.join(" "),
        }
    }
}

/// One reply from the start of `buf` (RFC 5321 4.2: `NNN-text` lines, then `NNN text`; a
/// bare LF is taken as a line end too). `Ok(None)`: not complete yet, read more.
pub fn parse_reply(buf: &[u8]) -> Result<Option<Parsed>, ReplyError> {
    let mut used = 0;
    let mut code = None;
    let mut lines = Vec::new();
    loop {
        let Some(end) = buf[used..].iter().position(|&b| b == b'\n') else {
            // An incomplete line already too long, or the reply so far: refused now, not
            // after reading without end.
            if buf.len() - used > LINE_MAX || buf.len() > REPLY_MAX {
                return Err(ReplyError::TooLong);
            }
            return Ok(None);
        };
        let line = &buf[used..used + end];
        used += end + 1;
        if line.len() > LINE_MAX || used > REPLY_MAX {
            return Err(ReplyError::TooLong);
        }
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.len() < 3 || !line[..3].iter().all(u8::is_ascii_digit) {
            return Err(ReplyError::NotAReply);
        }
        let this = line[..3]
            .iter()
            .fold(0u16, |n, d| n * 10 + u16::from(d - b'0'));
        if !(200..600).contains(&this) {
            return Err(ReplyError::BadCode);
        }
        if *code.get_or_insert(this) != this {
            return Err(ReplyError::MixedCodes);
        }
        let last = match line.get(3) {
            None | Some(b' ') => true,
            Some(b'-') => false,
            Some(_) => return Err(ReplyError::NotAReply),
        };
        lines.push(String::from_utf8_lossy(line.get(4..).unwrap_or_default()).into_owned());
        if last {
            return Ok(Some(Parsed {
                code: this,
                lines,
                used,
            }));
        }
    }
}

/// What the server offers in its EHLO reply (RFC 5321 4.1.1.1: one keyword per line after
/// the first, with parameters).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Capabilities {
    /// RFC 2920: commands may be sent in one flight.
    pub pipelining: bool,
    /// RFC 3030 CHUNKING: BDAT.
    pub chunking: bool,
    /// RFC 1870: the largest message the server takes; `None` when not announced or 0 (no
    /// limit).
    pub size: Option<u64>,
    /// RFC 6152.
    pub eightbitmime: bool,
    /// RFC 6531.
    pub smtputf8: bool,
    /// RFC 3207.
    pub starttls: bool,
    /// RFC 4954: the SASL mechanisms offered, upper-cased.
    pub auth: Vec<String>,
}

impl Capabilities {
    /// From the lines of a 250 reply to EHLO (the first line, the server's name, is skipped).
    /// Unknown keywords and lines of only spaces are ignored.
    pub fn from_ehlo(lines: &[String]) -> Capabilities {
        let mut caps = Capabilities::default();
        for line in lines.iter().skip(1) {
            let mut words = line.split_ascii_whitespace();
            let Some(keyword) = words.next() else {
                continue;
            };
            match keyword.to_ascii_uppercase().as_str() {
                "PIPELINING" => caps.pipelining = true,
                "CHUNKING" => caps.chunking = true,
                "SIZE" => caps.size = words.next().and_then(|n| n.parse().ok()).filter(|&n| n > 0),
                "8BITMIME" => caps.eightbitmime = true,
                "SMTPUTF8" => caps.smtputf8 = true,
                "STARTTLS" => caps.starttls = true,
                "AUTH" => caps.auth.extend(words.map(|m| m.to_ascii_uppercase())),
                _ => {}
            }
        }
        caps
    }
}

/// Dot-stuffing (RFC 5321 4.5.2) of a message whose line ends are all CRLF, done piece by
/// piece as it goes out, and the end of the data.
#[derive(Debug)]
pub struct DotStuffer {
    line_start: bool,
    written: bool,
}

impl Default for DotStuffer {
    fn default() -> DotStuffer {
        DotStuffer {
            line_start: true,
            written: false,
        }
    }
}

impl DotStuffer {
    /// Appends `piece` to `out`, a "." doubled at the start of each line.
    pub fn push(&mut self, piece: &[u8], out: &mut Vec<u8>) {
        let mut rest = piece;
        while !rest.is_empty() {
            self.written = true;
            if self.line_start && rest[0] == b'.' {
                out.push(b'.');
            }
            match rest.iter().position(|&b| b == b'\n') {
                Some(i) => {
                    out.extend_from_slice(&rest[..=i]);
                    rest = &rest[i + 1..];
                    self.line_start = true;
                }
                None => {
                    out.extend_from_slice(rest);
                    self.line_start = false;
                    return;
                }
            }
        }
    }

    /// Appends the end of the data: a CRLF when the message did not end in one (or was
    /// empty), then `.` CRLF.
    pub fn finish(self, out: &mut Vec<u8>) {
        if !self.written || !self.line_start {
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b".\r\n");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn replies_parse_whole_or_not_at_all() {
        let p = parse_reply(b"250-mx hello\r\n250-STARTTLS\r\n250 8BITMIME\r\nrest")
            .unwrap()
            .unwrap();
        assert_eq!(p.code, 250);
        assert_eq!(p.lines, ["mx hello", "STARTTLS", "8BITMIME"]);
        assert_eq!(p.used, 42);
        assert_eq!(parse_reply(b"250-mx hello\r\n250-STA").unwrap(), None);
        assert_eq!(parse_reply(b"220").unwrap(), None);
        assert_eq!(parse_reply(b"").unwrap(), None);
        let bare = parse_reply(b"220\n").unwrap().unwrap();
        assert_eq!((bare.code, bare.lines), (220, vec![String::new()]));
    }

    #[test]
    fn the_enhanced_status_code_stays_in_the_text() {
        let p = parse_reply(b"550-5.1.1 no such\r\n550 5.1.1 user\r\n")
            .unwrap()
            .unwrap();
        assert_eq!(
            p.reply(),
            Reply {
                code: 550,
                text: "5.1.1 no such 5.1.1 user".into()
            }
        );
    }

    #[test]
    fn what_is_not_smtp_is_refused() {
        for (bad, why) in [
            (&b"   \r\n"[..], ReplyError::NotAReply),
            (b"250-a\r\n251 b\r\n", ReplyError::MixedCodes),
            (b"25x ok\r\n", ReplyError::NotAReply),
            (b"250_ok\r\n", ReplyError::NotAReply),
            (b"\r\n", ReplyError::NotAReply),
            (b"150 early\r\n", ReplyError::BadCode),
            (b"650 late\r\n", ReplyError::BadCode),
            (b"HTTP/1.1 400 Bad Request\r\n", ReplyError::NotAReply),
        ] {
            assert_eq!(
                parse_reply(bad),
                Err(why),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn overlong_lines_are_refused_before_their_end() {
        let mut line = b"250 ".to_vec();
        line.resize(LINE_MAX + 10, b'a');
        assert_eq!(parse_reply(&line), Err(ReplyError::TooLong));
        line.extend_from_slice(b"\r\n");
        assert_eq!(parse_reply(&line), Err(ReplyError::TooLong));
        let many = b"250-x\r\n".repeat(REPLY_MAX / 7 + 1);
        assert_eq!(parse_reply(&many), Err(ReplyError::TooLong));
    }

    #[test]
    fn ehlo_capabilities_are_read_from_their_keywords() {
        let lines: Vec<String> = [
            "mx.test greets you",
            "pipelining",
            "SIZE 10240000",
            "CHUNKING",
            "8BITMIME",
            "SMTPUTF8",
            "STARTTLS",
            "AUTH PLAIN login",
            "   ",
            "",
            "X-UNKNOWN 1",
        ]
        .map(String::from)
        .to_vec();
        let caps = Capabilities::from_ehlo(&lines);
        assert_eq!(
            caps,
            Capabilities {
                pipelining: true,
                chunking: true,
                size: Some(10_240_000),
                eightbitmime: true,
                smtputf8: true,
                starttls: true,
                auth: vec!["PLAIN".into(), "LOGIN".into()],
            }
        );
        // The greeting line is never a keyword; SIZE 0 or without a number is no limit.
        let none = Capabilities::from_ehlo(&["PIPELINING".into(), "SIZE 0".into()]);
        assert_eq!(none, Capabilities::default());
        assert_eq!(
            Capabilities::from_ehlo(&["x".into(), "SIZE".into()]).size,
            None
        );
    }

    fn stuffed(pieces: &[&[u8]]) -> Vec<u8> {
        let mut stuffer = DotStuffer::default();
        let mut out = Vec::new();
        for piece in pieces {
            stuffer.push(piece, &mut out);
        }
        stuffer.finish(&mut out);
        out
    }

    #[test]
    fn dots_are_stuffed_at_line_starts_and_the_end_is_added() {
        assert_eq!(
            stuffed(&[b".a\r\n.\r\nb.c\r\n"]),
            b"..a\r\n..\r\nb.c\r\n.\r\n"
        );
        assert_eq!(stuffed(&[b"a\r\n.b"]), b"a\r\n..b\r\n.\r\n");
        assert_eq!(stuffed(&[]), b"\r\n.\r\n");
        assert_eq!(stuffed(&[b"a\r\n\r\n"]), b"a\r\n\r\n.\r\n");
        // A line start split between two pieces.
        assert_eq!(
            stuffed(&[b"a\r\n", b".b\r", b"\n", b".", b"c"]),
            b"a\r\n..b\r\n..c\r\n.\r\n"
        );
    }

    proptest! {
        #[test]
        fn any_split_gives_the_same_reply(
            lines in proptest::collection::vec("[ -~]{0,20}", 1..5),
            cut in 0usize..200,
        ) {
            let last = lines.len() - 1;
            let text: String = lines.iter().enumerate()
                .map(|(i, l)| format!("250{}{l}\r\n", if i == last { ' ' } else { '-' }))
                .collect();
            let bytes = text.as_bytes();
            let whole = parse_reply(bytes).unwrap().unwrap();
            prop_assert_eq!(whole.used, bytes.len());
            let cut = cut.min(bytes.len());
            // A prefix is never a (different) complete reply.
            if cut < bytes.len() {
                prop_assert_eq!(parse_reply(&bytes[..cut]).unwrap(), None);
            }
        }

        #[test]
        fn stuffing_is_the_same_however_the_message_is_split(
            lines in proptest::collection::vec("[.a]{0,3}", 0..8),
            cut in 0usize..40,
        ) {
            let message: Vec<u8> = lines.iter().flat_map(|l| format!("{l}\r\n").into_bytes()).collect();
            let cut = cut.min(message.len());
            let whole = stuffed(&[&message]);
            prop_assert_eq!(&stuffed(&[&message[..cut], &message[cut..]]), &whole);
            // Unstuffed, it is the message again.
            let body = &whole[..whole.len() - 3];
            let mut back = Vec::new();
            for line in body.split_inclusive(|&b| b == b'\n') {
                back.extend_from_slice(line.strip_prefix(b".").unwrap_or(line));
            }
            if message.is_empty() { prop_assert_eq!(back, b"\r\n".to_vec()); } else { prop_assert_eq!(back, message); }
        }
    }
}
