//! Review finding 11: the pub/sub connection is watched and re-established. After the server
//! kills it (`CLIENT KILL TYPE pubsub`), waiters are still woken by the release notification,
//! not only by the fallback poll (set to 20 s here, so only a notification wakes in time).

mod support;

use lock_core::{Locker, RetryPolicy};
use std::time::Duration;
use support::{Servers, backend, prefix};
use tokio::time::Instant;

async fn conn(url: &str) -> redis::aio::MultiplexedConnection {
    redis::Client::open(url)
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiters_are_woken_after_the_pubsub_connection_is_killed() {
    let Some(servers) = Servers::start(1, &[]).await else {
        return;
    };
    let prefix = prefix();
    let locker = Locker::builder(backend(&servers.urls(), &prefix).await)
        .retry(RetryPolicy {
            initial_delay: Duration::from_secs(20),
            max_delay: Duration::from_secs(20),
            ..RetryPolicy::default()
        })
        .build()
        .unwrap();
    let mut admin = conn(&servers.url(0)).await;
    let hex: String = "woken".bytes().map(|b| format!("{b:02x}")).collect();
    let claims = format!("{prefix}{{{hex}}}:mutex:claims");
    for round in 0..3 {
        let killed: i64 = redis::cmd("CLIENT")
            .arg("KILL")
            .arg("TYPE")
            .arg("pubsub")
            .query_async(&mut admin)
            .await
            .unwrap();
        assert!(killed >= 1, "round {round}: no pub/sub connection to kill");
        // The listener notices and subscribes again.
        let back = lock_testkit::eventually(Duration::from_secs(5), || {
            let mut admin = admin.clone();
            async move {
                let patterns: i64 = redis::cmd("PUBSUB")
                    .arg("NUMPAT")
                    .query_async(&mut admin)
                    .await
                    .unwrap();
                patterns >= 1
            }
        })
        .await;
        assert!(back, "round {round}: the listener did not subscribe again");

        let held = locker.mutex("woken").lock().await.unwrap();
        let waiter = {
            let locker = locker.clone();
            tokio::spawn(async move {
                let guard = locker.mutex("woken").lock().await.unwrap();
                let at = Instant::now();
                guard.release().await.unwrap();
                at
            })
        };
        let waiting = lock_testkit::eventually(Duration::from_secs(5), || {
            let mut admin = admin.clone();
            let claims = claims.clone();
            async move {
                let n: i64 = redis::cmd("ZCARD")
                    .arg(&claims)
                    .query_async(&mut admin)
                    .await
                    .unwrap();
                n == 1
            }
        })
        .await;
        assert!(waiting, "round {round}: the waiter's claim never showed");
        tokio::time::sleep(Duration::from_millis(50)).await;
        let released = Instant::now();
        held.release().await.unwrap();
        let granted = waiter.await.unwrap();
        let after = granted.duration_since(released);
        assert!(
            after < Duration::from_millis(500),
            "round {round}: the waiter was granted {after:?} after the release"
        );
    }
    locker.close().await;
}
