//! `rewrite`: an external address or domain mapped to an internal one, before the domain
//! check (design.md, Routing step 5). One rule applies per address, never a chain: the
//! address rule for that exact address if there is one, else the domain rule for its domain.

use std::fmt;

use crate::address::{Address, AddressError, normalize_domain};

/// One side of a rewrite rule: one address, or every address of a domain (`@domain`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RewriteSide {
    /// Exactly this address (compared as [`Address::dedup_key`] does).
    Address(Address),
    /// Any address of this domain (lower-case ASCII, IDN in punycode).
    Domain(String),
}

impl RewriteSide {
    /// Parses `user@domain` or `@domain`.
    pub fn parse(s: &str) -> Result<RewriteSide, AddressError> {
        match s.trim().strip_prefix('@') {
            Some(domain) if !domain.contains('@') => {
                Ok(RewriteSide::Domain(normalize_domain(domain.trim())?))
            }
            _ => Ok(RewriteSide::Address(Address::parse(s)?)),
        }
    }

    /// The domain this side names (an address's domain, or the domain itself).
    pub fn domain(&self) -> &str {
        match self {
            RewriteSide::Address(a) => a.domain(),
            RewriteSide::Domain(d) => d,
        }
    }
}

impl fmt::Display for RewriteSide {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RewriteSide::Address(a) => write!(f, "{a}"),
            RewriteSide::Domain(d) => write!(f, "@{d}"),
        }
    }
}

/// `from: to` of `rewrite:`. The loader allows `@domain: @domain` and `address: address`,
/// `address: @domain` is refused (it would name no mailbox) and `@domain: address` maps a
/// whole domain to one mailbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rewrite {
    /// What is matched.
    pub from: RewriteSide,
    /// What it becomes.
    pub to: RewriteSide,
}

impl Rewrite {
    /// A rule, checked: an address may not be rewritten to a bare domain.
    pub fn new(from: RewriteSide, to: RewriteSide) -> Result<Rewrite, &'static str> {
        if matches!(
            (&from, &to),
            (RewriteSide::Address(_), RewriteSide::Domain(_))
        ) {
            return Err("an address can only be rewritten to an address (write user@domain)");
        }
        Ok(Rewrite { from, to })
    }
}

/// What `rules` make of `address`: `None` when no rule matches it. The result is not checked
/// against the accepted domains here: the router does that next, as for any address.
pub fn apply(rules: &[Rewrite], address: &Address) -> Option<Address> {
    let key = address.dedup_key();
    let exact = rules
        .iter()
        .find(|r| matches!(&r.from, RewriteSide::Address(a) if a.dedup_key() == key));
    let rule = exact.or_else(|| {
        rules
            .iter()
            .find(|r| matches!(&r.from, RewriteSide::Domain(d) if d == address.domain()))
    })?;
    match &rule.to {
        RewriteSide::Address(to) => Some(to.clone()),
        // The local part was valid with one domain; it is with another (length aside).
        RewriteSide::Domain(to) => Address::new(address.local_part(), to).ok(),
    }
}

/// A rule from its two sides as written, for tests; panics when they do not make one.
#[cfg(test)]
pub(super) fn rule(from: &str, to: &str) -> Rewrite {
    Rewrite::new(
        RewriteSide::parse(from).unwrap(),
        RewriteSide::parse(to).unwrap(),
    )
    .unwrap()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(s: &str) -> Address {
        Address::parse(s).unwrap()
    }

    #[test]
    fn an_address_rule_wins_over_its_domain_rule_and_none_chains() {
        let rules = [
            rule("@Example.NET", "@example.com"),
            rule("Sales@example.net", "j.doe@example.com"),
            rule("@example.com", "@elsewhere.org"),
        ];
        assert_eq!(
            apply(&rules, &a("sales@EXAMPLE.net")),
            Some(a("j.doe@example.com"))
        );
        // Domain rule keeps the local part; the result is not rewritten again.
        assert_eq!(
            apply(&rules, &a("Bob@example.net")),
            Some(a("Bob@example.com"))
        );
        assert_eq!(apply(&rules, &a("bob@other.net")), None);
        // A subdomain is another domain.
        assert_eq!(apply(&rules, &a("bob@sub.example.net")), None);
    }

    #[test]
    fn quoted_local_parts_survive_a_domain_rewrite() {
        let rules = [rule("@example.net", "@example.com")];
        assert_eq!(
            apply(&rules, &a("\"john doe\"@example.net")),
            Some(a("\"john doe\"@example.com"))
        );
    }

    #[test]
    fn an_address_cannot_become_a_bare_domain() {
        let from = RewriteSide::parse("sales@example.net").unwrap();
        let to = RewriteSide::parse("@example.com").unwrap();
        assert!(Rewrite::new(from, to).is_err());
        assert!(RewriteSide::parse("@").is_err());
        assert!(RewriteSide::parse("evil%x.com@example.com").is_err());
        assert_eq!(
            RewriteSide::parse("@Bücher.example").unwrap().to_string(),
            "@xn--bcher-kva.example"
        );
    }
}
