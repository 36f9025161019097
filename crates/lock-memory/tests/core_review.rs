//! Regression tests for the findings of the review of lock-core at e1d3299
//! (`shared/reviews/core.md`), on paused tokio time over the memory backend, with timing
//! faults from `lock_testkit::faults`. Each test is named after its finding.

mod common;

use common::{lockers, ms, secs};
use lock_core::{Error, Locker, RetryPolicy};
use lock_memory::Memory;
use lock_testkit::faults::{Fault, Faults, Op};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;

#[tokio::test(start_paused = true)]
async fn finding_1_shorter_extend_under_auto_extend_never_gives_two_holders() {
    let (a, _, b, _) = lockers();
    let guard = a
        .mutex("m")
        .ttl(secs(30))
        .auto_extend(true)
        .lock()
        .await
        .unwrap();
    guard.extend(secs(3)).await.unwrap();
    tokio::time::sleep(secs(5)).await;
    assert!(!guard.is_lost());
    assert!(
        b.mutex("m").try_lock().await.unwrap().is_none(),
        "two holders: the keeper slept its old interval"
    );
    // And the keeper stays on the new TTL for good.
    tokio::time::sleep(secs(60)).await;
    assert!(!guard.is_lost());
    assert!(b.mutex("m").try_lock().await.unwrap().is_none());
    guard.release().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn finding_1_loss_is_declared_before_the_new_valid_until() {
    let (a, faults, b, _) = lockers();
    let lost_at = Arc::new(Mutex::new(None));
    let guard = a
        .mutex("m")
        .ttl(secs(30))
        .auto_extend(true)
        .on_lost({
            let lost_at = Arc::clone(&lost_at);
            move |_| *lost_at.lock().unwrap() = Some(Instant::now())
        })
        .lock()
        .await
        .unwrap();
    let sent = Instant::now();
    guard.extend(secs(3)).await.unwrap();
    let until = guard.valid_until();
    faults.always(Op::Extend, Fault::Fail);
    guard.lost().await;
    let lost_at = lost_at.lock().unwrap().expect("on_lost ran");
    assert!(
        lost_at <= until,
        "lost at {lost_at:?}, valid until {until:?}"
    );
    assert!(lost_at < sent + secs(3));
    assert_eq!(
        b.inspect("m").await.unwrap().len(),
        1,
        "expired before lost"
    );
}

#[tokio::test(start_paused = true)]
async fn finding_1_interval_past_the_validity_window_is_rejected() {
    let (a, faults, _, _) = lockers();
    let result = a
        .mutex("m")
        .ttl(secs(10))
        .auto_extend(true)
        .extend_interval(ms(9990))
        .lock()
        .await;
    assert!(
        matches!(result, Err(Error::InvalidArgument { .. })),
        "{result:?}"
    );
    assert_eq!(faults.calls(Op::Acquire), 0);
}

#[tokio::test(start_paused = true)]
async fn finding_2_a_late_grant_is_never_a_valid_guard() {
    let (a, faults, b, _) = lockers();
    faults.nth(Op::Acquire, 1, Fault::DelayReply(ms(1500)));
    let tried = a.mutex("m").ttl(secs(1)).try_lock().await.unwrap();
    assert!(tried.is_none(), "{tried:?}");
    // The late lease was given back at once, not left to expire.
    assert!(b.inspect("m").await.unwrap().is_empty());

    faults.nth(Op::Acquire, 2, Fault::DelayReply(ms(1500)));
    let guard = a.mutex("m").ttl(secs(1)).lock().await.unwrap();
    assert_eq!(
        faults.calls(Op::Acquire),
        3,
        "waited on after the late grant"
    );
    assert!(!guard.is_lost());
    assert!(b.mutex("m").try_lock().await.unwrap().is_none());
    guard.release().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn finding_3_lock_timeout_bounds_a_hung_subscribe_and_release() {
    for op in [Op::Subscribe, Op::Release] {
        let (a, faults, b, _) = lockers();
        let holder = b.mutex("m").lock().await.unwrap();
        faults.always(op, Fault::Hang);
        let started = Instant::now();
        let result = tokio::time::timeout(secs(600), a.mutex("m").lock_timeout(secs(1)).lock())
            .await
            .unwrap_or_else(|_| panic!("{op:?} hangs: still waiting after 600 s"));
        assert!(
            matches!(result, Err(Error::NotAcquired { .. })),
            "{result:?}"
        );
        // The documented slack: a hung clean-up is waited for 100 ms, then left to run.
        let took = started.elapsed();
        assert!(took >= secs(1) && took <= ms(1250), "{op:?}: {took:?}");
        holder.release().await.unwrap();
    }
}

#[tokio::test(start_paused = true)]
async fn finding_4_try_lock_is_one_round_trip() {
    let (a, faults, _, _) = lockers();
    faults.always(Op::Acquire, Fault::Fail);
    let endless = RetryPolicy {
        max_attempts: 0,
        ..RetryPolicy::default()
    };
    let result = tokio::time::timeout(secs(3600), a.mutex("m").retry(endless).try_lock())
        .await
        .expect("try_lock retried for an hour");
    assert!(matches!(result, Err(Error::ProviderUnavailable { .. })));
    assert_eq!(faults.calls(Op::Acquire), 1);
    let result = a.mutex("m").lock_timeout(secs(2)).try_lock().await;
    assert!(
        matches!(result, Err(Error::ProviderUnavailable { .. })),
        "never NotAcquired: {result:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn finding_5_huge_durations_never_panic() {
    let (a, faults, b, _) = lockers();
    let result = a.mutex("m").ttl(Duration::MAX).lock().await;
    assert!(matches!(result, Err(Error::InvalidArgument { .. })));
    assert_eq!(faults.calls(Op::Acquire), 0, "sent before it was checked");
    let guard = a
        .mutex("m")
        .lock_timeout(Duration::MAX)
        .lock()
        .await
        .unwrap();
    assert!(matches!(
        guard.extend(Duration::MAX).await,
        Err(Error::InvalidArgument { .. })
    ));
    let huge = RetryPolicy {
        max_delay: Duration::MAX,
        ..RetryPolicy::default()
    };
    // A retry delay above an hour is rejected before sending; the longest accepted one is fine.
    let waiter = b.mutex("m").retry(huge).lock_timeout(secs(5)).lock().await;
    assert!(
        matches!(waiter, Err(Error::InvalidArgument { .. })),
        "{waiter:?}"
    );
    let longest = RetryPolicy {
        initial_delay: lock_core::MAX_RETRY_DELAY,
        max_delay: lock_core::MAX_RETRY_DELAY,
        ..RetryPolicy::default()
    };
    let waiter = b
        .mutex("m")
        .retry(longest)
        .lock_timeout(secs(5))
        .lock()
        .await;
    assert!(
        matches!(waiter, Err(Error::NotAcquired { .. })),
        "{waiter:?}"
    );
    assert!(matches!(
        Locker::builder(Memory::new())
            .default_ttl(Duration::MAX)
            .build(),
        Err(Error::InvalidArgument { .. })
    ));
    guard.release().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn finding_5_the_memory_store_saturates_huge_ttls() {
    use lock_core::{AcquireRequest, Acquired, Backend, LeaseId, LockKey, LockKind, Mode};
    let store = Memory::new();
    let key = LockKey::new("m", LockKind::Mutex).unwrap();
    let request = AcquireRequest::new(
        key.clone(),
        LeaseId::generate(),
        "owner".into(),
        Mode::Exclusive,
        1,
        1,
        Duration::MAX,
        Arc::default(),
    );
    assert!(matches!(
        store.acquire(&request).await.unwrap(),
        Acquired::Granted { .. }
    ));
    store
        .extend(&key, request.lease_id, Duration::MAX)
        .await
        .unwrap();
    assert_eq!(store.inspect("m").await.unwrap().len(), 1);
}

#[test]
fn finding_7_a_guard_dropped_on_another_thread_is_released() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let store = Memory::new();
    let locker = Locker::with_backend(store.clone());
    let guard = runtime.block_on(locker.mutex("m").lock()).unwrap();
    std::thread::spawn(move || drop(guard)).join().unwrap();
    let observer = Locker::with_backend(store);
    let released = runtime.block_on(async {
        lock_testkit::eventually(secs(5), || async {
            observer.inspect("m").await.unwrap().is_empty()
        })
        .await
    });
    assert!(
        released,
        "a guard dropped off the runtime's threads stayed held"
    );
}

#[test]
fn finding_7_close_before_the_end_of_block_on_leaves_nothing_held() {
    let store = Memory::new();
    for flavor in ["current_thread", "multi_thread"] {
        let runtime = match flavor {
            "current_thread" => tokio::runtime::Builder::new_current_thread(),
            _ => tokio::runtime::Builder::new_multi_thread(),
        }
        .enable_all()
        .build()
        .unwrap();
        let locker = Locker::with_backend(store.clone());
        runtime.block_on(async {
            let kept = locker.mutex("kept").lock().await.unwrap();
            let dropped = locker.mutex("dropped").lock().await.unwrap();
            drop(dropped);
            let report = locker.close().await;
            assert_eq!(report.not_released, 0);
            drop(kept);
        });
        drop(runtime);
        let check = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let observer = Locker::with_backend(store.clone());
        for name in ["kept", "dropped"] {
            let holders = check.block_on(observer.inspect(name)).unwrap();
            assert!(
                holders.is_empty(),
                "{flavor}: {name} left held: {holders:?}"
            );
        }
    }
}

#[tokio::test(start_paused = true)]
async fn finding_8_a_panicking_on_lost_still_completes_lost() {
    let (a, _, b, _) = lockers();
    let guard = a
        .mutex("m")
        .ttl(secs(3))
        .auto_extend(true)
        .on_lost(|_| panic!("a careless callback"))
        .lock()
        .await
        .unwrap();
    let lost = guard.lost();
    b.force_release("m").await.unwrap();
    tokio::time::timeout(secs(10), lost)
        .await
        .expect("lost() stayed pending after on_lost panicked");
    assert!(guard.is_lost());
}

#[tokio::test(start_paused = true)]
async fn finding_9_a_dropped_guard_is_never_declared_lost() {
    let (a, faults, b, _) = lockers();
    let calls = Arc::new(AtomicU32::new(0));
    let guard = a
        .mutex("m")
        .ttl(secs(3))
        .auto_extend(true)
        .on_lost({
            let calls = Arc::clone(&calls);
            move |_| {
                calls.fetch_add(1, Ordering::SeqCst);
            }
        })
        .lock()
        .await
        .unwrap();
    // The keeper's extension is in flight (applied, its reply slow) when the guard is dropped.
    faults.always(Op::Extend, Fault::DelayReply(secs(1)));
    tokio::time::sleep(ms(1100)).await;
    drop(guard);
    tokio::time::sleep(secs(10)).await;
    assert_eq!(
        calls.load(Ordering::SeqCst),
        0,
        "on_lost ran for a dropped guard"
    );
    assert!(b.inspect("m").await.unwrap().is_empty());
}

#[tokio::test(start_paused = true)]
async fn finding_10_a_late_keeper_reply_cannot_undo_a_shorter_manual_ttl() {
    let (a, faults, b, _) = lockers();
    let guard = a
        .mutex("m")
        .ttl(secs(30))
        .auto_extend(true)
        .lock()
        .await
        .unwrap();
    // The keeper extends at 10 s; the backend applies it at once, its reply takes 2 s.
    faults.nth(Op::Extend, 1, Fault::DelayReply(secs(2)));
    tokio::time::sleep(ms(10_500)).await;
    // Meanwhile the holder shortens the TTL to 3 s.
    guard.extend(secs(3)).await.unwrap();
    // Were the keeper's late confirmation to win, the guard would believe in 30 s while the
    // backend holds 3 s: at 15 s another holder would be granted.
    tokio::time::sleep(ms(4_500)).await;
    assert!(!guard.is_lost());
    assert!(
        b.mutex("m").try_lock().await.unwrap().is_none(),
        "two holders: the keeper's late reply overwrote the manual TTL"
    );
    guard.release().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn finding_12_without_auto_extend_lost_completes_at_valid_until() {
    let (a, _, _, _) = lockers();
    let guard = a.mutex("m").ttl(secs(10)).lock().await.unwrap();
    let until = guard.valid_until();
    guard.lost().await;
    assert_eq!(Instant::now(), until);
    assert!(guard.is_lost());
    // A confirmed extension moves the moment.
    let guard = a.mutex("n").ttl(secs(10)).lock().await.unwrap();
    let lost = tokio::spawn(guard.lost());
    tokio::time::sleep(secs(5)).await;
    guard.extend(secs(10)).await.unwrap();
    tokio::time::sleep(secs(8)).await;
    assert!(!lost.is_finished() && !guard.is_lost());
    lost.await.unwrap();
    assert_eq!(Instant::now(), guard.valid_until());
}

#[tokio::test(start_paused = true)]
async fn finding_14_close_is_bounded_refuses_new_acquisitions_and_reports() {
    let (a, faults, b, _) = lockers();
    let _m = a.mutex("m").lock().await.unwrap();
    let _s = a.semaphore("s", 3).acquire(2).await.unwrap();
    let busy = b.mutex("w").lock().await.unwrap();
    let waiter = tokio::spawn({
        let a = a.clone();
        async move { a.mutex("w").lock().await }
    });
    tokio::time::sleep(ms(100)).await;
    faults.nth(Op::Release, faults.calls(Op::Release) + 1, Fault::Hang);
    let started = Instant::now();
    let report = a.close().await;
    assert!(started.elapsed() <= lock_core::DEFAULT_REQUEST_TIMEOUT * 2);
    assert_eq!((report.released, report.not_released), (1, 1));
    assert!(matches!(a.mutex("x").try_lock().await, Err(Error::Closed)));
    // The wait in flight is granted after the close: it is refused and released.
    busy.release().await.unwrap();
    assert!(matches!(waiter.await.unwrap(), Err(Error::Closed)));
    assert!(
        lock_testkit::eventually(secs(5), || async {
            b.inspect("w").await.unwrap().is_empty()
        })
        .await
    );
}

/// Adopts a lease id it granted before without touching the store again, as a backend may do
/// when a retry finds its own earlier grant (etcd review E-1): the lease is not refreshed.
#[derive(Clone)]
struct AdoptWithoutRefresh {
    store: Memory,
    granted: Arc<Mutex<std::collections::HashMap<lock_core::LeaseId, lock_core::FencingToken>>>,
}

impl lock_core::Backend for AdoptWithoutRefresh {
    fn name(&self) -> &'static str {
        "memory"
    }
    async fn acquire(
        &self,
        request: &lock_core::AcquireRequest,
    ) -> lock_core::Result<lock_core::Acquired> {
        if let Some(token) = self.granted.lock().unwrap().get(&request.lease_id) {
            return Ok(lock_core::Acquired::Granted { token: *token });
        }
        let acquired = self.store.acquire(request).await?;
        if let lock_core::Acquired::Granted { token } = acquired {
            self.granted.lock().unwrap().insert(request.lease_id, token);
        }
        Ok(acquired)
    }
    async fn release(
        &self,
        key: &lock_core::LockKey,
        lease: lock_core::LeaseId,
    ) -> lock_core::Result<()> {
        self.store.release(key, lease).await
    }
    async fn extend(
        &self,
        key: &lock_core::LockKey,
        lease: lock_core::LeaseId,
        ttl: Duration,
    ) -> lock_core::Result<()> {
        self.store.extend(key, lease, ttl).await
    }
    async fn inspect(&self, name: &str) -> lock_core::Result<Vec<lock_core::LockInfo>> {
        self.store.inspect(name).await
    }
    async fn force_release(&self, name: &str) -> lock_core::Result<usize> {
        self.store.force_release(name).await
    }
    async fn subscribe(
        &self,
        request: &lock_core::AcquireRequest,
    ) -> lock_core::Result<lock_core::Subscription> {
        self.store.subscribe(request).await
    }
}

/// etcd review E-1, core part: a grant applied on the first attempt, its answer lost, and a
/// retry 2 s later answered with that same grant (not refreshed). The guard's validity counts
/// from the first attempt, so it is lost before the lease expires, never held past it.
#[tokio::test(start_paused = true)]
async fn a_grant_adopted_on_retry_counts_from_the_first_attempt() {
    use lock_core::Backend;
    let store = Memory::new();
    let adopting = AdoptWithoutRefresh {
        store: store.clone(),
        granted: Arc::default(),
    };
    let faults = Faults::wrap(adopting);
    let a = Locker::with_backend(faults.clone());
    let b = Locker::with_backend(store.clone());
    faults.nth(Op::Acquire, 1, Fault::ApplyThenFail);
    let slow_retry = RetryPolicy {
        initial_delay: secs(2),
        max_delay: secs(2),
        jitter: 0.0,
        ..RetryPolicy::default()
    };
    let guard = a
        .mutex("m")
        .ttl(secs(3))
        .retry(slow_retry)
        .lock()
        .await
        .unwrap();
    assert_eq!(faults.calls(Op::Acquire), 2);
    tokio::time::sleep(ms(1500)).await; // 3.5 s after the first attempt: the lease expired
    let other = b.mutex("m").try_lock().await.unwrap();
    assert!(
        guard.is_lost() || other.is_none(),
        "two holders: the adopted grant was trusted from the retry"
    );
    let _ = store.inspect("m").await;
}

/// The memory store adopts a retried grant: the retry is granted at once with the same token,
/// and the lease's expiry moves.
#[tokio::test(start_paused = true)]
async fn a_retry_after_an_applied_grant_is_granted_at_once() {
    let (a, faults, b, _) = lockers();
    faults.nth(Op::Acquire, 1, Fault::ApplyThenFail);
    let started = Instant::now();
    let guard = a.mutex("m").ttl(secs(30)).lock().await.unwrap();
    assert!(started.elapsed() < secs(1), "waited behind its own lease");
    let holders = b.inspect("m").await.unwrap();
    assert_eq!(holders.len(), 1);
    assert_eq!(holders[0].token, guard.token());
    guard.release().await.unwrap();
}

/// Locks need a tokio runtime: an acquisition polled by another executor is `Unsupported` at
/// once (the README says so), never a panic.
#[test]
fn an_acquisition_outside_a_tokio_runtime_is_unsupported() {
    use std::future::Future;
    use std::task::{Context, Poll, Waker};
    let locker = Locker::with_backend(Memory::new());
    let mutex = locker.mutex("m");
    let mut lock = std::pin::pin!(mutex.lock());
    let mut cx = Context::from_waker(Waker::noop());
    match lock.as_mut().poll(&mut cx) {
        Poll::Ready(Err(Error::Unsupported { message })) => {
            assert!(message.contains("tokio runtime"), "{message}")
        }
        Poll::Ready(other) => panic!("expected Unsupported, got {other:?}"),
        Poll::Pending => panic!("pending outside a runtime"),
    }
}
