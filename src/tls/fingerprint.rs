//! SHA-256 certificate fingerprints: what `tls_fingerprint` pins, and what every certificate
//! error shows so that an administrator can compare it with the server's own.

use std::fmt;

use tokio_rustls::rustls::pki_types::CertificateDer;

/// The SHA-256 digest of a DER certificate; shown as `AB:CD:…` (upper-case, colons), the
/// form `openssl x509 -noout -fingerprint -sha256` prints.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Fingerprint([u8; 32]);

impl Fingerprint {
    /// The fingerprint of `cert`.
    pub fn of(cert: &CertificateDer<'_>) -> Fingerprint {
        let digest = ring::digest::digest(&ring::digest::SHA256, cert.as_ref());
        let mut bytes = [0u8; 32];
        bytes.copy_from_slice(digest.as_ref());
        Fingerprint(bytes)
    }

    /// Reads `sha256:AB:CD:…`: the `sha256:` prefix (any case) is optional, as is OpenSSL's
    /// `SHA256 Fingerprint=`; the 32 bytes are hex, either case, with or without colons.
    /// `Err` says what is wrong, for check-config.
    pub fn parse(text: &str) -> Result<Fingerprint, String> {
        let trimmed = text.trim();
        let lower = trimmed.to_ascii_lowercase();
        let hex = if let Some(rest) = lower.strip_prefix("sha256 fingerprint=") {
            rest
        } else if let Some(rest) = lower.strip_prefix("sha256:") {
            rest
        } else if let Some((algorithm, _)) = lower.split_once(':').filter(|(a, _)| {
            a.len() > 2 && a.chars().all(|c| c.is_ascii_alphanumeric()) && *a != "sha256"
        }) {
            return Err(format!(
                "`{algorithm}` fingerprints are not accepted: give the SHA-256 fingerprint, \
                 sha256:AB:CD:… (openssl x509 -in cert.pem -noout -fingerprint -sha256)"
            ));
        } else {
            &lower
        };
        let digits: String = hex.chars().filter(|c| *c != ':').collect();
        if let Some(bad) = digits.chars().find(|c| !c.is_ascii_hexdigit()) {
            return Err(format!(
                "`{trimmed}` is not a SHA-256 fingerprint: `{bad}` is not a hex digit; \
                 write sha256:AB:CD:… (openssl x509 -in cert.pem -noout -fingerprint -sha256)"
            ));
        }
        if digits.len() != 64 {
            return Err(format!(
                "`{trimmed}` is not a SHA-256 fingerprint: it has {} hex digits, a SHA-256 \
                 fingerprint has 64 (32 bytes); openssl x509 -in cert.pem -noout -fingerprint -sha256",
                digits.len()
            ));
        }
        let mut bytes = [0u8; 32];
        for (i, byte) in bytes.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&digits[2 * i..2 * i + 2], 16)
                .map_err(|e| format!("`{trimmed}`: {e}"))?;
        }
        Ok(Fingerprint(bytes))
    }
}

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, byte) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(":")?;
            }
            write!(f, "{byte:02X}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{self}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEX: &str = "00:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:FF:\
                       00:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:FF";

    #[test]
    fn every_accepted_spelling_reads_the_same_bytes() {
        let want = Fingerprint::parse(&format!("sha256:{HEX}")).unwrap();
        assert_eq!(want.to_string(), HEX);
        for spelling in [
            HEX.to_owned(),
            HEX.to_ascii_lowercase(),
            HEX.replace(':', ""),
            format!("SHA256:{HEX}"),
            format!("SHA256 Fingerprint={HEX}"),
            format!("  sha256:{}  ", HEX.to_ascii_lowercase()),
        ] {
            assert_eq!(Fingerprint::parse(&spelling), Ok(want), "{spelling}");
        }
    }

    #[test]
    fn wrong_length_bad_digit_and_other_algorithms_are_refused_with_the_reason() {
        let short = Fingerprint::parse("sha256:AB:CD").unwrap_err();
        assert!(
            short.contains("4 hex digits") && short.contains("64"),
            "{short}"
        );
        let bad = Fingerprint::parse(&format!("sha256:{}", HEX.replace("AA", "AG"))).unwrap_err();
        assert!(bad.contains("`g` is not a hex digit"), "{bad}");
        let md5 = Fingerprint::parse("md5:AB:CD:EF").unwrap_err();
        assert!(md5.contains("`md5` fingerprints are not accepted"), "{md5}");
        let sha1 = Fingerprint::parse(&format!("sha1:{HEX}")).unwrap_err();
        assert!(sha1.contains("`sha1`"), "{sha1}");
    }

    #[test]
    fn fingerprint_of_a_certificate_is_its_sha256() {
        // SHA-256 of the empty input, a known value.
        let empty = Fingerprint::of(&CertificateDer::from(Vec::new()));
        assert_eq!(
            format!("{empty:?}"),
            "sha256:E3:B0:C4:42:98:FC:1C:14:9A:FB:F4:C8:99:6F:B9:24:\
             27:AE:41:E4:64:9B:93:4C:A4:95:99:1B:78:52:B8:55"
        );
    }
}
