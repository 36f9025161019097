//! Regression tests from the second adversarial review of the timing-fault change
//! (8350507..cfa5041): three of the four failed before the fixes that followed it.

mod common;

use common::{lockers, ms, secs};
use lock_core::{Error, Locker};
use lock_testkit::faults::{Fault, Op};
use tokio::time::Instant;

/// q1: one transient error early in a wait makes `unknown_since` stick through Busy answers;
/// the grant that ends a wait longer than the TTL is then judged "late", withdrawn, and the
/// waiter loses its place in the queue to a later waiter.
#[tokio::test(start_paused = true)]
async fn q1_busy_does_not_reset_unknown_since() {
    let (a, faults, b, store) = lockers();
    let c = Locker::with_backend(store.clone());
    let held = b.mutex("m").ttl(secs(60)).lock().await.unwrap();
    faults.next(Op::Acquire, Fault::Fail);
    let a2 = a.clone();
    let wait_a = tokio::spawn(async move {
        a2.mutex("m")
            .ttl(secs(5))
            .lock_timeout(secs(300))
            .lock()
            .await
    });
    tokio::time::sleep(secs(1)).await;
    let c2 = c.clone();
    let wait_c = tokio::spawn(async move {
        c2.mutex("m")
            .ttl(secs(60))
            .lock_timeout(secs(300))
            .lock()
            .await
    });
    tokio::time::sleep(secs(19)).await;
    held.release().await.unwrap();
    tokio::time::sleep(secs(2)).await;
    let a_done = wait_a.is_finished();
    let c_done = wait_c.is_finished();
    eprintln!(
        "q1: A (first waiter) granted={a_done} C (second waiter) granted={c_done} \
         releases sent by A={}",
        faults.calls(Op::Release)
    );
    assert!(
        a_done && !c_done,
        "the first waiter's grant was withdrawn as late; C overtook it"
    );
}

/// q2: close() with no guard held returns before a waiting acquisition has withdrawn its
/// claim: the withdraw (a background release close should wait for) starts after close.
#[tokio::test(start_paused = true)]
async fn q2_close_does_not_wait_for_waiters_withdraw() {
    let (a, faults, b, _) = lockers();
    let held = b.mutex("m").ttl(secs(60)).lock().await.unwrap();
    let a2 = a.clone();
    let wait = tokio::spawn(async move { a2.mutex("m").lock_timeout(secs(300)).lock().await });
    tokio::time::sleep(secs(1)).await;
    faults.always(Op::Release, Fault::DelayCall(secs(2)));
    let started = Instant::now();
    a.close().await;
    let took = started.elapsed();
    let releases_at_close = faults.calls(Op::Release);
    let result = wait.await.unwrap();
    eprintln!(
        "q2: close took {took:?}; releases started before close returned: {releases_at_close}; \
         lock() -> {:?}",
        result.as_ref().map(|_| ())
    );
    assert!(matches!(result, Err(Error::Closed)));
    drop(held);
    assert!(
        releases_at_close == 1 && took >= secs(2),
        "close() returned before the waiter's withdraw ran"
    );
}

/// q3: close() while an acquisition's grant is in flight: close returns at once and the
/// lease stays held (by the closed locker) until the reply arrives, then is released from a
/// task after close returned (on a real backend, after its connections were closed).
#[tokio::test(start_paused = true)]
async fn q3_close_racing_inflight_grant() {
    let (a, faults, _b, store) = lockers();
    faults.next(Op::Acquire, Fault::DelayReply(secs(2)));
    let a2 = a.clone();
    let wait = tokio::spawn(async move { a2.mutex("m").lock().await.map(|_| ()) });
    tokio::time::sleep(ms(100)).await;
    let started = Instant::now();
    a.close().await;
    let took = started.elapsed();
    let held_after_close = lock_core::Backend::inspect(&store, "m").await.unwrap();
    let result = wait.await.unwrap();
    tokio::time::sleep(ms(10)).await;
    let held_later = lock_core::Backend::inspect(&store, "m").await.unwrap();
    eprintln!(
        "q3: close took {took:?}; holders right after close: {}; lock() -> {result:?}; \
         holders later: {}",
        held_after_close.len(),
        held_later.len()
    );
    assert!(
        held_after_close.is_empty(),
        "close() returned while its locker still held a lease"
    );
}

/// q4: a longer manual extend whose answer is lost, then the keeper goes on with the old TTL;
/// and a longer extend answered late but in its own window. No second holder either way.
#[tokio::test(start_paused = true)]
async fn q4_longer_uncertain_extend() {
    let (a, faults, b, _) = lockers();
    let guard = a
        .mutex("m")
        .ttl(secs(3))
        .auto_extend(true)
        .lock()
        .await
        .unwrap();
    tokio::time::sleep(ms(500)).await;
    faults.next(Op::Extend, Fault::ApplyThenFail);
    let r1 = guard.extend(secs(60)).await;
    faults.next(Op::Extend, Fault::DelayReply(secs(4)));
    let r2 = guard.extend(secs(60)).await;
    for step in 0..40 {
        tokio::time::sleep(ms(500)).await;
        let lost = guard.is_lost();
        let other = b.mutex("m").try_lock().await.unwrap();
        assert!(
            lost || other.is_none(),
            "q4 step {step}: two holders (r1={r1:?}, r2={r2:?})"
        );
        if let Some(g) = other {
            g.release().await.unwrap();
        }
    }
    eprintln!("q4: r1={r1:?} r2={r2:?} lost={}", guard.is_lost());
}
