//! Clients of both modes sharing one database (review finding PG-1): a lease-mode client needs
//! table privileges only, and never ends an advisory-mode client's session.

mod common;

use lock_core::Locker;
use lock_postgres::{Postgres, PostgresMode};
use sqlx::Connection;
use std::time::Duration;

/// The role used by the lease-mode client: table privileges only, no right to end others'
/// sessions.
const ROLE: &str = "lock_test_lease_only";

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_lease_mode_client_takes_over_an_expired_advisory_lease_without_privileges() {
    let Some(url) = common::url_or_skip() else {
        return;
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

async fn locker(url: &str, mode: PostgresMode) -> Locker {
    Locker::with_backend(
        Postgres::connect(common::config(url, mode))
            .await
            .expect("connect"),
    )
}

/// A hung advisory-mode holder (session open, lease expired): a lease-mode client takes and
/// releases the lock, and an advisory-mode contender can still end the hung session and be
/// granted (the lease-mode client left the expired row for it to find). Found by the review of
/// the PG-1 fix: the waiter was never granted.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_advisory_contender_still_ends_a_hung_session_after_a_lease_mode_grant() {
    let Some(url) = common::url_or_skip() else {
        return;
    };
    let hung_side = locker(&url, PostgresMode::Advisory).await;
    let lease = locker(&url, PostgresMode::Lease).await;
    let advisory = locker(&url, PostgresMode::Advisory).await;
    let name = format!("mixed-reap-{}", ulid::Ulid::generate());
    let hung = hung_side
        .mutex(&name)
        .ttl(Duration::from_secs(1))
        .lock()
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let taken = lease.mutex(&name).try_lock().await.unwrap();
    taken.expect("lease-mode grant").release().await.unwrap();
    let got = advisory
        .mutex(&name)
        .lock_timeout(Duration::from_secs(6))
        .lock()
        .await;
    let got = got.expect("the advisory waiter was stranded behind the hung session");
    got.release().await.unwrap();
    drop(hung);
    for locker in [hung_side, lease, advisory] {
        locker.close().await;
    }
}

/// A lease-mode `force_release` of a lock held by an advisory-mode holder expires the lease in
/// place: an advisory-mode contender then ends the holder's session and is granted.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_lease_mode_force_release_does_not_strand_advisory_waiters() {
    let Some(url) = common::url_or_skip() else {
        return;
    };
    let hung_side = locker(&url, PostgresMode::Advisory).await;
    let lease = locker(&url, PostgresMode::Lease).await;
    let advisory = locker(&url, PostgresMode::Advisory).await;
    let name = format!("mixed-force-{}", ulid::Ulid::generate());
    let hung = hung_side
        .mutex(&name)
        .ttl(Duration::from_secs(30))
        .lock()
        .await
        .unwrap();
    assert_eq!(lease.force_release(&name).await.unwrap(), 1);
    let got = advisory
        .mutex(&name)
        .lock_timeout(Duration::from_secs(6))
        .lock()
        .await;
    let got = got.expect("the advisory waiter was stranded after a lease-mode force_release");
    got.release().await.unwrap();
    drop(hung);
    for locker in [hung_side, lease, advisory] {
        locker.close().await;
    }
}
