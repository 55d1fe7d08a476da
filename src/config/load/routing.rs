//! The routing keys, at the top level and in an account: `envelope_headers`, `rewrite`,
//! `directory` (and `max_hops`, top level only).

use super::*;
use crate::route::{DirectoryFile, RECEIVED_FOR, Rewrite, RewriteSide};

/// `max_hops` bounds.
pub(super) const MAX_HOPS: (u64, u64) = (1, 100);

/// What a rewrite may lead to: the accepted domains and the postmaster, once both are known.
pub(super) struct Targets {
    pub domains: Vec<DomainPattern>,
    pub postmaster: Address,
}

impl Checker<'_> {
    /// `envelope_headers`: header names (RFC 5322 field names), or `Received-For`.
    pub(super) fn envelope_headers(&mut self, node: &Node, name: &str) -> Option<Vec<String>> {
        let items = self.list(node, name)?;
        let mut headers = Vec::new();
        let mut ok = true;
        for item in items {
            let Some(s) = self.string(item, name) else {
                ok = false;
                continue;
            };
            // RFC 5322 field-name: printable ASCII except ':'.
            if s.is_empty() || !s.bytes().all(|b| (33..=126).contains(&b) && b != b':') {
                self.err(item, format!("{name}: `{s}` is not a header name"));
                ok = false;
            } else if s.eq_ignore_ascii_case("Received") {
                self.err(
                    item,
                    format!(
                        "{name}: `{s}` names every relay on the way; write `{RECEIVED_FOR}` for the `for` clause of the topmost Received header"
                    ),
                );
                ok = false;
            } else {
                headers.push(s);
            }
        }
        ok.then_some(headers)
    }

    /// `rewrite`: a mapping of `address: address`, `"@domain": "@domain"` or
    /// `"@domain": address`; each target must be in an accepted domain or be the postmaster
    /// (when those did not load, only the syntax is checked).
    pub(super) fn rewrite(&mut self, node: &Node, name: &str) -> Option<Vec<Rewrite>> {
        let targets = self.targets.take();
        let rules = self.rewrite_rules(node, name, targets.as_ref());
        self.targets = targets;
        rules
    }

    fn rewrite_rules(
        &mut self,
        node: &Node,
        name: &str,
        targets: Option<&Targets>,
    ) -> Option<Vec<Rewrite>> {
        let Kind::Map(entries) = &node.kind else {
            self.err(
                node,
                format!(
                    "{name}: expected a mapping such as `sales@example.com: j.doe@example.com` or `\"@example.net\": \"@example.com\"`, found {}",
                    node.describe()
                ),
            );
            return None;
        };
        let mut rules: Vec<(Rewrite, usize)> = Vec::new();
        let mut ok = true;
        for (key, value) in entries {
            let from = self.rewrite_side(key, name);
            let to = self.rewrite_side(value, name);
            let (Some(from), Some(to)) = (from, to) else {
                ok = false;
                continue;
            };
            if let Some((_, line)) = rules.iter().find(|(r, _)| same_side(&r.from, &from)) {
                self.err(
                    key,
                    format!("{name}: `{from}` is rewritten twice (also at line {line})"),
                );
                ok = false;
                continue;
            }
            if let Some(t) = targets {
                let to_postmaster = matches!(&to, RewriteSide::Address(a) if *a == t.postmaster);
                if !to_postmaster && !t.domains.iter().any(|d| d.matches(to.domain())) {
                    self.err(
                        value,
                        format!(
                            "{name}: `{from}` is rewritten to `{to}`, which is not in an accepted domain (domains) nor the postmaster: mail would leave for another server"
                        ),
                    );
                    ok = false;
                    continue;
                }
            }
            match Rewrite::new(from, to) {
                Ok(rule) => rules.push((rule, key.line)),
                Err(why) => {
                    self.err(value, format!("{name}: {why}"));
                    ok = false;
                }
            }
        }
        ok.then(|| rules.into_iter().map(|(r, _)| r).collect())
    }

    fn rewrite_side(&mut self, node: &Node, name: &str) -> Option<RewriteSide> {
        let s = self.string(node, name)?;
        match RewriteSide::parse(&s) {
            Ok(side) => Some(side),
            Err(e) => {
                self.err(
                    node,
                    format!("{name}: `{s}` is neither an address nor @domain: {e}"),
                );
                None
            }
        }
    }

    /// `directory`: a file of known local addresses, listed for the resolve step (which
    /// reads it: it must exist and parse; a bad line is named with its line number in the
    /// file). `Some(None)` until then.
    pub(super) fn directory(
        &mut self,
        node: &Node,
        name: &str,
        of: DirectoryOf,
    ) -> Option<Option<DirectoryFile>> {
        let path = self.path(node, name)?;
        let key = self.key_at(node, name);
        self.sources.push(Source::Directory { of, path, key });
        Some(None)
    }
}

fn same_side(a: &RewriteSide, b: &RewriteSide) -> bool {
    match (a, b) {
        (RewriteSide::Address(a), RewriteSide::Address(b)) => a.dedup_key() == b.dedup_key(),
        (RewriteSide::Domain(a), RewriteSide::Domain(b)) => a == b,
        _ => false,
    }
}
