//! Fuzzing (as property tests, like `fuzz_parsers.rs` for POP3 and SMTP) of what reads an
//! IMAP server's words: the response parser, the literal marker, mailbox-name decoding, and
//! the whole client against a server that answers a session with arbitrary bytes. Nothing
//! may panic, and the client must come back (with a result or an error) within its timeout.
//!
//! `MAILFERRY_FUZZ_CASES=N` runs N cases per parser property (default 2,000) and N/20
//! client sessions (default 100).

use std::time::Duration;

use mailferry::config::{AccountConfig, Mode, Password, Protocol, Retention, TlsMode};
use mailferry::fetch::imap::protocol::{
    Literal, RawResponse, Response, decode_mailbox_name, literal_at_end, parse,
};
use mailferry::fetch::{ImapClient, ImapError};
use proptest::prelude::*;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

fn cases() -> u32 {
    std::env::var("MAILFERRY_FUZZ_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2_000)
}

fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// Response text made of IMAP's own pieces, so that the parser gets deep, not only rejects.
fn imap_text() -> impl Strategy<Value = Vec<u8>> {
    let piece = prop_oneof![
        Just(b"* ".to_vec()),
        Just(b"A1 ".to_vec()),
        Just(b"+ ".to_vec()),
        Just(b"OK ".to_vec()),
        Just(b"NO ".to_vec()),
        Just(b"BYE ".to_vec()),
        Just(b"FETCH ".to_vec()),
        Just(b"LIST ".to_vec()),
        Just(b"SEARCH ".to_vec()),
        Just(b"CAPABILITY ".to_vec()),
        Just(b"EXISTS".to_vec()),
        Just(b"UID ".to_vec()),
        Just(b"RFC822.SIZE ".to_vec()),
        Just(b"BODY[] ".to_vec()),
        Just(b"BODY[HEADER.FIELDS (A)]".to_vec()),
        Just(b"<0>".to_vec()),
        Just(b"FLAGS ".to_vec()),
        Just(b"NIL ".to_vec()),
        Just(b"[UIDVALIDITY ".to_vec()),
        Just(b"[".to_vec()),
        Just(b"]".to_vec()),
        Just(b"(".to_vec()),
        Just(b")".to_vec()),
        Just(b"\"".to_vec()),
        Just(b"\\".to_vec()),
        Just(b"{3}".to_vec()),
        Just(b"{".to_vec()),
        Just(b"}".to_vec()),
        Just(b"\\Seen ".to_vec()),
        Just(b"&AOQ-".to_vec()),
        any::<u32>().prop_map(|n| n.to_string().into_bytes()),
        proptest::collection::vec(any::<u8>(), 0..4),
    ];
    proptest::collection::vec(piece, 0..24).prop_map(|pieces| pieces.concat())
}

fn literals() -> impl Strategy<Value = Vec<Literal>> {
    proptest::collection::vec(
        prop_oneof![
            proptest::collection::vec(any::<u8>(), 0..16).prop_map(Literal::Kept),
            (0u64..100).prop_map(Literal::Dropped),
        ],
        0..4,
    )
}

proptest! {
    #![proptest_config(config(cases()))]

    #[test]
    fn the_response_parser_never_panics(text in imap_text(), literals in literals()) {
        let raw = RawResponse { text: text.clone(), literals };
        if let Ok(Response::Fetch { data, .. }) = parse(raw) {
            // A body is only ever taken from BODY[].
            if data.body.is_some() {
                prop_assert!(text.windows(6).any(|w| w == b"BODY[]"));
            }
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        let _ = parse(RawResponse { text: bytes.clone(), literals: Vec::new() });
        let _ = literal_at_end(&bytes);
        let _ = decode_mailbox_name(&bytes);
    }

    #[test]
    fn a_literal_marker_is_read_back(n in any::<u32>(), plus in any::<bool>(), head in imap_text()) {
        let mut line = head;
        line.extend_from_slice(format!("{{{n}{}}}", if plus { "+" } else { "" }).as_bytes());
        prop_assert_eq!(literal_at_end(&line), Some(Ok(u64::from(n))));
    }
}

fn account(port: u16) -> AccountConfig {
    AccountConfig {
        name: "fuzz".into(),
        protocol: Protocol::Imap,
        host: "127.0.0.1".into(),
        port,
        tls: TlsMode::None,
        tls_options: Default::default(),
        username: "u".into(),
        password: Password::new("p"),
        mode: Mode::CatchAll,
        folder: "INBOX".into(),
        poll_interval: Duration::from_secs(60),
        max_per_pass: 100,
        retention: Retention::Delete,
        timeout: Duration::from_millis(300),
        pass_deadline: Duration::from_secs(60),
        initial: None,
        expunge_every: 50,
        fetch_order: Default::default(),
        after_fetch: Default::default(),
        unseen_only: false,
        auth: Default::default(),
        idle: false,
        oauth: None,
        proxy: None,
        auth_backoff_max: mailferry::config::DEFAULT_AUTH_BACKOFF_MAX,
        backoff_max: mailferry::config::DEFAULT_BACKOFF_MAX,
        routing: Default::default(),
    }
}

/// A server that logs the client in and selects INBOX properly, then answers the listing
/// with `reply` (arbitrary bytes) and the download of UID 1 with `body_reply`.
async fn session(reply: Vec<u8>, body_reply: Vec<u8>) -> Result<(), ImapError> {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = tokio::spawn(async move {
        let Ok((tcp, _)) = listener.accept().await else {
            return;
        };
        let mut io = BufReader::new(tcp);
        let _ = io
            .get_mut()
            .write_all(b"* OK [CAPABILITY IMAP4rev1 UIDPLUS] hi\r\n")
            .await;
        let mut line = String::new();
        while let Ok(n) = io.read_line(&mut line).await {
            if n == 0 {
                return;
            }
            let tag = line.split(' ').next().unwrap_or("*").to_owned();
            let answer: Vec<u8> = if line.contains("SELECT") {
                format!("* 3 EXISTS\r\n* OK [UIDVALIDITY 7] x\r\n{tag} OK done\r\n").into_bytes()
            } else if line.contains("RFC822.SIZE") {
                reply.clone()
            } else if line.contains("BODY.PEEK") {
                body_reply.clone()
            } else {
                format!("{tag} OK done\r\n").into_bytes()
            };
            line.clear();
            if io.get_mut().write_all(&answer).await.is_err() {
                return;
            }
        }
    });
    let result = async {
        let mut client = ImapClient::connect(&account(port)).await?;
        client.set_max_message_size(64);
        client.open_folder("INBOX").await?;
        let listing = client.listing(false).await?;
        client.fetch(1, None).await?;
        for l in listing {
            client.mark_deleted(l.uid).await?;
        }
        client.commit().await
    }
    .await;
    server.abort();
    result
}

proptest! {
    #![proptest_config(config((cases() / 20).max(1)))]

    #[test]
    fn the_client_survives_any_reply(
        reply in imap_text(),
        body in imap_text(),
        ends in 0usize..3,
    ) {
        let end = ["", "\r\n", "\r\nA3 OK done\r\n"][ends];
        let mut reply = reply;
        reply.extend_from_slice(end.as_bytes());
        let mut body = body;
        body.extend_from_slice(b"\r\nA4 OK done\r\n");
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        // Every read has a 300 ms timeout; a few reads per command at most.
        let outcome = runtime.block_on(async {
            tokio::time::timeout(Duration::from_secs(10), session(reply, body)).await
        });
        prop_assert!(outcome.is_ok(), "the client hung");
    }
}
