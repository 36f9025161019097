//! PostgreSQL: a mutex, a read-write lock and a semaphore, configured from the environment.
//!
//! ```sh
//! LOCK_PROVIDER=postgres LOCK_POSTGRES_URL=postgres://postgres@127.0.0.1:5432/postgres \
//!     cargo run -p lock --features postgres --example postgres
//! # lease mode (no session per held lock; works behind PgBouncer transaction pooling):
//! LOCK_PROVIDER=postgres LOCK_POSTGRES_MODE=lease LOCK_POSTGRES_URL=postgres://... \
//!     cargo run -p lock --features postgres --example postgres
//! ```

use lock::{Config, Locker, Provider};
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
    let mut config = Config::from_env()?;
    if config.provider != Provider::Postgres {
        return Err("set LOCK_PROVIDER=postgres and LOCK_POSTGRES_URL to run this example".into());
    }
    config.default_ttl = Duration::from_secs(10);
    config.extend_interval = Duration::from_secs(3); // must stay below the TTL
    println!(
        "PostgreSQL in {} mode, namespace {}",
        config.postgres.mode, config.postgres.namespace
    );
    let locker = Locker::new(config).await?;

    let mutex = locker
        .mutex("example/report")
        .metadata("host", "example")
        .auto_extend(true);
    let guard = mutex.lock().await?;
    println!("mutex held with fencing token {}", guard.token());
    for holder in locker.inspect("example/report").await? {
        println!(
            "  holder {} token {} metadata {:?}",
            holder.owner, holder.token, holder.metadata
        );
    }
    assert!(mutex.try_lock().await?.is_none(), "not reentrant");
    guard.release().await?;

    let rw = locker.rw_mutex("example/config");
    let (r1, r2) = (rw.read().await?, rw.read().await?);
    println!("two readers: tokens {} and {}", r1.token(), r2.token());
    r1.release().await?;
    r2.release().await?;
    let w = rw.write().await?;
    println!("writer: token {}", w.token());
    w.release().await?;

    let gpus = locker.semaphore("example/gpus", 4);
    let permits = gpus.acquire(3).await?;
    println!("3 of 4 permits held, {} available", gpus.available().await?);
    permits.release().await?;

    locker.close().await;
    Ok(())
}
