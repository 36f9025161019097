//! The core of `lock`: the backend contract, lock handles, guards, fencing tokens and errors.
//!
//! Not for direct use: depend on the `lock` crate, which re-exports all of this and adds
//! configuration from `LOCK_*` environment variables. Backend authors implement [`Backend`]
//! (a few atomic operations on a lock's lease set, see [`backend`]); everything else — blocking
//! waits woken by change signals, retries, timeouts, cancellation clean-up, guards, automatic
//! extension with lost-lock detection — is built here once.
#![cfg_attr(docsrs, feature(doc_cfg))]

mod acquire;
pub mod backend;
mod error;
mod guard;
mod handle;
mod info;
mod list;
mod locker;
mod mutex;
mod notify;
pub mod observe;
mod options;
pub mod redact;
mod retry;
mod rwlock;
mod semaphore;
pub mod settings;
mod time;
mod token;
mod tracker;

pub use backend::{AcquireRequest, Acquired, Backend, BoxFuture, DynBackend, Subscription};
pub use error::{BoxError, Error, Result};
pub use guard::{CLOCK_DRIFT, Guard, valid_until};
pub use info::{LockInfo, LockKey, LockKind, MAX_NAME_LEN, Metadata, Mode, validate_name};
pub use list::{DEFAULT_LIST_LIMIT, ListCursor, ListRequest, LockPage, MAX_LIST_LIMIT};
pub use locker::{CloseReport, DEFAULT_REQUEST_TIMEOUT, Locker, LockerBuilder};
pub use mutex::Mutex;
pub use notify::Notifier;
pub use options::{
    DEFAULT_TTL, LockOptions, MAX_RETRY_DELAY, MAX_TTL, MIN_TTL, OnLost, RetryPolicy, check_ttl,
};
pub use rwlock::RwMutex;
pub use semaphore::Semaphore;
pub use time::later;
pub use token::{FencingToken, LeaseId};
pub use tracker::{Tracked, Tracker};

/// A semaphore's permits: the same type as every other guard.
pub type Permit = Guard;
