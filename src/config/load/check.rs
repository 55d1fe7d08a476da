//! The generic checker: one mapping read by its section's reader, whose `get` calls declare
//! the keys allowed there (any other key is unknown), and one value checked as a string,
//! number, duration, size, host, port, path, address or choice; each problem is recorded
//! with its line and column and the walk goes on.

use std::cell::RefCell;

use super::*;

/// The entries of one mapping, already checked for duplicate keys. The keys a section
/// allows are the ones its reader asks for (`get`, `has`, `entry`): each key is declared once,
/// where it is read; an entry never asked for is an unknown key.
pub(super) struct Section<'n> {
    pub(super) node: &'n Node,
    /// The key path in messages: `relay`, `accounts[example-catchall]`, or empty at the top.
    pub(super) path: String,
    /// Each key as written, its node and its value.
    entries: Vec<(&'n str, &'n Node, &'n Node)>,
    /// The keys asked for, in the order first asked: the allowed keys.
    asked: RefCell<Vec<&'static str>>,
}

impl<'n> Section<'n> {
    /// The entry of `key` (its value may be null); declares `key` allowed here.
    pub(super) fn entry(&self, key: &'static str) -> Option<&'n Node> {
        let mut asked = self.asked.borrow_mut();
        if !asked.contains(&key) {
            asked.push(key);
        }
        self.entries
            .iter()
            .find(|(k, _, _)| *k == key)
            .map(|(_, _, v)| *v)
    }

    /// The value of `key`; `None` when it is absent or written as null.
    pub(super) fn get(&self, key: &'static str) -> Option<&'n Node> {
        self.entry(key).filter(|v| !v.is_null())
    }

    /// Whether `key` was written at all, even without a value.
    pub(super) fn has(&self, key: &'static str) -> bool {
        self.entry(key).is_some()
    }

    /// `relay.port`-style name of `key` for messages.
    pub(super) fn name(&self, key: &str) -> String {
        if self.path.is_empty() {
            key.to_string()
        } else {
            format!("{}.{key}", self.path)
        }
    }
}

pub(super) fn scalar(node: &Node) -> Option<&str> {
    match &node.kind {
        Kind::Scalar { text, .. } if !node.is_null() => Some(text),
        _ => None,
    }
}

/// The units of a duration, for messages: a whole number and a unit (`30s`, `5m`, `1h`, `14d`).
pub(super) const DURATION_UNITS: &str =
    "s (seconds), m (minutes), h (hours), d (days), e.g. 30s, 5m, 1h, 14d";

/// The units of a size, for messages.
pub(super) const SIZE_UNITS: &str =
    "B, KB, MB, GB (powers of 1000), KiB, MiB, GiB (powers of 1024)";

/// `50MB`, `10MiB`, `500KB`, `1048576` (bytes) as a number of bytes; units are not
/// case-sensitive and may follow a space.
pub(super) fn parse_size(s: &str) -> Result<u64, String> {
    let digits = s.bytes().take_while(u8::is_ascii_digit).count();
    let (number, unit) = s.split_at(digits);
    if number.is_empty() {
        return Err(format!(
            "`{s}` is not a size; write a whole number of bytes, or with a unit: {SIZE_UNITS}"
        ));
    }
    let scale: u64 = match unit.trim_start().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        "kib" => 1 << 10,
        "mib" => 1 << 20,
        "gib" => 1 << 30,
        _ => {
            return Err(format!(
                "`{s}` has an unknown unit `{}`; units: {SIZE_UNITS}",
                unit.trim_start()
            ));
        }
    };
    number
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(scale))
        .ok_or_else(|| format!("`{s}` is too large"))
}

pub(super) fn parse_duration(s: &str) -> Result<Duration, String> {
    let digits = s.bytes().take_while(u8::is_ascii_digit).count();
    let (number, unit) = s.split_at(digits);
    if number.is_empty() {
        return Err(format!(
            "`{s}` is not a duration; write a whole number and a unit: {DURATION_UNITS}"
        ));
    }
    let scale = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3_600,
        "d" => 86_400,
        "" => {
            return Err(format!("`{s}` has no unit; units: {DURATION_UNITS}"));
        }
        _ => {
            return Err(format!(
                "`{s}` has an unknown unit `{unit}`; units: {DURATION_UNITS}"
            ));
        }
    };
    number
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(scale))
        .map(Duration::from_secs)
        .ok_or_else(|| format!("`{s}` is too long"))
}

impl Checker<'_> {
    pub(super) fn push(&mut self, line: usize, column: usize, message: impl Into<String>) {
        self.errors.push(ConfigError {
            file: self.file.to_string(),
            line,
            column,
            message: message.into(),
        });
    }

    /// `name`, written at `node`: what the resolve step's errors point at.
    pub(super) fn key_at(&self, node: &Node, name: &str) -> KeyAt {
        KeyAt {
            name: name.to_string(),
            line: node.line,
            column: node.column,
        }
    }

    pub(super) fn err(&mut self, node: &Node, message: impl Into<String>) {
        // A node that reaches the syntax error may have been cut short by it.
        if self.cut.is_some_and(|cut| node.end_line >= cut) {
            return;
        }
        self.push(node.line, node.column, message);
    }

    /// Reads the mapping `node` with `read`, then reports every key `read` did not ask for
    /// as unknown, naming the ones it asked for. A key given twice is reported here.
    pub(super) fn section<'n, T>(
        &mut self,
        node: &'n Node,
        path: &str,
        read: impl FnOnce(&mut Self, &Section<'n>) -> Option<T>,
    ) -> Option<T> {
        let what = if path.is_empty() {
            "the configuration"
        } else {
            path
        };
        let Kind::Map(entries) = &node.kind else {
            self.err(
                node,
                format!("{what}: expected a mapping, found {}", node.describe()),
            );
            return None;
        };
        let mut section = Section {
            node,
            path: path.to_string(),
            entries: Vec::new(),
            asked: RefCell::new(Vec::new()),
        };
        for (key, value) in entries {
            let Some(text) = scalar(key) else {
                self.err(
                    key,
                    format!("{what}: keys must be names, found {}", key.describe()),
                );
                continue;
            };
            let first = section.entries.iter().find(|(k, _, _)| *k == text);
            if let Some((_, first, _)) = first {
                let line = first.line;
                self.err(
                    key,
                    format!(
                        "duplicate key `{}` (first given at line {line})",
                        section.name(text)
                    ),
                );
                continue;
            }
            section.entries.push((text, key, value));
        }
        let value = read(self, &section);
        let asked = section.asked.borrow();
        for key in asked.iter() {
            if !self.keys.contains(key) {
                self.keys.push(key);
            }
        }
        let place = if path.is_empty() {
            String::new()
        } else {
            format!(" in {path}")
        };
        for (text, key, _) in &section.entries {
            if !asked.contains(text) {
                self.err(
                    key,
                    format!(
                        "unknown key `{text}`{place}; allowed keys: {}",
                        asked.join(", ")
                    ),
                );
            }
        }
        value
    }

    /// The value of a required key; reports it when absent or empty.
    pub(super) fn require<'n>(&mut self, s: &Section<'n>, key: &'static str) -> Option<&'n Node> {
        let value = s.get(key);
        if value.is_none() {
            match s.entry(key) {
                Some(v) => self.err(v, format!("{} has no value", s.name(key))),
                None if self.cut.is_none() => {
                    let what = if s.path.is_empty() {
                        String::new()
                    } else {
                        format!(" in {}", s.path)
                    };
                    self.err(s.node, format!("missing required key `{key}`{what}"));
                }
                None => {}
            }
        }
        value
    }

    /// A string value (any scalar but null).
    pub(super) fn string(&mut self, node: &Node, name: &str) -> Option<String> {
        match scalar(node) {
            Some(text) => Some(text.to_string()),
            None => {
                self.err(
                    node,
                    format!("{name}: expected a string, found {}", node.describe()),
                );
                None
            }
        }
    }

    /// A string that may not be empty and may not hold a line break or NUL (it goes on the
    /// wire in a protocol command).
    pub(super) fn text(&mut self, node: &Node, name: &str) -> Option<String> {
        let s = self.string(node, name)?;
        if s.is_empty() {
            self.err(node, format!("{name} is empty"));
            return None;
        }
        if s.contains(['\r', '\n', '\0']) {
            self.err(node, format!("{name} contains a line break or NUL"));
            return None;
        }
        Some(s)
    }

    pub(super) fn path(&mut self, node: &Node, name: &str) -> Option<PathBuf> {
        let s = self.text(node, name)?;
        Some(self.dir.join(s))
    }

    /// A host name or IP address; host names are kept in lower-case ASCII (IDN in punycode).
    pub(super) fn host(&mut self, node: &Node, name: &str) -> Option<String> {
        let s = self.text(node, name)?;
        if s.parse::<IpAddr>().is_ok() {
            return Some(s);
        }
        match normalize_domain(&s) {
            Ok(host) => Some(host),
            Err(_) => {
                self.err(
                    node,
                    format!("{name}: `{s}` is not a host name or IP address"),
                );
                None
            }
        }
    }

    /// A whole number written without quotes, checked against `min..=max`.
    pub(super) fn integer(&mut self, node: &Node, name: &str, min: u64, max: u64) -> Option<u64> {
        let text = match &node.kind {
            Kind::Scalar { text, plain: true } if !node.is_null() => text,
            _ => {
                self.err(
                    node,
                    format!("{name}: expected a whole number, found {}", node.describe()),
                );
                return None;
            }
        };
        let Ok(n) = text.parse::<i128>() else {
            self.err(
                node,
                format!("{name}: expected a whole number, found `{text}`"),
            );
            return None;
        };
        if n < i128::from(min) || n > i128::from(max) {
            self.err(node, format!("{name}: {n} is outside {min}..={max}"));
            return None;
        }
        u64::try_from(n).ok()
    }

    pub(super) fn port(&mut self, node: &Node, name: &str) -> Option<u16> {
        let n = self.integer(node, name, 1, 65_535)?;
        u16::try_from(n).ok()
    }

    /// One of a fixed set of words.
    pub(super) fn choice<T: Copy>(
        &mut self,
        node: &Node,
        name: &str,
        allowed: &[(&str, T)],
    ) -> Option<T> {
        let s = self.string(node, name)?;
        match allowed.iter().find(|(word, _)| *word == s) {
            Some((_, value)) => Some(*value),
            None => {
                let words: Vec<&str> = allowed.iter().map(|(w, _)| *w).collect();
                self.err(
                    node,
                    format!(
                        "{name}: `{s}` is not allowed; allowed values: {}",
                        words.join(" | ")
                    ),
                );
                None
            }
        }
    }

    /// A duration checked against `min..=max` seconds.
    pub(super) fn duration(
        &mut self,
        node: &Node,
        name: &str,
        (min, max): (u64, u64),
    ) -> Option<Duration> {
        let s = self.string(node, name)?;
        let d = match parse_duration(&s) {
            Ok(d) => d,
            Err(why) => {
                self.err(node, format!("{name}: {why}"));
                return None;
            }
        };
        if d.as_secs() < min || d.as_secs() > max {
            self.err(node, format!("{name}: {s} is outside {min}s..={max}s"));
            return None;
        }
        Some(d)
    }

    /// A size in bytes (`50MB`, `10MiB`, `500KB`, `1048576`) checked against `min..=max`.
    pub(super) fn size(&mut self, node: &Node, name: &str, (min, max): (u64, u64)) -> Option<u64> {
        let s = self.string(node, name)?;
        let n = match parse_size(&s) {
            Ok(n) => n,
            Err(why) => {
                self.err(node, format!("{name}: {why}"));
                return None;
            }
        };
        if n < min || n > max {
            self.err(
                node,
                format!("{name}: {s} is outside {min}..={max} bytes (1KiB..=1GiB)"),
            );
            return None;
        }
        Some(n)
    }

    pub(super) fn address(&mut self, node: &Node, name: &str) -> Option<Address> {
        let s = self.string(node, name)?;
        match Address::parse(&s) {
            Ok(a) => Some(a),
            Err(e) => {
                self.err(node, format!("{name}: `{s}` is not a usable address: {e}"));
                None
            }
        }
    }

    pub(super) fn list<'n>(&mut self, node: &'n Node, name: &str) -> Option<&'n [Node]> {
        match &node.kind {
            Kind::Seq(items) => Some(items),
            _ => {
                self.err(
                    node,
                    format!("{name}: expected a list, found {}", node.describe()),
                );
                None
            }
        }
    }
}
