//! [`Locker`]: the entry point that makes lock handles on one backend.

use crate::acquire::{HandleCore, Shared};
use crate::backend::{Backend, DynBackend};
use crate::guard::Live;
use crate::time::no_reply;
use crate::{
    DEFAULT_TTL, Error, ListRequest, LockInfo, LockOptions, LockPage, Mutex, Result, RetryPolicy,
    RwMutex, Semaphore, check_ttl, validate_name,
};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

/// The default bound of one call to the backend that is not a wait: an attempt to acquire, a
/// release, an extension, an inspection: 5 seconds.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// The longest request timeout accepted: one hour.
const MAX_REQUEST_TIMEOUT: Duration = Duration::from_secs(60 * 60);

/// What [`Locker::close`] did with the leases the locker held.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct CloseReport {
    /// Leases released (or found already gone).
    pub released: usize,
    /// Leases whose release failed or got no answer within the request timeout: they stay
    /// held until their TTL runs out.
    pub not_released: usize,
}

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
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
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

    /// The bound of each call to the backend that is not a wait; see
    /// [`LockerBuilder::request_timeout`].
    pub fn request_timeout(&self) -> Duration {
        self.shared.request_timeout
    }

    /// Runs a backend call under the request timeout.
    async fn bounded<T>(&self, call: &str, fut: impl Future<Output = Result<T>>) -> Result<T> {
        let timeout = self.shared.request_timeout;
        match tokio::time::timeout(timeout, fut).await {
            Ok(result) => result,
            Err(_) => Err(no_reply(self.shared.backend.name(), call, timeout)),
        }
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
    /// [`Error::InvalidArgument`] for a bad name; [`Error::ProviderUnavailable`] when the
    /// backend fails or does not answer within the request timeout.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: it only reads.
    pub async fn inspect(&self, name: &str) -> Result<Vec<LockInfo>> {
        validate_name(name)?;
        self.bounded("inspect", self.shared.backend.inspect_dyn(name))
            .await
    }

    /// One page of the locks that are held, of every kind, whose names start with
    /// `request.prefix`: each name with all its holders, as [`inspect`](Locker::inspect)
    /// reports them. Pass the page's [`next`](LockPage::next) back in
    /// [`ListRequest::after`] for the next page, until it is `None`.
    ///
    /// Each call does work bounded by the page size, however many idle names the backend
    /// stores, so a page may be short, or empty, before the end. A name may appear in two
    /// pages; every name held for the whole listing appears at least once.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> lock_core::Result<()> {
    /// # let locker = lock_core::Locker::with_backend(lock_memory::Memory::new());
    /// use lock_core::ListRequest;
    ///
    /// let _guard = locker.mutex("jobs/nightly").lock().await?;
    /// let mut request = ListRequest::new("jobs/").limit(50);
    /// loop {
    ///     let page = locker.list(&request).await?;
    ///     for holder in &page.locks {
    ///         println!("{} held by {} (token {})", holder.name, holder.owner, holder.token);
    ///     }
    ///     match page.next {
    ///         Some(next) => request = request.after(Some(next)),
    ///         None => break,
    ///     }
    /// }
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::InvalidArgument`] for a limit of 0 or over [`MAX_LIST_LIMIT`](crate::MAX_LIST_LIMIT),
    /// a prefix over [`MAX_NAME_LEN`](crate::MAX_NAME_LEN) bytes, or a cursor the backend did
    /// not make; [`Error::ProviderUnavailable`] when the backend fails or does not answer
    /// within the request timeout; [`Error::Unsupported`] for a backend that cannot list.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: it only reads.
    pub async fn list(&self, request: &ListRequest) -> Result<LockPage> {
        request.validate()?;
        self.bounded("list", self.shared.backend.list_dyn(request))
            .await
    }

    /// Administrative: deletes every lease and waiting claim of every lock named `name`, and
    /// returns how many leases were deleted. Holders find out at their next extension (their
    /// `on_lost` runs and `lost()` completes); with auto-extension that is within one extend
    /// interval.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidArgument`] for a bad name; [`Error::ProviderUnavailable`] when the
    /// backend fails or does not answer within the request timeout.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: if cancelled, the leases may or may not have been deleted.
    pub async fn force_release(&self, name: &str) -> Result<usize> {
        validate_name(name)?;
        self.bounded("force_release", self.shared.backend.force_release_dyn(name))
            .await
    }

    /// Closes the locker (and its clones): from now on acquisitions fail with
    /// [`Error::Closed`] (one in flight is released when granted); every auto-extension stops;
    /// every lease the locker holds is released, concurrently; the background releases of
    /// guards dropped earlier are awaited; then the backend's connections are closed. Returns within about twice the [request
    /// timeout](LockerBuilder::request_timeout), and reports how many leases could not be
    /// released (they expire after their TTL). Guards released here report [`Error::NotHeld`]
    /// if released again.
    ///
    /// This is how a short-lived program (a CLI, a cron job, the end of `main`) makes sure it
    /// leaves no lock held for a TTL: a guard dropped while the runtime shuts down is released
    /// in a task that never runs.
    ///
    /// # Cancel safety
    ///
    /// Not cancel safe: if cancelled, the releases already started still run in the background,
    /// and the backend may be left open.
    pub async fn close(&self) -> CloseReport {
        let mut releases = tokio::task::JoinSet::new();
        for held in self.shared.live.close() {
            releases.spawn(held.close());
        }
        let mut report = CloseReport::default();
        while let Some(done) = releases.join_next().await {
            match done {
                Ok(true) => report.released += 1,
                Ok(false) | Err(_) => report.not_released += 1,
            }
        }
        // Acquisitions still running (each ends within the request timeout once woken by the
        // close, handing what it got to a background release) and background releases
        // (dropped guards, withdrawn claims), each bounded by the request timeout: wait for
        // them, so the backend is not closed under them.
        let end = tokio::time::Instant::now() + self.shared.request_timeout * 2;
        self.shared.live.settled(end).await;
        let _ = tokio::time::timeout(self.shared.request_timeout, self.shared.backend.close_dyn())
            .await;
        report
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
            .field("request_timeout", &self.shared.request_timeout)
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
    request_timeout: Duration,
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

    /// Sets the bound of each call to the backend that is not a wait (default
    /// [`DEFAULT_REQUEST_TIMEOUT`], 5 s; at most an hour): one attempt to acquire, a
    /// subscription, a release, a manual extension, an inspection, a force-release. A call
    /// without an answer by then fails with [`Error::ProviderUnavailable`]; inside a blocking
    /// acquisition it counts as one failed round trip. Automatic extensions are bounded by it
    /// too, and by the lease's validity.
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }

    /// Builds the locker.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidArgument`] for a zero TTL or one above [`MAX_TTL`](crate::MAX_TTL), a
    /// zero extend interval, a request timeout that is zero or above an hour, an empty owner,
    /// or a bad retry policy.
    pub fn build(self) -> Result<Locker> {
        check_ttl("default ttl", self.default_ttl)?;
        if self.request_timeout.is_zero() || self.request_timeout > MAX_REQUEST_TIMEOUT {
            return Err(Error::invalid_argument(format!(
                "request timeout {:?} is out of range: it must be > 0 and at most {:?}",
                self.request_timeout, MAX_REQUEST_TIMEOUT
            )));
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
                request_timeout: self.request_timeout,
                live: Arc::new(Live::default()),
            }),
        })
    }
}
