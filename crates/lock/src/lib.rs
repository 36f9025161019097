//! Distributed locks for async Rust: [`Mutex`], read-write lock ([`RwMutex`]) and counting
//! [`Semaphore`], with fencing tokens, TTLs, automatic extension with lost-lock detection,
//! cancel-safe waits and timeouts, and lock metadata.
//!
//! A [`Locker`] makes lock handles on one backend, chosen with a Cargo feature and at run time
//! by `LOCK_PROVIDER` (see [`config`] for every `LOCK_*` variable):
//!
//! | feature | backend |
//! |---|---|
//! | `memory` (default) | [`provider::Memory`](provider): in-process locks |
//! | `redis` | [`provider::Redis`](provider): one Redis instance, or Redlock over several |
//! | `postgres` | [`provider::Postgres`](provider): PostgreSQL, advisory-lock or lease-table mode |
//! | `etcd` | [`provider::Etcd`](provider): etcd v3, leases and revision-ordered queues (needs `protoc` to build) |
//! | `full` | all of them |
//!
//! Every acquisition returns a [`Guard`] with a [`FencingToken`] that grows with every grant
//! of the lock: pass it along with each write to the protected resource, and have the resource
//! reject tokens lower than the highest it has seen.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> lock::Result<()> {
//! use lock::{Locker, provider::Memory};
//! use std::time::Duration;
//!
//! let locker = Locker::with_backend(Memory::new());
//! // In a service: `let locker = Locker::from_env().await?;`
//!
//! let mutex = locker.mutex("nightly-report").ttl(Duration::from_secs(10));
//! let guard = mutex.lock().await?;
//! println!("holding {} with fencing token {}", guard.name(), guard.token());
//! assert!(mutex.try_lock().await?.is_none()); // held: try_lock does not wait
//! guard.release().await?;
//!
//! let pool = locker.semaphore("gpu", 4);
//! let permits = pool.acquire(3).await?;
//! assert_eq!(pool.available().await?, 1);
//! permits.release().await?;
//! # Ok(())
//! # }
//! ```
#![cfg_attr(docsrs, feature(doc_cfg))]

pub mod config;
mod locker;

pub use config::{Config, Provider};
pub use locker::Locker;

/// The configuration library, re-exported so [`Config::from_figment`] can be given a figment
/// of the same version.
pub use figment;

pub use lock_core::backend;
pub use lock_core::observe;
pub use lock_core::{
    AcquireRequest, Acquired, Backend, BoxError, BoxFuture, CLOCK_DRIFT, DEFAULT_LIST_LIMIT,
    DEFAULT_TTL, DynBackend, Error, FencingToken, Guard, LeaseId, ListCursor, ListRequest,
    LockInfo, LockKey, LockKind, LockOptions, LockPage, LockerBuilder, MAX_LIST_LIMIT,
    MAX_NAME_LEN, MAX_TTL, Metadata, Mode, Mutex, Notifier, OnLost, Permit, Result, RetryPolicy,
    RwMutex, Semaphore, Subscription, check_ttl, valid_until, validate_name,
};

/// The backends this build has, one per enabled Cargo feature. Give one to
/// [`Locker::with_backend`], or let [`Locker::new`] pick it from [`Config::provider`].
pub mod provider {
    #[cfg(feature = "memory")]
    #[cfg_attr(docsrs, doc(cfg(feature = "memory")))]
    pub use lock_memory::Memory;

    #[cfg(feature = "redis")]
    #[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
    pub use lock_redis::{Redis, RedisConfig};

    #[cfg(feature = "etcd")]
    #[cfg_attr(docsrs, doc(cfg(feature = "etcd")))]
    pub use lock_etcd::{Etcd, EtcdConfig, LeaseMode};

    #[cfg(feature = "postgres")]
    #[cfg_attr(docsrs, doc(cfg(feature = "postgres")))]
    pub use lock_postgres::{Postgres, PostgresConfig, PostgresDurability, PostgresMode};
}

/// The README's code blocks, compiled and run as doc tests so the README stays true.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
