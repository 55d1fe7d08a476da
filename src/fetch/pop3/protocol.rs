//! The POP3 wire format (RFC 1939, RFC 2449), free of I/O: status lines, CAPA, UIDL and LIST
//! lines, and the dot-unstuffing decoder for multi-line responses. The client in `client.rs`
//! feeds these whatever bytes the network gave it, in whatever pieces.

/// Longest status line accepted (`+OK ...` / `-ERR ...`), without its line end.
pub const STATUS_LINE_MAX: usize = 64 * 1024;
/// Longest line accepted inside a multi-line response (a message line or a listing line).
/// RFC 5322 allows 998 octets, but real mail carries longer lines; a longer one makes the
/// response fail cleanly (it is read to its end and discarded, the session stays usable).
pub const DATA_LINE_MAX: usize = 1024 * 1024;
/// Longest unique-id allowed by RFC 1939.
pub const UID_MAX: usize = 70;

/// Why a line of a server reply cannot be understood.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// Neither `+OK` nor `-ERR`.
    #[error("status line starts with neither +OK nor -ERR: {0:?}")]
    BadStatus(String),
    /// A UIDL or LIST line that is not `number value`.
    #[error("malformed listing line {0:?}")]
    BadListing(String),
    /// A message number that is not a positive integer.
    #[error("bad message number in {0:?}")]
    BadNumber(String),
    /// A unique-id RFC 1939 does not allow.
    #[error("unique-id in {0:?} is empty, longer than 70 or has a byte outside 0x21..0x7E")]
    BadUid(String),
}

/// A parsed status line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Status {
    /// `+OK text`.
    Ok(String),
    /// `-ERR [CODE] text`; `code` is the RFC 2449 extended response code, if any.
    Err {
        /// The response code between brackets (`IN-USE`, `LOGIN-DELAY`, `SYS/TEMP`, `AUTH`...),
        /// upper-cased.
        code: Option<String>,
        /// The whole text after `-ERR`, code included.
        text: String,
    },
}

/// Parses a status line given without its line end (CRLF or bare LF).
///
/// The indicators are matched case-insensitively (some servers write `+ok`); the text after
/// them is kept, lossily decoded as UTF-8.
pub fn parse_status(line: &[u8]) -> Result<Status, ParseError> {
    let line = strip_line_end(line);
    let text_after = |n: usize| -> Option<String> {
        let rest = &line[n..];
        // The indicator must stand alone: "+OK", "+OK text", not "+OKAY".
        match rest.first() {
            None => Some(String::new()),
            Some(b' ') | Some(b'\t') => Some(lossy(rest).trim().to_owned()),
            Some(_) => None,
        }
    };
    if line.len() >= 3 && line[..3].eq_ignore_ascii_case(b"+OK") {
        if let Some(text) = text_after(3) {
            return Ok(Status::Ok(text));
        }
    } else if line.len() >= 4
        && line[..4].eq_ignore_ascii_case(b"-ERR")
        && let Some(text) = text_after(4)
    {
        return Ok(Status::Err {
            code: response_code(&text),
            text,
        });
    }
    Err(ParseError::BadStatus(excerpt(line)))
}

/// The RFC 2449 response code at the start of `text` (`[IN-USE] ...` → `IN-USE`).
fn response_code(text: &str) -> Option<String> {
    let rest = text.strip_prefix('[')?;
    let end = rest.find(']')?;
    let code = &rest[..end];
    (!code.is_empty() && code.bytes().all(|b| b.is_ascii_graphic()))
        .then(|| code.to_ascii_uppercase())
}

/// Parses one line of a UIDL listing: `msg uid`.
pub fn parse_uidl_line(line: &[u8]) -> Result<(u32, String), ParseError> {
    let text = strip_line_end(line);
    let mut fields = text
        .split(|b| *b == b' ' || *b == b'\t')
        .filter(|f| !f.is_empty());
    let (Some(number), Some(uid), None) = (fields.next(), fields.next(), fields.next()) else {
        return Err(ParseError::BadListing(excerpt(text)));
    };
    let number = parse_msg_number(number).ok_or_else(|| ParseError::BadNumber(excerpt(text)))?;
    if uid.is_empty() || uid.len() > UID_MAX || !uid.iter().all(|b| (0x21..=0x7e).contains(b)) {
        return Err(ParseError::BadUid(excerpt(text)));
    }
    // Checked above: printable ASCII only.
    Ok((number, String::from_utf8_lossy(uid).into_owned()))
}

/// Parses one line of a LIST listing: `msg size`, anything after the size ignored
/// (RFC 1939 allows servers to append information there).
pub fn parse_list_line(line: &[u8]) -> Result<(u32, u64), ParseError> {
    let text = strip_line_end(line);
    let mut fields = text
        .split(|b| *b == b' ' || *b == b'\t')
        .filter(|f| !f.is_empty());
    let (Some(number), Some(size)) = (fields.next(), fields.next()) else {
        return Err(ParseError::BadListing(excerpt(text)));
    };
    let number = parse_msg_number(number).ok_or_else(|| ParseError::BadNumber(excerpt(text)))?;
    let size = std::str::from_utf8(size)
        .ok()
        .filter(|s| s.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|s| s.parse::<u64>().ok())
        .ok_or_else(|| ParseError::BadListing(excerpt(text)))?;
    Ok((number, size))
}

/// A message number: decimal digits, at least 1.
fn parse_msg_number(field: &[u8]) -> Option<u32> {
    if field.is_empty() || !field.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(field)
        .ok()?
        .parse::<u32>()
        .ok()
        .filter(|n| *n > 0)
}

/// Splits the body of a multi-line response (already unstuffed, terminator removed) into
/// lines without their line ends. A last line without a line end is kept.
pub fn lines(body: &[u8]) -> impl Iterator<Item = &[u8]> {
    let body = body.strip_suffix(b"\n").unwrap_or(body);
    body.split(|b| *b == b'\n')
        .filter(move |_| !body.is_empty())
        .map(strip_line_end)
}

/// What the server said it can do, from the CAPA response (RFC 2449).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Capabilities {
    /// `STLS` (RFC 2595).
    pub stls: bool,
    /// `USER`: USER/PASS login is allowed.
    pub user: bool,
    /// `UIDL`.
    pub uidl: bool,
    /// `TOP`.
    pub top: bool,
    /// `PIPELINING`.
    pub pipelining: bool,
    /// `RESP-CODES`.
    pub resp_codes: bool,
    /// The mechanisms listed after `SASL`, upper-cased.
    pub sasl: Vec<String>,
    /// `LOGIN-DELAY n` (RFC 2449): the server refuses a login sooner than `n` seconds after
    /// the last one.
    pub login_delay: Option<u64>,
    /// `EXPIRE` (RFC 2449): how long the server keeps a message once it was downloaded.
    pub expire: Option<Expire>,
    /// Every capability line as sent, for diagnostics.
    pub lines: Vec<String>,
}

impl Capabilities {
    /// Parses the body of a CAPA response. Unknown capabilities are kept in `lines` only.
    pub fn parse(body: &[u8]) -> Capabilities {
        let mut capa = Capabilities::default();
        for line in lines(body) {
            let text = lossy(line);
            let mut words = text.split_ascii_whitespace();
            let Some(name) = words.next() else { continue };
            match name.to_ascii_uppercase().as_str() {
                "STLS" => capa.stls = true,
                "USER" => capa.user = true,
                "UIDL" => capa.uidl = true,
                "TOP" => capa.top = true,
                "PIPELINING" => capa.pipelining = true,
                "RESP-CODES" => capa.resp_codes = true,
                "SASL" => capa.sasl.extend(words.map(str::to_ascii_uppercase)),
                "LOGIN-DELAY" => capa.login_delay = words.next().and_then(|n| n.parse().ok()),
                "EXPIRE" => capa.expire = words.next().and_then(Expire::parse),
                _ => {}
            }
            capa.lines.push(text.trim().to_owned());
        }
        capa
    }

    /// Whether `SASL` lists `mechanism` (case-insensitive).
    pub fn has_sasl(&self, mechanism: &str) -> bool {
        self.sasl.iter().any(|m| m.eq_ignore_ascii_case(mechanism))
    }
}

/// POP3 `EXPIRE` (RFC 2449): whether, and after how many days, the server deletes a message
/// once a client downloaded it, whatever the client does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expire {
    /// `EXPIRE NEVER`: kept until deleted.
    Never,
    /// `EXPIRE n`: deleted `n` days after its download (0: at the end of the session).
    Days(u64),
}

impl Expire {
    /// The capability's first argument (a trailing `USER` is the server's per-user note).
    fn parse(word: &str) -> Option<Expire> {
        if word.eq_ignore_ascii_case("NEVER") {
            Some(Expire::Never)
        } else {
            word.parse().ok().map(Expire::Days)
        }
    }
}

/// Which limit a multi-line response went over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Overflow {
    /// A line longer than this many bytes.
    Line(usize),
    /// More than this many bytes in all.
    Total(usize),
}

impl std::fmt::Display for Overflow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Overflow::Line(n) => write!(f, "a line longer than {n} bytes"),
            Overflow::Total(n) => write!(f, "more than {n} bytes"),
        }
    }
}

/// Where the decoder is within the current line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// The next byte starts a line.
    LineStart,
    /// Inside a line.
    InLine,
    /// A line began with "."; not yet known whether it is the terminator or a stuffed line.
    Dot,
    /// A line began with ".\r".
    DotCr,
    /// The terminator has been read.
    Done,
}

/// How much of a chunk the decoder took, and whether the response is complete.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fed {
    /// Bytes of the input consumed; on completion, the bytes after the terminator are not
    /// consumed (they belong to the next response).
    pub consumed: usize,
    /// The terminating "." line has been read.
    pub done: bool,
}

/// Decodes the body of a multi-line response, fed in chunks split at any byte.
///
/// Line ends are kept as sent (CRLF, or a bare LF from a sloppy server). A line "." (followed
/// by CRLF or LF) ends the response and is not output; a line starting with "." has that dot
/// removed (RFC 1939: "..x" → ".x", and a "." followed by anything but a line end is stripped
/// too). The decoder never fails: when a limit is exceeded it stops storing, keeps reading to
/// the terminator so that the session stays in step, and reports the overflow.
#[derive(Debug, Clone)]
pub struct DotDecoder {
    state: State,
    line_len: usize,
    /// The last piece of the line ended with a CR not yet known to be half of a CRLF.
    pending_cr: bool,
    line_max: usize,
    total: usize,
    total_max: usize,
    overflow: Option<Overflow>,
}

impl DotDecoder {
    /// A decoder allowing lines of at most `line_max` bytes (line end excluded) and at most
    /// `total_max` bytes of output.
    pub fn new(line_max: usize, total_max: usize) -> DotDecoder {
        DotDecoder {
            state: State::LineStart,
            line_len: 0,
            pending_cr: false,
            line_max,
            total: 0,
            total_max,
            overflow: None,
        }
    }

    /// Whether the terminator has been read.
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// The limit that was exceeded, if any; the output is then incomplete and was cleared.
    pub fn overflow(&self) -> Option<Overflow> {
        self.overflow
    }

    /// Decodes `input`, appending the unstuffed bytes to `out`. Consumes all of `input`
    /// unless the terminator is found in it.
    pub fn feed(&mut self, input: &[u8], out: &mut Vec<u8>) -> Fed {
        let mut i = 0;
        while i < input.len() {
            match self.state {
                State::Done => break,
                State::LineStart => {
                    if input[i] == b'.' {
                        self.state = State::Dot;
                        i += 1;
                    } else {
                        self.state = State::InLine;
                        self.line_len = 0;
                    }
                }
                State::Dot => match input[i] {
                    b'\n' => {
                        self.state = State::Done;
                        i += 1;
                    }
                    b'\r' => {
                        self.state = State::DotCr;
                        i += 1;
                    }
                    // "..x" → ".x"; ".x" → "x" (the leading dot is always removed).
                    _ => {
                        self.state = State::InLine;
                        self.line_len = 0;
                    }
                },
                State::DotCr => {
                    if input[i] == b'\n' {
                        self.state = State::Done;
                        i += 1;
                    } else {
                        // ".\rx": not a terminator; the dot goes, the CR stays.
                        self.state = State::InLine;
                        self.line_len = 0;
                        self.emit(b"\r", out);
                    }
                }
                State::InLine => {
                    let rest = &input[i..];
                    match rest.iter().position(|b| *b == b'\n') {
                        Some(lf) => {
                            self.emit(&rest[..=lf], out);
                            self.state = State::LineStart;
                            i += lf + 1;
                        }
                        None => {
                            self.emit(rest, out);
                            i = input.len();
                        }
                    }
                }
            }
        }
        Fed {
            consumed: i,
            done: self.state == State::Done,
        }
    }

    /// Appends `bytes` (part of one line, possibly ending with its LF) unless a limit is hit.
    /// Which limit is named does not depend on how the input was split: the one that the
    /// earliest byte exceeds.
    fn emit(&mut self, bytes: &[u8], out: &mut Vec<u8>) {
        if self.overflow.is_some() {
            return;
        }
        // A CR that ended the previous piece, not followed by LF after all, is line content.
        if std::mem::take(&mut self.pending_cr) && !bytes.starts_with(b"\n") {
            self.line_len += 1;
            if self.line_len > self.line_max {
                return self.overflowed(Overflow::Line(self.line_max), out);
            }
        }
        let content = match bytes.strip_suffix(b"\n") {
            Some(b) => b.strip_suffix(b"\r").unwrap_or(b),
            // A CR at the end of a piece may be the first half of a CRLF: count it later.
            None => match bytes.strip_suffix(b"\r") {
                Some(b) => {
                    self.pending_cr = true;
                    b
                }
                None => bytes,
            },
        };
        // The index of the first byte over each limit, if any byte is.
        let line_over = (content.len() > self.line_max.saturating_sub(self.line_len))
            .then(|| self.line_max.saturating_sub(self.line_len));
        let total_over = (bytes.len() > self.total_max.saturating_sub(self.total))
            .then(|| self.total_max.saturating_sub(self.total));
        self.line_len += content.len();
        self.total += bytes.len();
        let overflow = match (line_over, total_over) {
            (Some(line), Some(total)) if line < total => Some(Overflow::Line(self.line_max)),
            (_, Some(_)) => Some(Overflow::Total(self.total_max)),
            (Some(_), None) => Some(Overflow::Line(self.line_max)),
            (None, None) => None,
        };
        if let Some(overflow) = overflow {
            return self.overflowed(overflow, out);
        }
        out.extend_from_slice(bytes);
        if bytes.ends_with(b"\n") {
            self.line_len = 0;
        }
    }

    /// Stops storing: what was stored is dropped, the rest is read and discarded.
    fn overflowed(&mut self, overflow: Overflow, out: &mut Vec<u8>) {
        self.overflow = Some(overflow);
        out.clear();
        out.shrink_to_fit();
    }
}

/// Dot-stuffs `message` and appends the terminator, as a server sends a RETR response body.
/// A message not ending with a line end gets a CRLF first. For tests and fakes.
pub fn dot_stuff(message: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(message.len() + message.len() / 32 + 5);
    let mut at_line_start = true;
    for &b in message {
        if at_line_start && b == b'.' {
            out.push(b'.');
        }
        out.push(b);
        at_line_start = b == b'\n';
    }
    if !at_line_start {
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b".\r\n");
    out
}

/// `line` without a final CRLF or LF.
pub fn strip_line_end(line: &[u8]) -> &[u8] {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    line.strip_suffix(b"\r").unwrap_or(line)
}

fn lossy(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// At most 200 bytes of a line, for error messages and logs.
fn excerpt(line: &[u8]) -> String {
    let cut = &line[..line.len().min(200)];
    let mut s = lossy(cut);
    if line.len() > cut.len() {
        s.push('…');
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expire_is_read_from_capa() {
        let capa = |text: &[u8]| Capabilities::parse(text).expire;
        assert_eq!(capa(b"EXPIRE 0\r\n"), Some(Expire::Days(0)));
        assert_eq!(capa(b"EXPIRE 31 USER\r\n"), Some(Expire::Days(31)));
        assert_eq!(capa(b"expire never\r\n"), Some(Expire::Never));
        assert_eq!(capa(b"EXPIRE soon\r\n"), None);
        assert_eq!(capa(b"USER\r\n"), None);
    }

    #[test]
    fn login_delay_is_read_from_capa() {
        let capa = Capabilities::parse(b"USER\r\nLOGIN-DELAY 900 USER\r\nUIDL\r\n");
        assert_eq!(capa.login_delay, Some(900));
        assert_eq!(Capabilities::parse(b"USER\r\n").login_delay, None);
        assert_eq!(
            Capabilities::parse(b"LOGIN-DELAY soon\r\n").login_delay,
            None
        );
    }
    use proptest::prelude::*;

    /// Decodes `chunks` in order with generous limits; the body and how many bytes of the
    /// last chunk were left over.
    fn decode(chunks: &[&[u8]]) -> (Vec<u8>, bool, Vec<u8>) {
        let mut dec = DotDecoder::new(DATA_LINE_MAX, usize::MAX);
        let mut out = Vec::new();
        let mut rest = Vec::new();
        for chunk in chunks {
            let fed = dec.feed(chunk, &mut out);
            if fed.done {
                rest.extend_from_slice(&chunk[fed.consumed..]);
                break;
            }
            assert_eq!(
                fed.consumed,
                chunk.len(),
                "unfinished decoder must take everything"
            );
        }
        (out, dec.is_done(), rest)
    }

    #[test]
    fn status_ok_and_err() {
        assert_eq!(
            parse_status(b"+OK POP3 ready\r\n").unwrap(),
            Status::Ok("POP3 ready".into())
        );
        assert_eq!(parse_status(b"+OK").unwrap(), Status::Ok(String::new()));
        assert_eq!(
            parse_status(b"+ok fine\n").unwrap(),
            Status::Ok("fine".into())
        );
        assert_eq!(
            parse_status(b"-ERR no such message").unwrap(),
            Status::Err {
                code: None,
                text: "no such message".into()
            }
        );
        assert_eq!(
            parse_status(b"-ERR [in-use] mailbox locked\r\n").unwrap(),
            Status::Err {
                code: Some("IN-USE".into()),
                text: "[in-use] mailbox locked".into()
            }
        );
        assert_eq!(
            parse_status(b"-ERR").unwrap(),
            Status::Err {
                code: None,
                text: String::new()
            }
        );
    }

    #[test]
    fn status_garbage_is_an_error() {
        for bad in [
            &b""[..],
            b"OK",
            b"+OKAY",
            b"-ERROR x",
            b"* OK imap",
            b"+ go ahead",
        ] {
            assert!(
                matches!(parse_status(bad), Err(ParseError::BadStatus(_))),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn uidl_lines() {
        assert_eq!(parse_uidl_line(b"1 abc\r\n").unwrap(), (1, "abc".into()));
        assert_eq!(
            parse_uidl_line(b"42  0000a1b2-~!\r").unwrap(),
            (42, "0000a1b2-~!".into())
        );
        let uid70 = "x".repeat(70);
        assert_eq!(
            parse_uidl_line(format!("7 {uid70}").as_bytes()).unwrap(),
            (7, uid70)
        );
        assert!(matches!(
            parse_uidl_line(format!("7 {}", "x".repeat(71)).as_bytes()),
            Err(ParseError::BadUid(_))
        ));
        assert!(matches!(
            parse_uidl_line("3 caf\u{e9}".as_bytes()),
            Err(ParseError::BadUid(_))
        ));
        assert!(matches!(
            parse_uidl_line(b"3 a\x01b"),
            Err(ParseError::BadUid(_))
        ));
        assert!(matches!(
            parse_uidl_line(b"x abc"),
            Err(ParseError::BadNumber(_))
        ));
        assert!(matches!(
            parse_uidl_line(b"0 abc"),
            Err(ParseError::BadNumber(_))
        ));
        assert!(matches!(
            parse_uidl_line(b"-1 abc"),
            Err(ParseError::BadNumber(_))
        ));
        assert!(matches!(
            parse_uidl_line(b"1"),
            Err(ParseError::BadListing(_))
        ));
        assert!(matches!(
            parse_uidl_line(b"1 a b"),
            Err(ParseError::BadListing(_))
        ));
        assert!(matches!(
            parse_uidl_line(b""),
            Err(ParseError::BadListing(_))
        ));
    }

    #[test]
    fn list_lines() {
        assert_eq!(parse_list_line(b"1 120\r\n").unwrap(), (1, 120));
        assert_eq!(parse_list_line(b"2 0").unwrap(), (2, 0));
        // RFC 1939: servers may append information after the size.
        assert_eq!(parse_list_line(b"3 512 extra info").unwrap(), (3, 512));
        assert!(parse_list_line(b"3").is_err());
        assert!(parse_list_line(b"3 -5").is_err());
        assert!(parse_list_line(b"3 +5").is_err());
        assert!(parse_list_line(b"3 12k").is_err());
        assert!(parse_list_line(b"99999999999 1").is_err());
    }

    #[test]
    fn lines_split_any_line_end() {
        let got: Vec<&[u8]> = lines(b"a\r\nb\n\r\nc").collect();
        assert_eq!(got, vec![&b"a"[..], b"b", b"", b"c"]);
        assert_eq!(lines(b"").count(), 0);
        assert_eq!(lines(b"x\r\n").collect::<Vec<_>>(), vec![&b"x"[..]]);
    }

    #[test]
    fn capabilities() {
        let capa = Capabilities::parse(
            b"TOP\r\nUSER\r\nuidl\r\nSASL PLAIN xoauth2\r\nRESP-CODES\r\nPIPELINING\r\n\
              IMPLEMENTATION Dovecot\r\nstls\r\n",
        );
        assert!(capa.stls && capa.user && capa.uidl && capa.top);
        assert!(capa.pipelining && capa.resp_codes);
        assert_eq!(capa.sasl, vec!["PLAIN".to_string(), "XOAUTH2".into()]);
        assert!(capa.has_sasl("xoauth2"));
        assert!(!capa.has_sasl("LOGIN"));
        assert_eq!(capa.lines.len(), 8);

        let bare = Capabilities::parse(b"TOP\r\n");
        assert!(!bare.stls && !bare.user && bare.sasl.is_empty());
    }

    #[test]
    fn unstuffing() {
        let (out, done, rest) = decode(&[b"a\r\n..b\r\n.c\r\n...\r\n..\r\n\r\n.\r\nNEXT"]);
        assert!(done);
        assert_eq!(out, b"a\r\n.b\r\nc\r\n..\r\n.\r\n\r\n");
        assert_eq!(
            rest, b"NEXT",
            "bytes after the terminator belong to the next reply"
        );
    }

    #[test]
    fn empty_body() {
        let (out, done, rest) = decode(&[b".\r\n"]);
        assert!(done);
        assert!(out.is_empty());
        assert!(rest.is_empty());
    }

    #[test]
    fn dot_dot_line_is_not_the_terminator() {
        let (out, done, _) = decode(&[b"..\r\n"]);
        assert!(!done, "\"..\" must not end the response");
        assert_eq!(out, b".\r\n");
    }

    #[test]
    fn dot_inside_a_line_is_kept() {
        let (out, done, _) = decode(&[b"a.\r\nb . c\r\n.\r\n"]);
        assert!(done);
        assert_eq!(out, b"a.\r\nb . c\r\n");
    }

    #[test]
    fn bare_lf_server() {
        let (out, done, rest) = decode(&[b"one\n..two\n\n.\nX"]);
        assert!(done);
        assert_eq!(out, b"one\n.two\n\n");
        assert_eq!(rest, b"X");
    }

    #[test]
    fn dot_cr_without_lf_is_data() {
        let (out, done, _) = decode(&[b".\rx\r\n.\r\n"]);
        assert!(done);
        assert_eq!(out, b"\rx\r\n");
    }

    #[test]
    fn eight_bit_bytes_pass_through() {
        let (out, done, _) = decode(&[b"\xe9t\xe9 \x00\xff\r\n.\r\n"]);
        assert!(done);
        assert_eq!(out, b"\xe9t\xe9 \x00\xff\r\n");
    }

    #[test]
    fn terminator_split_at_every_byte() {
        let wire = b"x\r\n..\r\n.y\r\n.\r\n+OK next";
        let expected = b"x\r\n.\r\ny\r\n";
        for i in 0..=wire.len() {
            for j in i..=wire.len() {
                let (out, done, rest) = decode(&[&wire[..i], &wire[i..j], &wire[j..]]);
                assert!(done, "split at {i},{j}");
                assert_eq!(out, expected, "split at {i},{j}");
                // What follows the terminator in its chunk is left for the next reply.
                let end = if i >= 14 {
                    i
                } else if j >= 14 {
                    j
                } else {
                    wire.len()
                };
                assert_eq!(rest, &wire[14..end], "split at {i},{j}");
            }
        }
    }

    #[test]
    fn unfinished_body_is_not_done() {
        for wire in [&b"abc\r\n"[..], b"abc\r\n.", b"abc\r\n.\r", b"abc"] {
            let (_, done, _) = decode(&[wire]);
            assert!(!done, "{wire:?}");
        }
    }

    #[test]
    fn long_line_overflows_but_reads_to_the_terminator() {
        let mut dec = DotDecoder::new(10, usize::MAX);
        let mut out = Vec::new();
        let fed = dec.feed(b"short\r\n0123456789A\r\nmore\r\n.\r\nNEXT", &mut out);
        assert!(fed.done);
        assert_eq!(fed.consumed, 29);
        assert_eq!(dec.overflow(), Some(Overflow::Line(10)));
        assert!(out.is_empty(), "an overflowing body is discarded");
    }

    #[test]
    fn line_of_exactly_the_limit_is_fine_even_when_split() {
        let wire = b"0123456789\r\n.\r\n";
        for i in 0..=wire.len() {
            let mut dec = DotDecoder::new(10, usize::MAX);
            let mut out = Vec::new();
            dec.feed(&wire[..i], &mut out);
            assert!(dec.feed(&wire[i..], &mut out).done);
            assert_eq!(dec.overflow(), None, "split at {i}");
            assert_eq!(out, b"0123456789\r\n");
        }
    }

    #[test]
    fn total_overflows() {
        let mut dec = DotDecoder::new(100, 8);
        let mut out = Vec::new();
        assert!(dec.feed(b"1234\r\n5678\r\n.\r\n", &mut out).done);
        assert_eq!(dec.overflow(), Some(Overflow::Total(8)));
    }

    #[test]
    fn dot_stuffing_helper() {
        assert_eq!(dot_stuff(b".a\r\nb\r\n"), b"..a\r\nb\r\n.\r\n");
        assert_eq!(dot_stuff(b"no end"), b"no end\r\n.\r\n");
        assert_eq!(dot_stuff(b""), b".\r\n");
    }

    /// Messages as a server holds them: lines of arbitrary bytes (many dots), each ending with
    /// CRLF or a bare LF.
    fn message() -> impl Strategy<Value = Vec<u8>> {
        let byte = prop_oneof![
            4 => Just(b'.'),
            1 => Just(b'\r'),
            6 => any::<u8>().prop_filter("no LF inside a line", |b| *b != b'\n'),
        ];
        let line = (proptest::collection::vec(byte, 0..12), any::<bool>()).prop_map(
            |(mut bytes, crlf)| {
                // A CR right before the line end would make CRLF of a bare-LF line.
                while bytes.last() == Some(&b'\r') {
                    bytes.pop();
                }
                bytes.extend_from_slice(if crlf { b"\r\n" } else { b"\n" });
                bytes
            },
        );
        proptest::collection::vec(line, 0..20).prop_map(|lines| lines.concat())
    }

    proptest! {
        #[test]
        fn stuffed_message_in_any_chunks_parses_back(
            msg in message(),
            cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..8),
        ) {
            let mut wire = dot_stuff(&msg);
            wire.extend_from_slice(b"+OK after");
            let mut at: Vec<usize> = cuts.iter().map(|c| c.index(wire.len() + 1)).collect();
            at.sort_unstable();
            let mut chunks = Vec::new();
            let mut prev = 0;
            for cut in at {
                chunks.push(&wire[prev..cut]);
                prev = cut;
            }
            chunks.push(&wire[prev..]);

            let mut dec = DotDecoder::new(DATA_LINE_MAX, usize::MAX);
            let mut out = Vec::new();
            let mut left = Vec::new();
            let mut finished = false;
            for chunk in chunks {
                if finished {
                    left.extend_from_slice(chunk);
                    continue;
                }
                let fed = dec.feed(chunk, &mut out);
                if fed.done {
                    finished = true;
                    left.extend_from_slice(&chunk[fed.consumed..]);
                } else {
                    prop_assert_eq!(fed.consumed, chunk.len());
                }
            }
            prop_assert!(finished);
            prop_assert_eq!(&out, &msg);
            prop_assert_eq!(&left[..], &b"+OK after"[..]);
        }
    }
}
