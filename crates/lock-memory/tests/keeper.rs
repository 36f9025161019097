//! The auto-extension keeper and TTLs on tokio's clock, on the memory backend.
//!
//! `cut` makes every call through a [`Faults`] wrapper fail as if the network were cut, while
//! the leases live on in the store: this shows that a holder is declared lost *before* its
//! lease could expire on the backend.

use lock_core::{Error, Locker};
use lock_memory::Memory;
use lock_testkit::faults::{Fault, Faults, Op};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

/// Every later call but subscriptions fails, until `faults.clear()`.
fn cut(faults: &Faults) {
    for op in [
        Op::Acquire,
        Op::Release,
        Op::Extend,
        Op::Inspect,
        Op::ForceRelease,
    ] {
        faults.always(op, Fault::Fail);
    }
}

#[tokio::test(start_paused = true)]
async fn cut_off_holder_is_lost_before_its_lease_expires() {
    let store = Memory::new();
    let faults = Faults::wrap(store.clone());
    let locker = Locker::with_backend(faults.clone());
    let observer = Locker::with_backend(store.clone());
    let calls = Arc::new(AtomicU32::new(0));
    let counter = calls.clone();
    let guard = locker
        .mutex("job")
        .ttl(Duration::from_secs(3))
        .auto_extend(true)
        .on_lost(move |_| {
            counter.fetch_add(1, Ordering::SeqCst);
        })
        .lock()
        .await
        .unwrap();
    // Healthy: extended well past the TTL.
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert!(!guard.is_lost());
    assert_eq!(observer.inspect("job").await.unwrap().len(), 1);

    cut(&faults);
    let lost = guard.lost();
    tokio::time::timeout(Duration::from_secs(3), lost)
        .await
        .expect("declared lost within one TTL");
    // At the moment it is declared lost, the store still has the lease: the loss was declared
    // before the backend could expire it.
    assert_eq!(
        observer.inspect("job").await.unwrap().len(),
        1,
        "declared lost only after the lease had expired"
    );
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(observer.inspect("job").await.unwrap().is_empty());
    assert_eq!(
        calls.load(Ordering::SeqCst),
        1,
        "on_lost ran more than once"
    );
    faults.clear();
    assert!(matches!(guard.release().await, Err(Error::Lost { .. })));
}

#[tokio::test(start_paused = true)]
async fn transient_errors_are_retried_inside_the_window() {
    let store = Memory::new();
    let faults = Faults::wrap(store.clone());
    let locker = Locker::with_backend(faults.clone());
    let guard = locker
        .mutex("job")
        .ttl(Duration::from_secs(6))
        .auto_extend(true)
        .lock()
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(2) + Duration::from_millis(100)).await;
    // An outage shorter than the remaining validity is ridden out.
    cut(&faults);
    tokio::time::sleep(Duration::from_secs(2)).await;
    faults.clear();
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert!(!guard.is_lost(), "a short outage must not lose the lock");
    guard.release().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn backend_errors_end_acquisition_after_max_attempts() {
    let faults = Faults::wrap(Memory::new());
    cut(&faults);
    let locker = Locker::with_backend(faults);
    match locker.mutex("job").lock().await {
        Err(Error::ProviderUnavailable { source, .. }) => {
            assert!(source.to_string().contains("injected fault"), "{source}")
        }
        other => panic!("expected ProviderUnavailable, got {other:?}"),
    }
}

#[tokio::test(start_paused = true)]
async fn ttl_runs_on_tokio_time() {
    let store = Memory::new();
    let a = Locker::with_backend(store.clone());
    let b = Locker::with_backend(store);
    std::mem::forget(
        a.mutex("job")
            .ttl(Duration::from_secs(30))
            .lock()
            .await
            .unwrap(),
    );
    tokio::time::sleep(Duration::from_secs(29)).await;
    assert!(b.mutex("job").try_lock().await.unwrap().is_none());
    tokio::time::sleep(Duration::from_secs(2)).await;
    let guard = b.mutex("job").try_lock().await.unwrap().expect("expired");
    guard.release().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn close_releases_what_the_locker_holds() {
    let store = Memory::new();
    let a = Locker::with_backend(store.clone());
    let b = Locker::with_backend(store);
    let m = a.mutex("m").auto_extend(true).lock().await.unwrap();
    let s = a.semaphore("s", 3).acquire(2).await.unwrap();
    a.close().await;
    assert!(b.inspect("m").await.unwrap().is_empty());
    assert!(b.inspect("s").await.unwrap().is_empty());
    assert!(matches!(m.release().await, Err(Error::NotHeld { .. })));
    drop(s);
}
