//! The revision-ordered queue, through the `Backend` operations directly, against the cluster
//! named by `LOCK_TEST_ETCD_ENDPOINTS`: a release wakes only the waiter right behind it, and
//! tokens grow with the order of grants, not the order keys were queued.

use lock_core::{
    AcquireRequest, Acquired, Backend, FencingToken, LeaseId, LockKey, LockKind, Mode,
};
use lock_etcd::{Etcd, EtcdConfig};
use lock_testkit::require_servers;
use std::sync::Arc;
use std::time::Duration;

async fn backend(test: &str) -> Option<Etcd> {
    let reason = match std::env::var("LOCK_TEST_ETCD_ENDPOINTS") {
        Ok(endpoints) => {
            let prefix = format!("/lock-test-queue/{}/", ulid::Ulid::generate());
            let config = EtcdConfig::new(endpoints.split(',').map(str::trim)).with_prefix(prefix);
            match Etcd::connect(config).await {
                Ok(etcd) => return Some(etcd),
                Err(e) => format!("etcd at {endpoints} unreachable: {e}"),
            }
        }
        Err(_) => "LOCK_TEST_ETCD_ENDPOINTS is not set".to_owned(),
    };
    assert!(
        !require_servers(),
        "{test}: server required (LOCK_TEST_REQUIRE_SERVERS=1) but missing: {reason}"
    );
    println!("skipped {test}: {reason}");
    None
}

fn request(key: &LockKey, mode: Mode, limit: u32, wait: bool) -> AcquireRequest {
    let mut request = AcquireRequest::new(
        key.clone(),
        LeaseId::generate(),
        Arc::from("queue-test"),
        mode,
        1,
        limit,
        Duration::from_secs(10),
        Arc::default(),
    );
    request.claim = wait.then_some(Duration::from_secs(5));
    request
}

async fn granted(etcd: &Etcd, request: &AcquireRequest) -> FencingToken {
    match etcd.acquire(request).await.unwrap() {
        Acquired::Granted { token } => token,
        other => panic!("expected a grant, got {other:?}"),
    }
}

async fn busy(etcd: &Etcd, request: &AcquireRequest) {
    match etcd.acquire(request).await.unwrap() {
        Acquired::Busy { .. } => {}
        other => panic!("expected busy, got {other:?}"),
    }
}

/// Three waiters queue behind a holder. The holder's release signals the first waiter only;
/// the first waiter's grant signals the second (its predecessor changed), never the third.
#[tokio::test]
async fn release_wakes_only_the_next_waiter() {
    let Some(etcd) = backend("release_wakes_only_the_next_waiter").await else {
        return;
    };
    let key = LockKey::new("herd", LockKind::Mutex).unwrap();
    let holder = request(&key, Mode::Exclusive, 1, false);
    granted(&etcd, &holder).await;
    let waiters: Vec<_> = (0..3)
        .map(|_| request(&key, Mode::Exclusive, 1, true))
        .collect();
    let mut subscriptions = Vec::new();
    for waiter in &waiters {
        subscriptions.push(etcd.subscribe(waiter).await.unwrap());
        busy(&etcd, waiter).await; // queues the claim
    }
    // Let each follower see its own claim and settle on its predecessor.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let mut third = subscriptions.pop().unwrap();
    let mut second = subscriptions.pop().unwrap();
    let mut first = subscriptions.pop().unwrap();

    etcd.release(&key, holder.lease_id).await.unwrap();
    tokio::time::timeout(Duration::from_secs(5), first.changed())
        .await
        .expect("the first waiter was not signalled by the release");
    assert!(
        tokio::time::timeout(Duration::from_millis(1000), second.changed())
            .await
            .is_err(),
        "the second waiter was signalled by a release two places ahead"
    );
    granted(&etcd, &waiters[0]).await;
    tokio::time::timeout(Duration::from_secs(5), second.changed())
        .await
        .expect("the second waiter was not signalled when its predecessor was granted");
    assert!(
        tokio::time::timeout(Duration::from_millis(1000), third.changed())
            .await
            .is_err(),
        "the third waiter was woken by changes ahead of its predecessor"
    );
    busy(&etcd, &waiters[1]).await;
    for waiter in &waiters {
        let _ = etcd.release(&key, waiter.lease_id).await;
    }
}

/// Two readers queue behind a writer, the first reader's key created first; the second is
/// granted first. Its token must still be below the first reader's, granted later: tokens
/// follow grants, not queue positions (a key's create revision would get this wrong).
#[tokio::test]
async fn tokens_follow_grant_order_not_queue_order() {
    let Some(etcd) = backend("tokens_follow_grant_order_not_queue_order").await else {
        return;
    };
    let key = LockKey::new("readers", LockKind::RwMutex).unwrap();
    let writer = request(&key, Mode::Exclusive, u32::MAX, false);
    let writer_token = granted(&etcd, &writer).await;
    let early = request(&key, Mode::Shared, u32::MAX, true);
    let late = request(&key, Mode::Shared, u32::MAX, true);
    busy(&etcd, &early).await;
    busy(&etcd, &late).await;
    etcd.release(&key, writer.lease_id).await.unwrap();

    let late_token = granted(&etcd, &late).await;
    let early_token = granted(&etcd, &early).await;
    assert!(late_token > writer_token);
    assert!(
        early_token > late_token,
        "the later grant got the smaller token: {early_token} after {late_token}"
    );
    let holders = etcd.inspect("readers").await.unwrap();
    let tokens: Vec<_> = holders.iter().map(|h| h.token).collect();
    assert_eq!(
        tokens,
        vec![late_token, early_token],
        "inspect sorts by token"
    );
    etcd.release(&key, early.lease_id).await.unwrap();
    etcd.release(&key, late.lease_id).await.unwrap();
}
