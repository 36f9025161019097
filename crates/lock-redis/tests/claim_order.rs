//! Review finding 5: a Redlock roll-back turns the partial lease back into the waiter's claim,
//! keeping its place, instead of deleting it (which sent the waiter to the back of the queue
//! on the instances where it had been granted).

mod support;

use lock_core::{Acquired, Backend, LeaseId};
use std::time::Duration;
use support::{Servers, backend, prefix, request};

/// The waiting claims (lease ids, in order) of the mutex `name` on node `i`.
async fn claims_on(servers: &Servers, i: usize, prefix: &str, name: &str) -> Vec<String> {
    let hex: String = name.bytes().map(|b| format!("{b:02x}")).collect();
    let client = redis::Client::open(servers.url(i)).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    redis::cmd("ZRANGE")
        .arg(format!("{prefix}{{{hex}}}:mutex:claims"))
        .arg(0)
        .arg(-1)
        .query_async(&mut conn)
        .await
        .unwrap()
}

/// B holds nodes 1 and 2 of three; A's waiting request is granted on node 0 only, so it is
/// busy and rolled back there. A's claim must stay on node 0, ahead of a later waiter C's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn roll_back_keeps_the_waiters_place() {
    let Some(servers) = Servers::start(3, &[]).await else {
        return;
    };
    let prefix = prefix();
    let name = "order";
    let ttl = Duration::from_secs(30);
    for i in [1, 2] {
        let single = backend(&[servers.url(i)], &prefix).await;
        let granted = single
            .acquire(&request(name, "b", LeaseId::generate(), ttl))
            .await
            .unwrap();
        assert!(matches!(granted, Acquired::Granted { .. }), "{granted:?}");
    }
    let redlock = backend(&servers.urls(), &prefix).await;
    let a = LeaseId::generate();
    let mut waiting = request(name, "a", a, ttl);
    waiting.claim = Some(Duration::from_secs(10));
    let busy = redlock.acquire(&waiting).await.unwrap();
    assert!(matches!(busy, Acquired::Busy { .. }), "{busy:?}");
    // The roll-back on node 0 runs in the background: give it a moment.
    let ok = lock_testkit::eventually(Duration::from_secs(5), || async {
        claims_on(&servers, 0, &prefix, name).await == vec![a.to_ulid_string()]
    })
    .await;
    let on0 = claims_on(&servers, 0, &prefix, name).await;
    assert!(
        ok,
        "A's claim is not kept on node 0 after the roll-back: {on0:?}"
    );
    for i in [1, 2] {
        let on = claims_on(&servers, i, &prefix, name).await;
        assert_eq!(on, vec![a.to_ulid_string()], "node {i}");
    }
    // A later waiter queues behind A everywhere.
    let c = LeaseId::generate();
    let mut later = request(name, "c", c, ttl);
    later.claim = Some(Duration::from_secs(10));
    let busy = redlock.acquire(&later).await.unwrap();
    assert!(matches!(busy, Acquired::Busy { .. }), "{busy:?}");
    for i in 0..3 {
        let on = claims_on(&servers, i, &prefix, name).await;
        assert_eq!(on, vec![a.to_ulid_string(), c.to_ulid_string()], "node {i}");
    }
    redlock.close().await;
}
