//! Waiting between passes: `poll_interval`, cut short by IMAP IDLE (RFC 2177) when the account
//! says `idle: true` and the server offers it, so that new mail is collected within seconds.

use std::time::Duration;

use tokio::time::Instant;

use crate::config::{AccountConfig, Protocol};
use crate::oauth::TokenSource;

use super::imap::{ImapClient, ImapError, Woken};

/// The longest one IDLE lasts. A server may drop a client idle for 30 minutes (RFC 2177 says
/// to re-issue IDLE within 29): after this the wait ends, a pass runs, and IDLE starts anew.
pub const IDLE_MAX: Duration = Duration::from_secs(28 * 60);

/// Waits until the next pass of `account` is due: `poll_interval`, or less with `idle: true`
/// — as soon as the folder receives mail, and at most [`IDLE_MAX`]. When the server offers
/// no IDLE, or the IDLE session fails, the rest of `poll_interval` is slept instead.
/// [`Woken::NewMail`] when new mail ended the wait before the pass was due.
pub async fn until_next_pass(account: &AccountConfig, token: Option<&TokenSource>) -> Woken {
    let started = Instant::now();
    if account.idle && account.protocol == Protocol::Imap {
        let window = account.poll_interval.min(IDLE_MAX);
        match idle_once(account, window, token).await {
            Ok(Some(woken)) => {
                tracing::debug!(account = %account.name, "IDLE ended: {woken:?}");
                return woken;
            }
            Ok(None) => tracing::debug!(
                account = %account.name,
                "the server offers no IDLE: waiting poll_interval instead"
            ),
            Err(e) => tracing::warn!(
                account = %account.name,
                "IDLE failed, waiting poll_interval instead: {e}"
            ),
        }
    }
    tokio::time::sleep(account.poll_interval.saturating_sub(started.elapsed())).await;
    Woken::Quiet
}

/// One IDLE session on the account's folder for at most `window`; `None` when the server
/// offers no IDLE. Mail that arrived since the last pass looked (RECENT at SELECT) ends it
/// at once.
async fn idle_once(
    account: &AccountConfig,
    window: Duration,
    token: Option<&TokenSource>,
) -> Result<Option<Woken>, ImapError> {
    let token = match token {
        // A token that cannot be had is the next pass's to report.
        Some(source) => Some(
            source
                .access_token()
                .await
                .map_err(|e| ImapError::AuthFailed {
                    method: "OAuth2 token".to_owned(),
                    text: e.to_string(),
                    temporary: !e.is_refusal(),
                })?,
        ),
        None => None,
    };
    let mut client = ImapClient::connect_with_token(account, None, token.as_ref()).await?;
    let woken = if !client.can_idle() {
        None
    } else {
        client.open_folder(&account.folder).await?;
        if client.recent() > 0 {
            Some(Woken::NewMail)
        } else {
            Some(client.idle(window).await?)
        }
    };
    client.logout().await;
    Ok(woken)
}
