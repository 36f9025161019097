//! [`Mutex`]: an exclusive lock.

use crate::acquire::{HandleCore, Want};
use crate::handle::handle_options;
use crate::{Guard, LockKind, Mode, Result};

/// An exclusive distributed lock. Create one with [`Locker::mutex`](crate::Locker::mutex).
///
/// The handle is cheap to clone and holds no lease itself; each [`lock`](Mutex::lock) returns a
/// [`Guard`]. Locks are not reentrant: locking a mutex that the same locker already holds waits
/// like anyone else.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> lock_core::Result<()> {
/// use lock_core::Locker;
/// use lock_memory::Memory;
/// use std::time::Duration;
///
/// let locker = Locker::with_backend(Memory::new());
/// let mutex = locker.mutex("invoices").ttl(Duration::from_secs(10));
/// let guard = mutex.lock().await?;
/// assert!(mutex.try_lock().await?.is_none()); // busy
/// guard.release().await?;
/// assert!(mutex.try_lock().await?.is_some());
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct Mutex {
    pub(crate) core: HandleCore,
}

const WANT: Want = Want {
    kind: LockKind::Mutex,
    mode: Mode::Exclusive,
    permits: 1,
    limit: 1,
};

handle_options!(Mutex);

impl Mutex {
    /// Waits until the lock is granted, woken by the backend's change signals.
    ///
    /// # Errors
    ///
    /// - [`Error::NotAcquired`](crate::Error::NotAcquired) past the
    ///   [`lock_timeout`](Mutex::lock_timeout).
    /// - [`Error::InvalidArgument`](crate::Error::InvalidArgument) for a bad name or TTL.
    /// - [`Error::ProviderUnavailable`](crate::Error::ProviderUnavailable) after the retry
    ///   policy's `max_attempts` consecutive backend failures.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: dropping the future leaves nothing held; a lease or waiting claim that the
    /// backend may have recorded is deleted in the background (and expires after its TTL at the
    /// latest).
    pub async fn lock(&self) -> Result<Guard> {
        Ok(self
            .core
            .acquire(WANT, true)
            .await?
            .expect("a waiting acquisition only returns when granted"))
    }

    /// Makes one attempt: `Ok(None)` when the lock is held by someone else.
    ///
    /// # Errors
    ///
    /// As [`lock`](Mutex::lock), except `NotAcquired`.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe, as [`lock`](Mutex::lock).
    pub async fn try_lock(&self) -> Result<Option<Guard>> {
        self.core.acquire(WANT, false).await
    }
}
