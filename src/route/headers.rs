//! Reading the header block: which fields exist, in which order (mail-parser finds them and
//! their folding), and the addresses they name (`addrlist.rs` reads those from the raw value),
//! as strings that [`check`] validates.

use mail_parser::{Header, HeaderName, MessageParser};

use crate::address::Address;

use super::SkipReason;

/// The message headers read when no envelope header decides (design.md, Routing step 2),
/// with the name a [`super::Reason::Header`] carries.
pub(super) const MESSAGE_HEADERS: [(&str, HeaderName<'static>); 7] = [
    ("To", HeaderName::To),
    ("Cc", HeaderName::Cc),
    ("Bcc", HeaderName::Bcc),
    ("Resent-To", HeaderName::ResentTo),
    ("Resent-Cc", HeaderName::ResentCc),
    ("Resent-Bcc", HeaderName::ResentBcc),
    ("Apparently-To", HeaderName::ApparentlyTo),
];

/// The mail-parser name of a configured header name; `None` for a name no header can have.
pub(super) fn header_name(configured: &str) -> Option<HeaderName<'static>> {
    HeaderName::parse(configured.trim().to_string())
}

/// A parser that finds the fields routing reads and keeps them raw (their addresses are read
/// by `addrlist.rs`), decodes only `Message-ID` and skips the rest (cheap: a 200-line
/// `Received` chain is not decoded).
pub(super) fn parser(envelope_headers: &[String]) -> MessageParser {
    let mut parser = MessageParser::new()
        .default_header_ignore()
        .header_raw(HeaderName::ReturnPath)
        // For dedup_window: the same message in another copy or under another key.
        .header_id(HeaderName::MessageId)
        .header_raw(HeaderName::Sender)
        .header_raw(HeaderName::From);
    for (_, name) in MESSAGE_HEADERS {
        parser = parser.header_raw(name);
    }
    let envelope = envelope_headers
        .iter()
        .filter(|n| !n.trim().eq_ignore_ascii_case(super::RECEIVED_FOR));
    for name in envelope.filter_map(|n| header_name(n)) {
        parser = parser.header_raw(name);
    }
    parser
}

/// The raw value of a field (after the colon, folding kept); empty if the offsets are off.
pub(super) fn raw_value<'m>(header: &Header<'_>, message: &'m [u8]) -> &'m [u8] {
    message
        .get(header.offset_start as usize..header.offset_end as usize)
        .unwrap_or_default()
}

/// Every address a field names (read from its raw value, see `addrlist.rs`), groups
/// flattened; an obsolete route stays attached (`@hop:user@domain`), so that [`check`]
/// refuses it. `message` is the whole message the field's offsets point into.
pub(super) fn addresses(header: &Header<'_>, message: &[u8]) -> Vec<String> {
    let raw = String::from_utf8_lossy(raw_value(header, message));
    super::addrlist::addresses(&raw)
}

/// `@route1,@route2:user@domain` → `user@domain` (RFC 5322 obs-route; mail-parser keeps it).
fn strip_route(addr: &str) -> &str {
    match addr.strip_prefix('@').and_then(|_| addr.rfind(':')) {
        Some(colon) => addr[colon + 1..].trim(),
        None => addr,
    }
}

/// What a `Return-Path:` field says.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum ReturnPath {
    /// `<>`: the message is itself a bounce; it must stay one.
    Null,
    /// A usable address.
    Address(Address),
    /// Something that is neither.
    Unusable,
}

/// Reads a raw `Return-Path:` value: `<addr>`, `<>`, `<@route:addr>`, or a bare address.
pub(super) fn return_path(raw: &str) -> ReturnPath {
    let raw = raw.trim();
    let inner = match raw.find('<') {
        Some(open) => match raw[open + 1..].find('>') {
            Some(len) => &raw[open + 1..open + 1 + len],
            None => return ReturnPath::Unusable,
        },
        None => raw,
    };
    let inner = inner.trim();
    if inner.is_empty() {
        return if raw.starts_with('<') {
            ReturnPath::Null
        } else {
            ReturnPath::Unusable
        };
    }
    match check(strip_route(inner)) {
        Ok(address) => ReturnPath::Address(address),
        Err(_) => ReturnPath::Unusable,
    }
}

/// Validates an address taken from a header. mail-parser hands back quoted local parts
/// unquoted (`"john doe"@x` comes back as `john doe@x`), so everything before the last `@` is
/// taken as the unquoted local part, and [`Address`] quotes it on the wire when it is not a
/// Dot-string. `a@b@x` is therefore refused for its `@`, whichever way it was written.
pub(super) fn check(addr: &str) -> Result<Address, SkipReason> {
    let addr = addr.trim();
    // U+FFFD is what lossy decoding made of invalid UTF-8: not the address that was written.
    if addr.contains('\u{FFFD}') {
        return Err(SkipReason::Undecodable);
    }
    if addr.starts_with('"') || (addr.starts_with('@') && addr.contains(':')) {
        return Ok(Address::parse(addr)?);
    }
    match addr.rsplit_once('@') {
        Some((local, domain)) => Ok(Address::new(local, domain)?),
        None => Ok(Address::parse(addr)?),
    }
}

/// The header section of `message` (up to the first empty line, which is left out), cut to
/// at most `cap` bytes at a line end; true when it was cut. A message whose first line is not
/// a header field has none (the relay sends all of it as body): nothing in it is read.
pub(super) fn header_section(message: &[u8], cap: usize) -> (&[u8], bool) {
    if !crate::relay::begins_with_header_section(message) {
        return (&[], false);
    }
    let window = &message[..message.len().min(cap)];
    let mut start = 0;
    while let Some(len) = window[start..].iter().position(|&b| b == b'\n') {
        let line = &window[start..start + len];
        if line.is_empty() || line == b"\r" {
            return (&message[..start], false);
        }
        start += len + 1;
    }
    if message.len() <= cap {
        (message, false)
    } else {
        (&message[..start], true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::address::AddressError;

    #[test]
    fn obsolete_route_is_stripped() {
        assert_eq!(
            strip_route("@a.net,@b.net:user@example.com"),
            "user@example.com"
        );
        assert_eq!(strip_route("user@example.com"), "user@example.com");
    }

    #[test]
    fn return_path_forms() {
        let a = |s: &str| ReturnPath::Address(Address::parse(s).unwrap());
        assert_eq!(return_path(" <>"), ReturnPath::Null);
        assert_eq!(return_path("< >"), ReturnPath::Null);
        assert_eq!(return_path("<bob@example.net>"), a("bob@example.net"));
        assert_eq!(return_path("bob@example.net"), a("bob@example.net"));
        assert_eq!(
            return_path("<@relay.net:bob@example.net>"),
            a("bob@example.net")
        );
        assert_eq!(return_path(""), ReturnPath::Unusable);
        assert_eq!(return_path("<bob@example.net"), ReturnPath::Unusable);
        assert_eq!(return_path("<no address here>"), ReturnPath::Unusable);
    }

    #[test]
    fn unquoted_local_parts_are_quoted_again_and_routes_refused() {
        let ok = |s: &str| check(s).map(|a| a.as_str().to_string());
        assert_eq!(
            ok("john doe@example.com"),
            Ok("\"john doe\"@example.com".into())
        );
        assert_eq!(ok("a,b@example.com"), Ok("\"a,b\"@example.com".into()));
        assert_eq!(
            ok("o'brien+tag@example.com"),
            Ok("o'brien+tag@example.com".into())
        );
        assert_eq!(ok("jörg@example.com"), Ok("jörg@example.com".into()));
        let refused = |s: &str, e: AddressError| assert_eq!(check(s), Err(SkipReason::Invalid(e)));
        refused("a@b@example.com", AddressError::SourceRoute('@'));
        refused("evil%x.com@example.com", AddressError::SourceRoute('%'));
        refused("x.com!evil@example.com", AddressError::SourceRoute('!'));
        refused("@a.com,@b.com:evil@x.com", AddressError::RouteSyntax);
        refused("\"evil@x.com\"@example.com", AddressError::SourceRoute('@'));
        assert_eq!(
            check("b\u{FFFD}b@example.com"),
            Err(SkipReason::Undecodable)
        );
    }

    #[test]
    fn header_section_ends_at_the_first_empty_line_and_at_the_cap() {
        assert_eq!(
            header_section(b"To: a\r\n\r\nbody", 100),
            (&b"To: a\r\n"[..], false)
        );
        assert_eq!(
            header_section(b"To: a\n\nTo: b\n", 100),
            (&b"To: a\n"[..], false)
        );
        assert_eq!(header_section(b"\r\nTo: a\r\n", 100), (&b""[..], false));
        assert_eq!(
            header_section(b"To: a\r\nCc: b", 100),
            (&b"To: a\r\nCc: b"[..], false)
        );
        // Over the cap: cut after the last whole line inside it.
        assert_eq!(
            header_section(b"To: a\r\nCc: bbbbbb\r\n", 12),
            (&b"To: a\r\n"[..], true)
        );
        assert_eq!(header_section(b"To: aaaaaaaaaaaa\r\n", 8), (&b""[..], true));
        // No header section at all: the text is body, nothing is a header.
        assert_eq!(
            header_section(b"Hello,\nTo: bob@example.com\n\nBye\n", 100),
            (&b""[..], false)
        );
    }
}
