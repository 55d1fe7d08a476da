//! Pure: the `kind` label of `mailferry_poll_errors_total` for a failed pass, one of
//! [`names::ERROR_KINDS`](super::names::ERROR_KINDS).

use crate::fetch::{FetchError, TransportError};
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

/// The kind of a failed upstream session, as the mailbox kind's error says it.
pub fn of_fetch(error: &FetchError) -> &'static str {
    match error.session_error() {
        Some(e) => e.metrics_kind(),
        // Another instance took the account over: the state store's lease.
        None => "state",
    }
}

/// The kind of a session lost below its protocol.
pub(crate) fn of_transport(error: &TransportError) -> &'static str {
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
    use crate::fetch::{ImapError, Pop3Error};
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
