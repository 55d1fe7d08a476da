//! Pure: the `kind` label of `mailferry_poll_errors_total` for a failed pass, one of
//! [`names::ERROR_KINDS`](super::names::ERROR_KINDS).

use crate::fetch::{FetchError, ImapError, Pop3Error, TransportError};
use crate::pipeline::PassError;
use crate::relay::RelayError;

/// The kind of a pass that ended in `error`.
pub fn of_pass(error: &PassError) -> &'static str {
    match error {
        PassError::Fetch(e) => of_fetch(e),
        PassError::State(_) => "state",
        PassError::Deadline(_) => "timeout",
        PassError::InitialChoice { .. } | PassError::Panicked(_) => "other",
    }
}

/// The kind of a failed upstream session.
pub fn of_fetch(error: &FetchError) -> &'static str {
    match error {
        FetchError::Pop3(e) => match e {
            Pop3Error::Transport(e) => of_transport(e),
            Pop3Error::ConnectionClosed => "connect",
            Pop3Error::Tls(_) | Pop3Error::StlsNotOffered => "tls",
            Pop3Error::AuthFailed { .. }
            | Pop3Error::PlaintextRefused
            | Pop3Error::ApopNotOffered
            | Pop3Error::NoLoginMethod(_)
            | Pop3Error::Sasl(_)
            | Pop3Error::InvalidCredential(_) => "login",
            Pop3Error::ServerError { .. }
            | Pop3Error::Protocol(_)
            | Pop3Error::LineTooLong { .. }
            | Pop3Error::ResponseTooLong { .. } => "protocol",
            Pop3Error::MessageTooLarge { .. } => "other",
        },
        FetchError::Imap(e) => match e {
            ImapError::Transport(e) => of_transport(e),
            ImapError::ConnectionClosed | ImapError::Bye(_) => "connect",
            ImapError::Tls(_) | ImapError::StarttlsNotOffered => "tls",
            ImapError::AuthFailed { .. }
            | ImapError::PlaintextRefused
            | ImapError::NoLoginMethod(_)
            | ImapError::Sasl(_)
            | ImapError::InvalidCredential(_) => "login",
            ImapError::Refused { .. }
            | ImapError::Protocol(_)
            | ImapError::ResponseTooLong { .. }
            | ImapError::MessageGone(_)
            | ImapError::Folder(_) => "protocol",
            ImapError::MessageTooLarge { .. } => "other",
        },
        // Another instance took the account over: the state store's lease.
        FetchError::LeaseLost => "state",
    }
}

/// The kind of a session lost below its protocol.
fn of_transport(error: &TransportError) -> &'static str {
    match error {
        TransportError::Connect { .. } | TransportError::Proxy(_) | TransportError::Io(_) => {
            "connect"
        }
        TransportError::Timeout(_) | TransportError::Deadline { .. } => "timeout",
    }
}

/// Whether a failed transaction means the relay could not be reached (no session, a lost
/// connection, no answer): `/readyz` turns false, `mailferry_relay_up` 0. A refusal (a reply
/// the relay gave) shows that it is up.
pub fn relay_unreachable(error: &RelayError) -> bool {
    error.is_unavailable() || matches!(error, RelayError::Io(_) | RelayError::Timeout { .. })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::names::ERROR_KINDS;
    use std::time::Duration;

    #[test]
    fn every_kind_is_one_of_the_fixed_set() {
        let errors = [
            PassError::Deadline(Duration::from_secs(1)),
            PassError::Panicked("x".into()),
            PassError::Fetch(FetchError::Pop3(Pop3Error::ConnectionClosed)),
            PassError::Fetch(FetchError::Pop3(Pop3Error::StlsNotOffered)),
            PassError::Fetch(FetchError::Pop3(Pop3Error::AuthFailed {
                method: "USER".into(),
                text: "no".into(),
                temporary: false,
            })),
            PassError::Fetch(FetchError::Imap(
                TransportError::Timeout(Duration::from_secs(1)).into(),
            )),
            PassError::Fetch(FetchError::Imap(ImapError::Protocol("?".into()))),
        ];
        let kinds: Vec<&str> = errors.iter().map(of_pass).collect();
        assert_eq!(
            kinds,
            [
                "timeout", "other", "connect", "tls", "login", "timeout", "protocol"
            ]
        );
        assert!(kinds.iter().all(|k| ERROR_KINDS.contains(k)));
    }

    #[test]
    fn a_refusal_means_the_relay_is_up_and_a_failed_connect_that_it_is_down() {
        let refused = RelayError::Data {
            reply: crate::relay::Reply {
                code: 554,
                text: "no".into(),
            },
        };
        assert!(!relay_unreachable(&refused));
        let down = RelayError::Tcp {
            host: "127.0.0.1".into(),
            port: 1,
            source: std::io::Error::from(std::io::ErrorKind::ConnectionRefused),
        };
        assert!(relay_unreachable(&down));
    }
}
