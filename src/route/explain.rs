//! What the router decided for one copy and why, address by address: for logs and the
//! `mailferry route` dry run ([`Report`] is its text, and its `--format json`).

use std::fmt::{self, Write};

use crate::address::Address;

use super::{HEADER_CAP, Routing, SkipReason};

/// A routing decision with every address found and what became of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Explanation {
    /// The decision.
    pub routing: Routing,
    /// Every address the headers that were read named, in the order met, with its decision.
    pub found: Vec<Found>,
    /// Whether the message headers (To, Cc, ...) were read: not when envelope headers named
    /// the recipients, nor in single-user mode.
    pub message_headers_read: bool,
    /// How many bytes of header section were parsed (at most [`HEADER_CAP`]).
    pub header_bytes: usize,
    /// Whether the header section was longer than [`HEADER_CAP`]: what lies past the cap
    /// was not read.
    pub header_truncated: bool,
}

/// One address found in a header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    /// The header it was found in, as written in the message (`Received (for)` for the
    /// `for` clause of a `Received:` header).
    pub header: String,
    /// The address as the header gave it (unvalidated: quote it when printing).
    pub address: String,
    /// What became of it.
    pub decision: Decision,
}

/// What became of an address found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Made this recipient (itself, or what `rewrite` made of it).
    Taken(Address),
    /// This recipient, already taken from an earlier mention: not added again.
    Again(Address),
    /// Not made a recipient.
    Skipped(SkipReason),
}

/// An address the message named that did not become a recipient.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skipped {
    /// The header it was found in, as written in the message.
    pub header: String,
    /// The address as the header gave it (unvalidated: quote it when printing).
    pub address: String,
    /// Why it was skipped.
    pub why: SkipReason,
}

impl Explanation {
    /// The addresses found that did not become recipients, in the order met (the refused
    /// ones too, with [`SkipReason::Refused`]).
    pub fn skipped(&self) -> Vec<Skipped> {
        self.found
            .iter()
            .filter_map(|f| match &f.decision {
                Decision::Skipped(why) => Some(Skipped {
                    header: f.header.clone(),
                    address: f.address.clone(),
                    why: why.clone(),
                }),
                _ => None,
            })
            .collect()
    }
}

/// The `route` dry run's report for one account: [`fmt::Display`] is the text,
/// [`Report::json`] the same for scripts.
pub struct Report<'a> {
    /// The account whose rules were used.
    pub account: &'a str,
    /// What the router made of the message.
    pub explanation: &'a Explanation,
    /// The recipients ([`Address::dedup_key`]) that the state store says got this message
    /// already (`dedup_window`): they would not get it again.
    pub delivered_before: &'a [String],
}

impl fmt::Display for Report<'_> {
    /// ```text
    /// account: example-catchall
    /// MAIL FROM:<sender@remote.test>
    /// RCPT TO:<alice@example.com>  (envelope header X-Original-To)
    /// taken    "alice@example.com" in X-Original-To
    /// skipped  "mallory@example.com" in X-Original-To: envelope header below the first ...
    /// To, Cc, Bcc, Resent-*, Apparently-To not read: the envelope headers named the recipients
    /// ```
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let e = self.explanation;
        let r = &e.routing;
        writeln!(f, "account: {}", self.account)?;
        if let Some(looped) = &r.looped {
            writeln!(
                f,
                "LOOP: {looped}; it is quarantined (left upstream, the postmaster told), not delivered to the recipients below"
            )?;
        }
        let from = r.return_path.as_ref().map(Address::to_string);
        writeln!(f, "MAIL FROM:<{}>", from.unwrap_or_default())?;
        for rcpt in &r.recipients {
            writeln!(f, "RCPT TO:<{}>  ({})", rcpt.address, rcpt.reason)?;
        }
        for rcpt in r.recipients.iter().filter(|x| self.already(&x.address)) {
            writeln!(
                f,
                "already  {} got this message before (dedup_window): not sent again",
                rcpt.address
            )?;
        }
        for found in &e.found {
            let what = format!("{:?} in {}", found.address, found.header);
            match &found.decision {
                Decision::Taken(a) if a.as_str() == found.address.trim() => {
                    writeln!(f, "taken    {what}")?
                }
                Decision::Taken(a) => writeln!(f, "taken    {what}: as {a}")?,
                Decision::Again(a) => writeln!(f, "again    {what}: {a} is already a recipient")?,
                Decision::Skipped(why) => writeln!(f, "skipped  {what}: {why}")?,
            }
        }
        if !e.message_headers_read && r.recipients.iter().all(|x| !is_single_user(x)) {
            writeln!(
                f,
                "To, Cc, Bcc, Resent-*, Apparently-To not read: the envelope headers named the recipients"
            )?;
        }
        if r.hops > 0 && r.looped.is_none() {
            writeln!(f, "went through mailferry {} time(s) before", r.hops)?;
        }
        if e.header_truncated {
            writeln!(
                f,
                "header section longer than {HEADER_CAP} bytes: only the first {} were read",
                e.header_bytes
            )?;
        }
        Ok(())
    }
}

impl Report<'_> {
    fn already(&self, a: &Address) -> bool {
        self.delivered_before.contains(&a.dedup_key())
    }
}

fn is_single_user(r: &super::Routed) -> bool {
    r.reason == super::Reason::SingleUser
}

impl Report<'_> {
    /// The report as one JSON object: `account`, `mail_from` (null for `<>`), `recipients`
    /// (`address`, `reason`, `delivered_before`: true when the state store says it got the
    /// message already), `found` (`header`, `address`, `decision`: taken | again |
    /// skipped, `recipient` or `why`), `loop` (null or the reason), `hops`,
    /// `message_headers_read`, `header_truncated`.
    pub fn json(&self) -> String {
        let e = self.explanation;
        let r = &e.routing;
        let mut out = String::from("{");
        let _ = write!(out, "\"account\":{}", quote(self.account));
        let from = r.return_path.as_ref().map(|a| quote(a.as_str()));
        let _ = write!(
            out,
            ",\"mail_from\":{}",
            from.unwrap_or_else(|| "null".into())
        );
        out.push_str(",\"recipients\":[");
        for (i, rcpt) in r.recipients.iter().enumerate() {
            let sep = if i == 0 { "" } else { "," };
            let _ = write!(
                out,
                "{sep}{{\"address\":{},\"reason\":{},\"delivered_before\":{}}}",
                quote(rcpt.address.as_str()),
                quote(&rcpt.reason.to_string()),
                self.already(&rcpt.address)
            );
        }
        out.push_str("],\"found\":[");
        for (i, found) in e.found.iter().enumerate() {
            let sep = if i == 0 { "" } else { "," };
            let (decision, key, value) = match &found.decision {
                Decision::Taken(a) => ("taken", "recipient", a.to_string()),
                Decision::Again(a) => ("again", "recipient", a.to_string()),
                Decision::Skipped(why) => ("skipped", "why", why.to_string()),
            };
            let _ = write!(
                out,
                "{sep}{{\"header\":{},\"address\":{},\"decision\":\"{decision}\",\"{key}\":{}}}",
                quote(&found.header),
                quote(&found.address),
                quote(&value)
            );
        }
        let looped = r.looped.as_ref().map(|l| quote(&l.to_string()));
        let _ = write!(
            out,
            "],\"loop\":{},\"hops\":{},\"message_headers_read\":{},\"header_truncated\":{}}}",
            looped.unwrap_or_else(|| "null".into()),
            r.hops,
            e.message_headers_read,
            e.header_truncated
        );
        out
    }
}

/// A JSON string: `"`, `\` and every control character escaped; the rest as it is (JSON is
/// UTF-8).
fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_strings_escape_quotes_and_controls() {
        assert_eq!(quote("a\"b\\c\r\n\u{1}é"), "\"a\\\"b\\\\c\\r\\n\\u0001é\"");
        // A control character beyond U+FFFF is not possible (controls are below U+00A0).
        assert_eq!(quote("\u{85}"), "\"\\u0085\"");
    }
}
