//! Value types shared by every stage: an envelope address that is safe to put on an SMTP
//! command line, and an accepted-domain pattern. Both validate on construction, so a value
//! of either type is always usable as it is.

use std::fmt;

/// Why a string is not a usable envelope address or domain.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AddressError {
    #[error("empty address")]
    Empty,
    #[error("address has no '@'")]
    NoAt,
    #[error("address has an empty local part")]
    EmptyLocal,
    #[error("address has an empty domain")]
    EmptyDomain,
    #[error("address contains a forbidden character (CR, LF, NUL, '<', '>', space or control)")]
    ForbiddenChar,
    #[error("address is longer than 320 characters")]
    TooLong,
    #[error("domain {0:?} is not a valid domain name")]
    BadDomain(String),
}

/// An envelope address (`local@domain`), checked so that it can never inject SMTP syntax:
/// no CR, LF, NUL, `<`, `>`, white space or other control characters. The domain is kept in
/// lower-case ASCII (IDN domains in punycode), so two spellings of one domain compare equal.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Address {
    full: String,
    at: usize,
}

impl Address {
    /// Parses and validates `local@domain`; the domain is lower-cased and IDN-encoded.
    pub fn parse(s: &str) -> Result<Address, AddressError> {
        let s = s.trim();
        if s.is_empty() {
            return Err(AddressError::Empty);
        }
        if s.len() > 320 {
            return Err(AddressError::TooLong);
        }
        if s.chars()
            .any(|c| c.is_control() || c.is_whitespace() || c == '<' || c == '>')
        {
            return Err(AddressError::ForbiddenChar);
        }
        let at = s.rfind('@').ok_or(AddressError::NoAt)?;
        let (local, domain) = (&s[..at], &s[at + 1..]);
        if local.is_empty() {
            return Err(AddressError::EmptyLocal);
        }
        if domain.is_empty() {
            return Err(AddressError::EmptyDomain);
        }
        let domain = normalize_domain(domain)?;
        Ok(Address {
            full: format!("{local}@{domain}"),
            at: local.len(),
        })
    }

    /// The whole address, `local@domain`, without angle brackets.
    pub fn as_str(&self) -> &str {
        &self.full
    }

    /// The part before the last `@`, as written.
    pub fn local_part(&self) -> &str {
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
