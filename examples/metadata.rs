//! Lock metadata and inspection: key/value pairs stored with a lease, shown to anyone who
//! inspects the lock, with its owner, token, mode and expiry.

use lock::{Config, Locker};
use std::time::{Duration, SystemTime};

#[tokio::main]
async fn main() -> lock::Result<()> {
    // A locker from a Config built in code (Locker::from_env reads the same from LOCK_*).
    let mut config = Config::default();
    config.owner_id = Some("billing-worker-1".into());
    config.default_ttl = Duration::from_secs(20);
    let locker = Locker::new(config).await?;
    let name = "invoice-run";

    let guard = locker
        .mutex(name)
        .metadata("host", "node-7")
        .metadata("job", "monthly-invoices")
        .lock()
        .await?;
    println!("acquired {name:?} (token {})", guard.token());

    for info in locker.inspect(name).await? {
        let ttl_left = info
            .expires_at
            .duration_since(SystemTime::now())
            .unwrap_or_default();
        println!(
            "holder: owner={} kind={} mode={:?} token={} permits={} expires in ~{}s",
            info.owner,
            info.kind,
            info.mode,
            info.token,
            info.permits,
            ttl_left.as_secs_f64().round()
        );
        for (key, value) in &info.metadata {
            println!("  metadata {key} = {value}");
        }
    }

    guard.release().await?;
    println!(
        "released; holders now: {}",
        locker.inspect(name).await?.len()
    );
    Ok(())
}
