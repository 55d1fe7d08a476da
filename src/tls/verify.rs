//! Whether to trust the certificate a server presents: webpki's checks, plus the two ways an
//! administrator names one certificate directly (in `ca_file`, or by `tls_fingerprint`), and
//! a refusal that says what is wrong and what to do about it.

use std::fmt;
use std::sync::Arc;

use tokio_rustls::rustls::client::WebPkiServerVerifier;
use tokio_rustls::rustls::client::danger::{
    HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier,
};
use tokio_rustls::rustls::crypto::{
    CryptoProvider, verify_tls12_signature, verify_tls13_signature,
};
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use tokio_rustls::rustls::server::ParsedCertificate;
use tokio_rustls::rustls::{
    self, CertificateError, DigitallySignedStruct, OtherError, SignatureScheme,
};

use super::fingerprint::Fingerprint;
use super::x509::{self, CertInfo};

/// Why a server's certificate was refused: the name it was checked for, its SHA-256
/// fingerprint, and the problem. Its `Display` is one sentence with the fix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertRefusal {
    /// The name the certificate was checked for (`tls_server_name`, else the host).
    pub server: String,
    /// The fingerprint of the certificate the server presented.
    pub fingerprint: Fingerprint,
    /// What is wrong with it.
    pub problem: Problem,
}

/// What is wrong with a server's certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Problem {
    /// Its validity period ended at this time (Unix seconds).
    Expired {
        /// Unix seconds.
        not_after: i64,
    },
    /// Its validity period starts at this time (Unix seconds).
    NotYetValid {
        /// Unix seconds.
        not_before: i64,
    },
    /// It is not for the server's name; these are the names it is for.
    WrongName {
        /// The names the certificate is for.
        presented: Vec<String>,
    },
    /// It is self-signed and nothing trusts it.
    SelfSigned,
    /// It was issued by a CA that is not trusted (named by its common name, if any).
    UnknownIssuer {
        /// The issuer's common name, if it has one.
        issuer: Option<String>,
    },
    /// `tls_fingerprint` pins another certificate.
    PinMismatch {
        /// The fingerprint `tls_fingerprint` gives.
        pinned: Fingerprint,
    },
    /// Anything else webpki refused it for.
    Other(String),
}

impl fmt::Display for CertRefusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (server, fp) = (&self.server, &self.fingerprint);
        match &self.problem {
            Problem::Expired { not_after } => write!(
                f,
                "the certificate of {server} expired on {} (SHA-256 {fp}): the server needs a renewed certificate",
                x509::format_time(*not_after)
            ),
            Problem::NotYetValid { not_before } => write!(
                f,
                "the certificate of {server} is not valid before {} (SHA-256 {fp}): check the clock of this machine and of the server",
                x509::format_time(*not_before)
            ),
            Problem::WrongName { presented } if presented.is_empty() => write!(
                f,
                "the certificate of {server} names no host at all (no subjectAltName, no common name) (SHA-256 {fp}): trust it by tls_fingerprint: \"sha256:{fp}\", or have the server use a certificate for {server}"
            ),
            Problem::WrongName { presented } => write!(
                f,
                "the certificate of {server} is for {}, not {server} (SHA-256 {fp}): connect by one of those names, or set tls_server_name to the one that is this server",
                presented.join(", ")
            ),
            Problem::SelfSigned => write!(
                f,
                "the certificate of {server} is self-signed and not trusted (SHA-256 {fp}): if that is the server's certificate, put it in ca_file, or pin it with tls_fingerprint: \"sha256:{fp}\""
            ),
            Problem::UnknownIssuer { issuer } => write!(
                f,
                "the certificate of {server} was issued by {}, which is not a trusted CA (SHA-256 {fp}): put that CA's certificate in ca_file, or pin this certificate with tls_fingerprint: \"sha256:{fp}\"",
                issuer.as_deref().map_or_else(
                    || "a CA with no common name".to_owned(),
                    |cn| format!("\"{cn}\"")
                )
            ),
            Problem::PinMismatch { pinned } => write!(
                f,
                "the certificate of {server} has the SHA-256 fingerprint {fp}, but tls_fingerprint pins {pinned}: refused; if the server's certificate was replaced on purpose, check the new one and put its fingerprint in tls_fingerprint"
            ),
            Problem::Other(why) => write!(
                f,
                "the certificate of {server} was refused: {why} (SHA-256 {fp})"
            ),
        }
    }
}

impl std::error::Error for CertRefusal {}

/// How a server's certificate is judged.
#[derive(Debug)]
pub(crate) enum Policy {
    /// `tls_fingerprint`: exactly this certificate, nothing else (no chain, name or date
    /// check: the fingerprint names the one certificate the administrator checked).
    Pinned(Fingerprint),
    /// `verify_certificate: false`: anything (the handshake signature is still checked).
    Unverified,
    /// webpki's checks against the system store and `ca_file`, except that a certificate
    /// byte-identical to one in `ca_file` is trusted as it is (dates and name still checked).
    WebPki {
        webpki: Arc<WebPkiServerVerifier>,
        trusted: Vec<CertificateDer<'static>>,
    },
}

/// The rustls verifier of every mailferry connection.
#[derive(Debug)]
pub(crate) struct Verifier {
    pub policy: Policy,
    pub provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for Verifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let problem = match &self.policy {
            Policy::Unverified => None,
            Policy::Pinned(pinned) => (Fingerprint::of(end_entity) != *pinned)
                .then_some(Problem::PinMismatch { pinned: *pinned }),
            Policy::WebPki { trusted, .. } if trusted.iter().any(|t| t == end_entity) => {
                check_trusted_leaf(end_entity, server_name, now).err()
            }
            Policy::WebPki { webpki, .. } => webpki
                .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
                .err()
                .map(|e| describe(&e, x509::parse(end_entity).as_ref())),
        };
        match problem {
            None => Ok(ServerCertVerified::assertion()),
            Some(problem) => Err(rustls::Error::InvalidCertificate(CertificateError::Other(
                OtherError(Arc::new(CertRefusal {
                    server: name_text(server_name),
                    fingerprint: Fingerprint::of(end_entity),
                    problem,
                })),
            ))),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// A certificate the administrator put in `ca_file` itself: trusted as it is (a self-signed
/// certificate made with `openssl req -x509` says CA:TRUE, which webpki refuses as a
/// server's certificate), but still only within its dates and for its names. Without any
/// subjectAltName its common name is the name, as OpenSSL-based clients take it.
fn check_trusted_leaf(
    cert: &CertificateDer<'_>,
    server_name: &ServerName<'_>,
    now: UnixTime,
) -> Result<(), Problem> {
    let info = x509::parse(cert)
        .ok_or_else(|| Problem::Other("the certificate cannot be parsed".to_owned()))?;
    let now = i64::try_from(now.as_secs()).unwrap_or(i64::MAX);
    if now > info.not_after {
        return Err(Problem::Expired {
            not_after: info.not_after,
        });
    }
    if now < info.not_before {
        return Err(Problem::NotYetValid {
            not_before: info.not_before,
        });
    }
    let parsed = ParsedCertificate::try_from(cert).map_err(|e| Problem::Other(e.to_string()))?;
    match rustls::client::verify_server_name(&parsed, server_name) {
        Ok(()) => Ok(()),
        Err(rustls::Error::InvalidCertificate(CertificateError::NotValidForNameContext {
            presented,
            ..
        })) if presented.is_empty() => {
            let wanted = name_text(server_name);
            match info.subject_cn {
                Some(cn) if same_host(&cn, &wanted) => Ok(()),
                cn => Err(Problem::WrongName {
                    presented: cn.into_iter().collect(),
                }),
            }
        }
        Err(e) => Err(describe(&e, Some(&info))),
    }
}

/// A webpki refusal in an administrator's words.
fn describe(error: &rustls::Error, info: Option<&CertInfo>) -> Problem {
    let self_issued = info.is_some_and(|i| i.self_issued);
    let rustls::Error::InvalidCertificate(error) = error else {
        return Problem::Other(error.to_string());
    };
    match error {
        CertificateError::ExpiredContext { not_after, .. } => Problem::Expired {
            not_after: i64::try_from(not_after.as_secs()).unwrap_or(i64::MAX),
        },
        CertificateError::NotValidYetContext { not_before, .. } => Problem::NotYetValid {
            not_before: i64::try_from(not_before.as_secs()).unwrap_or(i64::MAX),
        },
        CertificateError::Expired if info.is_some() => Problem::Expired {
            not_after: info.map_or(0, |i| i.not_after),
        },
        CertificateError::NotValidForNameContext { presented, .. } => Problem::WrongName {
            presented: presented.iter().map(|name| plain_name(name)).collect(),
        },
        // An untrusted self-signed certificate fails as UnknownIssuer, or, when it says
        // CA:TRUE (as `openssl req -x509` makes it), as CaUsedAsEndEntity.
        _ if self_issued => Problem::SelfSigned,
        CertificateError::UnknownIssuer => Problem::UnknownIssuer {
            issuer: info.and_then(|i| i.issuer_cn.clone()),
        },
        other => Problem::Other(other.to_string()),
    }
}

/// A name as webpki presents it (`DnsName("a.example")`, `IpAddress(192.0.2.1)`), as the
/// administrator would write it.
fn plain_name(name: &str) -> String {
    let inner = ["DnsName(", "IpAddress(", "UriName(", "OtherName("]
        .iter()
        .find_map(|kind| name.strip_prefix(kind)?.strip_suffix(')'));
    match inner {
        Some(inner) => inner.trim_matches('"').to_owned(),
        None => name.to_owned(),
    }
}

/// The server name as text (a DNS name or an IP address).
pub(crate) fn name_text(name: &ServerName<'_>) -> String {
    name.to_str().into_owned()
}

/// Host names compare without case and without a final dot; addresses as written.
fn same_host(a: &str, b: &str) -> bool {
    a.trim_end_matches('.')
        .eq_ignore_ascii_case(b.trim_end_matches('.'))
}

#[cfg(test)]
mod tests {
    #[test]
    fn webpki_names_are_shown_as_written() {
        assert_eq!(
            super::plain_name("DnsName(\"mail.example\")"),
            "mail.example"
        );
        assert_eq!(super::plain_name("IpAddress(192.0.2.1)"), "192.0.2.1");
        assert_eq!(super::plain_name("mail.example"), "mail.example");
    }
}
