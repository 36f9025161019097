//! A proposal far ahead of an instance's own next token is not taken (review finding 2 of the
//! Redlock one-round grant): a client's remembered token of one lock (or a clock years ahead)
//! must not push other locks' counters years ahead, where the counter keys would stay (they
//! expire only once the server clock passes them).

mod support;

use lock_core::Locker;
use support::{Servers, backend, mutex_counter_key, prefix};

/// How long a counter key may live after a grant: the counter margin plus the accepted lead.
const MOST_MS: i64 = 15 * 60 * 1000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_far_ahead_token_of_one_lock_does_not_push_other_counters() {
    let Some(servers) = Servers::start(3, &[]).await else {
        return;
    };
    let prefix = prefix();
    let client = |i| redis::Client::open(servers.url(i)).unwrap();
    let mut conns = Vec::new();
    for i in 0..3 {
        conns.push(client(i).get_multiplexed_async_connection().await.unwrap());
    }
    // A lock whose counters are far ahead on every instance (left by an earlier client with a
    // clock decades ahead, say): its next grant is above them, and the client remembers it.
    let far: u64 = 4_000_000_000_000_000;
    for conn in &mut conns {
        let _: () = redis::cmd("SET")
            .arg(mutex_counter_key(&prefix, "ahead"))
            .arg(far)
            .query_async(conn)
            .await
            .unwrap();
    }
    let locker = Locker::with_backend(backend(&servers.urls(), &prefix).await);
    let guard = locker.mutex("ahead").lock().await.unwrap();
    assert!(guard.token().get() > far);
    guard.release().await.unwrap();

    // Other locks of the same client: their grants stay near the server clock, and their
    // counter keys expire soon (some of them share the client's memory of tokens with
    // "ahead").
    let mut last = 0;
    for i in 0..200 {
        let name = format!("other-{i}");
        let guard = locker.mutex(&name).lock().await.unwrap();
        let token = guard.token().get();
        guard.release().await.unwrap();
        assert!(token < far / 2, "{name}: token {token} follows the far-ahead lock");
        last = last.max(token);
        for conn in &mut conns {
            let ttl: i64 = redis::cmd("PTTL")
                .arg(mutex_counter_key(&prefix, &name))
                .query_async(conn)
                .await
                .unwrap();
            assert!(
                ttl <= MOST_MS,
                "{name}: its counter key lives {ttl} ms, over {MOST_MS} ms"
            );
        }
    }
    locker.close().await;
}
