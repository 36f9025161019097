//! [`Guard`]: one held lease, its auto-extension keeper, its lost signal, and release on drop.

use crate::backend::DynBackend;
use crate::observe::{self, ExtendOutcome, Op, ReleaseVia};
use crate::retry::Delays;
use crate::{
    Error, FencingToken, LeaseId, LockInfo, LockKey, Metadata, Mode, OnLost, Result, RetryPolicy,
};
use std::collections::HashMap;
use std::future::Future;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex as StdMutex, PoisonError, Weak};
use std::time::{Duration, SystemTime};
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// The share of the TTL by which the backend's clock may run faster than ours.
pub const CLOCK_DRIFT: f64 = 0.01;

/// The margin kept before the backend could expire a lease: a twentieth of the TTL, at most
/// 100 ms.
fn margin(ttl: Duration) -> Duration {
    (ttl / 20).min(Duration::from_millis(100))
}

/// The moment until which a lease whose grant or extension request was sent at `sent` with
/// `ttl` is certainly still valid on the backend: `sent + ttl * (1 - drift) - margin`.
pub fn valid_until(sent: Instant, ttl: Duration) -> Instant {
    sent + ttl.mul_f64(1.0 - CLOCK_DRIFT).saturating_sub(margin(ttl))
}

fn lock<T>(m: &StdMutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The leases a locker holds, so [`Locker::close`](crate::Locker::close) can release them.
#[derive(Default)]
pub(crate) struct Live(StdMutex<HashMap<LeaseId, Weak<Held>, BuildHasherDefault<LeaseIdHasher>>>);

/// Lease ids end in 80 random bits: their low 64 bits are a good hash already.
#[derive(Default)]
pub(crate) struct LeaseIdHasher(u64);

impl Hasher for LeaseIdHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }
    fn write_u128(&mut self, n: u128) {
        self.0 ^= n as u64;
    }
}

impl Live {
    fn insert(&self, held: &Arc<Held>) {
        lock(&self.0).insert(held.lease, Arc::downgrade(held));
    }

    fn remove(&self, lease: LeaseId) {
        lock(&self.0).remove(&lease);
    }

    pub(crate) fn drain(&self) -> Vec<Arc<Held>> {
        lock(&self.0)
            .drain()
            .filter_map(|(_, w)| w.upgrade())
            .collect()
    }
}

struct LeaseState {
    ttl: Duration,
    valid_until: Instant,
    /// When the last confirmed grant or extension request was sent.
    sent: Instant,
    released: bool,
}

/// Auto-extension settings of a grant.
#[derive(Clone, Copy)]
pub(crate) struct KeepAlive {
    pub(crate) interval: Duration,
    pub(crate) retry: RetryPolicy,
}

/// What was granted: the parts of [`LockInfo`] that never change.
pub(crate) struct Grant {
    pub(crate) owner: Arc<str>,
    pub(crate) token: FencingToken,
    pub(crate) mode: Mode,
    pub(crate) permits: u32,
    pub(crate) metadata: Arc<Metadata>,
}

/// The shared state of one held lease.
pub(crate) struct Held {
    backend: Arc<dyn DynBackend>,
    key: LockKey,
    lease: LeaseId,
    grant: Grant,
    state: StdMutex<LeaseState>,
    lost: AtomicBool,
    /// Woken when the lease is declared lost or released.
    changed: Notify,
    on_lost: Option<OnLost>,
    keeper: StdMutex<Option<JoinHandle<()>>>,
    live: Arc<Live>,
    granted: Instant,
}

impl Held {
    fn token(&self) -> FencingToken {
        self.grant.token
    }

    /// One extension on the backend, inside a `lock.extend` span, counted by outcome.
    async fn extend_once(&self, ttl: Duration) -> Result<()> {
        let backend = self.backend.name();
        let call = self.backend.extend_dyn(&self.key, self.lease, ttl);
        let result =
            observe::in_span(Op::Extend, &self.key, backend, Some(self.token()), call).await;
        let outcome = match &result {
            Ok(()) => ExtendOutcome::Ok,
            Err(Error::Expired { .. } | Error::NotHeld { .. }) => ExtendOutcome::Expired,
            Err(_) => ExtendOutcome::Error,
        };
        observe::extend(backend, outcome);
        result
    }

    /// The release on the backend, inside a `lock.release` span, counted by path.
    async fn release_once(&self, via: ReleaseVia) -> Result<()> {
        let backend = self.backend.name();
        let call = self.backend.release_dyn(&self.key, self.lease);
        let result =
            observe::in_span(Op::Release, &self.key, backend, Some(self.token()), call).await;
        observe::release(&self.key, backend, via, self.granted);
        result
    }

    fn is_lost(&self) -> bool {
        self.lost.load(Ordering::SeqCst)
    }

    fn is_released(&self) -> bool {
        lock(&self.state).released
    }

    /// Marks the lease lost; the first call runs `on_lost` and wakes `lost()` futures.
    fn declare_lost(&self) {
        if self.lost.swap(true, Ordering::SeqCst) {
            return;
        }
        observe::lost(&self.key, self.backend.name(), self.token());
        if let Some(on_lost) = &self.on_lost {
            on_lost(&self.info());
        }
        self.changed.notify_waiters();
    }

    fn confirm(&self, sent: Instant, ttl: Duration) {
        {
            let mut state = lock(&self.state);
            state.ttl = ttl;
            state.valid_until = valid_until(sent, ttl);
            state.sent = sent;
        }
    }

    /// The lease as inspection shows it, its expiry estimated from the last confirmed request.
    fn info(&self) -> LockInfo {
        let (sent, ttl) = {
            let state = lock(&self.state);
            (state.sent, state.ttl)
        };
        let remaining = (sent + ttl).saturating_duration_since(Instant::now());
        LockInfo::new(
            &self.key,
            &*self.grant.owner,
            self.grant.token,
            self.grant.mode,
            self.grant.permits,
            SystemTime::now() + remaining,
            (*self.grant.metadata).clone(),
        )
    }

    /// Sets `released`; false if it was already set.
    fn mark_released(&self) -> bool {
        let first = !std::mem::replace(&mut lock(&self.state).released, true);
        self.changed.notify_waiters();
        first
    }

    fn abort_keeper(&self) -> Option<JoinHandle<()>> {
        let handle = lock(&self.keeper).take();
        if let Some(handle) = &handle {
            handle.abort();
        }
        handle
    }

    /// Stops the keeper, then sends the release. The caller has marked the lease released.
    pub(crate) async fn release_now(self: Arc<Self>, via: ReleaseVia) -> Result<()> {
        if let Some(keeper) = self.abort_keeper() {
            // The keeper never runs after this: renewal stops before the release is sent.
            let _ = keeper.await;
        }
        self.live.remove(self.lease);
        let result = self.release_once(via).await;
        if self.is_lost() {
            return Err(Error::Lost {
                name: self.key.name().to_owned(),
            });
        }
        result
    }

    /// Releases unless already released, from [`Locker::close`](crate::Locker::close).
    pub(crate) async fn close(self: Arc<Self>) {
        if self.mark_released() {
            let _ = self.release_now(ReleaseVia::Close).await;
        }
    }
}

/// Extends the lease every `interval`, retrying transient errors while the lease is certainly
/// still valid, and declares it lost at the first definite loss or when no extension could be
/// confirmed before [`valid_until`].
async fn keep(held: Arc<Held>, keep_alive: KeepAlive) {
    loop {
        tokio::time::sleep(keep_alive.interval).await;
        let mut delays = Delays::new(keep_alive.retry);
        loop {
            let (ttl, deadline) = {
                let state = lock(&held.state);
                (state.ttl, state.valid_until)
            };
            let sent = Instant::now();
            if sent >= deadline {
                held.declare_lost();
                return;
            }
            match tokio::time::timeout_at(deadline, held.extend_once(ttl)).await {
                Ok(Ok(())) => {
                    held.confirm(sent, ttl);
                    break;
                }
                Ok(Err(Error::ProviderUnavailable { .. })) => {
                    let pause = delays.next_delay();
                    tokio::time::sleep_until(deadline.min(Instant::now() + pause)).await;
                }
                // Expired, NotHeld: the lease is gone. A timeout: it may be gone.
                Ok(Err(_)) | Err(_) => {
                    held.declare_lost();
                    return;
                }
            }
        }
    }
}

/// A held lock: a mutex, a read or write lock, or a set of semaphore permits.
///
/// The guard is owned, `'static` and `Send`: move it into a task freely. Release it with
/// [`release`](Guard::release), which reports the outcome. Dropping a guard without releasing
/// it releases the lease **in the background** (not immediately) when a tokio runtime is
/// available; the lease's TTL is always the backstop.
///
/// With auto-extension on, a keeper task extends the lease until it is released, and declares
/// it *lost* at the first definite loss (the backend no longer has it) or when it could not
/// confirm an extension before the backend could have expired it. Then the `on_lost` callback
/// runs once, [`lost`](Guard::lost) completes, [`is_lost`](Guard::is_lost) is true, and
/// [`extend`](Guard::extend) and [`release`](Guard::release) return [`Error::Lost`].
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> lock_core::Result<()> {
/// use lock_core::Locker;
/// use lock_memory::Memory;
///
/// let locker = Locker::with_backend(Memory::new());
/// let guard = locker.mutex("report").lock().await?;
/// println!("holding {} with token {}", guard.name(), guard.token());
/// guard.release().await?;
/// # Ok(())
/// # }
/// ```
#[must_use = "dropping a guard releases the lock in the background; call `release().await`"]
pub struct Guard {
    held: Arc<Held>,
}

impl Guard {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        backend: Arc<dyn DynBackend>,
        key: LockKey,
        lease: LeaseId,
        grant: Grant,
        ttl: Duration,
        sent: Instant,
        on_lost: Option<OnLost>,
        keep_alive: Option<KeepAlive>,
        live: Arc<Live>,
    ) -> Self {
        let held = Arc::new(Held {
            backend,
            key,
            lease,
            grant,
            state: StdMutex::new(LeaseState {
                ttl,
                valid_until: valid_until(sent, ttl),
                sent,
                released: false,
            }),
            lost: AtomicBool::new(false),
            changed: Notify::new(),
            on_lost,
            keeper: StdMutex::new(None),
            live,
            granted: sent,
        });
        held.live.insert(&held);
        if let Some(keep_alive) = keep_alive {
            let task = tokio::spawn(keep(Arc::clone(&held), keep_alive));
            *lock(&held.keeper) = Some(task);
        }
        Guard { held }
    }

    /// The lease's fencing token.
    pub fn token(&self) -> FencingToken {
        self.held.token()
    }

    /// The lock's name.
    pub fn name(&self) -> &str {
        self.held.key.name()
    }

    /// Permits held: the `n` of a semaphore acquisition, 1 otherwise.
    pub fn permits(&self) -> u32 {
        self.held.grant.permits
    }

    /// The lease as inspection shows it; `expires_at` is this process's estimate, moved by each
    /// confirmed extension.
    pub fn info(&self) -> LockInfo {
        self.held.info()
    }

    /// The lease's id, unique to this grant.
    pub fn lease_id(&self) -> LeaseId {
        self.held.lease
    }

    /// Extends the lease to `ttl` from now (by the backend's clock), keeping its token. Later
    /// automatic extensions use this `ttl` too.
    ///
    /// # Errors
    ///
    /// - [`Error::Expired`] if the lease had expired or was force-released: it is not re-created,
    ///   and the guard is declared lost.
    /// - [`Error::Lost`] if the guard was declared lost before.
    /// - [`Error::InvalidArgument`] if `ttl` is zero.
    /// - [`Error::ProviderUnavailable`] if the backend failed; the lease may still be valid.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: if cancelled, the extension may or may not have been applied, and the lease
    /// keeps at least its previous expiry.
    pub async fn extend(&self, ttl: Duration) -> Result<()> {
        if ttl.is_zero() {
            return Err(Error::invalid_argument("ttl must be > 0"));
        }
        let name = || self.name().to_owned();
        if self.is_lost() {
            return Err(Error::Lost { name: name() });
        }
        let sent = Instant::now();
        match self.held.extend_once(ttl).await {
            Ok(()) => {
                self.held.confirm(sent, ttl);
                Ok(())
            }
            Err(Error::Expired { .. } | Error::NotHeld { .. }) => {
                self.held.declare_lost();
                Err(Error::Expired { name: name() })
            }
            Err(e) => Err(e),
        }
    }

    /// Releases the lease: stops auto-extension first, then deletes the lease on the backend
    /// (compared by lease id, so a new holder is never disturbed).
    ///
    /// # Errors
    ///
    /// - [`Error::NotHeld`] if the lease had expired or was force-released.
    /// - [`Error::Lost`] if the guard had been declared lost (the release is still sent).
    /// - [`Error::ProviderUnavailable`] if the backend failed; the lease then expires after its
    ///   TTL.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: if this future is dropped before the release completed, the release is sent
    /// again from a task of its own.
    pub async fn release(self) -> Result<()> {
        self.held.mark_released();
        let mut unfinished = FinishOnDrop(Some(Arc::clone(&self.held)));
        let result = Arc::clone(&self.held)
            .release_now(ReleaseVia::Explicit)
            .await;
        unfinished.0 = None;
        result
    }

    /// Completes when the guard is declared lost (or once it has been released or dropped:
    /// nothing is held any more). The future is `'static`: spawn it or `select!` on it next to
    /// the work the lock protects.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: it only observes a flag.
    pub fn lost(&self) -> impl Future<Output = ()> + Send + 'static {
        let held = Arc::clone(&self.held);
        async move {
            loop {
                let changed = held.changed.notified();
                tokio::pin!(changed);
                changed.as_mut().enable();
                if held.is_lost() || held.is_released() {
                    return;
                }
                changed.await;
            }
        }
    }

    /// True once the guard was declared lost.
    pub fn is_lost(&self) -> bool {
        self.held.is_lost()
    }
}

/// Sends the release from a task if [`Guard::release`] was cancelled before it completed.
struct FinishOnDrop(Option<Arc<Held>>);

impl Drop for FinishOnDrop {
    fn drop(&mut self) {
        if let Some(held) = self.0.take()
            && let Ok(runtime) = tokio::runtime::Handle::try_current()
        {
            held.abort_keeper();
            runtime.spawn(async move {
                let _ = held.release_once(ReleaseVia::Explicit).await;
            });
        }
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        if !self.held.mark_released() {
            return;
        }
        self.held.abort_keeper();
        self.held.live.remove(self.held.lease);
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let held = Arc::clone(&self.held);
            runtime.spawn(async move {
                let _ = held.release_once(ReleaseVia::Drop).await;
            });
        }
    }
}

impl std::fmt::Debug for Guard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Guard")
            .field("info", &self.held.info())
            .field("lost", &self.is_lost())
            .finish_non_exhaustive()
    }
}
