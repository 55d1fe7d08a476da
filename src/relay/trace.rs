//! mailferry's `Received:` trace header.

use std::time::{SystemTime, UNIX_EPOCH};

use crate::address::Address;
use crate::config::Protocol;

/// Lines are folded to this many characters where the values allow (RFC 5322 2.1.1 SHOULD).
const FOLD_AT: usize = 78;

/// mailferry's trace header, prepended to every relayed copy (loop protection counts these):
/// `Received: from {upstream_host} by {by} (mailferry) with {POP3|IMAP} id {id}` (the
/// kind's [`trace_word`](crate::fetch::kind::Facts::trace_word)) then
/// `\r\n\tfor <{rcpt}>; {RFC 5322 date}\r\n` (no `for` clause when there are several
/// recipients). The host names and the id are reduced to characters that cannot break the
/// header (anything else becomes `_`); the result is one folded header field ending in CRLF.
pub fn received_header(
    by: &str,
    upstream_host: &str,
    protocol: Protocol,
    id: &str,
    recipients: &[Address],
    now: SystemTime,
) -> String {
    let with = protocol.kind().facts().trace_word;
    let clauses = [
        format!("from {}", host_token(upstream_host)),
        format!("by {} (mailferry)", host_token(by)),
        format!("with {with}"),
        format!("id {}", id_token(id)),
    ];
    let mut out = String::from("Received:");
    let mut column = out.len();
    for clause in &clauses {
        // Fold before a clause that would run past the limit (never before the first).
        if column > "Received:".len() && column + 1 + clause.len() > FOLD_AT {
            out.push_str("\r\n\t");
            column = 1;
        } else {
            out.push(' ');
            column += 1;
        }
        out.push_str(clause);
        column += clause.len();
    }
    let date = rfc5322_date(now);
    match recipients {
        [one] => out.push_str(&format!("\r\n\tfor <{one}>; {date}\r\n")),
        _ => out.push_str(&format!(";\r\n\t{date}\r\n")),
    }
    out
}

/// A host name or address literal: letters, digits and `.-_:[]`; at most 255 characters.
fn host_token(s: &str) -> String {
    token(s, 255, |c| {
        c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | ':' | '[' | ']')
    })
}

/// An RFC 5322 atom (dots allowed); at most 128 characters.
fn id_token(s: &str) -> String {
    token(s, 128, |c| {
        c.is_ascii_alphanumeric() || "!#$%&'*+-/=?^_`{|}~.".contains(c)
    })
}

fn token(s: &str, max: usize, allowed: impl Fn(char) -> bool) -> String {
    let t: String = s
        .chars()
        .take(max)
        .map(|c| if allowed(c) { c } else { '_' })
        .collect();
    if t.is_empty() {
        "unknown".to_owned()
    } else {
        t
    }
}

/// `Thu, 29 Feb 2024 12:34:56 +0000` (UTC); a time before 1970 is written as 1970.
pub fn rfc5322_date(t: SystemTime) -> String {
    const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let secs = t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (year, month, day) = civil_from_days(days);
    format!(
        "{}, {} {} {} {:02}:{:02}:{:02} +0000",
        DAYS[(days % 7) as usize],
        day,
        MONTHS[(month - 1) as usize],
        year,
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Days since 1970-01-01 to (year, month 1..=12, day 1..=31), proleptic Gregorian
/// (H. Hinnant's `civil_from_days`).
pub(crate) fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;
    use mail_parser::{Host, MessageParser};
    use std::time::Duration;

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    #[test]
    fn dates_are_rfc5322() {
        assert_eq!(rfc5322_date(at(0)), "Thu, 1 Jan 1970 00:00:00 +0000");
        // 2024-02-29 12:34:56 UTC, a leap day.
        assert_eq!(
            rfc5322_date(at(1_709_210_096)),
            "Thu, 29 Feb 2024 12:34:56 +0000"
        );
        // 2000-03-01 (after a leap day in a century year divisible by 400).
        assert_eq!(
            rfc5322_date(at(951_868_800)),
            "Wed, 1 Mar 2000 00:00:00 +0000"
        );
        assert_eq!(
            rfc5322_date(at(1_767_225_599)),
            "Wed, 31 Dec 2025 23:59:59 +0000"
        );
    }

    fn parse_received(header: &str) -> (mail_parser::Received<'static>, String) {
        let raw = format!("{header}Subject: x\r\n\r\nbody\r\n");
        let msg = MessageParser::default().parse(raw.as_bytes()).unwrap();
        let received = msg
            .received()
            .expect("a Received header")
            .clone()
            .into_owned();
        (received, msg.subject().unwrap_or_default().to_owned())
    }

    #[test]
    fn one_recipient_header_parses_with_for_and_date() {
        let rcpt = Address::parse("bob@example.com").unwrap();
        let now = at(1_709_210_096);
        let h = received_header(
            "gw.corp.local",
            "pop.isp.net",
            Protocol::Pop3,
            "42.abc",
            &[rcpt],
            now,
        );
        assert_eq!(
            h,
            "Received: from pop.isp.net by gw.corp.local (mailferry) with POP3 id 42.abc\r\n\
             \tfor <bob@example.com>; Thu, 29 Feb 2024 12:34:56 +0000\r\n"
        );
        let (r, subject) = parse_received(&h);
        assert_eq!(subject, "x", "the header ends where it should");
        assert_eq!(r.from, Some(Host::Name("pop.isp.net".into())));
        assert_eq!(r.by, Some(Host::Name("gw.corp.local".into())));
        assert_eq!(r.with, Some(mail_parser::Protocol::POP3));
        assert_eq!(r.id.as_deref(), Some("42.abc"));
        assert_eq!(r.for_.as_deref(), Some("bob@example.com"));
        assert_eq!(r.date.map(|d| d.to_timestamp()), Some(1_709_210_096));
    }

    #[test]
    fn several_recipients_have_no_for_clause() {
        let rcpts = [
            Address::parse("a@example.com").unwrap(),
            Address::parse("b@example.com").unwrap(),
        ];
        let h = received_header("gw", "imap.example.net", Protocol::Imap, "7", &rcpts, at(0));
        assert!(!h.contains("for "), "{h}");
        let (r, subject) = parse_received(&h);
        assert_eq!(subject, "x");
        assert_eq!(r.with, Some(mail_parser::Protocol::IMAP));
        assert_eq!(r.for_, None);
        assert_eq!(r.date.map(|d| d.to_timestamp()), Some(0));
    }

    #[test]
    fn hostile_values_cannot_break_the_header_and_long_ones_fold() {
        let rcpt = Address::parse("bob@example.com").unwrap();
        let id = format!("a\r\nX-Evil: 1 (comment) {}", "x".repeat(300));
        let by = "b".repeat(70);
        let h = received_header(&by, "pop\r\n.example", Protocol::Pop3, &id, &[rcpt], at(0));
        assert!(h.ends_with("\r\n"));
        let lines: Vec<&str> = h.strip_suffix("\r\n").unwrap().split("\r\n").collect();
        assert!(lines[0].starts_with("Received: from pop__.example"));
        for line in &lines[1..] {
            assert!(line.starts_with('\t'), "continuation line {line:?}");
        }
        assert!(
            lines
                .iter()
                .all(|l| !l.contains('\r') && !l.contains('\n') && l.len() <= 998)
        );
        assert!(!h.contains("X-Evil: 1 "), "{h}");
        let (r, subject) = parse_received(&h);
        assert_eq!(subject, "x");
        assert_eq!(r.for_.as_deref(), Some("bob@example.com"));
        assert_eq!(r.date.map(|d| d.to_timestamp()), Some(0));
    }
}
