//! CRAM-MD5 (RFC 2195): `user hex(HMAC-MD5(password, challenge))`. The password never
//! crosses the wire, but the server must store it in the clear; SCRAM is preferred.

use hmac::{Hmac, Mac as _};

use super::{Mechanism, SaslError};

pub(super) struct CramMd5 {
    username: String,
    password: String,
    answered: bool,
}

impl CramMd5 {
    pub(super) fn new(username: &str, password: &str) -> CramMd5 {
        CramMd5 {
            username: username.to_owned(),
            password: password.to_owned(),
            answered: false,
        }
    }

    pub(super) fn respond(&mut self, challenge: &[u8]) -> Result<Vec<u8>, SaslError> {
        if self.answered {
            return Err(SaslError::UnexpectedChallenge {
                mechanism: Mechanism::CramMd5,
            });
        }
        if challenge.is_empty() {
            return Err(SaslError::Malformed {
                mechanism: Mechanism::CramMd5,
                what: "an empty challenge".to_owned(),
            });
        }
        self.answered = true;
        let digest = hmac_md5(self.password.as_bytes(), challenge);
        Ok(format!("{} {}", self.username, hex(&digest)).into_bytes())
    }
}

/// HMAC-MD5 (RFC 2104), for CRAM-MD5 and NTLMv2.
pub(super) fn hmac_md5(key: &[u8], data: &[u8]) -> [u8; 16] {
    // HMAC takes a key of any length: new_from_slice cannot fail here.
    let mut mac = match Hmac::<md5::Md5>::new_from_slice(key) {
        Ok(mac) => mac,
        Err(_) => unreachable!("HMAC accepts every key length"),
    };
    mac.update(data);
    mac.finalize().into_bytes().into()
}

/// Lower-case hex.
pub(super) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
