//! APOP (RFC 1939, section 7), free of I/O: the timestamp a server puts in its greeting, and
//! the digest sent in its place of the password.

use md5::{Digest, Md5};

/// The APOP timestamp of a greeting's text (`POP3 ready <1896.697170952@dbc.example>`):
/// the first `<...>` with something between the brackets and no space in it, brackets
/// included. `None` when the server offers no APOP.
pub fn timestamp(greeting: &str) -> Option<&str> {
    let start = greeting.find('<')?;
    let len = greeting[start..].find('>')? + 1;
    let stamp = &greeting[start..start + len];
    let inner = &stamp[1..len - 1];
    let printable = inner.bytes().all(|b| b.is_ascii_graphic() && b != b'<');
    (!inner.is_empty() && printable).then_some(stamp)
}

/// The APOP digest: MD5 of the timestamp followed by the password (its UTF-8 bytes), in
/// lower-case hex.
pub fn digest(timestamp: &str, password: &str) -> String {
    let mut md5 = Md5::new();
    md5.update(timestamp.as_bytes());
    md5.update(password.as_bytes());
    md5.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rfc_1939_example_digest() {
        let stamp = timestamp("POP3 server ready <1896.697170952@dbc.mtview.ca.us>").unwrap();
        assert_eq!(stamp, "<1896.697170952@dbc.mtview.ca.us>");
        assert_eq!(
            digest(stamp, "tanstaaf"),
            "c4c9334bac560ecc979e58001b3e22fb"
        );
    }

    #[test]
    fn md5_gives_the_rfc_1321_test_vectors() {
        for (input, want) in [
            ("", "d41d8cd98f00b204e9800998ecf8427e"),
            ("abc", "900150983cd24fb0d6963f7d28e17f72"),
            ("message digest", "f96b697d7cb7938d525a2f31aaf161d0"),
        ] {
            assert_eq!(digest("", input), want, "{input:?}");
        }
    }

    #[test]
    fn a_greeting_without_a_proper_timestamp_offers_no_apop() {
        for greeting in [
            "POP3 ready",
            "POP3 ready <>",
            "POP3 ready <unterminated",
            "Dovecot ready. <a b@c>",
            "ready > <",
        ] {
            assert_eq!(timestamp(greeting), None, "{greeting:?}");
        }
        assert_eq!(
            timestamp("Dovecot ready. <1a2b.3c@mail.example> more"),
            Some("<1a2b.3c@mail.example>")
        );
    }

    #[test]
    fn a_non_ascii_password_is_digested_as_utf8() {
        // Python: hashlib.md5("<1@x>pässwörd".encode()).hexdigest()
        assert_eq!(
            digest("<1@x>", "pässwörd"),
            "ab92e1ecd605e7ed04a38a711fc3879e"
        );
    }
}
