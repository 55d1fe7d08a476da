//! The short messages mailferry writes to the postmaster itself: a message quarantined, a
//! message refused as a whole. Pure: text in, bytes out.

use std::time::SystemTime;

/// What the postmaster is told about one quarantined message.
pub struct QuarantineNotice<'a> {
    pub account: &'a str,
    pub uidl: &'a str,
    pub id: i64,
    pub reason: &'a str,
    /// A few header lines of the message (From, Subject, Date, Message-ID), when known.
    pub excerpt: &'a str,
}

/// The notice as a complete RFC 5322 message from `MAILER-DAEMON` at the gateway.
pub fn quarantine(notice: &QuarantineNotice<'_>, helo: &str, now: SystemTime) -> Vec<u8> {
    let date = crate::relay::rfc5322_date(now);
    let subject = one_line(&format!(
        "mailferry quarantined a message of account {}",
        notice.account
    ));
    let mut text = format!(
        "Date: {date}\r\nFrom: mailferry <MAILER-DAEMON@{helo}>\r\nSubject: {subject}\r\n\
         Auto-Submitted: auto-generated\r\nMIME-Version: 1.0\r\n\
         Content-Type: text/plain; charset=utf-8\r\n\r\n\
         mailferry gave up on a message in the mailbox of account {account} and left it\r\n\
         there, untouched. It will not be tried again on its own.\r\n\r\n\
         Upstream id (UIDL): {uidl}\r\nQuarantine id:      {id}\r\nReason:             {reason}\r\n",
        account = one_line(notice.account),
        uidl = one_line(notice.uidl),
        id = notice.id,
        reason = one_line(notice.reason),
    );
    if !notice.excerpt.is_empty() {
        text.push_str("\r\nIts headers:\r\n");
        for line in notice.excerpt.lines() {
            text.push_str("  ");
            text.push_str(&one_line(line));
            text.push_str("\r\n");
        }
    }
    text.push_str(&format!(
        "\r\nTo try it again:   mailferry state retry {id} --config FILE\r\n\
         To drop it from the list (it stays upstream): mailferry state forget {id} --config FILE\r\n",
        id = notice.id
    ));
    text.into_bytes()
}

/// `X-Mailferry-Rerouted:` for a message refused as a whole, put above the message sent to
/// the postmaster instead.
pub fn refused_whole(reply: &str) -> String {
    format!(
        "X-Mailferry-Rerouted: the whole message was refused by the internal server: {}\r\n",
        one_line(reply)
    )
}

/// `X-Mailferry-Rerouted:` for one recipient refused for good.
pub fn refused_recipient(recipient: &str, reply: &str) -> String {
    format!(
        "X-Mailferry-Rerouted: for <{}> refused by the internal server: {}\r\n",
        one_line(recipient),
        one_line(reply)
    )
}

/// Control characters (line breaks above all) become spaces: the text goes into one line.
fn one_line(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

/// The From, Subject, Date and Message-ID lines of a raw message's header section, for a
/// notice (at most a few hundred bytes, lossy UTF-8).
pub fn excerpt(raw: &[u8]) -> String {
    let head = raw.get(..raw.len().min(64 * 1024)).unwrap_or_default();
    let text = String::from_utf8_lossy(head);
    let mut out = String::new();
    for line in text.lines() {
        if line.is_empty() {
            break;
        }
        let lower = line.to_ascii_lowercase();
        if ["from:", "subject:", "date:", "message-id:"]
            .iter()
            .any(|h| lower.starts_with(h))
        {
            let line: String = line.chars().take(200).collect();
            out.push_str(&line);
            out.push('\n');
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_notice_cannot_be_given_extra_headers_by_the_reason_or_the_uidl() {
        let n = QuarantineNotice {
            account: "acct",
            uidl: "u1\r\nBcc: evil@x.com",
            id: 7,
            reason: "550 no\r\nTo: evil@x.com",
            excerpt: "Subject: hi\nFrom: a@b.c\n",
        };
        let text = String::from_utf8(quarantine(&n, "gw.test", SystemTime::UNIX_EPOCH)).unwrap();
        let head = text.split("\r\n\r\n").next().unwrap();
        assert!(!head.contains("Bcc:") && !head.contains("To:"), "{head}");
        assert!(text.contains("state retry 7"));
        assert!(text.contains("Subject: hi"));
        assert!(!refused_whole("554 no\r\nBcc: x").contains("\r\nBcc"));
    }

    #[test]
    fn excerpt_takes_only_the_named_headers_of_the_header_section() {
        let raw = b"Received: x\r\nSubject: s\r\nFrom: f@x\r\n\r\nSubject: body\r\n";
        assert_eq!(excerpt(raw), "Subject: s\nFrom: f@x\n");
    }
}
