//! Redis: one instance, or Redlock over several, chosen by `LOCK_REDIS_URLS`.
//!
//! ```sh
//! # one instance
//! LOCK_PROVIDER=redis LOCK_REDIS_URLS=redis://127.0.0.1:6379 \
//!     cargo run --example redis --features redis
//! # Redlock over five independent instances (a majority, 3, must grant)
//! LOCK_PROVIDER=redis \
//! LOCK_REDIS_URLS=redis://127.0.0.1:7001,redis://127.0.0.1:7002,redis://127.0.0.1:7003,redis://127.0.0.1:7004,redis://127.0.0.1:7005 \
//!     cargo run --example redis --features redis
//! ```
//!
//! In code, without the environment: `Locker::with_backend(Redis::connect(config).await?)` with
//! a [`RedisConfig`](lock::provider::RedisConfig).

use lock::Locker;
use std::error::Error;
use std::process::ExitCode;
use std::time::Duration;

#[tokio::main]
async fn main() -> ExitCode {
    match run().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            let mut source = e.source();
            while let Some(cause) = source {
                eprintln!("  caused by: {cause}");
                source = cause.source();
            }
            ExitCode::FAILURE
        }
    }
}

async fn run() -> Result<(), Box<dyn Error>> {
    let locker = Locker::from_env().await?;
    println!("backend: {}", locker.backend().name());

    // A mutex with auto-extension: held as long as we need it, lost only if Redis is.
    let mutex = locker
        .mutex("examples/redis/report")
        .ttl(Duration::from_secs(10))
        .auto_extend(true)
        .metadata("example", "redis");
    let guard = mutex.lock().await?;
    println!("locked with fencing token {}", guard.token());
    for holder in locker.inspect("examples/redis/report").await? {
        println!(
            "holder: owner {} token {} metadata {:?}",
            holder.owner, holder.token, holder.metadata
        );
    }
    guard.release().await?;

    // A semaphore of 3 permits: with Redlock a grant needs more than a majority (4 of 5).
    let pool = locker.semaphore("examples/redis/pool", 3);
    let permits = pool.acquire(2).await?;
    println!("{} of 3 permits left", pool.available().await?);
    permits.release().await?;

    locker.close().await;
    Ok(())
}
