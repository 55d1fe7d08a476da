//! The `mailferry` command: parses arguments, sets up logging, loads the configuration and
//! hands over to the library. `anyhow` lives only here.
//!
//! Just over 600 lines: the clap definition of every command and `main`'s one match arm per
//! command, each only wiring; what the commands do is in the library.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Collects mail from POP3 mailboxes and delivers it by SMTP to the internal mail server.
#[derive(Parser)]
#[command(name = "mailferry", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// The log on stderr: `text` for people (without timestamps under systemd, whose journal
    /// has its own), `json` for log shippers (one object a line).
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
}

/// `--log-format`.
#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// The daemon: every account on its poll_interval, until SIGTERM or SIGINT; SIGHUP
    /// reloads the configuration file.
    Run {
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Apply the edited configuration file to the running daemon (SIGHUP) and say whether it
    /// took: exit status 0 when applied, 2 when the file is invalid (the daemon is not
    /// signalled), 1 when the daemon refused it or is not running.
    Reload {
        #[arg(long, short)]
        config: PathBuf,
    },
    /// One pass of every account (or of one), then exit; exit status 1 if any failed.
    PollOnce {
        #[arg(long, short)]
        config: PathBuf,
        /// Only this account.
        #[arg(long)]
        account: Option<String>,
    },
    /// Validate the configuration; print every problem; exit status 2 if there is any.
    CheckConfig {
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Connect, TLS, capabilities, login and the mailbox of every account (or of one), then
    /// the relay, one line per step; nothing is downloaded, flagged or deleted. Exit status
    /// 1 if any step failed.
    TestConnection {
        #[arg(long, short)]
        config: PathBuf,
        /// Only this account (the relay is tested too).
        #[arg(long)]
        account: Option<String>,
        /// `text` (the default) or `json`.
        #[arg(long, default_value = "text")]
        format: Format,
    },
    /// Dry run: who would receive this message, and why. Nothing is sent.
    Route {
        #[arg(long, short)]
        config: PathBuf,
        /// Route as this account would (default: the first account).
        #[arg(long)]
        account: Option<String>,
        /// `text` for people, `json` for scripts.
        #[arg(long, value_enum, default_value_t = Format::Text)]
        format: Format,
        /// The message file (.eml).
        message: PathBuf,
    },
    /// Per account: who polls it, its last pass (when, how it ended), the next pass due, the
    /// messages waiting and quarantined, the failures in a row. Read from the state store
    /// (SQLite or PostgreSQL) beside a running daemon, writing nothing.
    Status {
        #[arg(long, short)]
        config: PathBuf,
        /// One JSON object instead of the table.
        #[arg(long)]
        json: bool,
    },
    /// With state: postgres, the accounts table: accounts every instance collects besides
    /// those of its files, taken in at start and on every reload.
    Accounts {
        #[command(subcommand)]
        action: AccountsAction,
    },
    /// Quarantine: the messages mailferry gave up on (left upstream), and what to do with them.
    State {
        #[command(subcommand)]
        action: StateAction,
    },
    /// OAuth2 accounts (`oauth:`): get the refresh token mailferry logs in with.
    Oauth {
        #[command(subcommand)]
        action: OAuthAction,
    },
}

#[derive(Subcommand)]
enum AccountsAction {
    /// The accounts of the table: name, mailbox, when added (never a password).
    List {
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Check FILE (one account, written as a file of accounts_dir) with the configuration and
    /// the table, and store it, replacing an account of its name; exit status 2 if invalid.
    Add {
        #[arg(long, short)]
        config: PathBuf,
        /// The account's YAML file.
        file: PathBuf,
    },
    /// Remove the account NAME from the table: instances stop polling it at their next reload, or when they next look at the table.
    Remove {
        #[arg(long, short)]
        config: PathBuf,
        /// The account's name.
        name: String,
    },
}

#[derive(Subcommand)]
enum OAuthAction {
    /// The device-code login: prints a URL and a code to enter there (on any device), waits
    /// for the mailbox owner's consent, and stores the refresh token under state_dir. A
    /// running daemon takes the new token on its next pass.
    Login {
        #[arg(long, short)]
        config: PathBuf,
        /// The account (with `oauth:` and grant refresh_token).
        #[arg(long, required_unless_present = "relay", conflicts_with = "relay")]
        account: Option<String>,
        /// The relay's SMTP AUTH instead (`relay.oauth`).
        #[arg(long)]
        relay: bool,
    },
}

/// How `test-connection` and `route` print their report.
#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Format {
    Text,
    Json,
}

#[derive(Subcommand)]
enum StateAction {
    /// List the quarantined messages.
    List {
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Take a message out of quarantine: it is tried again from the next pass.
    Retry {
        #[arg(long, short)]
        config: PathBuf,
        /// The id `state list` shows.
        id: i64,
    },
    /// Drop a message from the list: it stays upstream and is never tried again.
    Forget {
        #[arg(long, short)]
        config: PathBuf,
        /// The id `state list` shows.
        id: i64,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_log(cli.log_format);

    let config_path = match &cli.command {
        Command::Run { config }
        | Command::Reload { config }
        | Command::PollOnce { config, .. }
        | Command::CheckConfig { config }
        | Command::TestConnection { config, .. }
        | Command::Status { config, .. }
        | Command::Route { config, .. } => config.clone(),
        Command::State {
            action:
                StateAction::List { config }
                | StateAction::Retry { config, .. }
                | StateAction::Forget { config, .. },
        } => config.clone(),
        Command::Oauth {
            action: OAuthAction::Login { config, .. },
        } => config.clone(),
        Command::Accounts {
            action:
                AccountsAction::List { config }
                | AccountsAction::Add { config, .. }
                | AccountsAction::Remove { config, .. },
        } => config.clone(),
    };
    let config = match mailferry::config::load(&config_path) {
        Ok(config) => config,
        Err(errors) => {
            eprintln!("{errors}");
            eprintln!(
                "{}: {} problem(s) found",
                config_path.display(),
                errors.0.len()
            );
            return ExitCode::from(2);
        }
    };

    // Every start, every command: an unverified connection must not go unnoticed.
    for warning in mailferry::tls::warnings(&config) {
        tracing::warn!("{}: {warning}", config_path.display());
    }

    match cli.command {
        Command::CheckConfig { .. } => {
            for a in &config.accounts {
                if a.initial.is_none() && a.retention != mailferry::config::Retention::Delete {
                    println!(
                        "{}: account {}: retention {} without `initial`: if the state store has never seen this account and its mailbox holds mail, nothing is delivered until you choose `initial: deliver_all` or `initial: skip_existing`",
                        config_path.display(),
                        a.name,
                        a.retention
                    );
                }
            }
            println!(
                "{}: ok ({} account(s), {} accepted domain(s))",
                config_path.display(),
                config.accounts.len(),
                config.domains.len()
            );
            ExitCode::SUCCESS
        }
        Command::Route {
            account,
            message,
            format,
            ..
        } => {
            if let Some(code) = unknown_account(&config, &config_path, account.as_deref()) {
                return code;
            }
            let account = match &account {
                Some(name) => config.account(name),
                None => config.accounts.first(),
            };
            // None only with every account in the PostgreSQL accounts table.
            let Some(account) = account else {
                eprintln!(
                    "{}: no account to route as (name one with --account)",
                    config_path.display()
                );
                return ExitCode::from(2);
            };
            match read_capped(&message, config.max_message_size) {
                Ok(raw) => {
                    let rules = mailferry::route::Rules::for_account(&config, account);
                    let explanation = mailferry::route::explain(&raw, &rules);
                    let delivered_before = delivered_before(&config, &explanation, &raw);
                    let report = mailferry::route::Report {
                        account: &account.name,
                        explanation: &explanation,
                        delivered_before: &delivered_before,
                    };
                    match format {
                        Format::Text => print!("{report}"),
                        Format::Json => println!("{}", report.json()),
                    }
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("mailferry: cannot read {}: {e}", message.display());
                    ExitCode::from(1)
                }
            }
        }
        Command::TestConnection {
            account, format, ..
        } => {
            if let Some(code) = unknown_account(&config, &config_path, account.as_deref()) {
                return code;
            }
            let config = std::sync::Arc::new(config);
            let report = match runtime() {
                Ok(rt) => rt.block_on(mailferry::probe::run(config, account.as_deref())),
                Err(e) => return report::<()>(Err(e)),
            };
            match format {
                Format::Text => println!("{report}"),
                Format::Json => println!("{}", report.to_json()),
            }
            if report.passed() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            }
        }
        Command::Accounts { action } => accounts_command(config, &config_path, action),
        Command::Status { json, .. } => report(runtime().and_then(|rt| {
            let status = rt.block_on(mailferry::state::status::read(&config))?;
            match json {
                true => println!("{}", status.to_json()),
                false => println!("{status}"),
            }
            Ok(())
        })),
        Command::State { action, .. } => {
            report(runtime().and_then(|rt| rt.block_on(state_command(&config, action))))
        }
        Command::Oauth {
            action: OAuthAction::Login { account, .. },
        } => {
            let Some(account) = account else {
                // --relay
                return report(runtime().and_then(|rt| {
                    let mut out = std::io::stdout();
                    let stored = rt.block_on(mailferry::oauth::device::login_relay(
                        config.relay.auth.as_ref(),
                        &mut out,
                    ))?;
                    println!("logged in: the relay's refresh token is stored in {stored}");
                    Ok(())
                }));
            };
            if let Some(code) = unknown_account(&config, &config_path, Some(&account)) {
                return code;
            }
            let Some(account) = config.account(&account) else {
                return ExitCode::from(2);
            };
            report(runtime().and_then(|rt| {
                let mut out = std::io::stdout();
                let stored = rt.block_on(mailferry::oauth::device::login(
                    account,
                    &config.state_dir,
                    &mut out,
                ))?;
                println!(
                    "logged in: the refresh token of account {} is stored in {stored}",
                    account.name
                );
                Ok(())
            }))
        }
        Command::Run { .. } => report(runtime().and_then(|rt| {
            rt.block_on(mailferry::pipeline::run(config, &config_path))
                .map_err(Into::into)
        })),
        Command::Reload { .. } => report(runtime().and_then(|rt| {
            let applied = rt.block_on(mailferry::pipeline::reload::request(&config.state_dir))?;
            println!("{}: {applied}", config_path.display());
            Ok(())
        })),
        Command::PollOnce { account, .. } => {
            // With PostgreSQL the accounts table may have it: poll_once checks after reading it.
            if config.state == mailferry::config::StateBackend::Sqlite
                && let Some(code) = unknown_account(&config, &config_path, account.as_deref())
            {
                return code;
            }
            match runtime().and_then(|rt| {
                rt.block_on(mailferry::pipeline::poll_once(
                    config,
                    &config_path,
                    account.as_deref(),
                ))
                .map_err(Into::into)
            }) {
                Ok(summary) => {
                    println!("{summary}");
                    if summary.all_ok() {
                        ExitCode::SUCCESS
                    } else {
                        ExitCode::from(1)
                    }
                }
                Err(e) => report::<()>(Err(e)),
            }
        }
    }
}

/// For `route`: the recipients (dedup keys) that the state store says got this message
/// already within `dedup_window`, so would not get it again. Empty without dedup or without a
/// state store yet (a dry run creates none); a store that cannot be read is said, not fatal.
fn delivered_before(
    config: &mailferry::config::Config,
    explanation: &mailferry::route::Explanation,
    raw: &[u8],
) -> Vec<String> {
    use mailferry::state::StateStore;
    let Some(window) = config.dedup_window else {
        return Vec::new();
    };
    if config.state == mailferry::config::StateBackend::Sqlite
        && !config.state_dir.join(mailferry::state::DB_FILE).exists()
    {
        return Vec::new();
    }
    let routing = &explanation.routing;
    // As a mailbox hands it over (POP3 and IMAP both send CRLF), whatever the file's line ends.
    let mut wire = Vec::with_capacity(raw.len() + raw.len() / 32);
    for (i, &b) in raw.iter().enumerate() {
        if b == b'\n' && (i == 0 || raw[i - 1] != b'\r') {
            wire.push(b'\r');
        }
        wire.push(b);
    }
    let id = mailferry::pipeline::dedup_id(routing.message_id.as_deref(), &wire);
    let keys: Vec<String> = routing
        .recipients
        .iter()
        .map(|r| r.address.dedup_key())
        .collect();
    let since = std::time::SystemTime::now() - window;
    let found = runtime().and_then(|rt| {
        rt.block_on(async {
            let (store, _) = mailferry::state::Store::open(config, false).await?;
            Ok(store.delivered_before(&id, &keys, since).await?)
        })
    });
    match found {
        Ok(got) => keys.into_iter().filter(|k| got.contains(k)).collect(),
        Err(e) => {
            eprintln!("mailferry: the state store was not read, earlier deliveries not shown: {e}");
            Vec::new()
        }
    }
}

/// `--account NAME` naming no account: the message, and exit status 2.
fn unknown_account(
    config: &mailferry::config::Config,
    path: &std::path::Path,
    name: Option<&str>,
) -> Option<ExitCode> {
    let name = name?;
    if config.account(name).is_some() {
        return None;
    }
    eprintln!("{}: no account named {name:?}", path.display());
    Some(ExitCode::from(2))
}

/// `mailferry state …`: works beside a running daemon (SQLite serialises the writes).
async fn state_command(
    config: &mailferry::config::Config,
    action: StateAction,
) -> anyhow::Result<()> {
    let (store, _) = mailferry::state::Store::open(config, false).await?;
    match action {
        StateAction::List { .. } => {
            let entries = store.list_quarantine().await?;
            if entries.is_empty() {
                println!("no message in quarantine");
            }
            for e in entries {
                println!(
                    "{}\taccount {}\tuidl {}\tsince {}\tattempts {}\tpostmaster {}\t{}",
                    e.id,
                    e.account,
                    e.uidl.escape_debug(),
                    mailferry::relay::rfc5322_date(e.since),
                    e.attempts,
                    if e.notified { "told" } else { "not yet told" },
                    e.reason.escape_debug()
                );
            }
        }
        StateAction::Retry { id, .. } => {
            anyhow::ensure!(store.retry(id).await?, "no message {id} in quarantine");
            println!("message {id} will be tried again on its account's next pass");
        }
        StateAction::Forget { id, .. } => {
            anyhow::ensure!(
                store.forget(id, std::time::SystemTime::now()).await?,
                "no message {id} in quarantine"
            );
            println!("message {id} dropped from the quarantine list; it stays upstream, untried");
        }
    }
    Ok(())
}

/// `mailferry accounts …`: exit status 2 for an invalid account or without PostgreSQL, 1 for
/// any other failure.
fn accounts_command(
    config: mailferry::config::Config,
    path: &std::path::Path,
    action: AccountsAction,
) -> ExitCode {
    use mailferry::pipeline::shared::{self, SharedError};
    let file = path.display().to_string();
    let rt = match runtime() {
        Ok(rt) => rt,
        Err(e) => return report::<()>(Err(e)),
    };
    let done = rt.block_on(async {
        match action {
            AccountsAction::List { .. } => {
                let rows = shared::list(&config, &file).await?;
                if rows.is_empty() {
                    println!("no account in the accounts table");
                }
                let width = rows.iter().map(|(n, _, _)| n.len()).max().unwrap_or(0);
                for (name, mailbox, added) in rows {
                    println!(
                        "{name:<width$}  {mailbox}  added {}",
                        mailferry::relay::rfc5322_date(added)
                    );
                }
            }
            AccountsAction::Add { file: account, .. } => {
                let origin = account.display().to_string();
                let text = std::fs::read_to_string(&account).map_err(|e| {
                    SharedError::Invalid(mailferry::config::ConfigErrors(vec![
                        mailferry::config::ConfigError {
                            file: origin.clone(),
                            line: 0,
                            column: 0,
                            message: format!("cannot read the file: {e}"),
                        },
                    ]))
                })?;
                let (name, replaced) = shared::add(config, &file, &origin, &text).await?;
                let what = if replaced { "replaced" } else { "added" };
                println!(
                    "account {name} {what} in the accounts table; instances take it in when they next look at the table (every poll_interval) or reload"
                );
            }
            AccountsAction::Remove { name, .. } => {
                shared::remove(&config, &file, &name).await?;
                println!(
                    "account {name} removed from the accounts table; instances stop polling it when they next look at the table (every poll_interval) or reload"
                );
            }
        }
        Ok::<(), SharedError>(())
    });
    match done {
        Ok(()) => ExitCode::SUCCESS,
        Err(e @ (SharedError::Invalid(_) | SharedError::NotPostgres(_))) => {
            eprintln!("{e}");
            ExitCode::from(2)
        }
        Err(e) => {
            eprintln!("mailferry: {e}");
            ExitCode::from(1)
        }
    }
}

/// Reads at most `limit` bytes of `path`: a larger file is refused, not read whole.
fn read_capped(path: &std::path::Path, limit: u64) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    let mut raw = Vec::new();
    std::fs::File::open(path)?
        .take(limit.saturating_add(1))
        .read_to_end(&mut raw)?;
    if raw.len() as u64 > limit {
        return Err(std::io::Error::other(format!(
            "larger than max_message_size ({limit} bytes)"
        )));
    }
    Ok(raw)
}

/// Logging to stderr, filtered by `MAILFERRY_LOG` (default `info`).
fn init_log(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("MAILFERRY_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let log = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    // systemd sets JOURNAL_STREAM for a service whose stderr is the journal, which stamps
    // every line itself.
    let journal = std::env::var_os("JOURNAL_STREAM").is_some();
    match format {
        LogFormat::Json => log.json().init(),
        LogFormat::Text if journal => log.without_time().with_ansi(false).init(),
        LogFormat::Text => log.with_ansi(std::io::stderr().is_terminal()).init(),
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}

fn report<T>(result: anyhow::Result<T>) -> ExitCode {
    match result {
        Ok(_) => ExitCode::SUCCESS,
        Err(e) => {
            // Each error's Display already names its cause: the chain would repeat it.
            eprintln!("mailferry: {e}");
            ExitCode::from(1)
        }
    }
}
