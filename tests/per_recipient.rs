//! End to end, per recipient: a real Dovecot (POP3) upstream, the real `mailferry` binary
//! (`poll-once`), and a scripted fake SMTP server as the internal mail server, because
//! smtp-sink cannot refuse one recipient among several, nor change its mind between passes.
//! One test has a real receiver refuse: a private Postfix with a `check_recipient_access` map.
//!
//! The promises under test (design.md, Relay and Invariants): 2xx delivered, 4xx retried next
//! pass for that recipient only, 5xx re-routed to the postmaster with `X-Mailferry-Rerouted:`;
//! the upstream copy is deleted only once every recipient is settled; one bad message never
//! stops the others.

mod support;

use std::path::Path;
use std::time::Duration;

use mailferry::testkit::smtp::{FakeSmtp, Script};
use support::{AccountYaml, Dovecot, GatewayConfig, Postfix, Secret, message};

const USER: &str = "catchall@example.com";
const PASS: &str = "pop-secret";
const POSTMASTER: &str = "postmaster@corp.local";

// ---------------------------------------------------------------------------------------
// Configuration, running mailferry, message bytes
// ---------------------------------------------------------------------------------------

/// Writes a configuration for one catch-all account (plain POP3, relay without TLS) into
/// `dir` and returns its path.
fn write_config(dir: &Path, dovecot: &Dovecot, smtp: &FakeSmtp) -> String {
    // Retried on the very next pass: these tests look at what each pass sends.
    write_config_retry(dir, dovecot, smtp, "retry: {initial: 0s}")
}

/// [`write_config`] with this `relay.retry` line.
fn write_config_retry(dir: &Path, dovecot: &Dovecot, smtp: &FakeSmtp, retry: &str) -> String {
    let path = GatewayConfig::new(dir.join("state"), smtp.port())
        .helo("gateway.corp.local")
        .relay_timeout("20s")
        .relay_line(retry)
        .postmaster(POSTMASTER)
        .account(account(dovecot))
        .write(dir);
    path.display().to_string()
}

/// The catch-all account on `dovecot` (plain POP3).
fn account(dovecot: &Dovecot) -> AccountYaml {
    AccountYaml {
        name: "test-account".into(),
        port: dovecot.pop3_port(),
        username: USER.into(),
        password: Secret::Inline(PASS.into()),
        extra_lines: vec!["poll_interval: 5s".into()],
        ..AccountYaml::default()
    }
}

/// One `poll-once` pass; returns its exit code.
fn poll_once(config: &str) -> Option<i32> {
    support::poll_once(config).status.code()
}

/// The message as it goes over SMTP: every LF line end as CRLF.
fn crlf(raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(raw.len() + raw.len() / 20);
    for &b in raw {
        if b == b'\n' {
            out.push(b'\r');
        }
        out.push(b);
    }
    out
}

/// The first header field of `message` (with its continuation lines) and the rest.
fn split_first_field(message: &[u8]) -> (&[u8], &[u8]) {
    let mut pos = 0;
    loop {
        let end = pos
            + message[pos..]
                .iter()
                .position(|&b| b == b'\n')
                .expect("a header line without a line end")
            + 1;
        pos = end;
        if !matches!(message.get(pos), Some(b' ') | Some(b'\t')) {
            return message.split_at(pos);
        }
    }
}

/// Removes mailferry's own trace header (the first header of every relayed copy).
fn strip_trace(message: &[u8]) -> &[u8] {
    assert!(
        message.starts_with(b"Received: from "),
        "no trace header on top: {}",
        String::from_utf8_lossy(message)
    );
    split_first_field(message).1
}

fn mail_to(to: &str, subject: &str) -> Vec<u8> {
    message(
        &[
            ("Return-Path", "<sender@remote.test>"),
            ("From", "Sender <sender@remote.test>"),
            ("To", to),
            ("Subject", subject),
            (
                "Message-ID",
                &format!("<{}@remote.test>", subject.replace(' ', "-")),
            ),
        ],
        "Hello.\n..a line that starts with a dot\nBye.\n",
    )
}

fn assert_upstream(dovecot: &Dovecot, expected: &[&[u8]], why: &str) {
    let held = dovecot.messages(USER);
    let held: Vec<&[u8]> = held.iter().map(Vec::as_slice).collect();
    assert_eq!(held, expected, "{why}");
}

// ---------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------

#[test]
fn each_recipient_gets_its_own_outcome_and_only_the_pending_one_is_retried() {
    if support::skip_e2e() {
        return;
    }
    let dovecot = Dovecot::start(&[(USER, PASS)]);
    let smtp = FakeSmtp::start(Script::default());
    let dir = tempfile::tempdir().unwrap();
    let m = mail_to(
        "A <a@example.com>, b@example.com, \"C\" <c@example.com>",
        "three recipients",
    );
    dovecot.deliver(USER, &m);
    smtp.change(|s| s.rcpt("b@example.com", "450 4.2.1 mailbox busy, try later"));
    smtp.change(|s| {
        s.rcpt(
            "c@example.com",
            "550 5.1.1 <c@example.com>: Recipient address rejected: user unknown",
        )
    });
    let config = write_config(dir.path(), &dovecot, &smtp);

    // Pass 1: a delivered, c re-routed to the postmaster, b pending.
    assert_eq!(
        poll_once(&config),
        Some(1),
        "b is unsettled: the pass failed"
    );
    let pass1 = smtp.take();
    let got = pass1.received_by();
    assert_eq!(
        got.keys().collect::<Vec<_>>(),
        ["a@example.com", POSTMASTER],
        "pass 1: who got a copy"
    );
    assert_eq!(got["a@example.com"].len(), 1, "a got it more than once");
    assert_eq!(strip_trace(&got["a@example.com"][0]), &crlf(&m)[..]);
    assert_eq!(
        got[POSTMASTER].len(),
        1,
        "the postmaster got more than one copy"
    );
    let (notice, rest) = split_first_field(&got[POSTMASTER][0]);
    let notice = String::from_utf8_lossy(notice);
    assert!(
        notice.starts_with("X-Mailferry-Rerouted:"),
        "the postmaster's copy starts with {notice:?}"
    );
    assert!(notice.contains("<c@example.com>"), "{notice}");
    assert!(
        notice.contains("550") && notice.contains("Recipient address rejected: user unknown"),
        "the notice does not give the refusal: {notice}"
    );
    assert!(
        !notice.contains("b@example.com") && !notice.contains("a@example.com"),
        "{notice}"
    );
    assert_eq!(strip_trace(rest), &crlf(&m)[..]);
    for tx in pass1.accepted() {
        assert_eq!(tx.mail_from, "sender@remote.test");
    }
    assert_upstream(
        &dovecot,
        &[&m],
        "deleted upstream while b was still pending",
    );

    // Pass 2: b is accepted now; only b is tried.
    smtp.change(|s| s.rcpt("b@example.com", "250 2.1.5 Ok"));
    assert_eq!(poll_once(&config), Some(0));
    let pass2 = smtp.take();
    assert_eq!(
        pass2.rcpts_tried(),
        ["b@example.com"],
        "the retry must go to the pending recipient only"
    );
    let got = pass2.received_by();
    assert_eq!(got.keys().collect::<Vec<_>>(), ["b@example.com"]);
    assert_eq!(got["b@example.com"].len(), 1);
    assert_eq!(strip_trace(&got["b@example.com"][0]), &crlf(&m)[..]);
    assert_upstream(&dovecot, &[], "settled but not deleted upstream");

    // Pass 3: nothing left to do.
    assert_eq!(poll_once(&config), Some(0));
    let pass3 = smtp.take();
    assert_eq!(
        pass3.mail_commands(),
        0,
        "pass 3 sent mail: {:?}",
        pass3.commands
    );
    assert!(pass3.accepted().is_empty());
}

#[test]
fn refused_mail_from_delivers_and_deletes_nothing_until_accepted() {
    if support::skip_e2e() {
        return;
    }
    let dovecot = Dovecot::start(&[(USER, PASS)]);
    let smtp = FakeSmtp::start(Script::default());
    let dir = tempfile::tempdir().unwrap();
    let m = mail_to("a@example.com, b@example.com", "mail from refused");
    dovecot.deliver(USER, &m);
    smtp.change(|s| s.mail("451 4.3.0 try again later"));
    let config = write_config(dir.path(), &dovecot, &smtp);

    assert_eq!(
        poll_once(&config),
        Some(1),
        "an undelivered message fails the pass"
    );
    let pass1 = smtp.take();
    assert!(pass1.mail_commands() >= 1, "MAIL FROM was never tried");
    assert!(pass1.accepted().is_empty(), "{:?}", pass1.accepted());
    assert_upstream(
        &dovecot,
        &[&m],
        "deleted upstream though MAIL FROM was refused",
    );

    smtp.change(|s| s.mail("250 2.1.0 Ok"));
    assert_eq!(poll_once(&config), Some(0));
    let got = smtp.take().received_by();
    assert_eq!(
        got.keys().collect::<Vec<_>>(),
        ["a@example.com", "b@example.com"]
    );
    for (rcpt, copies) in &got {
        assert_eq!(copies.len(), 1, "{rcpt} got {} copies", copies.len());
        assert_eq!(strip_trace(&copies[0]), &crlf(&m)[..]);
    }
    assert_upstream(&dovecot, &[], "delivered but not deleted upstream");
}

#[test]
fn connection_lost_before_the_data_reply_deletes_nothing() {
    if support::skip_e2e() {
        return;
    }
    let dovecot = Dovecot::start(&[(USER, PASS)]);
    let smtp = FakeSmtp::start(Script::default());
    let dir = tempfile::tempdir().unwrap();
    let first = mail_to("a@example.com, b@example.com", "reply lost");
    let second = mail_to("d@example.com", "next message");
    dovecot.deliver(USER, &first);
    dovecot.deliver(USER, &second);
    // The first message's transaction, whichever of the relay's sessions it comes on (the
    // two messages are relayed side by side).
    smtp.change(|s| s.drop_after_data_for("a@example.com"));
    let config = write_config(dir.path(), &dovecot, &smtp);

    // Pass 1: the server got the whole first message but the connection broke before its
    // reply: mailferry cannot know whether it was accepted, so it must not delete it. The
    // second message goes over a new session and is delivered.
    assert_eq!(poll_once(&config), Some(1));
    let pass1 = smtp.take();
    assert_eq!(
        pass1.unanswered().len(),
        1,
        "the fake did not drop a transaction"
    );
    assert_eq!(
        pass1.unanswered()[0].rcpts,
        ["a@example.com", "b@example.com"]
    );
    let got = pass1.received_by();
    assert_eq!(got.keys().collect::<Vec<_>>(), ["d@example.com"]);
    assert_eq!(got["d@example.com"].len(), 1);
    assert_upstream(&dovecot, &[&first], "a message without a reply was deleted");

    // Pass 2: the first message is sent again to every recipient. If the server had in fact
    // queued it in pass 1, a and b now have it twice: that is the "as far as a crash allows"
    // case of design.md (an unanswered DATA is indistinguishable from a crash before the
    // reply), and the duplicate is preferred to a loss. What the design promises, and all
    // that is asserted here: nothing was lost or deleted early, the retry reaches every
    // recipient not yet done, and the message is deleted once that is acknowledged.
    assert_eq!(poll_once(&config), Some(0));
    let pass2 = smtp.take();
    let got = pass2.received_by();
    assert_eq!(
        got.keys().collect::<Vec<_>>(),
        ["a@example.com", "b@example.com"]
    );
    for (rcpt, copies) in &got {
        assert_eq!(
            copies.len(),
            1,
            "{rcpt} got {} copies in one pass",
            copies.len()
        );
        assert_eq!(strip_trace(&copies[0]), &crlf(&first)[..]);
    }
    assert_upstream(&dovecot, &[], "delivered but not deleted upstream");

    assert_eq!(poll_once(&config), Some(0));
    assert_eq!(smtp.take().mail_commands(), 0, "pass 3 sent mail");
}

#[test]
fn a_message_nobody_takes_is_quarantined_upstream_and_does_not_stop_the_next() {
    if support::skip_e2e() {
        return;
    }
    let dovecot = Dovecot::start(&[(USER, PASS)]);
    let smtp = FakeSmtp::start(Script::default());
    let dir = tempfile::tempdir().unwrap();
    let refused = mail_to("x@example.com", "refused everywhere");
    let fine = mail_to("y@example.com", "fine");
    dovecot.deliver(USER, &refused);
    dovecot.deliver(USER, &fine);
    smtp.change(|s| s.rcpt("x@example.com", "550 5.1.1 no such user"));
    smtp.change(|s| s.rcpt(POSTMASTER, "550 5.7.1 postmaster refuses too"));
    let config = write_config(dir.path(), &dovecot, &smtp);

    assert_eq!(
        poll_once(&config),
        Some(0),
        "a message refused for good everywhere is settled in quarantine, not a failure"
    );
    let pass1 = smtp.take();
    let tried = pass1.rcpts_tried();
    assert!(
        tried.contains(&"x@example.com".to_owned()) && tried.contains(&POSTMASTER.to_owned()),
        "x, then the postmaster, must have been tried: {tried:?}"
    );
    let got = pass1.received_by();
    assert_eq!(got.keys().collect::<Vec<_>>(), ["y@example.com"]);
    assert_eq!(got["y@example.com"].len(), 1);
    assert_eq!(strip_trace(&got["y@example.com"][0]), &crlf(&fine)[..]);
    assert_upstream(
        &dovecot,
        &[&refused],
        "the refused message must stay upstream, the delivered one go",
    );
    let listed = support::run_mailferry(&["state", "list", "--config", &config]);
    let listed = String::from_utf8_lossy(&listed.stdout).into_owned();
    assert!(
        listed.contains("account test-account") && listed.contains("5.1.1 no such user"),
        "the quarantine list must show it with its reason: {listed}"
    );

    // Quarantined: not tried again, nothing delivered again, still upstream.
    assert_eq!(poll_once(&config), Some(0));
    let pass2 = smtp.take();
    assert!(
        !pass2.rcpts_tried().contains(&"x@example.com".to_owned()),
        "a quarantined message was tried again"
    );
    assert!(pass2.accepted().is_empty());
    assert_upstream(&dovecot, &[&refused], "a quarantined message was deleted");
}

#[test]
fn several_refused_recipients_give_the_postmaster_one_copy_naming_each() {
    if support::skip_e2e() {
        return;
    }
    let dovecot = Dovecot::start(&[(USER, PASS)]);
    let smtp = FakeSmtp::start(Script::default());
    let dir = tempfile::tempdir().unwrap();
    let m = mail_to("c@example.com, d@example.com, e@example.com", "two refused");
    dovecot.deliver(USER, &m);
    smtp.change(|s| s.rcpt("c@example.com", "550 5.1.1 no such user c"));
    smtp.change(|s| s.rcpt("d@example.com", "550 5.1.1 no such user d"));
    let config = write_config(dir.path(), &dovecot, &smtp);

    assert_eq!(
        poll_once(&config),
        Some(0),
        "re-routed recipients are settled"
    );
    let got = smtp.take().received_by();
    assert_eq!(
        got.keys().collect::<Vec<_>>(),
        ["e@example.com", POSTMASTER],
        "who got a copy"
    );
    assert_eq!(
        got[POSTMASTER].len(),
        1,
        "one copy for the postmaster, not one per refusal"
    );
    let (first, rest) = split_first_field(&got[POSTMASTER][0]);
    let (second, rest) = split_first_field(rest);
    let (first, second) = (
        String::from_utf8_lossy(first),
        String::from_utf8_lossy(second),
    );
    assert!(
        first.starts_with("X-Mailferry-Rerouted: for <c@example.com>")
            && first.contains("no such user c"),
        "{first}"
    );
    assert!(
        second.starts_with("X-Mailferry-Rerouted: for <d@example.com>")
            && second.contains("no such user d"),
        "{second}"
    );
    assert_eq!(strip_trace(rest), &crlf(&m)[..]);
    assert_upstream(&dovecot, &[], "settled but not deleted upstream");
}

#[test]
fn a_message_refused_as_a_whole_for_good_goes_to_the_postmaster_with_the_reason() {
    if support::skip_e2e() {
        return;
    }
    let dovecot = Dovecot::start(&[(USER, PASS)]);
    let smtp = FakeSmtp::start(Script::default());
    let dir = tempfile::tempdir().unwrap();
    let spam = mail_to("a@example.com, b@example.com", "looks like spam");
    dovecot.deliver(USER, &spam);
    smtp.change(|s| s.data_end_for("a@example.com", "554 5.7.1 rejected as spam"));
    let config = write_config(dir.path(), &dovecot, &smtp);

    assert_eq!(poll_once(&config), Some(0));
    let pass1 = smtp.take();
    assert_eq!(pass1.refused().len(), 1, "tried once for its recipients");
    let got = pass1.received_by();
    assert_eq!(got.keys().collect::<Vec<_>>(), [POSTMASTER]);
    let copy = &got[POSTMASTER][0];
    let (first, rest) = split_first_field(copy);
    let first = String::from_utf8_lossy(first);
    assert!(
        first.starts_with("X-Mailferry-Rerouted:") && first.contains("554 5.7.1 rejected as spam"),
        "{first}"
    );
    assert_eq!(strip_trace(rest), &crlf(&spam)[..]);
    assert_upstream(&dovecot, &[], "settled by the postmaster's copy: deleted");

    assert_eq!(poll_once(&config), Some(0));
    assert_eq!(smtp.take().mail_commands(), 0, "sent again");
}

#[test]
fn a_sender_refused_for_good_reaches_the_postmaster_with_the_null_sender() {
    if support::skip_e2e() {
        return;
    }
    let dovecot = Dovecot::start(&[(USER, PASS)]);
    let smtp = FakeSmtp::start(Script::default());
    let dir = tempfile::tempdir().unwrap();
    let m = mail_to("a@example.com", "bad sender");
    dovecot.deliver(USER, &m);
    smtp.change(|s| s.mail_for("sender@remote.test", "550 5.7.1 sender blocked"));
    let config = write_config(dir.path(), &dovecot, &smtp);

    assert_eq!(poll_once(&config), Some(0));
    let pass1 = smtp.take();
    assert_eq!(pass1.accepted().len(), 1);
    assert_eq!(pass1.accepted()[0].mail_from, "");
    assert_eq!(pass1.accepted()[0].rcpts, [POSTMASTER]);
    assert_upstream(&dovecot, &[], "settled by the postmaster's copy: deleted");
}

#[test]
fn a_temporary_refusal_backs_off_instead_of_retrying_every_pass() {
    if support::skip_e2e() {
        return;
    }
    let dovecot = Dovecot::start(&[(USER, PASS)]);
    let smtp = FakeSmtp::start(Script::default());
    let dir = tempfile::tempdir().unwrap();
    let m = mail_to("a@example.com", "greylisted");
    dovecot.deliver(USER, &m);
    smtp.change(|s| s.rcpt("a@example.com", "451 4.7.1 greylisted"));
    let config = write_config_retry(
        dir.path(),
        &dovecot,
        &smtp,
        "retry: {max_attempts: 3, initial: 1h}",
    );
    assert_eq!(poll_once(&config), Some(1));
    assert_eq!(smtp.take().rcpts_tried(), ["a@example.com"]);
    // Within the back-off: not tried, and not a failure of this pass.
    assert_eq!(poll_once(&config), Some(0));
    assert!(
        smtp.take().rcpts_tried().is_empty(),
        "retried within its back-off"
    );
    assert_upstream(&dovecot, &[&m], "deleted while pending");
}

/// The promise of the first test with a real internal server: a private Postfix refusing one
/// address for good and another for now (`check_recipient_access`), over two passes, then
/// taking the second one.
#[test]
fn a_real_postfix_refusing_one_recipient_gives_the_postmaster_one_copy_across_retries() {
    if support::skip_e2e() {
        return;
    }
    let postfix = Postfix::start_refusing(
        &["example.com", "corp.local"],
        &[
            (
                "b@example.com",
                "550 5.1.1 User unknown in local recipient table",
            ),
            ("c@example.com", "450 4.2.1 Mailbox busy, try again later"),
        ],
    );
    let dovecot = Dovecot::start(&[(USER, PASS)]);
    let dir = tempfile::tempdir().unwrap();
    let m = mail_to(
        "a@example.com, b@example.com, c@example.com",
        "one refused for good",
    );
    dovecot.deliver(USER, &m);
    let config = GatewayConfig::new(dir.path().join("state"), postfix.port())
        .relay_line("retry: {initial: 0s}")
        .postmaster(POSTMASTER)
        .account(account(&dovecot))
        .write(dir.path());
    let config = config.display().to_string();

    // Pass 1: a delivered, b re-routed, c pending. Pass 2: only c is asked again.
    for pass in 1..=2 {
        assert_eq!(poll_once(&config), Some(1), "pass {pass}: c is pending");
    }
    let rejected = |who: &str| {
        let log = postfix.log();
        (log.lines())
            .filter(|l| l.contains(": reject: RCPT from") && l.contains(&format!("to=<{who}>")))
            .count()
    };
    assert!(
        support::wait_until(Duration::from_secs(10), || rejected("c@example.com") == 2),
        "c was not asked in both passes:\n{}",
        postfix.log()
    );
    assert_eq!(rejected("b@example.com"), 1, "b asked again after a 5xx");
    assert!(
        postfix.wait_queue_empty(Duration::from_secs(30)),
        "{}",
        postfix.log()
    );
    assert!(postfix.outside.transactions().is_empty());
    let inside = postfix.inside.transactions();
    let mut rcpts: Vec<&str> = (inside.iter())
        .flat_map(|t| t.rcpts.iter().map(String::as_str))
        .collect();
    rcpts.sort();
    assert_eq!(
        rcpts,
        ["a@example.com", POSTMASTER],
        "one copy each, the postmaster's not repeated by the retry"
    );
    let copy = (inside.iter())
        .find(|t| t.rcpts == [POSTMASTER])
        .expect("the postmaster's copy");
    let notices = copy.headers("X-Mailferry-Rerouted");
    assert_eq!(notices.len(), 1, "{notices:?}");
    assert!(
        notices[0].contains("<b@example.com>")
            && notices[0].contains("550 5.1.1")
            && notices[0].contains("User unknown in local recipient table")
            && !notices[0].contains("c@example.com"),
        "{}",
        notices[0]
    );
    assert_eq!(
        copy.header("Subject").as_deref(),
        Some("one refused for good")
    );
    assert_upstream(&dovecot, &[&m], "deleted while c is pending");

    // Postfix takes c now (b is still unknown): c delivered, the message settled and deleted,
    // the postmaster not told again. An smtpd of before the reload may still refuse c once.
    postfix.set_refused(&[(
        "b@example.com",
        "550 5.1.1 User unknown in local recipient table",
    )]);
    let settled = support::wait_until(Duration::from_secs(20), || {
        poll_once(&config) == Some(0) || {
            std::thread::sleep(Duration::from_millis(500));
            false
        }
    });
    assert!(settled, "c never accepted:\n{}", postfix.log());
    assert_eq!(rejected("b@example.com"), 1, "b asked again after a 5xx");
    assert!(postfix.wait_queue_empty(Duration::from_secs(30)));
    let mut rcpts: Vec<String> = (postfix.inside.transactions().into_iter())
        .flat_map(|t| t.rcpts)
        .collect();
    rcpts.sort();
    assert_eq!(rcpts, ["a@example.com", "c@example.com", POSTMASTER]);
    assert_upstream(&dovecot, &[], "settled but not deleted upstream");
}
