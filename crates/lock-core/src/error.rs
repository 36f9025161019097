//! The one error type of the library and its `Result` alias.

use std::error::Error as StdError;
use std::time::Duration;

/// A boxed error from a backend's client library, kept as the source of
/// [`Error::ProviderUnavailable`].
pub type BoxError = Box<dyn StdError + Send + Sync + 'static>;

/// The result type of every fallible operation in this library.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong when locking.
///
/// Contention is not an error: `try_*` methods return `Ok(None)` when a lock is busy and
/// blocking methods wait. The variants say what happened to *your* lease; backend failures are
/// all [`Error::ProviderUnavailable`], with the client library's error as the
/// [source](std::error::Error::source).
///
/// Lock names appear in messages quoted with Rust's `Debug` escaping, so a name holding a newline
/// or a quote cannot forge the rest of a log line.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A blocking acquisition ran out of its wait timeout before the lock became free.
    #[error("lock {name:?} not acquired within {waited:?}")]
    NotAcquired {
        /// The lock's name.
        name: String,
        /// How long the acquisition waited.
        waited: Duration,
    },
    /// The lease being released is not held: it expired, was force-released, or was never ours.
    /// A new holder is never disturbed by such a release.
    #[error(
        "lock {name:?} is not held by this lease (it expired, was force-released or was already released)"
    )]
    NotHeld {
        /// The lock's name.
        name: String,
    },
    /// The lease being extended has already expired (or was force-released); it was not
    /// re-created.
    #[error("lease on lock {name:?} has expired and cannot be extended")]
    Expired {
        /// The lock's name.
        name: String,
    },
    /// The guard was declared lost earlier (its extension failed or could not be confirmed in
    /// time); the lock must be treated as no longer held.
    #[error("lease on lock {name:?} was lost")]
    Lost {
        /// The lock's name.
        name: String,
    },
    /// The backend could not be reached or failed. Retrying later may succeed.
    #[error("{backend} backend unavailable")]
    ProviderUnavailable {
        /// The backend's name (`memory`, `redis`, `postgres`, `etcd`).
        backend: &'static str,
        /// What the client library reported.
        #[source]
        source: BoxError,
    },
    /// An argument was out of range: an empty or too long name, a zero TTL, `n = 0` or `n` over
    /// a semaphore's limit, a semaphore limit that differs from the stored one.
    #[error("invalid argument: {message}")]
    InvalidArgument {
        /// What was wrong, naming the argument, its value and the limit.
        message: String,
    },
    /// The configuration was invalid; the message names the variable and its value.
    #[error("configuration error: {message}")]
    Config {
        /// What was wrong, naming the variable and its value.
        message: String,
    },
    /// The locker was closed by [`Locker::close`](crate::Locker::close): it makes no new
    /// acquisitions.
    #[error("the locker was closed; it makes no new acquisitions")]
    Closed,
    /// The backend cannot do this operation.
    #[error("unsupported: {message}")]
    Unsupported {
        /// What is not supported, and by which backend.
        message: String,
    },
}

impl Error {
    /// Creates [`Error::InvalidArgument`] with a message.
    pub fn invalid_argument(message: impl Into<String>) -> Self {
        Error::InvalidArgument {
            message: message.into(),
        }
    }

    /// Creates [`Error::Config`] with a message.
    pub fn config(message: impl Into<String>) -> Self {
        Error::Config {
            message: message.into(),
        }
    }

    /// Creates [`Error::ProviderUnavailable`] for `backend` with the client's error as source.
    pub fn unavailable(backend: &'static str, source: impl Into<BoxError>) -> Self {
        Error::ProviderUnavailable {
            backend,
            source: source.into(),
        }
    }

    /// True for the outcomes of locking itself ([`NotAcquired`](Error::NotAcquired),
    /// [`NotHeld`](Error::NotHeld), [`Expired`](Error::Expired), [`Lost`](Error::Lost)), as
    /// opposed to failures of the backend, the configuration or the arguments.
    ///
    /// ```
    /// use lock_core::Error;
    /// assert!(Error::NotHeld { name: "jobs".into() }.is_lock_error());
    /// assert!(!Error::invalid_argument("ttl must be > 0").is_lock_error());
    /// ```
    pub fn is_lock_error(&self) -> bool {
        matches!(
            self,
            Error::NotAcquired { .. }
                | Error::NotHeld { .. }
                | Error::Expired { .. }
                | Error::Lost { .. }
        )
    }

    /// True when the same call may succeed if it is retried later: the backend was unavailable,
    /// or a wait timed out.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            Error::ProviderUnavailable { .. } | Error::NotAcquired { .. }
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unavailable_keeps_source_without_repeating_it() {
        let err = Error::unavailable("redis", std::io::Error::other("connection refused"));
        assert_eq!(err.to_string(), "redis backend unavailable");
        assert_eq!(err.source().unwrap().to_string(), "connection refused");
        assert!(err.is_retryable());
        assert!(!err.is_lock_error());
    }

    #[test]
    fn names_are_escaped() {
        let err = Error::NotHeld {
            name: "a\"b\nc".into(),
        };
        assert!(err.to_string().contains(r#""a\"b\nc""#), "{err}");
    }
}
