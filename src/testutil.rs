//! Helpers shared by the tests of several modules: a throw-away CA for real TLS handshakes.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::{self, ServerConfig};

/// A test CA made with the openssl CLI (in a temporary directory, removed on drop), and a
/// server-side acceptor presenting a certificate it signed for localhost and 127.0.0.1.
pub(crate) struct TestCa {
    _dir: tempfile::TempDir,
    /// The CA certificate (PEM): what a client needs as `ca_file` to trust the acceptor.
    pub(crate) ca_pem: PathBuf,
    /// Server-side TLS with the certificate signed by the CA.
    pub(crate) acceptor: TlsAcceptor,
}

/// Runs the openssl CLI in `dir`; panics if it fails.
fn openssl(dir: &Path, args: &[&str]) {
    let out = std::process::Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl CLI");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A CA, and a server certificate it signed for localhost and 127.0.0.1.
pub(crate) fn test_ca() -> TestCa {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path();
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    openssl(
        p,
        &[
            &["req", "-x509"][..],
            &ec,
            &[
                "-keyout",
                "ca.key",
                "-out",
                "ca.pem",
                "-days",
                "2",
                "-subj",
                "/CN=mailferry test CA",
            ],
        ]
        .concat(),
    );
    openssl(
        p,
        &[
            &["req"][..],
            &ec,
            &[
                "-keyout",
                "server.key",
                "-out",
                "server.csr",
                "-subj",
                "/CN=localhost",
            ],
        ]
        .concat(),
    );
    std::fs::write(
        p.join("ext.cnf"),
        "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    openssl(
        p,
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-set_serial",
            "2",
            "-days",
            "2",
            "-extfile",
            "ext.cnf",
            "-out",
            "server.pem",
        ],
    );
    let certs = CertificateDer::pem_file_iter(p.join("server.pem"))
        .unwrap()
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_file(p.join("server.key")).unwrap();
    let config =
        ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .unwrap();
    TestCa {
        ca_pem: p.join("ca.pem"),
        _dir: dir,
        acceptor: TlsAcceptor::from(Arc::new(config)),
    }
}
