//! Regression tests for the adversarial review of the timing-fault change (99ee8b6..8350507),
//! one per probe. Each asserts the behaviour of DESIGN.md §4; all but four failed before the
//! fixes that followed the review.

mod common;

use common::{lockers, ms, secs};
use lock_core::{Error, Locker, RetryPolicy};
use lock_memory::Memory;
use lock_testkit::faults::{Fault, Faults, Op};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// A manual extend that hangs holds the extension turn; the keeper cannot declare the guard
/// lost at valid_until while it waits for the turn.
#[tokio::test(start_paused = true)]
async fn p1_hung_manual_extend_blocks_keeper_loss() {
    let (a, faults, b, _) = lockers();
    let guard = Arc::new(
        a.mutex("m")
            .ttl(secs(3))
            .auto_extend(true)
            .lock()
            .await
            .unwrap(),
    );
    let valid_until = guard.valid_until();
    faults.next(Op::Extend, Fault::Hang);
    tokio::time::sleep(ms(500)).await;
    let g = Arc::clone(&guard);
    let ext = tokio::spawn(async move { g.extend(secs(3)).await });
    tokio::time::sleep_until(valid_until + ms(300)).await; // t ~ 3.1 s; server expired at 3 s
    let lost = guard.is_lost();
    let other = b.mutex("m").try_lock().await.unwrap();
    eprintln!(
        "p1: t={:?} lost={lost} second holder={}",
        valid_until + ms(300),
        other.is_some()
    );
    assert!(
        lost || other.is_none(),
        "two holders: guard not lost past valid_until while B holds token {:?}",
        other.as_ref().map(|g| g.token())
    );
    let _ = ext.await;
}

/// The same with an extend whose reply is late: extend() returns Ok after the lease's
/// validity, the keeper is blocked meanwhile.
#[tokio::test(start_paused = true)]
async fn p1b_late_manual_extend_reply() {
    let (a, faults, b, _) = lockers();
    let guard = Arc::new(
        a.mutex("m")
            .ttl(secs(3))
            .auto_extend(true)
            .lock()
            .await
            .unwrap(),
    );
    faults.next(Op::Extend, Fault::DelayReply(secs(4)));
    tokio::time::sleep(ms(500)).await;
    let g = Arc::clone(&guard);
    let ext = tokio::spawn(async move { g.extend(secs(3)).await });
    tokio::time::sleep(secs(3)).await; // t = 3.5 s; server expiry 0.5 + 3 = 3.5 s
    tokio::time::sleep(ms(100)).await;
    let lost = guard.is_lost();
    let other = b.mutex("m").try_lock().await.unwrap();
    eprintln!("p1b: lost={lost} second holder={}", other.is_some());
    let res = ext.await.unwrap();
    eprintln!("p1b: extend returned {res:?} at {:?}", Instant::now());
    assert!(
        lost || other.is_none(),
        "two holders during a late extend reply"
    );
}

/// A manual extend to a shorter TTL whose reply is lost (applied on the backend) leaves the
/// guard believing its old, longer validity.
#[tokio::test(start_paused = true)]
async fn p2_failed_shorter_extend_keeps_old_validity() {
    for auto in [false, true] {
        let (a, faults, b, _) = lockers();
        let guard = a
            .mutex("m")
            .ttl(secs(30))
            .auto_extend(auto)
            .lock()
            .await
            .unwrap();
        faults.next(Op::Extend, Fault::ApplyThenFail);
        let r = guard.extend(secs(3)).await;
        assert!(matches!(r, Err(Error::ProviderUnavailable { .. })), "{r:?}");
        tokio::time::sleep(secs(4)).await;
        let lost = guard.is_lost();
        let other = b.mutex("m").try_lock().await.unwrap();
        eprintln!(
            "p2 auto={auto}: lost={lost} valid_until in {:?} second holder={}",
            guard
                .valid_until()
                .saturating_duration_since(Instant::now()),
            other.is_some()
        );
        assert!(lost || other.is_none(), "auto={auto}: two holders");
    }
}

/// Same as p2, but the manual extend is cancelled after the backend applied it.
#[tokio::test(start_paused = true)]
async fn p2b_cancelled_shorter_extend_keeps_old_validity() {
    let (a, faults, b, _) = lockers();
    let guard = a.mutex("m").ttl(secs(30)).lock().await.unwrap();
    faults.next(Op::Extend, Fault::DelayReply(secs(1)));
    let _ = tokio::time::timeout(ms(100), guard.extend(secs(3))).await;
    tokio::time::sleep(secs(4)).await;
    let lost = guard.is_lost();
    let other = b.mutex("m").try_lock().await.unwrap();
    eprintln!("p2b: lost={lost} second holder={}", other.is_some());
    assert!(
        lost || other.is_none(),
        "two holders after a cancelled extend"
    );
}

/// After close(), a guard still in the user's hands reports is_lost() == false while the lease
/// is gone.
#[tokio::test(start_paused = true)]
async fn p3_guard_after_close_not_lost() {
    let (a, _, b, _) = lockers();
    let guard = a
        .mutex("m")
        .ttl(secs(30))
        .auto_extend(true)
        .lock()
        .await
        .unwrap();
    let report = a.close().await;
    let other = b.mutex("m").try_lock().await.unwrap();
    eprintln!(
        "p3: report={report:?} lost={} second holder={}",
        guard.is_lost(),
        other.is_some()
    );
    assert!(
        guard.is_lost() || other.is_none(),
        "guard not lost after close"
    );
}

/// A lock() waiting when close() is called keeps waiting (and refreshing its claim).
#[tokio::test(start_paused = true)]
async fn p4_close_does_not_end_waiting_lock() {
    let (a, _, b, _) = lockers();
    let held = b
        .mutex("m")
        .ttl(secs(30))
        .auto_extend(true)
        .lock()
        .await
        .unwrap();
    let a2 = a.clone();
    let wait = tokio::spawn(async move { a2.mutex("m").lock().await.map(|_| ()) });
    tokio::time::sleep(secs(1)).await;
    a.close().await;
    tokio::time::sleep(secs(60)).await;
    let finished = wait.is_finished();
    eprintln!("p4: waiting lock finished 60 s after close: {finished}");
    drop(held);
    assert!(finished, "lock() still waiting 60 s after close()");
}

/// A TTL too short to ever be valid (validity 0): lock() spins acquire/release with no
/// backoff until its timeout instead of failing at once. Real time.
#[tokio::test]
async fn p5_tiny_ttl_spins() {
    let (a, faults, _, _) = lockers();
    let started = std::time::Instant::now();
    let r = a
        .mutex("m")
        .ttl(Duration::from_nanos(1))
        .lock_timeout(ms(300))
        .lock()
        .await;
    let calls = faults.calls(Op::Acquire);
    let releases = faults.calls(Op::Release);
    eprintln!(
        "p5: {r:?} after {:?}, {calls} acquires, {releases} releases",
        started.elapsed()
    );
    let t = a.mutex("m").ttl(Duration::from_nanos(1)).try_lock().await;
    eprintln!("p5: try_lock on a free lock: {t:?}");
    assert!(
        matches!(r, Err(Error::InvalidArgument { .. })),
        "a TTL with no validity is accepted: {r:?} after {calls} acquires"
    );
}

/// Huge retry delays: Delays::next_delay does mul_f64 on Duration::MAX.
#[tokio::test(start_paused = true)]
async fn p6_huge_retry_delay_panics_acquire() {
    let (a, faults, _, _) = lockers();
    let retry = RetryPolicy {
        max_attempts: 0,
        initial_delay: Duration::MAX,
        max_delay: Duration::MAX,
        jitter: 0.0,
    };
    faults.next(Op::Acquire, Fault::Fail);
    let m = a.mutex("m").retry(retry).lock_timeout(secs(5));
    let r = tokio::spawn(async move { m.lock().await.map(|_| ()) }).await;
    eprintln!("p6: {r:?}");
    assert!(
        matches!(r, Ok(Err(Error::InvalidArgument { .. }))),
        "lock() must reject a retry delay above an hour before sending: {r:?}"
    );
}

/// Same, in the keeper: the keeper task panics on its first transient error, so the guard is
/// never declared lost.
#[tokio::test(start_paused = true)]
async fn p6b_huge_retry_delay_kills_keeper() {
    let (a, faults, b, _) = lockers();
    // The longest delays a policy may have: the keeper must still declare the loss in time.
    let retry = RetryPolicy {
        max_attempts: 3,
        initial_delay: lock_core::MAX_RETRY_DELAY,
        max_delay: lock_core::MAX_RETRY_DELAY,
        jitter: 0.0,
    };
    let guard = a
        .mutex("m")
        .ttl(secs(3))
        .auto_extend(true)
        .retry(retry)
        .lock()
        .await
        .unwrap();
    faults.next(Op::Extend, Fault::Fail);
    tokio::time::sleep(secs(4)).await;
    let lost = guard.is_lost();
    let other = b.mutex("m").try_lock().await.unwrap();
    eprintln!("p6b: lost={lost} second holder={}", other.is_some());
    assert!(lost || other.is_none(), "two holders: keeper died");
}

/// A runtime stall (blocking code on the guard's runtime) past valid_until: a kept guard's
/// is_lost() only reads the flag the keeper sets, so it stays false. Real time.
#[tokio::test(flavor = "current_thread")]
async fn p7_kept_guard_is_lost_ignores_the_clock() {
    let (a, _, b, _) = lockers();
    let guard = a
        .mutex("m")
        .ttl(ms(300))
        .auto_extend(true)
        .lock()
        .await
        .unwrap();
    std::thread::sleep(ms(500)); // the keeper cannot run
    let past = Instant::now() >= guard.valid_until();
    let lost = guard.is_lost();
    let other = b.mutex("m").try_lock().await.unwrap();
    eprintln!(
        "p7: past valid_until={past} lost={lost} second holder={}",
        other.is_some()
    );
    assert!(!past || lost, "is_lost() false past valid_until");
}

/// try_lock whose grant reply comes after the request timeout: ProviderUnavailable, and the
/// applied grant is released in the background.
#[tokio::test(start_paused = true)]
async fn p8_try_lock_timed_out_grant_is_released() {
    let store = Memory::new();
    let faults = Faults::wrap(store.clone());
    let a = Locker::builder(faults.clone())
        .request_timeout(secs(1))
        .build()
        .unwrap();
    let b = Locker::with_backend(store);
    faults.next(Op::Acquire, Fault::DelayReply(secs(2)));
    let r = a.mutex("m").try_lock().await;
    assert!(matches!(r, Err(Error::ProviderUnavailable { .. })), "{r:?}");
    tokio::time::sleep(ms(10)).await;
    assert!(b.inspect("m").await.unwrap().is_empty(), "leaked grant");
}

/// lock_timeout(ZERO) on a free lock with a late grant: NotAcquired, nothing left held.
#[tokio::test(start_paused = true)]
async fn p9_zero_timeout_late_grant() {
    let (a, faults, b, _) = lockers();
    faults.next(Op::Acquire, Fault::DelayReply(secs(2)));
    let r = a
        .mutex("m")
        .ttl(secs(1))
        .lock_timeout(Duration::ZERO)
        .lock()
        .await;
    assert!(matches!(r, Err(Error::NotAcquired { .. })), "{r:?}");
    tokio::time::sleep(ms(10)).await;
    assert!(b.inspect("m").await.unwrap().is_empty());
}

/// Every hang is bounded: lock_timeout with hung acquire/subscribe; release, extend, inspect,
/// force_release, available, close with hung backend calls.
#[tokio::test(start_paused = true)]
async fn p10_hangs_are_bounded() {
    let store = Memory::new();
    let faults = Faults::wrap(store.clone());
    let a = Locker::builder(faults.clone())
        .request_timeout(secs(2))
        .build()
        .unwrap();
    let b = Locker::with_backend(store);
    let bound = secs(3);
    async fn within<T: std::fmt::Debug>(
        what: &str,
        d: Duration,
        f: impl std::future::Future<Output = T>,
    ) {
        let t = Instant::now();
        let r = tokio::time::timeout(secs(600), f).await;
        eprintln!(
            "p10 {what}: {:?} in {:?}",
            r.as_ref().map(|_| ()),
            t.elapsed()
        );
        assert!(r.is_ok() && t.elapsed() <= d, "{what} hung: {r:?}");
    }
    let held = b.mutex("m").lock().await.unwrap();
    faults.always(Op::Subscribe, Fault::Hang);
    within(
        "lock_timeout/subscribe",
        secs(2),
        a.mutex("m").lock_timeout(secs(1)).lock(),
    )
    .await;
    faults.clear();
    faults.always(Op::Acquire, Fault::Hang);
    within(
        "lock_timeout/acquire",
        secs(2),
        a.mutex("m").lock_timeout(secs(1)).lock(),
    )
    .await;
    within("try_lock/acquire", bound, a.mutex("m").try_lock()).await;
    within(
        "lock_timeout0/acquire",
        bound,
        a.mutex("m").lock_timeout(Duration::ZERO).lock(),
    )
    .await;
    faults.clear();
    held.release().await.unwrap();
    let g = a.mutex("m").lock().await.unwrap();
    faults.always(Op::Extend, Fault::Hang);
    within("extend", bound, g.extend(secs(10))).await;
    faults.always(Op::Inspect, Fault::Hang);
    within("inspect", bound, a.inspect("m")).await;
    within("available", bound, a.semaphore("s", 2).available()).await;
    faults.always(Op::ForceRelease, Fault::Hang);
    within("force_release", bound, a.force_release("x")).await;
    faults.always(Op::Release, Fault::Hang);
    let g2 = a.mutex("m2").lock().await.unwrap();
    within("release", bound, g.release()).await;
    drop(g2);
    within("close", secs(6), a.close()).await;
}

/// p2 with auto-extension on: the keeper plans from the old TTL, so it extends 10 s after the
/// grant, long after the backend expired the lease at 3 s.
#[tokio::test(start_paused = true)]
async fn p2c_failed_shorter_extend_auto() {
    let (a, faults, b, _) = lockers();
    let guard = a
        .mutex("m")
        .ttl(secs(30))
        .auto_extend(true)
        .lock()
        .await
        .unwrap();
    faults.next(Op::Extend, Fault::ApplyThenFail);
    let r = guard.extend(secs(3)).await;
    assert!(matches!(r, Err(Error::ProviderUnavailable { .. })), "{r:?}");
    tokio::time::sleep(secs(4)).await;
    let lost = guard.is_lost();
    let other = b.mutex("m").try_lock().await.unwrap();
    eprintln!("p2c: lost={lost} second holder={}", other.is_some());
    assert!(lost || other.is_none(), "two holders");
}

/// Manual extend to a tiny TTL under auto-extension: the keeper's period becomes ttl/3
/// (no lower bound). Real time, multi-thread.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn p11_keeper_tight_loop_after_tiny_extend() {
    let (a, faults, _, _) = lockers();
    let guard = a
        .mutex("m")
        .ttl(secs(30))
        .auto_extend(true)
        .lock()
        .await
        .unwrap();
    let r = guard.extend(Duration::from_micros(300)).await;
    tokio::time::sleep(ms(200)).await;
    let n = faults.calls(Op::Extend);
    eprintln!(
        "p11: extend -> {r:?}; {n} extends in 200 ms; lost={}",
        guard.is_lost()
    );
    assert!(n < 100, "keeper spun: {n} extends in 200 ms");
}

/// Keeper with a 1 ns extend interval is accepted (only zero is rejected).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn p12_tiny_extend_interval_accepted() {
    let (a, faults, _, _) = lockers();
    let r = a
        .mutex("m")
        .ttl(secs(30))
        .auto_extend(true)
        .extend_interval(Duration::from_nanos(1))
        .lock()
        .await;
    tokio::time::sleep(ms(200)).await;
    let n = faults.calls(Op::Extend);
    eprintln!("p12: lock -> ok={}; {n} extends in 200 ms", r.is_ok());
    assert!(n < 100, "keeper spun: {n} extends in 200 ms");
}

/// After lock_timeout returns NotAcquired, its claim is withdrawn only in a background task:
/// a try_lock right after (no yield in between) finds a free mutex busy. This is the race behind
/// the flaky conformance test `lock_timeout_is_not_acquired` (conformance.rs:328).
#[tokio::test(start_paused = true)]
async fn p13_claim_outlives_timed_out_lock() {
    let (a, _, b, _) = lockers();
    let holder = b.mutex("m").lock().await.unwrap();
    let r = a.mutex("m").lock_timeout(ms(400)).lock().await;
    assert!(matches!(r, Err(Error::NotAcquired { .. })), "{r:?}");
    holder.release().await.unwrap();
    let next = b.mutex("m").try_lock().await.unwrap();
    eprintln!(
        "p13: try_lock on the released mutex right after the timeout: {}",
        next.is_some()
    );
    assert!(
        next.is_some(),
        "the timed-out waiter's claim was still there"
    );
}
