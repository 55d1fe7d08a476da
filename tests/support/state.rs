//! Which state store the end-to-end configurations use: SQLite under `state_dir` (the
//! default), or PostgreSQL when `MAILFERRY_TEST_STATE=postgres` ([`STATE_VAR`]), so that the
//! same tests check both backends.
//!
//! Under PostgreSQL one private server serves the whole test binary, started by the first
//! configuration that needs it and stopped (its directory removed) when the process exits.
//! Each `state_dir` gets a database of its own: tests stay apart, and a configuration written
//! again for the same `state_dir` (a reload, a second process) finds the same state, as it
//! would in SQLite.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use super::{PG_USER, Postgres};

/// The variable that chooses the backend: `postgres`, or `sqlite` (the default when unset).
pub const STATE_VAR: &str = "MAILFERRY_TEST_STATE";

/// The binary's PostgreSQL server, once started; taken and dropped at exit.
static SERVER: Mutex<Option<Postgres>> = Mutex::new(None);
/// The database of each `state_dir` configured so far.
static DATABASES: Mutex<BTreeMap<PathBuf, String>> = Mutex::new(BTreeMap::new());

/// True when [`STATE_VAR`] asks for PostgreSQL; panics on a value it does not know (a typo
/// would otherwise test SQLite twice).
pub fn state_is_postgres() -> bool {
    match std::env::var(STATE_VAR).as_deref() {
        Ok("postgres") => true,
        Ok("sqlite") | Ok("") | Err(_) => false,
        Ok(other) => panic!("{STATE_VAR}={other:?}: give `postgres` or `sqlite`"),
    }
}

/// True when the calling test checks something only the SQLite store has (its file, the lock
/// on `state_dir`) and the tests run on PostgreSQL: it should return at once. Says so with
/// `reason`, on stderr past the test harness's capture.
pub fn skip_under_postgres(reason: &str) -> bool {
    if !state_is_postgres() {
        return false;
    }
    let _ = writeln!(
        std::io::stderr(),
        "skipped under {STATE_VAR}=postgres: {reason}"
    );
    true
}

/// The `state:` line for a configuration on `state_dir` under PostgreSQL (its own database
/// on the binary's server, created at the first call for this `state_dir`), or `None` with
/// SQLite.
pub fn state_line(state_dir: &Path) -> Option<String> {
    if !state_is_postgres() {
        return None;
    }
    let mut server = SERVER.lock().unwrap_or_else(|e| e.into_inner());
    if server.is_none() {
        *server = Some(Postgres::start());
        // Statics are never dropped: stop the server and remove its directory at exit.
        // SAFETY: `stop_server` is a plain function that does not unwind.
        unsafe { libc::atexit(stop_server) };
    }
    let pg = server.as_ref().expect("started above");
    let mut databases = DATABASES.lock().unwrap_or_else(|e| e.into_inner());
    let next = databases.len();
    let database = databases.entry(state_dir.to_path_buf()).or_insert_with(|| {
        let name = format!("{PG_USER}_{next}");
        pg.psql(&format!("CREATE DATABASE {name} OWNER {PG_USER}"));
        name
    });
    Some(format!(
        "state: {{postgres: {{url: \"{}\"}}}}",
        pg.database_url(database)
    ))
}

/// At exit: the server's fast shutdown, and its temporary directory removed.
extern "C" fn stop_server() {
    let server = SERVER.lock().unwrap_or_else(|e| e.into_inner()).take();
    drop(server);
}
