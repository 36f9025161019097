//! Review finding 11: the pub/sub connection is watched and re-established. After the server
//! kills it (`CLIENT KILL TYPE pubsub`), or while it is half-open (a proxy that stopped
//! forwarding without closing it), waiters in another locker (another process) are still woken
//! by the release notification, not only by the fallback poll (set to 20 s here, so only a
//! notification wakes in time). And waiters in the releasing locker are woken locally (P4).

mod support;

use lock_core::{Locker, RetryPolicy};
use lock_testkit::TcpProxy;
use std::time::Duration;
use support::{Servers, backend, default_backend, prefix};
use tokio::time::Instant;

/// A locker on `urls` that polls only every 20 s: a waiter is woken in time only by a
/// notification.
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

/// The server's pub/sub connections, one `CLIENT LIST` line each.
async fn pubsub_list(admin: &mut redis::aio::MultiplexedConnection) -> Vec<String> {
    let list: String = redis::cmd("CLIENT")
        .arg("LIST")
        .arg("TYPE")
        .arg("pubsub")
        .query_async(admin)
        .await
        .unwrap();
    list.lines()
        .filter(|l| !l.trim().is_empty())
        .map(str::to_owned)
        .collect()
}

/// The number of pub/sub connections the server has.
async fn pubsub_clients(admin: &mut redis::aio::MultiplexedConnection) -> usize {
    pubsub_list(admin).await.len()
}

/// Waits until the mutex `name` under `prefix` has one waiting claim.
async fn claim_shows(admin: &redis::aio::MultiplexedConnection, prefix: &str, name: &str) -> bool {
    let hex: String = name.bytes().map(|b| format!("{b:02x}")).collect();
    let claims = format!("{prefix}{{{hex}}}:mutex:claims");
    lock_testkit::eventually(Duration::from_secs(5), || {
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
    .await
}

/// Spawns a waiter for the mutex `name` of `locker`; it returns when it was granted.
fn waiter(locker: &Locker, name: &'static str) -> tokio::task::JoinHandle<Instant> {
    let locker = locker.clone();
    tokio::spawn(async move {
        let guard = locker
            .mutex(name)
            .ttl(Duration::from_secs(30))
            .lock()
            .await
            .unwrap();
        let at = Instant::now();
        guard.release().await.unwrap();
        at
    })
}

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
    let locker = slow_polling(backend(&servers.urls(), &prefix).await).await;
    // The waiter is in another locker (another process): only pub/sub tells it.
    let other = slow_polling(backend(&servers.urls(), &prefix).await).await;
    let mut admin = conn(&servers.url(0)).await;
    // Where the server has RESP3, the listeners use it (messages pushed, P4 b).
    let listeners = pubsub_list(&mut admin).await;
    assert!(
        listeners.len() == 2 && listeners.iter().all(|l| l.contains(" resp=3")),
        "{listeners:?}"
    );
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
        // The listeners notice and subscribe again.
        let back = lock_testkit::eventually(Duration::from_secs(5), || {
            let mut admin = admin.clone();
            async move { pubsub_clients(&mut admin).await == 2 }
        })
        .await;
        assert!(back, "round {round}: the listener did not subscribe again");

        let held = locker.mutex("woken").lock().await.unwrap();
        let waiter = {
            let locker = other.clone();
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
    other.close().await;
}

/// A pub/sub connection that stays open but stopped forwarding (half-open: a proxy that lost
/// the flow) is found by the listener's PING within twice the round-trip timeout and replaced,
/// and a waiter in another locker is then woken by the release notification.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiter_behind_a_half_open_pubsub_connection_is_woken() {
    let Some(servers) = Servers::start(1, &[]).await else {
        return;
    };
    let prefix = prefix();
    let target = std::net::SocketAddr::from(([127, 0, 0, 1], servers.ports[0]));
    let proxy = TcpProxy::start(target).await.unwrap();
    let holder = slow_polling(backend(&servers.urls(), &prefix).await).await;
    // The waiter's connections go through the proxy: the first is its command connection
    // (`connect` pings), the second its pub/sub connection.
    let waiting =
        slow_polling(backend(&[format!("redis://{}", proxy.addr())], &prefix).await).await;
    let mut admin = conn(&servers.url(0)).await;
    let held = holder
        .mutex("half-open")
        .ttl(Duration::from_secs(30))
        .lock()
        .await
        .unwrap();
    let waiter = waiter(&waiting, "half-open");
    assert!(claim_shows(&admin, &prefix, "half-open").await, "no claim");
    let before = pubsub_clients(&mut admin).await;
    assert_eq!(before, 2, "expected the two lockers' pub/sub connections");

    proxy.blackhole(1);
    let blackholed = Instant::now();
    // The listener notices (PING every timeout, bounded by the timeout) and subscribes again
    // on a new connection; the server still has the old one, open.
    let noticed = lock_testkit::eventually(Duration::from_secs(5), || {
        let mut admin = admin.clone();
        async move { pubsub_clients(&mut admin).await == before + 1 }
    })
    .await;
    let took = blackholed.elapsed();
    assert!(
        noticed,
        "the listener did not replace its half-open pub/sub connection"
    );
    // 2 x the timeout (500 ms), plus the reconnect's pause and a margin for a loaded machine.
    assert!(
        took < Duration::from_millis(3000),
        "the half-open connection was replaced only after {took:?}"
    );
    tokio::time::sleep(Duration::from_millis(50)).await;
    let released = Instant::now();
    held.release().await.unwrap();
    let granted = waiter.await.unwrap();
    let after = granted.duration_since(released);
    assert!(
        after < Duration::from_millis(500),
        "the waiter was granted {after:?} after the release"
    );
    holder.close().await;
    waiting.close().await;
}

/// P4 (c): a release wakes the waiters of the same locker at once, without the server's
/// pub/sub. Here that pub/sub connection is half-open and the round-trip timeout the default
/// 2 s, so the listener would notice only seconds later, and the claim refresh comes only
/// every 1.7 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_release_wakes_waiters_of_the_same_locker_locally() {
    let Some(servers) = Servers::start(1, &[]).await else {
        return;
    };
    let prefix = prefix();
    let target = std::net::SocketAddr::from(([127, 0, 0, 1], servers.ports[0]));
    let proxy = TcpProxy::start(target).await.unwrap();
    let locker =
        slow_polling(default_backend(&[format!("redis://{}", proxy.addr())], &prefix).await).await;
    let admin = conn(&servers.url(0)).await;
    let held = locker
        .mutex("local")
        .ttl(Duration::from_secs(30))
        .lock()
        .await
        .unwrap();
    proxy.blackhole(1);
    let waiter = waiter(&locker, "local");
    assert!(claim_shows(&admin, &prefix, "local").await, "no claim");
    let released = Instant::now();
    held.release().await.unwrap();
    let granted = waiter.await.unwrap();
    let after = granted.duration_since(released);
    assert!(
        after < Duration::from_millis(500),
        "the waiter of the same locker was granted {after:?} after the release"
    );
    locker.close().await;
}

/// A server without RESP3 (as Redis 5: `HELLO` unknown, emulated by renaming it away) gets the
/// RESP2 pub/sub listener: a waiter in another locker is still woken by the notification.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiters_are_woken_by_a_server_without_resp3() {
    let Some(servers) = Servers::start(1, &["--rename-command", "HELLO", ""]).await else {
        return;
    };
    let prefix = prefix();
    let holder = slow_polling(backend(&servers.urls(), &prefix).await).await;
    let waiting = slow_polling(backend(&servers.urls(), &prefix).await).await;
    let mut admin = conn(&servers.url(0)).await;
    let listeners = pubsub_list(&mut admin).await;
    assert!(
        listeners.len() == 2 && listeners.iter().all(|l| l.contains(" resp=2")),
        "not subscribed over RESP2: {listeners:?}"
    );
    for round in 0..3 {
        let held = holder
            .mutex("resp2")
            .ttl(Duration::from_secs(30))
            .lock()
            .await
            .unwrap();
        let waiter = waiter(&waiting, "resp2");
        assert!(claim_shows(&admin, &prefix, "resp2").await, "no claim");
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
    holder.close().await;
    waiting.close().await;
}
