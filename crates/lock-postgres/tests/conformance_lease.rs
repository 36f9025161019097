//! The whole conformance suite against PostgreSQL in lease mode.

mod common;

async fn lease() -> Result<(lock_core::Locker, lock_core::Locker), String> {
    common::lockers(lock_postgres::PostgresMode::Lease).await
}

lock_testkit::conformance_tests!(lease);
