//! NTLM (MS-NLMP), client side, answering with NTLMv2 only (NTLMv1 and LM are broken):
//! NEGOTIATE_MESSAGE, then the AUTHENTICATE_MESSAGE for the server's CHALLENGE_MESSAGE.
//! No signing or sealing: the session is protected by TLS, not by NTLM.
//!
//! A user name `DOMAIN\user` names the domain; a plain `user` has none (what a standalone
//! server such as Dovecot expects).

use md4::{Digest as _, Md4};

use super::cram_md5::hmac_md5;
use super::{Mechanism, SaslError};

const SIGNATURE: &[u8; 8] = b"NTLMSSP\0";
const NEGOTIATE_UNICODE: u32 = 0x0000_0001;
const NEGOTIATE_OEM: u32 = 0x0000_0002;
const REQUEST_TARGET: u32 = 0x0000_0004;
const NEGOTIATE_NTLM: u32 = 0x0000_0200;
const NEGOTIATE_ALWAYS_SIGN: u32 = 0x0000_8000;
const NEGOTIATE_EXTENDED_SESSIONSECURITY: u32 = 0x0008_0000;
const NEGOTIATE_TARGET_INFO: u32 = 0x0080_0000;
/// What the client asks for in its NEGOTIATE_MESSAGE.
const CLIENT_FLAGS: u32 = NEGOTIATE_UNICODE
    | NEGOTIATE_OEM
    | REQUEST_TARGET
    | NEGOTIATE_NTLM
    | NEGOTIATE_ALWAYS_SIGN
    | NEGOTIATE_EXTENDED_SESSIONSECURITY;
/// MsvAvTimestamp, the AV pair with the server's time (MS-NLMP 2.2.2.1).
const AV_TIMESTAMP: u16 = 7;
const AV_EOL: u16 = 0;
/// Seconds from 1601-01-01 (FILETIME's epoch) to 1970-01-01.
const FILETIME_UNIX_OFFSET: u64 = 11_644_473_600;

enum State {
    Start,
    SentNegotiate,
    SentAuthenticate,
}

pub(super) struct Ntlm {
    user: String,
    domain: String,
    password: String,
    client_challenge: [u8; 8],
    /// The time for the response, as a FILETIME; `None`: the server's, else now.
    time: Option<u64>,
    state: State,
}

/// What the CHALLENGE_MESSAGE says.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Challenge {
    pub(super) flags: u32,
    pub(super) server_challenge: [u8; 8],
    /// The AV pairs, as sent (MsvAvEOL included).
    pub(super) target_info: Vec<u8>,
}

impl Ntlm {
    pub(super) fn new(
        username: &str,
        password: &str,
        client_challenge: [u8; 8],
        time: Option<u64>,
    ) -> Ntlm {
        let (domain, user) = username.split_once('\\').unwrap_or(("", username));
        Ntlm {
            user: user.to_owned(),
            domain: domain.to_owned(),
            password: password.to_owned(),
            client_challenge,
            time,
            state: State::Start,
        }
    }

    /// NEGOTIATE_MESSAGE: no domain or workstation supplied.
    pub(super) fn negotiate(&mut self) -> Vec<u8> {
        self.state = State::SentNegotiate;
        let mut message = Vec::with_capacity(32);
        message.extend_from_slice(SIGNATURE);
        message.extend_from_slice(&1u32.to_le_bytes());
        message.extend_from_slice(&CLIENT_FLAGS.to_le_bytes());
        message.extend_from_slice(&[0; 16]);
        message
    }

    pub(super) fn respond(&mut self, challenge: &[u8]) -> Result<Vec<u8>, SaslError> {
        match self.state {
            // The server asked for the initial response (no SASL-IR).
            State::Start if challenge.is_empty() => Ok(self.negotiate()),
            State::Start => Err(malformed("a challenge before the NEGOTIATE_MESSAGE")),
            State::SentNegotiate => {
                let parsed = parse_challenge(challenge)?;
                self.state = State::SentAuthenticate;
                Ok(self.authenticate(&parsed))
            }
            State::SentAuthenticate => Err(SaslError::UnexpectedChallenge {
                mechanism: Mechanism::Ntlm,
            }),
        }
    }

    /// AUTHENTICATE_MESSAGE with the NTLMv2 responses (MS-NLMP 3.3.2).
    fn authenticate(&self, challenge: &Challenge) -> Vec<u8> {
        let key = ntowf_v2(&self.password, &self.user, &self.domain);
        let server_time = av_timestamp(&challenge.target_info);
        let time = self.time.or(server_time).unwrap_or_else(filetime_now);
        let responses = responses(
            &key,
            &challenge.server_challenge,
            &self.client_challenge,
            time,
            &challenge.target_info,
        );
        // With the server's timestamp the LM response is all zeros (MS-NLMP 3.1.5.1.2).
        let lm = if server_time.is_some() {
            vec![0; 24]
        } else {
            responses.lm
        };
        let unicode = challenge.flags & NEGOTIATE_UNICODE != 0;
        let text = |s: &str| {
            if unicode {
                utf16le(s)
            } else {
                s.as_bytes().to_vec()
            }
        };
        let flags = (challenge.flags & (CLIENT_FLAGS | NEGOTIATE_TARGET_INFO))
            | NEGOTIATE_NTLM
            | if unicode { 0 } else { NEGOTIATE_OEM };
        // Payload order: LM, NT, domain, user, workstation (none), session key (none).
        let fields = [lm, responses.nt, text(&self.domain), text(&self.user)];
        let mut message = Vec::new();
        message.extend_from_slice(SIGNATURE);
        message.extend_from_slice(&3u32.to_le_bytes());
        let header_len = 64u32;
        let mut offset = header_len;
        let mut payload = Vec::new();
        let mut buffer_field = |message: &mut Vec<u8>, data: &[u8]| {
            let len = u16::try_from(data.len()).unwrap_or(u16::MAX);
            message.extend_from_slice(&len.to_le_bytes());
            message.extend_from_slice(&len.to_le_bytes());
            message.extend_from_slice(&offset.to_le_bytes());
            payload.extend_from_slice(&data[..usize::from(len)]);
            offset += u32::from(len);
        };
        for field in &fields {
            buffer_field(&mut message, field);
        }
        buffer_field(&mut message, &[]); // workstation
        buffer_field(&mut message, &[]); // encrypted random session key
        message.extend_from_slice(&flags.to_le_bytes());
        message.extend_from_slice(&payload);
        message
    }
}

fn malformed(what: &str) -> SaslError {
    SaslError::Malformed {
        mechanism: Mechanism::Ntlm,
        what: what.to_owned(),
    }
}

/// Parses a CHALLENGE_MESSAGE (MS-NLMP 2.2.1.2).
pub(super) fn parse_challenge(message: &[u8]) -> Result<Challenge, SaslError> {
    if message.len() < 32 || &message[..8] != SIGNATURE {
        return Err(malformed("not an NTLMSSP message"));
    }
    let u32_at = |at: usize| -> Option<u32> {
        Some(u32::from_le_bytes(
            message.get(at..at + 4)?.try_into().ok()?,
        ))
    };
    if u32_at(8) != Some(2) {
        return Err(malformed("not a CHALLENGE_MESSAGE"));
    }
    let flags = u32_at(20).ok_or_else(|| malformed("too short"))?;
    let mut server_challenge = [0u8; 8];
    server_challenge.copy_from_slice(&message[24..32]);
    // TargetInfoFields at 40..48; older servers (and Cyrus SASL) send none, and the NTLMv2
    // blob then names no server (as curl and Thunderbird do it too).
    let target_info = match (message.get(40..42), u32_at(44)) {
        (Some(len), Some(offset)) if flags & NEGOTIATE_TARGET_INFO != 0 => {
            let len = usize::from(u16::from_le_bytes([len[0], len[1]]));
            let start = usize::try_from(offset).map_err(|_| malformed("bad offset"))?;
            message
                .get(start..start + len)
                .ok_or_else(|| malformed("target info beyond the message"))?
                .to_vec()
        }
        _ => Vec::new(),
    };
    Ok(Challenge {
        flags,
        server_challenge,
        target_info,
    })
}

/// The MsvAvTimestamp of the AV pairs, if any.
fn av_timestamp(mut pairs: &[u8]) -> Option<u64> {
    while pairs.len() >= 4 {
        let id = u16::from_le_bytes([pairs[0], pairs[1]]);
        let len = usize::from(u16::from_le_bytes([pairs[2], pairs[3]]));
        let value = pairs.get(4..4 + len)?;
        match id {
            AV_EOL => return None,
            AV_TIMESTAMP => return Some(u64::from_le_bytes(value.try_into().ok()?)),
            _ => pairs = &pairs[4 + len..],
        }
    }
    None
}

fn filetime_now() -> u64 {
    let since_unix = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    (since_unix.as_secs() + FILETIME_UNIX_OFFSET) * 10_000_000
        + u64::from(since_unix.subsec_nanos() / 100)
}

fn utf16le(s: &str) -> Vec<u8> {
    s.encode_utf16().flat_map(u16::to_le_bytes).collect()
}

/// NTOWFv2: HMAC-MD5(MD4(UTF-16LE(password)), UTF-16LE(UPPER(user) + domain)).
pub(super) fn ntowf_v2(password: &str, user: &str, domain: &str) -> [u8; 16] {
    let nt_hash: [u8; 16] = Md4::digest(utf16le(password)).into();
    let identity = format!("{}{domain}", user.to_uppercase());
    hmac_md5(&nt_hash, &utf16le(&identity))
}

/// The NTLMv2 responses of MS-NLMP 3.3.2.
pub(super) struct Responses {
    /// LMv2: HMAC-MD5(key, server challenge + client challenge) + client challenge.
    pub(super) lm: Vec<u8>,
    /// NTProofStr (HMAC-MD5(key, server challenge + temp), 16 bytes) + the blob ("temp").
    pub(super) nt: Vec<u8>,
}

pub(super) fn responses(
    key: &[u8; 16],
    server_challenge: &[u8; 8],
    client_challenge: &[u8; 8],
    time: u64,
    target_info: &[u8],
) -> Responses {
    let mut temp = vec![1, 1, 0, 0, 0, 0, 0, 0];
    temp.extend_from_slice(&time.to_le_bytes());
    temp.extend_from_slice(client_challenge);
    temp.extend_from_slice(&[0; 4]);
    temp.extend_from_slice(target_info);
    temp.extend_from_slice(&[0; 4]);
    let nt_proof = hmac_md5(key, &[server_challenge.as_slice(), &temp].concat());
    let mut nt = nt_proof.to_vec();
    nt.extend_from_slice(&temp);
    let mut lm = hmac_md5(
        key,
        &[server_challenge.as_slice(), client_challenge].concat(),
    )
    .to_vec();
    lm.extend_from_slice(client_challenge);
    Responses { lm, nt }
}
