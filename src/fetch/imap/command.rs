//! Writing IMAP commands, free of I/O: strings as quoted strings or literals, secrets kept
//! out of what the log shows, UID sets in ranges.

/// One piece of a command as it goes on the wire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Part {
    /// Text sent as is.
    Text(Vec<u8>),
    /// A literal: sent as `{n}` CRLF (or `{n+}` with LITERAL+), then its octets.
    Literal(Vec<u8>),
}

/// A command without its tag: what goes on the wire, and what the log may show.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Command {
    /// The pieces in order; the tag and a space go before them, CRLF after.
    pub parts: Vec<Part>,
    /// The command as the log and error messages show it, secrets replaced by `***`.
    pub shown: String,
}

impl Command {
    /// A command of plain text (`CAPABILITY`, `UID FETCH 1:* (UID RFC822.SIZE)`).
    pub fn new(text: &str) -> Command {
        Command {
            parts: vec![Part::Text(text.as_bytes().to_vec())],
            shown: text.to_owned(),
        }
    }

    /// Appends a space and `bytes` as a string: quoted when it can be, a literal otherwise
    /// (8-bit bytes, CR, LF). A secret is shown as `***`.
    pub fn string(mut self, bytes: &[u8], secret: bool) -> Command {
        self.text(b" ");
        self.shown.push(' ');
        match quoted(bytes) {
            Some(q) => {
                self.text(&q);
                if secret {
                    self.shown.push_str("***");
                } else {
                    self.shown.push_str(&String::from_utf8_lossy(&q));
                }
            }
            None => {
                self.parts.push(Part::Literal(bytes.to_vec()));
                if secret {
                    self.shown.push_str("{***}");
                } else {
                    self.shown.push_str(&format!(
                        "{{{}}} {}",
                        bytes.len(),
                        String::from_utf8_lossy(bytes)
                    ));
                }
            }
        }
        self
    }

    /// Appends raw text (no space added).
    pub fn raw(mut self, text: &str) -> Command {
        self.text(text.as_bytes());
        self.shown.push_str(text);
        self
    }

    fn text(&mut self, bytes: &[u8]) {
        match self.parts.last_mut() {
            Some(Part::Text(t)) => t.extend_from_slice(bytes),
            _ => self.parts.push(Part::Text(bytes.to_vec())),
        }
    }
}

/// `bytes` as an IMAP quoted string (`"..."` with `\` before `"` and `\`), or `None` when a
/// quoted string cannot carry them (NUL, CR, LF or 8-bit bytes: RFC 3501 allows those only
/// in a literal).
pub fn quoted(bytes: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(bytes.len() + 2);
    out.push(b'"');
    for &b in bytes {
        match b {
            0 | b'\r' | b'\n' | 0x80..=0xff => return None,
            b'"' | b'\\' => out.extend_from_slice(&[b'\\', b]),
            _ => out.push(b),
        }
    }
    out.push(b'"');
    Some(out)
}

/// Longest UID set written into one command: servers limit a command line (Dovecot to
/// 64 KiB), so a long set is split over several commands.
pub const UID_SET_MAX: usize = 8 * 1024;

/// `uids` (in any order, repeats allowed) as UID sets with ranges (`1:3,7,9:12`), each at
/// most about [`UID_SET_MAX`] bytes long; empty when `uids` is.
pub fn uid_sets(uids: &[u32]) -> Vec<String> {
    let mut sorted = uids.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    let mut sets = Vec::new();
    let mut current = String::new();
    let mut i = 0;
    while i < sorted.len() {
        let first = sorted[i];
        let mut last = first;
        while i + 1 < sorted.len() && sorted[i + 1] == last + 1 {
            i += 1;
            last = sorted[i];
        }
        i += 1;
        let range = if first == last {
            first.to_string()
        } else {
            format!("{first}:{last}")
        };
        if !current.is_empty() && current.len() + range.len() + 1 > UID_SET_MAX {
            sets.push(std::mem::take(&mut current));
        }
        if !current.is_empty() {
            current.push(',');
        }
        current.push_str(&range);
    }
    if !current.is_empty() {
        sets.push(current);
    }
    sets
}
