//! The router: who receives one stored copy of a message, and why (design.md, "Routing").
//!
//! Pure logic, no I/O: the message's header block and the account's [`Rules`] in, a
//! [`Routing`] out. The rules are applied in steps, each of which either decides or hands on:
//!
//! 1. single-user mode: the account's `deliver_to`, whatever the headers say;
//! 2. the configured envelope headers above the first `Received:` header;
//! 3. otherwise the message headers (`To`, `Cc`, `Bcc`, `Resent-*`, `Apparently-To`);
//! 4. no local recipient at all: the postmaster.
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

use mail_parser::{Header, HeaderName};

use crate::address::{Address, AddressError, DomainPattern, normalize_domain};
use crate::config::{AccountConfig, Config, Mode, SourceRouted};

mod headers;

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
}

impl Rules {
    /// The rules for one account of `config`.
    pub fn for_account(config: &Config, account: &AccountConfig) -> Rules {
        Rules {
            domains: config.domains.clone(),
            envelope_headers: config.envelope_headers.clone(),
            postmaster: config.postmaster.clone(),
            mode: account.mode.clone(),
            // A username that is not an address (`catchall`, `example.com-main`) names no
            // mailbox an envelope header could carry.
            own_address: Address::parse(&account.username).ok(),
            source_routed: config.source_routed,
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

/// An address in an accepted domain that cannot be sent as written.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Refused {
    /// The header it was found in, as written in the message.
    pub header: String,
    /// The address as the header gave it (unvalidated: quote it when printing).
    pub address: String,
    /// Why it cannot be sent.
    pub why: Refusal,
    /// Whether the postmaster gets the copy in its place (else it is only dropped).
    pub to_postmaster: bool,
}

impl fmt::Display for Refused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?} in {}: {}", self.address, self.header, self.why)
    }
}

/// Why an address in an accepted domain is refused.
#[derive(Debug, Clone, PartialEq, Eq, Hash, thiserror::Error)]
pub enum Refusal {
    /// `%`, `!` or `@` in the local part, or RFC 5321 route syntax: the internal server could
    /// relay it to another host.
    #[error("source-routed, never sent as written: {0}")]
    SourceRouted(AddressError),
    /// Bytes that are not valid UTF-8 (or a known charset): not the address that was written.
    #[error("the address holds undecodable bytes")]
    Undecodable,
    /// Anything else that cannot go on an SMTP line (a control character, a quote inside
    /// quotes, an overlong address).
    #[error("cannot be sent by SMTP: {0}")]
    Unsendable(AddressError),
}

impl Refusal {
    /// The metric label: `source_routed`, `undecodable` or `unsendable`.
    pub fn label(&self) -> &'static str {
        match self {
            Refusal::SourceRouted(_) => "source_routed",
            Refusal::Undecodable => "undecodable",
            Refusal::Unsendable(_) => "unsendable",
        }
    }

    /// The refusal for an address that did not validate, when that error means "refuse"
    /// rather than "names no mailbox" (empty, no `@`, no local part, a bad domain).
    fn of(why: &SkipReason) -> Option<Refusal> {
        match why {
            SkipReason::Undecodable => Some(Refusal::Undecodable),
            SkipReason::Invalid(e @ (AddressError::SourceRoute(_) | AddressError::RouteSyntax)) => {
                Some(Refusal::SourceRouted(e.clone()))
            }
            SkipReason::Invalid(
                e @ (AddressError::ForbiddenChar
                | AddressError::NeedsQuoting
                | AddressError::BadQuoting
                | AddressError::TooLong),
            ) => Some(Refusal::Unsendable(e.clone())),
            _ => None,
        }
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
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::EnvelopeHeader(name) => write!(f, "envelope header {name}"),
            Reason::Header(name) => write!(f, "header {name}"),
            Reason::SingleUser => f.write_str("single-user account"),
            Reason::NoLocalRecipient => f.write_str("no local recipient, sent to the postmaster"),
            Reason::Refused(r) => write!(f, "refused address {r}; sent to the postmaster"),
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
    #[error("{0}")]
    Invalid(#[from] AddressError),
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

/// A routing decision with what was left out and why: for logs and the `route` dry run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Explanation {
    /// The decision.
    pub routing: Routing,
    /// The addresses named in the headers that were not made recipients, in the order met
    /// (the refused ones too, with [`SkipReason::Refused`]).
    pub skipped: Vec<Skipped>,
    /// How many bytes of header section were parsed (at most [`HEADER_CAP`]).
    pub header_bytes: usize,
    /// Whether the header section was longer than [`HEADER_CAP`]: what lies past the cap
    /// was not read.
    pub header_truncated: bool,
}

/// Decides the return path and recipients of one stored copy. Never fails and never panics:
/// whatever the bytes, the result has at least one recipient.
pub fn route(message: &[u8], rules: &Rules) -> Routing {
    explain(message, rules).routing
}

/// [`route`], also listing the addresses that were named but skipped.
pub fn explain(message: &[u8], rules: &Rules) -> Explanation {
    let (message, header_truncated) = headers::header_section(message, HEADER_CAP);
    let parsed = headers::parser(&rules.envelope_headers).parse_headers(message);
    let fields: &[Header<'_>] = parsed.as_ref().map(|m| m.headers()).unwrap_or(&[]);
    let return_path = return_path(fields, message);

    let mut picked = Picked::new(rules);
    if let Mode::SingleUser { deliver_to } = &rules.mode {
        picked.add_unchecked(deliver_to.clone(), Reason::SingleUser);
    } else {
        envelope_recipients(fields, message, &mut picked);
        // Envelope headers that name no accepted recipient (only the catch-all's own address,
        // or only the provider's internal alias) say nothing about who the local recipients
        // are, so the message headers decide, as if there were none. Sending such copies to
        // the postmaster instead would turn a provider that always writes `Delivered-To:
        // <its own mailbox>` into one where all mail goes to the postmaster; reading To/Cc is
        // no open relay, as every address still has to be in an accepted domain.
        if picked.recipients.is_empty() {
            message_recipients(fields, message, &mut picked);
        }
    }
    if let Some(first) = picked.refused.iter().find(|r| r.to_postmaster) {
        let reason = Reason::Refused(Box::new(first.clone()));
        picked.add_unchecked(rules.postmaster.clone(), reason);
    }
    if picked.recipients.is_empty() {
        picked.add_unchecked(rules.postmaster.clone(), Reason::NoLocalRecipient);
    }
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
        },
        skipped: picked.skipped,
        header_bytes: message.len(),
        header_truncated,
    }
}

/// Step 2: the configured envelope headers; only those above the first `Received:` count
/// (the provider adds them at final delivery, one copy per recipient; lower ones could have
/// been written by the sender). All configured names found count, union: a provider may write
/// both `X-Original-To` and `Delivered-To`; the first configured name gives the reason.
fn envelope_recipients(fields: &[Header<'_>], message: &[u8], picked: &mut Picked<'_>) {
    let first_received = fields
        .iter()
        .position(|h| h.name == HeaderName::Received)
        .unwrap_or(fields.len());
    for configured in &picked.rules.envelope_headers {
        let Some(name) = headers::header_name(configured) else {
            continue;
        };
        for (i, field) in fields.iter().enumerate().filter(|(_, h)| h.name == name) {
            for addr in headers::addresses(field, message) {
                if i > first_received {
                    picked.skip(field, addr, SkipReason::BelowReceived);
                } else {
                    let reason = Reason::EnvelopeHeader(configured.trim().to_string());
                    picked.consider(field, addr, reason, true);
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
                picked.consider(field, addr, Reason::Header((*label).to_string()), false);
            }
        }
    }
}

/// The topmost `Return-Path:`; when there is none or it is unusable, the address of `Sender:`
/// then `From:` (as fetchmail does); else the null path.
fn return_path(fields: &[Header<'_>], message: &[u8]) -> Option<Address> {
    if let Some(field) = fields.iter().find(|h| h.name == HeaderName::ReturnPath) {
        let raw = message
            .get(field.offset_start as usize..field.offset_end as usize)
            .unwrap_or_default();
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

/// The recipients chosen so far, each once, and what was skipped.
struct Picked<'r> {
    rules: &'r Rules,
    recipients: Vec<Routed>,
    seen: HashSet<String>,
    skipped: Vec<Skipped>,
    refused: Vec<Refused>,
}

impl<'r> Picked<'r> {
    fn new(rules: &'r Rules) -> Self {
        Picked {
            rules,
            recipients: Vec::new(),
            seen: HashSet::new(),
            skipped: Vec::new(),
            refused: Vec::new(),
        }
    }

    /// Keeps `addr` if it is a valid address in an accepted domain (and, for an envelope
    /// header, not the catch-all mailbox itself); refuses it if it names an accepted domain
    /// but cannot be sent as written.
    fn consider(&mut self, field: &Header<'_>, addr: String, reason: Reason, envelope: bool) {
        let address = match headers::check(&addr) {
            Ok(address) => address,
            Err(why) => match Refusal::of(&why) {
                Some(refusal) if self.rules.names_accepted_domain(&addr) => {
                    return self.refuse(field, addr, refusal);
                }
                _ => return self.skip(field, addr, why),
            },
        };
        if !self.rules.accepts(&address) {
            return self.skip(field, addr, SkipReason::ForeignDomain);
        }
        if envelope
            && let Some(own) = &self.rules.own_address
            && own.dedup_key() == address.dedup_key()
        {
            return self.skip(field, addr, SkipReason::OwnAddress);
        }
        self.add_unchecked(address, reason);
    }

    /// Adds a recipient that needs no domain check (single-user target, postmaster).
    fn add_unchecked(&mut self, address: Address, reason: Reason) {
        if self.seen.insert(address.dedup_key()) {
            self.recipients.push(Routed { address, reason });
        }
    }

    fn refuse(&mut self, field: &Header<'_>, address: String, why: Refusal) {
        let to_postmaster = !matches!(why, Refusal::SourceRouted(_))
            || self.rules.source_routed == SourceRouted::Postmaster;
        self.refused.push(Refused {
            header: field.name.as_str().to_string(),
            address: address.clone(),
            why: why.clone(),
            to_postmaster,
        });
        self.skip(field, address, SkipReason::Refused(why));
    }

    fn skip(&mut self, field: &Header<'_>, address: String, why: SkipReason) {
        self.skipped.push(Skipped {
            header: field.name.as_str().to_string(),
            address,
            why,
        });
    }
}

#[cfg(test)]
mod tests;
