//! One mail transaction on an open session: MAIL FROM, one RCPT per recipient (each reply
//! kept, matched to its recipient by position), then the message by BDAT (CHUNKING) or DATA
//! (dot-stuffed as it is written). With PIPELINING (RFC 2920), MAIL, every RCPT and DATA go
//! in one flight; without it, one command at a time. A reply that does not fit where it
//! came (a 354 to a RCPT, a 250 to DATA, a reply nobody asked for) means the server and
//! mailferry are out of step: nothing is taken as delivered, and the session is dropped.

use std::borrow::Cow;
use std::time::Duration;

use super::conn::Conn;
use super::prepare::{is_prepared, prepare};
use super::wire::{DotStuffer, Parsed};
use super::{RelayError, Reply, timeout_error};
use crate::address::Address;
use crate::recipient::{Recipient, Status};

/// RFC 5321's limit on a local part, in octets.
const MAX_LOCAL_PART: usize = 64;
/// Extra time allowed for the end of the data per this many bytes of message (the transfer
/// itself, on a slow link), on top of `relay.data_timeout`.
const BYTES_PER_EXTRA_SECOND: usize = 64 * 1024;
/// The message is written in pieces of about this size: the dot-stuffed copy stays this
/// small whatever the message's size.
const DATA_CHUNK: usize = 64 * 1024;

/// The phases' time limits.
#[derive(Debug, Clone, Copy)]
pub(super) struct Limits {
    /// `relay.timeout`: every reply but the one to the data.
    pub reply: Duration,
    /// `relay.data_timeout`: the reply after the data (plus time for the transfer).
    pub data: Duration,
}

/// What to do with the session after a transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum After {
    /// In step and outside a transaction: back to the pool, no RSET needed.
    Reuse,
    /// Refused mid-transaction: say QUIT and close it.
    Quit,
    /// Broken or out of step: close it without a word.
    Drop,
}

/// How a transaction ended.
pub(super) struct Ended {
    /// One result per recipient, or why no recipient got the message.
    pub result: Result<Vec<Recipient>, RelayError>,
    /// What becomes of the session.
    pub after: After,
    /// Whether the server answered MAIL FROM: before that, nothing of this transaction was
    /// taken, and a fresh session may try it again.
    pub mail_answered: bool,
}

/// Runs one transaction on `conn`.
pub(super) async fn run(
    conn: &mut Conn,
    limits: Limits,
    reverse_path: Option<&Address>,
    recipients: &[Address],
    message: &[u8],
) -> Ended {
    let mut mail_answered = false;
    let result = transaction(
        conn,
        limits,
        reverse_path,
        recipients,
        message,
        &mut mail_answered,
    )
    .await;
    let (result, after) = match result {
        Ok((results, after)) => (Ok(results), after),
        Err(e) => {
            let after = match e {
                RelayError::MailFrom { .. } | RelayError::Data { .. } => After::Quit,
                // Refused before anything was sent.
                RelayError::TooBig { .. } | RelayError::ReversePath { .. } => After::Reuse,
                _ => After::Drop,
            };
            (Err(e), after)
        }
    };
    Ended {
        result,
        after,
        mail_answered,
    }
}

async fn transaction(
    conn: &mut Conn,
    limits: Limits,
    reverse_path: Option<&Address>,
    recipients: &[Address],
    message: &[u8],
    mail_answered: &mut bool,
) -> Result<(Vec<Recipient>, After), RelayError> {
    let limit = limits.reply;
    let caps = conn.caps.clone();
    let body = data_body(message);
    if let Some(max) = caps.size
        && body.len() as u64 > max
    {
        return Err(RelayError::TooBig {
            size: body.len() as u64,
            limit: max,
        });
    }

    let mut mail = String::from("MAIL FROM:<");
    if let Some(address) = reverse_path {
        sendable(address, caps.smtputf8).map_err(|reason| RelayError::ReversePath {
            address: address.clone(),
            reason,
        })?;
        mail.push_str(address.as_str());
    }
    mail.push('>');
    // Without 8BITMIME the message still goes as it is: rewriting it (or refusing it) would
    // be worse than an internal server that copes, as practically all do.
    if caps.eightbitmime && !body.is_ascii() {
        mail.push_str(" BODY=8BITMIME");
    }
    let non_ascii = reverse_path.is_some_and(|a| !a.as_str().is_ascii())
        || recipients.iter().any(|a| !a.as_str().is_ascii());
    if non_ascii && caps.smtputf8 {
        mail.push_str(" SMTPUTF8");
    }
    if caps.size.is_some() {
        mail.push_str(&format!(" SIZE={}", body.len()));
    }

    // None: accepted (or not answered yet); Some: this recipient's outcome.
    let mut outcomes: Vec<Option<Status>> = vec![None; recipients.len()];
    let mut rcpts: Vec<(usize, String)> = Vec::with_capacity(recipients.len());
    for (i, recipient) in recipients.iter().enumerate() {
        match sendable(recipient, caps.smtputf8) {
            Ok(()) => rcpts.push((i, format!("RCPT TO:<{}>", recipient.as_str()))),
            Err(reason) => {
                outcomes[i] = Some(Status::Permanent(Reply {
                    code: 553,
                    text: format!("5.1.3 not sent by mailferry: {reason}"),
                }));
            }
        }
    }

    let pipelined = caps.pipelining;
    let data_in_flight = pipelined && !caps.chunking && !rcpts.is_empty();
    conn.queue(&mail);
    if pipelined {
        for (_, line) in &rcpts {
            conn.queue(line);
        }
        if data_in_flight {
            conn.queue("DATA");
        }
    }
    conn.flush(limit, "MAIL FROM").await?;
    let reply = conn.read(limit, "MAIL FROM").await?;
    *mail_answered = true;
    match reply.code {
        200..300 => {}
        300..400 => return Err(out_of_step(conn, "MAIL FROM", &reply)),
        _ => {
            return Err(RelayError::MailFrom {
                reply: reply.reply(),
            });
        }
    }

    let mut accepted = 0;
    for (i, line) in &rcpts {
        if !pipelined {
            conn.queue(line);
            conn.flush(limit, "RCPT TO").await?;
        }
        let reply = conn.read(limit, "RCPT TO").await?;
        outcomes[*i] = match reply.code {
            200..300 => {
                accepted += 1;
                None
            }
            300..400 => return Err(out_of_step(conn, "RCPT TO", &reply)),
            500.. => Some(Status::Permanent(reply.reply())),
            _ => Some(Status::Temporary(reply.reply())),
        };
    }

    if data_in_flight {
        let go = conn.read(limit, "DATA").await?;
        if accepted == 0 {
            return match go.code {
                // A go-ahead for a transaction without recipients: end the empty data and
                // leave this confused session.
                354 => {
                    conn.queue(".");
                    conn.flush(limit, "DATA").await?;
                    let _ = conn.read(limit, "the end of DATA").await;
                    Ok((results(recipients, outcomes, None), After::Drop))
                }
                200..400 => Err(out_of_step(conn, "DATA", &go)),
                _ => Ok((
                    results(recipients, outcomes, None),
                    reset(conn, limit).await,
                )),
            };
        }
        go_ahead(conn, &go)?;
    } else if accepted == 0 {
        // Nobody to send to: end the transaction.
        return Ok((
            results(recipients, outcomes, None),
            reset(conn, limit).await,
        ));
    } else if !caps.chunking {
        let go = conn.command("DATA", limit, "DATA").await?;
        go_ahead(conn, &go)?;
    }

    let extra = Duration::from_secs((body.len() / BYTES_PER_EXTRA_SECOND) as u64);
    let data_limit = limits.data + extra;
    let during = if caps.chunking {
        "BDAT"
    } else {
        "the end of DATA"
    };
    let send = async {
        if caps.chunking {
            write_bdat(conn, &body).await.map_err(RelayError::Io)?;
        } else {
            write_data(conn, &body).await.map_err(RelayError::Io)?;
        }
        conn.read_reply(during).await
    };
    let reply = tokio::time::timeout(data_limit, send)
        .await
        .map_err(|_| timeout_error(during, data_limit))??;
    match reply.code {
        200..300 if !conn.has_unread() => Ok((
            results(recipients, outcomes, Some(reply.reply())),
            After::Reuse,
        )),
        200..400 => Err(out_of_step(conn, during, &reply)),
        _ => Err(RelayError::Data {
            reply: reply.reply(),
        }),
    }
}

/// The reply to DATA: 354 and nothing after it, or the transaction ends here.
fn go_ahead(conn: &Conn, go: &Parsed) -> Result<(), RelayError> {
    match go.code {
        354 if !conn.has_unread() => Ok(()),
        200..400 => Err(out_of_step(conn, "DATA", go)),
        _ => Err(RelayError::Data { reply: go.reply() }),
    }
}

fn out_of_step(conn: &Conn, during: &'static str, reply: &Parsed) -> RelayError {
    RelayError::OutOfStep {
        host: conn.host.clone(),
        during,
        reply: reply.reply(),
    }
}

/// RSET after a transaction that sent no data; whether the session can be used again.
async fn reset(conn: &mut Conn, limit: Duration) -> After {
    match conn.command("RSET", limit, "RSET").await {
        Ok(reply) if reply.code == 250 && !conn.has_unread() => After::Reuse,
        _ => After::Drop,
    }
}

/// The data after a 354: dot-stuffed piece by piece, then CRLF "." CRLF.
async fn write_data(conn: &mut Conn, body: &[u8]) -> std::io::Result<()> {
    let mut stuffer = DotStuffer::default();
    let mut out = Vec::with_capacity(body.len().min(DATA_CHUNK) + 64);
    for piece in body.chunks(DATA_CHUNK) {
        stuffer.push(piece, &mut out);
        if out.len() >= DATA_CHUNK {
            conn.write_raw(&out).await?;
            out.clear();
        }
    }
    stuffer.finish(&mut out);
    conn.write_raw(&out).await?;
    conn.flush_stream().await
}

/// `BDAT n LAST` and the message as it is (a CRLF added when it does not end in one, as
/// DATA adds it).
async fn write_bdat(conn: &mut Conn, body: &[u8]) -> std::io::Result<()> {
    let tail: &[u8] = if body.ends_with(b"\r\n") {
        b""
    } else {
        b"\r\n"
    };
    conn.queue(&format!("BDAT {} LAST", body.len() + tail.len()));
    conn.write_raw(body).await?;
    conn.write_raw(tail).await?;
    conn.flush_stream().await
}

/// One result per recipient, in order, by position in `outcomes` (`None`: RCPT accepted).
/// A recipient accepted without data sent is `Temporary`, never `Delivered`: no recipient
/// may be settled without a reply that says so.
fn results(
    recipients: &[Address],
    outcomes: Vec<Option<Status>>,
    data_reply: Option<Reply>,
) -> Vec<Recipient> {
    let temporary = |text: &str| {
        Status::Temporary(Reply {
            code: 451,
            text: text.to_owned(),
        })
    };
    recipients
        .iter()
        .enumerate()
        .map(|(i, recipient)| Recipient {
            address: recipient.clone(),
            status: match (outcomes.get(i), &data_reply) {
                (Some(Some(outcome)), _) => outcome.clone(),
                (Some(None), Some(reply)) => Status::Delivered(reply.clone()),
                (Some(None), None) => temporary("4.3.0 mailferry sent no data"),
                (None, _) => temporary("4.3.0 mailferry has no reply for this recipient"),
            },
        })
        .collect()
}

/// Whether `address` can go on a command line of this session; `Err` says why not.
///
/// [`Address`] already guarantees what makes an address safe on a command line (no CR, LF,
/// NUL, `<`, `>`, controls, and no source route) and quotes a local part that is not a
/// Dot-string, so it goes as it is; what this server cannot take is refused here, for that
/// recipient alone, never rewritten.
fn sendable(address: &Address, smtputf8: bool) -> Result<(), String> {
    if !smtputf8 && !address.as_str().is_ascii() {
        return Err("the address is not ASCII and the server does not offer SMTPUTF8".to_owned());
    }
    if address.smtp_local_part().len() > MAX_LOCAL_PART {
        return Err(format!(
            "the local part is longer than {MAX_LOCAL_PART} octets (RFC 5321 4.5.3.1.1)"
        ));
    }
    Ok(())
}

/// The message with every line end CRLF, as [`prepare`] makes it: as given when it is so
/// already (the pipeline prepares every message), else a prepared copy (a "." after a bare
/// LF would not be stuffed, and some servers end the data there).
fn data_body(message: &[u8]) -> Cow<'_, [u8]> {
    if is_prepared(message) {
        Cow::Borrowed(message)
    } else {
        Cow::Owned(prepare(b"", message))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_body_keeps_crlf_text_and_turns_bare_line_ends_into_crlf() {
        assert!(matches!(data_body(b"a\r\nb\r\n"), Cow::Borrowed(_)));
        assert_eq!(&*data_body(b"a\r\nb"), b"a\r\nb");
        assert_eq!(&*data_body(b"a\n.\nb\r\n"), b"a\r\n.\r\nb\r\n");
        assert_eq!(&*data_body(b"\na\rb"), b"\r\na\r\nb\r\n");
    }

    #[test]
    fn results_are_one_per_recipient_and_a_missing_reply_is_never_delivered() {
        let rcpts: Vec<Address> = ["a@x.com", "b@x.com", "c@x.com"]
            .iter()
            .map(|s| Address::parse(s).unwrap())
            .collect();
        let refused = Status::Permanent(Reply {
            code: 550,
            text: "no".into(),
        });
        let ok = Reply {
            code: 250,
            text: "ok".into(),
        };
        let got = results(&rcpts, vec![None, Some(refused.clone())], Some(ok.clone()));
        assert_eq!(got.len(), 3);
        assert_eq!(got[0].address, rcpts[0]);
        assert_eq!(got[0].status, Status::Delivered(ok));
        assert_eq!(got[1].status, refused);
        assert_eq!(got[2].address, rcpts[2]);
        assert!(matches!(&got[2].status, Status::Temporary(r) if r.code == 451));
        let none = results(&rcpts[..1], vec![None], None);
        assert!(matches!(&none[0].status, Status::Temporary(r) if r.code == 451));
    }

    #[test]
    fn quoted_local_parts_are_sendable_as_they_are() {
        let a = Address::parse("\"john doe\"@example.com").unwrap();
        assert_eq!(sendable(&a, false), Ok(()));
        assert_eq!(a.as_str(), "\"john doe\"@example.com");
        let long = Address::parse(&format!("{}@example.com", "a".repeat(65))).unwrap();
        assert!(sendable(&long, true).is_err());
        let utf8 = Address::parse("jörg@example.com").unwrap();
        assert!(sendable(&utf8, false).is_err());
        assert_eq!(sendable(&utf8, true), Ok(()));
    }
}
