//! A counting semaphore: `acquire(n)` takes n of its permits, `available()` counts the free
//! ones, and a request that does not fit waits (or `try_acquire` returns `None`).

use lock::Locker;
use lock::provider::Memory;
use std::time::Duration;

#[tokio::main]
async fn main() -> lock::Result<()> {
    let locker = Locker::with_backend(Memory::new());
    let gpus = locker.semaphore("gpu-pool", 4);
    println!(
        "semaphore {:?} with {} permits, {} available",
        gpus.name(),
        gpus.limit(),
        gpus.available().await?
    );

    let training = gpus.acquire(3).await?;
    println!(
        "training job took {} permits (token {}); available: {}",
        training.permits(),
        training.token(),
        gpus.available().await?
    );

    println!(
        "try_acquire(2): {}",
        if gpus.try_acquire(2).await?.is_some() {
            "granted"
        } else {
            "None: only 1 permit is free"
        }
    );

    let inference = gpus.acquire(1).await?;
    println!(
        "inference job took 1 permit; available: {}",
        gpus.available().await?
    );

    // A request for 2 waits until enough permits come back.
    let waiting = tokio::spawn({
        let gpus = gpus.clone();
        async move {
            let permits = gpus.acquire(2).await?;
            println!("batch job: got its 2 permits (token {})", permits.token());
            permits.release().await
        }
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    println!("training job releases its 3 permits");
    training.release().await?;
    waiting.await.expect("batch task")?;

    inference.release().await?;
    println!("all released; available: {}", gpus.available().await?);

    match gpus.acquire(5).await {
        Err(e) => println!("acquire(5) on a limit of 4 fails at once: {e}"),
        Ok(_) => unreachable!("5 permits of 4"),
    }
    Ok(())
}
