//! Credentials on the wire and in text: refusing one that would break out of its command
//! line, blanking one a server echoes, and base64 for AUTH PLAIN. Shared with the IMAP
//! client.

use super::Pop3Error;

/// Refuses a credential that would break out of its command line.
pub(super) fn check_credential(value: &str, what: &'static str) -> Result<(), Pop3Error> {
    if value.bytes().any(|b| matches!(b, b'\r' | b'\n' | 0)) {
        return Err(Pop3Error::InvalidCredential(what));
    }
    Ok(())
}

/// `text` with every occurrence of a secret (the password, or the AUTH PLAIN response)
/// blanked, in any letter case (a server may echo it upper-cased).
pub(crate) fn redact(text: &str, secrets: &[String]) -> String {
    let mut text = text.to_owned();
    for secret in secrets.iter().filter(|s| !s.is_empty()) {
        let needle = secret.to_lowercase();
        loop {
            let lower = text.to_lowercase();
            // Lower-casing keeps byte offsets only for ASCII; otherwise blank the whole text.
            if lower.len() != text.len() {
                if lower.contains(&needle) {
                    return "***".to_owned();
                }
                break;
            }
            let Some(at) = lower.find(&needle) else { break };
            text.replace_range(at..at + needle.len(), "***");
        }
    }
    text
}

/// Standard base64 with padding (RFC 4648), for AUTH PLAIN.
pub(crate) fn base64(input: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(input.len().div_ceil(3) * 4);
    for chunk in input.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod redact_tests {
    use super::redact;

    #[test]
    fn a_secret_is_blanked_in_any_letter_case() {
        let secrets = ["Sekret".to_owned()];
        assert_eq!(
            redact("bad password SEKRET or sekret or Sekret", &secrets),
            "bad password *** or *** or ***"
        );
        assert_eq!(redact("ünïcode SEKRET", &secrets), "ünïcode ***");
        // 'İ' lower-cases to three bytes: offsets shift, so the whole text goes.
        assert_eq!(redact("İ SEKRET", &secrets), "***");
        assert_eq!(redact("nothing here", &secrets), "nothing here");
    }
}
