//! Choosing how to log in: the strongest method that the server offers and the account may
//! use (its `auth_mechanisms`, its kind of secret, and TLS for plain-text methods).

use super::{Mechanism, Method};

/// What the server advertises: POP3 CAPA `SASL` and the APOP timestamp, IMAP
/// `AUTH=`, SMTP EHLO `AUTH`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Offer {
    /// The SASL mechanisms mailferry knows, in any order (unknown names left out).
    pub sasl: Vec<Mechanism>,
    /// POP3 only: the greeting carries an APOP timestamp.
    pub apop: bool,
    /// The protocol's own password command may be tried (POP3 `USER`, IMAP `LOGIN` without
    /// `LOGINDISABLED`; SMTP has none).
    pub password: bool,
}

impl Offer {
    /// The known mechanisms among advertised SASL names (any letter case).
    pub fn mechanisms<'a>(names: impl IntoIterator<Item = &'a str>) -> Vec<Mechanism> {
        names.into_iter().filter_map(Mechanism::from_name).collect()
    }

    fn methods(&self) -> impl Iterator<Item = Method> + '_ {
        let sasl = self.sasl.iter().copied().map(Method::Sasl);
        sasl.chain(self.apop.then_some(Method::Apop))
            .chain(self.password.then_some(Method::Password))
    }
}

/// What the account allows.
#[derive(Debug, Clone, Copy)]
pub struct Policy<'a> {
    /// `auth_mechanisms`: only these; empty: any.
    pub allowed: &'a [Method],
    /// Plain-text methods (PLAIN, LOGIN, the password commands, the tokens) may be used:
    /// the connection is encrypted, or the account says `tls: none`.
    pub cleartext_ok: bool,
    /// The account's secret is an OAuth2 token, not a password.
    pub token: bool,
}

/// No method is both offered and allowed: the login is not attempted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("no login method fits: the server offers {offered}; the account allows {allowed}{note}")]
pub struct NoMethod {
    /// The methods the server offers, strongest first.
    pub offered: String,
    /// The methods the account allows.
    pub allowed: String,
    /// Why offered methods were left out, if for something other than `auth_mechanisms`.
    pub note: String,
}

/// The strongest method that is offered and allowed (see [`Method::strength`]).
pub fn choose(offer: &Offer, policy: &Policy<'_>) -> Result<Method, NoMethod> {
    let allowed = |m: &Method| policy.allowed.is_empty() || policy.allowed.contains(m);
    let suits_secret = |m: &Method| match m {
        Method::Sasl(mech) => mech.uses_token() == policy.token,
        Method::Apop | Method::Password => !policy.token,
    };
    let chosen = offer
        .methods()
        .filter(|m| allowed(m) && suits_secret(m))
        .filter(|m| policy.cleartext_ok || !m.is_cleartext())
        .max_by_key(|m| m.strength());
    chosen.ok_or_else(|| {
        let mut offered: Vec<Method> = offer.methods().collect();
        offered.sort_by_key(|m| std::cmp::Reverse(m.strength()));
        let names = |list: &[Method]| {
            list.iter()
                .map(|m| m.config_name())
                .collect::<Vec<_>>()
                .join(", ")
        };
        let mut note = String::new();
        if offered.iter().any(|m| allowed(m) && !suits_secret(m)) {
            note.push_str(if policy.token {
                "; an OAuth2 token needs xoauth2 or oauthbearer"
            } else {
                "; xoauth2 and oauthbearer need an OAuth2 token"
            });
        }
        if !policy.cleartext_ok && offered.iter().any(|m| allowed(m) && m.is_cleartext()) {
            note.push_str("; plain-text methods are used only over TLS");
        }
        NoMethod {
            offered: if offered.is_empty() {
                "nothing".to_owned()
            } else {
                names(&offered)
            },
            allowed: if policy.allowed.is_empty() {
                "any".to_owned()
            } else {
                names(policy.allowed)
            },
            note,
        }
    })
}
