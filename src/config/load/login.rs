//! `auth`, `auth_mechanisms` and `spa`: which login methods an account, or the relay's SMTP
//! AUTH, may use. One parser for both, so the names and the errors are the same everywhere.

use super::*;
use crate::sasl::{Mechanism, Method};

/// What a login restriction is for: it decides which methods it may name.
#[derive(Clone, Copy)]
pub(super) enum LoginFor {
    /// An account of this protocol (`None`: the protocol itself is in error).
    Account(Option<Protocol>),
    /// The relay's SMTP AUTH: SASL mechanisms only, no `auth:` key.
    Relay,
}

impl Checker<'_> {
    /// `auth`, `auth_mechanisms` and `spa`: at most one of them restricts the login methods
    /// (`auth: apop` is `[apop]`, `spa: true` is `[ntlm]`); none, or `auth: auto`, allows
    /// any. The relay's section has no `auth` key. `token`: the login is with an OAuth2
    /// token (`oauth:`), so only the token mechanisms may be named.
    pub(super) fn login_methods(
        &mut self,
        s: &Section<'_>,
        to: LoginFor,
        token: bool,
    ) -> Option<AuthMethod> {
        let mut given: Vec<(String, &Node, Vec<Method>)> = Vec::new();
        let mut ok = true;
        // Asking for a key allows it: only accounts have `auth:`.
        let auth = match to {
            LoginFor::Account(_) => s.get("auth"),
            LoginFor::Relay => None,
        };
        if let Some(n) = auth {
            match self.choice(n, &s.name("auth"), AUTH_METHODS) {
                Some(Some(method)) => given.push(("auth".to_owned(), n, vec![method])),
                Some(None) => {}
                None => ok = false,
            }
        }
        if let Some(n) = s.get("spa") {
            match self.boolean(n, &s.name("spa")) {
                Some(true) => {
                    given.push(("spa".to_owned(), n, vec![Method::Sasl(Mechanism::Ntlm)]))
                }
                Some(false) => {}
                None => ok = false,
            }
        }
        if let Some(n) = s.get("auth_mechanisms") {
            match self.auth_mechanisms(n, &s.name("auth_mechanisms"), token) {
                Some(list) => given.push(("auth_mechanisms".to_owned(), n, list)),
                None => ok = false,
            }
        }
        let keys = match to {
            LoginFor::Account(_) => "auth: apop, spa: true, auth_mechanisms",
            LoginFor::Relay => "spa: true, auth_mechanisms",
        };
        if let [(first, first_node, _), rest @ ..] = given.as_slice() {
            for (key, node, _) in rest {
                self.err(
                    node,
                    format!(
                        "{}: `{key}` conflicts with `{first}` (line {}): use one of {keys}",
                        s.path, first_node.line
                    ),
                );
                ok = false;
            }
        }
        if let Some((key, node, _)) = given
            .first()
            .filter(|(k, ..)| token && k != "auth_mechanisms")
        {
            self.err(
                node,
                format!(
                    "{}: an account with oauth logs in with an OAuth2 token (xoauth2, oauthbearer)",
                    s.name(key)
                ),
            );
            ok = false;
        }
        if let Some((key, node, list)) = given.first() {
            let name = s.name(key);
            for method in list {
                let why = match (to, method) {
                    (LoginFor::Account(Some(p)), Method::Apop) if !p.kind().facts().apop => {
                        "APOP is a POP3 command; an imap account cannot use it".to_owned()
                    }
                    (LoginFor::Relay, Method::Apop | Method::Password) => format!(
                        "`{}` is not an SMTP AUTH mechanism; the relay logs in with SASL only",
                        method.config_name()
                    ),
                    _ => continue,
                };
                self.err(node, format!("{name}: {why}"));
                ok = false;
            }
        }
        if !ok {
            return None;
        }
        Some(match given.pop() {
            None => AuthMethod::Auto,
            Some((_, _, list)) => AuthMethod::Only(list),
        })
    }

    /// `auth_mechanisms`: a non-empty list of known method names, each once.
    fn auth_mechanisms(&mut self, node: &Node, name: &str, token: bool) -> Option<Vec<Method>> {
        let items = self.list(node, name)?;
        if items.is_empty() {
            self.err(
                node,
                format!(
                    "{name} is empty: name at least one method, or leave the key out to allow any"
                ),
            );
            return None;
        }
        let mut list = Vec::new();
        let mut ok = true;
        for item in items {
            let Some(word) = self.string(item, name) else {
                ok = false;
                continue;
            };
            match Method::from_config_name(&word.to_ascii_lowercase()) {
                Some(m) if m.uses_token() && !token => {
                    self.err(item, format!("{name}: {word} logs in with an OAuth2 token, and the account has a password (no oauth)"));
                    ok = false;
                }
                Some(m) if token && !m.uses_token() => {
                    self.err(item, format!("{name}: {word} logs in with a password, and the account has an OAuth2 token (oauth); use xoauth2 or oauthbearer"));
                    ok = false;
                }
                Some(m) if list.contains(&m) => {
                    self.err(item, format!("{name}: {word} is listed twice"));
                    ok = false;
                }
                Some(m) => list.push(m),
                None => {
                    let words: Vec<&str> = Method::CONFIG_NAMES.iter().map(|(w, _)| *w).collect();
                    self.err(
                        item,
                        format!(
                            "{name}: `{word}` is not a login method mailferry knows; allowed: {}",
                            words.join(" | ")
                        ),
                    );
                    ok = false;
                }
            }
        }
        ok.then_some(list)
    }
}
