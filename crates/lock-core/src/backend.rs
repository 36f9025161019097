//! The contract a backend implements: a few atomic operations on a lock's lease set.
//!
//! Every lock is a set of leases under a [`LockKey`]. Mutexes, read-write locks and semaphores
//! are one state machine: each lease has a *weight* ([`AcquireRequest::weight`]) and a request is
//! granted when the weights of the valid leases, plus those of older waiting claims, plus its
//! own, stay within the lock's limit. A mutex is limit 1; a read-write lock is limit
//! [`u32::MAX`] where a writer weighs the whole limit and a reader 1; a semaphore is its limit
//! and each request weighs its permits. Blocking waits, retries, guards and auto-extension are
//! built once on top, in the lock handles.

use crate::{
    Error, FencingToken, LeaseId, ListRequest, LockInfo, LockKey, LockPage, Metadata, Mode, Result,
};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// A boxed, `Send` future, as returned by [`DynBackend`].
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// One attempt to add a lease to a lock.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct AcquireRequest {
    /// The lock.
    pub key: LockKey,
    /// The id the new lease gets; also the id of this request's waiting claim.
    pub lease_id: LeaseId,
    /// The owner recorded in the lease.
    pub owner: Arc<str>,
    /// Exclusive or shared.
    pub mode: Mode,
    /// Permits requested (1 unless this is a semaphore).
    pub permits: u32,
    /// The lock's limit: 1 for a mutex, `u32::MAX` for a read-write lock, the semaphore's limit.
    pub limit: u32,
    /// The lease's time to live, measured by the backend's clock.
    pub ttl: Duration,
    /// Stored with the lease.
    pub metadata: Arc<Metadata>,
    /// `Some(claim_ttl)` when the caller will wait: if the lock is busy, the backend records (or
    /// refreshes) a waiting claim with this id that expires `claim_ttl` from now. Newer requests
    /// count older claims as if they were held, which gives writers preference over new readers
    /// and keeps large semaphore requests from starving. `None` for `try_*`: nothing is recorded.
    ///
    /// A backend with a native queue (a server-side lock wait, a watch on a predecessor) may
    /// hold a waiting request for up to a third of `claim_ttl` before answering
    /// [`Acquired::Busy`]; the caller re-sends it, which refreshes the claim. If the caller gives
    /// up meanwhile (timeout, cancellation) it releases the request's lease id, which must
    /// delete a grant that raced with the give-up. A backend whose calls can be applied out of
    /// order (a connection pool) must make sure that release wins over an acquire of the same
    /// lease id still in flight, or that grant stays until its TTL.
    pub claim: Option<Duration>,
}

impl AcquireRequest {
    /// Builds a request. The `claim` starts as `None`.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        key: LockKey,
        lease_id: LeaseId,
        owner: Arc<str>,
        mode: Mode,
        permits: u32,
        limit: u32,
        ttl: Duration,
        metadata: Arc<Metadata>,
    ) -> Self {
        AcquireRequest {
            key,
            lease_id,
            owner,
            mode,
            permits,
            limit,
            ttl,
            metadata,
            claim: None,
        }
    }

    /// The share of the limit this request takes: the whole limit when exclusive, its permits
    /// when shared.
    pub fn weight(&self) -> u64 {
        weight(self.mode, self.permits, self.limit)
    }

    /// The error a backend returns when the stored limit of a semaphore differs from this
    /// request's.
    pub fn limit_mismatch(&self, stored: u32) -> Error {
        Error::invalid_argument(format!(
            "semaphore {:?} was created with limit {stored}, but this handle uses limit {}",
            self.key.name(),
            self.limit
        ))
    }
}

/// The weight of a lease: `limit` when exclusive, `permits` when shared.
pub fn weight(mode: Mode, permits: u32, limit: u32) -> u64 {
    match mode {
        Mode::Exclusive => u64::from(limit),
        Mode::Shared => u64::from(permits),
    }
}

/// The answer to an [`AcquireRequest`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Acquired {
    /// The lease was added with this token; any waiting claim of the request was removed.
    Granted {
        /// The new lease's fencing token.
        token: FencingToken,
    },
    /// Incompatible leases or older claims are in the way.
    Busy {
        /// When the first lease or claim in the way expires, if the backend knows: the waiter
        /// retries then even without a notification.
        retry_after: Option<Duration>,
    },
}

/// A stream of "this lock changed" signals from a backend (a release, an expiry noticed, a
/// claim withdrawn, a force-release). Signals may be coalesced; waiters re-check the lock after
/// each.
pub struct Subscription {
    rx: watch::Receiver<u64>,
    // Dropped after `rx`: lets a backend unsubscribe when the last receiver is gone.
    _guard: Option<Box<dyn Send + Sync>>,
}

impl Subscription {
    /// A subscription that reports every value sent on `rx`'s channel after now.
    pub fn new(mut rx: watch::Receiver<u64>) -> Self {
        rx.mark_unchanged();
        Subscription { rx, _guard: None }
    }

    /// Like [`new`](Self::new), keeping `guard` alive until the subscription is dropped.
    pub fn with_guard(rx: watch::Receiver<u64>, guard: impl Send + Sync + 'static) -> Self {
        let mut sub = Self::new(rx);
        sub._guard = Some(Box::new(guard));
        sub
    }

    /// A subscription that never signals: the waiter relies on polling alone.
    pub fn never() -> Self {
        let (tx, rx) = watch::channel(0);
        Self::with_guard(rx, tx)
    }

    /// Completes at the next change signalled after the previous call (or after creation).
    /// If the backend dropped the channel it never completes, and the waiter's poll takes over.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: a signal that arrives while the future is dropped is reported by the next
    /// call.
    pub async fn changed(&mut self) {
        if self.rx.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

impl std::fmt::Debug for Subscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscription").finish_non_exhaustive()
    }
}

/// The operations a backend implements. Each must be atomic on the backend.
///
/// Use a backend through [`Locker::with_backend`](crate::Locker::with_backend); the lock
/// handles add waiting, retries, guards and auto-extension. [`DynBackend`] is the
/// dyn-compatible twin, implemented for every `Backend`.
pub trait Backend: Send + Sync + 'static {
    /// A short name for errors, metrics and traces (`memory`, `redis`, ...).
    fn name(&self) -> &'static str;

    /// True when the backend signals every change of a lock to subscribers (as the in-memory
    /// backend does): waiters then need no fallback poll.
    fn reliable_notifications(&self) -> bool {
        false
    }

    /// Adds a lease if it is compatible with the valid leases and older claims, else records the
    /// request's claim (when [`AcquireRequest::claim`] is set) and reports busy.
    ///
    /// **Adoption.** If a valid lease with the request's lease id already exists (a retry of a
    /// request whose grant was applied but whose answer was lost), the backend answers
    /// [`Acquired::Granted`] with that lease's token and moves its expiry to at least now +
    /// `ttl`: the caller counts the lease's validity from this request. It never waits behind
    /// its own lease. The conformance suite checks it.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidArgument`] for a semaphore limit that differs from the stored one;
    /// [`Error::ProviderUnavailable`] when the backend fails.
    fn acquire(&self, request: &AcquireRequest) -> impl Future<Output = Result<Acquired>> + Send;

    /// Deletes the lease (and any waiting claim) with this id, and signals the change.
    ///
    /// # Errors
    ///
    /// [`Error::NotHeld`] when no valid lease has this id; [`Error::ProviderUnavailable`].
    fn release(&self, key: &LockKey, lease: LeaseId) -> impl Future<Output = Result<()>> + Send;

    /// Sets the lease's expiry to now + `ttl`, keeping its token.
    ///
    /// # Errors
    ///
    /// [`Error::Expired`] when no valid lease has this id (it is never re-created);
    /// [`Error::ProviderUnavailable`].
    fn extend(
        &self,
        key: &LockKey,
        lease: LeaseId,
        ttl: Duration,
    ) -> impl Future<Output = Result<()>> + Send;

    /// The valid leases of every kind of lock named `name`.
    ///
    /// # Errors
    ///
    /// [`Error::ProviderUnavailable`].
    fn inspect(&self, name: &str) -> impl Future<Output = Result<Vec<LockInfo>>> + Send;

    /// Deletes every lease and claim of every kind of lock named `name`, signals the change, and
    /// returns how many leases were deleted.
    ///
    /// # Errors
    ///
    /// [`Error::ProviderUnavailable`].
    fn force_release(&self, name: &str) -> impl Future<Output = Result<usize>> + Send;

    /// One page of the locks that have valid leases, of every kind, whose names start with
    /// `request.prefix`: each with all its holders, as [`inspect`](Backend::inspect) reports
    /// them. The request was validated ([`ListRequest::validate`]).
    ///
    /// **Bounded.** One call does work bounded by `request.limit`, however many names the
    /// store holds (names that are idle or expired included): a page may come back short, or
    /// empty, with [`LockPage::next`] set. **Complete.** Following `next` until it is `None`
    /// reports every name held from the first call to the last; a name may appear in two
    /// pages (each page holds all of a name's holders). The conformance suite checks both.
    ///
    /// The default answers [`Error::Unsupported`].
    ///
    /// # Errors
    ///
    /// [`Error::InvalidArgument`] for a cursor this backend did not make;
    /// [`Error::ProviderUnavailable`]; [`Error::Unsupported`] when the backend cannot list.
    fn list(&self, request: &ListRequest) -> impl Future<Output = Result<LockPage>> + Send {
        let _ = request;
        let name = self.name();
        async move {
            Err(Error::Unsupported {
                message: format!("the {name} backend cannot list locks"),
            })
        }
    }

    /// Subscribes a waiting request to change signals of its lock (before its first attempt).
    /// A backend may signal only the changes that can matter to this request (its
    /// predecessor's release, say) rather than every change of the lock.
    ///
    /// # Errors
    ///
    /// [`Error::ProviderUnavailable`]; the waiter then falls back to polling.
    fn subscribe(
        &self,
        request: &AcquireRequest,
    ) -> impl Future<Output = Result<Subscription>> + Send;

    /// Closes this handle's use of the backend. Called by [`Locker::close`](crate::Locker::close)
    /// after it released what the locker held.
    ///
    /// Clones of a backend share its connections, sessions and leases, and several lockers may
    /// each hold a clone ([`Locker::with_backend`](crate::Locker::with_backend)`(backend.clone())`):
    /// closing one must not end what another still holds (a session or lease under a live
    /// guard of another locker would let a second client in while that guard still counts
    /// itself the holder). A backend with shared state closes it only when the last open clone
    /// closes; [`LastClose`] counts them.
    fn close(&self) -> impl Future<Output = ()> + Send {
        async {}
    }
}

/// Counts the open clones of a backend handle, so that [`Backend::close`] ends the shared
/// connections, sessions and leases only with the last one. A field of the backend handle:
/// cloning the handle clones it (one more open clone), dropping a clone that was not closed
/// forgets it.
///
/// ```
/// use lock_core::backend::LastClose;
/// let first = LastClose::new();
/// let second = first.clone();
/// assert!(!first.close()); // `second` is still open
/// assert!(!first.close()); // closing one clone twice counts once
/// assert!(second.close()); // the last one: end the shared state now
/// ```
#[derive(Debug)]
pub struct LastClose {
    open: Arc<std::sync::atomic::AtomicUsize>,
    closed: std::sync::atomic::AtomicBool,
}

impl LastClose {
    /// The first clone of a new backend: one open.
    pub fn new() -> LastClose {
        LastClose {
            open: Arc::new(std::sync::atomic::AtomicUsize::new(1)),
            closed: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// A clone for the backend's own background work (a roll-back, a straggler of a round):
    /// it does not count as open, so it never keeps [`close`](Self::close) from ending the
    /// shared state, and closing or dropping it changes nothing.
    pub fn uncounted(&self) -> LastClose {
        LastClose {
            open: self.open.clone(),
            closed: std::sync::atomic::AtomicBool::new(true),
        }
    }

    /// Closes this clone; true when it was the last open one, so the caller ends the shared
    /// state. A second call on the same clone returns false.
    pub fn close(&self) -> bool {
        use std::sync::atomic::Ordering;
        if self.closed.swap(true, Ordering::AcqRel) {
            return false;
        }
        self.open.fetch_sub(1, Ordering::AcqRel) == 1
    }
}

impl Default for LastClose {
    fn default() -> Self {
        LastClose::new()
    }
}

impl Clone for LastClose {
    fn clone(&self) -> Self {
        self.open.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        LastClose {
            open: self.open.clone(),
            closed: std::sync::atomic::AtomicBool::new(false),
        }
    }
}

impl Drop for LastClose {
    fn drop(&mut self) {
        if !self.closed.load(std::sync::atomic::Ordering::Acquire) {
            self.open.fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
        }
    }
}

/// The dyn-compatible twin of [`Backend`], with boxed futures, so a backend chosen at run time
/// can sit behind `Arc<dyn DynBackend>`. Implemented for every [`Backend`]; implement `Backend`,
/// not this.
///
/// Each method is [`Backend`]'s method of the same name (without `_dyn`), with the same
/// contract, errors and cancel safety.
pub trait DynBackend: Send + Sync + 'static {
    /// [`Backend::name`].
    fn name(&self) -> &'static str;
    /// [`Backend::reliable_notifications`].
    fn reliable_notifications(&self) -> bool;
    /// [`Backend::acquire`], boxed.
    fn acquire_dyn<'a>(&'a self, request: &'a AcquireRequest) -> BoxFuture<'a, Result<Acquired>>;
    /// [`Backend::release`], boxed.
    fn release_dyn<'a>(&'a self, key: &'a LockKey, lease: LeaseId) -> BoxFuture<'a, Result<()>>;
    /// [`Backend::extend`], boxed.
    fn extend_dyn<'a>(
        &'a self,
        key: &'a LockKey,
        lease: LeaseId,
        ttl: Duration,
    ) -> BoxFuture<'a, Result<()>>;
    /// [`Backend::inspect`], boxed.
    fn inspect_dyn<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<Vec<LockInfo>>>;
    /// [`Backend::force_release`], boxed.
    fn force_release_dyn<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<usize>>;
    /// [`Backend::list`], boxed.
    fn list_dyn<'a>(&'a self, request: &'a ListRequest) -> BoxFuture<'a, Result<LockPage>>;
    /// [`Backend::subscribe`], boxed.
    fn subscribe_dyn<'a>(
        &'a self,
        request: &'a AcquireRequest,
    ) -> BoxFuture<'a, Result<Subscription>>;
    /// [`Backend::close`], boxed.
    fn close_dyn(&self) -> BoxFuture<'_, ()>;
}

impl<B: Backend> DynBackend for B {
    fn name(&self) -> &'static str {
        Backend::name(self)
    }
    fn reliable_notifications(&self) -> bool {
        Backend::reliable_notifications(self)
    }
    fn acquire_dyn<'a>(&'a self, request: &'a AcquireRequest) -> BoxFuture<'a, Result<Acquired>> {
        Box::pin(self.acquire(request))
    }
    fn release_dyn<'a>(&'a self, key: &'a LockKey, lease: LeaseId) -> BoxFuture<'a, Result<()>> {
        Box::pin(self.release(key, lease))
    }
    fn extend_dyn<'a>(
        &'a self,
        key: &'a LockKey,
        lease: LeaseId,
        ttl: Duration,
    ) -> BoxFuture<'a, Result<()>> {
        Box::pin(self.extend(key, lease, ttl))
    }
    fn inspect_dyn<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<Vec<LockInfo>>> {
        Box::pin(self.inspect(name))
    }
    fn force_release_dyn<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<usize>> {
        Box::pin(self.force_release(name))
    }
    fn list_dyn<'a>(&'a self, request: &'a ListRequest) -> BoxFuture<'a, Result<LockPage>> {
        Box::pin(self.list(request))
    }
    fn subscribe_dyn<'a>(
        &'a self,
        request: &'a AcquireRequest,
    ) -> BoxFuture<'a, Result<Subscription>> {
        Box::pin(self.subscribe(request))
    }
    fn close_dyn(&self) -> BoxFuture<'_, ()> {
        Box::pin(self.close())
    }
}
