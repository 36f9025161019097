//! [`RwMutex`]: a read-write lock with writer preference.

use crate::acquire::{HandleCore, Want};
use crate::handle::handle_options;
use crate::{Guard, LockKind, Mode, Result};

/// A distributed read-write lock. Create one with [`Locker::rw_mutex`](crate::Locker::rw_mutex).
///
/// Readers share; a writer excludes everyone. Writers are preferred: once a writer waits, new
/// readers wait behind it, so a stream of overlapping readers cannot starve writers. A waiting
/// writer's claim is itself a short lease refreshed while it waits, so a writer that crashes
/// while waiting blocks readers for at most a few seconds. Each reader's lease expires on its
/// own. Readers and writers share one fencing-token sequence.
///
/// There are no upgrades: a `write()` while holding a `read()` of the same lock, or a second
/// `read()` while a writer waits, waits for itself — a deadlock until the held lease's TTL runs
/// out (for ever with auto-extension), and since writers are preferred it blocks every new
/// reader too. Release the read lease first.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> lock_core::Result<()> {
/// use lock_core::Locker;
/// use lock_memory::Memory;
///
/// let locker = Locker::with_backend(Memory::new());
/// let rw = locker.rw_mutex("catalog");
/// let r1 = rw.read().await?;
/// let r2 = rw.read().await?; // readers share
/// assert!(rw.try_write().await?.is_none());
/// r1.release().await?;
/// r2.release().await?;
/// let w = rw.write().await?;
/// assert!(rw.try_read().await?.is_none());
/// w.release().await?;
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct RwMutex {
    pub(crate) core: HandleCore,
}

const READ: Want = Want {
    kind: LockKind::RwMutex,
    mode: Mode::Shared,
    permits: 1,
    limit: u32::MAX,
};

const WRITE: Want = Want {
    kind: LockKind::RwMutex,
    mode: Mode::Exclusive,
    permits: 1,
    limit: u32::MAX,
};

handle_options!(RwMutex);

impl RwMutex {
    /// Waits for a shared (read) lease: granted while no writer holds or waits.
    ///
    /// # Errors
    ///
    /// As [`Mutex::lock`](crate::Mutex::lock).
    ///
    /// # Cancel safety
    ///
    /// Cancel safe, as [`Mutex::lock`](crate::Mutex::lock).
    pub async fn read(&self) -> Result<Guard> {
        Ok(self
            .core
            .acquire(READ, true)
            .await?
            .expect("a waiting acquisition only returns when granted"))
    }

    /// Waits for the exclusive (write) lease. While it waits, new readers wait behind it.
    ///
    /// # Errors
    ///
    /// As [`Mutex::lock`](crate::Mutex::lock).
    ///
    /// # Cancel safety
    ///
    /// Cancel safe, as [`Mutex::lock`](crate::Mutex::lock): a dropped wait withdraws its claim,
    /// and readers proceed.
    pub async fn write(&self) -> Result<Guard> {
        Ok(self
            .core
            .acquire(WRITE, true)
            .await?
            .expect("a waiting acquisition only returns when granted"))
    }

    /// One attempt at a read lease: `Ok(None)` while a writer holds or waits.
    ///
    /// # Errors
    ///
    /// As [`Mutex::try_lock`](crate::Mutex::try_lock).
    ///
    /// # Cancel safety
    ///
    /// Cancel safe, as [`Mutex::lock`](crate::Mutex::lock).
    pub async fn try_read(&self) -> Result<Option<Guard>> {
        self.core.acquire(READ, false).await
    }

    /// One attempt at the write lease: `Ok(None)` while anyone holds or a writer waits.
    ///
    /// # Errors
    ///
    /// As [`Mutex::try_lock`](crate::Mutex::try_lock).
    ///
    /// # Cancel safety
    ///
    /// Cancel safe, as [`Mutex::lock`](crate::Mutex::lock).
    pub async fn try_write(&self) -> Result<Option<Guard>> {
        self.core.acquire(WRITE, false).await
    }
}
