//! What a finished handshake tells about the server, for `mailferry test-connection`: the
//! protocol version and cipher suite, the certificate's subject, issuer, expiry and
//! SHA-256 fingerprint, and on what grounds it was trusted.

use tokio_rustls::rustls::ClientConnection;

use super::fingerprint::Fingerprint;
use super::x509;
use crate::config::TlsOptions;

/// The TLS session with one server, once the handshake succeeded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerTls {
    /// `TLSv1.3`, `TLSv1.2`.
    pub version: String,
    /// The cipher suite, as rustls names it.
    pub cipher: String,
    /// The server certificate's subject common name, if it has one.
    pub subject: Option<String>,
    /// Its issuer's common name, if it has one.
    pub issuer: Option<String>,
    /// Issuer and subject are the same: a self-signed certificate.
    pub self_issued: bool,
    /// The end of its validity period, `YYYY-MM-DD HH:MM:SS UTC`.
    pub expires: Option<String>,
    /// Its SHA-256 fingerprint.
    pub fingerprint: Option<Fingerprint>,
}

impl PeerTls {
    /// What `conn`, after its handshake, knows about the server.
    pub fn of(conn: &ClientConnection) -> PeerTls {
        let version = conn
            .protocol_version()
            .and_then(|v| v.as_str())
            .map_or_else(|| "unknown".to_owned(), |v| v.replace("TLSv1_", "TLSv1."));
        let cipher = conn
            .negotiated_cipher_suite()
            .and_then(|c| c.suite().as_str())
            .unwrap_or("unknown")
            .to_owned();
        let leaf = conn.peer_certificates().and_then(|chain| chain.first());
        let info = leaf.and_then(|cert| x509::parse(cert.as_ref()));
        PeerTls {
            version,
            cipher,
            subject: info.as_ref().and_then(|i| i.subject_cn.clone()),
            issuer: info.as_ref().and_then(|i| i.issuer_cn.clone()),
            self_issued: info.as_ref().is_some_and(|i| i.self_issued),
            expires: info.as_ref().map(|i| x509::format_time(i.not_after)),
            fingerprint: leaf.map(Fingerprint::of),
        }
    }
}

/// On what grounds a certificate that passed was trusted, in words: what `options` make the
/// verifier check.
pub fn trust_basis(options: &TlsOptions) -> String {
    if !options.verify_certificate {
        return "NOT verified (verify_certificate: false): anyone on the network path could pose as this server".to_owned();
    }
    if options.fingerprint.is_some() {
        return "trusted: it is the certificate tls_fingerprint pins".to_owned();
    }
    match &options.ca_file {
        Some(ca) => format!(
            "verified: valid, for this host name, issued by a CA of the system trust store or of ca_file {} (or that certificate itself)",
            ca.display()
        ),
        None => "verified: valid, for this host name, issued by a CA of the system trust store"
            .to_owned(),
    }
}
