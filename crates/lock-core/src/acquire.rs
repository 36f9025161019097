//! The acquisition loop shared by every lock handle: one attempt, or a wait woken by the
//! backend's change signals, with the fallback poll, error retries, the wait timeout and
//! clean-up after cancellation.

use crate::backend::{Acquired, DynBackend};
use crate::guard::{Grant, Guard, Home, KeepAlive, Live, valid_until, validity};
use crate::observe::{self, AcquireOutcome, Op};
use crate::retry::Delays;
use crate::time::{later, no_reply};
use crate::{
    AcquireRequest, Error, LeaseId, LockKey, LockKind, LockOptions, Metadata, Mode, Result,
    RetryPolicy, Subscription, check_ttl,
};
use std::sync::Arc;
use std::time::Duration;
use tokio::runtime::Handle as Runtime;
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// What a locker gives every handle: the backend, the owner and the defaults.
pub(crate) struct Shared {
    pub(crate) backend: Arc<dyn DynBackend>,
    pub(crate) owner: Arc<str>,
    pub(crate) default_ttl: Duration,
    pub(crate) extend_interval: Option<Duration>,
    pub(crate) retry: RetryPolicy,
    pub(crate) request_timeout: Duration,
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

/// Withdraws the lease or claim an acquisition may have left on the backend: on a dropped
/// future, a failure or a timeout. The release runs in a task of its own, bounded by the
/// request timeout, so giving up never waits for the backend.
struct Abandon {
    backend: Arc<dyn DynBackend>,
    runtime: Runtime,
    live: Arc<Live>,
    request_timeout: Duration,
    key: LockKey,
    lease: LeaseId,
    armed: bool,
    started: Instant,
}

impl Abandon {
    /// Nothing is left to clean up.
    fn disarm(&mut self) {
        self.armed = false;
    }

    /// Deletes this request's claim, or a lease granted too late or whose answer was lost, in
    /// the background ([`Locker::close`](crate::Locker::close) waits for it).
    fn withdraw(&mut self) -> JoinHandle<()> {
        self.armed = false;
        let backend = Arc::clone(&self.backend);
        let key = self.key.clone();
        let lease = self.lease;
        let timeout = self.request_timeout;
        self.live.spawn_release(&self.runtime, async move {
            let _ = tokio::time::timeout(timeout, backend.release_dyn(&key, lease)).await;
        })
    }

    /// Withdraws before a failure is reported, waiting a moment for it, so that a claim is
    /// usually gone when the caller sees the error; past [`WITHDRAW_WAIT`] it goes on in the
    /// background.
    async fn withdraw_now(&mut self) {
        let task = self.withdraw();
        let _ = tokio::time::timeout(WITHDRAW_WAIT, task).await;
    }
}

/// How long a failing acquisition waits for its clean-up before it returns (inside the
/// documented 250 ms slack of `lock_timeout`).
const WITHDRAW_WAIT: Duration = Duration::from_millis(100);

/// The shortest automatic extension period accepted.
const MIN_EXTEND_INTERVAL: Duration = Duration::from_millis(1);

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
        self.withdraw();
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
    /// It must leave time to extend before the lease's validity runs out.
    fn keep_alive(&self, ttl: Duration) -> Result<Option<KeepAlive>> {
        if !self.options.auto_extend {
            return Ok(None);
        }
        let interval = match self.options.extend_interval {
            Some(interval) => interval,
            None => self.shared.extend_interval.unwrap_or(ttl / 3).min(ttl / 3),
        };
        let window = validity(ttl);
        if interval < MIN_EXTEND_INTERVAL || interval >= window {
            return Err(Error::invalid_argument(format!(
                "extend interval {interval:?} must be at least {MIN_EXTEND_INTERVAL:?} and below \
                 {window:?}, the part of the ttl {ttl:?} during which the lease is certainly valid"
            )));
        }
        Ok(Some(KeepAlive {
            interval,
            granted_ttl: ttl,
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
    ///
    /// Every argument is checked before the first round trip. Each attempt ends by the wait
    /// deadline and by the request timeout; subscribing too; clean-up runs in the background.
    async fn acquire_inner(
        &self,
        key: LockKey,
        want: Want,
        wait: bool,
        started: Instant,
    ) -> Result<(Option<Guard>, bool)> {
        let ttl = self.ttl();
        check_ttl("ttl", ttl)?;
        let keep_alive = self.keep_alive(ttl)?;
        let retry = self.retry();
        retry.validate()?;
        let runtime = Runtime::try_current().map_err(|_| Error::Unsupported {
            message: "locks need a tokio runtime (none is running on this thread)".into(),
        })?;
        let live = &self.shared.live;
        // Counted until this acquisition ends, so `close` waits for it (after `abandon` below
        // has spawned any clean-up: locals drop in reverse order).
        let _active = live.enter()?;

        let backend = &self.shared.backend;
        let request_timeout = self.shared.request_timeout;
        // A zero wait timeout is one attempt, as `try_*`; a wait timeout too long to represent
        // (`Duration::MAX`) is none.
        let wait_timeout = if wait {
            self.options.wait_timeout
        } else {
            None
        };
        let once = !wait || wait_timeout == Some(Duration::ZERO);
        let deadline = wait_timeout
            .filter(|_| !once)
            .and_then(|d| started.checked_add(d));
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
        request.claim = (!once).then_some(claim);
        let mut errors = 0u32;
        let mut attempts = 0u32;
        let mut contended = false;
        let mut delays = Delays::new(retry);
        let mut poll = !backend.reliable_notifications();
        // Subscribed only once the lock is found busy: an uncontended grant costs one round trip.
        let mut subscription: Option<Subscription> = None;
        // From here on, a dropped future may leave a lease or a claim: clean it up.
        let mut abandon = Abandon {
            backend: Arc::clone(backend),
            runtime: runtime.clone(),
            live: Arc::clone(live),
            request_timeout,
            key: key.clone(),
            lease: request.lease_id,
            armed: true,
            started,
        };
        let not_acquired = || Error::NotAcquired {
            name: self.name.to_string(),
            waited: started.elapsed(),
        };
        // The end of a call made now: the request timeout, or the wait deadline if earlier.
        let bound = |now: Instant| {
            let end = later(now, request_timeout);
            deadline.map_or(end, |d| d.min(end))
        };
        let past_deadline = || deadline.is_some_and(|d| Instant::now() >= d);

        let mut sent = started;
        // The send time of the earliest attempt with this lease id whose outcome is unknown
        // (it failed or timed out: the backend may have granted it then). A backend that
        // answers a retry with that earlier grant may not have refreshed it, so the lease's
        // validity counts from there.
        let mut unknown_since: Option<Instant> = None;
        loop {
            attempts += 1;
            let outcome =
                match tokio::time::timeout_at(bound(sent), backend.acquire_dyn(&request)).await {
                    Ok(outcome) => outcome,
                    Err(_) if past_deadline() => {
                        abandon.withdraw_now().await;
                        return Err(not_acquired());
                    }
                    Err(_) => Err(no_reply(backend.name(), "acquire", request_timeout)),
                };
            let wake_at = match outcome {
                Ok(Acquired::Granted { token }) => {
                    let sent = unknown_since.map_or(sent, |since| since.min(sent));
                    if Instant::now() >= valid_until(sent, ttl) {
                        // The answer came too late to trust the lease: give it back and go on
                        // (under a new lease id, so the late release cannot hit a new grant).
                        // It counts as a failed round trip: a backend too slow for this TTL
                        // ends the wait after `max_attempts`.
                        abandon.withdraw();
                        contended = true;
                        if once {
                            return match wait {
                                true => Err(not_acquired()),
                                false => Ok((None, true)),
                            };
                        }
                        request.lease_id = LeaseId::generate();
                        abandon.lease = request.lease_id;
                        abandon.armed = true;
                        unknown_since = None;
                        errors += 1;
                        let late = late_grant(backend.name(), sent, ttl);
                        if let Err(e) = check_errors(errors, retry, late) {
                            abandon.withdraw();
                            return Err(e);
                        }
                        later(Instant::now(), delays.next_delay())
                    } else {
                        abandon.disarm();
                        observe::record_token(token);
                        let grant = Grant {
                            owner: Arc::clone(&self.shared.owner),
                            token,
                            mode: want.mode,
                            permits: want.permits,
                            metadata: Arc::clone(&self.metadata),
                        };
                        let home = Home {
                            backend: Arc::clone(backend),
                            runtime,
                            live: Arc::clone(live),
                            request_timeout,
                        };
                        let guard = Guard::new(
                            home,
                            key,
                            request.lease_id,
                            grant,
                            ttl,
                            sent,
                            self.options.on_lost.clone(),
                            keep_alive,
                        )?;
                        return Ok((Some(guard), contended));
                    }
                }
                Ok(Acquired::Busy { retry_after }) => {
                    // A backend that grants this lease id later adopts any earlier grant of it
                    // and moves its expiry to now + ttl (the `Backend::acquire` contract): a
                    // grant after a busy answer is valid from its own request, even if a copy
                    // of an earlier grant survived somewhere (a Redlock node).
                    unknown_since = None;
                    errors = 0;
                    contended = true;
                    if once {
                        // No claim was recorded.
                        abandon.disarm();
                        return match wait {
                            true => Err(not_acquired()),
                            false => Ok((None, true)),
                        };
                    }
                    if subscription.is_none() {
                        // Subscribe, then try again at once: a release between the first attempt
                        // and the subscription is not missed.
                        let subscribe = backend.subscribe_dyn(&request);
                        let subscribed =
                            match tokio::time::timeout_at(bound(Instant::now()), subscribe).await {
                                Ok(subscribed) => subscribed,
                                Err(_) => {
                                    Err(no_reply(backend.name(), "subscribe", request_timeout))
                                }
                            };
                        subscription = Some(match subscribed {
                            Ok(sub) => sub,
                            Err(_) if past_deadline() => {
                                abandon.withdraw_now().await;
                                return Err(not_acquired());
                            }
                            Err(e) => {
                                errors += 1;
                                if let Err(e) = check_errors(errors, retry, e) {
                                    abandon.withdraw_now().await;
                                    return Err(e);
                                }
                                poll = true;
                                Subscription::never()
                            }
                        });
                        if past_deadline() {
                            abandon.withdraw_now().await;
                            return Err(not_acquired());
                        }
                        sent = Instant::now();
                        continue;
                    }
                    // Wake to refresh the claim, when the first blocker expires, and to poll.
                    let now = Instant::now();
                    let mut wake = later(now, claim / 3);
                    if let Some(after) = retry_after {
                        wake = wake.min(later(now, after));
                    }
                    if poll {
                        wake = wake.min(later(now, delays.next_delay()));
                    }
                    wake
                }
                Err(e) if e.is_retryable() => {
                    // The backend may have applied the request: clean up if this is the end.
                    unknown_since.get_or_insert(sent);
                    errors += 1;
                    if once {
                        abandon.withdraw();
                        return Err(e);
                    }
                    if let Err(e) = check_errors(errors, retry, e) {
                        abandon.withdraw_now().await;
                        return Err(e);
                    }
                    later(Instant::now(), delays.next_delay())
                }
                // Rejected (a bad argument): nothing was recorded by this attempt, but earlier
                // ones may have left a claim.
                Err(e) => {
                    if attempts > 1 {
                        abandon.withdraw_now().await;
                    } else {
                        abandon.disarm();
                    }
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
                () = live.closing() => {
                    abandon.withdraw_now().await;
                    return Err(Error::Closed);
                }
            }
            if past_deadline() {
                abandon.withdraw_now().await;
                return Err(not_acquired());
            }
            sent = Instant::now();
        }
    }
}

/// The error of a grant whose answer arrived after its validity.
fn late_grant(backend: &'static str, sent: Instant, ttl: Duration) -> Error {
    Error::unavailable(
        backend,
        std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            format!(
                "a grant of ttl {ttl:?} was answered after {:?}, too late to be valid",
                sent.elapsed()
            ),
        ),
    )
}

/// Passes while fewer than `max_attempts` consecutive round trips failed (0 = no limit).
fn check_errors(errors: u32, retry: RetryPolicy, error: Error) -> Result<()> {
    if retry.max_attempts != 0 && errors >= retry.max_attempts {
        Err(error)
    } else {
        Ok(())
    }
}
