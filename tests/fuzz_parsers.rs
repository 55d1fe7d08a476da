//! Fuzzing (as long property tests; cargo-fuzz needs nightly) of what parses the servers'
//! words: the POP3 status, CAPA, UIDL and LIST parsers and the streaming dot-decoder, and the
//! SMTP reply parsing the relay relies on (`relay::wire::parse_reply`, and `Relay::send`
//! against a fake server answering with arbitrary replies). Nothing may panic; the decoder
//! must give the same result however its input is split; the relay must give one result per
//! recipient and never call a refused recipient delivered.
//!
//! Inputs that once broke something are kept in `tests/corpus/pop3/` and `tests/corpus/smtp/`
//! (see `tests/corpus/README.md`); `pop3_corpus` and `smtp_corpus` run them every time.
//!
//! `MAILFERRY_FUZZ_CASES=N` runs N cases per parser property (default 2,000) and N/20 relay
//! sessions (default 100).

use std::path::PathBuf;
use std::time::Duration;

use mailferry::address::Address;
use mailferry::config::{RelayConfig, TlsMode};
use mailferry::fetch::pop3::protocol::{
    Capabilities, DATA_LINE_MAX, DotDecoder, Status, UID_MAX, lines, parse_list_line, parse_status,
    parse_uidl_line,
};
use mailferry::recipient;
use mailferry::relay::{Relay, SmtpRelay};
use proptest::prelude::*;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

/// Cases per parser property: `MAILFERRY_FUZZ_CASES`, else 2,000.
fn cases() -> u32 {
    std::env::var("MAILFERRY_FUZZ_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2_000)
}

/// Relay sessions (each a TCP connection, some waiting for a timeout): a twentieth.
fn relay_cases() -> u32 {
    (cases() / 20).max(1)
}

/// `cases` cases; failures recorded in `proptest-regressions/fuzz_parsers.txt` (replayed
/// first on the next run; keep the input itself in `tests/corpus/`).
fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        failure_persistence: Some(Box::new(
            proptest::test_runner::FileFailurePersistence::Direct(
                "proptest-regressions/fuzz_parsers.txt",
            ),
        )),
        ..ProptestConfig::default()
    }
}

/// The files of `tests/corpus/<kind>/`, sorted by name.
fn corpus(kind: &str) -> Vec<(String, Vec<u8>)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/corpus")
        .join(kind);
    let mut files: Vec<(String, Vec<u8>)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
        .flatten()
        .filter(|e| e.file_name().to_string_lossy() != "README.md")
        .map(|e| {
            let bytes = std::fs::read(e.path()).expect("read a corpus file");
            (e.file_name().to_string_lossy().into_owned(), bytes)
        })
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no corpus in {}", dir.display());
    files
}

// ---------------------------------------------------------------------------------------
// POP3

/// Every POP3 line parser on `line`: no panic, and what is accepted is what the RFCs allow.
fn check_pop3_line(line: &[u8]) {
    if let Ok(Status::Ok(_)) = parse_status(line) {
        assert!(
            line.len() >= 3 && line[..3].eq_ignore_ascii_case(b"+OK"),
            "{line:?}"
        );
    }
    if let Ok(Status::Err { .. }) = parse_status(line) {
        assert!(
            line.len() >= 4 && line[..4].eq_ignore_ascii_case(b"-ERR"),
            "{line:?}"
        );
    }
    if let Ok((number, uid)) = parse_uidl_line(line) {
        assert!(number > 0, "{line:?}");
        assert!(!uid.is_empty() && uid.len() <= UID_MAX, "{line:?}");
        assert!(uid.bytes().all(|b| (0x21..=0x7e).contains(&b)), "{line:?}");
    }
    if let Ok((number, _)) = parse_list_line(line) {
        assert!(number > 0, "{line:?}");
    }
}

/// Decodes `input` cut at `cuts` (sorted positions), feeding each piece until the decoder
/// is done: (output, done, bytes consumed in all, overflow).
fn decode_split(
    input: &[u8],
    cuts: &[usize],
    line_max: usize,
    total_max: usize,
) -> (Vec<u8>, bool, usize, Option<String>) {
    let mut dec = DotDecoder::new(line_max, total_max);
    let mut out = Vec::new();
    let mut consumed = 0;
    let mut prev = 0;
    for &cut in cuts.iter().chain(std::iter::once(&input.len())) {
        let piece = &input[prev..cut];
        prev = cut;
        let fed = dec.feed(piece, &mut out);
        consumed += fed.consumed;
        assert_eq!(dec.is_done(), fed.done);
        if fed.done {
            break;
        }
        assert_eq!(
            fed.consumed,
            piece.len(),
            "an unfinished decoder takes everything"
        );
    }
    (
        out,
        dec.is_done(),
        consumed,
        dec.overflow().map(|o| o.to_string()),
    )
}

/// The whole POP3 check of one input: every line parser on every line and on the whole,
/// CAPA, and the decoder split at `cuts` against the decoder fed the whole.
fn check_pop3_input(input: &[u8], cuts: &[usize], line_max: usize, total_max: usize) {
    check_pop3_line(input);
    for line in input.split_inclusive(|b| *b == b'\n') {
        check_pop3_line(line);
    }
    let _ = Capabilities::parse(input);
    let _ = lines(input).count();
    let whole = decode_split(input, &[], line_max, total_max);
    let split = decode_split(input, cuts, line_max, total_max);
    // Which limit is reported may differ (see `decoder_overflow_kind_does_not_depend_on_the_split`);
    // whether one was exceeded may not.
    assert_eq!(
        (&whole.0, whole.1, whole.2, whole.3.is_some()),
        (&split.0, split.1, split.2, split.3.is_some()),
        "decoding split at {cuts:?} differs from decoding whole"
    );
    if whole.3.is_some() {
        assert!(whole.0.is_empty(), "an overflowing body is discarded");
    }
}

/// Bytes that matter to POP3 parsers, mixed with any byte.
fn pop3_bytes() -> impl Strategy<Value = Vec<u8>> {
    let byte = prop_oneof![
        3 => Just(b'.'),
        3 => Just(b'\r'),
        3 => Just(b'\n'),
        2 => Just(b' '),
        2 => prop::sample::select(b"+-OKERokerUIDLSTSASL[]0123456789\t\x00\xff".to_vec()),
        4 => any::<u8>(),
    ];
    prop::collection::vec(byte, 0..300)
}

/// Limits for the decoder: tiny ones to hit the overflow paths, or the real ones.
fn limits() -> impl Strategy<Value = (usize, usize)> {
    prop_oneof![
        1 => (0usize..40, 0usize..200),
        1 => Just((DATA_LINE_MAX, usize::MAX)),
    ]
}

proptest! {
    #![proptest_config(config(cases()))]

    #[test]
    fn pop3_parsers_take_any_bytes(
        input in prop_oneof![pop3_bytes(), prop::collection::vec(any::<u8>(), 0..300)],
        cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..10),
        (line_max, total_max) in limits(),
    ) {
        let mut at: Vec<usize> = cuts.iter().map(|c| c.index(input.len() + 1)).collect();
        at.sort_unstable();
        check_pop3_input(&input, &at, line_max, total_max);
    }
}

#[test]
fn pop3_corpus() {
    for (name, input) in corpus("pop3") {
        eprintln!("pop3 corpus: {name}");
        for limits in [
            (DATA_LINE_MAX, usize::MAX),
            (4, 64),
            (10, usize::MAX),
            (20, 16),
            (0, 0),
        ] {
            // Every single cut, and (for short inputs) every pair of cuts.
            for i in 0..=input.len() {
                check_pop3_input(&input, &[i], limits.0, limits.1);
                if input.len() <= 64 {
                    for j in i..=input.len() {
                        check_pop3_input(&input, &[i, j], limits.0, limits.1);
                    }
                }
            }
        }
    }
}

/// Found by `pop3_parsers_take_any_bytes` (corpus: `overflow-line-and-total-in-one-piece`):
/// 25 bytes of one line with `line_max` 20 and `total_max` 16. Fed whole, the decoder says
/// "a line longer than 20 bytes"; fed 17 + 8 bytes, "more than 16 bytes". The total limit is
/// crossed first (at byte 17, the line limit at byte 21), so that is the right answer either
/// way: the error a user sees must not depend on how the network cut the data.
#[test]
fn decoder_overflow_kind_does_not_depend_on_the_split() {
    let input = [0u8; 25];
    let whole = decode_split(&input, &[], 20, 16);
    for cut in 0..=input.len() {
        let split = decode_split(&input, &[cut], 20, 16);
        assert_eq!(whole, split, "cut at {cut}");
    }
    assert_eq!(whole.3.as_deref(), Some("more than 16 bytes"));
}

/// Found by `pop3_parsers_take_any_bytes` (corpus: `cr-at-chunk-end-escapes-line-limit`):
/// a CR that ends a chunk is not counted toward the line length (it might be half of a
/// CRLF), and when the next chunk shows it was not, it is never counted. So a line one byte
/// over `line_max` passes when the network cuts it right after an inner CR, and fails when
/// it does not.
#[test]
fn decoder_counts_a_cr_at_a_chunk_end_toward_the_line_limit() {
    let input = b"aaaaa\raaaaa\r\n.\r\n"; // 11 bytes before the CRLF
    let whole = decode_split(input, &[], 10, usize::MAX);
    assert_eq!(whole.3.as_deref(), Some("a line longer than 10 bytes"));
    for cut in 0..=input.len() {
        assert_eq!(
            decode_split(input, &[cut], 10, usize::MAX),
            whole,
            "cut at {cut}"
        );
    }
}

/// Every corpus input cut at every byte: the overflow reported is the same as when whole.
#[test]
fn pop3_corpus_overflow_kind() {
    for (name, input) in corpus("pop3") {
        for (line_max, total_max) in [(4, 64), (20, 16)] {
            let whole = decode_split(&input, &[], line_max, total_max);
            for cut in 0..=input.len() {
                let split = decode_split(&input, &[cut], line_max, total_max);
                assert_eq!(
                    whole.3, split.3,
                    "{name}: limits {line_max}/{total_max}, cut at {cut}"
                );
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// SMTP

/// The relay's reply parser on any text: no panic, and a parsed reply has a code in 2xx..5xx
/// and took no more than it was given.
fn check_smtp_reply(text: &str) {
    if let Ok(Some(parsed)) = mailferry::relay::wire::parse_reply(text.as_bytes()) {
        assert!((200..600).contains(&parsed.code), "{parsed:?}");
        assert!(parsed.used <= text.len());
        let _ = parsed.reply().to_string();
    }
}

/// What the fake server answers at each step of one transaction (each a raw reply, CRLF
/// included, sent as is).
#[derive(Debug, Clone)]
struct Script {
    greeting: Vec<u8>,
    ehlo: Vec<u8>,
    mail: Vec<u8>,
    rcpt: Vec<Vec<u8>>,
    data: Vec<u8>,
    data_end: Vec<u8>,
}

impl Script {
    /// A server that accepts everything.
    fn accepting(recipients: usize) -> Script {
        Script {
            greeting: b"220 fake ESMTP\r\n".to_vec(),
            ehlo: b"250-fake\r\n250-8BITMIME\r\n250 SMTPUTF8\r\n".to_vec(),
            mail: b"250 2.1.0 ok\r\n".to_vec(),
            rcpt: vec![b"250 2.1.5 ok\r\n".to_vec(); recipients],
            data: b"354 go ahead\r\n".to_vec(),
            data_end: b"250 2.0.0 queued\r\n".to_vec(),
        }
    }

    /// Every script with `reply` at one step and accepting replies elsewhere.
    fn each_step_with(reply: &[u8], recipients: usize) -> Vec<Script> {
        let base = Script::accepting(recipients);
        let mut all = Vec::new();
        for step in 0..5 + recipients {
            let mut s = base.clone();
            let slot = match step {
                0 => &mut s.greeting,
                1 => &mut s.ehlo,
                2 => &mut s.mail,
                3 => &mut s.data,
                4 => &mut s.data_end,
                n => &mut s.rcpt[n - 5],
            };
            *slot = reply.to_vec();
            all.push(s);
        }
        all
    }
}

/// The reply code of a well-formed single- or multi-line reply, `None` for anything else.
fn well_formed_code(reply: &[u8]) -> Option<u16> {
    let text = std::str::from_utf8(reply).ok()?;
    let lines: Vec<&str> = text.strip_suffix("\r\n")?.split("\r\n").collect();
    let code = lines.first()?.get(..3)?;
    let n: u16 = code.parse().ok().filter(|n| (200..600).contains(n))?;
    for (i, line) in lines.iter().enumerate() {
        let sep = if i + 1 == lines.len() { " " } else { "-" };
        let rest = line.strip_prefix(code)?;
        if !(rest.starts_with(sep) || (rest.is_empty() && i + 1 == lines.len())) {
            return None;
        }
        if line.contains(['\r', '\n']) {
            return None;
        }
    }
    Some(n)
}

/// Serves one session from `script` on `listener`: a reply per command; after a 354 to
/// DATA, reads the message up to its final dot. Ends when the client leaves or after QUIT.
async fn serve(listener: TcpListener, script: Script) {
    let Ok((stream, _)) = listener.accept().await else {
        return;
    };
    let (read, mut write) = stream.into_split();
    let mut read = BufReader::new(read);
    if write.write_all(&script.greeting).await.is_err() {
        return;
    }
    let mut rcpt = 0;
    let mut line = Vec::new();
    loop {
        line.clear();
        match read.read_until(b'\n', &mut line).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        let verb = String::from_utf8_lossy(&line)
            .split_whitespace()
            .next()
            .unwrap_or("")
            .to_ascii_uppercase();
        let reply: &[u8] = match verb.as_str() {
            "EHLO" | "HELO" => &script.ehlo,
            "MAIL" => &script.mail,
            "RCPT" => {
                rcpt += 1;
                script
                    .rcpt
                    .get(rcpt - 1)
                    .map_or(b"250 ok\r\n".as_slice(), |r| r.as_slice())
            }
            "DATA" => &script.data,
            "QUIT" => {
                let _ = write.write_all(b"221 bye\r\n").await;
                return;
            }
            _ => b"250 ok\r\n",
        };
        if write.write_all(reply).await.is_err() {
            return;
        }
        if verb == "DATA" && reply.starts_with(b"354") {
            loop {
                line.clear();
                match read.read_until(b'\n', &mut line).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) if line == b".\r\n" => break,
                    Ok(_) => {}
                }
            }
            if write.write_all(&script.data_end).await.is_err() {
                return;
            }
        }
    }
}

/// One `Relay::send` to a fake server following `script`: no panic, one result per
/// recipient in order, and a recipient whose RCPT got a well-formed non-2xx reply is never
/// delivered.
fn check_relay(rt: &tokio::runtime::Runtime, script: &Script, message: &[u8]) {
    let recipients: Vec<Address> = (0..script.rcpt.len())
        .map(|i| Address::parse(&format!("r{i}@example.com")).expect("a valid address"))
        .collect();
    let sender = Address::parse("sender@partner.org").expect("a valid address");
    let result = rt.block_on(async {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("local_addr").port();
        let server = tokio::spawn(serve(listener, script.clone()));
        let relay = SmtpRelay::new(RelayConfig {
            host: "127.0.0.1".into(),
            port,
            tls: TlsMode::None,
            helo: Some("fuzz.example".into()),
            connections: 1,
            tls_options: Default::default(),
            timeout: Duration::from_millis(300),
            retry: mailferry::config::RetryPolicy::default(),
            auth: None,
            data_timeout: Duration::from_millis(300),
        });
        let result = relay.send(Some(&sender), &recipients, message).await;
        relay.close().await;
        server.abort();
        result
    });
    let Ok(results) = result else { return };
    assert_eq!(results.len(), recipients.len(), "one result per recipient");
    // A reply with stray lines puts client and server out of step: later replies then
    // answer other commands, and nothing can be said about which recipient got which.
    let in_step = [&script.greeting, &script.ehlo, &script.mail]
        .into_iter()
        .chain(&script.rcpt)
        .all(|r| well_formed_code(r).is_some());
    for ((result, rcpt), reply) in results.iter().zip(&recipients).zip(&script.rcpt) {
        assert_eq!(
            &result.address, rcpt,
            "results in the order of the recipients"
        );
        if in_step
            && let Some(code) = well_formed_code(reply)
            && !(200..300).contains(&code)
        {
            assert!(
                !matches!(result.status, recipient::Status::Delivered(_)),
                "RCPT refused with {:?} but reported delivered: {:?}",
                String::from_utf8_lossy(reply),
                result.status
            );
        }
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime")
}

/// A reply: usually well-formed (any code, often the ones that matter, one to three lines),
/// sometimes a line of anything.
fn smtp_reply() -> impl Strategy<Value = Vec<u8>> {
    let code = prop_oneof![
        4 => prop::sample::select(vec![220u16, 250, 251, 354, 421, 450, 451, 452, 550, 552, 553, 554]),
        1 => 0u16..1000,
    ];
    let text = prop::collection::vec(
        prop_oneof![8 => any::<char>().prop_filter("no CR/LF", |c| *c != '\r' && *c != '\n'), 1 => Just(' ')],
        0..30,
    )
    .prop_map(|c| c.into_iter().collect::<String>());
    let well_formed = (code, prop::collection::vec(text, 1..4)).prop_map(|(code, texts)| {
        let n = texts.len();
        let mut reply = String::new();
        for (i, t) in texts.iter().enumerate() {
            let sep = if i + 1 == n { ' ' } else { '-' };
            reply.push_str(&format!("{code:03}{sep}{t}\r\n"));
        }
        reply.into_bytes()
    });
    let noise = prop::collection::vec(
        prop_oneof![
            3 => prop::sample::select(b"0123456789- \r\n".to_vec()),
            1 => any::<u8>(),
        ],
        0..40,
    )
    .prop_map(|mut bytes| {
        bytes.extend_from_slice(b"\r\n");
        bytes
    });
    prop_oneof![6 => well_formed, 1 => noise]
}

/// A script: accepting replies, with each step replaced by a fuzzed one now and then.
fn script() -> impl Strategy<Value = Script> {
    let maybe = || prop::option::weighted(0.3, smtp_reply());
    (
        maybe(),
        maybe(),
        maybe(),
        prop::collection::vec(maybe(), 1..4),
        maybe(),
        maybe(),
    )
        .prop_map(|(greeting, ehlo, mail, rcpt, data, data_end)| {
            let base = Script::accepting(rcpt.len());
            Script {
                greeting: greeting.unwrap_or(base.greeting),
                ehlo: ehlo.unwrap_or(base.ehlo),
                mail: mail.unwrap_or(base.mail),
                rcpt: rcpt
                    .into_iter()
                    .zip(base.rcpt)
                    .map(|(r, b)| r.unwrap_or(b))
                    .collect(),
                data: data.unwrap_or(base.data),
                data_end: data_end.unwrap_or(base.data_end),
            }
        })
}

proptest! {
    #![proptest_config(config(cases()))]

    #[test]
    fn smtp_reply_parser_takes_any_text(
        text in prop_oneof![
            any::<String>(),
            smtp_reply().prop_map(|b| String::from_utf8_lossy(&b).into_owned()),
        ],
    ) {
        check_smtp_reply(&text);
    }
}

proptest! {
    #![proptest_config(config(relay_cases()))]

    #[test]
        fn relay_survives_any_server_replies(
        script in script(),
        message in prop::collection::vec(
            prop_oneof![3 => prop::sample::select(b".\r\nab".to_vec()), 1 => any::<u8>()],
            0..200,
        ),
    ) {
        let rt = runtime();
        check_relay(&rt, &script, &message);
    }
}

#[test]
fn smtp_corpus() {
    let rt = runtime();
    for (name, reply) in corpus("smtp") {
        eprintln!("smtp corpus: {name}");
        check_smtp_reply(&String::from_utf8_lossy(&reply));
        for recipients in [1, 3] {
            for script in Script::each_step_with(&reply, recipients) {
                check_relay(&rt, &script, b"Subject: corpus\r\n\r\n.\r\n..\r\nend\r\n");
            }
        }
    }
}

/// Found by `relay_survives_any_server_replies` (corpus: `ehlo-line-of-spaces-panics-lettre`):
/// an EHLO reply with a line holding only spaces (`250  `) made lettre 0.11.23 (used before the relay's own client) panic
/// (`split_whitespace().next().unwrap()` in `ServerInfo::from_response`). The internal server
/// must not be able to crash mailferry (in the daemon, the panic ends that account's poller).
#[test]
fn relay_survives_an_ehlo_line_of_only_spaces() {
    let rt = runtime();
    let mut script = Script::accepting(1);
    script.ehlo = b"250-fake\r\n250  \r\n".to_vec();
    check_relay(&rt, &script, b"Subject: x\r\n\r\nbody\r\n");
}

#[test]
fn well_formed_code_knows_a_reply() {
    // The oracle of `check_relay` itself: it must tell a refusal from noise.
    assert_eq!(well_formed_code(b"550 5.1.1 no\r\n"), Some(550));
    assert_eq!(well_formed_code(b"450-a\r\n450 b\r\n"), Some(450));
    assert_eq!(well_formed_code(b"250\r\n"), Some(250));
    assert_eq!(well_formed_code(b"550-a\r\n551 b\r\n"), None);
    assert_eq!(well_formed_code(b"55 x\r\n"), None);
    assert_eq!(well_formed_code(b"550 x"), None);
}
