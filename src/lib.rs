//! mailferry collects mail from external POP3/IMAP mailboxes and delivers it by SMTP to an
//! organisation's internal mail server, exactly once per recipient, deleting nothing upstream
//! before the internal server accepted it.
//!
//! # Layout
//!
//! The folders are the stages of the mail flow, in the order a message meets them:
//!
//! ```text
//! fetch/      account poller: POP3 (fetch/pop3/) or IMAP (fetch/imap/) over TLS
//!             (fetch/tls.rs), one seam for the pass (fetch/mailbox.rs); lists, downloads
//! route/      pure: headers + config -> recipients, each with the reason it was chosen
//! relay/      one SMTP transaction per message to the internal server, a reply per RCPT
//! retention/  pure: when the upstream copy of a settled message may be deleted
//! state/      SQLite: which UIDLs of which account reached which recipients, attempts and
//!             back-off, quarantine (quarantine.rs), one process per state_dir (lock.rs)
//! ```
//!
//! Around them: `config/` (the YAML file, every error with its line), `address.rs` (validated
//! envelope addresses and accepted-domain patterns, shared by every stage), `metrics.rs`
//! (metric names and the /metrics listener) and `pipeline/` (the wiring: one poller per
//! account and shutdown in `mod.rs`, one poll pass in `pass.rs`, one message's way through
//! route → relay → state in `deliver.rs`, the pure per-message decisions — attempt, wait,
//! give up — in `plan.rs`, the postmaster's notices in `notice.rs`).

pub mod address;
pub mod config;
pub mod fetch;
pub mod metrics;
pub mod pipeline;
pub mod relay;
pub mod retention;
pub mod route;
pub mod state;

#[cfg(test)]
mod testutil;
