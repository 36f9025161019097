//! The etcd backend: a mutex, a read-write lock and a semaphore on an etcd cluster, configured
//! from the environment.
//!
//! ```sh
//! LOCK_ETCD_ENDPOINTS=127.0.0.1:2379 cargo run -p lock --example etcd --features etcd
//! LOCK_ETCD_ENDPOINTS=10.0.0.1:2379,10.0.0.2:2379,10.0.0.3:2379 LOCK_ETCD_PREFIX=/myapp/locks/ \
//!     cargo run -p lock --example etcd --features etcd
//! ```
//!
//! `LOCK_PROVIDER` defaults to `etcd` here; every other `LOCK_*` variable works as usual.

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
    if std::env::var_os("LOCK_PROVIDER").is_none() {
        config.provider = Provider::Etcd;
    }
    let locker = Locker::new(config).await?;
    println!(
        "locker on the {} backend, owner {}",
        locker.backend_name(),
        locker.owner()
    );

    // A mutex with auto-extension: held past its TTL for as long as the guard lives.
    let mutex = locker
        .mutex("etcd-example/report")
        .ttl(Duration::from_secs(5))
        .auto_extend(true)
        .metadata("purpose", "example");
    let guard = mutex.lock().await?;
    println!("mutex held with fencing token {}", guard.token());
    for holder in locker.inspect("etcd-example/report").await? {
        println!(
            "  holder {} token {} expires {:?} metadata {:?}",
            holder.owner, holder.token, holder.expires_at, holder.metadata
        );
    }
    guard.release().await?;

    // Readers share, a writer excludes them; tokens keep growing across both.
    let rw = locker.rw_mutex("etcd-example/config");
    let (r1, r2) = (rw.read().await?, rw.read().await?);
    println!("two readers: tokens {} and {}", r1.token(), r2.token());
    assert!(rw.try_write().await?.is_none());
    r1.release().await?;
    r2.release().await?;
    let writer = rw.write().await?;
    println!("writer: token {}", writer.token());
    writer.release().await?;

    // A semaphore of 3 permits.
    let pool = locker.semaphore("etcd-example/gpus", 3);
    let two = pool.acquire(2).await?;
    println!("2 permits taken, {} available", pool.available().await?);
    two.release().await?;

    locker.close().await;
    Ok(())
}
