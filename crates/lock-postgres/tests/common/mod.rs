//! Shared by the PostgreSQL test binaries: the factory of two lockers on one server.

#![allow(dead_code)]

use lock_core::Locker;
use lock_postgres::{Postgres, PostgresConfig, PostgresMode};
use std::sync::OnceLock;

/// The server under test, from `LOCK_TEST_POSTGRES_URL`.
///
/// # Errors
///
/// The reason when the variable is unset.
pub fn url() -> Result<String, String> {
    std::env::var("LOCK_TEST_POSTGRES_URL")
        .ok()
        .filter(|u| !u.trim().is_empty())
        .ok_or_else(|| "LOCK_TEST_POSTGRES_URL is not set".to_owned())
}

/// The server under test, or `None` after printing why the test is skipped.
///
/// # Panics
///
/// When the server is not configured and `LOCK_TEST_REQUIRE_SERVERS=1`.
pub fn url_or_skip() -> Option<String> {
    match url() {
        Ok(url) => Some(url),
        Err(reason) if lock_testkit::require_servers() => panic!("server required: {reason}"),
        Err(reason) => {
            println!("skipped: {reason}");
            None
        }
    }
}

/// An advisory namespace unique to this test process, so runs never meet on the server.
pub fn namespace() -> i32 {
    static NAMESPACE: OnceLock<i32> = OnceLock::new();
    *NAMESPACE.get_or_init(|| {
        let random = ulid::Ulid::generate().random();
        i32::from_ne_bytes(((random as u32) | 0x4000_0000).to_ne_bytes())
    })
}

/// A small-pool configuration for `url` in `mode`.
pub fn config(url: &str, mode: PostgresMode) -> PostgresConfig {
    let mut config = PostgresConfig::new(url);
    config.mode = mode;
    config.namespace = namespace();
    config.table_prefix = "lock_test_".to_owned();
    config.max_connections = 3;
    config
}

/// Two lockers, each with its own backend (two "processes"), on the test server.
///
/// # Errors
///
/// The reason when the server is not configured or unreachable.
pub async fn lockers(mode: PostgresMode) -> Result<(Locker, Locker), String> {
    let url = url()?;
    let a = Postgres::connect(config(&url, mode))
        .await
        .map_err(|e| format!("PostgreSQL at LOCK_TEST_POSTGRES_URL unreachable: {e:#}"))?;
    let b = Postgres::connect(config(&url, mode))
        .await
        .map_err(|e| format!("PostgreSQL at LOCK_TEST_POSTGRES_URL unreachable: {e:#}"))?;
    Ok((Locker::with_backend(a), Locker::with_backend(b)))
}
