//! The auto-extension keeper and TTLs on tokio's clock, on the memory backend.
//!
//! `CutOff` wraps the memory backend and can make every call fail as if the network were cut,
//! while the leases live on in the store: this shows that a holder is declared lost *before*
//! its lease could expire on the backend.

use lock_core::{
    AcquireRequest, Acquired, Backend, Error, LeaseId, LockInfo, LockKey, Locker, Result,
    Subscription,
};
use lock_memory::Memory;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::Duration;

#[derive(Clone)]
struct CutOff {
    store: Memory,
    cut: Arc<AtomicBool>,
}

impl CutOff {
    fn check(&self) -> Result<()> {
        if self.cut.load(Ordering::SeqCst) {
            Err(Error::unavailable(
                "memory",
                std::io::Error::other("cut off"),
            ))
        } else {
            Ok(())
        }
    }
}

impl Backend for CutOff {
    fn name(&self) -> &'static str {
        "memory"
    }
    async fn acquire(&self, request: &AcquireRequest) -> Result<Acquired> {
        self.check()?;
        self.store.acquire(request).await
    }
    async fn release(&self, key: &LockKey, lease: LeaseId) -> Result<()> {
        self.check()?;
        self.store.release(key, lease).await
    }
    async fn extend(&self, key: &LockKey, lease: LeaseId, ttl: Duration) -> Result<()> {
        self.check()?;
        self.store.extend(key, lease, ttl).await
    }
    async fn inspect(&self, name: &str) -> Result<Vec<LockInfo>> {
        self.check()?;
        self.store.inspect(name).await
    }
    async fn force_release(&self, name: &str) -> Result<usize> {
        self.check()?;
        self.store.force_release(name).await
    }
    async fn subscribe(&self, request: &AcquireRequest) -> Result<Subscription> {
        self.store.subscribe(request).await
    }
}

#[tokio::test(start_paused = true)]
async fn cut_off_holder_is_lost_before_its_lease_expires() {
    let store = Memory::new();
    let cut = Arc::new(AtomicBool::new(false));
    let locker = Locker::with_backend(CutOff {
        store: store.clone(),
        cut: cut.clone(),
    });
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

    cut.store(true, Ordering::SeqCst);
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
    cut.store(false, Ordering::SeqCst);
    assert!(matches!(guard.release().await, Err(Error::Lost { .. })));
}

#[tokio::test(start_paused = true)]
async fn transient_errors_are_retried_inside_the_window() {
    let store = Memory::new();
    let cut = Arc::new(AtomicBool::new(false));
    let locker = Locker::with_backend(CutOff {
        store: store.clone(),
        cut: cut.clone(),
    });
    let guard = locker
        .mutex("job")
        .ttl(Duration::from_secs(6))
        .auto_extend(true)
        .lock()
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(2) + Duration::from_millis(100)).await;
    // An outage shorter than the remaining validity is ridden out.
    cut.store(true, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_secs(2)).await;
    cut.store(false, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert!(!guard.is_lost(), "a short outage must not lose the lock");
    guard.release().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn backend_errors_end_acquisition_after_max_attempts() {
    let cut = Arc::new(AtomicBool::new(true));
    let locker = Locker::with_backend(CutOff {
        store: Memory::new(),
        cut,
    });
    match locker.mutex("job").lock().await {
        Err(Error::ProviderUnavailable { source, .. }) => {
            assert_eq!(source.to_string(), "cut off")
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
