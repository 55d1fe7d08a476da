//! Client-side TLS for the upstream mailboxes: certificates are verified against the system
//! trust store (rustls-platform-verifier), plus an optional PEM CA file from the account.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio_rustls::TlsConnector;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};
use tokio_rustls::rustls::{self, ClientConfig};

/// Why a TLS configuration could not be built or a handshake failed.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The CA file could not be read.
    #[error("cannot read CA file {path}: {source}")]
    CaFileRead {
        /// The file named in the configuration.
        path: PathBuf,
        /// What the file system said.
        source: std::io::Error,
    },
    /// The CA file holds no usable certificate.
    #[error("CA file {path}: {reason}")]
    CaFileInvalid {
        /// The file named in the configuration.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The certificate verifier could not be set up (e.g. no trust anchors at all).
    #[error("cannot set up certificate verification: {0}")]
    Verifier(rustls::Error),
    /// The host name is neither a DNS name nor an IP address.
    #[error("{0:?} is not a valid TLS server name")]
    ServerName(String),
    /// The handshake failed: certificate refused, protocol mismatch, connection lost.
    #[error("TLS handshake with {host} failed: {source}")]
    Handshake {
        /// The server's name as verified.
        host: String,
        /// The underlying error (rustls errors arrive wrapped in an I/O error).
        source: std::io::Error,
    },
}

/// rustls client config verifying against the system trust store (rustls-platform-verifier),
/// plus the PEM CA file if given.
///
/// Reading the system store costs some milliseconds: build this once per account, not per
/// connection, where that is easy.
pub fn client_config(ca_file: Option<&Path>) -> Result<Arc<ClientConfig>, TlsError> {
    let extra_roots = match ca_file {
        Some(path) => load_ca_file(path)?,
        None => Vec::new(),
    };
    // The provider is named explicitly: with more than one compiled in, rustls refuses to
    // guess a process-wide default.
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier =
        rustls_platform_verifier::Verifier::new_with_extra_roots(extra_roots, provider.clone())
            .map_err(TlsError::Verifier)?;
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(TlsError::Verifier)?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// Every certificate in a PEM file; an error if there is none or one does not parse.
fn load_ca_file(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = std::fs::read(path).map_err(|source| TlsError::CaFileRead {
        path: path.to_owned(),
        source,
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

/// Runs a TLS handshake over `stream`, verifying the certificate for `host` (a DNS name or an
/// IP address). The caller bounds the time it may take.
pub async fn connect_tls<S: AsyncRead + AsyncWrite + Unpin>(
    stream: S,
    host: &str,
    cfg: Arc<ClientConfig>,
) -> Result<tokio_rustls::client::TlsStream<S>, TlsError> {
    // "[::1]" is how an IPv6 literal may be written in a host field.
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    let name =
        ServerName::try_from(bare.to_owned()).map_err(|_| TlsError::ServerName(host.to_owned()))?;
    TlsConnector::from(cfg)
        .connect(name, stream)
        .await
        .map_err(|source| TlsError::Handshake {
            host: host.to_owned(),
            source,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_ca_file_is_a_read_error() {
        let err = client_config(Some(Path::new("/nonexistent/ca.pem"))).unwrap_err();
        assert!(matches!(err, TlsError::CaFileRead { .. }), "{err:?}");
    }

    #[test]
    fn ca_file_without_certificate_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ca.pem");
        std::fs::write(&path, "just text\n").unwrap();
        let err = client_config(Some(&path)).unwrap_err();
        assert!(matches!(err, TlsError::CaFileInvalid { .. }), "{err:?}");
    }

    #[test]
    fn system_store_alone_builds() {
        // The test machines have a system CA bundle (ca-certificates).
        client_config(None).unwrap();
    }

    #[tokio::test]
    async fn bad_server_name_is_refused_before_any_io() {
        let cfg = client_config(None).unwrap();
        let (client, _server) = tokio::io::duplex(64);
        let err = connect_tls(client, "not a name", cfg).await.unwrap_err();
        assert!(matches!(err, TlsError::ServerName(_)), "{err:?}");
    }
}
