//! The fake's side of a message's data: DATA's lines up to the final dot, and the end of the
//! data (after the dot or BDAT LAST) answered as the script says.

use tokio::io::{AsyncBufReadExt, BufReader};

use super::{Open, Shared, Stream, Tx, lock, send};

/// Reads the data after a 354 and answers the final dot as the script says. `None`: the
/// connection is over (the client left, or the script dropped or closed it).
pub(super) async fn data(
    io: &mut BufReader<Box<dyn Stream>>,
    tx: Open,
    tls: bool,
    shared: &Shared,
) -> std::io::Result<Option<()>> {
    let mut received = Vec::new();
    let mut line = Vec::new();
    loop {
        line.clear();
        if io.read_until(b'\n', &mut line).await? == 0 {
            return Ok(None);
        }
        if line == b".\r\n" {
            break;
        }
        received.extend_from_slice(&line);
    }
    end_of_data(io, tx, received, false, tls, shared).await
}

/// Answers the end of a message's data (after the final dot, or BDAT LAST) as the script
/// says, and records the transaction. `None`: the connection is over.
pub(super) async fn end_of_data(
    io: &mut BufReader<Box<dyn Stream>>,
    tx: Open,
    received: Vec<u8>,
    chunked: bool,
    tls: bool,
    shared: &Shared,
) -> std::io::Result<Option<()>> {
    let mut line = Vec::new();
    let (end, delay, close, split) = {
        let mut script = lock(&shared.script);
        let own = tx.rcpts.iter().find_map(|r| script.data_end_for.get(r));
        let dropped = (script.drop_after_data_for.iter())
            .position(|d| tx.rcpts.iter().any(|r| r.eq_ignore_ascii_case(d)));
        let end = if script.drop_after_data > 0 {
            script.drop_after_data -= 1;
            End::Drop
        } else if let Some(at) = dropped {
            script.drop_after_data_for.remove(at);
            End::Drop
        } else if let Some(reply) = own.or(script.data_end.as_ref()) {
            End::Reply(reply.clone())
        } else {
            End::Hold
        };
        let s = &*script;
        (end, s.data_end_delay, s.close_after_data, s.split)
    };
    let reply = match &end {
        End::Reply(reply) => Some(reply.clone()),
        End::Drop | End::Hold => None,
    };
    lock(&shared.log).transactions.push(Tx {
        mail_from: tx.mail_from,
        rcpts: tx.rcpts,
        data: received,
        chunked,
        tls,
        reply,
    });
    match end {
        // The client cannot learn whether the message was queued.
        End::Drop => Ok(None),
        End::Hold => {
            while io.read_until(b'\n', &mut line).await? > 0 {}
            Ok(None)
        }
        End::Reply(reply) => {
            tokio::time::sleep(delay).await;
            send(io, &reply, split).await?;
            Ok((!close).then_some(()))
        }
    }
}

/// What the fake does at the final dot.
enum End {
    /// Answer this.
    Reply(String),
    /// Close the connection without a word.
    Drop,
    /// Never answer; hold the connection until the client goes away.
    Hold,
}
