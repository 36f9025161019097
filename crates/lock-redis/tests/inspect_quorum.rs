//! Review finding 10: inspect and `Semaphore::available` count a lease only when it is on as
//! many instances as a grant of its kind needs: a semaphore of limit 2 on five instances needs
//! four, so a partial grant on three (being rolled back) is not a holder.

mod support;

use lock_core::{AcquireRequest, Acquired, Backend, LeaseId, LockKey, LockKind, Locker, Metadata};
use std::sync::Arc;
use std::time::Duration;
use support::{Servers, backend, prefix};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partial_semaphore_grant_is_not_a_holder() {
    let Some(servers) = Servers::start(5, &[]).await else {
        return;
    };
    let prefix = prefix();
    let name = "permits";
    let lease = LeaseId::generate();
    let request = AcquireRequest::new(
        LockKey::new(name, LockKind::Semaphore).unwrap(),
        lease,
        Arc::from("partial"),
        lock_core::Mode::Shared,
        1,
        2,
        Duration::from_secs(30),
        Arc::new(Metadata::new()),
    );
    // The same lease on three of the five instances: a majority, but not the four a grant of a
    // semaphore of limit 2 needs.
    for i in 0..3 {
        let single = backend(&[servers.url(i)], &prefix).await;
        let granted = single.acquire(&request).await.unwrap();
        assert!(matches!(granted, Acquired::Granted { .. }), "{granted:?}");
    }
    let redlock = backend(&servers.urls(), &prefix).await;
    let holders = redlock.inspect(name).await.unwrap();
    assert!(holders.is_empty(), "a partial grant counted: {holders:?}");
    let locker = Locker::with_backend(redlock);
    assert_eq!(locker.semaphore(name, 2).available().await.unwrap(), 2);
    // On a fourth instance it is a holder.
    let single = backend(&[servers.url(3)], &prefix).await;
    let granted = single.acquire(&request).await.unwrap();
    assert!(matches!(granted, Acquired::Granted { .. }), "{granted:?}");
    assert_eq!(locker.semaphore(name, 2).available().await.unwrap(), 1);
}
