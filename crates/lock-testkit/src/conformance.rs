//! The conformance suite: one function per property of DESIGN.md §4.
//!
//! Every function takes a [`TestEnv`] (two lockers on one store) and panics with a message
//! saying what went wrong. Timing bounds are generous: they catch hangs and polling, not
//! slowness. TTLs are at least a second and expiry is awaited with [`eventually`], so backends
//! with coarse lease clocks (etcd) pass too.

use crate::{SafetyConfig, TestEnv, eventually, run_safety_checker};
use lock_core::{Error, Guard, LockKind, Mode, RetryPolicy};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::time::{Duration, SystemTime};
use tokio::time::Instant;

pub use crate::listing::*;
pub use crate::timing::*;

/// The TTL of leases that tests let expire.
const SHORT_TTL: Duration = Duration::from_secs(1);
/// How long a test waits for an expiry or a background clean-up before it fails.
const PATIENCE: Duration = Duration::from_secs(15);

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// Tries `attempt` every 50 ms until it is granted (then releases it); false if `within` passes
/// first.
async fn acquirable<F, Fut>(within: Duration, attempt: F) -> bool
where
    F: Fn() -> Fut,
    Fut: Future<Output = lock_core::Result<Option<Guard>>>,
{
    eventually(within, || async {
        match attempt().await.expect("attempt failed") {
            Some(guard) => guard.release().await.is_ok(),
            None => false,
        }
    })
    .await
}

/// Leaks a guard without releasing it, like a crashed process.
fn crash(guard: Guard) {
    std::mem::forget(guard);
}

/// Many tasks on both lockers contend for one mutex; never two inside at once.
pub async fn exclusion_under_contention(env: &TestEnv) {
    let name = env.name("m");
    let inside = Arc::new(AtomicUsize::new(0));
    let grants = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for i in 0..8 {
        let mutex = if i % 2 == 0 { &env.a } else { &env.b }.mutex(&name);
        let (inside, grants) = (inside.clone(), grants.clone());
        tasks.push(tokio::spawn(async move {
            for _ in 0..5 {
                let guard = mutex.lock().await.expect("lock");
                assert_eq!(
                    inside.fetch_add(1, Ordering::SeqCst),
                    0,
                    "two holders at once"
                );
                tokio::time::sleep(ms(2)).await;
                inside.fetch_sub(1, Ordering::SeqCst);
                grants.fetch_add(1, Ordering::SeqCst);
                guard.release().await.expect("release");
            }
        }));
    }
    for task in tasks {
        task.await.expect("worker panicked");
    }
    assert_eq!(grants.load(Ordering::SeqCst), 40);
}

/// `try_lock` on a held mutex returns `None`, from another owner and from the holder's own.
pub async fn try_lock_while_held(env: &TestEnv) {
    let name = env.name("m");
    let guard = env.a.mutex(&name).lock().await.unwrap();
    assert!(env.b.mutex(&name).try_lock().await.unwrap().is_none());
    assert!(env.a.mutex(&name).try_lock().await.unwrap().is_none());
    guard.release().await.unwrap();
    let again = env.b.mutex(&name).try_lock().await.unwrap();
    assert!(again.is_some(), "free after release");
    again.unwrap().release().await.unwrap();
}

/// Locks are not reentrant: the holder's own locker waits like anyone else.
pub async fn not_reentrant(env: &TestEnv) {
    let name = env.name("m");
    let mutex = env.a.mutex(&name).lock_timeout(ms(300));
    let guard = mutex.lock().await.unwrap();
    match mutex.lock().await {
        Err(Error::NotAcquired { .. }) => {}
        other => panic!("a second lock by the same owner must wait, got {other:?}"),
    }
    guard.release().await.unwrap();
}

/// Released locks can be acquired again, by either locker.
pub async fn release_then_reacquire(env: &TestEnv) {
    let name = env.name("m");
    for locker in [&env.a, &env.b, &env.a] {
        let guard = locker
            .mutex(&name)
            .lock_timeout(ms(5000))
            .lock()
            .await
            .unwrap();
        guard.release().await.unwrap();
    }
    assert!(env.a.inspect(&name).await.unwrap().is_empty());
}

/// Releasing a lease a second time is `NotHeld`, not a panic and not a success.
pub async fn double_release_is_not_held(env: &TestEnv) {
    let name = env.name("m");
    let guard = env.a.mutex(&name).lock().await.unwrap();
    let lease = guard.lease_id();
    guard.release().await.unwrap();
    let key = lock_core::LockKey::new(&name, LockKind::Mutex).unwrap();
    match env.a.backend().release_dyn(&key, lease).await {
        Err(Error::NotHeld { name: n }) => assert_eq!(n, name),
        other => panic!("second release must be NotHeld, got {other:?}"),
    }
}

/// A guard whose lease was force-released reports `NotHeld` when released.
pub async fn release_after_force_release_is_not_held(env: &TestEnv) {
    let name = env.name("m");
    let guard = env.a.mutex(&name).lock().await.unwrap();
    assert_eq!(env.b.force_release(&name).await.unwrap(), 1);
    match guard.release().await {
        Err(Error::NotHeld { .. }) => {}
        other => panic!("release after force_release must be NotHeld, got {other:?}"),
    }
}

/// Tokens strictly increase across releases, whichever locker acquires.
pub async fn tokens_increase_across_releases(env: &TestEnv) {
    let name = env.name("m");
    let mut last = None;
    for i in 0..6 {
        let locker = if i % 2 == 0 { &env.a } else { &env.b };
        let guard = locker.mutex(&name).lock().await.unwrap();
        let token = guard.token();
        if let Some(last) = last {
            assert!(token > last, "token {token} not above {last}");
        }
        last = Some(token);
        guard.release().await.unwrap();
    }
}

/// A grant after an expiry gets a larger token than the expired lease's.
pub async fn tokens_increase_across_expiry(env: &TestEnv) {
    let name = env.name("m");
    let first = env.a.mutex(&name).ttl(SHORT_TTL).lock().await.unwrap();
    let old = first.token();
    crash(first);
    let second = env
        .b
        .mutex(&name)
        .lock_timeout(PATIENCE)
        .lock()
        .await
        .unwrap();
    assert!(second.token() > old, "{} not above {old}", second.token());
    second.release().await.unwrap();
}

/// `extend` keeps the token and moves the expiry: the lease outlives its first TTL.
pub async fn extend_keeps_token_and_moves_expiry(env: &TestEnv) {
    let name = env.name("m");
    let guard = env.a.mutex(&name).ttl(ms(2000)).lock().await.unwrap();
    let token = guard.token();
    let before = env.a.inspect(&name).await.unwrap()[0].expires_at;
    tokio::time::sleep(ms(1000)).await;
    guard.extend(ms(4000)).await.unwrap();
    assert_eq!(guard.token(), token);
    let after = env.a.inspect(&name).await.unwrap();
    assert_eq!(after.len(), 1);
    assert_eq!(after[0].token, token, "extend must keep the token");
    assert!(after[0].expires_at > before, "extend must move the expiry");
    tokio::time::sleep(ms(1500)).await; // past the first TTL
    assert!(
        env.b.mutex(&name).try_lock().await.unwrap().is_none(),
        "extended lease expired at its old expiry"
    );
    guard.release().await.unwrap();
}

/// Extending an expired lease is `Expired` on the backend and never re-creates it; the guard,
/// past its validity, reports `Lost` without sending anything.
pub async fn extend_after_expiry_is_expired(env: &TestEnv) {
    let name = env.name("m");
    let guard = env.a.mutex(&name).ttl(SHORT_TTL).lock().await.unwrap();
    let other = env
        .b
        .mutex(&name)
        .lock_timeout(PATIENCE)
        .lock()
        .await
        .unwrap();
    let key = lock_core::LockKey::new(&name, LockKind::Mutex).unwrap();
    match env
        .a
        .backend()
        .extend_dyn(&key, guard.lease_id(), ms(5000))
        .await
    {
        Err(Error::Expired { .. }) => {}
        other => panic!("extend after expiry must be Expired, got {other:?}"),
    }
    match guard.extend(ms(5000)).await {
        Err(Error::Lost { .. }) => {}
        other => panic!("a guard past its validity must report Lost, got {other:?}"),
    }
    assert!(guard.is_lost(), "a guard past its validity is lost");
    let holders = env.a.inspect(&name).await.unwrap();
    assert_eq!(holders.len(), 1);
    assert_eq!(
        holders[0].token,
        other.token(),
        "the new holder is untouched"
    );
    other.release().await.unwrap();
    drop(guard);
}

/// A guard that is never released (a crashed holder) expires after its TTL.
pub async fn leaked_guard_expires_after_ttl(env: &TestEnv) {
    let name = env.name("m");
    crash(env.a.mutex(&name).ttl(SHORT_TTL).lock().await.unwrap());
    let mutex = env.b.mutex(&name);
    assert!(
        acquirable(PATIENCE, || mutex.try_lock()).await,
        "leaked lease did not expire"
    );
}

/// A release that arrives after expiry leaves the new holder alone: the backend answers
/// `NotHeld`, the guard (past its validity) `Lost`.
pub async fn late_release_does_not_disturb_new_holder(env: &TestEnv) {
    let name = env.name("m");
    let stale = env.a.mutex(&name).ttl(SHORT_TTL).lock().await.unwrap();
    let stale_lease = stale.lease_id();
    let fresh = env
        .b
        .mutex(&name)
        .lock_timeout(PATIENCE)
        .lock()
        .await
        .unwrap();
    // The guard is past its validity: Lost, and the release is still sent.
    match stale.release().await {
        Err(Error::Lost { .. }) => {}
        other => panic!("a release past the validity must be Lost, got {other:?}"),
    }
    // The backend itself answers NotHeld.
    let key = lock_core::LockKey::new(&name, LockKind::Mutex).unwrap();
    match env.a.backend().release_dyn(&key, stale_lease).await {
        Err(Error::NotHeld { .. }) => {}
        other => panic!("late release must be NotHeld, got {other:?}"),
    }
    let holders = env.a.inspect(&name).await.unwrap();
    assert_eq!(holders.len(), 1, "the new holder's lease was deleted");
    assert_eq!(holders[0].token, fresh.token());
    fresh.release().await.unwrap();
}

/// Dropping a guard releases it in the background, long before its TTL.
pub async fn drop_releases_in_background(env: &TestEnv) {
    let name = env.name("m");
    drop(env.a.mutex(&name).ttl(ms(60_000)).lock().await.unwrap());
    let mutex = env.b.mutex(&name);
    assert!(
        acquirable(ms(5000), || mutex.try_lock()).await,
        "dropped guard was not released in the background"
    );
}

/// A `lock()` cancelled while waiting (or aborted mid-flight) leaves nothing held and no claim
/// that blocks others.
pub async fn cancelled_lock_leaves_nothing_held(env: &TestEnv) {
    let name = env.name("m");
    let holder = env.a.mutex(&name).lock().await.unwrap();
    let waiter = env.b.mutex(&name);
    assert!(tokio::time::timeout(ms(300), waiter.lock()).await.is_err());
    let task = tokio::spawn({
        let waiter = waiter.clone();
        async move { waiter.lock().await }
    });
    tokio::time::sleep(ms(200)).await;
    task.abort();
    let _ = task.await;
    holder.release().await.unwrap();
    let next = env.a.mutex(&name);
    assert!(
        acquirable(ms(5000), || next.try_lock()).await,
        "a cancelled waiter left the lock blocked"
    );
    assert!(
        eventually(ms(5000), || async {
            env.a.inspect(&name).await.unwrap().is_empty()
        })
        .await,
        "a cancelled waiter left a lease behind"
    );
}

/// A wait past `lock_timeout` is `NotAcquired` naming the lock, and leaves nothing behind.
pub async fn lock_timeout_is_not_acquired(env: &TestEnv) {
    let name = env.name("m");
    let holder = env.a.mutex(&name).lock().await.unwrap();
    let started = Instant::now();
    match env.b.mutex(&name).lock_timeout(ms(400)).lock().await {
        Err(Error::NotAcquired { name: n, waited }) => {
            assert_eq!(n, name);
            assert!(waited >= ms(400), "waited only {waited:?}");
        }
        other => panic!("expected NotAcquired, got {other:?}"),
    }
    assert!(started.elapsed() < ms(5000), "the timeout was not honoured");
    holder.release().await.unwrap();
    // The waiter's withdrawal is awaited at most 100 ms (the lock_timeout slack); a backend
    // may finish it in the background (PostgreSQL advisory mode ends the waiting session,
    // slower over TLS), as for a cancelled waiter: the lock must come free within a bound.
    let next = env.a.mutex(&name);
    assert!(
        acquirable(ms(5000), || next.try_lock()).await,
        "the timed-out waiter left a claim behind"
    );
}

/// A waiter is granted the lock soon after release, by notification: its poll interval is 10 s.
pub async fn waiter_woken_by_notification(env: &TestEnv) {
    let name = env.name("m");
    let slow_poll = RetryPolicy {
        initial_delay: Duration::from_secs(10),
        max_delay: Duration::from_secs(10),
        ..RetryPolicy::default()
    };
    let holder = env.a.mutex(&name).lock().await.unwrap();
    let waiter = env
        .b
        .mutex(&name)
        .retry(slow_poll)
        .ttl(Duration::from_secs(30));
    let task = tokio::spawn(async move {
        let guard = waiter.lock().await.unwrap();
        (Instant::now(), guard)
    });
    tokio::time::sleep(ms(300)).await;
    let released = Instant::now();
    holder.release().await.unwrap();
    let (granted, guard) = tokio::time::timeout(ms(5000), task)
        .await
        .expect("waiter not woken")
        .unwrap();
    let delay = granted.duration_since(released);
    assert!(
        delay < ms(1000),
        "waiter took {delay:?} after the release: not notified"
    );
    guard.release().await.unwrap();
}

/// With auto-extension a lock outlives its TTL many times over.
pub async fn auto_extend_holds_past_ttl(env: &TestEnv) {
    let name = env.name("m");
    let lost = Arc::new(AtomicU32::new(0));
    let counter = lost.clone();
    let guard = env
        .a
        .mutex(&name)
        .ttl(SHORT_TTL)
        .auto_extend(true)
        .on_lost(move |_| {
            counter.fetch_add(1, Ordering::SeqCst);
        })
        .lock()
        .await
        .unwrap();
    tokio::time::sleep(ms(3500)).await;
    let other = env.b.mutex(&name).try_lock().await.unwrap();
    // Safety first: another holder while this guard still counts itself the holder is a
    // double grant; a late extension that made the guard lost is only a liveness failure.
    assert!(
        other.is_none() || guard.is_lost(),
        "double grant: another client was granted while the auto-extended guard is not lost"
    );
    assert!(
        other.is_none(),
        "the lease expired although auto-extended (the guard knew: lost = {})",
        guard.is_lost()
    );
    assert!(!guard.is_lost());
    assert_eq!(lost.load(Ordering::SeqCst), 0);
    guard.release().await.unwrap();
}

/// `force_release` makes an auto-extended holder lost: `lost()` completes, `on_lost` runs once,
/// `release` is `Lost`, and others can lock.
pub async fn force_release_fires_lost_once(env: &TestEnv) {
    let name = env.name("m");
    let calls = Arc::new(AtomicU32::new(0));
    let counter = calls.clone();
    let guard = env
        .a
        .mutex(&name)
        .ttl(ms(3000))
        .auto_extend(true)
        .extend_interval(ms(200))
        .on_lost(move |info| {
            assert!(!info.name.is_empty());
            counter.fetch_add(1, Ordering::SeqCst);
        })
        .lock()
        .await
        .unwrap();
    let lost = guard.lost();
    assert_eq!(env.b.force_release(&name).await.unwrap(), 1);
    tokio::time::timeout(ms(5000), lost)
        .await
        .expect("lost() did not complete");
    assert!(guard.is_lost());
    tokio::time::sleep(ms(600)).await;
    assert_eq!(
        calls.load(Ordering::SeqCst),
        1,
        "on_lost must run exactly once"
    );
    match guard.extend(ms(1000)).await {
        Err(Error::Lost { .. }) => {}
        other => panic!("extend of a lost guard must be Lost, got {other:?}"),
    }
    let next = env
        .b
        .mutex(&name)
        .try_lock()
        .await
        .unwrap()
        .expect("free after force_release");
    match guard.release().await {
        Err(Error::Lost { .. }) => {}
        other => panic!("release of a lost guard must be Lost, got {other:?}"),
    }
    assert_eq!(env.a.inspect(&name).await.unwrap()[0].token, next.token());
    next.release().await.unwrap();
}

/// `force_release` wakes waiters, who are then granted the lock.
pub async fn force_release_wakes_waiter(env: &TestEnv) {
    let name = env.name("m");
    let holder = env.a.mutex(&name).lock().await.unwrap();
    let waiter = env.b.mutex(&name).lock_timeout(PATIENCE);
    let task = tokio::spawn(async move { waiter.lock().await });
    tokio::time::sleep(ms(200)).await;
    env.a.force_release(&name).await.unwrap();
    let guard = tokio::time::timeout(ms(5000), task)
        .await
        .expect("waiter not woken by force_release")
        .unwrap()
        .unwrap();
    guard.release().await.unwrap();
    drop(holder);
}

/// A zero TTL is rejected at once, on lock, try-lock and extend.
pub async fn zero_ttl_rejected(env: &TestEnv) {
    let name = env.name("m");
    let zero = env.a.mutex(&name).ttl(Duration::ZERO);
    assert!(matches!(
        zero.lock().await,
        Err(Error::InvalidArgument { .. })
    ));
    assert!(matches!(
        zero.try_lock().await,
        Err(Error::InvalidArgument { .. })
    ));
    let guard = env.a.mutex(&name).lock().await.unwrap();
    assert!(matches!(
        guard.extend(Duration::ZERO).await,
        Err(Error::InvalidArgument { .. })
    ));
    guard.release().await.unwrap();
}

/// `guard.info()` agrees with `inspect`.
pub async fn guard_info_matches_inspect(env: &TestEnv) {
    let name = env.name("m");
    let guard = env.a.mutex(&name).ttl(ms(10_000)).lock().await.unwrap();
    let info = guard.info();
    let holders = env.b.inspect(&name).await.unwrap();
    assert_eq!(holders.len(), 1);
    let seen = &holders[0];
    assert_eq!(
        (seen.token, &seen.owner, seen.mode, seen.permits),
        (info.token, &info.owner, Mode::Exclusive, 1)
    );
    assert_eq!((seen.kind, &seen.name), (LockKind::Mutex, &name));
    assert_eq!(seen.owner, env.a.owner());
    let now = SystemTime::now();
    assert!(seen.expires_at > now && seen.expires_at < now + ms(12_000));
    guard.release().await.unwrap();
}

/// Readers share a read-write lock.
pub async fn readers_share(env: &TestEnv) {
    let name = env.name("rw");
    let r1 = env.a.rw_mutex(&name).read().await.unwrap();
    let r2 = env
        .b
        .rw_mutex(&name)
        .try_read()
        .await
        .unwrap()
        .expect("readers share");
    let holders = env.a.inspect(&name).await.unwrap();
    assert_eq!(holders.len(), 2);
    assert!(
        holders
            .iter()
            .all(|h| h.mode == Mode::Shared && h.kind == LockKind::RwMutex)
    );
    assert_ne!(r1.token(), r2.token());
    r1.release().await.unwrap();
    r2.release().await.unwrap();
}

/// A writer excludes readers and writers.
pub async fn writer_excludes_everyone(env: &TestEnv) {
    let name = env.name("rw");
    let w = env.a.rw_mutex(&name).write().await.unwrap();
    let rw = env.b.rw_mutex(&name);
    assert!(rw.try_read().await.unwrap().is_none());
    assert!(rw.try_write().await.unwrap().is_none());
    let writer_token = w.token();
    w.release().await.unwrap();
    let r = rw.try_read().await.unwrap().expect("free after the writer");
    assert!(
        r.token() > writer_token,
        "readers and writers share one token sequence"
    );
    r.release().await.unwrap();
}

/// Readers block a writer until they are gone; the writer's token is above theirs.
pub async fn readers_block_writer(env: &TestEnv) {
    let name = env.name("rw");
    let r = env.a.rw_mutex(&name).read().await.unwrap();
    let rw = env.b.rw_mutex(&name);
    assert!(rw.try_write().await.unwrap().is_none());
    let writer = tokio::spawn({
        let rw = rw.clone();
        async move { rw.write().await }
    });
    tokio::time::sleep(ms(200)).await;
    assert!(!writer.is_finished(), "writer granted while a reader holds");
    let reader_token = r.token();
    r.release().await.unwrap();
    let w = tokio::time::timeout(ms(5000), writer)
        .await
        .expect("writer not granted")
        .unwrap()
        .unwrap();
    assert!(w.token() > reader_token);
    w.release().await.unwrap();
}

/// Writer preference: while a writer waits, new readers wait behind it.
pub async fn waiting_writer_blocks_new_readers(env: &TestEnv) {
    let name = env.name("rw");
    let r1 = env.a.rw_mutex(&name).read().await.unwrap();
    let writer = tokio::spawn({
        let rw = env.b.rw_mutex(&name);
        async move { rw.write().await }
    });
    tokio::time::sleep(ms(300)).await;
    assert!(
        env.a.rw_mutex(&name).try_read().await.unwrap().is_none(),
        "a new reader overtook a waiting writer"
    );
    let late_reader = tokio::spawn({
        let rw = env.a.rw_mutex(&name);
        async move { rw.read().await }
    });
    tokio::time::sleep(ms(100)).await;
    r1.release().await.unwrap();
    let w = tokio::time::timeout(ms(5000), writer)
        .await
        .expect("writer starved")
        .unwrap()
        .unwrap();
    assert!(
        !late_reader.is_finished(),
        "reader granted while the writer holds"
    );
    w.release().await.unwrap();
    let r2 = tokio::time::timeout(ms(5000), late_reader)
        .await
        .expect("reader not granted")
        .unwrap()
        .unwrap();
    r2.release().await.unwrap();
}

/// Each reader's lease expires on its own: a live reader does not keep a dead one alive.
pub async fn reader_leases_expire_independently(env: &TestEnv) {
    let name = env.name("rw");
    crash(env.a.rw_mutex(&name).ttl(SHORT_TTL).read().await.unwrap());
    let live = env
        .b
        .rw_mutex(&name)
        .ttl(SHORT_TTL)
        .auto_extend(true)
        .read()
        .await
        .unwrap();
    assert!(
        eventually(PATIENCE, || async {
            env.a.inspect(&name).await.unwrap().len() == 1
        })
        .await,
        "the dead reader's lease did not expire"
    );
    assert_eq!(env.a.inspect(&name).await.unwrap()[0].token, live.token());
    assert!(env.a.rw_mutex(&name).try_write().await.unwrap().is_none());
    live.release().await.unwrap();
    let w = env
        .a
        .rw_mutex(&name)
        .try_write()
        .await
        .unwrap()
        .expect("free");
    w.release().await.unwrap();
}

/// A writer that gives up waiting (cancelled) stops blocking readers.
pub async fn cancelled_writer_does_not_block_readers(env: &TestEnv) {
    let name = env.name("rw");
    let r1 = env.a.rw_mutex(&name).read().await.unwrap();
    let writer = env.b.rw_mutex(&name);
    assert!(tokio::time::timeout(ms(300), writer.write()).await.is_err());
    let rw = env.a.rw_mutex(&name);
    assert!(
        acquirable(ms(5000), || rw.try_read()).await,
        "a cancelled writer still blocks readers"
    );
    r1.release().await.unwrap();
}

/// Permits held never exceed the limit under contention.
pub async fn semaphore_never_exceeds_limit(env: &TestEnv) {
    let name = env.name("s");
    let held = Arc::new(AtomicU32::new(0));
    let mut tasks = Vec::new();
    for i in 0..8u32 {
        let sem = if i % 2 == 0 { &env.a } else { &env.b }.semaphore(&name, 3);
        let held = held.clone();
        tasks.push(tokio::spawn(async move {
            let n = 1 + i % 2;
            for _ in 0..4 {
                let permit = sem.acquire(n).await.expect("acquire");
                let now = held.fetch_add(n, Ordering::SeqCst) + n;
                assert!(now <= 3, "{now} permits held with limit 3");
                tokio::time::sleep(ms(2)).await;
                held.fetch_sub(n, Ordering::SeqCst);
                permit.release().await.expect("release");
            }
        }));
    }
    for task in tasks {
        task.await.expect("worker panicked");
    }
}

/// `available()` is the limit minus the permits held.
pub async fn semaphore_available(env: &TestEnv) {
    let name = env.name("s");
    let sem = env.a.semaphore(&name, 5);
    assert_eq!(sem.available().await.unwrap(), 5);
    let p2 = sem.acquire(2).await.unwrap();
    assert_eq!(p2.permits(), 2);
    assert_eq!(sem.available().await.unwrap(), 3);
    let p3 = env.b.semaphore(&name, 5).acquire(3).await.unwrap();
    assert_eq!(sem.available().await.unwrap(), 0);
    assert!(sem.try_acquire(1).await.unwrap().is_none());
    p2.release().await.unwrap();
    assert_eq!(sem.available().await.unwrap(), 2);
    p3.release().await.unwrap();
    assert_eq!(sem.available().await.unwrap(), 5);
}

/// `n = 0` and `n > limit` are rejected at once, never a hang.
pub async fn semaphore_rejects_zero_and_over_limit(env: &TestEnv) {
    let name = env.name("s");
    let sem = env.a.semaphore(&name, 2);
    for n in [0, 3] {
        let result = tokio::time::timeout(ms(2000), sem.acquire(n))
            .await
            .expect("hung");
        match result {
            Err(Error::InvalidArgument { message }) => {
                assert!(
                    message.contains(&n.to_string()) && message.contains('2'),
                    "{message}"
                );
            }
            other => panic!("acquire({n}) must be InvalidArgument, got {other:?}"),
        }
        assert!(matches!(
            sem.try_acquire(n).await,
            Err(Error::InvalidArgument { .. })
        ));
    }
}

/// A handle with a different limit than the stored one is rejected, naming both limits.
pub async fn semaphore_limit_mismatch_names_both(env: &TestEnv) {
    let name = env.name("s");
    let permit = env.a.semaphore(&name, 3).acquire(1).await.unwrap();
    match env.b.semaphore(&name, 5).try_acquire(1).await {
        Err(Error::InvalidArgument { message }) => {
            assert!(message.contains('3') && message.contains('5'), "{message}");
        }
        other => panic!("limit mismatch must be InvalidArgument, got {other:?}"),
    }
    match tokio::time::timeout(ms(2000), env.b.semaphore(&name, 5).acquire(1)).await {
        Ok(Err(Error::InvalidArgument { .. })) => {}
        other => panic!("blocking acquire with a mismatched limit: {other:?}"),
    }
    permit.release().await.unwrap();
}

/// A crashed holder's permits come back after its TTL.
pub async fn semaphore_leaked_permits_come_back(env: &TestEnv) {
    let name = env.name("s");
    crash(
        env.a
            .semaphore(&name, 2)
            .ttl(SHORT_TTL)
            .acquire(2)
            .await
            .unwrap(),
    );
    let sem = env.b.semaphore(&name, 2);
    assert_eq!(sem.available().await.unwrap(), 0);
    assert!(
        eventually(PATIENCE, || async { sem.available().await.unwrap() == 2 }).await,
        "leaked permits did not come back"
    );
    sem.acquire(2).await.unwrap().release().await.unwrap();
}

/// A waiting large request blocks later small ones; cancelled, it stops blocking them.
pub async fn cancelled_large_request_unblocks_smaller(env: &TestEnv) {
    let name = env.name("s");
    let sem = env.a.semaphore(&name, 3);
    let held = sem.acquire(2).await.unwrap();
    let large = tokio::spawn({
        let sem = env.b.semaphore(&name, 3);
        async move { sem.acquire(3).await }
    });
    tokio::time::sleep(ms(300)).await;
    assert!(
        sem.try_acquire(1).await.unwrap().is_none(),
        "a small request overtook the waiting large one"
    );
    large.abort();
    let _ = large.await;
    assert!(
        acquirable(ms(5000), || sem.try_acquire(1)).await,
        "a cancelled large request still blocks smaller ones"
    );
    held.release().await.unwrap();
}

/// Metadata given on the handle is visible in `inspect`, with the owner.
pub async fn metadata_visible_in_inspect(env: &TestEnv) {
    let name = env.name("m");
    let guard = env
        .a
        .mutex(&name)
        .metadata("host", "worker-7")
        .metadata("job", "nightly report {v2}")
        .lock()
        .await
        .unwrap();
    let holders = env.b.inspect(&name).await.unwrap();
    assert_eq!(holders.len(), 1);
    assert_eq!(
        holders[0].metadata.get("host").map(String::as_str),
        Some("worker-7")
    );
    assert_eq!(
        holders[0].metadata.get("job").map(String::as_str),
        Some("nightly report {v2}")
    );
    assert_eq!(holders[0].owner, env.a.owner());
    assert_eq!(guard.info().metadata, holders[0].metadata);
    guard.release().await.unwrap();
}

/// Empty names are rejected everywhere.
pub async fn empty_name_rejected(env: &TestEnv) {
    let invalid = |r: &Result<_, Error>| matches!(r, Err(Error::InvalidArgument { .. }));
    assert!(invalid(&env.a.mutex("").lock().await.map(drop)));
    assert!(invalid(&env.a.mutex("").try_lock().await.map(drop)));
    assert!(invalid(&env.a.rw_mutex("").read().await.map(drop)));
    assert!(invalid(&env.a.semaphore("", 2).acquire(1).await.map(drop)));
    assert!(invalid(&env.a.inspect("").await.map(drop)));
    assert!(invalid(&env.a.force_release("").await.map(drop)));
}

/// Names over 1024 bytes are rejected with the length and limit; 1024 bytes work.
pub async fn long_name_rejected(env: &TestEnv) {
    let base = env.name("");
    let fit = format!("{base}{}", "x".repeat(1024 - base.len()));
    let over = format!("{fit}y");
    match env.a.mutex(&over).try_lock().await {
        Err(Error::InvalidArgument { message }) => {
            assert!(
                message.contains("1025") && message.contains("1024"),
                "{message}"
            );
        }
        other => panic!("1025-byte name must be rejected, got {other:?}"),
    }
    let guard = env.a.mutex(&fit).lock().await.unwrap();
    assert_eq!(env.a.inspect(&fit).await.unwrap()[0].name, fit);
    guard.release().await.unwrap();
}

/// Names with unicode, braces, slashes, spaces, newlines and wildcards work and stay distinct.
pub async fn odd_names_work(env: &TestEnv) {
    let tags = [
        "ünïcødé ✓ 锁",
        "{braces}",
        "}{",
        "a/b/c",
        "a",
        "with space",
        "line\nbreak",
        "tab\tquote\"'",
        "*?[glob]%s",
        "{a}/b",
    ];
    let mut guards = Vec::new();
    for tag in tags {
        let name = env.name(tag);
        let guard = env
            .a
            .mutex(&name)
            .lock()
            .await
            .unwrap_or_else(|e| panic!("{tag:?}: {e}"));
        let holders = env.b.inspect(&name).await.unwrap();
        assert_eq!(holders.len(), 1, "{tag:?}");
        assert_eq!(holders[0].name, name);
        assert!(
            env.b.mutex(&name).try_lock().await.unwrap().is_none(),
            "{tag:?}"
        );
        guards.push(guard);
    }
    for guard in guards {
        guard.release().await.unwrap();
    }
}

/// A mutex, a read-write lock and a semaphore with the same name do not interfere.
pub async fn kinds_do_not_interfere(env: &TestEnv) {
    let name = env.name("shared-name");
    let m = env.a.mutex(&name).lock().await.unwrap();
    let w = env
        .b
        .rw_mutex(&name)
        .try_write()
        .await
        .unwrap()
        .expect("rw lock is separate");
    let s = env
        .b
        .semaphore(&name, 1)
        .try_acquire(1)
        .await
        .unwrap()
        .expect("semaphore is separate");
    let kinds: Vec<LockKind> = env
        .a
        .inspect(&name)
        .await
        .unwrap()
        .iter()
        .map(|h| h.kind)
        .collect();
    for kind in [LockKind::Mutex, LockKind::RwMutex, LockKind::Semaphore] {
        assert!(kinds.contains(&kind), "{kind} missing from {kinds:?}");
    }
    m.release().await.unwrap();
    w.release().await.unwrap();
    s.release().await.unwrap();
}

/// The safety checker: workers on both lockers never overlap and no write is stale.
pub async fn safety_checker_finds_no_overlap(env: &TestEnv) {
    let name = env.name("register");
    let handles = (0..6)
        .map(|i| {
            if i % 2 == 0 { &env.a } else { &env.b }
                .mutex(&name)
                .ttl(ms(10_000))
        })
        .collect();
    let config = SafetyConfig {
        grants_per_worker: 8,
        ..SafetyConfig::default()
    };
    let report = run_safety_checker(handles, config).await;
    println!("safety checker: {report}");
    assert_eq!(report.grants, 48, "{report}");
    assert_eq!(report.overlaps, 0, "{report}");
    assert_eq!(report.stale_writes_rejected, 0, "{report}");
    assert_eq!(report.final_value, 48, "{report}");
}
