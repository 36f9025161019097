//! [`Tracker`]: counts work that outlives the call that started it (background releases,
//! acquisitions in flight, a backend's stragglers), so a `close` can wait for it.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use tokio::runtime::Handle as Runtime;
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio::time::Instant;

#[derive(Default)]
struct Count {
    running: AtomicUsize,
    idle: Notify,
}

/// A count of running work, and a way to wait until it is all done. Cheap to clone; clones
/// share the count. Backends use it for what they leave running in the background, so that
/// their [`close`](crate::Backend::close) can wait for it.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// use lock_core::Tracker;
/// use std::time::Duration;
///
/// let tracker = Tracker::default();
/// tracker.spawn(async { tokio::time::sleep(Duration::from_millis(10)).await });
/// let end = tokio::time::Instant::now() + Duration::from_secs(1);
/// tracker.settled(end).await;
/// assert_eq!(tracker.running(), 0);
/// # }
/// ```
#[derive(Clone, Default)]
pub struct Tracker(Arc<Count>);

/// One unit of tracked work: counted until dropped.
#[must_use = "the work is counted only while this is alive"]
pub struct Tracked(Arc<Count>);

impl Drop for Tracked {
    fn drop(&mut self) {
        self.0.running.fetch_sub(1, Ordering::SeqCst);
        self.0.idle.notify_waiters();
    }
}

impl std::fmt::Debug for Tracked {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tracked").finish_non_exhaustive()
    }
}

impl Tracker {
    /// Counts one unit of work until the returned value is dropped.
    pub fn enter(&self) -> Tracked {
        self.0.running.fetch_add(1, Ordering::SeqCst);
        Tracked(Arc::clone(&self.0))
    }

    /// Runs `work` on the current tokio runtime, counted until it ends (or is dropped, as when
    /// the runtime shuts down).
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime, as [`tokio::spawn`].
    pub fn spawn(&self, work: impl Future<Output = ()> + Send + 'static) -> JoinHandle<()> {
        self.spawn_on(&Runtime::current(), work)
    }

    /// Runs `work` on `runtime`, counted until it ends (or is dropped, as when the runtime
    /// shuts down).
    pub fn spawn_on(
        &self,
        runtime: &Runtime,
        work: impl Future<Output = ()> + Send + 'static,
    ) -> JoinHandle<()> {
        let tracked = self.enter();
        runtime.spawn(async move {
            let _tracked = tracked;
            work.await;
        })
    }

    /// How many units of work are running.
    pub fn running(&self) -> usize {
        self.0.running.load(Ordering::SeqCst)
    }

    /// Waits until no work is running, or until `end`.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: it only observes the count.
    pub async fn settled(&self, end: Instant) {
        loop {
            let idle = self.0.idle.notified();
            tokio::pin!(idle);
            idle.as_mut().enable();
            if self.running() == 0 {
                return;
            }
            if tokio::time::timeout_at(end, idle).await.is_err() {
                return;
            }
        }
    }
}

impl std::fmt::Debug for Tracker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tracker")
            .field("running", &self.running())
            .finish()
    }
}
