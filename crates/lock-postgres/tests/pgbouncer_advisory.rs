//! Review finding PG-7: advisory mode behind PgBouncer in transaction pooling mode is detected
//! and refused with a clear error, never silently run (where it would release other clients'
//! advisory locks and end PgBouncer's server connections).

mod common;

use lock_core::{Error, Locker};
use lock_postgres::{Postgres, PostgresMode};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

fn pgbouncer_url() -> Option<String> {
    match std::env::var("LOCK_TEST_PGBOUNCER_URL")
        .ok()
        .filter(|u| !u.trim().is_empty())
    {
        Some(url) => Some(url),
        None if lock_testkit::require_servers() => {
            panic!("server required: LOCK_TEST_PGBOUNCER_URL is not set")
        }
        None => {
            println!("skipped: LOCK_TEST_PGBOUNCER_URL is not set");
            None
        }
    }
}

fn names_pooling(e: &Error) -> bool {
    let text = format!("{e:#} {e:?}");
    text.contains("PgBouncer") && text.contains("transaction pooling")
}

/// Advisory mode through PgBouncer's transaction pooling is refused at connect (a
/// configuration error naming the cause); should a connection slip past the probe, every
/// operation errors clearly and two lockers never hold one name at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn advisory_mode_behind_transaction_pooling_is_refused() {
    let (Some(pooled), Some(direct)) = (pgbouncer_url(), common::url_or_skip()) else {
        return;
    };
    let mut lockers = Vec::new();
    let mut refused = 0;
    for _ in 0..2 {
        let mut config = common::config(&pooled, PostgresMode::Advisory);
        config.listen_url = Some(direct.clone());
        match Postgres::connect(config).await {
            Ok(backend) => lockers.push(Locker::with_backend(backend)),
            Err(e) => {
                assert!(
                    matches!(e, Error::Config { .. }) && names_pooling(&e),
                    "refused, but not clearly: {e:#}"
                );
                refused += 1;
            }
        }
    }
    println!("{refused} of 2 connections refused at connect");
    // Whatever got through: never two holders, and errors name the cause.
    let name = format!("bouncer-{}", ulid::Ulid::generate());
    let holding = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for locker in &lockers {
        let (locker, name, holding) = (locker.clone(), name.clone(), Arc::clone(&holding));
        tasks.push(tokio::spawn(async move {
            let mut errors = 0;
            for _ in 0..50 {
                match locker.mutex(&name).try_lock().await {
                    Ok(Some(guard)) => {
                        assert!(!holding.swap(true, Ordering::SeqCst), "double grant");
                        tokio::task::yield_now().await;
                        holding.store(false, Ordering::SeqCst);
                        let _ = guard.release().await;
                    }
                    Ok(None) => {}
                    Err(e) => {
                        assert!(names_pooling(&e), "an unclear error: {e:#}");
                        errors += 1;
                    }
                }
            }
            errors
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    assert_eq!(
        refused, 2,
        "advisory mode through transaction pooling was not refused"
    );
}

/// The guard every advisory statement on a dedicated session runs first: a statement that
/// lands on another server connection than the one the session was opened on takes nothing and
/// fails with an error naming PgBouncer transaction pooling.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_statement_on_another_server_connection_takes_nothing() {
    let Some(url) = common::url_or_skip() else {
        return;
    };
    // Creates the tables and functions.
    let backend = Postgres::connect(common::config(&url, PostgresMode::Advisory))
        .await
        .expect("connect");
    use sqlx::Connection;
    let mut conn = sqlx::PgConnection::connect(&url).await.unwrap();
    let err = sqlx::query(
        "SELECT pg_advisory_lock(n, 77) FROM lock_test_session_v1(pg_backend_pid() + 1, 7) n",
    )
    .execute(&mut conn)
    .await
    .unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("PgBouncer") && text.contains("transaction pooling"),
        "{text}"
    );
    let (held,): (i64,) = sqlx::query_as(
        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid()",
    )
    .fetch_one(&mut conn)
    .await
    .unwrap();
    assert_eq!(held, 0, "the statement took an advisory lock");
    drop(backend);
}
