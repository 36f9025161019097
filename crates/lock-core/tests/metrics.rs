//! Each metric of the `observe` table moves as documented (feature `metrics`).

use lock_core::{Error, Locker};
use lock_memory::Memory;
use metrics_util::debugging::{DebugValue, DebuggingRecorder};
use std::time::Duration;

/// Runs `test` on a current-thread runtime with a local debugging recorder, so every task the
/// library spawns (keepers, background releases) records into it.
fn record<F: std::future::Future<Output = ()>>(test: impl FnOnce() -> F) -> Snapshot {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    metrics::with_local_recorder(&recorder, || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .start_paused(true)
            .build()
            .unwrap()
            .block_on(test());
    });
    // One snapshot: taking it drains histograms.
    snapshotter
        .snapshot()
        .into_vec()
        .into_iter()
        .map(|(key, _, description, value)| (key.key().clone(), description.is_some(), value))
        .collect()
}

type Snapshot = Vec<(metrics::Key, bool, DebugValue)>;

/// The counter `name` with exactly these labels (0 if absent).
fn counter(snapshot: &Snapshot, name: &str, labels: &[(&str, &str)]) -> u64 {
    value(snapshot, name, labels).map_or(0, |v| match v {
        DebugValue::Counter(n) => *n,
        other => panic!("{name} is not a counter: {other:?}"),
    })
}

/// How many samples the histogram `name` with these labels has.
fn samples(snapshot: &Snapshot, name: &str, labels: &[(&str, &str)]) -> usize {
    value(snapshot, name, labels).map_or(0, |v| match v {
        DebugValue::Histogram(values) => values.len(),
        other => panic!("{name} is not a histogram: {other:?}"),
    })
}

fn value<'a>(
    snapshot: &'a Snapshot,
    name: &str,
    labels: &[(&str, &str)],
) -> Option<&'a DebugValue> {
    let mut wanted: Vec<(String, String)> = labels
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    wanted.sort();
    snapshot.iter().find_map(|(key, _, value)| {
        let mut have: Vec<(String, String)> = key
            .labels()
            .map(|l| (l.key().to_string(), l.value().to_string()))
            .collect();
        have.sort();
        (key.name() == name && have == wanted).then_some(value)
    })
}

#[test]
fn grant_contention_and_timeout_are_counted() {
    let snap = record(|| async {
        let locker = Locker::with_backend(Memory::new());
        let mutex = locker.mutex("m");
        let guard = mutex.lock().await.unwrap();
        assert!(mutex.try_lock().await.unwrap().is_none());
        let waiter = mutex.clone().lock_timeout(Duration::from_millis(100));
        assert!(matches!(
            waiter.lock().await,
            Err(Error::NotAcquired { .. })
        ));
        let pending = tokio::spawn({
            let mutex = mutex.clone();
            async move { mutex.lock().await.unwrap() }
        });
        tokio::time::sleep(Duration::from_millis(10)).await;
        guard.release().await.unwrap();
        pending.await.unwrap().release().await.unwrap();
    });
    let labels = |outcome| {
        [
            ("backend", "memory"),
            ("kind", "mutex"),
            ("outcome", outcome),
        ]
    };
    assert_eq!(counter(&snap, "lock_acquire_total", &labels("granted")), 1);
    assert_eq!(counter(&snap, "lock_acquire_total", &labels("busy")), 1);
    assert_eq!(counter(&snap, "lock_acquire_total", &labels("timeout")), 1);
    assert_eq!(
        counter(&snap, "lock_acquire_total", &labels("granted_after_wait")),
        1
    );
    let kind = [("backend", "memory"), ("kind", "mutex")];
    assert_eq!(samples(&snap, "lock_acquire_duration_seconds", &kind), 2);
    assert_eq!(samples(&snap, "lock_held_duration_seconds", &kind), 2);
}

#[test]
fn cancelled_acquisition_is_counted() {
    let snap = record(|| async {
        let locker = Locker::with_backend(Memory::new());
        let guard = locker.semaphore("s", 1).acquire(1).await.unwrap();
        let sem = locker.semaphore("s", 1);
        assert!(
            tokio::time::timeout(Duration::from_millis(50), sem.acquire(1))
                .await
                .is_err()
        );
        guard.release().await.unwrap();
    });
    let labels = [
        ("backend", "memory"),
        ("kind", "semaphore"),
        ("outcome", "cancelled"),
    ];
    assert_eq!(counter(&snap, "lock_acquire_total", &labels), 1);
}

#[test]
fn extensions_and_loss_are_counted() {
    let snap = record(|| async {
        let locker = Locker::with_backend(Memory::new());
        let guard = locker
            .mutex("m")
            .ttl(Duration::from_secs(3))
            .auto_extend(true)
            .lock()
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(2500)).await; // two automatic extensions
        guard.extend(Duration::from_secs(3)).await.unwrap(); // one explicit
        locker.force_release("m").await.unwrap();
        tokio::time::timeout(Duration::from_secs(5), guard.lost())
            .await
            .unwrap();
        assert!(matches!(guard.release().await, Err(Error::Lost { .. })));
    });
    let ext = |outcome| [("backend", "memory"), ("outcome", outcome)];
    assert_eq!(counter(&snap, "lock_extend_total", &ext("ok")), 3);
    assert_eq!(counter(&snap, "lock_extend_total", &ext("expired")), 1);
    assert_eq!(
        counter(
            &snap,
            "lock_lost_total",
            &[("backend", "memory"), ("kind", "mutex")]
        ),
        1
    );
}

#[test]
fn every_release_path_is_counted() {
    let snap = record(|| async {
        let locker = Locker::with_backend(Memory::new());
        locker
            .rw_mutex("a")
            .read()
            .await
            .unwrap()
            .release()
            .await
            .unwrap();
        drop(locker.rw_mutex("b").write().await.unwrap());
        tokio::task::yield_now().await;
        let _held = locker.mutex("c").lock().await.unwrap();
        locker.close().await;
    });
    for via in ["explicit", "drop", "close"] {
        assert_eq!(
            counter(
                &snap,
                "lock_release_total",
                &[("backend", "memory"), ("via", via)]
            ),
            1,
            "{via}"
        );
    }
    let rw = [("backend", "memory"), ("kind", "rwmutex")];
    assert_eq!(samples(&snap, "lock_held_duration_seconds", &rw), 2);
}

#[test]
fn metrics_are_described_and_carry_no_lock_names() {
    let snap = record(|| async {
        let locker = Locker::with_backend(Memory::new());
        locker
            .mutex("secret-name")
            .lock()
            .await
            .unwrap()
            .release()
            .await
            .unwrap();
    });
    assert!(!snap.is_empty());
    for (key, described, _) in &snap {
        assert!(
            key.labels().all(|l| !l.value().contains("secret-name")),
            "{key:?}"
        );
        assert!(described, "{} has no description", key.name());
    }
}

/// Review finding 15: a lease released twice (by `close`, then by its guard) is counted once.
#[test]
fn a_lease_released_twice_is_counted_once() {
    let snap = record(|| async {
        let locker = Locker::with_backend(Memory::new());
        let guard = locker.mutex("m").lock().await.unwrap();
        locker.close().await;
        assert!(matches!(guard.release().await, Err(Error::NotHeld { .. })));
    });
    let total: u64 = ["explicit", "drop", "close"]
        .iter()
        .map(|via| {
            counter(
                &snap,
                "lock_release_total",
                &[("backend", "memory"), ("via", via)],
            )
        })
        .sum();
    assert_eq!(total, 1);
    let kind = [("backend", "memory"), ("kind", "mutex")];
    assert_eq!(samples(&snap, "lock_held_duration_seconds", &kind), 1);
}
