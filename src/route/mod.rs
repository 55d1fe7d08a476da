//! The router: who receives one stored copy of a message, and why (design.md, "Routing").
//!
//! Pure logic, no I/O: the message's header block and the account's [`Rules`] in, a
//! [`Routing`] out. The rules are applied in steps, each of which either decides or hands on:
//!
//! 1. single-user mode: the account's `deliver_to`, whatever the headers say;
//! 2. the configured envelope headers above the first `Received:` header (and, when
//!    `Received-For` is configured, the `for` clause of the topmost `Received:`);
//! 3. otherwise the message headers (`To`, `Cc`, `Bcc`, `Resent-*`, `Apparently-To`);
//! 4. no local recipient at all: the postmaster.
//!
//! Each address found is then `rewrite`n (at most one rule, `rewrite.rs`), and only after
//! that checked against the accepted domains, so a rewrite can never send outside them (a
//! rewrite to the postmaster is the one exception); then looked up in the `directory`
//! (`directory.rs`): one it does not know sends the copy to the postmaster instead.
//! A copy that carries mailferry's own trace header more than `max_hops` times is a loop
//! ([`Routing::looped`], `received.rs`): the pipeline quarantines it, never delivers it.
//!
//! Every address is checked before it is kept: it parses as an [`Address`] (nothing that
//! could inject SMTP syntax, and no local part that routes onward: `%`, `!`, a quoted `@`,
//! an RFC 5321 source route) and its domain is accepted, so nothing but accepted domains, the
//! single-user target and the postmaster can come out. A malformed header never stops routing;
//! what it names is skipped (and listed by [`explain`]).
//!
//! An address in an accepted domain that cannot be sent as written (it would route onward,
//! it holds undecodable bytes, it cannot be put on an SMTP line) is *refused*: treated like an
//! address outside the accepted domains, and reported in [`Routing::refused`]. With
//! `source_routed: postmaster` (the default), and always for an address that is not
//! source-routed but unsendable, the postmaster is added as a recipient with
//! [`Reason::Refused`], next to the rightful recipients; with `source_routed: reject` a
//! source-routed address is only reported (and counted by the pipeline).
//!
//! Only the header section is parsed, and at most [`HEADER_CAP`] bytes of it: mail-parser
//! costs many times the size of what it parses, and a header section of 50 MB is an attack,
//! not mail. Addresses past the cap are ignored, and [`Explanation::header_truncated`] says so.

use std::collections::HashSet;
use std::fmt;
use std::sync::Arc;

use mail_parser::{Header, HeaderName};

use crate::address::{Address, AddressError, DomainPattern, normalize_domain};
use crate::config::{AccountConfig, Config, Mode, SourceRouted};

mod addrlist;
mod directory;
mod explain;
mod headers;
mod received;
mod refused;
mod rewrite;

pub use directory::{Directory, DirectoryError, DirectoryFile};
pub use explain::{Decision, Explanation, Found, Report, Skipped};
pub use refused::{Refusal, Refused};
pub use rewrite::{Rewrite, RewriteSide};

/// The name in `envelope_headers` that stands for the `for <addr>` clause of the topmost
/// `Received:` header (opt-in: the sender can write it when the provider does not).
pub const RECEIVED_FOR: &str = "Received-For";

/// `max_hops` when not set: a copy that already went through mailferry more than 3 times is
/// a loop.
pub const DEFAULT_MAX_HOPS: u32 = 3;

/// At most this many bytes of a message's header section are parsed (1 MiB).
pub const HEADER_CAP: usize = 1 << 20;

/// What routing needs to know besides the message.
#[derive(Debug, Clone)]
pub struct Rules {
    /// Accepted recipient domains.
    pub domains: Vec<DomainPattern>,
    /// Envelope header names, in order of preference; compared case-insensitively.
    pub envelope_headers: Vec<String>,
    /// Where a message with no local recipient goes.
    pub postmaster: Address,
    /// Catch-all (recipients from the headers) or single-user.
    pub mode: Mode,
    /// The catch-all mailbox's own address (the account's username when it is an address):
    /// an envelope header naming it is skipped.
    pub own_address: Option<Address>,
    /// What becomes of a source-routed address in an accepted domain.
    pub source_routed: SourceRouted,
    /// `rewrite`: applied to every address found, before the domain check.
    pub rewrite: Vec<Rewrite>,
    /// `directory`: the known local addresses, when there is a directory.
    pub directory: Option<Arc<Directory>>,
    /// More of mailferry's own trace headers than this is a loop.
    pub max_hops: u32,
}

impl Rules {
    /// The rules for one account of `config`: each routing key the account sets replaces the
    /// top-level one. The directory file is read again here when it changed.
    pub fn for_account(config: &Config, account: &AccountConfig) -> Rules {
        let own = &account.routing;
        Rules {
            domains: config.domains.clone(),
            envelope_headers: own
                .envelope_headers
                .as_ref()
                .unwrap_or(&config.envelope_headers)
                .clone(),
            postmaster: config.postmaster.clone(),
            mode: account.mode.clone(),
            // A username that is not an address (`catchall`, `example.com-main`) names no
            // mailbox an envelope header could carry.
            own_address: Address::parse(&account.username).ok(),
            source_routed: config.source_routed,
            rewrite: own.rewrite.as_ref().unwrap_or(&config.rewrite).clone(),
            directory: own
                .directory
                .as_ref()
                .or(config.directory.as_ref())
                .map(DirectoryFile::current),
            max_hops: config.max_hops,
        }
    }

    /// Whether `address` is in an accepted domain.
    pub fn accepts(&self, address: &Address) -> bool {
        self.accepts_domain(address.domain())
    }

    fn accepts_domain(&self, domain: &str) -> bool {
        self.domains.iter().any(|d| d.matches(domain))
    }

    /// Whether an address that did not parse names an accepted domain: after its last `@`,
    /// or as a hop of its source route (`@example.com:evil@x.com` would go through us).
    fn names_accepted_domain(&self, raw: &str) -> bool {
        let last = raw.rsplit('@').next().filter(|_| raw.contains('@'));
        let hops = match raw.strip_prefix('@').and_then(|r| r.split_once(':')) {
            Some((route, _)) => route
                .split(',')
                .map(|h| h.trim().trim_start_matches('@'))
                .collect(),
            None => Vec::new(),
        };
        last.into_iter()
            .chain(hops)
            .filter_map(|d| normalize_domain(d.trim()).ok())
            .any(|d| self.accepts_domain(&d))
    }
}

/// The decision for one stored copy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Routing {
    /// MAIL FROM: None means the null reverse path `<>`.
    pub return_path: Option<Address>,
    /// Never empty; each address once (by [`Address::dedup_key`]).
    pub recipients: Vec<Routed>,
    /// Addresses in an accepted domain that were not sent as written, in the order met:
    /// the pipeline counts each (`metrics::addresses_refused`).
    pub refused: Vec<Refused>,
    /// The message's `Message-ID:` (without its angle brackets), if it has one.
    pub message_id: Option<String>,
    /// How many of mailferry's own trace headers the copy carries.
    pub hops: usize,
    /// Set when `hops` is over `max_hops`: a loop, to be quarantined and never delivered.
    pub looped: Option<Looped>,
}

/// A copy that went through mailferry too often.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Looped {
    /// mailferry's trace headers on the copy.
    pub hops: usize,
    /// The configured limit.
    pub max_hops: u32,
}

impl fmt::Display for Looped {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "mail loop: the message went through mailferry {} times (max_hops {})",
            self.hops, self.max_hops
        )
    }
}

impl Routing {
    /// Header lines for the postmaster's copy, one `X-Mailferry-Refused:` per refused address
    /// sent to the postmaster, naming it, its header and the reason; empty when there is none.
    /// Only for a copy that goes to the postmaster alone: the other recipients must not see
    /// the addresses (a refused `Bcc:` among them).
    pub fn refused_notice(&self) -> String {
        self.refused
            .iter()
            .filter(|r| r.to_postmaster)
            .map(|r| {
                // Debug-quoting escapes every control character; the cap keeps it one line
                // of reasonable length.
                let text: String = r.to_string().chars().take(900).collect();
                format!("X-Mailferry-Refused: {text}\r\n")
            })
            .collect()
    }
}

/// One routed recipient, with the reason it was chosen (it becomes a
/// [`Recipient`](crate::recipient::Recipient) once the pipeline plans its delivery).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Routed {
    /// The envelope recipient (RCPT TO).
    pub address: Address,
    /// Which rule chose it.
    pub reason: Reason,
}

/// Which rule chose a recipient. More arrive with the later rules (rewrite, directory,
/// `Received: ... for`), so match it with a wildcard arm outside this crate.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Reason {
    /// Named by this envelope header (the name as configured).
    EnvelopeHeader(String),
    /// Named by this message header (`To`, `Cc`, ...).
    Header(String),
    /// The account is single-user: its `deliver_to`.
    SingleUser,
    /// No local recipient was found: the postmaster.
    NoLocalRecipient,
    /// An address in an accepted domain was refused (the first one, if several): the
    /// postmaster gets the copy in its place.
    Refused(Box<Refused>),
    /// `rewrite` turned `from` into this recipient; `via` chose `from`.
    Rewritten {
        /// The address as found.
        from: Address,
        /// The rule that found it.
        via: Box<Reason>,
    },
    /// This recipient (the first one, if several) is not in the directory: the postmaster
    /// gets the copy in its place.
    NotInDirectory(Address),
    /// Named by the `for` clause of the topmost `Received:` header (`Received-For`).
    ReceivedFor,
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::EnvelopeHeader(name) => write!(f, "envelope header {name}"),
            Reason::Header(name) => write!(f, "header {name}"),
            Reason::SingleUser => f.write_str("single-user account"),
            Reason::NoLocalRecipient => f.write_str("no local recipient, sent to the postmaster"),
            Reason::Refused(r) => write!(f, "refused address {r}; sent to the postmaster"),
            Reason::Rewritten { from, via } => write!(f, "{via}, rewritten from {from}"),
            Reason::NotInDirectory(a) => {
                write!(f, "{a} is not in the directory; sent to the postmaster")
            }
            Reason::ReceivedFor => f.write_str("for clause of the topmost Received header"),
        }
    }
}

/// Why an address named in the message was not made a recipient.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SkipReason {
    /// An envelope header below the first `Received:` header: anyone could have written it.
    #[error("envelope header below the first Received header (could be forged)")]
    BelowReceived,
    /// An envelope header naming the catch-all mailbox itself.
    #[error("the catch-all mailbox's own address")]
    OwnAddress,
    /// Not in an accepted domain.
    #[error("not in an accepted domain")]
    ForeignDomain,
    /// A local part that SMTP would need quoted (space, `"`, `@`, ...).
    #[error("local part would need quoting in SMTP")]
    NeedsQuoting,
    /// Bytes that are not valid UTF-8 (or a known charset) inside the address.
    #[error("address contains undecodable bytes")]
    Undecodable,
    /// In an accepted domain but cannot be sent as written: see [`Routing::refused`].
    #[error("refused: {0}")]
    Refused(Refusal),
    /// Not a usable envelope address.
    #[error(transparent)]
    Invalid(#[from] AddressError),
    /// `rewrite` would make it an address outside the accepted domains.
    #[error("rewritten to {0}, which is not in an accepted domain")]
    RewrittenOutside(Address),
    /// In an accepted domain (after `rewrite`, as this address) but not in the directory:
    /// the postmaster gets the copy.
    #[error("{0} is not in the directory (the postmaster gets the copy)")]
    NotInDirectory(Address),
}

/// Decides the return path and recipients of one stored copy. Never fails and never panics:
/// whatever the bytes, the result has at least one recipient.
pub fn route(message: &[u8], rules: &Rules) -> Routing {
    explain(message, rules).routing
}

/// [`route`], also listing every address found with what was decided for it.
pub fn explain(message: &[u8], rules: &Rules) -> Explanation {
    let (message, header_truncated) = headers::header_section(message, HEADER_CAP);
    let parsed = headers::parser(&rules.envelope_headers).parse_headers(message);
    let fields: &[Header<'_>] = parsed.as_ref().map(|m| m.headers()).unwrap_or(&[]);
    let return_path = return_path(fields, message);
    let hops = received::trace_hops(message);

    let mut picked = Picked::new(rules);
    let mut message_headers_read = false;
    if let Mode::SingleUser { deliver_to } = &rules.mode {
        picked.add_unchecked(deliver_to.clone(), Reason::SingleUser);
    } else {
        envelope_recipients(fields, message, &mut picked);
        // Envelope headers that name no accepted recipient (only the catch-all's own address,
        // or only the provider's internal alias) say nothing about who the local recipients
        // are, so the message headers decide, as if there were none. Sending such copies to
        // the postmaster instead would turn a provider that always writes `Delivered-To:
        // <its own mailbox>` into one where all mail goes to the postmaster; reading To/Cc is
        // no open relay, as every address still has to be in an accepted domain. An envelope
        // recipient the directory does not know was named all the same: it decided.
        if picked.recipients.is_empty() && picked.unknown.is_none() {
            message_headers_read = true;
            message_recipients(fields, message, &mut picked);
        }
    }
    if let Some(first) = picked.refused.iter().find(|r| r.to_postmaster) {
        let reason = Reason::Refused(Box::new(first.clone()));
        picked.add_unchecked(rules.postmaster.clone(), reason);
    }
    if let Some(unknown) = picked.unknown.take() {
        picked.add_unchecked(rules.postmaster.clone(), Reason::NotInDirectory(unknown));
    }
    if picked.recipients.is_empty() {
        picked.add_unchecked(rules.postmaster.clone(), Reason::NoLocalRecipient);
    }
    let looped = (hops > rules.max_hops as usize).then_some(Looped {
        hops,
        max_hops: rules.max_hops,
    });
    Explanation {
        routing: Routing {
            return_path,
            recipients: picked.recipients,
            refused: picked.refused,
            message_id: parsed
                .as_ref()
                .and_then(|m| m.message_id())
                .map(|id| id.trim().to_owned())
                .filter(|id| !id.is_empty()),
            hops,
            looped,
        },
        found: picked.found,
        message_headers_read,
        header_bytes: message.len(),
        header_truncated,
    }
}

/// Whether the copy is a loop (more of mailferry's trace headers than `rules.max_hops`),
/// without routing it: a cheap scan of the header section for the pipeline to check first.
pub fn looped(message: &[u8], rules: &Rules) -> Option<Looped> {
    let (header, _) = headers::header_section(message, HEADER_CAP);
    let hops = received::trace_hops(header);
    (hops > rules.max_hops as usize).then_some(Looped {
        hops,
        max_hops: rules.max_hops,
    })
}

/// Step 2: the configured envelope headers; only those above the first `Received:` count
/// (the provider adds them at final delivery, one copy per recipient; lower ones could have
/// been written by the sender). All configured names found count, union: a provider may write
/// both `X-Original-To` and `Delivered-To`; the first configured name gives the reason.
/// `Received-For` reads the `for` clause of the topmost `Received:`, unless mailferry wrote it.
fn envelope_recipients(fields: &[Header<'_>], message: &[u8], picked: &mut Picked<'_>) {
    let first_received = fields
        .iter()
        .position(|h| h.name == HeaderName::Received)
        .unwrap_or(fields.len());
    for configured in &picked.rules.envelope_headers {
        if configured.trim().eq_ignore_ascii_case(RECEIVED_FOR) {
            let Some(field) = fields.get(first_received) else {
                continue;
            };
            let raw = String::from_utf8_lossy(headers::raw_value(field, message));
            if received::is_ours(&raw) {
                continue;
            }
            for addr in received::for_clause(&raw) {
                picked.consider("Received (for)", addr, Reason::ReceivedFor, true);
            }
            continue;
        }
        let Some(name) = headers::header_name(configured) else {
            continue;
        };
        for (i, field) in fields.iter().enumerate().filter(|(_, h)| h.name == name) {
            for addr in headers::addresses(field, message) {
                let header = field.name.as_str();
                if i > first_received {
                    picked.skip(header, addr, SkipReason::BelowReceived);
                } else {
                    let reason = Reason::EnvelopeHeader(configured.trim().to_string());
                    picked.consider(header, addr, reason, true);
                }
            }
        }
    }
}

/// Step 3: every address of the message headers that is in an accepted domain.
fn message_recipients(fields: &[Header<'_>], message: &[u8], picked: &mut Picked<'_>) {
    for (label, name) in &headers::MESSAGE_HEADERS {
        for field in fields.iter().filter(|h| h.name == *name) {
            for addr in headers::addresses(field, message) {
                let reason = Reason::Header((*label).to_string());
                picked.consider(field.name.as_str(), addr, reason, false);
            }
        }
    }
}

/// The topmost `Return-Path:`; when there is none or it is unusable, the address of `Sender:`
/// then `From:` (as fetchmail does); else the null path.
fn return_path(fields: &[Header<'_>], message: &[u8]) -> Option<Address> {
    if let Some(field) = fields.iter().find(|h| h.name == HeaderName::ReturnPath) {
        let raw = headers::raw_value(field, message);
        match headers::return_path(&String::from_utf8_lossy(raw)) {
            headers::ReturnPath::Null => return None,
            headers::ReturnPath::Address(address) => return Some(address),
            headers::ReturnPath::Unusable => {}
        }
    }
    [HeaderName::Sender, HeaderName::From]
        .iter()
        .filter_map(|name| fields.iter().find(|h| h.name == *name))
        .flat_map(|field| headers::addresses(field, message))
        .find_map(|addr| headers::check(&addr).ok())
}

/// The recipients chosen so far, each once, and every address found with its decision.
struct Picked<'r> {
    rules: &'r Rules,
    recipients: Vec<Routed>,
    seen: HashSet<String>,
    found: Vec<Found>,
    refused: Vec<Refused>,
    /// The first recipient the directory did not know.
    unknown: Option<Address>,
}

impl<'r> Picked<'r> {
    fn new(rules: &'r Rules) -> Self {
        Picked {
            rules,
            recipients: Vec::new(),
            seen: HashSet::new(),
            found: Vec::new(),
            refused: Vec::new(),
            unknown: None,
        }
    }

    /// Keeps `addr` if it is a valid address (not, for an envelope header, the catch-all
    /// mailbox itself) that is in an accepted domain once rewritten, and known to the
    /// directory; refuses it if it names an accepted domain but cannot be sent as written.
    fn consider(&mut self, header: &str, addr: String, reason: Reason, envelope: bool) {
        let address = match headers::check(&addr) {
            Ok(address) => address,
            Err(why) => match Refusal::of(&why) {
                Some(refusal) if self.rules.names_accepted_domain(&addr) => {
                    return self.refuse(header, addr, refusal);
                }
                _ => return self.skip(header, addr, why),
            },
        };
        if envelope
            && let Some(own) = &self.rules.own_address
            && own.dedup_key() == address.dedup_key()
        {
            return self.skip(header, addr, SkipReason::OwnAddress);
        }
        let (address, reason) = match rewrite::apply(&self.rules.rewrite, &address) {
            // Checked like any address: a rewrite leads into the accepted domains or to the
            // postmaster, nowhere else, whatever the configuration says.
            Some(to) if !self.rules.accepts(&to) && to != self.rules.postmaster => {
                return self.skip(header, addr, SkipReason::RewrittenOutside(to));
            }
            Some(to) => {
                let via = Box::new(reason);
                (to, Reason::Rewritten { from: address, via })
            }
            None if !self.rules.accepts(&address) => {
                return self.skip(header, addr, SkipReason::ForeignDomain);
            }
            None => (address, reason),
        };
        if let Some(directory) = &self.rules.directory
            && address != self.rules.postmaster
            && !directory.knows(&address)
        {
            self.unknown.get_or_insert_with(|| address.clone());
            return self.skip(header, addr, SkipReason::NotInDirectory(address));
        }
        let decision = if self.seen.contains(&address.dedup_key()) {
            Decision::Again(address.clone())
        } else {
            Decision::Taken(address.clone())
        };
        self.found.push(Found {
            header: header.to_string(),
            address: addr,
            decision,
        });
        self.add_unchecked(address, reason);
    }

    /// Adds a recipient that needs no domain check (single-user target, postmaster).
    fn add_unchecked(&mut self, address: Address, reason: Reason) {
        if self.seen.insert(address.dedup_key()) {
            self.recipients.push(Routed { address, reason });
        }
    }

    fn refuse(&mut self, header: &str, address: String, why: Refusal) {
        let to_postmaster = !matches!(why, Refusal::SourceRouted(_))
            || self.rules.source_routed == SourceRouted::Postmaster;
        self.refused.push(Refused {
            header: header.to_string(),
            address: address.clone(),
            why: why.clone(),
            to_postmaster,
        });
        self.skip(header, address, SkipReason::Refused(why));
    }

    fn skip(&mut self, header: &str, address: String, why: SkipReason) {
        self.found.push(Found {
            header: header.to_string(),
            address,
            decision: Decision::Skipped(why),
        });
    }
}

#[cfg(test)]
mod fuzz_tests;
#[cfg(test)]
mod rules_tests;
#[cfg(test)]
mod tests;
