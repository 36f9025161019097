//! Review design D4: `LOCK_POSTGRES_DURABILITY=relaxed` commits grants without a WAL flush.

mod common;

use lock_core::Locker;
use lock_postgres::{Postgres, PostgresDurability, PostgresMode};
use sqlx::Connection;
use std::time::Duration;

const CYCLES: i64 = 100;

/// WAL flushes and writes so far (`pg_stat_wal`).
async fn wal(url: &str) -> (i64, i64) {
    let mut conn = sqlx::PgConnection::connect(url).await.unwrap();
    sqlx::query_as("SELECT wal_sync, wal_write FROM pg_stat_wal")
        .fetch_one(&mut conn)
        .await
        .unwrap()
}

/// WAL flushes over `CYCLES` uncontended lock + release cycles.
async fn flushes(url: &str, mode: PostgresMode, durability: PostgresDurability) -> (i64, i64) {
    let mut config = common::config(url, mode);
    config.durability = durability;
    let backend = Postgres::connect(config).await.expect("connect");
    let locker = Locker::builder(backend)
        .request_timeout(Duration::from_secs(120))
        .build()
        .unwrap();
    let name = format!("durability-{}", ulid::Ulid::generate());
    for _ in 0..5 {
        let guard = locker.mutex(&name).lock().await.unwrap();
        guard.release().await.unwrap();
    }
    // Statistics reach pg_stat_wal at most once a second.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let before = wal(url).await;
    for _ in 0..CYCLES {
        let guard = locker.mutex(&name).lock().await.unwrap();
        guard.release().await.unwrap();
    }
    locker.close().await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let after = wal(url).await;
    (after.0 - before.0, after.1 - before.1)
}

/// Durable (the default): about one flush per grant. Relaxed: the grants leave the flushing to
/// the WAL writer (a few flushes a second at most, whatever the number of grants).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relaxed_grants_do_not_flush_the_wal() {
    let Some(url) = common::url_or_skip() else {
        return;
    };
    for mode in [PostgresMode::Advisory, PostgresMode::Lease] {
        let durable = flushes(&url, mode, PostgresDurability::Durable).await;
        let relaxed = flushes(&url, mode, PostgresDurability::Relaxed).await;
        println!(
            "{mode:?}: {CYCLES} cycles: durable {} syncs / {} writes, relaxed {} syncs / {} writes",
            durable.0, durable.1, relaxed.0, relaxed.1
        );
        assert!(
            durable.0 >= CYCLES * 9 / 10,
            "{mode:?}: durable grants flushed only {} times in {CYCLES} cycles",
            durable.0
        );
        assert!(
            relaxed.0 <= CYCLES / 5,
            "{mode:?}: relaxed grants flushed the WAL {} times in {CYCLES} cycles",
            relaxed.0
        );
    }
}
