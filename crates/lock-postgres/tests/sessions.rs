//! Review finding PG-6: advisory mode caps the server sessions it opens
//! (`LOCK_POSTGRES_MAX_SESSIONS`); acquisitions beyond the cap wait in the client.

mod common;

use lock_core::Locker;
use lock_postgres::{Postgres, PostgresMode};
use sqlx::Connection;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::Duration;

const CAP: u32 = 4;
const POOL: u32 = 2;
const WAITERS: usize = 24;

/// The server sessions of this library (its `application_name`) started since `since` (the
/// server clock when the test began): sessions of earlier test binaries still ending are not
/// counted.
async fn our_sessions(conn: &mut sqlx::PgConnection, since: f64) -> i64 {
    let (n,): (i64,) = sqlx::query_as(
        "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'lock-postgres' \
         AND extract(epoch FROM backend_start) >= $1",
    )
    .bind(since)
    .fetch_one(conn)
    .await
    .unwrap();
    n
}

/// More waiters than the cap on one hot lock: every waiter is granted in turn, and the
/// library's server sessions never exceed the cap plus the pool (plus the one LISTEN session).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_herd_on_one_lock_stays_within_the_session_cap() {
    let Some(url) = common::url_or_skip() else {
        return;
    };
    let since: f64 = {
        let mut conn = sqlx::PgConnection::connect(&url).await.unwrap();
        let (now,): (f64,) = sqlx::query_as("SELECT extract(epoch FROM clock_timestamp())::float8")
            .fetch_one(&mut conn)
            .await
            .unwrap();
        now
    };
    let mut config = common::config(&url, PostgresMode::Advisory);
    config.max_connections = POOL;
    config.max_sessions = CAP;
    let backend = Postgres::connect(config).await.expect("connect");
    let locker = Locker::builder(backend)
        .request_timeout(Duration::from_secs(20))
        .build()
        .unwrap();
    let name = format!("herd-{}", ulid::Ulid::generate());
    // The two sessions of the connect-time pooling probe (PG-7) are closed before `connect`
    // returns, but the server may list them for a few more milliseconds.
    {
        let mut conn = sqlx::PgConnection::connect(&url).await.unwrap();
        for _ in 0..100 {
            if our_sessions(&mut conn, since).await <= i64::from(POOL + 1) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let done = Arc::new(AtomicBool::new(false));
    let peak = Arc::new(AtomicI64::new(0));
    let sampler = {
        let (done, peak, url) = (Arc::clone(&done), Arc::clone(&peak), url.clone());
        tokio::spawn(async move {
            let mut conn = sqlx::PgConnection::connect(&url).await.unwrap();
            while !done.load(Ordering::SeqCst) {
                let n = our_sessions(&mut conn, since).await;
                peak.fetch_max(n, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
    };
    let holding = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for _ in 0..WAITERS {
        let (locker, name, holding) = (locker.clone(), name.clone(), Arc::clone(&holding));
        tasks.push(tokio::spawn(async move {
            let guard = locker
                .mutex(&name)
                .lock_timeout(Duration::from_secs(60))
                .lock()
                .await
                .expect("every waiter is granted in turn");
            assert!(!holding.swap(true, Ordering::SeqCst), "two holders at once");
            tokio::time::sleep(Duration::from_millis(20)).await;
            holding.store(false, Ordering::SeqCst);
            guard.release().await.unwrap();
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    done.store(true, Ordering::SeqCst);
    sampler.await.unwrap();
    let peak = peak.load(Ordering::SeqCst);
    println!("{WAITERS} waiters, cap {CAP}, pool {POOL}: at most {peak} server sessions");
    assert!(
        peak <= i64::from(CAP + POOL + 1),
        "{peak} server sessions for {WAITERS} waiters (cap {CAP} + pool {POOL} + LISTEN 1)"
    );
    locker.close().await;
}
