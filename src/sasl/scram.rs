//! SCRAM-SHA-1 and SCRAM-SHA-256 (RFC 5802, RFC 7677), without channel binding (`n,,`).
//! The server's final message must carry the server signature computed from the password:
//! a server that cannot produce it is refused, even if it then says "success".
//!
//! The password is used as UTF-8 without SASLprep's normalisation, which changes nothing for
//! ASCII passwords (and for most others, already in NFKC).

use std::num::NonZeroU32;

use ring::{digest, hmac, pbkdf2};

use super::{Mechanism, SaslError, decode_base64, encode_base64};

/// Fewest iterations accepted: RFC 5802 5.1 asks servers for at least 4096; a lower count
/// (from an impostor) would make the client proof cheap to crack offline.
const ITERATIONS_MIN: u32 = 4096;
/// Most iterations accepted, so that a hostile server cannot keep the client busy for minutes.
const ITERATIONS_MAX: u32 = 1_000_000;

enum State {
    Start,
    /// client-first sent; its bare part is part of the AuthMessage.
    SentFirst {
        client_first_bare: String,
    },
    /// client-final sent; the server's final message must carry this signature.
    SentFinal {
        server_signature: Vec<u8>,
    },
    /// The server proved itself.
    Verified,
    Failed,
}

pub(super) struct Scram {
    mechanism: Mechanism,
    username: String,
    password: String,
    nonce: String,
    state: State,
}

impl Scram {
    /// `nonce`: printable ASCII without commas (the caller's random bytes in base64).
    pub(super) fn new(
        mechanism: Mechanism,
        username: &str,
        password: &str,
        nonce: String,
    ) -> Scram {
        Scram {
            mechanism,
            username: escape_name(username),
            password: password.to_owned(),
            nonce,
            state: State::Start,
        }
    }

    pub(super) fn mechanism(&self) -> Mechanism {
        self.mechanism
    }

    pub(super) fn client_first(&mut self) -> Vec<u8> {
        let client_first_bare = format!("n={},r={}", self.username, self.nonce);
        let message = format!("n,,{client_first_bare}").into_bytes();
        self.state = State::SentFirst { client_first_bare };
        message
    }

    pub(super) fn respond(&mut self, challenge: &[u8]) -> Result<Vec<u8>, SaslError> {
        match std::mem::replace(&mut self.state, State::Failed) {
            // The server asked for the initial response (no SASL-IR).
            State::Start if challenge.is_empty() => Ok(self.client_first()),
            State::Start => Err(self.malformed("a challenge before the client's first message")),
            State::SentFirst { client_first_bare } => {
                let (message, server_signature) =
                    self.client_final(&client_first_bare, challenge)?;
                self.state = State::SentFinal { server_signature };
                Ok(message)
            }
            State::SentFinal { server_signature } => {
                self.verify(&server_signature, challenge)?;
                self.state = State::Verified;
                // RFC 5802 5: the client answers the server-final challenge with nothing.
                Ok(Vec::new())
            }
            State::Verified | State::Failed => Err(SaslError::UnexpectedChallenge {
                mechanism: self.mechanism,
            }),
        }
    }

    pub(super) fn finish(&mut self, additional: Option<&[u8]>) -> Result<(), SaslError> {
        match (
            std::mem::replace(&mut self.state, State::Failed),
            additional,
        ) {
            (State::Verified, _) => {
                self.state = State::Verified;
                Ok(())
            }
            (State::SentFinal { server_signature }, Some(data)) => {
                self.verify(&server_signature, data)?;
                self.state = State::Verified;
                Ok(())
            }
            _ => Err(SaslError::ServerNotVerified {
                mechanism: self.mechanism,
                what: "no server signature",
            }),
        }
    }

    /// client-final-message for the server-first-message, and the server signature to
    /// expect.
    fn client_final(
        &self,
        client_first_bare: &str,
        server_first: &[u8],
    ) -> Result<(Vec<u8>, Vec<u8>), SaslError> {
        let server_first = std::str::from_utf8(server_first)
            .map_err(|_| self.malformed("server-first-message is not UTF-8"))?;
        let mut nonce = None;
        let mut salt = None;
        let mut iterations = None;
        for (i, attribute) in server_first.split(',').enumerate() {
            match attribute.split_once('=') {
                Some(("m", _)) if i == 0 => {
                    return Err(
                        self.malformed("a mandatory extension (m=) mailferry does not know")
                    );
                }
                Some(("r", value)) => nonce = Some(value),
                Some(("s", value)) => salt = decode_base64(value.as_bytes()),
                Some(("i", value)) => iterations = value.parse::<u32>().ok(),
                _ => {}
            }
        }
        let nonce = nonce.ok_or_else(|| self.malformed("no nonce (r=)"))?;
        if !nonce.starts_with(&self.nonce) || nonce.len() == self.nonce.len() {
            return Err(self.malformed("the nonce does not extend the client's"));
        }
        if !nonce.bytes().all(|b| b.is_ascii_graphic() && b != b',') {
            return Err(self.malformed("the nonce is not printable"));
        }
        let salt = salt
            .filter(|s| !s.is_empty())
            .ok_or_else(|| self.malformed("no salt (s=) in base64"))?;
        let iterations = iterations.ok_or_else(|| self.malformed("no iteration count (i=)"))?;
        if !(ITERATIONS_MIN..=ITERATIONS_MAX).contains(&iterations) {
            return Err(self.malformed(&format!(
                "iteration count {iterations} outside {ITERATIONS_MIN}..={ITERATIONS_MAX}"
            )));
        }
        let keys = Keys::derive(self.mechanism, self.password.as_bytes(), &salt, iterations);
        // "biws" is base64("n,,"): no channel binding, no authorization identity.
        let without_proof = format!("c=biws,r={nonce}");
        let auth_message = format!("{client_first_bare},{server_first},{without_proof}");
        let (proof, server_signature) = keys.sign(auth_message.as_bytes());
        let message = format!("{without_proof},p={}", encode_base64(&proof)).into_bytes();
        Ok((message, server_signature))
    }

    fn verify(&self, expected: &[u8], server_final: &[u8]) -> Result<(), SaslError> {
        let text = String::from_utf8_lossy(server_final);
        let text = text.trim();
        if let Some(error) = text.strip_prefix("e=") {
            return Err(SaslError::Refused {
                mechanism: self.mechanism,
                message: error
                    .chars()
                    .filter(|c| !c.is_control())
                    .take(200)
                    .collect(),
            });
        }
        let signature = text
            .split(',')
            .find_map(|a| a.strip_prefix("v="))
            .and_then(|v| decode_base64(v.as_bytes()));
        match signature {
            Some(signature) if equal_in_constant_time(&signature, expected) => Ok(()),
            Some(_) => Err(SaslError::ServerNotVerified {
                mechanism: self.mechanism,
                what: "wrong server signature",
            }),
            None => Err(SaslError::ServerNotVerified {
                mechanism: self.mechanism,
                what: "no server signature",
            }),
        }
    }

    fn malformed(&self, what: &str) -> SaslError {
        SaslError::Malformed {
            mechanism: self.mechanism,
            what: what.to_owned(),
        }
    }
}

/// SaltedPassword's two keys (RFC 5802 3).
struct Keys {
    hmac: hmac::Algorithm,
    digest: &'static digest::Algorithm,
    client_key: Vec<u8>,
    server_key: Vec<u8>,
}

impl Keys {
    fn derive(mechanism: Mechanism, password: &[u8], salt: &[u8], iterations: u32) -> Keys {
        let (pbkdf2_alg, hmac_alg, digest_alg, len) = match mechanism {
            Mechanism::ScramSha1 => (
                pbkdf2::PBKDF2_HMAC_SHA1,
                hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY,
                &digest::SHA1_FOR_LEGACY_USE_ONLY,
                20,
            ),
            _ => (
                pbkdf2::PBKDF2_HMAC_SHA256,
                hmac::HMAC_SHA256,
                &digest::SHA256,
                32,
            ),
        };
        let mut salted = vec![0u8; len];
        // The caller checked iterations >= ITERATIONS_MIN.
        let rounds = NonZeroU32::new(iterations).unwrap_or(NonZeroU32::MIN);
        pbkdf2::derive(pbkdf2_alg, rounds, salt, password, &mut salted);
        let key = hmac::Key::new(hmac_alg, &salted);
        Keys {
            hmac: hmac_alg,
            digest: digest_alg,
            client_key: hmac::sign(&key, b"Client Key").as_ref().to_vec(),
            server_key: hmac::sign(&key, b"Server Key").as_ref().to_vec(),
        }
    }

    /// (ClientProof, ServerSignature) of an AuthMessage.
    fn sign(&self, auth_message: &[u8]) -> (Vec<u8>, Vec<u8>) {
        let stored_key = digest::digest(self.digest, &self.client_key);
        let client_signature = hmac::sign(
            &hmac::Key::new(self.hmac, stored_key.as_ref()),
            auth_message,
        );
        let proof = self
            .client_key
            .iter()
            .zip(client_signature.as_ref())
            .map(|(k, s)| k ^ s)
            .collect();
        let server_signature =
            hmac::sign(&hmac::Key::new(self.hmac, &self.server_key), auth_message);
        (proof, server_signature.as_ref().to_vec())
    }
}

fn equal_in_constant_time(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// A SASL name in a SCRAM or GS2 attribute: `=` as `=3D`, `,` as `=2C` (RFC 5802 5.1).
pub(super) fn escape_name(name: &str) -> String {
    name.replace('=', "=3D").replace(',', "=2C")
}
