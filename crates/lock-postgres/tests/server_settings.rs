//! Server settings a DBA may choose (review finding PG-4): the library must work whatever the
//! role's or database's defaults are.

mod common;

use lock_core::{Locker, RetryPolicy};
use lock_postgres::{Postgres, PostgresMode};
use std::time::Duration;

/// `url` with a server setting given as a connection option (`-c name=value`).
fn with_setting(url: &str, setting: &str) -> String {
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}options=-c%20{}", setting.replace('=', "%3D"))
}

/// With `default_transaction_isolation = serializable` on the session, contended `lock()`
/// calls are granted, never failed with a serialization error counted as an unavailable
/// backend: six clients, thirty cycles each, one attempt allowed per failure.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_serializable_default_isolation_does_not_fail_contention() {
    let Some(url) = common::url_or_skip() else {
        return;
    };
    let url = with_setting(&url, "default_transaction_isolation=serializable");
    let one_try = RetryPolicy {
        max_attempts: 1,
        ..RetryPolicy::default()
    };
    for mode in [PostgresMode::Advisory, PostgresMode::Lease] {
        let name = format!("isolation-{mode:?}-{}", ulid::Ulid::generate());
        let mut tasks = Vec::new();
        for _ in 0..6 {
            let backend = Postgres::connect(common::config(&url, mode))
                .await
                .expect("connect");
            let locker = Locker::builder(backend).retry(one_try).build().unwrap();
            let mutex = locker.mutex(&name).lock_timeout(Duration::from_secs(60));
            tasks.push(tokio::spawn(async move {
                let mut failures = Vec::new();
                for _ in 0..30 {
                    match mutex.lock().await {
                        Ok(guard) => guard.release().await.unwrap(),
                        Err(e) => failures.push(format!(
                            "{e:#}: {:?}",
                            std::error::Error::source(&e).map(ToString::to_string)
                        )),
                    }
                }
                locker.close().await;
                failures
            }));
        }
        let mut failures = Vec::new();
        for task in tasks {
            failures.extend(task.await.unwrap());
        }
        assert!(
            failures.is_empty(),
            "{mode:?}: {} of 180 lock() calls failed, e.g. {:?}",
            failures.len(),
            failures.first()
        );
    }
}

/// With a `statement_timeout` (200 ms) shorter than the server-side waits, a contended
/// `lock()` still waits and is granted when the holder releases 2 s later, in both modes
/// (review finding PG-3).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_short_statement_timeout_does_not_fail_waits() {
    let Some(url) = common::url_or_skip() else {
        return;
    };
    let url = with_setting(&url, "statement_timeout=200");
    for mode in [PostgresMode::Advisory, PostgresMode::Lease] {
        let name = format!("statement-timeout-{mode:?}-{}", ulid::Ulid::generate());
        let connect = || async {
            Locker::with_backend(
                Postgres::connect(common::config(&url, mode))
                    .await
                    .expect("connect"),
            )
        };
        let (a, b) = (connect().await, connect().await);
        let holder = a
            .mutex(&name)
            .ttl(Duration::from_secs(30))
            .lock()
            .await
            .unwrap();
        let waiter = b.mutex(&name).lock_timeout(Duration::from_secs(20));
        let wait = tokio::spawn(async move { waiter.lock().await });
        tokio::time::sleep(Duration::from_secs(2)).await;
        holder.release().await.unwrap();
        let granted = wait.await.unwrap();
        assert!(granted.is_ok(), "{mode:?}: the waiter failed: {granted:?}");
        granted.unwrap().release().await.unwrap();
        a.close().await;
        b.close().await;
    }
}

/// With `idle_session_timeout` (2 s) set, an advisory-mode holder whose dedicated session sits
/// idle while it holds the lock is not cut off: an auto-extended guard (TTL 3 s) is still held
/// after 8 s (review finding PG-2). Lease mode has no dedicated session and runs as a control.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_idle_session_timeout_does_not_lose_held_locks() {
    let Some(url) = common::url_or_skip() else {
        return;
    };
    let url = with_setting(&url, "idle_session_timeout=2000");
    for mode in [PostgresMode::Advisory, PostgresMode::Lease] {
        let name = format!("idle-session-{mode:?}-{}", ulid::Ulid::generate());
        let locker = Locker::with_backend(
            Postgres::connect(common::config(&url, mode))
                .await
                .expect("connect"),
        );
        let guard = locker
            .mutex(&name)
            .ttl(Duration::from_secs(3))
            .auto_extend(true)
            .lock()
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_secs(8)).await;
        assert!(
            !guard.is_lost(),
            "{mode:?}: the held lock was lost to the idle timeout"
        );
        guard.release().await.unwrap();
        locker.close().await;
    }
}
