//! The mechanisms against their specifications' published examples, and the negotiation.

use super::cram_md5::CramMd5;
use super::ntlm::{self, Ntlm};
use super::scram::Scram;
use super::*;

fn hex(s: &str) -> Vec<u8> {
    let s: String = s.split_whitespace().collect();
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
        .collect()
}

#[test]
fn cram_md5_gives_the_rfc_2195_example() {
    let mut m = CramMd5::new("tim", "tanstaaftanstaaf");
    let response = m
        .respond(b"<1896.697170952@postoffice.reston.mci.net>")
        .expect("response");
    assert_eq!(response, b"tim b913a602c7eda7a495b4e6e7334d3890");
    assert!(m.respond(b"<again>").is_err(), "one challenge only");
}

/// RFC 5802 5: SCRAM-SHA-1, user "user", password "pencil".
const SHA1_SERVER_FIRST: &str =
    "r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,s=QSXCR+Q6sek8bf92,i=4096";
const SHA1_CLIENT_FINAL: &str =
    "c=biws,r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,p=v0X8v3Bz2T0CJGbJQyF0X+HI4Ts=";
const SHA1_SERVER_FINAL: &str = "v=rmF9pqV8S7suAoZWja4dJRkFsKQ=";

fn rfc5802() -> Scram {
    Scram::new(
        Mechanism::ScramSha1,
        "user",
        "pencil",
        "fyko+d2lbbFgONRv9qkxdawL".to_owned(),
    )
}

#[test]
fn scram_sha_1_gives_the_rfc_5802_example() {
    let mut m = rfc5802();
    assert_eq!(m.client_first(), b"n,,n=user,r=fyko+d2lbbFgONRv9qkxdawL");
    let client_final = m.respond(SHA1_SERVER_FIRST.as_bytes()).expect("final");
    assert_eq!(String::from_utf8(client_final).unwrap(), SHA1_CLIENT_FINAL);
    assert_eq!(m.respond(SHA1_SERVER_FINAL.as_bytes()), Ok(Vec::new()));
    assert_eq!(m.finish(None), Ok(()));
}

#[test]
fn scram_sha_256_gives_the_rfc_7677_example() {
    let mut m = Scram::new(
        Mechanism::ScramSha256,
        "user",
        "pencil",
        "rOprNGfwEbeRWgbNEkqO".to_owned(),
    );
    assert_eq!(m.client_first(), b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO");
    let server_first = "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,\
                        s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096";
    let client_final = m.respond(server_first.as_bytes()).expect("final");
    assert_eq!(
        String::from_utf8(client_final).unwrap(),
        "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,\
         p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="
    );
    // Here the server-final arrives as additional data with the success reply.
    let server_final = b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=";
    assert_eq!(m.finish(Some(server_final)), Ok(()));
}

#[test]
fn scram_refuses_a_server_that_cannot_sign() {
    // A wrong signature.
    let mut m = rfc5802();
    m.client_first();
    m.respond(SHA1_SERVER_FIRST.as_bytes()).expect("final");
    let wrong = m.respond(b"v=AAAAAAAAAAAAAAAAAAAAAAAAAAA=");
    assert!(
        matches!(wrong, Err(SaslError::ServerNotVerified { what, .. }) if what.contains("wrong")),
        "{wrong:?}"
    );
    assert!(m.finish(None).is_err(), "a refused signature stays refused");

    // A server that says "success" without ever sending its signature.
    let mut m = rfc5802();
    m.client_first();
    m.respond(SHA1_SERVER_FIRST.as_bytes()).expect("final");
    assert!(matches!(
        m.finish(None),
        Err(SaslError::ServerNotVerified { .. })
    ));

    // The server's error is reported, not taken for a signature.
    let mut m = rfc5802();
    m.client_first();
    m.respond(SHA1_SERVER_FIRST.as_bytes()).expect("final");
    assert_eq!(
        m.respond(b"e=invalid-proof"),
        Err(SaslError::Refused {
            mechanism: Mechanism::ScramSha1,
            message: "invalid-proof".to_owned()
        })
    );
}

#[test]
fn scram_refuses_a_bad_server_first_message() {
    let cases = [
        // A nonce that does not extend the client's.
        "r=someoneelse,s=QSXCR+Q6sek8bf92,i=4096",
        // Exactly the client's nonce: the server added nothing.
        "r=fyko+d2lbbFgONRv9qkxdawL,s=QSXCR+Q6sek8bf92,i=4096",
        // Too few iterations: the proof would be cheap to crack.
        "r=fyko+d2lbbFgONRv9qkxdawLxyz,s=QSXCR+Q6sek8bf92,i=1",
        "r=fyko+d2lbbFgONRv9qkxdawLxyz,s=QSXCR+Q6sek8bf92",
        "r=fyko+d2lbbFgONRv9qkxdawLxyz,s=!!,i=4096",
        "m=ext,r=fyko+d2lbbFgONRv9qkxdawLxyz,s=QSXCR+Q6sek8bf92,i=4096",
    ];
    for case in cases {
        let mut m = rfc5802();
        m.client_first();
        assert!(
            matches!(m.respond(case.as_bytes()), Err(SaslError::Malformed { .. })),
            "{case}"
        );
    }
}

#[test]
fn scram_escapes_the_user_name() {
    let mut m = Scram::new(Mechanism::ScramSha256, "a=b,c", "pw", "nonce".to_owned());
    assert_eq!(m.client_first(), b"n,,n=a=3Db=2Cc,r=nonce");
}

/// MS-NLMP 4.2.4.3: the CHALLENGE_MESSAGE of the NTLMv2 example.
const NLMP_CHALLENGE: &str = "4e544c4d53535000 02000000 0c000c00 38000000 33828ae2
    0123456789abcdef 0000000000000000 24002400 44000000 060070170000000f
    53006500720076006500720002000c0044006f006d00610069006e0001000c005300
    6500720076006500720000000000";

#[test]
fn ntlm_v2_gives_the_ms_nlmp_4_2_4_example() {
    let key = ntlm::ntowf_v2("Password", "User", "Domain");
    assert_eq!(key.to_vec(), hex("0c868a403bfd7a93a3001ef22ef02e3f"));

    let challenge = ntlm::parse_challenge(&hex(NLMP_CHALLENGE)).expect("challenge");
    assert_eq!(challenge.server_challenge.to_vec(), hex("0123456789abcdef"));
    assert_eq!(challenge.flags, 0xe28a_8233);
    assert_eq!(challenge.target_info.len(), 36);

    let r = ntlm::responses(
        &key,
        &challenge.server_challenge,
        &[0xaa; 8],
        0,
        &challenge.target_info,
    );
    assert_eq!(
        r.lm,
        hex("86c35097ac9cec102554764a57cccc19 aaaaaaaaaaaaaaaa")
    );
    assert_eq!(r.nt[..16], hex("68cd0ab851e51c96aabc927bebef6a1c"));
    // SessionBaseKey = HMAC-MD5(key, NTProofStr): the example's 4.2.4.1.2 value.
    assert_eq!(
        cram_md5::hmac_md5(&key, &r.nt[..16]).to_vec(),
        hex("8de40ccadbc14a82f15cb0ad0de95ca3")
    );
}

#[test]
fn ntlm_exchange_builds_an_authenticate_message() {
    let mut m = Ntlm::new("Domain\\User", "Password", [0xaa; 8], Some(0));
    let negotiate = m.negotiate();
    assert_eq!(&negotiate[..12], b"NTLMSSP\0\x01\0\0\0");
    assert_eq!(negotiate.len(), 32);
    let auth = m.respond(&hex(NLMP_CHALLENGE)).expect("authenticate");
    assert_eq!(&auth[..12], b"NTLMSSP\0\x03\0\0\0");
    let field = |at: usize| {
        let len = usize::from(u16::from_le_bytes([auth[at], auth[at + 1]]));
        let offset = u32::from_le_bytes(auth[at + 4..at + 8].try_into().unwrap()) as usize;
        auth[offset..offset + len].to_vec()
    };
    assert_eq!(
        field(12),
        hex("86c35097ac9cec102554764a57cccc19 aaaaaaaaaaaaaaaa")
    );
    assert_eq!(field(20)[..16], hex("68cd0ab851e51c96aabc927bebef6a1c"));
    let utf16 = |s: &str| -> Vec<u8> { s.encode_utf16().flat_map(u16::to_le_bytes).collect() };
    assert_eq!(field(28), utf16("Domain"));
    assert_eq!(field(36), utf16("User"));
    assert!(m.respond(b"again").is_err());
}

#[test]
fn ntlm_takes_a_challenge_without_target_info_and_refuses_garbage() {
    // The challenge up to its flags and server challenge, as servers without target info
    // send it (flags without NEGOTIATE_TARGET_INFO).
    let mut short = hex(NLMP_CHALLENGE);
    short.truncate(32);
    short[22] &= !0x80;
    let challenge = ntlm::parse_challenge(&short).expect("challenge");
    assert!(challenge.target_info.is_empty());
    assert_eq!(challenge.server_challenge.to_vec(), hex("0123456789abcdef"));
    assert!(ntlm::parse_challenge(b"garbage garbage garbage garbage garbage").is_err());
    let mut wrong_type = hex(NLMP_CHALLENGE);
    wrong_type[8] = 3;
    assert!(ntlm::parse_challenge(&wrong_type).is_err());
}

fn password(user: &'static str, pw: &'static str) -> Credentials<'static> {
    Credentials {
        username: user,
        secret: Secret::Password(pw),
    }
}

#[test]
fn plain_and_login_carry_the_password() {
    let creds = password("alice", "s3cret");
    let mut plain = Exchange::new(Mechanism::Plain, &creds).unwrap();
    assert_eq!(plain.initial_response().unwrap(), b"\0alice\0s3cret");
    // Without SASL-IR the server asks with an empty challenge.
    let mut plain = Exchange::new(Mechanism::Plain, &creds).unwrap();
    assert_eq!(plain.respond(b"").unwrap(), b"\0alice\0s3cret");
    assert!(plain.respond(b"").is_err());

    let mut login = Exchange::new(Mechanism::Login, &creds).unwrap();
    assert_eq!(login.initial_response(), None);
    assert_eq!(login.respond(b"Username:").unwrap(), b"alice");
    assert_eq!(login.respond(b"Password:").unwrap(), b"s3cret");
    assert!(login.respond(b"More:").is_err());
}

#[test]
fn token_mechanisms_encode_the_bearer_token() {
    let creds = Credentials {
        username: "bob@example.com",
        secret: Secret::BearerToken("tok"),
    };
    let mut x = Exchange::new(Mechanism::XOAuth2, &creds).unwrap();
    assert_eq!(
        x.initial_response().unwrap(),
        b"user=bob@example.com\x01auth=Bearer tok\x01\x01"
    );
    // An error comes as a challenge, answered with an empty response.
    assert_eq!(x.respond(br#"{"status":"401"}"#).unwrap(), b"");
    assert_eq!(x.server_error(), Some(r#"{"status":"401"}"#));

    let mut o = Exchange::new(Mechanism::OAuthBearer, &creds).unwrap();
    assert_eq!(
        o.initial_response().unwrap(),
        b"n,a=bob@example.com,\x01auth=Bearer tok\x01\x01"
    );
    assert_eq!(
        o.respond(br#"{"status":"invalid_token"}"#).unwrap(),
        b"\x01"
    );

    // The secret must suit the mechanism.
    assert!(matches!(
        Exchange::new(Mechanism::ScramSha256, &creds),
        Err(SaslError::WrongSecret { .. })
    ));
    assert!(matches!(
        Exchange::new(Mechanism::XOAuth2, &password("a", "b")),
        Err(SaslError::WrongSecret { .. })
    ));
}

#[test]
fn a_random_scram_exchange_completes_against_its_own_server_math() {
    // Exchange::new draws a fresh nonce each time.
    let creds = password("user", "pencil");
    let mut a = Exchange::new(Mechanism::ScramSha256, &creds).unwrap();
    let mut b = Exchange::new(Mechanism::ScramSha256, &creds).unwrap();
    assert_ne!(a.initial_response(), b.initial_response());
    assert!(format!("{a:?}").contains("ScramSha256"));
    assert!(!format!("{creds:?}").contains("pencil"));
}

fn offer(names: &[&str], apop: bool, password: bool) -> Offer {
    Offer {
        sasl: Offer::mechanisms(names.iter().copied()),
        apop,
        password,
    }
}

const ANY: Policy<'static> = Policy {
    allowed: &[],
    cleartext_ok: true,
    token: false,
};

#[test]
fn the_strongest_offered_method_is_chosen() {
    let all = offer(
        &[
            "PLAIN",
            "LOGIN",
            "CRAM-MD5",
            "SCRAM-SHA-1",
            "scram-sha-256",
            "NTLM",
            "GSSAPI",
        ],
        true,
        true,
    );
    assert_eq!(choose(&all, &ANY), Ok(Method::Sasl(Mechanism::ScramSha256)));
    let cases: &[(&[&str], bool, Method)] = &[
        (
            &["PLAIN", "SCRAM-SHA-1", "CRAM-MD5"],
            false,
            Method::Sasl(Mechanism::ScramSha1),
        ),
        (
            &["PLAIN", "NTLM", "CRAM-MD5"],
            true,
            Method::Sasl(Mechanism::CramMd5),
        ),
        (&["PLAIN", "NTLM"], true, Method::Apop),
        (&["PLAIN", "NTLM"], false, Method::Sasl(Mechanism::Ntlm)),
        (&["LOGIN", "PLAIN"], false, Method::Sasl(Mechanism::Plain)),
        (&["LOGIN"], false, Method::Sasl(Mechanism::Login)),
        (&[], false, Method::Password),
    ];
    for (names, apop, want) in cases {
        assert_eq!(
            choose(&offer(names, *apop, true), &ANY),
            Ok(*want),
            "{names:?}"
        );
    }
}

#[test]
fn auth_mechanisms_restrict_the_choice() {
    let all = offer(&["PLAIN", "SCRAM-SHA-256", "NTLM"], false, true);
    let ntlm = [Method::Sasl(Mechanism::Ntlm)];
    let policy = Policy {
        allowed: &ntlm,
        ..ANY
    };
    assert_eq!(choose(&all, &policy), Ok(Method::Sasl(Mechanism::Ntlm)));
    let cram = [Method::Sasl(Mechanism::CramMd5)];
    let err = choose(
        &all,
        &Policy {
            allowed: &cram,
            ..ANY
        },
    )
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "no login method fits: the server offers scram-sha-256, ntlm, plain, password; \
         the account allows cram-md5"
    );
}

#[test]
fn plain_text_methods_need_tls_and_tokens_need_token_mechanisms() {
    let all = offer(&["PLAIN", "LOGIN", "CRAM-MD5", "XOAUTH2"], false, true);
    let clear = Policy {
        cleartext_ok: false,
        ..ANY
    };
    assert_eq!(choose(&all, &clear), Ok(Method::Sasl(Mechanism::CramMd5)));
    let weak = offer(&["PLAIN", "LOGIN"], false, true);
    let err = choose(&weak, &clear).unwrap_err();
    assert!(err.note.contains("only over TLS"), "{err}");

    let token = Policy { token: true, ..ANY };
    assert_eq!(choose(&all, &token), Ok(Method::Sasl(Mechanism::XOAuth2)));
    let both = offer(&["XOAUTH2", "OAUTHBEARER", "SCRAM-SHA-256"], false, true);
    assert_eq!(
        choose(&both, &token),
        Ok(Method::Sasl(Mechanism::OAuthBearer))
    );
    assert!(choose(&offer(&["PLAIN"], false, true), &token).is_err());
}

#[test]
fn config_names_round_trip() {
    for (name, method) in Method::CONFIG_NAMES {
        assert_eq!(Method::from_config_name(name), Some(method));
        assert_eq!(method.config_name(), name);
    }
    for m in Mechanism::ALL {
        assert_eq!(Mechanism::from_name(&m.name().to_lowercase()), Some(m));
    }
    assert_eq!(Method::from_config_name("SCRAM-SHA-256"), None);
}
