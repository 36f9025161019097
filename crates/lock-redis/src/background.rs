//! The work a backend leaves running after a call returned (stragglers of a Redlock round,
//! roll-backs), counted so that [`Redis::close`](crate::Redis) can wait for it.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tokio::sync::Notify;
use tokio::task::JoinHandle;

#[derive(Default)]
struct Count {
    running: AtomicUsize,
    idle: Notify,
}

/// Background tasks, counted until each ends (or is dropped with its runtime).
#[derive(Clone, Default)]
pub(crate) struct Background(Arc<Count>);

/// Uncounts a task when its future is dropped, done or not.
struct Done(Arc<Count>);

impl Drop for Done {
    fn drop(&mut self) {
        self.0.running.fetch_sub(1, Ordering::SeqCst);
        self.0.idle.notify_waiters();
    }
}

impl Background {
    /// Runs `task` on the current runtime, counted.
    pub(crate) fn spawn(&self, task: impl Future<Output = ()> + Send + 'static) -> JoinHandle<()> {
        self.0.running.fetch_add(1, Ordering::SeqCst);
        let done = Done(Arc::clone(&self.0));
        tokio::spawn(async move {
            let _done = done;
            task.await;
        })
    }

    /// Waits until no task is running, or `within` passed.
    pub(crate) async fn settled(&self, within: Duration) {
        let end = tokio::time::Instant::now() + within;
        loop {
            let idle = self.0.idle.notified();
            tokio::pin!(idle);
            idle.as_mut().enable();
            if self.0.running.load(Ordering::SeqCst) == 0 {
                return;
            }
            if tokio::time::timeout_at(end, idle).await.is_err() {
                return;
            }
        }
    }
}
