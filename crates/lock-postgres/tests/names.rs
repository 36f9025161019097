//! Names PostgreSQL text cannot hold as they are (NUL) and the escape character itself, in
//! both modes, on the server of `LOCK_TEST_POSTGRES_URL`.

mod common;

use lock_core::RetryPolicy;
use lock_postgres::PostgresMode;
use lock_testkit::require_servers;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn nul_and_backslash_names_work_and_stay_distinct() {
    for mode in [PostgresMode::Advisory, PostgresMode::Lease] {
        let (a, b) = match common::lockers(mode).await {
            Ok(lockers) => lockers,
            Err(reason) if require_servers() => panic!("server required: {reason}"),
            Err(reason) => {
                println!("skipped: {reason}");
                return;
            }
        };
        let base = format!("names-{}-{mode}/", ulid::Ulid::generate());
        // "\0" and "\\0" would meet if the escaping were not reversible.
        let names = [
            format!("{base}nul\0byte"),
            format!("{base}nul\\0byte"),
            format!("{base}back\\slash"),
        ];
        let mut guards = Vec::new();
        for name in &names {
            let guard = a.mutex(name).lock().await.unwrap();
            let holders = b.inspect(name).await.unwrap();
            assert_eq!(holders.len(), 1, "{mode} {name:?}");
            assert_eq!(&holders[0].name, name);
            assert!(b.mutex(name).try_lock().await.unwrap().is_none());
            guards.push(guard);
        }
        // The waiter polls every 10 s: in lease mode only the NOTIFY (whose payload carries the
        // escaped name) can wake it in time; in advisory mode the server's lock queue does.
        let slow_poll = RetryPolicy {
            initial_delay: Duration::from_secs(10),
            max_delay: Duration::from_secs(10),
            ..RetryPolicy::default()
        };
        let waiter = tokio::spawn({
            let mutex = b
                .mutex(&names[1])
                .retry(slow_poll)
                .ttl(Duration::from_secs(30));
            async move { mutex.lock().await }
        });
        tokio::time::sleep(Duration::from_millis(300)).await;
        for guard in guards {
            guard.release().await.unwrap();
        }
        let next = tokio::time::timeout(Duration::from_secs(3), waiter)
            .await
            .unwrap_or_else(|_| panic!("{mode}: waiter not woken by the notification"))
            .unwrap()
            .unwrap();
        next.release().await.unwrap();
        assert_eq!(b.force_release(&names[0]).await.unwrap(), 0);
        a.close().await;
        b.close().await;
    }
}
