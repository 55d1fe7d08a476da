//! What the fake SMTP server saw: every command and every transaction, with the questions
//! the tests ask of them (who received what, which RCPTs were tried).

use std::collections::BTreeMap;

use super::angle_addr;

/// One transaction the fake saw through to the end of its data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tx {
    /// MAIL FROM's address without the angle brackets, as sent; empty for `<>`.
    pub mail_from: String,
    /// The recipients whose RCPT was accepted, lower-cased, in order.
    pub rcpts: Vec<String>,
    /// The data as received (dot-stuffed, line ends as on the wire), without the final
    /// ".\r\n" line; with BDAT, the chunks' octets as they came.
    pub data: Vec<u8>,
    /// Whether the message came by BDAT (CHUNKING) rather than DATA.
    pub chunked: bool,
    /// Whether the transaction ran over TLS.
    pub tls: bool,
    /// The reply to the final dot; `None` when the fake dropped the connection or never
    /// answered.
    pub reply: Option<String>,
}

impl Tx {
    /// The message the data stands for: dots unstuffed, line ends as on the wire.
    pub fn message(&self) -> Vec<u8> {
        if self.chunked {
            return self.data.clone();
        }
        let mut out = Vec::with_capacity(self.data.len());
        for line in self.data.split_inclusive(|&b| b == b'\n') {
            out.extend_from_slice(line.strip_prefix(b".").unwrap_or(line));
        }
        out
    }

    /// True when the final dot was answered 2xx.
    pub fn accepted(&self) -> bool {
        self.reply.as_deref().is_some_and(|r| r.starts_with('2'))
    }
}

/// What the server saw (since the last [`FakeSmtp::take`]).
#[derive(Default, Debug)]
pub struct Log {
    /// Connections accepted.
    pub connections: usize,
    /// Connections that ended (client closed, QUIT, or dropped by the script).
    pub closed: usize,
    /// The most connections open at the same time.
    pub most_open: usize,
    /// Server-side TLS handshakes that failed (e.g. the client refused the certificate).
    pub failed_handshakes: usize,
    /// Every command line (not the data), without its CRLF, in order.
    pub commands: Vec<String>,
    /// For each of `commands`: whether it came over TLS.
    pub commands_tls: Vec<bool>,
    /// For each of `commands`: whether more bytes had already arrived when it was read
    /// (it came in one flight with the next command: pipelined).
    pub commands_waiting: Vec<bool>,
    /// The user names that logged in with AUTH, in order.
    pub logins: Vec<String>,
    /// Every transaction whose data was received, in order.
    pub transactions: Vec<Tx>,
}

impl Log {
    /// The data of each transaction as received (see [`Tx::data`]).
    pub fn data(&self) -> Vec<Vec<u8>> {
        self.transactions.iter().map(|t| t.data.clone()).collect()
    }

    /// For each transaction: whether it ran over TLS.
    pub fn data_tls(&self) -> Vec<bool> {
        self.transactions.iter().map(|t| t.tls).collect()
    }

    /// Transactions answered 2xx at the final dot.
    pub fn accepted(&self) -> Vec<&Tx> {
        self.transactions.iter().filter(|t| t.accepted()).collect()
    }

    /// Transactions whose final dot was answered, but not with 2xx.
    pub fn refused(&self) -> Vec<&Tx> {
        let refused = |t: &&Tx| t.reply.is_some() && !t.accepted();
        self.transactions.iter().filter(refused).collect()
    }

    /// Transactions whose final dot got no reply (dropped or held).
    pub fn unanswered(&self) -> Vec<&Tx> {
        let unanswered = |t: &&Tx| t.reply.is_none();
        self.transactions.iter().filter(unanswered).collect()
    }

    /// The addresses of every RCPT command, accepted or not, lower-cased, in order.
    pub fn rcpts_tried(&self) -> Vec<String> {
        self.commands
            .iter()
            .filter(|c| c.to_ascii_uppercase().starts_with("RCPT TO:"))
            .map(|c| angle_addr(&c["RCPT TO:".len()..]).to_lowercase())
            .collect()
    }

    /// How many MAIL commands were sent.
    pub fn mail_commands(&self) -> usize {
        let is_mail = |c: &&String| c.to_ascii_uppercase().starts_with("MAIL FROM:");
        self.commands.iter().filter(is_mail).count()
    }

    /// Recipient -> every message (see [`Tx::message`]) accepted for it.
    pub fn received_by(&self) -> BTreeMap<String, Vec<Vec<u8>>> {
        let mut map: BTreeMap<String, Vec<Vec<u8>>> = BTreeMap::new();
        for tx in self.accepted() {
            for rcpt in &tx.rcpts {
                map.entry(rcpt.clone()).or_default().push(tx.message());
            }
        }
        map
    }
}
