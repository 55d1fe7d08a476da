//! PostgreSQL's accounts table in the configuration: every instance takes its accounts in
//! after those of its files, at start and on every reload, checked by the same code as a file
//! of `accounts_dir`, and again when they see it changed; and `mailferry accounts list | add
//! FILE | remove NAME`, which manage it.

use std::time::{Duration, SystemTime};

use thiserror::Error;

use crate::config::{AccountText, Config, ConfigErrors, StateBackend, with_accounts};
use crate::state::{PgStore, SharedAccount, StateError, Store};

/// Why the accounts table could not be read, used or changed.
#[derive(Debug, Error)]
pub enum SharedError {
    /// The store.
    #[error(transparent)]
    State(#[from] StateError),
    /// An account of the table (or the one being added) is invalid here.
    #[error("the accounts table:\n{0}")]
    Invalid(ConfigErrors),
    /// The configuration's store is SQLite.
    #[error(
        "{0}: the accounts table needs state: postgres (with SQLite, list accounts in the file or in accounts_dir)"
    )]
    NotPostgres(String),
    /// `remove` of a name the table does not have.
    #[error("no account {0} in the accounts table")]
    NoSuchAccount(String),
}

/// How an account of the table is named in errors, as a file would be.
pub fn origin(name: &str) -> String {
    format!("accounts table[{name}]")
}

fn texts(rows: &[SharedAccount]) -> Vec<AccountText> {
    (rows.iter())
        .map(|r| AccountText {
            origin: origin(&r.name),
            text: r.yaml.clone(),
        })
        .collect()
}

/// `config` (loaded from `file`) with the accounts of the table after its own; as it is with
/// SQLite.
pub async fn with_shared(config: Config, file: &str, store: &Store) -> Result<Config, SharedError> {
    let Store::Postgres(pg) = store else {
        return Ok(config);
    };
    let rows = pg.shared_accounts().await?;
    with_accounts(config, file, &texts(&rows)).map_err(SharedError::Invalid)
}

/// What the table holds, each account's name and YAML, to notice a change (`None` with
/// SQLite).
pub type Snapshot = Option<Vec<(String, String)>>;

/// The table as it is now.
pub async fn snapshot(store: &Store) -> Result<Snapshot, StateError> {
    let Store::Postgres(pg) = store else {
        return Ok(None);
    };
    let rows = pg.shared_accounts().await?;
    Ok(Some(rows.into_iter().map(|r| (r.name, r.yaml)).collect()))
}

/// How often a daemon looks at the table: its shortest `poll_interval` (60 s without any
/// account), so a change is picked up about as soon as a pass would notice it.
pub fn refresh_every(config: &Config) -> Duration {
    (config.accounts.iter().map(|a| a.poll_interval))
        .min()
        .unwrap_or(Duration::from_secs(60))
}

/// Waits until the table differs from `seen`, looking every `every`; with SQLite, forever.
/// A look that fails is logged and tried at the next.
pub async fn changed(store: &Store, seen: Snapshot, every: Duration) -> Snapshot {
    if seen.is_none() {
        return std::future::pending().await;
    }
    loop {
        tokio::time::sleep(every).await;
        match snapshot(store).await {
            Ok(now) if now != seen => return now,
            Ok(_) => {}
            Err(e) => tracing::warn!("cannot read the accounts table for changes: {e}"),
        }
    }
}

/// The table of `config`'s database (opened and migrated as the daemon does).
async fn table(config: &Config, file: &str) -> Result<PgStore, SharedError> {
    match &config.state {
        StateBackend::Postgres(pg) => Ok(PgStore::open(pg.url.expose()).await?),
        StateBackend::Sqlite => Err(SharedError::NotPostgres(file.to_owned())),
    }
}

/// `mailferry accounts list`: name, mailbox and when added, by name (never the YAML: it
/// holds the password).
pub async fn list(
    config: &Config,
    file: &str,
) -> Result<Vec<(String, String, SystemTime)>, SharedError> {
    let pg = table(config, file).await?;
    let rows = pg.shared_accounts().await?;
    Ok(rows
        .into_iter()
        .map(|r| (r.name, r.mailbox, r.added_at))
        .collect())
}

/// `mailferry accounts add FILE`: the account of `text` (read from `origin`), checked with
/// the configuration and every other account of the table, is stored (replacing one of its
/// name: true). Instances take it in when they next look at the table or reload.
pub async fn add(
    config: Config,
    file: &str,
    origin: &str,
    text: &str,
) -> Result<(String, bool), SharedError> {
    let pg = table(&config, file).await?;
    let rows = pg.shared_accounts().await?;
    let own = config.accounts.len();
    // Checked first alone for its name, then among the others of the table.
    let alone = with_accounts(
        config.clone(),
        file,
        &[AccountText {
            origin: origin.to_owned(),
            text: text.to_owned(),
        }],
    )
    .map_err(SharedError::Invalid)?;
    let name = alone.accounts[own].name.clone();
    let mut all = texts(&rows);
    all.retain(|t| t.origin != self::origin(&name));
    all.push(AccountText {
        origin: origin.to_owned(),
        text: text.to_owned(),
    });
    let checked = with_accounts(config, file, &all).map_err(SharedError::Invalid)?;
    let account = checked.account(&name).unwrap_or(&alone.accounts[own]);
    let replaced = pg
        .put_shared_account(&name, &account.mailbox_id(), text)
        .await?;
    Ok((name, replaced))
}

/// `mailferry accounts remove NAME`: instances stop polling it at their next reload, or when they next look at the table.
pub async fn remove(config: &Config, file: &str, name: &str) -> Result<(), SharedError> {
    let pg = table(config, file).await?;
    if pg.remove_shared_account(name).await? {
        Ok(())
    } else {
        Err(SharedError::NoSuchAccount(name.to_owned()))
    }
}
