//! Clients of both modes sharing one database (review finding PG-1): a lease-mode client needs
//! table privileges only, and never ends an advisory-mode client's session.

mod common;

use lock_core::Locker;
use lock_postgres::{Postgres, PostgresMode};
use lock_testkit::require_servers;
use sqlx::Connection;
use std::time::Duration;

/// The role used by the lease-mode client: table privileges only, no right to end others'
/// sessions.
const ROLE: &str = "lock_test_lease_only";

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_lease_mode_client_takes_over_an_expired_advisory_lease_without_privileges() {
    let url = match common::url() {
        Ok(url) => url,
        Err(reason) if require_servers() => panic!("server required: {reason}"),
        Err(reason) => {
            println!("skipped: {reason}");
            return;
        }
    };
    // The advisory-mode holder, as the (superuser) test role: it creates the tables.
    let advisory = Locker::with_backend(
        Postgres::connect(common::config(&url, PostgresMode::Advisory))
            .await
            .expect("connect"),
    );
    let mut admin = sqlx::PgConnection::connect(&url).await.unwrap();
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "DO $$ BEGIN IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{ROLE}') THEN \
         CREATE ROLE {ROLE} LOGIN; END IF; END $$; \
         GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO {ROLE};"
    )))
    .execute(&mut admin)
    .await
    .unwrap();
    let lease_url = url.replacen("://postgres@", &format!("://{ROLE}@"), 1);
    assert_ne!(lease_url, url, "the test URL names the postgres role");
    let lease = Locker::with_backend(
        Postgres::connect(common::config(&lease_url, PostgresMode::Lease))
            .await
            .expect("connect as the unprivileged role"),
    );

    let name = format!("mixed-{}", ulid::Ulid::generate());
    // Held without extensions past its TTL, its session kept open.
    let hung = advisory
        .mutex(&name)
        .ttl(Duration::from_secs(1))
        .lock()
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let taken = lease.mutex(&name).try_lock().await;
    let taken = taken.expect("the lease-mode client failed (it tried to end the advisory session)");
    let guard = taken.expect("the expired advisory lease still blocked the lease-mode client");
    guard.release().await.unwrap();
    drop(hung);
    advisory.close().await;
    lease.close().await;
}
