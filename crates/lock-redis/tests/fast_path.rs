//! The mutex fast path (P2) mixed with the general path on one instance: the fast path never
//! grants while a lease or a claim of the general path exists, the general path counts a fast
//! lease as held, and tokens increase across both.

mod support;

use lock_core::{AcquireRequest, Acquired, Backend, FencingToken, LeaseId, Metadata};
use std::sync::Arc;
use std::time::Duration;
use support::{Servers, backend, prefix, request};

const NAME: &str = "mixed";

/// A mutex request that takes the fast path (no metadata).
fn fast(owner: &str) -> AcquireRequest {
    request(NAME, owner, LeaseId::generate(), Duration::from_secs(30))
}

/// A mutex request that takes the general path (it carries metadata).
fn general(owner: &str) -> AcquireRequest {
    let mut request = fast(owner);
    let mut metadata = Metadata::new();
    metadata.insert("job".into(), owner.into());
    request.metadata = Arc::new(metadata);
    request
}

fn waiting(mut request: AcquireRequest) -> AcquireRequest {
    request.claim = Some(Duration::from_secs(5));
    request
}

async fn grant(redis: &lock_redis::Redis, request: &AcquireRequest) -> FencingToken {
    match redis.acquire(request).await.unwrap() {
        Acquired::Granted { token } => token,
        other => panic!("{}: expected a grant, got {other:?}", request.owner),
    }
}

async fn busy(redis: &lock_redis::Redis, request: &AcquireRequest) {
    let answer = redis.acquire(request).await.unwrap();
    assert!(
        matches!(answer, Acquired::Busy { .. }),
        "{}: expected busy, got {answer:?}",
        request.owner
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fast_and_general_paths_exclude_each_other() {
    let Some(servers) = Servers::start(1, &[]).await else {
        return;
    };
    let redis = backend(&servers.urls(), &prefix()).await;

    // A general lease blocks the fast path.
    let a = general("a");
    let ta = grant(&redis, &a).await;
    busy(&redis, &fast("b-early")).await;
    redis.release(&a.key, a.lease_id).await.unwrap();

    // A fast lease blocks the general path, and shows in inspect.
    let b = fast("b");
    let tb = grant(&redis, &b).await;
    assert!(tb > ta, "{tb} <= {ta}");
    assert_eq!(grant(&redis, &b).await, tb, "a retry gets the same lease");
    let holders = redis.inspect(NAME).await.unwrap();
    assert_eq!(holders.len(), 1, "{holders:?}");
    assert_eq!((&*holders[0].owner, holders[0].token), ("b", tb));
    busy(&redis, &general("c-try")).await;
    // A waiter's claim (general path) while the fast lease is held...
    let c = waiting(general("c"));
    busy(&redis, &c).await;
    redis
        .extend(&b.key, b.lease_id, Duration::from_secs(20))
        .await
        .unwrap();
    redis.release(&b.key, b.lease_id).await.unwrap();
    assert!(
        redis.release(&b.key, b.lease_id).await.is_err(),
        "released twice"
    );
    // ...keeps the fast path closed after the release: the waiter goes first.
    busy(&redis, &fast("d")).await;
    let e = waiting(fast("e"));
    busy(&redis, &e).await;
    let tc = grant(&redis, &c).await;
    assert!(tc > tb, "{tc} <= {tb}");
    redis.release(&c.key, c.lease_id).await.unwrap();
    busy(&redis, &fast("f")).await;

    // Once nobody waits (e's claim withdrawn: a release of a claim is "not held"), the fast
    // path grants again, above every earlier token.
    redis.release(&e.key, e.lease_id).await.unwrap_err();
    let tg = grant(&redis, &fast("g")).await;
    assert!(tg > tc, "{tg} <= {tc}");
}
