//! `try_lock`: one attempt, `Ok(None)` when the lock is busy. Two lockers on one in-memory
//! store stand for two processes sharing a server.

use lock::Locker;
use lock::provider::Memory;

#[tokio::main]
async fn main() -> lock::Result<()> {
    let store = Memory::new();
    let a = Locker::from(Locker::builder(store.clone()).owner("process-a").build()?);
    let b = Locker::from(Locker::builder(store).owner("process-b").build()?);
    let name = "report-generation";

    let held = a.mutex(name).lock().await?;
    println!("process-a holds {name:?} (token {})", held.token());

    match b.mutex(name).try_lock().await? {
        Some(guard) => {
            println!("process-b got it?! (token {})", guard.token());
            guard.release().await?;
        }
        None => println!("process-b: try_lock returned None, the lock is busy; skipping the job"),
    }

    held.release().await?;
    println!("process-a released {name:?}");

    let guard = b
        .mutex(name)
        .try_lock()
        .await?
        .expect("the lock is free now");
    println!(
        "process-b: try_lock succeeded with token {} (larger than process-a's)",
        guard.token()
    );
    guard.release().await?;
    Ok(())
}
