//! Wiring: one poller per account, the shared state store, the metrics listener, shutdown.
//!
//! `pass.rs` is one poll pass of one account (list, download, hand on, delete what may go);
//! `deliver.rs` is one message's way through route → relay → state.

mod backoff;
mod budget;
mod decide;
mod deliver;
mod flight;
mod lease;
mod notice;
mod pass;
mod plan;
pub mod reload;
pub mod shared;

use std::fmt;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;

use crate::config::{AccountConfig, Config};
use crate::fetch::imap::Woken;
use crate::fetch::{Source, Upstream};
use crate::oauth::Tokens;
use crate::relay::{Relay, SmtpRelay};
use crate::state::{PassEnded, StateError, StateStore, Store};

pub use decide::dedup_id;
pub use pass::{PassError, PassReport};

/// Where the passes get their mailbox sessions: the real servers ([`Upstreams`]), or the
/// in-memory mailboxes of the tests.
pub trait Mailboxes: Clone + Send + Sync + 'static {
    /// The sessions on one account's mailbox.
    type Source<'a>: Source + Send
    where
        Self: 'a;

    /// The mailbox of `account`.
    fn source<'a>(&'a self, config: &'a Config, account: &'a AccountConfig) -> Self::Source<'a>;

    /// Waits until the next pass of `account` is due: `poll_interval` by default.
    /// [`Woken::NewMail`] when new mail ended the wait early.
    fn until_next_pass(&self, account: &AccountConfig) -> impl Future<Output = Woken> + Send {
        let interval = account.poll_interval;
        async move {
            tokio::time::sleep(interval).await;
            Woken::Quiet
        }
    }
}

/// The accounts' real mailboxes, by their `protocol`, and the OAuth2 tokens of those that
/// log in with one (kept across passes).
#[derive(Debug, Clone)]
pub struct Upstreams {
    tokens: Arc<Tokens>,
}

impl Upstreams {
    /// The mailboxes of `config`'s accounts.
    pub fn new(config: &Config) -> Upstreams {
        Upstreams {
            tokens: Arc::new(Tokens::new(config)),
        }
    }
}

impl Mailboxes for Upstreams {
    type Source<'a> = Upstream<'a>;

    fn source<'a>(&'a self, config: &'a Config, account: &'a AccountConfig) -> Upstream<'a> {
        Upstream {
            account,
            max_message_size: config.max_message_size,
            token: self.tokens.get(&account.name),
        }
    }

    /// `poll_interval` and a little random delay (`backoff::jitter`, so that accounts do not
    /// all connect in the same second), or until new mail with `idle: true` (IMAP IDLE: not
    /// held back).
    async fn until_next_pass(&self, account: &AccountConfig) -> Woken {
        let woken =
            crate::fetch::idle::until_next_pass(account, self.tokens.get(&account.name)).await;
        if !account.idle {
            tokio::time::sleep(backoff::jitter(account.poll_interval)).await;
        }
        woken
    }
}

/// Why the pipeline could not start.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error(transparent)]
    /// The state store could not be opened or locked.
    State(#[from] StateError),
    #[error(transparent)]
    /// The metrics listener could not be set up.
    Metrics(#[from] crate::metrics::MetricsError),
    #[error("cannot wait for signals: {0}")]
    /// The signal handlers could not be installed.
    Signal(std::io::Error),
    /// PostgreSQL's accounts table could not be read or holds an invalid account.
    #[error(transparent)]
    Shared(#[from] shared::SharedError),
    /// `poll-once --account NAME` named no account.
    #[error("no account named {0:?}")]
    NoSuchAccount(String),
    /// A pass met a failure that must stop the daemon (the state database was replaced).
    #[error("stopping: {0}")]
    Fatal(String),
}

/// How long `run` waits, after SIGTERM, for passes to finish the message in hand and QUIT.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(60);

/// The outcome of `poll-once`: one line per account.
#[derive(Debug)]
pub struct Summary {
    /// Each account's name and how its pass went, in the configuration's order.
    pub passes: Vec<(String, Result<PassReport, PassError>)>,
}

impl Summary {
    /// True when every account's pass succeeded and every message in it was settled or
    /// deliberately left (nothing failed).
    pub fn all_ok(&self) -> bool {
        self.passes
            .iter()
            .all(|(_, r)| r.as_ref().is_ok_and(|p| p.failed == 0))
    }
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, (name, result)) in self.passes.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            match result {
                Ok(report) => write!(f, "{name}: {report}")?,
                Err(e) => write!(f, "{name}: FAILED: {e}")?,
            }
        }
        Ok(())
    }
}

/// One pass of every account (or of the one named), concurrently; then exit.
pub async fn poll_once(
    config: Config,
    path: &Path,
    only: Option<&str>,
) -> Result<Summary, PipelineError> {
    let (store, _lock) = Store::open(&config, true).await?;
    let config = shared::with_shared(config, &path.display().to_string(), &store).await?;
    if let Some(name) = only.filter(|name| config.account(name).is_none()) {
        return Err(PipelineError::NoSuchAccount(name.to_owned()));
    }
    let relay = SmtpRelay::new(config.relay.clone());
    let upstreams = Upstreams::new(&config);
    let summary = poll_once_with(Arc::new(config), only, upstreams, &store, &relay).await;
    relay.close().await;
    Ok(summary)
}

/// [`poll_once`] on the given mailboxes, store and relay.
pub async fn poll_once_with<M: Mailboxes, St: StateStore, R: Relay>(
    config: Arc<Config>,
    only: Option<&str>,
    mailboxes: M,
    store: &St,
    relay: &R,
) -> Summary {
    // Never set: poll-once always finishes its pass.
    let (_stop_tx, stop) = watch::channel(false);
    let turns = Arc::new(Semaphore::new(config.max_concurrent_accounts));
    let mut tasks = JoinSet::new();
    for (index, account) in config.accounts.iter().enumerate() {
        if only.is_some_and(|name| name != account.name) {
            continue;
        }
        let (config, mailboxes, store, relay, stop, turns) = (
            config.clone(),
            mailboxes.clone(),
            store.clone(),
            relay.clone(),
            stop.clone(),
            turns.clone(),
        );
        tasks.spawn(async move {
            let _turn = turns.acquire_owned().await;
            let name = config.accounts[index].name.clone();
            let result = guarded_pass(
                config,
                index,
                mailboxes,
                store.clone(),
                relay,
                stop,
                Trigger::Now,
            )
            .await;
            note_pass(&store, &name, &result, None, false).await;
            (index, name, result)
        });
    }
    let mut passes = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok(done) => passes.push(done),
            // guarded_pass catches a pass's panic; only this wrapper itself could fail here.
            Err(e) => tracing::error!("a poll pass task failed: {e}"),
        }
    }
    passes.sort_by_key(|(index, _, _)| *index);
    Summary {
        passes: passes.into_iter().map(|(_, n, r)| (n, r)).collect(),
    }
}

/// The daemon: each account on its own cycle until SIGTERM or SIGINT; then every pass
/// finishes the message in hand, commits its deletions and stops. SIGHUP (and, with
/// `watch_config`, a change of the file) reads `path` again and applies it (`reload.rs`).
pub async fn run(config: Config, path: &Path) -> Result<(), PipelineError> {
    let (store, mut lock) = Store::open(&config, true).await?;
    // With PostgreSQL too, one daemon per state_dir: its reload answers and OAuth2 tokens are
    // there, and `mailferry reload` finds the daemon by this lock.
    if lock.is_none() {
        lock = Some(crate::state::StateLock::acquire(&config.state_dir)?);
    }
    let _lock = lock;
    let file = path.display().to_string();
    // Taken before the table is read: a change in between is only applied once more.
    let mut seen = shared::snapshot(&store).await?;
    let config = shared::with_shared(config, &file, &store).await?;
    if let Some(addr) = config.metrics.listen {
        let listener = crate::metrics::bind(addr).await?;
        tracing::info!("metrics on http://{addr}/metrics");
        tokio::spawn(crate::metrics::serve(listener, store.clone()));
    }
    let mut wakers = reload::Wakers::new(path).map_err(PipelineError::Signal)?;
    let mut config = Arc::new(config);
    loop {
        let relay = SmtpRelay::new(config.relay.clone());
        let mut next = None;
        // Ends this generation of pollers: a stop, or a file that was read and is valid.
        let until = async {
            loop {
                // With PostgreSQL a change of the accounts table reloads too.
                let every = shared::refresh_every(&config);
                let wake = tokio::select! {
                    wake = wakers.next(config.watch_config) => wake,
                    _ = shared::changed(&store, seen.clone(), every) => {
                        tracing::info!("the accounts table changed");
                        reload::Wake::Reload
                    }
                };
                if let reload::Wake::Stop = wake {
                    return Ok(());
                }
                // Whatever woke it, this reload takes the table as it is now.
                if let Ok(now) = shared::snapshot(&store).await {
                    seen = now;
                }
                let new = match reload::reread(path, &config) {
                    Ok(new) => shared::with_shared(new, &file, &store)
                        .await
                        .map_err(|e| e.to_string()),
                    Err(why) => Err(why),
                };
                match new {
                    Ok(new) => {
                        let applied = reload::applied(&new);
                        tracing::info!("reloading {}: {applied}", path.display());
                        reload::record(&config.state_dir, &applied);
                        next = Some(new);
                        return Ok(());
                    }
                    Err(why) => {
                        tracing::error!(
                            "reload of {} refused, the running configuration stays:\n{why}",
                            path.display()
                        );
                        reload::record(&config.state_dir, &format!("refused:\n{why}"));
                    }
                }
            }
        };
        let upstreams = Upstreams::new(&config);
        let result = run_with(config.clone(), upstreams, &store, &relay, until).await;
        relay.close().await;
        result?;
        let Some(new) = next else { break };
        for name in reload::removed(&config, &new) {
            tracing::info!(account = %name, "account removed by the reload: no longer polled");
            crate::metrics::status::removed(name);
        }
        config = Arc::new(new);
    }
    tracing::info!("stopped");
    Ok(())
}

/// [`run`] on the given mailboxes, store and relay, until `shutdown` resolves (`Err` stops at
/// once, without waiting for the passes).
pub async fn run_with<M: Mailboxes, St: StateStore, R: Relay>(
    config: Arc<Config>,
    mailboxes: M,
    store: &St,
    relay: &R,
    shutdown: impl Future<Output = Result<(), PipelineError>>,
) -> Result<(), PipelineError> {
    let (stop_tx, stop) = watch::channel(false);
    let (fatal_tx, mut fatal) = tokio::sync::mpsc::channel::<String>(1);
    let turns = Arc::new(Semaphore::new(config.max_concurrent_accounts));
    let mut pollers = JoinSet::new();
    for index in 0..config.accounts.len() {
        let control = Control {
            stop: stop.clone(),
            fatal: fatal_tx.clone(),
            turns: turns.clone(),
        };
        pollers.spawn(poller(
            config.clone(),
            index,
            mailboxes.clone(),
            store.clone(),
            relay.clone(),
            control,
        ));
    }
    crate::metrics::set_ready(true);
    tracing::info!(accounts = config.accounts.len(), "mailferry running");

    let fatal_error = tokio::select! {
        result = shutdown => {
            result?;
            None
        }
        Some(why) = fatal.recv() => Some(why),
    };
    match &fatal_error {
        None => tracing::info!("stopping the pollers: each finishes the message in hand"),
        Some(why) => tracing::error!("stopping: {why}"),
    }
    crate::metrics::set_ready(false);
    let _ = stop_tx.send(true);
    let drained = tokio::time::timeout(SHUTDOWN_GRACE, async {
        while pollers.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!("passes still running after {SHUTDOWN_GRACE:?}; stopping them");
        pollers.abort_all();
    }
    match fatal_error {
        None => Ok(()),
        Some(why) => Err(PipelineError::Fatal(why)),
    }
}

/// What a pass is for, which decides how its lease is claimed (`lease.rs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Trigger {
    /// The daemon's pass at its interval: skipped when another instance holds the account
    /// or it is not due yet (another instance polled it meanwhile).
    Due,
    /// The daemon's pass for mail IMAP IDLE announced: not due yet by the interval, so
    /// skipped only when another instance holds the account.
    NewMail,
    /// `poll-once`: another instance holding the account is an error.
    Now,
}

/// One pass of account `index` in a task of its own, so that a panic in it (a bug, here or in
/// a library) fails this pass of this account only; held under the account's lease
/// (`lease.rs`): in the daemon ([`Trigger::Due`], [`Trigger::NewMail`]) an account it may not
/// take is skipped (an empty report); with `poll-once` ([`Trigger::Now`]) that is an error.
async fn guarded_pass<M: Mailboxes, St: StateStore, R: Relay>(
    config: Arc<Config>,
    index: usize,
    mailboxes: M,
    store: St,
    relay: R,
    stop: watch::Receiver<bool>,
    trigger: Trigger,
) -> Result<PassReport, PassError> {
    let task = tokio::spawn(async move {
        let (config, store) = (&*config, &store);
        let account = &config.accounts[index];
        let source = mailboxes.source(config, account);
        let leased = lease::leased(
            config,
            account,
            store,
            source,
            relay,
            stop,
            trigger == Trigger::Due,
            |stop, source, relay| async move {
                pass::run_pass(&source, config, account, store, &relay, &stop).await
            },
        );
        match leased.await? {
            Some(report) => Ok(report),
            None if trigger != Trigger::Now => Ok(PassReport::default()),
            None => Err(lease::held(account)),
        }
    });
    match task.await {
        Ok(result) => result,
        Err(e) => {
            let why = match e.try_into_panic() {
                Ok(payload) => payload
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| payload.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "a panic".to_owned()),
                Err(e) => e.to_string(),
            };
            Err(PassError::Panicked(why))
        }
    }
}

/// Notes how a pass ended and when the next is due, for `mailferry status`; a failure to is
/// logged (the store says why), and the poller goes on.
async fn note_pass<St: StateStore>(
    store: &St,
    account: &str,
    result: &Result<PassReport, PassError>,
    next_at: Option<SystemTime>,
    backing_off: bool,
) {
    let pass = PassEnded {
        at: SystemTime::now(),
        error: result.as_ref().err().map(ToString::to_string),
        next_at,
        backing_off,
    };
    if let Err(e) = store.record_pass(account, &pass).await {
        tracing::warn!(account = %account, "could not note the pass for mailferry status: {e}");
    }
}

/// What the pollers share besides the seams: the stop, the way to stop the daemon, and the
/// turns of `max_concurrent_accounts`.
struct Control {
    stop: watch::Receiver<bool>,
    fatal: tokio::sync::mpsc::Sender<String>,
    turns: Arc<Semaphore>,
}

/// One account's cycle: a pass, then wait `poll_interval` (or, with `idle: true`, until new
/// mail), or until stopped; while the server refuses the login, the growing wait of
/// `backoff.rs` instead.
async fn poller<M: Mailboxes, St: StateStore, R: Relay>(
    config: Arc<Config>,
    index: usize,
    mailboxes: M,
    store: St,
    relay: R,
    control: Control,
) {
    let Control {
        mut stop,
        fatal,
        turns,
    } = control;
    let account = &config.accounts[index];
    // The LOGIN-DELAY warning is said once per account.
    let mut told_delay = false;
    // So is what the server's EXPIRE does to retention.
    let mut told_expire = false;
    let mut failures = backoff::Backoff::default();
    // Mail announced by IDLE is collected at once, due or not.
    let mut trigger = Trigger::Due;
    crate::metrics::account_polling(account);
    loop {
        // max_concurrent_accounts: wait for a turn (first come, first served); a stop meanwhile
        // ends the poller.
        let turn = tokio::select! {
            turn = turns.clone().acquire_owned() => turn,
            _ = stop.changed() => return,
        };
        let began = tokio::time::Instant::now();
        let pass = guarded_pass(
            config.clone(),
            index,
            mailboxes.clone(),
            store.clone(),
            relay.clone(),
            stop.clone(),
            trigger,
        );
        let result = pass.await;
        drop(turn);
        if !told_expire
            && let Some(why) = result
                .as_ref()
                .ok()
                .and_then(|r| r.expire)
                .and_then(|e| crate::retention::expire_conflict(account.retention, e))
        {
            told_expire = true;
            tracing::warn!(account = %account.name, "{why}");
        }
        // Never log in sooner than the server allows (POP3 LOGIN-DELAY): it would refuse.
        let delay = result.as_ref().ok().and_then(|r| r.login_delay);
        if let Some(delay) = delay.filter(|d| *d > account.poll_interval)
            && !told_delay
        {
            told_delay = true;
            tracing::warn!(
                account = %account.name,
                "the server allows a login every {}s (LOGIN-DELAY); polling every {}s instead of poll_interval {}s",
                delay.as_secs(),
                delay.as_secs(),
                account.poll_interval.as_secs()
            );
        }
        let backoff = failures.after_pass(account, &result);
        let next_at = (!*stop.borrow()).then(|| {
            let wait = (began + backoff.unwrap_or(account.poll_interval))
                .duration_since(tokio::time::Instant::now());
            SystemTime::now() + wait
        });
        note_pass(&store, &account.name, &result, next_at, backoff.is_some()).await;
        match result {
            Err(e) if e.is_fatal() => {
                let _ = fatal.send(e.to_string()).await;
                return;
            }
            // Said once by the store when it happened; not again every poll_interval.
            Err(PassError::State(StateError::Unwritable { .. })) => {
                tracing::debug!(account = %account.name, "not delivering: the state store cannot be written")
            }
            // A quiet mailbox is not news every poll_interval.
            Ok(report) if report.fetched + report.deleted + report.failed == 0 => {
                tracing::debug!(account = %account.name, "pass: {report}")
            }
            Ok(report) => tracing::info!(account = %account.name, "pass: {report}"),
            Err(e) => tracing::warn!(account = %account.name, "pass failed: {e}"),
        }
        if *stop.borrow() {
            return;
        }
        crate::metrics::next_pass(
            &account.name,
            began + backoff.unwrap_or(account.poll_interval),
            backoff.is_some(),
        );
        let wait = async {
            // While logins are refused, only the back-off: IDLE would log in again at once.
            if let Some(wait) = backoff {
                tokio::time::sleep_until(began + wait).await;
                return Woken::Quiet;
            }
            let woken = mailboxes.until_next_pass(account).await;
            if let Some(delay) = delay {
                tokio::time::sleep_until(began + delay).await;
            }
            woken
        };
        let woken = tokio::select! {
            woken = wait => woken,
            _ = stop.changed() => return,
        };
        // With PostgreSQL a pass before poll_interval would be refused as not due.
        trigger = match woken {
            Woken::NewMail => Trigger::NewMail,
            Woken::Quiet => Trigger::Due,
        };
    }
}

#[cfg(test)]
mod tests;
