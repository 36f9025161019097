//! Raft proposals per uncontended cycle, counted from etcd's own metrics
//! (`etcd_server_proposals_committed_total` on the client URL's `/metrics`), and no lease left
//! behind after `close`. Each test starts its own single-node etcd, so nothing else proposes
//! (no other client's leases expire and get revoked meanwhile).
//!
//! Needs the `etcd` binary (Debian: `etcd-server`). Without it a test is skipped with a printed
//! line, or fails when `LOCK_TEST_REQUIRE_SERVERS=1`.

mod support;

use lock_core::Locker;
use lock_etcd::LeaseMode;
use support::Node;
use std::time::Duration;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}


/// Counts one `lock()` + `release()` of an uncontended mutex: the proposals committed and the
/// leases granted meanwhile that still exist once the background refill settled (the pool's
/// replacement of the lease the grant took: a grant on the path would have been revoked by the
/// release, so it is not among them).
async fn one_cycle(node: &Node, locker: &Locker) -> (u64, u64) {
    let leases = node.lease_ids().await;
    let before = node.proposals().await;
    let guard = locker.mutex("m").lock().await.unwrap();
    guard.release().await.unwrap();
    // Let the background refill land, so it is counted in this window and not the next.
    tokio::time::sleep(ms(1000)).await;
    let proposals = node.proposals().await - before;
    let refilled = node.lease_ids().await.difference(&leases).count() as u64;
    (proposals, refilled)
}

/// Pool mode (the default): the grant is one transaction on a pre-granted lease and the release
/// one revoke, so two proposals on the critical path; the pool's background refill adds one
/// lease grant per cycle, off the path (three in all).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_uncontended_cycle_makes_two_proposals_on_its_path_in_pool_mode() {
    let Some(node) =
        Node::start("an_uncontended_cycle_makes_two_proposals_on_its_path_in_pool_mode").await
    else {
        return;
    };
    let locker = Locker::with_backend(node.backend(LeaseMode::Pool).await);
    // Warm up: the pool for this TTL exists and is filled.
    for _ in 0..2 {
        locker
            .mutex("m")
            .lock()
            .await
            .unwrap()
            .release()
            .await
            .unwrap();
    }
    tokio::time::sleep(ms(1500)).await;
    for round in 0..5 {
        let (proposals, refilled) = one_cycle(&node, &locker).await;
        println!("pool round {round}: {proposals} proposals, {refilled} by the pool's refill");
        assert!(
            proposals - refilled.min(proposals) <= 2,
            "round {round}: {proposals} proposals, {refilled} of them background refills: more \
             than 2 on the critical path"
        );
        assert!(
            refilled <= 1,
            "round {round}: {refilled} leases refilled for one cycle"
        );
    }
    locker.close().await;
}

/// Session mode: the grant is one transaction on the session lease and the release one delete:
/// two proposals, nothing in the background.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_uncontended_cycle_makes_two_proposals_in_session_mode() {
    let Some(node) = Node::start("an_uncontended_cycle_makes_two_proposals_in_session_mode").await
    else {
        return;
    };
    let locker = Locker::with_backend(node.backend(LeaseMode::Session).await);
    locker
        .mutex("m")
        .lock()
        .await
        .unwrap()
        .release()
        .await
        .unwrap();
    for round in 0..5 {
        let (proposals, granted) = one_cycle(&node, &locker).await;
        println!("session round {round}: {proposals} proposals, {granted} leases granted");
        assert_eq!(granted, 0, "round {round}: a session cycle granted a lease");
        assert!(
            proposals <= 2,
            "round {round}: {proposals} proposals for one session-mode cycle"
        );
    }
    locker.close().await;
}

/// Uses pooled (or session) leases of two TTLs, a read lock, semaphore permits and a waiter's
/// claim, then closes: no lease is left on the server.
async fn use_then_close_leaves_no_lease(test: &str, lease: LeaseMode) {
    let Some(node) = Node::start(test).await else {
        return;
    };
    let locker = Locker::with_backend(node.backend(lease).await);
    for _ in 0..3 {
        locker
            .mutex("a")
            .lock()
            .await
            .unwrap()
            .release()
            .await
            .unwrap();
        let held = locker
            .mutex("b")
            .ttl(Duration::from_secs(7))
            .lock()
            .await
            .unwrap();
        let waiter = {
            let mutex = locker.mutex("b").lock_timeout(ms(300));
            tokio::spawn(async move { mutex.lock().await.map(|_| ()) })
        };
        let read = locker.rw_mutex("c").read().await.unwrap();
        let permits = locker.semaphore("d", 3).acquire(2).await.unwrap();
        assert!(waiter.await.unwrap().is_err(), "the waiter got a held lock");
        held.release().await.unwrap();
        read.release().await.unwrap();
        permits.release().await.unwrap();
    }
    // Leave one guard held: close releases it.
    let _kept = locker.mutex("e").lock().await.unwrap();
    tokio::time::sleep(ms(1000)).await;
    assert!(
        !node.lease_ids().await.is_empty(),
        "no pooled or session lease before close: the test checks nothing"
    );
    locker.close().await;
    let left = node.lease_ids().await;
    assert!(left.is_empty(), "leases left after close: {left:x?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_revokes_every_pooled_lease() {
    use_then_close_leaves_no_lease("close_revokes_every_pooled_lease", LeaseMode::Pool).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_revokes_every_session_lease() {
    use_then_close_leaves_no_lease("close_revokes_every_session_lease", LeaseMode::Session).await;
}

/// The last handle dropped without `close`: the pooled leases are revoked all the same.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_the_backend_revokes_its_pooled_leases() {
    let Some(node) = Node::start("dropping_the_backend_revokes_its_pooled_leases").await else {
        return;
    };
    let etcd = node.backend(LeaseMode::Pool).await;
    let locker = Locker::with_backend(etcd);
    for _ in 0..3 {
        locker
            .mutex("a")
            .lock()
            .await
            .unwrap()
            .release()
            .await
            .unwrap();
    }
    tokio::time::sleep(ms(1000)).await;
    assert!(!node.lease_ids().await.is_empty(), "nothing pooled");
    drop(locker);
    let mut left = node.lease_ids().await;
    for _ in 0..50 {
        if left.is_empty() {
            break;
        }
        tokio::time::sleep(ms(100)).await;
        left = node.lease_ids().await;
    }
    assert!(
        left.is_empty(),
        "leases left after the backend was dropped: {left:x?}"
    );
}
