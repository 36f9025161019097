//! Timing faults on top of a real backend: a [`Faults`] wraps any backend and, scripted per
//! test and per operation, delays a call before it reaches the backend, delays the reply after
//! the backend applied it, hangs, fails without applying, or applies and then fails.
//!
//! It adds faults to a real server; it never replaces one. It runs on tokio's clock, so it
//! works on paused time over the memory backend and on real time over any network backend.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() {
//! use lock_core::Locker;
//! use lock_testkit::faults::{Fault, Faults, Op};
//! use std::time::Duration;
//!
//! let faults = Faults::wrap(lock_memory::Memory::new());
//! // The 2nd acquire's reply is delayed 1.5 s.
//! faults.nth(Op::Acquire, 2, Fault::DelayReply(Duration::from_millis(1500)));
//! let locker = Locker::with_backend(faults.clone());
//! # let _ = locker;
//! # }
//! ```

use lock_core::{
    AcquireRequest, Acquired, Backend, DynBackend, Error, LeaseId, ListRequest, LockInfo, LockKey,
    LockPage, Result, Subscription,
};
use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

/// The operations of the backend contract.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Op {
    /// [`Backend::acquire`].
    Acquire,
    /// [`Backend::release`].
    Release,
    /// [`Backend::extend`].
    Extend,
    /// [`Backend::subscribe`].
    Subscribe,
    /// [`Backend::inspect`].
    Inspect,
    /// [`Backend::force_release`].
    ForceRelease,
    /// [`Backend::list`].
    List,
}

const OPS: usize = 7;

impl Op {
    fn index(self) -> usize {
        self as usize
    }
}

/// What happens to a faulted call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Waits this long before the call reaches the backend (a slow request).
    DelayCall(Duration),
    /// The backend applies the call at once; its reply arrives this much later (a slow reply).
    DelayReply(Duration),
    /// Never answers, and never reaches the backend (a hung connection).
    Hang,
    /// Fails with [`Error::ProviderUnavailable`] without reaching the backend.
    Fail,
    /// The backend applies the call, then the caller gets [`Error::ProviderUnavailable`]: the
    /// reply was lost, the operation happened.
    ApplyThenFail,
}

/// Which calls of an operation a rule applies to, numbered from 1 since the wrapper was made.
#[derive(Debug, Clone, Copy)]
struct Rule {
    op: Op,
    first: u32,
    last: u32,
    fault: Fault,
}

#[derive(Default)]
struct Script {
    rules: Vec<Rule>,
    calls: [u32; OPS],
}

/// A backend that injects scripted timing faults into calls to an inner backend. Clones share
/// the script: keep one to script faults while a [`Locker`](lock_core::Locker) uses another.
///
/// [`close`](Backend::close) does nothing: the inner backend belongs to whoever made it.
#[derive(Clone)]
pub struct Faults {
    inner: Arc<dyn DynBackend>,
    script: Arc<Mutex<Script>>,
}

impl Faults {
    /// Wraps `backend`.
    pub fn wrap(backend: impl Backend) -> Self {
        Self::wrap_dyn(Arc::new(backend))
    }

    /// Wraps a backend chosen at run time, such as [`Locker::backend`](lock_core::Locker::backend).
    pub fn wrap_dyn(backend: Arc<dyn DynBackend>) -> Self {
        Faults {
            inner: backend,
            script: Arc::default(),
        }
    }

    fn script(&self) -> std::sync::MutexGuard<'_, Script> {
        self.script.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn add(&self, op: Op, first: u32, last: u32, fault: Fault) -> &Self {
        self.script().rules.push(Rule {
            op,
            first,
            last,
            fault,
        });
        self
    }

    /// The `n`-th call of `op` (counted from 1 since the wrapper was made) gets `fault`.
    pub fn nth(&self, op: Op, n: u32, fault: Fault) -> &Self {
        self.add(op, n, n, fault)
    }

    /// Every call of `op` from the `n`-th on gets `fault`.
    pub fn from_nth(&self, op: Op, n: u32, fault: Fault) -> &Self {
        self.add(op, n, u32::MAX, fault)
    }

    /// The next call of `op` gets `fault`.
    pub fn next(&self, op: Op, fault: Fault) -> &Self {
        let n = self.calls(op) + 1;
        self.nth(op, n, fault)
    }

    /// Every later call of `op` gets `fault`.
    pub fn always(&self, op: Op, fault: Fault) -> &Self {
        let n = self.calls(op) + 1;
        self.from_nth(op, n, fault)
    }

    /// Removes every rule: later calls pass through untouched.
    pub fn clear(&self) {
        self.script().rules.clear();
    }

    /// How many calls of `op` were made so far (faulted or not).
    pub fn calls(&self, op: Op) -> u32 {
        self.script().calls[op.index()]
    }

    /// Counts a call of `op` and returns its fault, the first rule that matches.
    fn fault(&self, op: Op) -> Option<Fault> {
        let mut script = self.script();
        script.calls[op.index()] += 1;
        let n = script.calls[op.index()];
        script
            .rules
            .iter()
            .find(|r| r.op == op && (r.first..=r.last).contains(&n))
            .map(|r| r.fault)
    }

    fn injected(&self, op: Op, what: &str) -> Error {
        Error::unavailable(
            self.inner.name(),
            std::io::Error::other(format!("injected fault: {op:?} {what}")),
        )
    }

    /// Runs `call` on the inner backend under the scripted fault of this call of `op`.
    async fn run<T, F>(&self, op: Op, call: F) -> Result<T>
    where
        F: Future<Output = Result<T>>,
    {
        match self.fault(op) {
            None => call.await,
            Some(Fault::DelayCall(d)) => {
                tokio::time::sleep(d).await;
                call.await
            }
            Some(Fault::DelayReply(d)) => {
                let result = call.await;
                tokio::time::sleep(d).await;
                result
            }
            Some(Fault::Hang) => std::future::pending().await,
            Some(Fault::Fail) => Err(self.injected(op, "failed before it was sent")),
            Some(Fault::ApplyThenFail) => {
                let _ = call.await;
                Err(self.injected(op, "applied, then its reply was lost"))
            }
        }
    }
}

impl Backend for Faults {
    fn name(&self) -> &'static str {
        self.inner.name()
    }

    fn reliable_notifications(&self) -> bool {
        self.inner.reliable_notifications()
    }

    async fn acquire(&self, request: &AcquireRequest) -> Result<Acquired> {
        self.run(Op::Acquire, self.inner.acquire_dyn(request)).await
    }

    async fn release(&self, key: &LockKey, lease: LeaseId) -> Result<()> {
        self.run(Op::Release, self.inner.release_dyn(key, lease))
            .await
    }

    async fn extend(&self, key: &LockKey, lease: LeaseId, ttl: Duration) -> Result<()> {
        self.run(Op::Extend, self.inner.extend_dyn(key, lease, ttl))
            .await
    }

    async fn inspect(&self, name: &str) -> Result<Vec<LockInfo>> {
        self.run(Op::Inspect, self.inner.inspect_dyn(name)).await
    }

    async fn force_release(&self, name: &str) -> Result<usize> {
        self.run(Op::ForceRelease, self.inner.force_release_dyn(name))
            .await
    }

    async fn list(&self, request: &ListRequest) -> Result<LockPage> {
        self.run(Op::List, self.inner.list_dyn(request)).await
    }

    async fn subscribe(&self, request: &AcquireRequest) -> Result<Subscription> {
        self.run(Op::Subscribe, self.inner.subscribe_dyn(request))
            .await
    }
}

impl std::fmt::Debug for Faults {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let script = self.script();
        f.debug_struct("Faults")
            .field("backend", &self.inner.name())
            .field("rules", &script.rules)
            .field("calls", &script.calls)
            .finish()
    }
}
