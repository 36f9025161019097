//! Bounded waits: `lock_timeout` gives up with `Error::NotAcquired`, and dropping a pending
//! acquisition (here with `tokio::time::timeout`) leaves nothing behind.

use lock::provider::Memory;
use lock::{Error, Locker};
use std::time::{Duration, Instant};

#[tokio::main]
async fn main() -> lock::Result<()> {
    let store = Memory::new();
    let a = Locker::with_backend(store.clone());
    let b = Locker::with_backend(store);
    let name = "nightly-backup";

    let held = a.mutex(name).lock().await?;
    println!("A holds {name:?}");

    let started = Instant::now();
    match b
        .mutex(name)
        .lock_timeout(Duration::from_millis(300))
        .lock()
        .await
    {
        Err(Error::NotAcquired { name, waited }) => println!(
            "B gave up after {:?}: NotAcquired for {name:?} (waited {waited:?})",
            started.elapsed()
        ),
        Err(e) => return Err(e),
        Ok(_) => unreachable!("A holds the lock"),
    }

    // The same with the caller's own deadline: the pending future is dropped (cancel safe).
    let mutex = b.mutex(name);
    match tokio::time::timeout(Duration::from_millis(200), mutex.lock()).await {
        Err(_) => println!("tokio::time::timeout dropped B's pending lock() after 200ms"),
        Ok(_) => unreachable!("A holds the lock"),
    }

    held.release().await?;
    println!("A released");
    let guard = mutex
        .lock_timeout(Duration::from_millis(300))
        .lock()
        .await?;
    println!(
        "B acquired at once: no stale waiter was left behind (token {})",
        guard.token()
    );
    guard.release().await?;
    Ok(())
}
