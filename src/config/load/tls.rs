//! The TLS keys, the same in an account and in `relay:`: `ca_file`, `tls_fingerprint`,
//! `verify_certificate`, `tls_server_name`, `tls_min_version`, `client_cert`, `client_key`.
//! The files they name are listed for the resolve step, which reads them, so that
//! check-config finds a bad one.

use std::path::PathBuf;

use super::yaml::{Kind, Node};
use super::{Checker, Section, Source};
use crate::config::{TlsMode, TlsOptions, TlsVersion};
use crate::tls::Fingerprint;

impl Checker<'_> {
    /// The TLS keys of `s`; `mode` is the section's `tls` (`None` when it was invalid).
    pub(super) fn tls_options(
        &mut self,
        s: &Section<'_>,
        mode: Option<TlsMode>,
    ) -> Option<TlsOptions> {
        let defaults = TlsOptions::default();
        let mut ok = true;
        let ca_file = self.ca_file(s);
        let fingerprint = match self.tls_key(s, mode, "tls_fingerprint", &mut ok) {
            None => Some(None),
            Some(n) => self.fingerprint(n, &s.name("tls_fingerprint")).map(Some),
        };
        let verify_certificate = match self.tls_key(s, mode, "verify_certificate", &mut ok) {
            None => Some(defaults.verify_certificate),
            Some(n) => self.boolean(n, &s.name("verify_certificate")),
        };
        let server_name = match self.tls_key(s, mode, "tls_server_name", &mut ok) {
            None => Some(None),
            Some(n) => self.host(n, &s.name("tls_server_name")).map(Some),
        };
        let min_version = match self.tls_key(s, mode, "tls_min_version", &mut ok) {
            None => Some(defaults.min_version),
            Some(n) => self.min_version(n, &s.name("tls_min_version")),
        };
        let cert = self.tls_key(s, mode, "client_cert", &mut ok);
        let key = self.tls_key(s, mode, "client_key", &mut ok);
        let (client_cert, client_key) = self.client_identity(s, cert, key)?;

        if let (Some(n), Some(false)) = (s.get("verify_certificate"), verify_certificate) {
            for key in ["ca_file", "tls_fingerprint"] {
                if s.get(key).is_some() {
                    self.err(
                        n,
                        format!(
                            "{}: false turns off every check, so {key} would not be used; remove one of them",
                            s.name("verify_certificate")
                        ),
                    );
                    ok = false;
                }
            }
        }
        if let (Some(n), Some(_)) = (s.get("tls_fingerprint"), s.get("ca_file")) {
            self.err(
                n,
                format!(
                    "{}: a pinned certificate is accepted whoever issued it, so ca_file would not be used; remove one of them",
                    s.name("tls_fingerprint")
                ),
            );
            ok = false;
        }
        let options = TlsOptions {
            ca_file: ca_file?,
            fingerprint: fingerprint?,
            verify_certificate: verify_certificate?,
            server_name: server_name?,
            min_version: min_version?,
            client_cert,
            client_key,
        };
        ok.then_some(options)
    }

    /// The value of a TLS key other than `ca_file`. With `tls: none` a key given is refused
    /// (clearing `ok`): it would suggest a protection that a plain connection does not have
    /// (`ca_file` is tolerated there, as it always was).
    fn tls_key<'n>(
        &mut self,
        s: &Section<'n>,
        mode: Option<TlsMode>,
        key: &'static str,
        ok: &mut bool,
    ) -> Option<&'n Node> {
        let n = s.get(key)?;
        if mode == Some(TlsMode::None) {
            self.err(
                n,
                format!(
                    "{}: there is no TLS with `tls: none`; use tls: tls, starttls or starttls-if-available, or remove {key}",
                    s.name(key)
                ),
            );
            *ok = false;
        }
        Some(n)
    }

    /// `ca_file`, resolved against the configuration's directory; the resolve step checks
    /// that it holds PEM certificates.
    pub(super) fn ca_file(&mut self, s: &Section<'_>) -> Option<Option<PathBuf>> {
        let Some(n) = s.get("ca_file") else {
            return Some(None);
        };
        let name = s.name("ca_file");
        let path = self.path(n, &name)?;
        let key = self.key_at(n, &name);
        self.sources.push(Source::CaFile {
            path: path.clone(),
            key,
        });
        Some(Some(path))
    }

    fn fingerprint(&mut self, node: &Node, name: &str) -> Option<Fingerprint> {
        let text = self.string(node, name)?;
        match Fingerprint::parse(&text) {
            Ok(fp) => Some(fp),
            Err(why) => {
                self.err(node, format!("{name}: {why}"));
                None
            }
        }
    }

    /// `true` or `false`, written without quotes.
    pub(super) fn boolean(&mut self, node: &Node, name: &str) -> Option<bool> {
        match &node.kind {
            Kind::Scalar { text, plain: true } if text == "true" => Some(true),
            Kind::Scalar { text, plain: true } if text == "false" => Some(false),
            _ => {
                self.err(
                    node,
                    format!("{name}: expected true or false, found {}", node.describe()),
                );
                None
            }
        }
    }

    fn min_version(&mut self, node: &Node, name: &str) -> Option<TlsVersion> {
        let text = self.string(node, name)?;
        let word = text.to_ascii_lowercase();
        let word = word.trim_start_matches("tlsv").trim_start_matches("tls");
        match word.trim() {
            "1.2" => Some(TlsVersion::V1_2),
            "1.3" => Some(TlsVersion::V1_3),
            "1" | "1.0" | "1.1" => {
                self.err(
                    node,
                    format!(
                        "{name}: TLS {text} is not offered: TLS 1.0 and 1.1 are broken and retired (RFC 8996), and mailferry's TLS library does not implement them; a server that offers nothing newer must be upgraded. Allowed values: \"1.2\" | \"1.3\""
                    ),
                );
                None
            }
            w if w.starts_with("ssl") => {
                self.err(
                    node,
                    format!(
                        "{name}: SSL ({text}) is not offered: SSLv3 and older are broken (POODLE, RFC 7568) and not implemented; a server that offers nothing newer must be upgraded. Allowed values: \"1.2\" | \"1.3\""
                    ),
                );
                None
            }
            _ => {
                self.err(
                    node,
                    format!("{name}: `{text}` is not allowed; allowed values: \"1.2\" | \"1.3\""),
                );
                None
            }
        }
    }

    /// `client_cert` and `client_key`: both or neither; the resolve step reads and checks
    /// them. `None` only when there is an error.
    #[allow(clippy::type_complexity)]
    fn client_identity(
        &mut self,
        s: &Section<'_>,
        cert: Option<&Node>,
        key: Option<&Node>,
    ) -> Option<(Option<PathBuf>, Option<PathBuf>)> {
        let (cert_name, key_name) = (s.name("client_cert"), s.name("client_key"));
        match (cert, key) {
            (None, None) => Some((None, None)),
            (Some(n), None) => {
                self.err(
                    n,
                    format!("{cert_name} needs client_key (its private key, PEM)"),
                );
                None
            }
            (None, Some(n)) => {
                self.err(
                    n,
                    format!("{key_name} needs client_cert (the certificate, PEM)"),
                );
                None
            }
            (Some(c), Some(k)) => {
                let cert = self.path(c, &cert_name);
                let key = self.path(k, &key_name);
                let (cert, key) = (cert?, key?);
                let (cert_key, key_key) = (self.key_at(c, &cert_name), self.key_at(k, &key_name));
                self.sources.push(Source::ClientIdentity {
                    section: s.path.clone(),
                    cert: cert.clone(),
                    cert_key,
                    key: key.clone(),
                    key_key,
                });
                Some((Some(cert), Some(key)))
            }
        }
    }
}
