//! A profiling target: uncontended lock + release cycles on the memory backend, nothing else.
//!
//! `perf record -g cargo run --release --bin memory_cycle -- 2000000`

use lock::{Locker, provider::Memory};
use std::time::Instant;

#[tokio::main(flavor = "current_thread")]
async fn main() -> lock::Result<()> {
    let n: u32 = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(1_000_000);
    let locker = Locker::with_backend(Memory::new());
    let mutex = locker.mutex("cycle");
    let started = Instant::now();
    for _ in 0..n {
        mutex.lock().await?.release().await?;
    }
    println!("{:.3} µs per cycle", started.elapsed().as_secs_f64() * 1e6 / f64::from(n));
    Ok(())
}
