//! Value types shared by every stage: an envelope address that is safe to put on an SMTP
//! command line, and an accepted-domain pattern. Both validate on construction, so a value
//! of either type is always usable as it is.

use std::fmt;

/// Why a string is not a usable envelope address or domain.
#[derive(Debug, Clone, PartialEq, Eq, Hash, thiserror::Error)]
pub enum AddressError {
    /// Nothing at all.
    #[error("empty address")]
    Empty,
    /// No `@` at all.
    #[error("address has no '@'")]
    NoAt,
    /// Nothing before the `@`.
    #[error("address has an empty local part")]
    EmptyLocal,
    /// Nothing after the `@`.
    #[error("address has an empty domain")]
    EmptyDomain,
    /// A character that could break the SMTP command line or its syntax.
    #[error(
        "address contains a forbidden character (CR, LF, NUL, '<', '>', '\"', '\\', tab or control)"
    )]
    ForbiddenChar,
    /// Longer than an address can be (RFC 5321: 64 + 1 + 255).
    #[error("address is longer than 320 characters")]
    TooLong,
    /// The domain is not a host name (nor an IDN that maps to one).
    #[error("domain {0:?} is not a valid domain name")]
    BadDomain(String),
    /// `%`, `!` or `@` in the local part: a mail server may relay it onward to another host.
    #[error("the local part contains {0:?}, which a mail server may take as a route onward")]
    SourceRoute(char),
    /// RFC 5321 route syntax, `@hop1,@hop2:user@domain`.
    #[error("the address carries an RFC 5321 source route (@host,...:)")]
    RouteSyntax,
    /// A local part that is not a Dot-string and is not quoted either.
    #[error("the local part needs quoting and is not quoted")]
    NeedsQuoting,
    /// A quoted local part without its closing quote, or text between it and the `@`.
    #[error("the quoted local part is malformed")]
    BadQuoting,
}

/// An envelope address (`local@domain`), checked so that it can never inject SMTP syntax nor
/// make the internal server relay it elsewhere: no CR, LF, NUL, `<`, `>`, `"`, `\`, tab or
/// other control character, and no `%`, `!` or `@` in the local part (source routes). The
/// domain is kept in lower-case ASCII (IDN domains in punycode), so two spellings of one
/// domain compare equal. A local part that is not an RFC 5321 Dot-string (a space, `..`) is
/// kept and quoted in [`Address::as_str`], the form that goes on the wire.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Address {
    /// The SMTP form: the local part quoted when it is not a Dot-string.
    full: String,
    /// Where the `@` before the domain is in `full`.
    at: usize,
    /// The local part unquoted.
    local: String,
}

impl Address {
    /// Parses and validates `local@domain` or `"quoted local"@domain`; the domain is
    /// lower-cased and IDN-encoded.
    pub fn parse(s: &str) -> Result<Address, AddressError> {
        let s = s.trim();
        if s.is_empty() {
            return Err(AddressError::Empty);
        }
        if s.len() > 320 {
            return Err(AddressError::TooLong);
        }
        if s.starts_with('@') && s.contains(':') {
            return Err(AddressError::RouteSyntax);
        }
        let (local, domain) = match s.strip_prefix('"') {
            Some(rest) => {
                let close = rest.find('"').ok_or(AddressError::BadQuoting)?;
                let domain = rest[close + 1..]
                    .strip_prefix('@')
                    .ok_or(AddressError::BadQuoting)?;
                (&rest[..close], domain)
            }
            None => {
                let at = s.rfind('@').ok_or(AddressError::NoAt)?;
                let local = &s[..at];
                check_local(local)?;
                if !is_dot_string(local) {
                    return Err(AddressError::NeedsQuoting);
                }
                (local, &s[at + 1..])
            }
        };
        Address::new(local, domain)
    }

    /// An address from its unquoted local part and its domain (as a header parser gives
    /// them for `"john doe"@example.com`): validated as [`Address::parse`] does.
    pub fn new(local: &str, domain: &str) -> Result<Address, AddressError> {
        check_local(local)?;
        if domain.trim().is_empty() {
            return Err(AddressError::EmptyDomain);
        }
        if domain.chars().any(forbidden) {
            return Err(AddressError::ForbiddenChar);
        }
        let domain = normalize_domain(domain.trim())?;
        let full = if is_dot_string(local) {
            format!("{local}@{domain}")
        } else {
            format!("\"{local}\"@{domain}")
        };
        if full.len() > 320 {
            return Err(AddressError::TooLong);
        }
        Ok(Address {
            at: full.len() - domain.len() - 1,
            full,
            local: local.to_string(),
        })
    }

    /// The whole address as it goes on the wire, without angle brackets: `local@domain`,
    /// or `"local part"@domain` when the local part is not a Dot-string.
    pub fn as_str(&self) -> &str {
        &self.full
    }

    /// The local part, unquoted.
    pub fn local_part(&self) -> &str {
        &self.local
    }

    /// The local part as it goes on the wire (quoted when it must be).
    pub fn smtp_local_part(&self) -> &str {
        &self.full[..self.at]
    }

    /// The domain, lower-case ASCII.
    pub fn domain(&self) -> &str {
        &self.full[self.at + 1..]
    }

    /// The key under which two spellings of one mailbox are the same recipient: local parts
    /// are case-sensitive by the letter of RFC 5321, but no mail system an administrator runs
    /// treats `Alice@` and `alice@` as two people, and delivering twice is the worse error.
    pub fn dedup_key(&self) -> String {
        self.full.to_lowercase()
    }
}

/// A character no envelope address may hold anywhere: it could end or bend the SMTP command
/// line (CR, LF, NUL, controls, `<`, `>`), or it would need escaping inside quotes.
fn forbidden(c: char) -> bool {
    c.is_control() || (c.is_whitespace() && c != ' ') || matches!(c, '<' | '>' | '"' | '\\')
}

/// The checks every local part passes, quoted or not: not empty, nothing forbidden, and
/// nothing that routes onward (`%`, `!`, `@`: a default Postfix or sendmail relays
/// `user%other.host@us` to `user@other.host`).
fn check_local(local: &str) -> Result<(), AddressError> {
    if local.is_empty() {
        return Err(AddressError::EmptyLocal);
    }
    if let Some(c) = local.chars().find(|c| matches!(c, '%' | '!' | '@')) {
        return Err(AddressError::SourceRoute(c));
    }
    if local.chars().any(forbidden) {
        return Err(AddressError::ForbiddenChar);
    }
    Ok(())
}

/// Whether `local` is an RFC 5321 Dot-string (atoms of atext joined by single dots), with
/// non-ASCII counted as atext (RFC 6531): such a local part goes on the wire unquoted.
pub fn is_dot_string(local: &str) -> bool {
    local.split('.').all(|atom| {
        !atom.is_empty()
            && atom.chars().all(|c| {
                c.is_ascii_alphanumeric() || "!#$%&'*+-/=?^_`{|}~".contains(c) || !c.is_ascii()
            })
    })
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.full)
    }
}

impl fmt::Debug for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "<{}>", self.full)
    }
}

/// Lower-cases a domain and encodes IDN labels in punycode; rejects what is not a host name
/// (a domain literal such as `[127.0.0.1]` is refused: no accepted domain can match it).
pub fn normalize_domain(domain: &str) -> Result<String, AddressError> {
    let bad = || AddressError::BadDomain(domain.to_string());
    let domain = domain.strip_suffix('.').unwrap_or(domain);
    let ascii = idna::domain_to_ascii(domain).map_err(|_| bad())?;
    if ascii.is_empty()
        || ascii.len() > 253
        || ascii.split('.').any(|label| {
            label.is_empty()
                || label.len() > 63
                || label.starts_with('-')
                || label.ends_with('-')
                || !label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
    {
        return Err(bad());
    }
    Ok(ascii)
}

/// An accepted recipient domain: `example.com` accepts exactly that domain,
/// `*.example.com` every subdomain of it (not `example.com` itself: list both for both).
#[derive(Clone, PartialEq, Eq, Hash)]
pub enum DomainPattern {
    /// Exactly this domain.
    Exact(String),
    /// Any domain ending in `.` + this suffix.
    Subdomains(String),
}

impl DomainPattern {
    /// Parses `example.com` or `*.example.com`.
    pub fn parse(s: &str) -> Result<DomainPattern, AddressError> {
        match s.trim().strip_prefix("*.") {
            Some(rest) => Ok(DomainPattern::Subdomains(normalize_domain(rest)?)),
            None => Ok(DomainPattern::Exact(normalize_domain(s.trim())?)),
        }
    }

    /// Whether `domain` (already normalised, as [`Address::domain`] gives it) is accepted.
    pub fn matches(&self, domain: &str) -> bool {
        match self {
            DomainPattern::Exact(d) => d == domain,
            DomainPattern::Subdomains(suffix) => domain
                .strip_suffix(suffix.as_str())
                .is_some_and(|head| head.len() > 1 && head.ends_with('.')),
        }
    }
}

impl fmt::Display for DomainPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DomainPattern::Exact(d) => f.write_str(d),
            DomainPattern::Subdomains(d) => write!(f, "*.{d}"),
        }
    }
}

impl fmt::Debug for DomainPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn domain_is_lowercased_and_local_part_kept() {
        let a = Address::parse("John.Doe@Example.COM").unwrap();
        assert_eq!(a.as_str(), "John.Doe@example.com");
        assert_eq!(a.local_part(), "John.Doe");
        assert_eq!(a.domain(), "example.com");
    }

    #[test]
    fn smtp_injection_is_refused() {
        for bad in [
            "a@b.com\r\nRCPT TO:<x@evil.com>",
            "a\n@b.com",
            "a@b.com>",
            "<a@b.com",
            "a\0@b.com",
            "a b@c.com",
        ] {
            assert!(Address::parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn local_parts_that_route_onward_are_refused() {
        for (bad, why) in [
            ("evil%x.com@example.com", AddressError::SourceRoute('%')),
            ("x.com!evil@example.com", AddressError::SourceRoute('!')),
            ("\"evil@x.com\"@example.com", AddressError::SourceRoute('@')),
            ("evil@x.com@example.com", AddressError::SourceRoute('@')),
            ("\"evil%x.com\"@example.com", AddressError::SourceRoute('%')),
            ("@a.com,@b.com:evil@x.com", AddressError::RouteSyntax),
            ("@example.com:evil@x.com", AddressError::RouteSyntax),
        ] {
            assert_eq!(Address::parse(bad), Err(why), "{bad:?}");
        }
        assert_eq!(
            Address::new("evil%x.com", "example.com"),
            Err(AddressError::SourceRoute('%'))
        );
    }

    #[test]
    fn quoted_local_parts_are_kept_and_quoted_on_the_wire() {
        let a = Address::parse("\"john doe\"@Example.com").unwrap();
        assert_eq!(a.local_part(), "john doe");
        assert_eq!(a.as_str(), "\"john doe\"@example.com");
        assert_eq!(a.smtp_local_part(), "\"john doe\"");
        assert_eq!(a.domain(), "example.com");
        assert_eq!(Address::new("john doe", "example.com").unwrap(), a);
        // A quoted Dot-string is the same mailbox as the unquoted one.
        let b = Address::parse("\"john.doe\"@example.com").unwrap();
        assert_eq!(b.as_str(), "john.doe@example.com");
        assert_eq!(b, Address::parse("john.doe@example.com").unwrap());
        // Not Dot-strings: quoted.
        assert_eq!(
            Address::new(".john", "example.com").unwrap().as_str(),
            "\".john\"@example.com"
        );
        assert_eq!(
            Address::new("a..b", "example.com").unwrap().as_str(),
            "\"a..b\"@example.com"
        );
        // What parse gives back parses to the same address.
        assert_eq!(Address::parse(a.as_str()).unwrap(), a);
    }

    #[test]
    fn unquoted_local_parts_must_be_dot_strings() {
        assert_eq!(
            Address::parse("a,b@example.com"),
            Err(AddressError::NeedsQuoting)
        );
        assert_eq!(
            Address::parse("\"john@example.com"),
            Err(AddressError::BadQuoting)
        );
        assert_eq!(
            Address::parse("\"a\"b@example.com"),
            Err(AddressError::BadQuoting)
        );
        for bad in ["\"a\\\"b\"@x.com", "\"a\tb\"@x.com", "\"a\r\nb\"@x.com"] {
            assert!(Address::parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn malformed_addresses_are_refused() {
        assert_eq!(Address::parse(""), Err(AddressError::Empty));
        assert_eq!(Address::parse("nobody"), Err(AddressError::NoAt));
        assert_eq!(Address::parse("@x.com"), Err(AddressError::EmptyLocal));
        assert_eq!(Address::parse("a@"), Err(AddressError::EmptyDomain));
        assert!(Address::parse("a@[127.0.0.1]").is_err());
        assert!(Address::parse("a@-x.com").is_err());
    }

    #[test]
    fn idn_domains_compare_in_punycode() {
        let a = Address::parse("info@Bücher.example").unwrap();
        assert_eq!(a.domain(), "xn--bcher-kva.example");
        let p = DomainPattern::parse("BÜCHER.example").unwrap();
        assert!(p.matches(a.domain()));
    }

    #[test]
    fn wildcard_matches_subdomains_only() {
        let p = DomainPattern::parse("*.Example.org").unwrap();
        assert!(p.matches("sales.example.org"));
        assert!(p.matches("a.b.example.org"));
        assert!(!p.matches("example.org"));
        assert!(!p.matches("badexample.org"));
        let e = DomainPattern::parse("example.org").unwrap();
        assert!(e.matches("example.org"));
        assert!(!e.matches("sub.example.org"));
    }
}

/// The address-parser fuzz (the toolchain has no cargo-fuzz): a long proptest over
/// [`Address::parse`] and [`Address::new`] on text built from the characters that matter.
/// `MAILFERRY_FUZZ_CASES=1000000` makes a longer run.
#[cfg(test)]
pub(crate) mod fuzz {
    use super::*;
    use proptest::prelude::*;

    /// The number of cases: `MAILFERRY_FUZZ_CASES`, else `default`.
    pub(crate) fn cases(default: u32) -> u32 {
        std::env::var("MAILFERRY_FUZZ_CASES")
            .ok()
            .and_then(|n| n.parse().ok())
            .unwrap_or(default)
    }

    /// Whether `a` is safe on an SMTP command line and never source-routed.
    pub(crate) fn safe_on_the_wire(a: &Address) -> Result<(), String> {
        let wire = a.as_str();
        if wire
            .chars()
            .any(|c| c.is_control() || matches!(c, '<' | '>'))
        {
            return Err(format!("control or angle bracket in {wire:?}"));
        }
        if a.local_part().contains(['%', '!', '@', '"', '\\']) {
            return Err(format!("routing or quoting character in {wire:?}"));
        }
        if wire.starts_with('@') || wire.matches('@').count() != 1 {
            return Err(format!("route syntax or extra @ in {wire:?}"));
        }
        let quoted = wire.starts_with('"');
        if !quoted && !is_dot_string(a.local_part()) {
            return Err(format!(
                "unquoted local part that is not a Dot-string: {wire:?}"
            ));
        }
        if quoted && wire[1..].find('"').map(|i| i + 2) != wire.rfind('@') {
            return Err(format!("quotes do not enclose the local part: {wire:?}"));
        }
        // What goes on the wire reads back as the same address.
        match Address::parse(wire) {
            Ok(b) if &b == a => Ok(()),
            other => Err(format!("{wire:?} reads back as {other:?}")),
        }
    }

    fn tricky() -> impl Strategy<Value = String> {
        let piece = prop::sample::select(vec![
            "a",
            "B",
            "7",
            ".",
            "..",
            "@",
            "%",
            "!",
            "\"",
            "\\",
            " ",
            "\t",
            "\r",
            "\n",
            "\0",
            "<",
            ">",
            ",",
            ":",
            ";",
            "(",
            ")",
            "[",
            "]",
            "é",
            "\u{FFFD}",
            "\u{7f}",
            "\u{85}",
            "\u{a0}",
            "example.com",
            "x.com",
            "@a.com,@b.com:",
            "xn--",
            "-",
            "ß",
            "日本",
        ]);
        prop::collection::vec(piece, 0..24).prop_map(|p| p.concat())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(cases(4000)))]

        #[test]
        fn parse_yields_only_safe_addresses(s in tricky()) {
            if let Ok(a) = Address::parse(&s) {
                prop_assert_eq!(safe_on_the_wire(&a), Ok(()));
            }
        }

        #[test]
        fn new_yields_only_safe_addresses(local in tricky(), domain in tricky()) {
            if let Ok(a) = Address::new(&local, &domain) {
                prop_assert_eq!(safe_on_the_wire(&a), Ok(()));
            }
        }

        #[test]
        fn parse_never_panics_on_any_text(s in any::<String>()) {
            if let Ok(a) = Address::parse(&s) {
                prop_assert_eq!(safe_on_the_wire(&a), Ok(()));
            }
        }
    }
}
