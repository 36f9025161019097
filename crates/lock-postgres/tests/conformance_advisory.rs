//! The whole conformance suite against PostgreSQL in advisory mode.

mod common;

async fn advisory() -> Result<(lock_core::Locker, lock_core::Locker), String> {
    common::lockers(lock_postgres::PostgresMode::Advisory).await
}

lock_testkit::conformance_tests!(advisory);
