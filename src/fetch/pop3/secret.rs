//! Credentials in text: blanking one a server echoes (shared with the IMAP client). One that
//! would break out of its command line is refused before the connection
//! (`transport::check_credentials`).

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
