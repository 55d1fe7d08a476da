//! Client-side TLS for every connection mailferry makes — POP3, IMAP and the relay — built
//! from one set of options ([`TlsOptions`]: the same keys in an account and in `relay:`).
//!
//! Trust, in order:
//! - `verify_certificate: false`: nothing is checked but the handshake itself (a warning at
//!   every start, see [`warnings`]);
//! - `tls_fingerprint`: exactly the certificate with that SHA-256 fingerprint, whatever its
//!   issuer, names or dates (fetchmail's `sslfingerprint`);
//! - otherwise webpki's checks against the system trust store plus the certificates in
//!   `ca_file`, except that a server certificate byte-identical to one in `ca_file` is
//!   trusted as it is, as OpenSSL-based clients do (webpki refuses a self-signed
//!   `openssl req -x509` certificate as a server's because it says CA:TRUE); its dates are
//!   checked, and its names (its common name when it has no subjectAltName).
//!
//! The name checked, and sent as SNI, is `tls_server_name`, else the host. A refused
//! certificate fails the handshake with [`TlsError::Certificate`]: one sentence naming the
//! problem, the certificate's SHA-256 fingerprint and the fix.

mod fingerprint;
mod peer;
mod verify;
mod x509;

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use tokio::io::{AsyncRead, AsyncWrite};
use tokio_rustls::TlsConnector;
use tokio_rustls::rustls::client::WebPkiServerVerifier;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio_rustls::rustls::{self, ClientConfig, RootCertStore};

pub use fingerprint::Fingerprint;
pub use peer::{PeerTls, trust_basis};
pub use verify::{CertRefusal, Problem};

use crate::config::{Config, TlsOptions, TlsVersion};
use verify::{Policy, Verifier};

/// Why a TLS configuration could not be built or a handshake failed.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The CA file could not be read.
    #[error("cannot read the CA file {path}: {error}")]
    CaFileRead {
        /// The file named in the configuration.
        path: PathBuf,
        /// What the file system said.
        error: std::io::Error,
    },
    /// The CA file holds no usable certificate.
    #[error("the CA file {path}: {reason}")]
    CaFileInvalid {
        /// The file named in the configuration.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// `client_cert` or `client_key` cannot be read or used.
    #[error("the client certificate {path}: {reason}")]
    ClientIdentity {
        /// The file at fault.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// Nothing to verify a certificate against.
    #[error(
        "no trusted CA: the system trust store is empty (install ca-certificates) and no ca_file is set"
    )]
    NoTrustAnchors,
    /// rustls refused the configuration (e.g. a client key that does not fit the certificate).
    #[error("cannot set up TLS: {0}")]
    Setup(rustls::Error),
    /// The name to verify is neither a DNS name nor an IP address.
    #[error("{0:?} is not a valid TLS server name (a host name or an IP address)")]
    ServerName(String),
    /// The server's certificate was refused; the message says why and what to do.
    #[error("{0}")]
    Certificate(CertRefusal),
    /// The handshake failed otherwise: no common protocol version or cipher, an alert from the
    /// server, the connection lost.
    #[error("TLS handshake with {server} failed: {error}{}", hint(error))]
    Handshake {
        /// The name verified.
        server: String,
        /// What rustls or the connection said (rustls errors arrive wrapped in an I/O error).
        error: std::io::Error,
    },
}

/// What to do about a handshake failure whose cause is known, after a `; `.
fn hint(error: &std::io::Error) -> &'static str {
    use rustls::AlertDescription as Alert;
    let Some(rustls::Error::AlertReceived(alert)) = error
        .get_ref()
        .and_then(|e| e.downcast_ref::<rustls::Error>())
    else {
        return "";
    };
    match alert {
        Alert::ProtocolVersion => {
            "; the server offers no TLS version mailferry accepts (TLS 1.2 or 1.3; check tls_min_version): the server must be upgraded"
        }
        Alert::CertificateRequired => {
            "; the server requires a client certificate: set client_cert and client_key"
        }
        Alert::BadCertificate
        | Alert::UnknownCA
        | Alert::CertificateExpired
        | Alert::CertificateUnknown
        | Alert::AccessDenied => {
            "; the server refused mailferry's client certificate (client_cert)"
        }
        _ => "",
    }
}

/// TLS towards one server: the rustls configuration and the name to verify. Build it once
/// per account or relay (reading the system store costs some milliseconds); cheap to clone.
#[derive(Clone)]
pub struct TlsClient {
    config: Arc<ClientConfig>,
    name: ServerName<'static>,
}

impl std::fmt::Debug for TlsClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsClient")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl TlsClient {
    /// TLS for `host` as `options` say: reads `ca_file`, `client_cert` and `client_key`.
    pub fn new(options: &TlsOptions, host: &str) -> Result<TlsClient, TlsError> {
        let name = options.server_name.as_deref().unwrap_or(host);
        // "[::1]" is how an IPv6 literal may be written in a host field.
        let bare = name.trim_start_matches('[').trim_end_matches(']');
        let name = ServerName::try_from(bare.to_owned())
            .map_err(|_| TlsError::ServerName(name.to_owned()))?;
        Ok(TlsClient {
            config: client_config(options)?,
            name,
        })
    }

    /// The name verified and sent as SNI.
    pub fn server_name(&self) -> String {
        verify::name_text(&self.name)
    }

    /// Runs the handshake over `stream`. The caller bounds the time it may take.
    pub async fn connect<S: AsyncRead + AsyncWrite + Unpin>(
        &self,
        stream: S,
    ) -> Result<tokio_rustls::client::TlsStream<S>, TlsError> {
        TlsConnector::from(self.config.clone())
            .connect(self.name.clone(), stream)
            .await
            .map_err(|error| match refusal(&error) {
                Some(refusal) => TlsError::Certificate(refusal.clone()),
                None => TlsError::Handshake {
                    server: self.server_name(),
                    error,
                },
            })
    }
}

/// Our own refusal inside the I/O error a handshake fails with, if that is why it failed.
fn refusal(error: &std::io::Error) -> Option<&CertRefusal> {
    let rustls::Error::InvalidCertificate(rustls::CertificateError::Other(other)) =
        error.get_ref()?.downcast_ref::<rustls::Error>()?
    else {
        return None;
    };
    other.0.downcast_ref::<CertRefusal>()
}

/// The rustls client configuration for `options` (see the module documentation).
pub fn client_config(options: &TlsOptions) -> Result<Arc<ClientConfig>, TlsError> {
    let verifier = verifier(options)?;
    let provider = verifier.provider.clone();
    let versions: &[&rustls::SupportedProtocolVersion] = match options.min_version {
        TlsVersion::V1_2 => &[&rustls::version::TLS13, &rustls::version::TLS12],
        TlsVersion::V1_3 => &[&rustls::version::TLS13],
    };
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(versions)
        .map_err(TlsError::Setup)?
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    let config = match (&options.client_cert, &options.client_key) {
        (Some(cert), Some(key)) => {
            let (chain, key) = load_client_identity(cert, key)?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| TlsError::ClientIdentity {
                    path: cert.clone(),
                    reason: format!("does not go with client_key: {e}"),
                })?
        }
        _ => builder.with_no_client_auth(),
    };
    Ok(Arc::new(config))
}

/// The certificate verifier for `options`.
fn verifier(options: &TlsOptions) -> Result<Arc<Verifier>, TlsError> {
    // The provider is named explicitly: with more than one compiled in, rustls refuses to
    // guess a process-wide default.
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let policy = if !options.verify_certificate {
        Policy::Unverified
    } else if let Some(pin) = options.fingerprint {
        Policy::Pinned(pin)
    } else {
        let trusted = match &options.ca_file {
            Some(path) => load_ca_file(path)?,
            None => Vec::new(),
        };
        let mut roots = RootCertStore::empty();
        roots.add_parsable_certificates(system_roots().iter().cloned());
        // A certificate that is no usable anchor (some leaf certificates) is still trusted
        // as the server's own, byte for byte.
        roots.add_parsable_certificates(trusted.iter().cloned());
        if roots.is_empty() {
            return Err(TlsError::NoTrustAnchors);
        }
        let webpki = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
            .build()
            .map_err(|e| TlsError::Setup(rustls::Error::General(e.to_string())))?;
        Policy::WebPki { webpki, trusted }
    };
    Ok(Arc::new(Verifier { policy, provider }))
}

/// The system's CA certificates (`SSL_CERT_FILE` / `SSL_CERT_DIR` respected), read once.
fn system_roots() -> &'static [CertificateDer<'static>] {
    static ROOTS: OnceLock<Vec<CertificateDer<'static>>> = OnceLock::new();
    ROOTS.get_or_init(|| {
        let found = rustls_native_certs::load_native_certs();
        for error in &found.errors {
            tracing::debug!("reading the system trust store: {error}");
        }
        found.certs
    })
}

/// Every certificate in a PEM file; an error if there is none or one does not parse.
pub fn load_ca_file(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = std::fs::read(path).map_err(|error| TlsError::CaFileRead {
        path: path.to_owned(),
        error,
    })?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::CaFileInvalid {
            path: path.to_owned(),
            reason: format!("not valid PEM: {e}"),
        })?;
    if certs.is_empty() {
        return Err(TlsError::CaFileInvalid {
            path: path.to_owned(),
            reason: "no CERTIFICATE block in the file".to_owned(),
        });
    }
    Ok(certs)
}

/// The client certificate chain (PEM, leaf first) and its private key (PEM: PKCS#8, PKCS#1
/// or SEC1).
pub fn load_client_identity(
    cert: &Path,
    key: &Path,
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), TlsError> {
    let problem = |path: &Path, reason: String| TlsError::ClientIdentity {
        path: path.to_owned(),
        reason,
    };
    let pem = std::fs::read(cert).map_err(|e| problem(cert, format!("cannot read it: {e}")))?;
    let chain = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| problem(cert, format!("not valid PEM: {e}")))?;
    if chain.is_empty() {
        return Err(problem(cert, "no CERTIFICATE block in the file".to_owned()));
    }
    let pem = std::fs::read(key).map_err(|e| problem(key, format!("cannot read it: {e}")))?;
    let key = PrivateKeyDer::from_pem_slice(&pem).map_err(|e| {
        problem(
            key,
            format!("no usable private key (PEM PKCS#8, RSA or EC): {e}"),
        )
    })?;
    Ok((chain, key))
}

/// One warning per connection whose certificate is not verified (`verify_certificate:
/// false`), for the log at every start.
pub fn warnings(config: &Config) -> Vec<String> {
    let warning = |what: String| {
        format!(
            "{what}: verify_certificate is false: the server's certificate is not checked, so anyone on the network path can pose as the server and read the password and the mail"
        )
    };
    let mut all = Vec::new();
    if !config.relay.tls_options.verify_certificate {
        all.push(warning(format!("relay {}", config.relay.host)));
    }
    for account in &config.accounts {
        if !account.tls_options.verify_certificate {
            all.push(warning(format!("account {}", account.name)));
        }
    }
    all
}

#[cfg(test)]
mod tests;
