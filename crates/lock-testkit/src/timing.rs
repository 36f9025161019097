//! The timing-fault properties of the conformance suite: slow replies, hung calls, replies
//! lost after the operation was applied. Each runs a locker whose backend is the test's real
//! backend wrapped in [`Faults`], next to a plain second locker on the same store.

use crate::faults::{Fault, Faults, Op};
use crate::{TestEnv, eventually};
use lock_core::{Error, Locker, MAX_TTL, RetryPolicy};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;

/// The slack `lock_timeout` is allowed past its wait timeout in these tests. The documented
/// slack is 250 ms; the tests allow twice that on a loaded machine.
const TIMEOUT_SLACK: Duration = Duration::from_millis(500);
/// How long a test waits for a background clean-up before it fails.
const CLEAN_UP: Duration = Duration::from_secs(5);
/// A TTL that no test waits out: a lock gone before it is released was released, not expired.
const LONG_TTL: Duration = Duration::from_secs(60);

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// A locker on the first locker's backend wrapped in [`Faults`], with this request timeout.
fn faulty(env: &TestEnv, request_timeout: Duration) -> (Locker, Faults) {
    let faults = Faults::wrap_dyn(Arc::clone(env.a.backend()));
    let locker = Locker::builder(faults.clone())
        .request_timeout(request_timeout)
        .build()
        .expect("valid settings");
    (locker, faults)
}

/// Panics unless `result` is `NotAcquired`, returned within `timeout` plus the slack.
fn assert_timed_out<T: std::fmt::Debug>(
    what: &str,
    result: lock_core::Result<T>,
    started: Instant,
    timeout: Duration,
) {
    let took = started.elapsed();
    assert!(
        matches!(result, Err(Error::NotAcquired { .. })),
        "{what}: expected NotAcquired, got {result:?}"
    );
    assert!(
        took <= timeout + TIMEOUT_SLACK,
        "{what}: lock_timeout({timeout:?}) returned after {took:?}"
    );
}

/// A grant whose reply arrives after its validity window is never handed out as a valid
/// guard: `try_lock` returns `None`, `lock` gives it back and waits on to a valid grant, and
/// no second holder overlaps.
pub async fn late_grant_is_not_a_valid_guard(env: &TestEnv) {
    let name = env.name("m");
    let (a, faults) = faulty(env, Duration::from_secs(15));
    let ttl = Duration::from_secs(2);
    let late = Fault::DelayReply(Duration::from_secs(3));

    faults.next(Op::Acquire, late);
    let tried = a.mutex(&name).ttl(ttl).try_lock().await.unwrap();
    assert!(
        tried.is_none(),
        "try_lock handed out a grant that arrived after its validity: {tried:?}"
    );

    faults.next(Op::Acquire, late);
    let guard = a
        .mutex(&name)
        .ttl(ttl)
        .lock_timeout(Duration::from_secs(15))
        .lock()
        .await
        .unwrap();
    assert!(faults.calls(Op::Acquire) >= 3, "the wait did not go on");
    assert!(!guard.is_lost(), "a fresh grant is not lost");
    assert!(
        Instant::now() < guard.valid_until(),
        "{guard:?} is past its validity"
    );
    assert!(
        env.b.mutex(&name).try_lock().await.unwrap().is_none(),
        "two holders: the guard's lease is not valid on the backend"
    );
    guard.release().await.unwrap();
}

/// `lock_timeout(d)` returns `NotAcquired` within `d` plus the slack when the attempt,
/// the subscription or the clean-up release hangs.
pub async fn lock_timeout_bounds_hung_calls(env: &TestEnv) {
    let name = env.name("m");
    let holder = env.b.mutex(&name).ttl(LONG_TTL).lock().await.unwrap();
    // The request timeout is longer than the wait: only the wait deadline can end the calls.
    let (a, faults) = faulty(env, Duration::from_secs(30));
    let timeout = ms(1000);
    let mutex = a.mutex(&name).lock_timeout(timeout);

    for (what, op, from_call) in [
        ("subscribe hangs", Op::Subscribe, 1),
        ("the first attempt hangs", Op::Acquire, 1),
        ("the second attempt hangs", Op::Acquire, 2),
        ("the clean-up release hangs", Op::Release, 1),
    ] {
        faults.clear();
        let base = faults.calls(op);
        faults.from_nth(op, base + from_call, Fault::Hang);
        let started = Instant::now();
        let result = tokio::time::timeout(Duration::from_secs(60), mutex.lock())
            .await
            .unwrap_or_else(|_| panic!("{what}: lock_timeout({timeout:?}) still waiting at 60 s"));
        assert_timed_out(what, result, started, timeout);
    }
    faults.clear();
    holder.release().await.unwrap();
}

/// `try_*` makes exactly one round trip: a failed one is `ProviderUnavailable` (never
/// `NotAcquired`, whatever the retry policy or wait timeout), and a grant applied whose reply
/// was lost is cleaned up in the background.
pub async fn try_lock_is_one_round_trip(env: &TestEnv) {
    let name = env.name("m");
    let (a, faults) = faulty(env, Duration::from_secs(15));
    let endless = RetryPolicy {
        max_attempts: 0,
        ..RetryPolicy::default()
    };
    let mutex = a
        .mutex(&name)
        .ttl(LONG_TTL)
        .retry(endless)
        .lock_timeout(ms(2000));

    faults.always(Op::Acquire, Fault::Fail);
    let before = faults.calls(Op::Acquire);
    let result = tokio::time::timeout(Duration::from_secs(30), mutex.try_lock())
        .await
        .expect("try_lock with max_attempts = 0 retried for 30 s");
    assert!(
        matches!(result, Err(Error::ProviderUnavailable { .. })),
        "a failed try_lock must be ProviderUnavailable, got {result:?}"
    );
    assert_eq!(faults.calls(Op::Acquire) - before, 1, "try_lock retried");

    faults.clear();
    faults.next(Op::Acquire, Fault::ApplyThenFail);
    let result = mutex.try_lock().await;
    assert!(
        matches!(result, Err(Error::ProviderUnavailable { .. })),
        "expected ProviderUnavailable, got {result:?}"
    );
    let other = env.b.mutex(&name).ttl(LONG_TTL).lock_timeout(CLEAN_UP);
    let guard = other
        .lock()
        .await
        .expect("the grant whose reply was lost was not released in the background");
    guard.release().await.unwrap();
}

/// A manual `extend` to a shorter TTL under auto-extension: the keeper re-plans at once (the
/// lease outlives the new TTL), and when its extensions then hang, the guard is declared lost
/// while the backend still has the lease.
pub async fn shorter_extend_replans_keeper(env: &TestEnv) {
    let name = env.name("m");
    let (a, faults) = faulty(env, Duration::from_secs(15));
    let lost_at = Arc::new(Mutex::new(None));
    let guard = a
        .mutex(&name)
        .ttl(Duration::from_secs(30))
        .auto_extend(true)
        .on_lost({
            let lost_at = Arc::clone(&lost_at);
            move |_| *lost_at.lock().unwrap() = Some(Instant::now())
        })
        .lock()
        .await
        .unwrap();
    let short = Duration::from_secs(3);
    guard.extend(short).await.unwrap();
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(!guard.is_lost(), "the keeper declared a healthy lease lost");
    assert!(
        env.b.mutex(&name).try_lock().await.unwrap().is_none(),
        "two holders: the keeper slept its old interval past the new TTL"
    );

    faults.always(Op::Extend, Fault::Hang);
    tokio::time::timeout(short * 2, guard.lost())
        .await
        .expect("not declared lost while every extension hung");
    assert_eq!(
        env.b.inspect(&name).await.unwrap().len(),
        1,
        "declared lost only after the backend could have expired the lease"
    );
    // `lost()` waiters are woken first, then `on_lost` runs.
    assert!(
        eventually(ms(1000), || async { lost_at.lock().unwrap().is_some() }).await,
        "on_lost did not run"
    );
    faults.clear();
    assert!(matches!(guard.release().await, Err(Error::Lost { .. })));
}

/// An acquisition whose first attempt was applied but answered with an error, then cancelled
/// while it retries, leaves nothing held once the background clean-up ran.
pub async fn applied_then_cancelled_leaves_nothing(env: &TestEnv) {
    let name = env.name("m");
    let (a, faults) = faulty(env, Duration::from_secs(15));
    faults.next(Op::Acquire, Fault::ApplyThenFail);
    faults.nth(Op::Acquire, faults.calls(Op::Acquire) + 2, Fault::Hang);
    let mutex = a.mutex(&name).ttl(LONG_TTL);
    let result = tokio::time::timeout(ms(1500), mutex.lock()).await;
    assert!(result.is_err(), "the hung retry was granted: {result:?}");
    assert!(
        eventually(CLEAN_UP, || async {
            env.b.inspect(&name).await.unwrap().is_empty()
        })
        .await,
        "the applied grant was left behind after cancellation"
    );
}

/// An acquisition whose first attempt was granted but answered with an error is granted on
/// its retry at once (the backend adopts the grant of the same lease id instead of waiting
/// behind it), and it is the only holder.
pub async fn applied_grant_is_adopted_on_retry(env: &TestEnv) {
    let name = env.name("m");
    let (a, faults) = faulty(env, Duration::from_secs(15));
    faults.next(Op::Acquire, Fault::ApplyThenFail);
    let started = Instant::now();
    let guard = a
        .mutex(&name)
        .ttl(LONG_TTL)
        .lock_timeout(Duration::from_secs(15))
        .lock()
        .await
        .expect("the retry after an applied grant");
    assert!(
        started.elapsed() < CLEAN_UP,
        "the retry waited {:?} behind its own grant",
        started.elapsed()
    );
    let holders = env.b.inspect(&name).await.unwrap();
    assert_eq!(holders.len(), 1, "{holders:?}");
    assert_eq!(holders[0].token, guard.token());
    guard.release().await.unwrap();
    assert!(env.b.inspect(&name).await.unwrap().is_empty());
}

/// A release or an extension that hangs returns within the request timeout, and the guard's
/// state is right afterwards: a hung extension leaves it held and usable, a hung release
/// reports the failure.
pub async fn hung_release_and_extend_are_bounded(env: &TestEnv) {
    let name = env.name("m");
    let request_timeout = ms(1000);
    let bound = request_timeout + TIMEOUT_SLACK;
    let (a, faults) = faulty(env, request_timeout);
    let guard = a.mutex(&name).ttl(LONG_TTL).lock().await.unwrap();

    faults.next(Op::Extend, Fault::Hang);
    let started = Instant::now();
    let result = tokio::time::timeout(Duration::from_secs(30), guard.extend(LONG_TTL))
        .await
        .expect("a hung extend was still waiting at 30 s");
    assert!(
        matches!(result, Err(Error::ProviderUnavailable { .. })),
        "a hung extend must be ProviderUnavailable, got {result:?}"
    );
    assert!(
        started.elapsed() <= bound,
        "extend took {:?}",
        started.elapsed()
    );
    assert!(!guard.is_lost(), "a hung extend of a valid lease lost it");
    guard
        .extend(LONG_TTL)
        .await
        .expect("extend after a hung one");

    faults.next(Op::Release, Fault::Hang);
    let started = Instant::now();
    let result = tokio::time::timeout(Duration::from_secs(30), guard.release())
        .await
        .expect("a hung release was still waiting at 30 s");
    assert!(
        matches!(result, Err(Error::ProviderUnavailable { .. })),
        "a hung release must be ProviderUnavailable, got {result:?}"
    );
    assert!(
        started.elapsed() <= bound,
        "release took {:?}",
        started.elapsed()
    );
    // The hung release never reached the backend: the lease is still there.
    assert_eq!(env.b.force_release(&name).await.unwrap(), 1);
}

/// A guard dropped on a thread outside the runtime is released in the background, on the
/// runtime it was made on.
pub async fn dropped_guard_released_from_any_thread(env: &TestEnv) {
    let name = env.name("m");
    let guard = env.a.mutex(&name).ttl(LONG_TTL).lock().await.unwrap();
    std::thread::spawn(move || drop(guard))
        .join()
        .expect("the dropping thread panicked");
    let next = env.b.mutex(&name).lock_timeout(CLEAN_UP).lock().await;
    let next = next.expect("a guard dropped off the runtime's threads was not released");
    next.release().await.unwrap();
}

/// `lock_timeout(Duration::ZERO)` makes one attempt: granted if free, `NotAcquired` at once if
/// busy, on every backend.
pub async fn zero_lock_timeout_is_one_attempt(env: &TestEnv) {
    let name = env.name("m");
    let (a, faults) = faulty(env, Duration::from_secs(15));
    let mutex = a.mutex(&name).lock_timeout(Duration::ZERO);
    let guard = mutex
        .lock()
        .await
        .expect("a free lock with lock_timeout(0)");
    let before = faults.calls(Op::Acquire);
    match env.b.mutex(&name).lock_timeout(Duration::ZERO).lock().await {
        Err(Error::NotAcquired { .. }) => {}
        other => panic!("a busy lock with lock_timeout(0) must be NotAcquired, got {other:?}"),
    }
    match mutex.lock().await {
        Err(Error::NotAcquired { .. }) => {}
        other => panic!("a busy lock with lock_timeout(0) must be NotAcquired, got {other:?}"),
    }
    assert_eq!(
        faults.calls(Op::Acquire) - before,
        1,
        "more than one attempt"
    );
    guard.release().await.unwrap();
}

/// Bad durations are rejected before anything is sent, never panic, and leave nothing
/// granted; `lock_timeout(Duration::MAX)` means no timeout.
pub async fn durations_checked_before_sending(env: &TestEnv) {
    let name = env.name("m");
    let (a, faults) = faulty(env, Duration::from_secs(15));
    let invalid = |what: &str, result: lock_core::Result<_>| match result {
        Err(Error::InvalidArgument { message }) => message,
        other => panic!("{what}: expected InvalidArgument, got {other:?}"),
    };
    let too_long = MAX_TTL + Duration::from_secs(1);
    for ttl in [Duration::MAX, too_long] {
        let message = invalid("lock", a.mutex(&name).ttl(ttl).lock().await.map(drop));
        assert!(message.contains("ttl"), "{message}");
        invalid(
            "try_lock",
            a.mutex(&name).ttl(ttl).try_lock().await.map(drop),
        );
        invalid("read", a.rw_mutex(&name).ttl(ttl).read().await.map(drop));
        invalid(
            "acquire",
            a.semaphore(&name, 2).ttl(ttl).acquire(1).await.map(drop),
        );
    }
    let ttl = Duration::from_secs(10);
    invalid(
        "an interval past the validity window",
        a.mutex(&name)
            .ttl(ttl)
            .auto_extend(true)
            .extend_interval(ms(9990))
            .lock()
            .await
            .map(drop),
    );
    assert_eq!(faults.calls(Op::Acquire), 0, "a bad argument was sent");
    assert!(env.b.inspect(&name).await.unwrap().is_empty());

    let guard = a
        .mutex(&name)
        .lock_timeout(Duration::MAX)
        .lock()
        .await
        .expect("lock_timeout(Duration::MAX) means no timeout");
    for ttl in [Duration::MAX, too_long, Duration::ZERO] {
        invalid("extend", guard.extend(ttl).await);
    }
    assert_eq!(faults.calls(Op::Extend), 0, "a bad extension was sent");
    assert!(!guard.is_lost());
    guard.release().await.unwrap();
}

/// Without auto-extension a guard is declared lost when its validity runs out: `lost()`
/// completes, `is_lost()` turns true, `on_lost` runs once, and `release` reports `Lost`.
pub async fn lost_at_validity_without_auto_extend(env: &TestEnv) {
    let name = env.name("m");
    let calls = Arc::new(Mutex::new(0u32));
    let ttl = Duration::from_secs(1);
    let guard = env
        .a
        .mutex(&name)
        .ttl(ttl)
        .on_lost({
            let calls = Arc::clone(&calls);
            move |_| *calls.lock().unwrap() += 1
        })
        .lock()
        .await
        .unwrap();
    assert!(!guard.is_lost());
    let until = guard.valid_until();
    tokio::time::timeout(ttl * 3, guard.lost())
        .await
        .expect("lost() never completed without auto-extension");
    assert!(
        Instant::now() >= until,
        "declared lost before its validity ran out"
    );
    assert!(guard.is_lost());
    assert!(
        eventually(ms(1000), || async { *calls.lock().unwrap() == 1 }).await,
        "on_lost did not run once"
    );
    assert!(matches!(guard.release().await, Err(Error::Lost { .. })));
    assert_eq!(*calls.lock().unwrap(), 1, "on_lost ran more than once");
}
