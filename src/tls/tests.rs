//! The verifier's decisions, called directly with real certificates from the openssl CLI
//! (and at chosen times), and a real handshake for how a refusal reaches the caller.

use std::path::Path;

use tokio_rustls::rustls::client::danger::ServerCertVerifier;
use tokio_rustls::rustls::pki_types::UnixTime;

use super::*;
use crate::testkit::tls::{acceptor, plain_x509, test_ca};

/// The first certificate of a PEM file.
fn cert(path: &Path) -> CertificateDer<'static> {
    load_ca_file(path).unwrap().remove(0)
}

fn options(ca_file: Option<&Path>) -> TlsOptions {
    TlsOptions {
        ca_file: ca_file.map(Path::to_path_buf),
        ..TlsOptions::default()
    }
}

/// The verifier of `options`, as `client_config` builds it.
fn verifier(options: &TlsOptions) -> Arc<Verifier> {
    super::verifier(options).unwrap()
}

/// What `verifier` says about `cert` for `name` at `now` (seconds): `None` when accepted.
fn judge(
    verifier: &Verifier,
    cert: &CertificateDer<'_>,
    name: &str,
    now: Option<u64>,
) -> Option<CertRefusal> {
    let name = ServerName::try_from(name.to_owned()).unwrap();
    let now = now.map_or_else(UnixTime::now, |s| {
        UnixTime::since_unix_epoch(std::time::Duration::from_secs(s))
    });
    match verifier.verify_server_cert(cert, &[], &name, &[], now) {
        Ok(_) => None,
        Err(rustls::Error::InvalidCertificate(rustls::CertificateError::Other(other))) => Some(
            other
                .0
                .downcast_ref::<CertRefusal>()
                .expect("our refusal")
                .clone(),
        ),
        Err(e) => panic!("not our refusal: {e:?}"),
    }
}

#[test]
fn a_plain_openssl_self_signed_certificate_in_ca_file_is_trusted_for_its_name_and_dates() {
    let dir = tempfile::tempdir().unwrap();
    plain_x509(dir.path(), "mail.example.net");
    let pem = dir.path().join("cert.pem");
    let leaf = cert(&pem);
    let v = verifier(&options(Some(&pem)));
    assert_eq!(judge(&v, &leaf, "mail.example.net", None), None);
    assert_eq!(judge(&v, &leaf, "MAIL.Example.NET", None), None);

    let wrong = judge(&v, &leaf, "pop.example.net", None).unwrap();
    assert_eq!(
        wrong.problem,
        Problem::WrongName {
            presented: vec!["mail.example.net".to_owned()]
        }
    );
    let text = wrong.to_string();
    assert!(
        text.contains("is for mail.example.net, not pop.example.net"),
        "{text}"
    );
    assert!(text.contains("tls_server_name"), "{text}");

    // Ten years and a day later.
    let later = UnixTime::now().as_secs() + 3_651 * 86_400;
    let expired = judge(&v, &leaf, "mail.example.net", Some(later)).unwrap();
    assert!(
        matches!(expired.problem, Problem::Expired { .. }),
        "{expired:?}"
    );
    let text = expired.to_string();
    assert!(text.contains("expired on 20"), "{text}");
    assert!(text.contains(&Fingerprint::of(&leaf).to_string()), "{text}");

    let early = judge(&v, &leaf, "mail.example.net", Some(86_400)).unwrap();
    assert!(
        matches!(early.problem, Problem::NotYetValid { .. }),
        "{early:?}"
    );
}

#[test]
fn an_untrusted_self_signed_certificate_is_refused_naming_the_fix_and_its_fingerprint() {
    let dir = tempfile::tempdir().unwrap();
    plain_x509(dir.path(), "localhost");
    let leaf = cert(&dir.path().join("cert.pem"));
    // Another CA in ca_file, and the system store: neither knows this certificate.
    let ca = test_ca();
    let v = verifier(&options(Some(&ca.ca_pem)));
    let refusal = judge(&v, &leaf, "localhost", None).unwrap();
    assert_eq!(refusal.problem, Problem::SelfSigned);
    assert_eq!(refusal.fingerprint, Fingerprint::of(&leaf));
    let text = refusal.to_string();
    assert!(text.contains("self-signed and not trusted"), "{text}");
    assert!(text.contains("ca_file"), "{text}");
    assert!(
        text.contains(&format!(
            "tls_fingerprint: \"sha256:{}\"",
            refusal.fingerprint
        )),
        "{text}"
    );
}

#[test]
fn a_ca_signed_certificate_keeps_webpki_strictness() {
    let ca = test_ca();
    let leaf = cert(&ca.server_pem);
    let v = verifier(&options(Some(&ca.ca_pem)));
    assert_eq!(judge(&v, &leaf, "localhost", None), None);
    assert_eq!(judge(&v, &leaf, "127.0.0.1", None), None);
    let wrong = judge(&v, &leaf, "mail.example.net", None).unwrap();
    assert_eq!(
        wrong.problem,
        Problem::WrongName {
            presented: vec!["localhost".to_owned(), "127.0.0.1".to_owned()]
        }
    );
    // Valid two days.
    let later = UnixTime::now().as_secs() + 3 * 86_400;
    let expired = judge(&v, &leaf, "localhost", Some(later)).unwrap();
    assert!(
        matches!(expired.problem, Problem::Expired { .. }),
        "{expired:?}"
    );

    let unknown = judge(&verifier(&options(None)), &leaf, "localhost", None).unwrap();
    assert_eq!(
        unknown.problem,
        Problem::UnknownIssuer {
            issuer: Some("mailferry test CA".to_owned())
        }
    );
    assert!(
        unknown
            .to_string()
            .contains("issued by \"mailferry test CA\", which is not a trusted CA"),
        "{unknown}"
    );
}

#[test]
fn a_pinned_fingerprint_accepts_exactly_that_certificate() {
    let ca = test_ca();
    let leaf = cert(&ca.server_pem);
    let dir = tempfile::tempdir().unwrap();
    plain_x509(dir.path(), "localhost");
    let other = cert(&dir.path().join("cert.pem"));

    let pinned = TlsOptions {
        fingerprint: Some(Fingerprint::of(&other)),
        ..TlsOptions::default()
    };
    let v = verifier(&pinned);
    // Whatever the name: the fingerprint is the whole check.
    assert_eq!(judge(&v, &other, "localhost", None), None);
    assert_eq!(judge(&v, &other, "anything.example", None), None);
    let refusal = judge(&v, &leaf, "localhost", None).unwrap();
    assert_eq!(
        refusal.problem,
        Problem::PinMismatch {
            pinned: Fingerprint::of(&other)
        }
    );
    let text = refusal.to_string();
    assert!(text.contains(&Fingerprint::of(&leaf).to_string()), "{text}");
    assert!(
        text.contains(&Fingerprint::of(&other).to_string()),
        "{text}"
    );
}

#[test]
fn verify_certificate_false_accepts_anything() {
    let dir = tempfile::tempdir().unwrap();
    plain_x509(dir.path(), "localhost");
    let leaf = cert(&dir.path().join("cert.pem"));
    let off = TlsOptions {
        verify_certificate: false,
        ..TlsOptions::default()
    };
    assert_eq!(
        judge(&verifier(&off), &leaf, "elsewhere.example", None),
        None
    );
}

#[test]
fn files_that_are_missing_or_wrong_are_named() {
    let err = client_config(&options(Some(Path::new("/nonexistent/ca.pem")))).unwrap_err();
    assert!(matches!(err, TlsError::CaFileRead { .. }), "{err:?}");
    let dir = tempfile::tempdir().unwrap();
    let text = dir.path().join("ca.pem");
    std::fs::write(&text, "just text\n").unwrap();
    let err = client_config(&options(Some(&text))).unwrap_err();
    assert!(matches!(err, TlsError::CaFileInvalid { .. }), "{err:?}");

    let ca = test_ca();
    let (cert, key) = ca.issue_client("gateway");
    let with_client = TlsOptions {
        client_cert: Some(cert.clone()),
        client_key: Some(key),
        min_version: TlsVersion::V1_3,
        ..TlsOptions::default()
    };
    client_config(&with_client).unwrap();
    let (_, other_key) = ca.issue_client("other");
    let mismatched = TlsOptions {
        client_key: Some(other_key),
        ..with_client
    };
    let err = client_config(&mismatched).unwrap_err();
    assert!(matches!(err, TlsError::ClientIdentity { .. }), "{err:?}");
    let err = load_client_identity(&cert, &text).unwrap_err();
    assert!(err.to_string().contains("no usable private key"), "{err}");
}

#[tokio::test]
async fn a_refused_handshake_is_one_certificate_error_and_a_bad_name_fails_before_any_io() {
    let dir = tempfile::tempdir().unwrap();
    plain_x509(dir.path(), "localhost");
    let server = acceptor(dir.path());
    let (client_io, server_io) = tokio::io::duplex(16 * 1024);
    tokio::spawn(async move {
        let _ = server.accept(server_io).await;
    });
    let tls = TlsClient::new(&TlsOptions::default(), "localhost").unwrap();
    let err = tls.connect(client_io).await.unwrap_err();
    let TlsError::Certificate(refusal) = &err else {
        panic!("{err:?}");
    };
    assert_eq!(refusal.problem, Problem::SelfSigned);
    // One sentence: no second copy of the cause after it.
    let text = err.to_string();
    assert_eq!(text.matches("self-signed").count(), 1, "{text}");
    assert!(std::error::Error::source(&err).is_none());

    let err = TlsClient::new(&TlsOptions::default(), "not a name").unwrap_err();
    assert!(matches!(err, TlsError::ServerName(_)), "{err:?}");
    let named = TlsOptions {
        server_name: Some("mail.example.net".to_owned()),
        ..TlsOptions::default()
    };
    let tls = TlsClient::new(&named, "192.0.2.1").unwrap();
    assert_eq!(tls.server_name(), "mail.example.net");
}

#[tokio::test]
async fn tls_min_version_1_3_refuses_a_server_that_stops_at_1_2() {
    let dir = tempfile::tempdir().unwrap();
    plain_x509(dir.path(), "localhost");
    let pem = dir.path().join("cert.pem");
    let key = PrivateKeyDer::from_pem_file(dir.path().join("key.pem")).unwrap();
    let server = rustls::ServerConfig::builder_with_protocol_versions(&[&rustls::version::TLS12])
        .with_no_client_auth()
        .with_single_cert(vec![cert(&pem)], key)
        .unwrap();
    let server = tokio_rustls::TlsAcceptor::from(Arc::new(server));
    for (min_version, works) in [(TlsVersion::V1_2, true), (TlsVersion::V1_3, false)] {
        let (client_io, server_io) = tokio::io::duplex(16 * 1024);
        let acceptor = server.clone();
        tokio::spawn(async move {
            let _ = acceptor.accept(server_io).await;
        });
        let options = TlsOptions {
            ca_file: Some(pem.clone()),
            min_version,
            ..TlsOptions::default()
        };
        let tls = TlsClient::new(&options, "localhost").unwrap();
        match tls.connect(client_io).await {
            Ok(_) => assert!(works, "{min_version:?} accepted TLS 1.2"),
            Err(e) => {
                assert!(!works, "{min_version:?}: {e}");
                assert!(matches!(e, TlsError::Handshake { .. }), "{e:?}");
                assert!(e.to_string().contains("check tls_min_version"), "{e}");
            }
        }
    }
}
