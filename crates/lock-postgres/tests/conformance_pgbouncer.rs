//! The whole conformance suite in lease mode through PgBouncer in transaction pooling mode:
//! the claim that lease mode needs no session state, tested. Notifications go straight to the
//! server (`listen_url`), as the README advises, since `LISTEN` cannot pass transaction pooling.

mod common;

use lock_core::Locker;
use lock_postgres::{Postgres, PostgresMode};

async fn through_pgbouncer() -> Result<(Locker, Locker), String> {
    let pooled = std::env::var("LOCK_TEST_PGBOUNCER_URL")
        .ok()
        .filter(|u| !u.trim().is_empty())
        .ok_or_else(|| "LOCK_TEST_PGBOUNCER_URL is not set".to_owned())?;
    let direct = common::url()?;
    let mut lockers = Vec::new();
    for _ in 0..2 {
        let mut config = common::config(&pooled, PostgresMode::Lease);
        config.listen_url = Some(direct.clone());
        let backend = Postgres::connect(config)
            .await
            .map_err(|e| format!("PgBouncer at LOCK_TEST_PGBOUNCER_URL unreachable: {e:#}"))?;
        lockers.push(Locker::with_backend(backend));
    }
    let b = lockers.pop().expect("two lockers");
    let a = lockers.pop().expect("two lockers");
    Ok((a, b))
}

lock_testkit::conformance_tests!(through_pgbouncer);
