//! [`Semaphore`]: a weighted counting semaphore.

use crate::acquire::{HandleCore, Want};
use crate::handle::handle_options;
use crate::{Error, Guard, LockKind, Mode, Result};

/// A distributed counting semaphore with `limit` permits. Create one with
/// [`Locker::semaphore`](crate::Locker::semaphore).
///
/// Each [`acquire(n)`](Semaphore::acquire) is a lease of `n` permits with its own token and
/// expiry; a crashed holder's permits come back when its TTL runs out. Waiting requests are
/// served first-come: a waiting request for many permits keeps later, smaller ones from jumping
/// ahead of it, and a cancelled one stops blocking them at once. Every handle of one semaphore
/// must use the same limit: a different one is rejected with both limits in the message.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> lock_core::Result<()> {
/// use lock_core::Locker;
/// use lock_memory::Memory;
///
/// let locker = Locker::with_backend(Memory::new());
/// let pool = locker.semaphore("gpu", 4);
/// let permit = pool.acquire(3).await?;
/// assert_eq!(pool.available().await?, 1);
/// assert!(pool.try_acquire(2).await?.is_none());
/// permit.release().await?;
/// assert_eq!(pool.available().await?, 4);
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct Semaphore {
    pub(crate) core: HandleCore,
    pub(crate) limit: u32,
}

handle_options!(Semaphore);

impl Semaphore {
    /// The number of permits of this semaphore.
    pub fn limit(&self) -> u32 {
        self.limit
    }

    fn want(&self, n: u32) -> Result<Want> {
        if self.limit == 0 {
            return Err(Error::invalid_argument(format!(
                "semaphore {:?} has limit 0; the limit must be at least 1",
                self.core.name
            )));
        }
        if n == 0 || n > self.limit {
            return Err(Error::invalid_argument(format!(
                "semaphore {:?}: cannot acquire {n} permits; n must be in 1..={}",
                self.core.name, self.limit
            )));
        }
        Ok(Want {
            kind: LockKind::Semaphore,
            mode: Mode::Shared,
            permits: n,
            limit: self.limit,
        })
    }

    /// Waits for `n` permits. A holder asking for more permits of the same semaphore waits
    /// for itself (a deadlock until its TTL runs out): release first.
    ///
    /// # Errors
    ///
    /// - [`Error::InvalidArgument`] at once for `n = 0`, `n` over the limit, or a limit that
    ///   differs from the one stored for this semaphore.
    /// - Otherwise as [`Mutex::lock`](crate::Mutex::lock).
    ///
    /// # Cancel safety
    ///
    /// Cancel safe, as [`Mutex::lock`](crate::Mutex::lock): a dropped wait withdraws its claim,
    /// and smaller requests behind it proceed.
    pub async fn acquire(&self, n: u32) -> Result<Guard> {
        let want = self.want(n)?;
        Ok(self
            .core
            .acquire(want, true)
            .await?
            .expect("a waiting acquisition only returns when granted"))
    }

    /// One attempt at `n` permits: `Ok(None)` when they are not free (or a request that waits
    /// longer comes first).
    ///
    /// # Errors
    ///
    /// As [`acquire`](Semaphore::acquire), except `NotAcquired`: like
    /// [`Mutex::try_lock`](crate::Mutex::try_lock), exactly one round trip.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe, as [`Mutex::lock`](crate::Mutex::lock).
    pub async fn try_acquire(&self, n: u32) -> Result<Option<Guard>> {
        let want = self.want(n)?;
        self.core.acquire(want, false).await
    }

    /// This handle's limit minus the permits held by unexpired leases. Inspection does not
    /// return the stored limit: a handle whose limit differs from the stored one gets a number
    /// computed from its own limit (the mismatch is reported by [`acquire`](Semaphore::acquire)).
    /// Bounded by the locker's request timeout.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidArgument`] for a bad name; [`Error::ProviderUnavailable`].
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: it only reads.
    pub async fn available(&self) -> Result<u32> {
        crate::validate_name(&self.core.name)?;
        let timeout = self.core.shared.request_timeout;
        let backend = &self.core.shared.backend;
        let holders = tokio::time::timeout(timeout, backend.inspect_dyn(&self.core.name))
            .await
            .map_err(|_| crate::time::no_reply(backend.name(), "inspect", timeout))??;
        let held: u64 = holders
            .iter()
            .filter(|info| info.kind == LockKind::Semaphore)
            .map(|info| u64::from(info.permits))
            .sum();
        Ok(u32::try_from(u64::from(self.limit).saturating_sub(held)).unwrap_or(0))
    }
}
