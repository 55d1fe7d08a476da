//! IDLE (RFC 2177): waiting in the selected folder for the server to announce new mail.

use std::time::Duration;

use super::super::ImapError;
use super::super::command::Command;
use super::super::protocol::{LITERAL_MAX, Response};
use super::ImapClient;

/// What ended an [`ImapClient::idle`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Woken {
    /// The server announced a new message count (EXISTS).
    NewMail,
    /// The window passed without one.
    Quiet,
}

impl ImapClient {
    /// Whether the server offers IDLE.
    pub fn can_idle(&self) -> bool {
        self.capabilities.has("IDLE")
    }

    /// IDLE for at most `window`: ends (DONE, and the server's OK) as soon as the server
    /// announces EXISTS, or when the window has passed. The caller keeps the window below
    /// the server's 30-minute inactivity limit (RFC 2177 says to re-issue within 29).
    pub async fn idle(&mut self, window: Duration) -> Result<Woken, ImapError> {
        let deadline = tokio::time::Instant::now() + window;
        let tag = self.conn.tag();
        let mut early = Vec::new();
        let mut woken = Woken::Quiet;
        self.conn
            .send(&tag, &Command::new("IDLE"), false, &mut early)
            .await?;
        // Until the server's "+ idling": a tagged reply here is a refusal.
        loop {
            match self.conn.read_response(LITERAL_MAX).await? {
                Response::Continue(_) => break,
                tagged @ Response::Tagged { .. } => {
                    self.finish(&tag, "IDLE", tagged, Vec::new())?;
                    return Err(self.lost("IDLE ended before it began".to_owned()));
                }
                other => {
                    if matches!(other, Response::Exists(_)) {
                        woken = Woken::NewMail;
                    }
                    self.note(other)?;
                }
            }
        }
        while woken == Woken::Quiet {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if left.is_zero() || !self.conn.readable_within(left).await? {
                break;
            }
            match self.conn.read_response(LITERAL_MAX).await? {
                Response::Tagged { .. } => {
                    return Err(self.lost("the server ended IDLE on its own".to_owned()));
                }
                other => {
                    if matches!(other, Response::Exists(_)) {
                        woken = Woken::NewMail;
                    }
                    self.note(other)?;
                }
            }
        }
        tracing::debug!(account = %self.conn.account, "C: DONE");
        self.conn.write(b"DONE\r\n").await?;
        let mut untagged = Vec::new();
        let tagged = loop {
            match self.conn.read_response(LITERAL_MAX).await? {
                tagged @ Response::Tagged { .. } => break tagged,
                other => untagged.push(self.note(other)?),
            }
        };
        self.finish(&tag, "IDLE", tagged, untagged)?;
        Ok(woken)
    }
}
