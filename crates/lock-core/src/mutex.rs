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
    /// Returns within the [`lock_timeout`](Mutex::lock_timeout) plus a small slack (at most
    /// 250 ms of scheduling) even when the backend hangs; `lock_timeout(Duration::ZERO)` makes
    /// one attempt and `lock_timeout(Duration::MAX)` (like none) waits until granted. A grant
    /// whose answer arrives after its validity is given back, and the wait goes on. The future
    /// borrows the handle: clone the handle (cheap) to move a wait into a task.
    ///
    /// Locking a mutex the same locker already holds waits for it (locks are not reentrant).
    ///
    /// # Errors
    ///
    /// - [`Error::NotAcquired`](crate::Error::NotAcquired) past the
    ///   [`lock_timeout`](Mutex::lock_timeout).
    /// - [`Error::InvalidArgument`](crate::Error::InvalidArgument) for a bad name, a TTL of zero
    ///   or above [`MAX_TTL`](crate::MAX_TTL), an extend interval not below the lease's
    ///   validity, or a bad retry policy; checked before anything is sent.
    /// - [`Error::ProviderUnavailable`](crate::Error::ProviderUnavailable) after the retry
    ///   policy's `max_attempts` consecutive failed round trips (a round trip without an answer
    ///   within the locker's request timeout counts as failed).
    /// - [`Error::Closed`](crate::Error::Closed) once the locker was closed.
    /// - [`Error::Unsupported`](crate::Error::Unsupported) outside a tokio runtime.
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

    /// Makes exactly one attempt, one round trip bounded by the locker's request timeout:
    /// `Ok(None)` when the lock is held (or the grant arrived too late to be valid). The
    /// [`lock_timeout`](Mutex::lock_timeout) and the retry policy do not apply.
    ///
    /// # Errors
    ///
    /// As [`lock`](Mutex::lock), except `NotAcquired`: a failed round trip is
    /// [`Error::ProviderUnavailable`](crate::Error::ProviderUnavailable) at once (a grant the
    /// backend may have applied is released in the background).
    ///
    /// # Cancel safety
    ///
    /// Cancel safe, as [`lock`](Mutex::lock).
    pub async fn try_lock(&self) -> Result<Option<Guard>> {
        self.core.acquire(WANT, false).await
    }
}
