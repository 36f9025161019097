//! The basics: a locker configured from the `LOCK_*` environment variables, one mutex locked
//! and released.
//!
//! ```sh
//! cargo run --example basic
//! LOCK_DEFAULT_TTL=10s LOCK_OWNER_ID=worker-1 cargo run --example basic
//! LOCK_DEFAULT_TTL=abc cargo run --example basic   # fails: names LOCK_DEFAULT_TTL and "abc"
//! ```

use lock::Locker;
use std::error::Error;
use std::process::ExitCode;

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
    // LOCK_PROVIDER selects the backend (memory unless set); the other LOCK_* variables set the
    // defaults of every handle.
    let locker = Locker::from_env().await?;
    println!(
        "locker on the {} backend, owner {}, default ttl {:?}",
        locker.backend_name(),
        locker.owner(),
        locker.default_ttl()
    );

    let name = "basic-example";
    let guard = locker.mutex(name).lock().await?;
    println!(
        "acquired {name:?} with fencing token {} on the {} backend",
        guard.token(),
        locker.backend_name()
    );

    // ... the work the lock protects goes here, passing guard.token() along with each write ...

    guard.release().await?;
    println!("released {name:?}");
    locker.close().await;
    Ok(())
}
