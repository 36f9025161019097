//! Instants from user-given durations, without overflow, and the error for a call that got no
//! reply in time.

use crate::Error;
use std::time::Duration;
use tokio::time::Instant;

/// Far enough to mean "never" for any lock, near enough that adding it to a monotonic clock
/// cannot overflow: about 100 years.
const FAR: Duration = Duration::from_secs(100 * 365 * 24 * 60 * 60);

/// `at + d`, saturated at about 100 years from `at`: a user-given duration never panics.
/// Backends use it for expiries and deadlines computed from a caller's durations.
///
/// ```
/// use std::time::Duration;
/// let now = tokio::time::Instant::now();
/// assert!(lock_core::later(now, Duration::MAX) > now);
/// ```
pub fn later(at: Instant, d: Duration) -> Instant {
    at.checked_add(d.min(FAR)).unwrap_or(at)
}

/// [`Error::ProviderUnavailable`] for a call to `backend` that got no reply within `after`.
pub(crate) fn no_reply(backend: &'static str, call: &str, after: Duration) -> Error {
    Error::unavailable(
        backend,
        std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            format!("no reply to {call} within {after:?}"),
        ),
    )
}
