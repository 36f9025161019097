//! Auto-extension: a lease kept alive past its TTL by a background keeper, and lost-lock
//! detection when the lease is taken away (here with an administrative force-release).

use lock::Locker;
use lock::provider::Memory;
use std::time::Duration;

#[tokio::main]
async fn main() -> lock::Result<()> {
    let store = Memory::new();
    let worker = Locker::from(Locker::builder(store.clone()).owner("worker").build()?);
    let admin = Locker::from(Locker::builder(store).owner("admin").build()?);
    let name = "long-migration";

    let guard = worker
        .mutex(name)
        .ttl(Duration::from_millis(600))
        .auto_extend(true) // extended every ttl/3 = 200ms
        .on_lost(|info| {
            println!(
                "on_lost: lease on {:?} (token {}) is gone; stop the work!",
                info.name, info.token
            )
        })
        .lock()
        .await?;
    println!(
        "worker acquired {name:?} with a 600ms TTL and auto-extension (token {})",
        guard.token()
    );

    tokio::time::sleep(Duration::from_millis(1500)).await;
    let held = admin.mutex(name).try_lock().await?.is_none();
    println!(
        "1.5s later (2.5 TTLs): still held by the worker: {held}; lost: {}",
        guard.is_lost()
    );

    let lost = guard.lost();
    let deleted = admin.force_release(name).await?;
    println!("admin force-released {name:?} ({deleted} lease deleted)");

    match tokio::time::timeout(Duration::from_secs(2), lost).await {
        Ok(()) => println!(
            "guard.lost() completed at the next extension; is_lost: {}",
            guard.is_lost()
        ),
        Err(_) => println!("guard.lost() did not complete within 2s"),
    }

    match guard.release().await {
        Ok(()) => println!("released"),
        Err(e) => println!("release after the loss reports: {e}"),
    }
    Ok(())
}
