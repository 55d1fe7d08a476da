//! The routing acceptance corpus: real-world-shaped messages (`tests/corpus/route/*.eml`),
//! each with its expected MAIL FROM and recipients in `tests/corpus/route/expected.tsv`, plus
//! two generated ones (5,000 recipients; header lines over 100 KB).
//!
//! `corpus_routes_as_the_table_says` runs the router on each (always). The end-to-end test
//! (`MAILFERRY_E2E=1`) puts them all into a real Dovecot mailbox, runs `mailferry poll-once`
//! against smtp-sink and compares each message's transactions with the table exactly; then
//! the same mail is put there again and a new process (a restart) delivers none of it again
//! (dedup), and a third pass sends nothing.
//!
//! The `copies-GROUP-*` cases are copies of one message as a provider stores them (one per
//! recipient, each with its own envelope header, and one with all of them): end to end each
//! of their recipients gets exactly one copy, also after the restart; with `dedup: off`
//! (`with_dedup_off_...`) every copy is delivered as its own row says.

mod support;

use std::collections::BTreeMap;
use std::path::Path;

use support::{AccountYaml, Dovecot, GatewayConfig, Secret, SmtpSink, Transaction, run_mailferry};

const USER: &str = "catchall@example.com";
const PASS: &str = "corpus-secret";
const POSTMASTER: &str = "postmaster@corp.example";
const DOMAINS: [&str; 4] = [
    "example.com",
    "*.example.org",
    "bücher.example",
    "corp.example",
];
/// The directory: the whole of example.com and the IDN domain, two people of sales.example.org.
const DIRECTORY: &str = "# the corpus's known local addresses\n*@example.com\n*@bücher.example\nalice@sales.example.org\nbob@sales.example.org\n";

/// The routing keys of the corpus configuration (top level), besides domains and postmaster.
fn routing_lines() -> Vec<&'static str> {
    vec![
        "envelope_headers: [X-Original-To, Delivered-To, X-Envelope-To, Envelope-To, Received-For]",
        "rewrite:",
        "  \"@example.net\": \"@example.com\"",
        "  sales@example.com: j.doe@example.com",
        "directory: directory",
    ]
}

/// What one message should become.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Expected {
    /// Delivered: MAIL FROM (empty for `<>`) and the recipients, each once.
    Delivered(String, Vec<String>),
    /// A loop: quarantined, never delivered.
    Quarantined,
}

struct Case {
    name: String,
    raw: Vec<u8>,
    expected: Expected,
}

fn corpus_dir() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/corpus/route"))
}

/// The table's cases, then the generated ones.
fn cases() -> Vec<Case> {
    let table = std::fs::read_to_string(corpus_dir().join("expected.tsv")).unwrap();
    let mut cases = Vec::new();
    for line in table
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let cols: Vec<&str> = line.split('\t').collect();
        assert_eq!(cols.len(), 3, "bad table line {line:?}");
        let raw = std::fs::read(corpus_dir().join(cols[0])).unwrap();
        let expected = if cols[2] == "quarantine" {
            Expected::Quarantined
        } else {
            let from = if cols[1] == "-" { "" } else { cols[1] };
            let rcpts = cols[2].split(" | ").map(str::to_string).collect();
            Expected::Delivered(from.to_string(), rcpts)
        };
        let name = cols[0].trim_end_matches(".eml").to_string();
        cases.push(Case {
            name,
            raw,
            expected,
        });
    }
    cases.extend(generated());
    cases
}

fn header(name: &str, to: &str, extra: &str) -> Vec<u8> {
    format!(
        "Return-Path: <sender@remote.test>\nReceived: from mx1.provider.net by pop.provider.net (Postfix) with ESMTPS id 1; Mon, 2 Nov 2026 10:00:00 +0000\nX-Corpus: {name}\nMessage-ID: <{name}.2026@remote.test>\nFrom: sender@remote.test\nTo: {to}\n{extra}Subject: {name}\n\nbody\n"
    )
    .into_bytes()
}

/// 5,000 local recipients (folded, among foreign ones), and a To: line over 100 KB on one
/// physical line after an X- header of 150 KB.
fn generated() -> Vec<Case> {
    let many: Vec<String> = (1..=5000).map(|i| format!("r{i:04}@example.com")).collect();
    let mut to: Vec<String> = many.iter().map(|a| format!("R {a} <{a}>")).collect();
    to.insert(2500, "outside@remote.test".into());
    let long_to: Vec<String> = (0..6000).map(|i| format!("x{i:04}@remote.test")).collect();
    let long_to = format!("{}, alice@example.com, bob@example.com", long_to.join(", "));
    assert!(long_to.len() > 100_000);
    let x_long = format!("X-Long: {}\n", "a".repeat(150_000));
    vec![
        Case {
            name: "gen-5000-recipients".into(),
            raw: header("gen-5000-recipients", &to.join(",\n "), ""),
            expected: Expected::Delivered("sender@remote.test".into(), many),
        },
        Case {
            name: "gen-header-lines-over-100k".into(),
            raw: header("gen-header-lines-over-100k", &long_to, &x_long),
            expected: Expected::Delivered(
                "sender@remote.test".into(),
                vec!["alice@example.com".into(), "bob@example.com".into()],
            ),
        },
    ]
}

/// The corpus configuration in `dir` (with its directory file), relaying to `smtp_port` and
/// reading `pop3_port`.
fn config(dir: &Path, pop3_port: u16, smtp_port: u16) -> std::path::PathBuf {
    config_with(dir, pop3_port, smtp_port, &[])
}

/// [`config`] with these top-level lines too.
fn config_with(dir: &Path, pop3_port: u16, smtp_port: u16, lines: &[&str]) -> std::path::PathBuf {
    std::fs::write(dir.join("directory"), DIRECTORY).unwrap();
    let mut c = GatewayConfig::new(dir.join("state"), smtp_port)
        .domains(&DOMAINS)
        .postmaster(POSTMASTER);
    for line in routing_lines().iter().chain(lines) {
        c = c.extra_line(line);
    }
    c.account(AccountYaml {
        name: "corpus".into(),
        port: pop3_port,
        username: USER.into(),
        password: Secret::Inline(PASS.into()),
        extra_lines: vec!["max_per_pass: 500".into()],
        ..AccountYaml::default()
    })
    .write(dir)
}

#[test]
fn the_corpus_is_large_enough() {
    let cases = cases();
    assert!(cases.len() >= 60, "{} cases", cases.len());
    let mut names: Vec<&str> = cases.iter().map(|c| c.name.as_str()).collect();
    names.sort();
    names.dedup();
    assert_eq!(names.len(), cases.len(), "case names are unique");
}

#[test]
fn corpus_routes_as_the_table_says() {
    let dir = tempfile::tempdir().unwrap();
    let path = config(dir.path(), 110, 25);
    let config = mailferry::config::load(&path).unwrap_or_else(|e| panic!("{e}"));
    let rules = mailferry::route::Rules::for_account(&config, &config.accounts[0]);
    let mut wrong = Vec::new();
    for case in cases() {
        let routing = mailferry::route::route(&case.raw, &rules);
        let got = match routing.looped {
            Some(_) => Expected::Quarantined,
            None => {
                let from = routing.return_path.map(|a| a.to_string());
                let rcpts = routing.recipients.iter().map(|r| r.address.to_string());
                Expected::Delivered(from.unwrap_or_default(), sorted(rcpts))
            }
        };
        if got != sorted_expected(&case.expected) {
            wrong.push(format!(
                "{}: expected {:?}\n   got {:?}",
                case.name, case.expected, got
            ));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

fn sorted(items: impl IntoIterator<Item = String>) -> Vec<String> {
    let mut v: Vec<String> = items.into_iter().collect();
    v.sort();
    v
}

fn sorted_expected(e: &Expected) -> Expected {
    match e {
        Expected::Delivered(from, rcpts) => {
            Expected::Delivered(from.clone(), sorted(rcpts.iter().cloned()))
        }
        Expected::Quarantined => Expected::Quarantined,
    }
}

/// The group of a case that is one of several copies of one message (`copies-GROUP-*`).
fn copies_group(name: &str) -> Option<&str> {
    name.strip_prefix("copies-")?.split('-').next()
}

/// Compares what one case's transactions delivered with the table, exactly.
fn check_case(case: &Case, got: &[&Transaction], wrong: &mut Vec<String>) {
    match &case.expected {
        Expected::Quarantined => {
            if !got.is_empty() {
                wrong.push(format!("{}: a loop was delivered", case.name));
            }
        }
        Expected::Delivered(from, rcpts) => {
            let all = sorted(got.iter().flat_map(|t| t.rcpts.clone()));
            if all != sorted(rcpts.iter().cloned()) {
                let shown: Vec<_> = all.iter().take(10).collect();
                wrong.push(format!(
                    "{}: expected {} recipient(s) {:?}, got {} {:?}",
                    case.name,
                    rcpts.len(),
                    rcpts.iter().take(10).collect::<Vec<_>>(),
                    all.len(),
                    shown
                ));
            }
            check_mail_from(case, from, got, wrong);
        }
    }
}

/// Every transaction of the case has the table's MAIL FROM.
fn check_mail_from(case: &Case, from: &str, got: &[&Transaction], wrong: &mut Vec<String>) {
    if let Some(t) = got.iter().find(|t| t.mail_from != from) {
        wrong.push(format!(
            "{}: MAIL FROM {:?}, expected {from:?}",
            case.name, t.mail_from
        ));
    }
}

/// With dedup on, copies of one message: across them each recipient that any copy routes to
/// is delivered exactly once (compared as `dedup_key` does, case-insensitively), and no copy
/// delivers to anyone its own row does not name.
fn check_copies(group: &str, copies: &[(&Case, Vec<&Transaction>)], wrong: &mut Vec<String>) {
    let key = |a: &String| a.to_lowercase();
    let mut expected = Vec::new();
    let mut delivered = Vec::new();
    for (case, got) in copies {
        let Expected::Delivered(from, rcpts) = &case.expected else {
            panic!("{}: a copy in the table is a loop", case.name);
        };
        let own: Vec<String> = rcpts.iter().map(key).collect();
        for rcpt in got.iter().flat_map(|t| t.rcpts.iter()) {
            if !own.contains(&key(rcpt)) {
                wrong.push(format!(
                    "{}: delivered to {rcpt}, not in its row",
                    case.name
                ));
            }
            delivered.push(key(rcpt));
        }
        expected.extend(own);
        check_mail_from(case, from, got, wrong);
    }
    expected.sort();
    expected.dedup();
    delivered.sort();
    if delivered != expected {
        wrong.push(format!(
            "copies-{group}: expected each of {expected:?} once across the copies, got {delivered:?}"
        ));
    }
}

/// The corpus case a relayed transaction carries (`X-Corpus:`), if any.
fn case_of(t: &Transaction) -> Option<String> {
    t.header("X-Corpus")
}

fn poll_once(config: &Path) {
    let out = run_mailferry(&["poll-once", "--config", config.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(out.status.success(), "poll-once failed: {stderr}");
}

#[test]
fn the_corpus_end_to_end_through_dovecot_and_smtp_sink_and_again_after_a_restart() {
    if support::skip_e2e() {
        return;
    }
    let dovecot = Dovecot::start(&[(USER, PASS)]);
    let sink = SmtpSink::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    let cases = cases();
    for case in &cases {
        dovecot.deliver(USER, &case.raw);
    }
    let config = config(dir.path(), dovecot.pop3_port(), sink.port());
    poll_once(&config);

    let txs = sink.transactions();
    let mut by_case: BTreeMap<String, Vec<&Transaction>> = BTreeMap::new();
    let mut notices = Vec::new();
    for t in &txs {
        match case_of(t) {
            Some(name) => by_case.entry(name).or_default().push(t),
            None => notices.push(t),
        }
    }
    let mut wrong = Vec::new();
    let mut groups: BTreeMap<&str, Vec<(&Case, Vec<&Transaction>)>> = BTreeMap::new();
    for case in &cases {
        let got = by_case.remove(&case.name).unwrap_or_default();
        match copies_group(&case.name) {
            Some(group) => groups.entry(group).or_default().push((case, got)),
            None => check_case(case, &got, &mut wrong),
        }
    }
    assert_eq!(groups.len(), 2, "the table's groups of copies");
    for (group, copies) in &groups {
        check_copies(group, copies, &mut wrong);
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    assert!(by_case.is_empty(), "unknown cases: {:?}", by_case.keys());
    let loops = cases
        .iter()
        .filter(|c| c.expected == Expected::Quarantined)
        .count();
    assert_eq!(notices.len(), loops, "one quarantine notice per loop");
    assert!(notices.iter().all(|t| t.rcpts == [POSTMASTER]));
    assert_eq!(dovecot.count(USER), loops, "only the loops stay upstream");

    // The dry run now says who got a message already (from the state store).
    let eml = corpus_dir().join("addr-group.eml");
    let out = run_mailferry(&[
        "route",
        "--config",
        config.to_str().unwrap(),
        eml.to_str().unwrap(),
    ]);
    let text = String::from_utf8_lossy(&out.stdout);
    for who in ["alice@example.com", "bob@example.com", "carol@example.com"] {
        let line = format!("already  {who} got this message before (dedup_window): not sent again");
        assert!(text.contains(&line), "{text}");
    }

    // The same mail again (a provider storing a second copy), and a new process: dedup.
    for case in &cases {
        dovecot.deliver(USER, &case.raw);
    }
    poll_once(&config);
    let again = sink.transactions();
    let new: Vec<_> = again[txs.len()..].iter().collect();
    let delivered_again: Vec<_> = new.iter().filter_map(|t| case_of(t)).collect();
    assert!(
        delivered_again.is_empty(),
        "delivered twice: {delivered_again:?}"
    );
    // A loop's second copy is another message upstream, quarantined under its own id (what
    // `state retry ID` and `state forget ID` take): the postmaster is told of it once too.
    assert_eq!(new.len(), loops, "only the new loop copies' notices");
    assert_eq!(dovecot.count(USER), 2 * loops);

    // Nothing new: nothing sent.
    poll_once(&config);
    assert_eq!(sink.transactions().len(), again.len());
}

/// `dedup: off` (its own Dovecot, receiver and state): the copies of one message are each
/// delivered as their rows say, so a recipient named by two copies gets two.
#[test]
fn with_dedup_off_every_copy_of_one_message_is_delivered_as_its_row_says() {
    if support::skip_e2e() {
        return;
    }
    let dovecot = Dovecot::start(&[(USER, PASS)]);
    let sink = SmtpSink::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    let copies: Vec<Case> = (cases().into_iter())
        .filter(|c| copies_group(&c.name).is_some())
        .collect();
    for case in &copies {
        dovecot.deliver(USER, &case.raw);
    }
    let config = config_with(
        dir.path(),
        dovecot.pop3_port(),
        sink.port(),
        &["dedup: off"],
    );
    poll_once(&config);

    let txs = sink.transactions();
    let mut wrong = Vec::new();
    for case in &copies {
        let got: Vec<&Transaction> = (txs.iter())
            .filter(|t| case_of(t).as_deref() == Some(case.name.as_str()))
            .collect();
        check_case(case, &got, &mut wrong);
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    assert!(txs.iter().all(|t| case_of(t).is_some()), "no notices");
    assert_eq!(dovecot.count(USER), 0);
    // A second pass: the copies are gone upstream and nothing is sent.
    poll_once(&config);
    assert_eq!(sink.transactions().len(), txs.len());
}

#[test]
fn the_readme_shows_what_route_prints_for_three_corpus_messages() {
    let dir = tempfile::tempdir().unwrap();
    let path = config(dir.path(), 110, 25);
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    for name in [
        "env-forged-below-received",
        "rewrite-domain",
        "directory-unknown",
    ] {
        let eml = corpus_dir().join(format!("{name}.eml"));
        let out = run_mailferry(&[
            "route",
            "--config",
            path.to_str().unwrap(),
            eml.to_str().unwrap(),
        ]);
        assert!(out.status.success());
        let shown: String = String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| format!("    {l}\n"))
            .collect();
        assert!(
            readme.contains(&shown),
            "README lacks the output for {name}:\n{shown}"
        );
    }
}
