//! End to end with the PostgreSQL state store: the real `mailferry poll-once` between a real
//! Dovecot (POP3) and smtp-sink, its state in a real PostgreSQL (`support::Postgres`) named by
//! `state: {postgres: {url_env | url_file}}`: the sample catch-all mailbox is delivered exactly
//! once, and a second pass over the same mailbox (`retention: keep`: every message still
//! upstream) delivers nothing, because PostgreSQL remembers what was settled.

mod support;

use std::path::Path;
use std::process::Output;
use std::time::Duration;

use mailferry::state::{Claim, PgStore, StateError, StateStore};
use support::{
    AccountYaml, Dovecot, GatewayConfig, PG_PASSWORD, Postgres, SAMPLE_CATCHALL_USER, Secret,
    SmtpSink, Tally, mailferry_command, poll_once, sample_catchall_mail, sample_catchall_pairs,
    write_private,
};

const PASS: &str = "pop-secret";
/// The variable the first configuration names with `url_env`.
const URL_VAR: &str = "MAILFERRY_TEST_PG_URL";

/// The catch-all account on `dovecot`, relaying to `sink`, its state where `state` says.
fn config(dir: &Path, dovecot: &Dovecot, sink: &SmtpSink, state: &str, name: &str) -> String {
    let account = AccountYaml {
        name: "pg-catchall".into(),
        port: dovecot.pop3_port(),
        username: SAMPLE_CATCHALL_USER.into(),
        password: Secret::Inline(PASS.into()),
        extra_lines: [
            "poll_interval: 5s",
            "retention: keep",
            "initial: deliver_all",
        ]
        .map(String::from)
        .to_vec(),
        ..AccountYaml::default()
    };
    let dir = dir.join(name);
    std::fs::create_dir_all(&dir).expect("create the configuration's directory");
    GatewayConfig::new(dir.join("state"), sink.port())
        .extra_line(state)
        .account(account)
        .write(&dir)
        .display()
        .to_string()
}

/// PostgreSQL, Dovecot with the sample catch-all mailbox, smtp-sink, and a configuration
/// naming the database with `url_env: URL_VAR`.
struct World {
    pg: Postgres,
    dovecot: Dovecot,
    sink: SmtpSink,
    dir: tempfile::TempDir,
    mail: Vec<Vec<u8>>,
    config: String,
}

impl World {
    fn start() -> World {
        let pg = Postgres::start();
        let dovecot = Dovecot::start(&[(SAMPLE_CATCHALL_USER, PASS)]);
        let sink = SmtpSink::start(&[]);
        let dir = tempfile::tempdir().expect("a temporary directory");
        let mail = sample_catchall_mail();
        dovecot.deliver_all(SAMPLE_CATCHALL_USER, &mail);
        let state = format!("state: {{postgres: {{url_env: {URL_VAR}, lease_ttl: 10s}}}}");
        let config = config(dir.path(), &dovecot, &sink, &state, "env");
        World {
            pg,
            dovecot,
            sink,
            dir,
            mail,
            config,
        }
    }
}

/// `mailferry poll-once` with the database's URL in [`URL_VAR`].
fn poll_once_env(config: &str, pg: &Postgres) -> Output {
    mailferry_command(&["poll-once", "--config", config])
        .env(URL_VAR, pg.url())
        .output()
        .expect("run mailferry poll-once")
}

#[test]
fn poll_once_with_postgres_delivers_a_catchall_mailbox_exactly_once() {
    if support::skip_e2e() {
        return;
    }
    // The first pass finds the database in a variable.
    let World {
        pg,
        dovecot,
        sink,
        dir,
        mail,
        config: by_env,
    } = World::start();
    let out = poll_once_env(&by_env, &pg);
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "poll-once failed\n{log}\n--- dovecot\n{}\n--- postgres\n{}",
        dovecot.log(),
        pg.log()
    );
    assert!(
        !log.contains(PG_PASSWORD),
        "the password reached the log:\n{log}"
    );
    assert!(
        !log.contains("NOTICE"),
        "the server's chatter in the log:\n{log}"
    );
    let tally = Tally::of(&sample_catchall_pairs(), &sink.transactions());
    assert!(tally.exact(), "{tally}\n{log}");
    assert_eq!(
        dovecot.count(SAMPLE_CATCHALL_USER),
        mail.len(),
        "retention: keep"
    );
    // What was delivered is in PostgreSQL, not in a SQLite file under state_dir.
    assert!(!dir.path().join("env/state/state.sqlite3").exists());
    let settled = pg.query(
        "SELECT count(*) FROM messages WHERE account = 'pg-catchall'
           AND settled_at IS NOT NULL AND deleted_at IS NULL",
    );
    assert_eq!(
        settled,
        mail.len().to_string(),
        "every message settled, none deleted"
    );
    assert_eq!(
        pg.query("SELECT coalesce(holder, '-'), generation FROM leases"),
        "-|1",
        "the pass released its lease"
    );

    // The second pass reads the URL from a file and finds every message still upstream:
    // nothing is delivered twice.
    let url_file = dir.path().join("pg-url");
    write_private(&url_file, &pg.url()).expect("write the URL file");
    let state = format!(
        "state: {{postgres: {{url_file: {}, lease_ttl: 10s}}}}",
        url_file.display()
    );
    let by_file = config(dir.path(), &dovecot, &sink, &state, "file");
    let before = sink.transactions().len();
    let out = poll_once(&by_file);
    assert!(
        out.status.success(),
        "second poll-once failed: {}",
        pg.log()
    );
    assert_eq!(sink.transactions().len(), before, "the second pass relayed");
    assert_eq!(dovecot.count(SAMPLE_CATCHALL_USER), mail.len());
    assert_eq!(
        pg.query("SELECT coalesce(holder, '-'), generation FROM leases"),
        "-|2"
    );
}

/// Another process is another instance (its own `hostname:pid`): while this test holds the
/// account's lease, `poll-once` refuses the account and delivers nothing; once the lease has
/// expired unrenewed, `poll-once` takes it over and delivers, and this test's store, the old
/// holder, can no longer write about the account.
#[tokio::test]
async fn poll_once_leaves_an_account_leased_elsewhere_until_the_lease_expires() {
    if support::skip_e2e() {
        return;
    }
    let World {
        pg,
        dovecot: _dovecot,
        sink,
        dir: _dir,
        mail: _,
        config,
    } = World::start();

    let holder = PgStore::open(&pg.url()).await.expect("open the store");
    let claim = Claim {
        ttl: Duration::from_secs(3),
        interval: Duration::from_secs(60),
        due_only: false,
    };
    assert!(holder.claim("pg-catchall", claim).await.unwrap());
    let out = poll_once_env(&config, &pg);
    // The account's line of the summary (stdout) says why.
    let log = String::from_utf8_lossy(&out.stdout) + String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "poll-once passed a held account:\n{log}"
    );
    assert!(
        log.contains("account pg-catchall is being polled by another instance"),
        "{log}"
    );
    assert!(
        sink.transactions().is_empty(),
        "delivered under another's lease"
    );
    assert_eq!(
        pg.query("SELECT holder, generation FROM leases"),
        format!("{}|1", holder.instance())
    );

    // The holder stops renewing; after lease_ttl the other instance takes the account.
    tokio::time::sleep(Duration::from_millis(3500)).await;
    let out = poll_once_env(&config, &pg);
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "poll-once failed\n{log}\n{}",
        pg.log()
    );
    let tally = Tally::of(&sample_catchall_pairs(), &sink.transactions());
    assert!(tally.exact(), "{tally}\n{log}");
    assert_eq!(
        pg.query("SELECT coalesce(holder, '-'), generation FROM leases"),
        "-|2"
    );
    // The old holder wakes up: nothing it writes is taken.
    let late = holder
        .begin_attempt("pg-catchall", "late", std::time::SystemTime::now())
        .await;
    assert!(
        matches!(late, Err(StateError::LeaseLost { .. })),
        "{late:?}"
    );
    assert_eq!(
        pg.query("SELECT count(*) FROM messages WHERE uidl = 'late'"),
        "0"
    );
}
