//! [`Guard`]: one held lease, its auto-extension keeper, its lost signal, and release on drop.

use crate::backend::DynBackend;
use crate::observe::{self, ExtendOutcome, Op, ReleaseVia};
use crate::retry::Delays;
use crate::time::{later, no_reply};
use crate::tracker::{Tracked, Tracker};
use crate::{
    Error, FencingToken, LeaseId, LockInfo, LockKey, Metadata, Mode, OnLost, Result, RetryPolicy,
    check_ttl,
};
use std::collections::HashMap;
use std::future::Future;
use std::hash::{BuildHasherDefault, Hasher};
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex as StdMutex, PoisonError, Weak};
use std::time::{Duration, SystemTime};
use tokio::runtime::Handle as Runtime;
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

/// How long after its request was sent a lease with `ttl` is certainly still valid on the
/// backend: `ttl * (1 - drift) - margin`.
pub(crate) fn validity(ttl: Duration) -> Duration {
    ttl.mul_f64(1.0 - CLOCK_DRIFT).saturating_sub(margin(ttl))
}

/// The moment until which a lease whose grant or extension request was sent at `sent` with
/// `ttl` is certainly still valid on the backend: `sent + ttl * (1 - drift) - margin`.
/// Saturates instead of overflowing for huge TTLs.
pub fn valid_until(sent: Instant, ttl: Duration) -> Instant {
    later(sent, validity(ttl))
}

fn lock<T>(m: &StdMutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The leases a locker holds, so [`Locker::close`](crate::Locker::close) can release them, and
/// whether the locker was closed.
#[derive(Default)]
pub(crate) struct Live {
    held: StdMutex<HashMap<LeaseId, Weak<Held>, BuildHasherDefault<LeaseIdHasher>>>,
    /// Releases still running in the background (dropped guards, withdrawn claims) and
    /// acquisitions running (which hand what they got to background releases when they end):
    /// `close` waits for all of it.
    active: Tracker,
    closed: AtomicBool,
    /// Woken by `close`: waiting acquisitions end.
    closing: Notify,
}

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
        lock(&self.held).insert(held.lease, Arc::downgrade(held));
    }

    fn remove(&self, lease: LeaseId) {
        lock(&self.held).remove(&lease);
    }

    /// Refuses new guards from now on and takes the live ones.
    pub(crate) fn close(&self) -> Vec<Arc<Held>> {
        self.closed.store(true, Ordering::SeqCst);
        self.closing.notify_waiters();
        lock(&self.held)
            .drain()
            .filter_map(|(_, w)| w.upgrade())
            .collect()
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::SeqCst)
    }

    /// Completes when the locker is closed.
    pub(crate) async fn closing(&self) {
        let closing = self.closing.notified();
        tokio::pin!(closing);
        closing.as_mut().enable();
        if !self.is_closed() {
            closing.await;
        }
    }

    /// Runs a release in the background on `runtime`, counted until it ends (or is dropped,
    /// as when the runtime shuts down).
    pub(crate) fn spawn_release(
        &self,
        runtime: &Runtime,
        release: impl Future<Output = ()> + Send + 'static,
    ) -> JoinHandle<()> {
        self.active.spawn_on(runtime, release)
    }

    /// Counts an acquisition until the returned value is dropped.
    ///
    /// # Errors
    ///
    /// [`Error::Closed`] once the locker was closed.
    pub(crate) fn enter(&self) -> Result<Tracked> {
        let active = self.active.enter();
        if self.is_closed() {
            return Err(Error::Closed);
        }
        Ok(active)
    }

    /// Waits until no acquisition and no background release is running, or until `end`.
    pub(crate) async fn settled(&self, end: Instant) {
        self.active.settled(end).await;
    }
}

struct LeaseState {
    ttl: Duration,
    valid_until: Instant,
    /// When the last confirmed grant or extension request was sent.
    sent: Instant,
    released: bool,
    /// Released by [`Locker::close`](crate::Locker::close): no longer valid, though not lost.
    closed: bool,
}

/// Auto-extension settings of a grant.
#[derive(Clone, Copy)]
pub(crate) struct KeepAlive {
    /// The period while the TTL is the granted one.
    pub(crate) interval: Duration,
    /// The TTL of the grant; after a manual extension to another TTL the period is at most a
    /// third of that TTL.
    pub(crate) granted_ttl: Duration,
    pub(crate) retry: RetryPolicy,
}

impl KeepAlive {
    fn interval(&self, ttl: Duration) -> Duration {
        if ttl == self.granted_ttl {
            self.interval
        } else {
            self.interval.min(ttl / 3)
        }
    }
}

/// What was granted: the parts of [`LockInfo`] that never change.
pub(crate) struct Grant {
    pub(crate) owner: Arc<str>,
    pub(crate) token: FencingToken,
    pub(crate) mode: Mode,
    pub(crate) permits: u32,
    pub(crate) metadata: Arc<Metadata>,
}

/// Where a guard lives: its backend, its runtime and its locker's bounds.
pub(crate) struct Home {
    pub(crate) backend: Arc<dyn DynBackend>,
    pub(crate) runtime: Runtime,
    pub(crate) live: Arc<Live>,
    pub(crate) request_timeout: Duration,
}

/// The shared state of one held lease.
pub(crate) struct Held {
    home: Home,
    key: LockKey,
    lease: LeaseId,
    grant: Grant,
    state: StdMutex<LeaseState>,
    lost: AtomicBool,
    /// Woken when the lease is confirmed (new expiry or TTL), declared lost or released.
    changed: Notify,
    /// One extension of this lease in flight at a time, the keeper's or a manual one.
    extending: tokio::sync::Mutex<()>,
    on_lost: Option<OnLost>,
    keeper: StdMutex<Option<JoinHandle<()>>>,
    /// Set by the first release, so metrics count each lease once.
    counted: AtomicBool,
    granted: Instant,
}

impl Held {
    fn token(&self) -> FencingToken {
        self.grant.token
    }

    fn backend_name(&self) -> &'static str {
        self.home.backend.name()
    }

    /// One extension on the backend, inside a `lock.extend` span, counted by outcome.
    async fn extend_once(&self, ttl: Duration) -> Result<()> {
        let backend = self.backend_name();
        let call = self.home.backend.extend_dyn(&self.key, self.lease, ttl);
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

    /// The release on the backend, inside a `lock.release` span, bounded by the request
    /// timeout; counted once per lease.
    async fn release_once(&self, via: ReleaseVia) -> Result<()> {
        let backend = self.backend_name();
        let timeout = self.home.request_timeout;
        let call = self.home.backend.release_dyn(&self.key, self.lease);
        let call = async {
            match tokio::time::timeout(timeout, call).await {
                Ok(result) => result,
                Err(_) => Err(no_reply(backend, "release", timeout)),
            }
        };
        let result =
            observe::in_span(Op::Release, &self.key, backend, Some(self.token()), call).await;
        if !self.counted.swap(true, Ordering::SeqCst) {
            observe::release(&self.key, backend, via, self.granted);
        }
        result
    }

    /// True once the lease was declared lost, or released by the locker's `close`. A lease
    /// whose validity has run out is declared lost here, whether or not a keeper (perhaps
    /// stalled with its runtime) got to it first.
    fn is_lost(&self) -> bool {
        if self.lost.load(Ordering::SeqCst) {
            return true;
        }
        let expired = {
            let state = lock(&self.state);
            if state.closed {
                return true;
            }
            !state.released && Instant::now() >= state.valid_until
        };
        if expired {
            self.declare_lost();
        }
        expired
    }

    fn is_released(&self) -> bool {
        lock(&self.state).released
    }

    /// Marks the lease lost; the first call wakes `lost()` futures, then runs `on_lost` (a
    /// panic in it is caught: it cannot stop the wake-up or the keeper).
    fn declare_lost(&self) {
        if self.lost.swap(true, Ordering::SeqCst) {
            return;
        }
        self.changed.notify_waiters();
        observe::lost(&self.key, self.backend_name(), self.token());
        if let Some(on_lost) = &self.on_lost {
            let info = self.info();
            let _ = std::panic::catch_unwind(AssertUnwindSafe(|| on_lost(&info)));
        }
    }

    /// Records a confirmed grant or extension request sent at `sent` with `ttl`, and wakes the
    /// keeper and `lost()` futures so they plan from it.
    fn confirm(&self, sent: Instant, ttl: Duration) {
        {
            let mut state = lock(&self.state);
            state.ttl = ttl;
            state.valid_until = valid_until(sent, ttl);
            state.sent = sent;
        }
        self.changed.notify_waiters();
    }

    /// Records an extension request sent at `sent` with `ttl` whose outcome is unknown (it
    /// failed, timed out or was cancelled: the backend may have applied it). If it would end
    /// the lease sooner than the last confirmed one, the guard now counts on that sooner end,
    /// and the keeper re-plans at once, extending with `ttl`.
    fn uncertain(&self, sent: Instant, ttl: Duration) {
        let sooner = {
            let mut state = lock(&self.state);
            let until = valid_until(sent, ttl);
            let sooner = until < state.valid_until;
            if sooner {
                state.valid_until = until;
                state.ttl = ttl;
                state.sent = sent;
            }
            sooner
        };
        if sooner {
            self.changed.notify_waiters();
        }
    }

    /// The lease as inspection shows it, its expiry estimated from the last confirmed request.
    fn info(&self) -> LockInfo {
        let (sent, ttl) = {
            let state = lock(&self.state);
            (state.sent, state.ttl)
        };
        let remaining = later(sent, ttl).saturating_duration_since(Instant::now());
        LockInfo::new(
            &self.key,
            &*self.grant.owner,
            self.grant.token,
            self.grant.mode,
            self.grant.permits,
            SystemTime::now()
                .checked_add(remaining)
                .unwrap_or_else(SystemTime::now),
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
        self.home.live.remove(self.lease);
        let result = self.release_once(via).await;
        if self.lost.load(Ordering::SeqCst) {
            return Err(Error::Lost {
                name: self.key.name().to_owned(),
            });
        }
        result
    }

    /// Releases from a task on the guard's runtime, after the (aborted) keeper has stopped.
    fn release_in_background(self: Arc<Self>, keeper: Option<JoinHandle<()>>, via: ReleaseVia) {
        let runtime = self.home.runtime.clone();
        let live = Arc::clone(&self.home.live);
        live.spawn_release(&runtime, async move {
            if let Some(keeper) = keeper {
                let _ = keeper.await;
            }
            let _ = self.release_once(via).await;
        });
    }

    /// Releases unless already released, from [`Locker::close`](crate::Locker::close): true
    /// unless the backend failed (a lease that had expired counts as released).
    pub(crate) async fn close(self: Arc<Self>) -> bool {
        lock(&self.state).closed = true;
        if !self.mark_released() {
            return true;
        }
        match self.release_now(ReleaseVia::Close).await {
            Ok(()) | Err(Error::NotHeld { .. } | Error::Lost { .. }) => true,
            Err(_) => false,
        }
    }
}

/// Extends the lease every interval, retrying transient errors while the lease is certainly
/// still valid, and declares it lost at the first definite loss or when no extension could be
/// confirmed before [`valid_until`]. It sleeps until the earlier of the next extension and that
/// deadline, and re-plans whenever the lease is confirmed (a manual extension may change the
/// TTL).
async fn keep(held: Arc<Held>, keep_alive: KeepAlive) {
    loop {
        let changed = held.changed.notified();
        tokio::pin!(changed);
        changed.as_mut().enable();
        if held.is_released() || held.lost.load(Ordering::SeqCst) {
            return;
        }
        let wake = {
            let state = lock(&held.state);
            later(state.sent, keep_alive.interval(state.ttl)).min(state.valid_until)
        };
        tokio::select! {
            () = &mut changed => continue,
            () = tokio::time::sleep_until(wake) => {}
        }
        if !renew(&held, &keep_alive).await {
            return;
        }
    }
}

/// One due extension, retried inside the validity window; false when the keeper must stop
/// (the lease was lost or released).
async fn renew(held: &Held, keep_alive: &KeepAlive) -> bool {
    let mut delays = Delays::new(keep_alive.retry);
    loop {
        // A manual extension in flight has the turn; the lease's end does not wait for it.
        let deadline = lock(&held.state).valid_until;
        let Ok(turn) = tokio::time::timeout_at(deadline, held.extending.lock()).await else {
            if !held.is_released() {
                held.declare_lost();
            }
            return false;
        };
        if held.is_released() {
            return false;
        }
        let (ttl, deadline, due) = {
            let state = lock(&held.state);
            let due = later(state.sent, keep_alive.interval(state.ttl));
            (state.ttl, state.valid_until, due)
        };
        let sent = Instant::now();
        if sent >= deadline {
            held.declare_lost();
            return false;
        }
        if sent < due {
            // A manual extension was confirmed meanwhile: plan from it.
            return true;
        }
        let bound = deadline.min(later(sent, held.home.request_timeout));
        let outcome = tokio::time::timeout_at(bound, held.extend_once(ttl)).await;
        match outcome {
            Ok(Ok(())) => {
                // Confirmed before the turn passes on: a manual extension sent after this one
                // confirms after it.
                held.confirm(sent, ttl);
                return true;
            }
            // Transient: retry while the lease is certainly valid.
            Ok(Err(Error::ProviderUnavailable { .. })) | Err(_) if Instant::now() < deadline => {
                drop(turn);
                let pause = later(Instant::now(), delays.next_delay());
                tokio::time::sleep_until(deadline.min(pause)).await;
            }
            // Expired, NotHeld: the lease is gone. Out of time: it may be gone.
            Ok(Err(_)) | Err(_) => {
                if !held.is_released() {
                    held.declare_lost();
                }
                return false;
            }
        }
    }
}

/// A held lock: a mutex, a read or write lock, or a set of semaphore permits.
///
/// The guard is owned, `'static` and `Send`: move it into a task or a thread freely. Release
/// it with [`release`](Guard::release), which reports the outcome.
///
/// # Dropping
///
/// Dropping a guard without releasing it releases the lease **in the background**, on the
/// tokio runtime the guard was made on, from whatever thread drops it, as long as that runtime
/// runs. A task spawned while a runtime shuts down never runs: a program about to end (the end
/// of `main`, of a `current_thread` runtime's `block_on`, of a `#[tokio::test]`) should call
/// [`release().await`](Guard::release) or [`Locker::close().await`](crate::Locker::close)
/// first, or the lock stays held until its TTL runs out. The TTL is always the backstop for a
/// process that dies.
///
/// A guard that is never dropped (leaked with [`std::mem::forget`], or kept in a leaked `Arc`)
/// keeps its lock: with auto-extension on, for as long as the process lives.
///
/// # Lost
///
/// A guard is *lost* once it may no longer be valid. With auto-extension on, a keeper task
/// extends the lease until it is released and declares it lost at the first definite loss (the
/// backend no longer has it) or when it could not confirm an extension before the backend
/// could have expired it. Without auto-extension, it is lost when that moment passes without a
/// confirmed [`extend`](Guard::extend). Then the `on_lost` callback runs once,
/// [`lost`](Guard::lost) completes, [`is_lost`](Guard::is_lost) is true, and
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
    /// A guard for a grant whose request was sent at `sent`. Checks the locker is still open
    /// after registering the guard, so [`Locker::close`](crate::Locker::close) either releases
    /// it or makes this fail.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        home: Home,
        key: LockKey,
        lease: LeaseId,
        grant: Grant,
        ttl: Duration,
        sent: Instant,
        on_lost: Option<OnLost>,
        keep_alive: Option<KeepAlive>,
    ) -> Result<Self> {
        let held = Arc::new(Held {
            home,
            key,
            lease,
            grant,
            state: StdMutex::new(LeaseState {
                ttl,
                valid_until: valid_until(sent, ttl),
                sent,
                released: false,
                closed: false,
            }),
            lost: AtomicBool::new(false),
            changed: Notify::new(),
            extending: tokio::sync::Mutex::new(()),
            keeper: StdMutex::new(None),
            on_lost,
            counted: AtomicBool::new(false),
            granted: Instant::now(),
        });
        held.home.live.insert(&held);
        let guard = Guard { held };
        if guard.held.home.live.is_closed() {
            drop(guard);
            return Err(Error::Closed);
        }
        let held = &guard.held;
        let runtime = &held.home.runtime;
        if let Some(keep_alive) = keep_alive {
            let task = runtime.spawn(keep(Arc::clone(held), keep_alive));
            *lock(&held.keeper) = Some(task);
        } else if held.on_lost.is_some() {
            // Nothing extends the lease: run `on_lost` when its validity runs out.
            let lost = guard.lost();
            let task = runtime.spawn(lost);
            *lock(&held.keeper) = Some(task);
        }
        Ok(guard)
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

    /// The moment until which the lease is certainly valid on the backend, by this process's
    /// clock: `sent + ttl * (1 - drift) - margin` of the last confirmed grant or extension.
    pub fn valid_until(&self) -> Instant {
        lock(&self.held.state).valid_until
    }

    /// Extends the lease to `ttl` from now (by the backend's clock), keeping its token. Later
    /// automatic extensions use this `ttl` too, and the keeper re-plans at once: it extends at
    /// most a third of the new TTL later.
    ///
    /// Extensions of one guard never overlap: this waits for an automatic extension in flight.
    /// The whole call is bounded by the locker's
    /// [request timeout](crate::LockerBuilder::request_timeout).
    ///
    /// # Errors
    ///
    /// - [`Error::Expired`] if the lease had expired or was force-released: it is not re-created,
    ///   and the guard is declared lost.
    /// - [`Error::Lost`] if the guard was declared lost before.
    /// - [`Error::InvalidArgument`] if `ttl` is zero or above [`MAX_TTL`](crate::MAX_TTL);
    ///   nothing is sent.
    /// - [`Error::Lost`] also if the answer arrived after the new validity had run out.
    /// - [`Error::ProviderUnavailable`] if the backend failed or did not answer within the
    ///   request timeout. The backend may have applied the extension: the guard counts on the
    ///   sooner of the previous end and the new one (so a failed *shorter* extension shortens
    ///   the guard's validity, and the keeper re-extends at once).
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: if cancelled, the extension may or may not have been applied; the guard
    /// counts on the sooner of the previous end and the new one, as after an error.
    pub async fn extend(&self, ttl: Duration) -> Result<()> {
        check_ttl("ttl", ttl)?;
        let held = &self.held;
        let name = || self.name().to_owned();
        if held.is_lost() {
            return Err(Error::Lost { name: name() });
        }
        let timeout = held.home.request_timeout;
        let extension = async {
            let _turn = held.extending.lock().await;
            if held.is_lost() {
                return Err(Error::Lost { name: name() });
            }
            let sent = Instant::now();
            // Until the answer is in, the backend may or may not have applied the extension.
            let mut unknown = Unknown {
                held,
                sent,
                ttl,
                armed: true,
            };
            let result = held.extend_once(ttl).await;
            unknown.armed = matches!(result, Err(Error::ProviderUnavailable { .. }));
            match result {
                Ok(()) if Instant::now() >= valid_until(sent, ttl) => {
                    // Applied, but answered too late to count on it.
                    held.uncertain(sent, ttl);
                    held.declare_lost();
                    Err(Error::Lost { name: name() })
                }
                Ok(()) => {
                    held.confirm(sent, ttl);
                    if held.is_lost() {
                        return Err(Error::Lost { name: name() });
                    }
                    Ok(())
                }
                Err(Error::Expired { .. } | Error::NotHeld { .. }) => {
                    held.declare_lost();
                    Err(Error::Expired { name: name() })
                }
                Err(e) => Err(e),
            }
        };
        match tokio::time::timeout(timeout, extension).await {
            Ok(result) => result,
            Err(_) => Err(no_reply(held.backend_name(), "extend", timeout)),
        }
    }

    /// Releases the lease: stops auto-extension first, then deletes the lease on the backend
    /// (compared by lease id, so a new holder is never disturbed). Bounded by the locker's
    /// [request timeout](crate::LockerBuilder::request_timeout).
    ///
    /// # Errors
    ///
    /// - [`Error::NotHeld`] if the lease had expired or was force-released.
    /// - [`Error::Lost`] if the guard had been declared lost (the release is still sent).
    /// - [`Error::ProviderUnavailable`] if the backend failed or did not answer within the
    ///   request timeout; the lease then expires after its TTL.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: if this future is dropped before the release completed, the release is sent
    /// again from a task of its own.
    pub async fn release(self) -> Result<()> {
        // Without a keeper, a lease past its validity is declared lost now.
        self.held.is_lost();
        self.held.mark_released();
        let mut unfinished = FinishOnDrop(Some(Arc::clone(&self.held)));
        let result = Arc::clone(&self.held)
            .release_now(ReleaseVia::Explicit)
            .await;
        unfinished.0 = None;
        result
    }

    /// Completes when the guard is declared lost (or once it has been released or dropped:
    /// nothing is held any more). Without auto-extension that is at the latest when the
    /// lease's validity runs out. The future is `'static`: spawn it or `select!` on it next to
    /// the work the lock protects.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: it only observes the guard's state.
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
                let until = lock(&held.state).valid_until;
                tokio::select! {
                    () = changed => {}
                    () = tokio::time::sleep_until(until) => {}
                }
            }
        }
    }

    /// True once the guard was declared lost: its validity ran out (with or without
    /// auto-extension), or the backend no longer had it. Also true once
    /// [`Locker::close`](crate::Locker::close) released it.
    pub fn is_lost(&self) -> bool {
        self.held.is_lost()
    }
}

/// On drop, tells the guard that an extension request sent at `sent` with `ttl` may have been
/// applied, unless disarmed by a definite answer.
struct Unknown<'a> {
    held: &'a Held,
    sent: Instant,
    ttl: Duration,
    armed: bool,
}

impl Drop for Unknown<'_> {
    fn drop(&mut self) {
        if self.armed {
            self.held.uncertain(self.sent, self.ttl);
        }
    }
}

/// Sends the release from a task if [`Guard::release`] was cancelled before it completed.
struct FinishOnDrop(Option<Arc<Held>>);

impl Drop for FinishOnDrop {
    fn drop(&mut self) {
        if let Some(held) = self.0.take() {
            let keeper = held.abort_keeper();
            held.release_in_background(keeper, ReleaseVia::Explicit);
        }
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        if !self.held.mark_released() {
            return;
        }
        let keeper = self.held.abort_keeper();
        self.held.home.live.remove(self.held.lease);
        Arc::clone(&self.held).release_in_background(keeper, ReleaseVia::Drop);
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
