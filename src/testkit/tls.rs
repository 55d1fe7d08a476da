//! Test certificates for real TLS handshakes, made with the openssl CLI (installed by
//! scripts/install-deps.sh): a throw-away CA with a server certificate it signed
//! ([`test_ca`]) and client certificates ([`TestCa::issue_client`]), a self-signed server
//! certificate ([`self_signed`]) such as an administrator makes, trusted as its own anchor,
//! and one made by a plain `openssl req -x509` ([`plain_x509`]: CA:TRUE, no
//! subjectAltName).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::{self, ServerConfig};

/// A test CA made with the openssl CLI (in a temporary directory, removed on drop), and a
/// server-side acceptor presenting a certificate it signed for localhost and 127.0.0.1.
pub struct TestCa {
    _dir: tempfile::TempDir,
    /// The CA certificate (PEM): what a client needs as `ca_file` to trust the acceptor.
    pub ca_pem: PathBuf,
    /// The server certificate the acceptor presents (PEM), for localhost and 127.0.0.1.
    pub server_pem: PathBuf,
    /// Server-side TLS with the certificate signed by the CA.
    pub acceptor: TlsAcceptor,
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
pub fn test_ca() -> TestCa {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path();
    req_x509(p, "mailferry test CA", "2", "ca");
    sign(
        p,
        "server",
        "localhost",
        "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
    );
    TestCa {
        ca_pem: p.join("ca.pem"),
        server_pem: p.join("server.pem"),
        acceptor: acceptor_for(&p.join("server.pem"), &p.join("server.key")),
        _dir: dir,
    }
}

impl TestCa {
    /// A client certificate for `name` signed by this CA (for mutual TLS): the paths of its
    /// certificate and key (PEM), in the CA's directory.
    pub fn issue_client(&self, name: &str) -> (PathBuf, PathBuf) {
        let p = self._dir.path();
        sign(
            p,
            name,
            name,
            "basicConstraints=CA:FALSE\nextendedKeyUsage=clientAuth\n",
        );
        (p.join(format!("{name}.pem")), p.join(format!("{name}.key")))
    }
}

/// `<name>.pem` and `<name>.key` in `dir`: a P-256 key and a certificate for `/CN=<cn>` with
/// the extensions `ext` (openssl's extfile syntax), signed by `ca.pem`/`ca.key` there.
fn sign(dir: &Path, name: &str, cn: &str, ext: &str) {
    let (cert, key, csr, cnf) = (
        format!("{name}.pem"),
        format!("{name}.key"),
        format!("{name}.csr"),
        format!("{name}.cnf"),
    );
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            &key,
            "-out",
            &csr,
            "-subj",
            &format!("/CN={cn}"),
        ],
    );
    std::fs::write(dir.join(&cnf), ext).unwrap();
    openssl(
        dir,
        &[
            // -CAcreateserial: a serial of its own for every certificate of this CA.
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            &cnf,
            "-out",
            &cert,
        ],
    );
}

/// Makes `cert.pem` and `key.pem` in `dir` exactly as a plain
/// `openssl req -x509 -newkey ec -nodes -subj /CN=<cn>` does: self-signed, `CA:TRUE`
/// (OpenSSL's default extensions), no subjectAltName, valid ten years. webpki alone refuses
/// it as a server's certificate even when trusted; OpenSSL-based clients accept it.
pub fn plain_x509(dir: &Path, cn: &str) {
    use std::os::unix::fs::PermissionsExt;

    req_x509(dir, cn, "3650", "");
    std::fs::set_permissions(dir.join("cert.pem"), std::fs::Permissions::from_mode(0o644))
        .expect("chmod the certificate");
    std::fs::set_permissions(dir.join("key.pem"), std::fs::Permissions::from_mode(0o600))
        .expect("chmod the key");
}

/// `openssl req -x509 -newkey ec -nodes -subj /CN=<cn> -days <days>` in `dir`: the key and
/// certificate go to `<prefix>.key` and `<prefix>.pem`, or to `key.pem` and `cert.pem` for an
/// empty prefix.
fn req_x509(dir: &Path, cn: &str, days: &str, prefix: &str) {
    let (key, cert) = match prefix {
        "" => ("key.pem".to_owned(), "cert.pem".to_owned()),
        p => (format!("{p}.key"), format!("{p}.pem")),
    };
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            days,
            "-subj",
            &format!("/CN={cn}"),
            "-keyout",
            &key,
            "-out",
            &cert,
        ],
    );
}

/// A server-side acceptor presenting `dir/cert.pem` with `dir/key.pem` (as made by
/// [`self_signed`] or [`plain_x509`]).
pub fn acceptor(dir: &Path) -> TlsAcceptor {
    acceptor_for(&dir.join("cert.pem"), &dir.join("key.pem"))
}

/// A server-side acceptor presenting the certificate (chain) in `cert` with the key in `key`.
fn acceptor_for(cert: &Path, key: &Path) -> TlsAcceptor {
    let certs = CertificateDer::pem_file_iter(cert)
        .unwrap()
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_file(key).unwrap();
    let config =
        ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .unwrap();
    TlsAcceptor::from(Arc::new(config))
}

/// Makes `cert.pem` (mode 0644) and `key.pem` (mode 0600) in `dir`: a self-signed P-256
/// certificate for `localhost` and 127.0.0.1, valid ten years. It is not a CA (`CA:FALSE`)
/// so that webpki accepts it as the server's own certificate when a client trusts it as an
/// anchor (`ca_file`). Panics if openssl fails.
pub fn self_signed(dir: &Path) {
    use std::os::unix::fs::PermissionsExt;

    std::fs::write(
        dir.join("openssl.cnf"),
        "[req]
distinguished_name = dn
x509_extensions = v3
prompt = no
[dn]
CN = localhost
[v3]
basicConstraints = critical, CA:FALSE
subjectAltName = DNS:localhost, IP:127.0.0.1
keyUsage = critical, digitalSignature
extendedKeyUsage = serverAuth
subjectKeyIdentifier = hash
",
    )
    .expect("write openssl.cnf");
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "3650",
            "-config",
            "openssl.cnf",
            "-keyout",
            "key.pem",
            "-out",
            "cert.pem",
        ],
    );
    std::fs::set_permissions(dir.join("cert.pem"), std::fs::Permissions::from_mode(0o644))
        .expect("chmod the certificate");
    std::fs::set_permissions(dir.join("key.pem"), std::fs::Permissions::from_mode(0o600))
        .expect("chmod the key");
}
