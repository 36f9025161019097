//! The whole conformance suite against PostgreSQL in advisory mode with relaxed durability
//! (`LOCK_POSTGRES_DURABILITY=relaxed`): asynchronous commits change nothing while the server
//! does not crash.

mod common;

use lock_core::Locker;
use lock_postgres::{Postgres, PostgresDurability, PostgresMode};

async fn relaxed() -> Result<(Locker, Locker), String> {
    let url = common::url()?;
    let mut lockers = Vec::new();
    for _ in 0..2 {
        let mut config = common::config(&url, PostgresMode::Advisory);
        config.durability = PostgresDurability::Relaxed;
        let backend = Postgres::connect(config)
            .await
            .map_err(|e| format!("PostgreSQL at LOCK_TEST_POSTGRES_URL unreachable: {e:#}"))?;
        lockers.push(Locker::with_backend(backend));
    }
    let b = lockers.pop().expect("two lockers");
    let a = lockers.pop().expect("two lockers");
    Ok((a, b))
}

lock_testkit::conformance_tests!(relaxed);
