//! The POP3 [`Mailbox`]: a [`Pop3Client`] session, its RETRs pipelined unless the account's
//! server broke a pipelined response in this process.

use std::collections::BTreeSet;
use std::sync::Mutex;
use std::time::Duration;

use crate::config::Password;
use crate::fetch::mailbox::{FetchError, Listed, Mailbox, Upstream};

use super::{Expire, Pop3Client};

/// Accounts whose POP3 server broke a pipelined response in this process: their sessions
/// wait for each reply from then on (a server may advertise PIPELINING and not keep to it;
/// trying again every pass would cost an attempt of some message each time).
static LOCK_STEP: Mutex<BTreeSet<String>> = Mutex::new(BTreeSet::new());

/// `MAILFERRY_PIPELINING=off` turns POP3 pipelining off for every account (to compare, or
/// to rule it out when a server misbehaves).
fn pipelining_allowed(account: &str) -> bool {
    if std::env::var("MAILFERRY_PIPELINING").is_ok_and(|v| v == "off") {
        return false;
    }
    let lock_step = LOCK_STEP.lock().unwrap_or_else(|p| p.into_inner());
    !lock_step.contains(account)
}

/// A POP3 session on an account's mailbox.
pub struct Pop3Session {
    /// The account's name, for [`LOCK_STEP`].
    account: String,
    client: Pop3Client,
}

impl Pop3Session {
    /// Connects, secures and logs in.
    pub async fn open(
        upstream: &Upstream<'_>,
        token: Option<&Password>,
    ) -> Result<Pop3Session, FetchError> {
        let account = upstream.account;
        let mut client = Pop3Client::connect_with_token(account, None, token).await?;
        client.set_max_message_size(upstream.max_message_size);
        if client.pipelining() && !pipelining_allowed(&account.name) {
            client.set_pipelining(false);
        }
        Ok(Pop3Session {
            account: account.name.clone(),
            client,
        })
    }
}

impl Mailbox for Pop3Session {
    async fn list(&mut self) -> Result<Vec<Listed>, FetchError> {
        Ok(self
            .client
            .listing()
            .await?
            .into_iter()
            .map(|l| Listed {
                key: l.uid,
                handle: l.number,
                size: l.size,
                seen: false,
            })
            .collect())
    }

    fn plan(&mut self, upcoming: &[Listed]) {
        self.client.plan(upcoming.iter().map(|l| l.handle))
    }

    async fn fetch(&mut self, msg: &Listed) -> Result<Vec<u8>, FetchError> {
        let result = self.client.retr(msg.handle).await;
        if result.is_err() && self.client.pipelining_failed() {
            tracing::warn!(
                account = %self.account,
                "a pipelined RETR failed: this account's sessions wait for each reply from now on"
            );
            let mut lock_step = LOCK_STEP.lock().unwrap_or_else(|p| p.into_inner());
            lock_step.insert(self.account.clone());
        }
        Ok(result?)
    }

    fn login_delay(&self) -> Option<Duration> {
        (self.client.capabilities())
            .and_then(|c| c.login_delay)
            .map(Duration::from_secs)
    }

    fn expire(&self) -> Option<Expire> {
        self.client.capabilities().and_then(|c| c.expire)
    }

    async fn delete(&mut self, msg: &Listed) -> Result<(), FetchError> {
        Ok(self.client.dele_pipelined(msg.handle).await?)
    }

    async fn commit(self) -> Result<Vec<u32>, FetchError> {
        Ok(self.client.quit_reporting().await?)
    }
}
