//! The IMAP4rev1 wire format (RFC 3501), free of I/O: where a response ends (lines and the
//! literals between them), and what a whole response says. The connection in `conn.rs`
//! reads the bytes and hands each complete response here as a [`RawResponse`].
//!
//! Over 600 lines on purpose: one grammar (RFC 3501's response syntax) that reads best whole.

/// Most text one response may carry outside its literals (all its line segments together).
/// A `UID SEARCH` answer for a mailbox of a million messages needs about 8 MB.
pub const TEXT_MAX: usize = 16 * 1024 * 1024;
/// Largest literal kept outside a message body (a mailbox name, a header field); a larger
/// one is read and dropped.
pub const LITERAL_MAX: u64 = 1024 * 1024;

/// Why a response cannot be understood.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// The response is not IMAP at all, or breaks the grammar at some point.
    #[error("malformed response {0:?}")]
    Malformed(String),
    /// A literal's length is not a number that fits.
    #[error("bad literal length in {0:?}")]
    BadLiteral(String),
}

/// A literal's contents, or only its length when it was larger than allowed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Literal {
    /// The octets, as sent.
    Kept(Vec<u8>),
    /// Read to its end and dropped: this many octets.
    Dropped(u64),
}

/// One complete response as read: its line segments joined (each literal's `{n}` marker left
/// in place, the CRLF after it and the final line end removed), and its literals in order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RawResponse {
    /// The text outside literals.
    pub text: Vec<u8>,
    /// The literals, in the order their markers appear in `text`.
    pub literals: Vec<Literal>,
}

/// The length of the literal announced at the end of a line (given without its line end):
/// `{123}`, or `{123+}` (RFC 7888, which servers never send but cost nothing to accept).
/// `None` when the line does not end in a literal marker.
pub fn literal_at_end(line: &[u8]) -> Option<Result<u64, ParseError>> {
    let inner = line.strip_suffix(b"}")?;
    let open = inner.iter().rposition(|b| *b == b'{')?;
    let digits = &inner[open + 1..];
    let digits = digits.strip_suffix(b"+").unwrap_or(digits);
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(
        std::str::from_utf8(digits)
            .ok()
            .and_then(|d| d.parse::<u64>().ok())
            .ok_or_else(|| ParseError::BadLiteral(excerpt(line))),
    )
}

/// The outcome of a command, or the kind of an untagged status response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Done.
    Ok,
    /// Refused (the command was understood).
    No,
    /// Not understood.
    Bad,
}

/// A response code (`[UIDVALIDITY 42]`), as far as the client uses one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Code {
    /// `CAPABILITY ...`.
    Capability(Capabilities),
    /// `UIDVALIDITY n`.
    UidValidity(u32),
    /// Any other code: its name upper-cased, e.g. `AUTHENTICATIONFAILED`, `UNAVAILABLE`.
    Other(String),
}

/// What the server said it can do (CAPABILITY), upper-cased.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Capabilities {
    /// Every capability as sent, upper-cased (`IMAP4REV1`, `STARTTLS`, `AUTH=PLAIN`, ...).
    pub names: Vec<String>,
}

impl Capabilities {
    /// Builds the set from the words of a CAPABILITY response or code.
    pub fn from_words<'a>(words: impl IntoIterator<Item = &'a str>) -> Capabilities {
        Capabilities {
            names: words.into_iter().map(str::to_ascii_uppercase).collect(),
        }
    }

    /// Whether `name` is among them (case-insensitive).
    pub fn has(&self, name: &str) -> bool {
        self.names.iter().any(|n| n.eq_ignore_ascii_case(name))
    }

    /// The SASL mechanisms offered (`AUTH=SCRAM-SHA-256` ...), as sent.
    pub fn auth_mechanisms(&self) -> impl Iterator<Item = &str> {
        self.names.iter().filter_map(|n| n.strip_prefix("AUTH="))
    }

    /// Whether SASL mechanism `mechanism` is offered (`AUTH=PLAIN`).
    pub fn has_auth(&self, mechanism: &str) -> bool {
        self.names.iter().any(|n| {
            n.strip_prefix("AUTH=")
                .is_some_and(|m| m.eq_ignore_ascii_case(mechanism))
        })
    }
}

/// One entry of a LIST response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListEntry {
    /// The name attributes (`\HasNoChildren`, `\Noselect`, ...), as sent.
    pub attributes: Vec<String>,
    /// The hierarchy delimiter; `None` for a flat namespace (NIL).
    pub delimiter: Option<char>,
    /// The mailbox name as the server spells it (modified UTF-7 for non-ASCII names).
    pub name: Vec<u8>,
}

impl ListEntry {
    /// Whether the mailbox can be selected (neither `\Noselect` nor `\NonExistent`).
    pub fn selectable(&self) -> bool {
        !self.attributes.iter().any(|a| {
            a.eq_ignore_ascii_case("\\Noselect") || a.eq_ignore_ascii_case("\\NonExistent")
        })
    }
}

/// The data items of one FETCH response that the client uses.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FetchData {
    /// `UID`.
    pub uid: Option<u32>,
    /// `RFC822.SIZE`.
    pub size: Option<u64>,
    /// `BODY[]`: `Some(None)` when the server sent NIL.
    pub body: Option<Option<Literal>>,
    /// `FLAGS`.
    pub flags: Option<Vec<String>>,
}

/// A response, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Response {
    /// `+ text`: the server waits for the rest of the command.
    Continue(String),
    /// `tag OK|NO|BAD [code] text`: a command's outcome.
    Tagged {
        /// The command's tag.
        tag: String,
        /// OK, NO or BAD.
        status: Status,
        /// The response code in brackets, if any.
        code: Option<Code>,
        /// The human-readable rest.
        text: String,
    },
    /// `* OK|NO|BAD [code] text`.
    State {
        /// OK, NO or BAD.
        status: Status,
        /// The response code in brackets, if any.
        code: Option<Code>,
        /// The human-readable rest.
        text: String,
    },
    /// `* PREAUTH [code] text`: the greeting of a connection already logged in.
    Preauth {
        /// The response code in brackets, if any.
        code: Option<Code>,
        /// The human-readable rest.
        text: String,
    },
    /// `* BYE text`: the server is closing the connection.
    Bye {
        /// Why, as the server says.
        text: String,
    },
    /// `* CAPABILITY ...`.
    Capability(Capabilities),
    /// `* LIST (attrs) delim name`.
    List(ListEntry),
    /// `* n EXISTS`.
    Exists(u32),
    /// `* n RECENT`: messages new to this session (RFC 3501 `\Recent`).
    Recent(u32),
    /// `* n EXPUNGE`.
    Expunge(u32),
    /// `* n FETCH (...)`.
    Fetch {
        /// The message's sequence number.
        seq: u32,
        /// The data items the client understands.
        data: FetchData,
    },
    /// `* SEARCH n n ...`.
    Search(Vec<u32>),
    /// Anything else untagged (`FLAGS`, `RECENT`, `ENABLED`, ...): an excerpt, for the log.
    Other(String),
}

/// Parses one complete response.
pub fn parse(raw: RawResponse) -> Result<Response, ParseError> {
    let mut p = Parser {
        text: &raw.text,
        pos: 0,
        literals: raw.literals.into_iter(),
    };
    p.response()
        .ok_or_else(|| ParseError::Malformed(excerpt(&raw.text)))
}

/// A generic value of the grammar: enough to read the parts the client uses and to step over
/// the rest (ENVELOPE, BODYSTRUCTURE, ...).
#[derive(Debug, Clone, PartialEq, Eq)]
enum Value {
    /// An atom or a number, as sent (flags like `\Seen` and names like `BODY[]` included).
    Atom(String),
    /// A quoted string, unescaped.
    Quoted(Vec<u8>),
    /// A literal.
    Literal(Literal),
    Nil,
    List(Vec<Value>),
}

impl Value {
    fn number<T: std::str::FromStr>(&self) -> Option<T> {
        match self {
            Value::Atom(a) if a.bytes().all(|b| b.is_ascii_digit()) => a.parse().ok(),
            _ => None,
        }
    }

    /// An astring or nstring's bytes (`None` for NIL or a list).
    fn bytes(self) -> Option<Vec<u8>> {
        match self {
            Value::Atom(a) => Some(a.into_bytes()),
            Value::Quoted(q) => Some(q),
            Value::Literal(Literal::Kept(l)) => Some(l),
            _ => None,
        }
    }
}

struct Parser<'a> {
    text: &'a [u8],
    pos: usize,
    literals: std::vec::IntoIter<Literal>,
}

impl Parser<'_> {
    fn peek(&self) -> Option<u8> {
        self.text.get(self.pos).copied()
    }

    fn skip_spaces(&mut self) {
        while self.peek() == Some(b' ') {
            self.pos += 1;
        }
    }

    /// The rest of the text, lossily decoded and trimmed.
    fn rest(&mut self) -> String {
        let rest = lossy(&self.text[self.pos..]).trim().to_owned();
        self.pos = self.text.len();
        rest
    }

    /// A word up to the next space (tag, `*`, status, response name).
    fn word(&mut self) -> Option<&str> {
        self.skip_spaces();
        let start = self.pos;
        while self.peek().is_some_and(|b| b != b' ') {
            self.pos += 1;
        }
        let word = &self.text[start..self.pos];
        (!word.is_empty()).then(|| std::str::from_utf8(word).ok())?
    }

    fn response(&mut self) -> Option<Response> {
        if self.peek() == Some(b'+') {
            self.pos += 1;
            return Some(Response::Continue(self.rest()));
        }
        let tag = self.word()?.to_owned();
        if tag != "*" {
            let status = status(self.word()?)?;
            let (code, text) = self.resp_text();
            return Some(Response::Tagged {
                tag,
                status,
                code,
                text,
            });
        }
        let first = self.word()?.to_owned();
        if let Ok(n) = first.parse::<u32>() {
            return self.numbered(n);
        }
        let name = first.to_ascii_uppercase();
        if let Some(status) = status(&name) {
            let (code, text) = self.resp_text();
            return Some(Response::State { status, code, text });
        }
        Some(match name.as_str() {
            "PREAUTH" => {
                let (code, text) = self.resp_text();
                Response::Preauth { code, text }
            }
            "BYE" => Response::Bye { text: self.rest() },
            "CAPABILITY" => {
                let rest = self.rest();
                Response::Capability(Capabilities::from_words(rest.split_ascii_whitespace()))
            }
            "LIST" => Response::List(self.list_entry()?),
            "SEARCH" => {
                let rest = self.rest();
                // RFC 7162 may append "(MODSEQ n)"; stop at anything that is not a number.
                Response::Search(
                    rest.split_ascii_whitespace()
                        .map_while(|w| w.parse().ok())
                        .collect(),
                )
            }
            _ => Response::Other(format!("{first} {}", truncate(&self.rest(), 200))),
        })
    }

    /// `* n EXISTS`, `* n EXPUNGE`, `* n FETCH (...)`, `* n RECENT`.
    fn numbered(&mut self, n: u32) -> Option<Response> {
        let name = self.word_until_paren()?.to_ascii_uppercase();
        Some(match name.as_str() {
            "EXISTS" => Response::Exists(n),
            "RECENT" => Response::Recent(n),
            "EXPUNGE" => Response::Expunge(n),
            "FETCH" => {
                self.skip_spaces();
                let Value::List(items) = self.value()? else {
                    return None;
                };
                Response::Fetch {
                    seq: n,
                    data: fetch_data(items)?,
                }
            }
            _ => Response::Other(format!("{n} {name} {}", truncate(&self.rest(), 200))),
        })
    }

    /// A word that may be followed directly by `(` (`FETCH(`, which some servers send).
    fn word_until_paren(&mut self) -> Option<String> {
        self.skip_spaces();
        let start = self.pos;
        while self.peek().is_some_and(|b| b != b' ' && b != b'(') {
            self.pos += 1;
        }
        let word = &self.text[start..self.pos];
        (!word.is_empty()).then(|| lossy(word))
    }

    /// `[code] text` after a status word.
    fn resp_text(&mut self) -> (Option<Code>, String) {
        self.skip_spaces();
        let mut code = None;
        if self.peek() == Some(b'[')
            && let Some(close) = self.text[self.pos..].iter().position(|b| *b == b']')
        {
            let inner = lossy(&self.text[self.pos + 1..self.pos + close]);
            self.pos += close + 1;
            code = Some(parse_code(&inner));
        }
        (code, self.rest())
    }

    /// `(attrs) delim name` of a LIST response.
    fn list_entry(&mut self) -> Option<ListEntry> {
        self.skip_spaces();
        let Value::List(attrs) = self.value()? else {
            return None;
        };
        let attributes = attrs
            .into_iter()
            .filter_map(|a| match a {
                Value::Atom(a) => Some(a),
                _ => None,
            })
            .collect();
        self.skip_spaces();
        let delimiter = match self.value()? {
            Value::Nil => None,
            v => {
                let bytes = v.bytes()?;
                match bytes.as_slice() {
                    [c] if c.is_ascii() => Some(char::from(*c)),
                    _ => return None,
                }
            }
        };
        self.skip_spaces();
        let name = self.value()?.bytes()?;
        Some(ListEntry {
            attributes,
            delimiter,
            name,
        })
    }

    /// One value: a list, a quoted string, a literal, NIL, or an atom.
    fn value(&mut self) -> Option<Value> {
        match self.peek()? {
            b'(' => {
                self.pos += 1;
                let mut items = Vec::new();
                loop {
                    self.skip_spaces();
                    if self.peek()? == b')' {
                        self.pos += 1;
                        return Some(Value::List(items));
                    }
                    items.push(self.value()?);
                }
            }
            b'"' => self.quoted().map(Value::Quoted),
            b'{' => {
                let close = self.text[self.pos..].iter().position(|b| *b == b'}')?;
                self.pos += close + 1;
                self.literals.next().map(Value::Literal)
            }
            _ => {
                let atom = self.atom()?;
                Some(if atom.eq_ignore_ascii_case("NIL") {
                    Value::Nil
                } else {
                    Value::Atom(atom)
                })
            }
        }
    }

    /// A quoted string with `\"` and `\\` escapes, unescaped.
    fn quoted(&mut self) -> Option<Vec<u8>> {
        self.pos += 1;
        let mut out = Vec::new();
        loop {
            match self.peek()? {
                b'"' => {
                    self.pos += 1;
                    return Some(out);
                }
                b'\\' => {
                    self.pos += 1;
                    out.push(self.peek()?);
                }
                b => out.push(b),
            }
            self.pos += 1;
        }
    }

    /// An atom; a `[...]` section inside it is taken whole (`BODY[HEADER.FIELDS (A B)]`),
    /// and so is a `<origin>` after it (`BODY[]<0>`).
    fn atom(&mut self) -> Option<String> {
        let start = self.pos;
        while let Some(b) = self.peek() {
            match b {
                b'[' | b'<' => {
                    // A section, or the origin right after one; otherwise an ordinary byte.
                    let close = if b == b'[' { b']' } else { b'>' };
                    let after_section = self.pos > start && self.text[self.pos - 1] == b']';
                    match self.text[self.pos..].iter().position(|c| *c == close) {
                        Some(at) if b == b'[' || after_section => self.pos += at + 1,
                        _ => self.pos += 1,
                    }
                }
                b' ' | b'(' | b')' | b'"' | b'{' => break,
                b if b.is_ascii_control() => break,
                _ => self.pos += 1,
            }
        }
        (self.pos > start).then(|| lossy(&self.text[start..self.pos]))
    }
}

/// OK, NO or BAD (case-insensitive).
fn status(word: &str) -> Option<Status> {
    match word.to_ascii_uppercase().as_str() {
        "OK" => Some(Status::Ok),
        "NO" => Some(Status::No),
        "BAD" => Some(Status::Bad),
        _ => None,
    }
}

/// The text between `[` and `]`.
fn parse_code(inner: &str) -> Code {
    let mut words = inner.split_ascii_whitespace();
    let name = words.next().unwrap_or_default().to_ascii_uppercase();
    match name.as_str() {
        "CAPABILITY" => Code::Capability(Capabilities::from_words(words)),
        "UIDVALIDITY" => match words.next().and_then(|w| w.parse().ok()) {
            Some(n) => Code::UidValidity(n),
            None => Code::Other(name),
        },
        _ => Code::Other(name),
    }
}

/// The items of a FETCH response, by name; the unknown ones are stepped over.
fn fetch_data(items: Vec<Value>) -> Option<FetchData> {
    let mut data = FetchData::default();
    let mut items = items.into_iter();
    while let Some(name) = items.next() {
        let Value::Atom(name) = name else {
            return None;
        };
        let value = items.next()?;
        let name = name.to_ascii_uppercase();
        match name.as_str() {
            "UID" => data.uid = Some(value.number()?),
            "RFC822.SIZE" => data.size = Some(value.number()?),
            "FLAGS" => {
                let Value::List(flags) = value else {
                    return None;
                };
                data.flags = Some(
                    flags
                        .into_iter()
                        .filter_map(|f| match f {
                            Value::Atom(a) => Some(a),
                            _ => None,
                        })
                        .collect(),
                );
            }
            // BODY[] (the whole message), also as BODY[]<0> when the server names the origin.
            _ if name == "BODY[]" || name.starts_with("BODY[]<") => {
                data.body = Some(match value {
                    Value::Nil => None,
                    Value::Literal(l) => Some(l),
                    Value::Quoted(q) => Some(Literal::Kept(q)),
                    _ => return None,
                });
            }
            _ => {}
        }
    }
    Some(data)
}

/// Lossy UTF-8.
fn lossy(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn truncate(s: &str, max: usize) -> &str {
    match s.char_indices().nth(max) {
        Some((at, _)) => &s[..at],
        None => s,
    }
}

/// The start of a line, for error messages.
pub fn excerpt(line: &[u8]) -> String {
    truncate(&lossy(line), 120).to_owned()
}

/// Decodes a mailbox name from modified UTF-7 (RFC 3501 5.1.3): `&AOQ-` is `ä`, `&-` is `&`.
/// `None` when it is not valid modified UTF-7 (the caller shows it as sent).
pub fn decode_mailbox_name(name: &[u8]) -> Option<String> {
    let mut out = String::new();
    let mut rest = name;
    while let Some((&b, tail)) = rest.split_first() {
        if b != b'&' {
            if !(0x20..0x7f).contains(&b) {
                return None;
            }
            out.push(char::from(b));
            rest = tail;
            continue;
        }
        let end = tail.iter().position(|b| *b == b'-')?;
        let encoded = &tail[..end];
        rest = &tail[end + 1..];
        if encoded.is_empty() {
            out.push('&');
            continue;
        }
        // Modified base64: ',' for '/', no padding; UTF-16BE inside.
        let mut bits: u32 = 0;
        let mut count = 0;
        let mut units = Vec::new();
        for &c in encoded {
            let v = match c {
                b'A'..=b'Z' => c - b'A',
                b'a'..=b'z' => c - b'a' + 26,
                b'0'..=b'9' => c - b'0' + 52,
                b'+' => 62,
                b',' => 63,
                _ => return None,
            };
            bits = (bits << 6) | u32::from(v);
            count += 6;
            if count >= 16 {
                count -= 16;
                units.push(((bits >> count) & 0xffff) as u16);
            }
        }
        out.push_str(&String::from_utf16(&units).ok()?);
    }
    Some(out)
}
