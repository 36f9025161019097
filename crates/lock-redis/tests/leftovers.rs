//! What a lock leaves behind on the server once it is idle (review finding 4): per-entity lock
//! names (an order id, a user id) must not make memory grow for days.

mod support;

use std::time::Duration;
use support::{Servers, locker, mutex_counter_key, prefix};

/// The longest the token counter may outlive the moment the server clock passed it.
const MARGIN: Duration = Duration::from_secs(60);

async fn pttl(url: &str, key: &str) -> i64 {
    let client = redis::Client::open(url).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    redis::cmd("PTTL")
        .arg(key)
        .query_async(&mut conn)
        .await
        .unwrap()
}

async fn keys(url: &str, pattern: &str) -> Vec<String> {
    let client = redis::Client::open(url).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    redis::cmd("KEYS")
        .arg(pattern)
        .query_async(&mut conn)
        .await
        .unwrap()
}

async fn del(url: &str, key: &str) {
    let client = redis::Client::open(url).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let _: i64 = redis::cmd("DEL")
        .arg(key)
        .query_async(&mut conn)
        .await
        .unwrap();
}

/// After a release, the lease set is gone and the token counter expires within the margin of
/// the server clock passing it; tokens keep increasing when the counter is gone.
#[tokio::test]
async fn an_idle_lock_leaves_only_a_short_lived_counter() {
    for nodes in [1, 3] {
        let Some(servers) = Servers::start(nodes, &[]).await else {
            return;
        };
        let prefix = prefix();
        let locker = locker(&servers.urls(), &prefix).await;
        let guard = locker.mutex("order-42").lock().await.unwrap();
        let first = guard.token();
        guard.release().await.unwrap();
        let counter = mutex_counter_key(&prefix, "order-42");
        for i in 0..nodes {
            let url = servers.url(i);
            let left = keys(&url, &format!("{prefix}*")).await;
            assert!(
                left.iter().all(|k| *k == counter),
                "{nodes} node(s): more than the counter left: {left:?}"
            );
            let ttl = pttl(&url, &counter).await;
            assert!(
                ttl > 0 && ttl <= MARGIN.as_millis() as i64 + 1000,
                "{nodes} node(s): the counter lives {ttl} ms after the last grant"
            );
            // Expired (as it will be once the clock passed it by the margin): tokens go on
            // from the server clock, above every earlier token.
            del(&url, &counter).await;
        }
        let guard = locker.mutex("order-42").lock().await.unwrap();
        assert!(guard.token() > first, "{} not above {first}", guard.token());
        guard.release().await.unwrap();
    }
}
