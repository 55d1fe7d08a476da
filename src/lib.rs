//! mailferry collects mail from external POP3/IMAP mailboxes and delivers it by SMTP to an
//! organisation's internal mail server, exactly once per recipient, deleting nothing upstream
//! before the internal server accepted it.
//!
//! # Layout
//!
//! The folders are the stages of the mail flow, in the order a message meets them:
//!
//! ```text
//! fetch/      the `Mailbox` seam (mailbox.rs: list, fetch, mark for deletion, commit) and
//!             the kinds of mailbox behind it, one folder each: POP3 (fetch/pop3/) and IMAP
//!             (fetch/imap/), each with its session.rs (its `Mailbox`) and kind.rs (all else
//!             it says about itself, the `MailboxKind` of fetch/kind.rs: name, ports,
//!             account keys, test-connection steps, errors; `config::Protocol::kind` lists
//!             the kinds); proxy.rs (SOCKS5 and HTTP CONNECT), transport.rs (connect and
//!             download deadlines), idle.rs
//! route/      pure: headers + config -> recipients, each with the reason it was chosen
//!             (addrlist.rs reads address lists, rewrite.rs, directory.rs, explain.rs is
//!             what `mailferry route` prints)
//! relay/      the `Relay` seam: one transaction per message to the internal server, a reply
//!             per RCPT; the project's own SMTP client (pipelined, streaming) behind it
//! retention/  pure: when the upstream copy of a settled message may be deleted
//! state/      the `StateStore` seam: which messages of which account reached which
//!             recipients, attempts and back-off, quarantine; the `Store` enum (store.rs)
//!             chooses SQLite (sqlite.rs, one process per state_dir: lock.rs) or PostgreSQL
//!             (postgres.rs: many instances, account leases in postgres/lease.rs, the
//!             accounts table in postgres/shared.rs); status.rs is `mailferry status`
//! ```
//!
//! Around them: `config/` (the YAML file, every error with its line: `load/` validates the
//! text without reading anything else, `accounts_dir.rs` adds one account per file (and the
//! accounts table's) checked by the same code, `resolve.rs` then reads the password files and
//! variables and the certificate files it names), `tls/` (one TLS setup
//! for every connection, POP3, IMAP and the relay: trust, pinning, client certificates, and
//! certificate errors an administrator can act on), `address.rs` (validated
//! envelope addresses and accepted-domain patterns, shared by every stage), `recipient.rs`
//! (one recipient and where it stands — pending, delivered, a duplicate, re-routed,
//! temporarily or permanently refused, with the reply that said so — and a whole-message
//! refusal: the one shape of that fact from route to relay to state), `sasl/` (the SASL
//! client free of I/O, shared by POP3, IMAP and the relay: SCRAM, CRAM-MD5, NTLM, PLAIN,
//! LOGIN, XOAUTH2, OAUTHBEARER, and the choice of the strongest offered), `oauth/` (OAuth2
//! access tokens for XOAUTH2/OAUTHBEARER: the grants, renewal, the refresh token kept under
//! `state_dir`, the device-code login), `metrics/` (metric names in names.rs, the /metrics,
//! /healthz, /readyz listener in http.rs, the status page in page.rs and status.rs) and
//! `pipeline/` (the wiring: one poller per account, its schedule and shutdown in `mod.rs`,
//! hot reload in `reload.rs`, PostgreSQL's accounts table taken in at start and reload (and
//! `mailferry accounts`) in `shared.rs`, back-off after refused logins and failed passes and the
//! polling jitter in `backoff.rs`, the PostgreSQL lease around a pass in `lease.rs`, one poll
//! pass in `pass.rs` (downloading one message at a time while the ones before it are relayed
//! and recorded side by side, within `memory_budget`: `budget.rs`), one message's way through
//! route → relay → state in `deliver.rs`, written against the three seams (each has an in-memory
//! twin, `memory.rs`, for `pipeline/tests.rs`), the pure per-message decisions — attempt, wait,
//! give up — in `plan.rs`, the pure delivery planner — who is sent to, what each reply and the
//! postmaster's copy settle, what is recorded — in `decide.rs`, the postmaster's notices in
//! `notice.rs`). `testkit/` holds the tests'
//! scripted SMTP and POP3 fakes and test CA, for unit tests and (feature `testkit`) tests/.
//! `probe/` is `mailferry test-connection`: every step to each mailbox and to the relay,
//! reported in words, nothing downloaded or changed.

#![warn(missing_docs)]

pub mod address;
pub mod config;
pub mod fetch;
pub mod metrics;
pub mod oauth;
pub mod pipeline;
pub mod probe;
pub mod recipient;
pub mod relay;
pub mod retention;
pub mod route;
pub mod sasl;
pub mod state;
pub mod tls;

#[cfg(any(test, feature = "testkit"))]
pub mod testkit;
