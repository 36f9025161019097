//! Row clean-up: services that lock per entity create millions of lock names; once a lock has
//! no lease and no claim and the server clock has passed its last token, its row goes.

mod common;

use lock_core::Locker;
use lock_postgres::{Postgres, PostgresMode};
use sqlx::Connection;
use std::time::Duration;

const NAMES: usize = 10_000;
const TASKS: usize = 16;

async fn rows(conn: &mut sqlx::PgConnection, prefix: &str) -> (i64, i64, i64) {
    let text = format!(
        "SELECT (SELECT count(*) FROM {prefix}locks), (SELECT count(*) FROM {prefix}leases), \
         (SELECT count(*) FROM {prefix}claims)"
    );
    sqlx::query_as(sqlx::AssertSqlSafe(text))
        .fetch_one(conn)
        .await
        .unwrap()
}

/// Locks and releases 10,000 distinct names (in both modes, on tables of their own), then runs
/// the clean-up until it finds nothing more: the tables are back to their earlier row counts,
/// and a name locked again gets a token above its earlier one.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ten_thousand_released_names_leave_no_rows_after_the_clean_up() {
    let Some(url) = common::url_or_skip() else {
        return;
    };
    let mut admin = sqlx::PgConnection::connect(&url).await.unwrap();
    for mode in [PostgresMode::Advisory, PostgresMode::Lease] {
        let prefix = format!("lock_cleanup_{}_", mode.as_str());
        let mut config = common::config(&url, mode);
        config.table_prefix.clone_from(&prefix);
        config.max_connections = 8;
        let backend = Postgres::connect(config).await.expect("connect");
        // The backend's own background clean-up first runs a minute after connect; a slower
        // run than that may see some rows go early, and then only the end state is exact.
        let connected = std::time::Instant::now();
        let exact = || connected.elapsed() < Duration::from_secs(55);
        let locker = Locker::with_backend(backend.clone());
        // Rows left by earlier runs go first, so the counts below are this run's.
        while backend.clean_up().await.unwrap() > 0 {}
        // One lock stays held throughout: the clean-up never touches it.
        let kept_name = format!("kept-{}", ulid::Ulid::generate());
        let kept = locker
            .mutex(&kept_name)
            .ttl(Duration::from_secs(120))
            .lock()
            .await
            .unwrap();
        let before = rows(&mut admin, &prefix).await;
        let run = ulid::Ulid::generate();
        let mut tasks = Vec::new();
        for task in 0..TASKS {
            let locker = locker.clone();
            tasks.push(tokio::spawn(async move {
                let mut last = 0;
                for i in (task..NAMES).step_by(TASKS) {
                    let guard = locker
                        .mutex(format!("entity-{run}-{i}"))
                        .try_lock()
                        .await
                        .unwrap()
                        .expect("a fresh name is free");
                    last = guard.token().0;
                    guard.release().await.unwrap();
                }
                last
            }));
        }
        let mut last_token = 0;
        for task in tasks {
            last_token = last_token.max(task.await.unwrap());
        }
        let full = rows(&mut admin, &prefix).await;
        if exact() {
            assert_eq!(
                full.0,
                before.0 + i64::try_from(NAMES).unwrap(),
                "{mode:?}: one row per name before the clean-up"
            );
        }
        let mut removed = 0;
        loop {
            let n = backend.clean_up().await.unwrap();
            if n == 0 {
                break;
            }
            removed += n;
        }
        let after = rows(&mut admin, &prefix).await;
        if exact() {
            assert_eq!(removed, NAMES, "{mode:?}: rows removed");
        } else {
            println!("{mode:?}: over a minute: the background clean-up may have run too");
        }
        assert_eq!(after, before, "{mode:?}: row counts after the clean-up");
        // The held lock kept its row and its lease.
        assert_eq!(locker.inspect(&kept_name).await.unwrap().len(), 1);
        kept.release().await.unwrap();
        // A re-created row's first token exceeds every token handed out before.
        let again = locker
            .mutex(format!("entity-{run}-0"))
            .try_lock()
            .await
            .unwrap()
            .unwrap();
        assert!(again.token().0 > last_token, "{mode:?}: token re-issued");
        again.release().await.unwrap();
        locker.close().await;
    }
}
