//! `state:`: SQLite by default, PostgreSQL with its URL from any secret source, never shown.

use std::time::Duration;

use super::tests::{BASE, base_with, load};
use crate::config::{DEFAULT_LEASE_TTL, StateBackend};

fn with_state(state: &str) -> String {
    base_with("relay:\n", &format!("{state}relay:\n"))
}

#[test]
fn sqlite_is_the_default_and_can_be_said() {
    assert_eq!(load(BASE).unwrap().state, StateBackend::Sqlite);
    let c = load(&with_state("state:\n  sqlite: {}\n")).unwrap();
    assert_eq!(c.state, StateBackend::Sqlite);
}

#[test]
fn postgres_takes_its_url_and_lease_ttl() {
    let text = with_state(
        "state:\n  postgres:\n    url: postgres://mf:s3cret@127.0.0.1/mf\n    lease_ttl: 20s\n",
    );
    let StateBackend::Postgres(pg) = load(&text).unwrap().state else {
        panic!("not postgres");
    };
    assert_eq!(pg.url.expose(), "postgres://mf:s3cret@127.0.0.1/mf");
    assert_eq!(pg.lease_ttl, Duration::from_secs(20));
    assert!(!format!("{pg:?}").contains("s3cret"), "{pg:?}");

    let text = with_state("state:\n  postgres:\n    url: postgres://127.0.0.1/mf\n");
    let StateBackend::Postgres(pg) = load(&text).unwrap().state else {
        panic!("not postgres");
    };
    assert_eq!(pg.lease_ttl, DEFAULT_LEASE_TTL);
}

#[test]
fn the_url_comes_from_a_variable_and_its_errors_never_show_it() {
    let var = "MAILFERRY_TEST_PG_URL_7731";
    // SAFETY: no other test reads or writes this variable.
    unsafe { std::env::set_var(var, "postgres://mf:hunter2@127.0.0.1/mf") };
    let text = with_state(&format!("state:\n  postgres:\n    url_env: {var}\n"));
    let StateBackend::Postgres(pg) = load(&text).unwrap().state else {
        panic!("not postgres");
    };
    assert_eq!(pg.url.expose(), "postgres://mf:hunter2@127.0.0.1/mf");
    let text = with_state("state:\n  postgres:\n    url_env: MAILFERRY_TEST_SURELY_UNSET_91\n");
    let e = load(&text).unwrap_err().to_string();
    assert!(
        e.contains("state.postgres.url_env: environment variable"),
        "{e}"
    );
}

#[test]
fn a_state_block_without_one_backend_is_an_error_with_its_line() {
    for (state, line, needle) in [
        ("state: {}\n", 2, "name a backend"),
        ("state:\n  postgres: {}\n", 3, "missing the database"),
        (
            "state:\n  postgres: {url: x, url_env: Y}\n",
            3,
            "conflicts with `url`",
        ),
        (
            "state:\n  postgres: {url: x}\n  sqlite: {}\n",
            3,
            "give one backend",
        ),
        (
            "state:\n  postgres: {url: x, lease_ttl: 1s}\n",
            3,
            "lease_ttl",
        ),
        ("state:\n  mysql: {}\n", 3, "unknown key `mysql`"),
    ] {
        let e = load(&with_state(state)).unwrap_err();
        let found = e.0.iter().find(|e| e.message.contains(needle));
        assert_eq!(found.map(|e| e.line), Some(line), "{state:?}: {e}");
    }
}
