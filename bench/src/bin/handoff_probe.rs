//! A profiling target: where the time of a contended hand-off goes on one backend.
//!
//! `LOCK_PROVIDER=redis LOCK_REDIS_URLS=redis://127.0.0.1:6390 cargo run --release --bin handoff_probe`

use lock::Locker;
use std::time::{Duration, Instant};

fn main() -> lock::Result<()> {
    let workers = std::env::var("WORKERS").ok().and_then(|w| w.parse().ok()).unwrap_or(2);
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(run())
}

async fn run() -> lock::Result<()> {
    let a = Locker::from_env().await?;
    let b = Locker::from_env().await?;
    let name = format!("probe-{}", std::process::id());
    let (mut release_rtt, mut grant) = (Vec::new(), Vec::new());
    for _ in 0..50 {
        let held = a.mutex(&name).lock().await?;
        let waiter = b.mutex(&name);
        let task = tokio::spawn(async move {
            let guard = waiter.lock().await?;
            let at = Instant::now();
            guard.release().await?;
            Ok::<_, lock::Error>(at)
        });
        tokio::time::sleep(Duration::from_millis(30)).await;
        let start = Instant::now();
        held.release().await?;
        release_rtt.push(start.elapsed());
        grant.push(task.await.expect("waiter panicked")?.duration_since(start));
    }
    // The same release with a waiting claim on the server but nobody listening.
    let mut quiet = Vec::new();
    for _ in 0..50 {
        let held = a.mutex(&name).lock().await?;
        let mut request = lock::AcquireRequest::new(
            lock::LockKey::new(&name, lock::LockKind::Mutex)?,
            lock::LeaseId::generate(),
            "probe".into(),
            lock::Mode::Exclusive,
            1,
            1,
            Duration::from_secs(30),
            Default::default(),
        );
        request.claim = Some(Duration::from_secs(5));
        b.backend().acquire_dyn(&request).await?;
        let mut sub = if std::env::var("SUBSCRIBE").is_ok() {
            Some(b.backend().subscribe_dyn(&request).await?)
        } else {
            None
        };
        let start = Instant::now();
        held.release().await?;
        quiet.push(start.elapsed());
        if let Some(sub) = sub.as_mut() {
            let _ = tokio::time::timeout(Duration::from_secs(1), sub.changed()).await;
        }
        let _ = b.backend().release_dyn(&request.key, request.lease_id).await;
    }
    quiet.sort();
    println!("release with a claim but no listener: median {:?}", quiet[25]);
    release_rtt.sort();
    grant.sort();
    println!(
        "release round trip median {:?}; grant after release start median {:?}",
        release_rtt[25], grant[25]
    );
    Ok(())
}
