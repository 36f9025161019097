//! Regressions of the review of the lease pool and session mode (issue 13, findings R-1 and
//! R-4; both seen failing by the reviewer's probes before the fixes). Each test starts its own
//! single-node etcd (as tests/proposals.rs does). R-3 (a session-mode grant lives as long as its
//! process) is what session mode gives up, stated in the crate README; R-5 (keep-alive
//! traffic) is a cost, stated there too.

mod support;

use lock_core::{Backend, Locker};
use lock_etcd::{EtcdConfig, LeaseMode};
use support::Node;
use std::time::{Duration, Instant};

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// two lockers over clones of one session-mode `Etcd` (clones share the leases). Closing
/// one revoked the session lease under the other's live guard, whose key vanished while the
/// guard still counted itself the holder, and a third client was granted. Only the last clone
/// closed may revoke.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closing_one_locker_keeps_anothers_grants_on_shared_leases() {
    let Some(node) = Node::start("probe-session-close").await else {
        return;
    };
    let etcd = node.backend(LeaseMode::Session).await;
    let a = Locker::with_backend(etcd.clone());
    let b = Locker::with_backend(etcd.clone());
    let other = Locker::with_backend(node.backend(LeaseMode::Pool).await);
    // Make the session lease for this TTL exist in `a` too (shared state anyway).
    a.mutex("warm")
        .ttl(Duration::from_secs(10))
        .lock()
        .await
        .unwrap()
        .release()
        .await
        .unwrap();
    let held = b
        .mutex("x")
        .ttl(Duration::from_secs(10))
        .auto_extend(false)
        .lock()
        .await
        .unwrap();
    a.close().await;
    let second = other
        .mutex("x")
        .ttl(Duration::from_secs(10))
        .try_lock()
        .await
        .unwrap();
    println!(
        "b's guard lost: {}, valid for another {:?}; other client granted: {}",
        held.is_lost(),
        held.valid_until()
            .saturating_duration_since(tokio::time::Instant::now()),
        second.is_some()
    );
    assert!(
        second.is_none() || held.is_lost(),
        "two holders: b's guard is not lost and another client was granted"
    );
    assert!(second.is_none(), "b's grant ended when a closed");
    held.release().await.unwrap();
    b.close().await;
    other.close().await;
    etcd.close().await; // the test's own clone: the last one
    assert_eq!(
        node.leases().await,
        0,
        "the last close revokes the shared leases"
    );
}

/// `Etcd::close` revoked pooled leases one after another, each bounded by the request
/// timeout: with the cluster stopped it took about (pooled leases) x timeout. Now they are
/// revoked concurrently, under one bound.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_with_the_cluster_stopped_is_bounded_once() {
    let Some(node) = Node::start("probe-close-stopped").await else {
        return;
    };
    let mut config = EtcdConfig::new([node.endpoint()]);
    config.request_timeout = Duration::from_secs(1);
    let etcd = node.backend_with(config).await;
    let locker = Locker::builder(etcd.clone())
        .request_timeout(Duration::from_secs(1))
        .build()
        .unwrap();
    // Several TTLs, a few misses each: the pools grow.
    for round in 0..4 {
        for secs in 1..=4u64 {
            let guards: Vec<_> = futures_join(&locker, secs, round + 1).await;
            for g in guards {
                g.release().await.unwrap();
            }
        }
    }
    tokio::time::sleep(ms(1500)).await;
    let pooled = node.leases().await;
    // The locker's clone closes first (not the last: nothing is revoked yet).
    locker.close().await;
    assert_eq!(node.leases().await, pooled);
    node.process.pause();
    let started = Instant::now();
    let closing = tokio::time::timeout(Duration::from_secs(120), etcd.close()).await;
    let took = started.elapsed();
    node.process.resume();
    let left = node.leases().await;
    println!(
        "{pooled} pooled leases; Etcd::close with the node stopped took {took:?} (finished: {}); \
         {left} leases left on the server afterwards",
        closing.is_ok()
    );
    assert!(took < Duration::from_secs(3), "Etcd::close took {took:?}");
}

async fn futures_join(locker: &Locker, secs: u64, n: u64) -> Vec<lock_core::Guard> {
    let mut guards = Vec::new();
    for i in 0..n {
        guards.push(
            locker
                .mutex(format!("p{secs}-{i}"))
                .ttl(Duration::from_secs(secs))
                .lock()
                .await
                .unwrap(),
        );
    }
    guards
}
