//! [`Locker`]: the entry point that makes lock handles on one backend.

use crate::acquire::{HandleCore, Shared};
use crate::backend::{Backend, DynBackend};
use crate::guard::Live;
use crate::{
    DEFAULT_TTL, Error, LockInfo, LockOptions, Mutex, Result, RetryPolicy, RwMutex, Semaphore,
    validate_name,
};
use std::sync::Arc;
use std::time::Duration;

/// Makes lock handles on one backend, with the defaults they share: owner id, TTL,
/// auto-extension period and retry policy.
///
/// Cheap to clone; clones share the backend and the set of held leases.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> lock_core::Result<()> {
/// use lock_core::Locker;
/// use lock_memory::Memory;
/// use std::time::Duration;
///
/// let locker = Locker::builder(Memory::new())
///     .owner("billing-worker-1")
///     .default_ttl(Duration::from_secs(10))
///     .build()?;
/// let guard = locker.mutex("nightly-report").metadata("host", "a1").lock().await?;
/// let holders = locker.inspect("nightly-report").await?;
/// assert_eq!(holders[0].owner, "billing-worker-1");
/// assert_eq!(holders[0].metadata["host"], "a1");
/// guard.release().await?;
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct Locker {
    shared: Arc<Shared>,
}

impl Locker {
    /// A locker on `backend` with the default settings and a fresh ULID as owner id.
    pub fn with_backend(backend: impl Backend) -> Self {
        Self::builder(backend)
            .build()
            .expect("the default settings are valid")
    }

    /// A builder for a locker on `backend`.
    pub fn builder(backend: impl Backend) -> LockerBuilder {
        Self::builder_dyn(Arc::new(backend))
    }

    /// A builder for a locker on a backend chosen at run time.
    pub fn builder_dyn(backend: Arc<dyn DynBackend>) -> LockerBuilder {
        LockerBuilder {
            backend,
            owner: None,
            default_ttl: DEFAULT_TTL,
            extend_interval: None,
            retry: RetryPolicy::default(),
        }
    }

    /// The owner id recorded in this locker's leases.
    pub fn owner(&self) -> &str {
        &self.shared.owner
    }

    /// The backend's name (`memory`, `redis`, ...).
    pub fn backend_name(&self) -> &'static str {
        self.shared.backend.name()
    }

    /// The backend, for operations the handles do not cover.
    pub fn backend(&self) -> &Arc<dyn DynBackend> {
        &self.shared.backend
    }

    /// The default lease TTL of this locker's handles.
    pub fn default_ttl(&self) -> Duration {
        self.shared.default_ttl
    }

    /// The default retry policy of this locker's handles.
    pub fn retry_policy(&self) -> RetryPolicy {
        self.shared.retry
    }

    /// A handle on the mutex `name`, with the locker's defaults. Name rules (non-empty, at most
    /// 1024 bytes) are checked when the handle is used.
    pub fn mutex(&self, name: impl Into<String>) -> Mutex {
        self.mutex_with(name, LockOptions::default())
    }

    /// A handle on the mutex `name` with `options`.
    pub fn mutex_with(&self, name: impl Into<String>, options: LockOptions) -> Mutex {
        Mutex {
            core: self.core(name, options),
        }
    }

    /// A handle on the read-write lock `name`.
    pub fn rw_mutex(&self, name: impl Into<String>) -> RwMutex {
        self.rw_mutex_with(name, LockOptions::default())
    }

    /// A handle on the read-write lock `name` with `options`.
    pub fn rw_mutex_with(&self, name: impl Into<String>, options: LockOptions) -> RwMutex {
        RwMutex {
            core: self.core(name, options),
        }
    }

    /// A handle on the semaphore `name` with `limit` permits.
    pub fn semaphore(&self, name: impl Into<String>, limit: u32) -> Semaphore {
        self.semaphore_with(name, limit, LockOptions::default())
    }

    /// A handle on the semaphore `name` with `limit` permits and `options`.
    pub fn semaphore_with(
        &self,
        name: impl Into<String>,
        limit: u32,
        options: LockOptions,
    ) -> Semaphore {
        Semaphore {
            core: self.core(name, options),
            limit,
        }
    }

    fn core(&self, name: impl Into<String>, options: LockOptions) -> HandleCore {
        HandleCore::new(Arc::clone(&self.shared), name.into(), options)
    }

    /// The current holders of every lock named `name` (mutex, read-write lock and semaphore),
    /// whoever holds them.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidArgument`] for a bad name; [`Error::ProviderUnavailable`].
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: it only reads.
    pub async fn inspect(&self, name: &str) -> Result<Vec<LockInfo>> {
        validate_name(name)?;
        self.shared.backend.inspect_dyn(name).await
    }

    /// Administrative: deletes every lease and waiting claim of every lock named `name`, and
    /// returns how many leases were deleted. Holders find out at their next extension (their
    /// `on_lost` runs and `lost()` completes); with auto-extension that is within one extend
    /// interval.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidArgument`] for a bad name; [`Error::ProviderUnavailable`].
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: if cancelled, the leases may or may not have been deleted.
    pub async fn force_release(&self, name: &str) -> Result<usize> {
        validate_name(name)?;
        self.shared.backend.force_release_dyn(name).await
    }

    /// Stops every auto-extension of this locker (and its clones), releases every lease they
    /// hold, then closes the backend's connections. Guards released here report
    /// [`Error::NotHeld`] if released again.
    ///
    /// # Cancel safety
    ///
    /// Not cancel safe: if cancelled, some leases may be left to expire after their TTL.
    pub async fn close(&self) {
        for held in self.shared.live.drain() {
            held.close().await;
        }
        self.shared.backend.close_dyn().await;
    }
}

impl std::fmt::Debug for Locker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Locker")
            .field("backend", &self.shared.backend.name())
            .field("owner", &self.shared.owner)
            .field("default_ttl", &self.shared.default_ttl)
            .field("extend_interval", &self.shared.extend_interval)
            .field("retry", &self.shared.retry)
            .finish()
    }
}

/// Builds a [`Locker`]; see [`Locker::builder`].
#[must_use]
pub struct LockerBuilder {
    backend: Arc<dyn DynBackend>,
    owner: Option<String>,
    default_ttl: Duration,
    extend_interval: Option<Duration>,
    retry: RetryPolicy,
}

impl LockerBuilder {
    /// Sets the owner id recorded in leases (default: a fresh ULID).
    pub fn owner(mut self, owner: impl Into<String>) -> Self {
        self.owner = Some(owner.into());
        self
    }

    /// Sets the default lease TTL (default 30 s).
    pub fn default_ttl(mut self, ttl: Duration) -> Self {
        self.default_ttl = ttl;
        self
    }

    /// Sets the default auto-extension period (default: a third of each handle's TTL). A
    /// handle uses at most a third of its TTL.
    pub fn extend_interval(mut self, interval: Duration) -> Self {
        self.extend_interval = Some(interval);
        self
    }

    /// Sets the default retry policy.
    pub fn retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    /// Builds the locker.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidArgument`] for a zero TTL or extend interval, an empty owner, or a bad
    /// retry policy.
    pub fn build(self) -> Result<Locker> {
        if self.default_ttl.is_zero() {
            return Err(Error::invalid_argument("default ttl must be > 0"));
        }
        if self.extend_interval.is_some_and(|d| d.is_zero()) {
            return Err(Error::invalid_argument("extend interval must be > 0"));
        }
        self.retry.validate()?;
        let owner = match self.owner {
            Some(owner) if owner.is_empty() => {
                return Err(Error::invalid_argument("owner id must not be empty"));
            }
            Some(owner) => owner,
            None => ulid::Ulid::generate().to_string(),
        };
        crate::observe::describe();
        Ok(Locker {
            shared: Arc::new(Shared {
                backend: self.backend,
                owner: owner.into(),
                default_ttl: self.default_ttl,
                extend_interval: self.extend_interval,
                retry: self.retry,
                live: Arc::new(Live::default()),
            }),
        })
    }
}
