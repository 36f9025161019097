//! Options of lock handles and their defaults.

use crate::{Error, LockInfo, Metadata, Result};
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

/// The default lease time to live: 30 seconds.
pub const DEFAULT_TTL: Duration = Duration::from_secs(30);

/// The longest lease time to live accepted anywhere (handles, extensions, the locker's default
/// and `LOCK_DEFAULT_TTL`): one year. Longer TTLs are [`Error::InvalidArgument`] (or
/// [`Error::Config`]), checked before anything is sent. A lease is a promise that a crashed
/// holder's lock comes back; past a year that promise means nothing, and some backends cannot
/// store more.
pub const MAX_TTL: Duration = Duration::from_secs(365 * 24 * 60 * 60);

/// The shortest lease time to live accepted: 10 ms. A shorter lease would be over before its
/// grant could be trusted.
pub const MIN_TTL: Duration = Duration::from_millis(10);

/// The longest retry delay accepted (`initial_delay`, `max_delay`): one hour.
pub const MAX_RETRY_DELAY: Duration = Duration::from_secs(60 * 60);

/// Checks a lease TTL: at least [`MIN_TTL`] and at most [`MAX_TTL`]. `what` names the
/// argument in the message (`"ttl"`, `"default ttl"`).
///
/// # Errors
///
/// [`Error::InvalidArgument`] naming `what`, its value and the allowed range.
pub fn check_ttl(what: &str, ttl: Duration) -> Result<()> {
    if ttl < MIN_TTL || ttl > MAX_TTL {
        return Err(Error::invalid_argument(format!(
            "{what} {ttl:?} is out of range: it must be at least {MIN_TTL:?} and at most \
             {MAX_TTL:?} (one year)"
        )));
    }
    Ok(())
}

/// The callback run once when a guard is declared lost; it gets the lost lease's info.
pub type OnLost = Arc<dyn Fn(&LockInfo) + Send + Sync + 'static>;

/// How acquisitions retry: the fallback poll while waiting, and backend errors.
///
/// Waiters are woken by the backend's change notifications; the poll (a jittered exponential
/// backoff from `initial_delay` to `max_delay`) only covers lost notifications. `max_attempts`
/// bounds *consecutive failed round trips* to the backend (errors, never contention): the
/// `max_attempts`-th consecutive failure ends the call with
/// [`Error::ProviderUnavailable`]; `0` retries errors until the wait ends.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetryPolicy {
    /// Consecutive failed round trips allowed before giving up; 0 = no limit. Default 3.
    pub max_attempts: u32,
    /// First delay of the error retry and of the fallback poll. Default 50 ms.
    pub initial_delay: Duration,
    /// Cap of both delays. Default 1 s.
    pub max_delay: Duration,
    /// Each delay is shortened by a random fraction of up to `jitter` (0..=1). Default 0.1.
    pub jitter: f64,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 3,
            initial_delay: Duration::from_millis(50),
            max_delay: Duration::from_secs(1),
            jitter: 0.1,
        }
    }
}

impl RetryPolicy {
    /// Checks the ranges: `initial_delay` > 0, `max_delay` >= `initial_delay`, both at most
    /// [`MAX_RETRY_DELAY`] (one hour), `jitter` in 0..=1.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidArgument`] naming the field, its value and the allowed range.
    pub fn validate(&self) -> Result<()> {
        if self.initial_delay.is_zero() {
            return Err(Error::invalid_argument("retry initial_delay must be > 0"));
        }
        if self.max_delay > MAX_RETRY_DELAY {
            return Err(Error::invalid_argument(format!(
                "retry max_delay {:?} is above the maximum {MAX_RETRY_DELAY:?} (one hour)",
                self.max_delay
            )));
        }
        if self.max_delay < self.initial_delay {
            return Err(Error::invalid_argument(format!(
                "retry max_delay {:?} is below initial_delay {:?}",
                self.max_delay, self.initial_delay
            )));
        }
        if !(0.0..=1.0).contains(&self.jitter) {
            return Err(Error::invalid_argument(format!(
                "retry jitter {} is outside 0..=1",
                self.jitter
            )));
        }
        Ok(())
    }
}

/// The options of one lock handle. Build them with the handle's builder methods
/// ([`Mutex::ttl`](crate::Mutex::ttl), ...) or set them here and pass them to
/// [`Locker::mutex_with`](crate::Locker::mutex_with).
#[derive(Clone, Default)]
#[non_exhaustive]
pub struct LockOptions {
    /// Lease time to live; `None` = the locker's default.
    pub ttl: Option<Duration>,
    /// Keep the lease alive in the background until it is released.
    pub auto_extend: bool,
    /// Period of the auto-extension; `None` = the locker's, at most a third of the TTL.
    pub extend_interval: Option<Duration>,
    /// Stored with the lease, returned by inspection.
    pub metadata: Metadata,
    /// Retry policy; `None` = the locker's.
    pub retry: Option<RetryPolicy>,
    /// Run once when a guard is declared lost.
    pub on_lost: Option<OnLost>,
    /// How long blocking acquisitions wait before [`Error::NotAcquired`]; `None` = forever.
    pub wait_timeout: Option<Duration>,
}

impl fmt::Debug for LockOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LockOptions")
            .field("ttl", &self.ttl)
            .field("auto_extend", &self.auto_extend)
            .field("extend_interval", &self.extend_interval)
            .field("metadata", &self.metadata)
            .field("retry", &self.retry)
            .field("on_lost", &self.on_lost.as_ref().map(|_| "Fn(&LockInfo)"))
            .field("wait_timeout", &self.wait_timeout)
            .finish()
    }
}
