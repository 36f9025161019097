//! A read-write lock: readers share it, a writer excludes everyone, and a waiting writer makes
//! new readers wait behind it (writer preference), so readers cannot starve writers.

use lock::Locker;
use lock::provider::Memory;
use std::time::Duration;

#[tokio::main]
async fn main() -> lock::Result<()> {
    let locker = Locker::with_backend(Memory::new());
    let rw = locker.rw_mutex("catalog");

    let r1 = rw.read().await?;
    let r2 = rw.read().await?;
    println!(
        "two readers share the lock (tokens {} and {})",
        r1.token(),
        r2.token()
    );
    println!(
        "try_write while readers hold it: {}",
        describe(rw.try_write().await?.is_some())
    );

    // A writer starts waiting for the readers to finish.
    let writer = tokio::spawn({
        let rw = rw.clone();
        async move {
            let w = rw.write().await?;
            println!("writer: granted (token {})", w.token());
            tokio::time::sleep(Duration::from_millis(100)).await;
            println!("writer: done, releasing");
            w.release().await
        }
    });
    tokio::time::sleep(Duration::from_millis(100)).await;

    // Writer preference: a new reader does not get in ahead of the waiting writer.
    println!(
        "try_read while a writer waits: {}",
        describe(rw.try_read().await?.is_some())
    );
    let late_reader = tokio::spawn({
        let rw = rw.clone();
        async move {
            let r = rw.read().await?;
            println!(
                "late reader: granted after the writer (token {})",
                r.token()
            );
            r.release().await
        }
    });
    tokio::time::sleep(Duration::from_millis(50)).await;

    println!("the first readers release");
    r1.release().await?;
    r2.release().await?;

    writer.await.expect("writer task")?;
    late_reader.await.expect("reader task")?;
    Ok(())
}

fn describe(granted: bool) -> &'static str {
    if granted { "granted" } else { "busy (None)" }
}
