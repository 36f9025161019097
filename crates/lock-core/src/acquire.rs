//! The acquisition loop shared by every lock handle: one attempt, or a wait woken by the
//! backend's change signals, with the fallback poll, error retries, the wait timeout and
//! clean-up after cancellation.

use crate::backend::{Acquired, DynBackend};
use crate::guard::{Grant, Guard, KeepAlive, Live};
use crate::observe::{self, AcquireOutcome, Op};
use crate::retry::Delays;
use crate::{
    AcquireRequest, Error, LeaseId, LockKey, LockKind, LockOptions, Metadata, Mode, Result,
    RetryPolicy, Subscription,
};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// What a locker gives every handle: the backend, the owner and the defaults.
pub(crate) struct Shared {
    pub(crate) backend: Arc<dyn DynBackend>,
    pub(crate) owner: Arc<str>,
    pub(crate) default_ttl: Duration,
    pub(crate) extend_interval: Option<Duration>,
    pub(crate) retry: RetryPolicy,
    pub(crate) live: Arc<Live>,
}

/// A handle's state: its locker, its lock's name and its options.
#[derive(Clone)]
pub(crate) struct HandleCore {
    pub(crate) shared: Arc<Shared>,
    pub(crate) name: Arc<str>,
    pub(crate) options: LockOptions,
    pub(crate) metadata: Arc<Metadata>,
}

/// What is being asked for.
#[derive(Clone, Copy)]
pub(crate) struct Want {
    pub(crate) kind: LockKind,
    pub(crate) mode: Mode,
    pub(crate) permits: u32,
    pub(crate) limit: u32,
}

/// How long a waiting claim lives between refreshes: the TTL, kept within 0.5..=5 s, so a
/// waiter that crashed blocks others for at most that long.
fn claim_ttl(ttl: Duration) -> Duration {
    ttl.clamp(Duration::from_millis(500), Duration::from_secs(5))
}

/// Releases a lease or claim that a dropped acquisition may have left, in the background.
struct Abandon {
    backend: Arc<dyn DynBackend>,
    key: LockKey,
    lease: LeaseId,
    armed: bool,
    started: Instant,
}

impl Drop for Abandon {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        observe::acquire(
            &self.key,
            self.backend.name(),
            AcquireOutcome::Cancelled,
            self.started,
        );
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let backend = Arc::clone(&self.backend);
            let key = self.key.clone();
            let lease = self.lease;
            runtime.spawn(async move {
                let _ = backend.release_dyn(&key, lease).await;
            });
        }
    }
}

impl HandleCore {
    pub(crate) fn new(shared: Arc<Shared>, name: String, options: LockOptions) -> Self {
        HandleCore {
            shared,
            name: name.into(),
            metadata: Arc::new(options.metadata.clone()),
            options,
        }
    }

    pub(crate) fn ttl(&self) -> Duration {
        self.options.ttl.unwrap_or(self.shared.default_ttl)
    }

    fn retry(&self) -> RetryPolicy {
        self.options.retry.unwrap_or(self.shared.retry)
    }

    /// The auto-extension period: the handle's, else the locker's capped at a third of the TTL.
    fn keep_alive(&self, ttl: Duration) -> Result<Option<KeepAlive>> {
        if !self.options.auto_extend {
            return Ok(None);
        }
        let interval = match self.options.extend_interval {
            Some(interval) => interval,
            None => self.shared.extend_interval.unwrap_or(ttl / 3).min(ttl / 3),
        };
        if interval.is_zero() || interval >= ttl {
            return Err(Error::invalid_argument(format!(
                "extend interval {interval:?} must be > 0 and below the ttl {ttl:?}"
            )));
        }
        Ok(Some(KeepAlive {
            interval,
            retry: self.retry(),
        }))
    }

    /// Acquires once (`wait = false`, `Ok(None)` when busy) or until granted (`wait = true`),
    /// inside a `lock.acquire` span, and counts the outcome.
    pub(crate) async fn acquire(&self, want: Want, wait: bool) -> Result<Option<Guard>> {
        let key = LockKey::shared(&self.name, want.kind)?;
        let backend = self.shared.backend.name();
        let started = Instant::now();
        let result = observe::in_span(Op::Acquire, &key, backend, None, async {
            self.acquire_inner(key.clone(), want, wait, started).await
        })
        .await;
        let outcome = match &result {
            Ok((Some(_), false)) => AcquireOutcome::Granted,
            Ok((Some(_), true)) => AcquireOutcome::GrantedAfterWait,
            Ok((None, _)) => AcquireOutcome::Busy,
            Err(Error::NotAcquired { .. }) => AcquireOutcome::Timeout,
            Err(_) => AcquireOutcome::Error,
        };
        observe::acquire(&key, backend, outcome, started);
        result.map(|(guard, _)| guard)
    }

    /// The acquisition; the flag says whether the lock was found busy at least once.
    async fn acquire_inner(
        &self,
        key: LockKey,
        want: Want,
        wait: bool,
        started: Instant,
    ) -> Result<(Option<Guard>, bool)> {
        let ttl = self.ttl();
        if ttl.is_zero() {
            return Err(Error::invalid_argument("ttl must be > 0"));
        }
        let keep_alive = self.keep_alive(ttl)?;
        let retry = self.retry();
        retry.validate()?;

        let backend = &self.shared.backend;
        let deadline = self.options.wait_timeout.map(|d| started + d);
        let mut request = AcquireRequest::new(
            key.clone(),
            LeaseId::generate(),
            Arc::clone(&self.shared.owner),
            want.mode,
            want.permits,
            want.limit,
            ttl,
            Arc::clone(&self.metadata),
        );
        let claim = claim_ttl(ttl);
        request.claim = wait.then_some(claim);
        let mut errors = 0u32;
        let mut contended = false;
        let mut delays = Delays::new(retry);
        let mut poll = !backend.reliable_notifications();
        // Subscribed only once the lock is found busy: an uncontended grant costs one round trip.
        let mut subscription: Option<Subscription> = None;
        // From here on, a dropped future may leave a lease or a claim: clean it up.
        let mut abandon = Abandon {
            backend: Arc::clone(backend),
            key: key.clone(),
            lease: request.lease_id,
            armed: true,
            started,
        };

        let mut sent = started;
        loop {
            let attempt = backend.acquire_dyn(&request);
            let outcome = match deadline {
                Some(deadline) => match tokio::time::timeout_at(deadline, attempt).await {
                    Ok(outcome) => outcome,
                    Err(_) => return Err(self.timed_out(&mut abandon, started).await),
                },
                None => attempt.await,
            };
            let wake_at = match outcome {
                Ok(Acquired::Granted { token }) => {
                    abandon.armed = false;
                    observe::record_token(token);
                    let grant = Grant {
                        owner: Arc::clone(&self.shared.owner),
                        token,
                        mode: want.mode,
                        permits: want.permits,
                        metadata: Arc::clone(&self.metadata),
                    };
                    let guard = Guard::new(
                        Arc::clone(backend),
                        key,
                        request.lease_id,
                        grant,
                        ttl,
                        sent,
                        self.options.on_lost.clone(),
                        keep_alive,
                        Arc::clone(&self.shared.live),
                    );
                    return Ok((Some(guard), contended));
                }
                Ok(Acquired::Busy { retry_after }) => {
                    errors = 0;
                    contended = true;
                    if !wait {
                        abandon.armed = false;
                        return Ok((None, true));
                    }
                    if subscription.is_none() {
                        // Subscribe, then try again at once: a release between the first attempt
                        // and the subscription is not missed.
                        subscription = Some(match backend.subscribe_dyn(&request).await {
                            Ok(sub) => sub,
                            Err(e) => {
                                errors += 1;
                                if let Err(e) = check_errors(errors, retry, e) {
                                    self.withdraw(&mut abandon).await;
                                    return Err(e);
                                }
                                poll = true;
                                Subscription::never()
                            }
                        });
                        sent = Instant::now();
                        continue;
                    }
                    // Wake to refresh the claim, when the first blocker expires, and to poll.
                    let mut wake = Instant::now() + claim / 3;
                    if let Some(after) = retry_after {
                        wake = wake.min(Instant::now() + after);
                    }
                    if poll {
                        wake = wake.min(Instant::now() + delays.next_delay());
                    }
                    wake
                }
                Err(e) if e.is_retryable() => {
                    errors += 1;
                    if let Err(e) = check_errors(errors, retry, e) {
                        self.withdraw(&mut abandon).await;
                        return Err(e);
                    }
                    Instant::now() + delays.next_delay()
                }
                // Rejected (a bad argument): nothing was recorded.
                Err(e) => {
                    abandon.armed = false;
                    return Err(e);
                }
            };
            let wake_at = deadline.map_or(wake_at, |d| wake_at.min(d));
            let changed = async {
                match subscription.as_mut() {
                    Some(subscription) => subscription.changed().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                () = changed => delays.reset(),
                () = tokio::time::sleep_until(wake_at) => {}
            }
            sent = Instant::now();
            if deadline.is_some_and(|d| sent >= d) {
                return Err(self.timed_out(&mut abandon, started).await);
            }
        }
    }

    /// Deletes this request's claim (or a lease granted too late) before reporting a failure.
    async fn withdraw(&self, abandon: &mut Abandon) {
        abandon.armed = false;
        let _ = self
            .shared
            .backend
            .release_dyn(&abandon.key, abandon.lease)
            .await;
    }

    async fn timed_out(&self, abandon: &mut Abandon, started: Instant) -> Error {
        self.withdraw(abandon).await;
        Error::NotAcquired {
            name: self.name.to_string(),
            waited: started.elapsed(),
        }
    }
}

/// Passes while fewer than `max_attempts` consecutive round trips failed (0 = no limit).
fn check_errors(errors: u32, retry: RetryPolicy, error: Error) -> Result<()> {
    if retry.max_attempts != 0 && errors >= retry.max_attempts {
        Err(error)
    } else {
        Ok(())
    }
}
