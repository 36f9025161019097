//! The wake-up paths under faults (from review round 4, where they passed as probes): the
//! listener after a server restart and after `CLIENT KILL`, the race between subscribing and
//! the first attempt, the `lock_timeout` bound with a hung or dead server. Each test starts its
//! own `redis-server` processes.

mod support;

use lock_core::{Error, Locker, RetryPolicy};
use std::time::Duration;
use support::{Servers, backend, default_backend, prefix};
use tokio::time::Instant;

/// Polls only every 20 s: within the claim refresh (1.7 s with a 30 s TTL) only a
/// notification wakes a waiter.
async fn slow_polling(backend: lock_redis::Redis) -> Locker {
    Locker::builder(backend)
        .retry(RetryPolicy {
            initial_delay: Duration::from_secs(20),
            max_delay: Duration::from_secs(20),
            ..RetryPolicy::default()
        })
        .build()
        .unwrap()
}

async fn admin(url: &str) -> redis::aio::MultiplexedConnection {
    redis::Client::open(url)
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}

async fn pubsub_clients(url: &str) -> usize {
    let Ok(client) = redis::Client::open(url) else {
        return 0;
    };
    let Ok(mut conn) = client.get_multiplexed_async_connection().await else {
        return 0;
    };
    let list: String = redis::cmd("CLIENT")
        .arg("LIST")
        .arg("TYPE")
        .arg("pubsub")
        .query_async(&mut conn)
        .await
        .unwrap_or_default();
    list.lines().filter(|l| !l.trim().is_empty()).count()
}

async fn claims(url: &str, prefix: &str, name: &str) -> i64 {
    let hex: String = name.bytes().map(|b| format!("{b:02x}")).collect();
    let key = format!("{prefix}{{{hex}}}:mutex:claims");
    let mut conn = admin(url).await;
    redis::cmd("ZCARD")
        .arg(&key)
        .query_async(&mut conn)
        .await
        .unwrap_or(0)
}

/// Holder in `holder`, waiter in `waiting`: the time from the release to the waiter's grant.
async fn hand_off(
    url: &str,
    prefix: &str,
    holder: &Locker,
    waiting: &Locker,
    name: &str,
) -> Duration {
    let held = holder
        .mutex(name)
        .ttl(Duration::from_secs(30))
        .lock()
        .await
        .unwrap();
    let waiter = {
        let (locker, name) = (waiting.clone(), name.to_owned());
        tokio::spawn(async move {
            let guard = locker
                .mutex(&name)
                .ttl(Duration::from_secs(30))
                .lock()
                .await
                .unwrap();
            let at = Instant::now();
            guard.release().await.unwrap();
            at
        })
    };
    let (url2, prefix2, name2) = (url.to_owned(), prefix.to_owned(), name.to_owned());
    assert!(
        lock_testkit::eventually(Duration::from_secs(5), move || {
            let (u, p, n) = (url2.clone(), prefix2.clone(), name2.clone());
            async move { claims(&u, &p, &n).await == 1 }
        })
        .await,
        "no claim"
    );
    tokio::time::sleep(Duration::from_millis(50)).await;
    let released = Instant::now();
    held.release().await.unwrap();
    waiter.await.unwrap().duration_since(released)
}

/// Confirms: after the server is killed and restarted (empty), both listeners subscribe again,
/// and a waiter in another locker is woken by the notification (not by the claim refresh).
/// Prints how long the re-subscription took after the server came back, for a short and a
/// 3 s outage.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listeners_subscribe_again_after_a_server_restart() {
    let Some(mut servers) = Servers::start(1, &[]).await else {
        return;
    };
    let prefix = prefix();
    let url = servers.url(0);
    let holder = slow_polling(default_backend(&servers.urls(), &prefix).await).await;
    let waiting = slow_polling(default_backend(&servers.urls(), &prefix).await).await;
    assert_eq!(pubsub_clients(&url).await, 2);
    for outage in [Duration::ZERO, Duration::from_secs(3)] {
        servers.kill(0);
        tokio::time::sleep(outage).await;
        servers.restart(0).await;
        let back = Instant::now();
        let u = url.clone();
        let subscribed = lock_testkit::eventually(Duration::from_secs(10), move || {
            let u = u.clone();
            async move { pubsub_clients(&u).await == 2 }
        })
        .await;
        let resubscribed = back.elapsed();
        assert!(subscribed, "the listeners did not subscribe again");
        let woken = hand_off(&url, &prefix, &holder, &waiting, "restart").await;
        println!(
            "outage {outage:?}: listeners subscribed again {resubscribed:?} after the server was \
             back; the waiter was granted {woken:?} after the release"
        );
        assert!(woken < Duration::from_millis(500), "{woken:?}");
    }
    holder.close().await;
    waiting.close().await;
}

/// Confirms: `CLIENT KILL TYPE normal` (the command connections) and `TYPE pubsub` during a
/// wait: the waiter gets no error and is woken by the notification.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_kill_during_a_wait_loses_no_wake_up() {
    let Some(servers) = Servers::start(1, &[]).await else {
        return;
    };
    let prefix = prefix();
    let url = servers.url(0);
    let holder = slow_polling(default_backend(&servers.urls(), &prefix).await).await;
    let waiting = slow_polling(default_backend(&servers.urls(), &prefix).await).await;
    for kind in ["normal", "pubsub", "normal"] {
        let held = holder
            .mutex("kill")
            .ttl(Duration::from_secs(30))
            .lock()
            .await
            .unwrap();
        let waiter = {
            let locker = waiting.clone();
            tokio::spawn(async move {
                let result = locker
                    .mutex("kill")
                    .ttl(Duration::from_secs(30))
                    .lock()
                    .await;
                let at = Instant::now();
                let result = match result {
                    Ok(g) => g.release().await.map_err(|e| format!("release: {e:#}")),
                    Err(e) => Err(format!("{e:#}")),
                };
                (result, at)
            })
        };
        let (u, p) = (url.clone(), prefix.clone());
        assert!(
            lock_testkit::eventually(Duration::from_secs(5), move || {
                let (u, p) = (u.clone(), p.clone());
                async move { claims(&u, &p, "kill").await == 1 }
            })
            .await
        );
        let mut conn = admin(&url).await;
        let killed: i64 = redis::cmd("CLIENT")
            .arg("KILL")
            .arg("TYPE")
            .arg(kind)
            .query_async(&mut conn)
            .await
            .unwrap();
        // Let the listener (if killed) subscribe again.
        let u = url.clone();
        lock_testkit::eventually(Duration::from_secs(5), move || {
            let u = u.clone();
            async move { pubsub_clients(&u).await == 2 }
        })
        .await;
        tokio::time::sleep(Duration::from_millis(100)).await;
        let released = Instant::now();
        let release = held.release().await;
        let (result, at) = waiter.await.unwrap();
        let after = at.duration_since(released);
        println!(
            "CLIENT KILL TYPE {kind} ({killed} killed): holder's release {:?}; waiter {result:?} \
             {after:?} after the release",
            release.map_err(|e| e.to_string())
        );
        assert!(result.is_ok());
        assert!(after < Duration::from_millis(500), "{after:?}");
    }
    holder.close().await;
    waiting.close().await;
}

/// Confirms: a release racing the waiter's first attempt and its subscription never leaves the
/// waiter asleep until the claim refresh: 150 hand-offs with the release 0-3 ms after the
/// waiter started, waiter in another locker and in the same locker.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_wake_up_is_lost_between_the_first_attempt_and_the_subscription() {
    let Some(servers) = Servers::start(1, &[]).await else {
        return;
    };
    let prefix = prefix();
    let holder = slow_polling(backend(&servers.urls(), &prefix).await).await;
    let other = slow_polling(backend(&servers.urls(), &prefix).await).await;
    for (label, waiting) in [("another locker", &other), ("the same locker", &holder)] {
        let mut worst = Duration::ZERO;
        let mut slow = 0;
        for i in 0..150u64 {
            let name = format!("race{i}");
            let held = holder
                .mutex(&name)
                .ttl(Duration::from_secs(30))
                .lock()
                .await
                .unwrap();
            let waiter = {
                let (locker, name) = (waiting.clone(), name.clone());
                tokio::spawn(async move {
                    let g = locker
                        .mutex(&name)
                        .ttl(Duration::from_secs(30))
                        .lock()
                        .await
                        .unwrap();
                    let at = Instant::now();
                    g.release().await.unwrap();
                    at
                })
            };
            tokio::time::sleep(Duration::from_micros((i % 7) * 500)).await;
            let released = Instant::now();
            held.release().await.unwrap();
            let at = waiter.await.unwrap();
            let after = at.saturating_duration_since(released);
            worst = worst.max(after);
            if after > Duration::from_millis(500) {
                slow += 1;
            }
        }
        println!("{label}: 150 racing hand-offs, worst {worst:?}, {slow} slower than 500 ms");
        assert_eq!(slow, 0, "{label}: {slow} wake-ups lost (worst {worst:?})");
    }
    holder.close().await;
    other.close().await;
}

/// Confirms: `lock_timeout(1 s)` is kept when the server hangs (SIGSTOP) mid-wait, and when it
/// dies (connection refused).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lock_timeout_is_kept_when_the_server_hangs_or_dies() {
    let Some(mut servers) = Servers::start(1, &[]).await else {
        return;
    };
    let prefix = prefix();
    let holder = default_backend(&servers.urls(), &prefix).await;
    let holder = Locker::with_backend(holder);
    let waiting = Locker::with_backend(default_backend(&servers.urls(), &prefix).await);
    for fault in ["hang", "die"] {
        let held = holder
            .mutex("bound")
            .ttl(Duration::from_secs(30))
            .lock()
            .await
            .unwrap();
        let started = Instant::now();
        let waiter = {
            let locker = waiting.clone();
            tokio::spawn(async move {
                locker
                    .mutex("bound")
                    .lock_timeout(Duration::from_secs(1))
                    .lock()
                    .await
                    .map(drop)
            })
        };
        tokio::time::sleep(Duration::from_millis(200)).await;
        match fault {
            "hang" => servers.pause(0),
            _ => servers.kill(0),
        }
        let result = waiter.await.unwrap();
        let took = started.elapsed();
        println!(
            "server {fault}s mid-wait: lock_timeout(1s) returned after {took:?}: {:?}",
            result.as_ref().map_err(|e| format!("{e:#}"))
        );
        match fault {
            "hang" => servers.resume(0),
            _ => servers.restart(0).await,
        }
        drop(held);
        assert!(
            matches!(
                result,
                Err(Error::NotAcquired { .. } | Error::ProviderUnavailable { .. })
            ),
            "{result:?}"
        );
        assert!(took < Duration::from_millis(1400), "{took:?}");
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let _ = tokio::time::timeout(Duration::from_secs(10), holder.close()).await;
    let _ = tokio::time::timeout(Duration::from_secs(10), waiting.close()).await;
}
