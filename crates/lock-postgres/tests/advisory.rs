//! Advisory mode specifics, on the server of `LOCK_TEST_POSTGRES_URL`.

mod common;

use lock_core::{LockKey, LockKind};
use lock_postgres::{PostgresMode, advisory_key};
use lock_testkit::require_servers;
use std::collections::HashMap;
use std::time::Duration;

/// Two distinct mutex names whose advisory keys collide (a birthday search over 32 bits).
fn colliding_names(prefix: &str) -> (String, String) {
    let mut seen: HashMap<i32, String> = HashMap::new();
    for i in 0u64.. {
        let name = format!("{prefix}/{i}");
        let key = advisory_key(&LockKey::new(&name, LockKind::Mutex).unwrap());
        if let Some(other) = seen.insert(key, name.clone()) {
            return (other, name);
        }
    }
    unreachable!("u64 range exhausted")
}

/// A hash collision costs false contention only: the colliding lock is free again when the
/// other is released, and when the other's holder hangs past its TTL (its session is ended
/// by the contender of the colliding lock, although nobody contends for the hung lock itself).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn colliding_advisory_keys_only_cost_contention() {
    let (a, b) = match common::lockers(PostgresMode::Advisory).await {
        Ok(lockers) => lockers,
        Err(reason) if require_servers() => panic!("server required: {reason}"),
        Err(reason) => {
            println!("skipped: {reason}");
            return;
        }
    };
    let prefix = format!("collide-{}", ulid::Ulid::generate());
    let (x, y) = colliding_names(&prefix);
    assert_ne!(x, y);

    let held = a.mutex(&x).lock().await.unwrap();
    assert!(
        b.mutex(&y).try_lock().await.unwrap().is_none(),
        "expected false contention on colliding keys"
    );
    held.release().await.unwrap();
    b.mutex(&y)
        .try_lock()
        .await
        .unwrap()
        .expect("free")
        .release()
        .await
        .unwrap();

    let hung = a
        .mutex(&x)
        .ttl(Duration::from_secs(1))
        .lock()
        .await
        .unwrap();
    let started = tokio::time::Instant::now();
    let next = b
        .mutex(&y)
        .lock_timeout(Duration::from_secs(20))
        .lock()
        .await
        .expect("a hung holder of a colliding lock blocked forever");
    assert!(started.elapsed() >= Duration::from_millis(500));
    // The backend no longer has the lease; the guard, past its validity, is lost.
    let key = LockKey::new(&x, LockKind::Mutex).unwrap();
    assert!(matches!(
        a.backend()
            .extend_dyn(&key, hung.lease_id(), Duration::from_secs(1))
            .await,
        Err(lock_core::Error::Expired { .. })
    ));
    assert!(matches!(
        hung.extend(Duration::from_secs(1)).await,
        Err(lock_core::Error::Lost { .. })
    ));
    next.release().await.unwrap();
    a.close().await;
    b.close().await;
}

/// A grant applied but answered with an error, retried only after its lease expired: the
/// retry adopts the lease's own session without ending it (its own expired row names that
/// session as a hung holder), and is granted.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_late_retry_of_a_lost_grant_does_not_end_its_own_session() {
    use lock_testkit::faults::{Fault, Faults, Op};
    let (a, b) = match common::lockers(PostgresMode::Advisory).await {
        Ok(lockers) => lockers,
        Err(reason) if require_servers() => panic!("server required: {reason}"),
        Err(reason) => {
            println!("skipped: {reason}");
            return;
        }
    };
    let faults = Faults::wrap_dyn(std::sync::Arc::clone(a.backend()));
    let locker = lock_core::Locker::with_backend(faults.clone());
    faults.nth(Op::Acquire, 1, Fault::ApplyThenFail);
    let slow_retry = lock_core::RetryPolicy {
        initial_delay: Duration::from_secs(2),
        max_delay: Duration::from_secs(2),
        jitter: 0.0,
        ..lock_core::RetryPolicy::default()
    };
    let name = format!("late-retry-{}", ulid::Ulid::generate());
    let guard = locker
        .mutex(&name)
        .ttl(Duration::from_secs(1))
        .retry(slow_retry)
        .lock_timeout(Duration::from_secs(20))
        .lock()
        .await
        .expect("the late retry of a lost grant");
    // The retry may itself count as late (its validity counts from the lost attempt) and be
    // followed by a third attempt; what matters is that the session survived and it is held.
    assert!(faults.calls(Op::Acquire) >= 2);
    assert!(b.mutex(&name).try_lock().await.unwrap().is_none());
    guard.release().await.unwrap();
    assert!(b.inspect(&name).await.unwrap().is_empty());
}
