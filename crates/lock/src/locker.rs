//! [`Locker`]: `lock_core::Locker` with constructors from [`Config`] and the environment.

use crate::config::{Config, Provider};
use lock_core::{Backend, DynBackend, Error, LockerBuilder, Result};
use std::ops::Deref;
use std::sync::Arc;

/// Makes lock handles ([`Mutex`](crate::Mutex), [`RwMutex`](crate::RwMutex),
/// [`Semaphore`](crate::Semaphore)) on one backend, with the defaults they share.
///
/// A thin wrapper around `lock_core::Locker` that adds the constructors from configuration
/// ([`Locker::new`], [`Locker::from_env`]); every other method (`mutex`, `rw_mutex`,
/// `semaphore`, `inspect`, `force_release`, `close`, `owner`, ...) comes through
/// [`Deref`]. Cheap to clone: clones share the backend, its connections and the set of held
/// leases.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> lock::Result<()> {
/// use lock::{Config, Locker};
/// use std::time::Duration;
///
/// let mut config = Config::default(); // the memory backend
/// config.owner_id = Some("worker-1".into());
/// config.default_ttl = Duration::from_secs(10);
/// config.extend_interval = Duration::from_secs(3); // below the TTL
/// let locker = Locker::new(config).await?;
///
/// let guard = locker.mutex("invoices").lock().await?;
/// assert_eq!(locker.inspect("invoices").await?[0].owner, "worker-1");
/// guard.release().await?;
/// locker.close().await;
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct Locker(lock_core::Locker);

impl Locker {
    /// Connects to the backend named by `config.provider` and makes a locker with the
    /// configuration's default TTL, extend interval, owner id and retry policy.
    ///
    /// The memory provider makes a new, empty in-process store on every call: lockers made by
    /// two calls do not see each other's locks. Share one locker (or its clones) instead, or
    /// give [`Locker::with_backend`] clones of one [`provider::Memory`](crate::provider).
    ///
    /// # Errors
    ///
    /// - [`Error::Config`] when the provider's Cargo feature is not enabled (the message names
    ///   the feature to enable), when a field is out of range (see [`Config::validate`]), or
    ///   when a setting the provider requires is missing (`LOCK_POSTGRES_URL`).
    /// - [`Error::ProviderUnavailable`] when the backend cannot be reached.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: dropping the future drops any connection being made; nothing is held yet.
    pub async fn new(config: Config) -> Result<Locker> {
        config.validate()?;
        if !config.provider.is_enabled() {
            return Err(feature_off(config.provider));
        }
        let backend = connect(&config).await?;
        let mut builder = lock_core::Locker::builder_dyn(backend)
            .default_ttl(config.default_ttl)
            .extend_interval(config.extend_interval)
            .retry(config.retry)
            .request_timeout(config.request_timeout);
        if let Some(owner) = config.owner_id {
            builder = builder.owner(owner);
        }
        Ok(Locker(builder.build()?))
    }

    /// [`Config::from_env`], then [`Locker::new`]: the backend and settings come from the
    /// `LOCK_*` environment variables (see [`config`](crate::config)).
    ///
    /// ```no_run
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> lock::Result<()> {
    /// // LOCK_PROVIDER=memory LOCK_DEFAULT_TTL=10s LOCK_OWNER_ID=worker-1
    /// let locker = lock::Locker::from_env().await?;
    /// let guard = locker.mutex("nightly-report").lock().await?;
    /// guard.release().await?;
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::Config`] naming the bad variable and its value; otherwise as [`Locker::new`].
    ///
    /// # Cancel safety
    ///
    /// Cancel safe, as [`Locker::new`].
    pub async fn from_env() -> Result<Locker> {
        Locker::new(Config::from_env()?).await
    }

    /// A locker on `backend` with the default settings and a fresh ULID as owner id.
    pub fn with_backend(backend: impl Backend) -> Locker {
        Locker(lock_core::Locker::with_backend(backend))
    }

    /// A builder for a locker on `backend`, to set the owner id, default TTL, extend interval
    /// and retry policy in code. Its [`build`](LockerBuilder::build) returns the inner
    /// `lock_core::Locker`: wrap it with [`Locker::from`].
    ///
    /// ```
    /// # fn main() -> lock::Result<()> {
    /// use lock::{Locker, provider::Memory};
    /// let locker = Locker::from(Locker::builder(Memory::new()).owner("worker-1").build()?);
    /// assert_eq!(locker.owner(), "worker-1");
    /// # Ok(())
    /// # }
    /// ```
    pub fn builder(backend: impl Backend) -> LockerBuilder {
        lock_core::Locker::builder(backend)
    }

    /// The inner `lock_core::Locker`.
    pub fn into_inner(self) -> lock_core::Locker {
        self.0
    }
}

/// Makes the backend `config.provider` names, from its own configuration.
async fn connect(config: &Config) -> Result<Arc<dyn DynBackend>> {
    match config.provider {
        #[cfg(feature = "memory")]
        Provider::Memory => Ok(Arc::new(lock_memory::Memory::new())),
        #[cfg(feature = "redis")]
        Provider::Redis => Ok(Arc::new(
            lock_redis::Redis::connect(config.redis.clone()).await?,
        )),
        #[cfg(feature = "postgres")]
        Provider::Postgres => Ok(Arc::new(
            lock_postgres::Postgres::connect(config.postgres.clone()).await?,
        )),
        #[cfg(feature = "etcd")]
        Provider::Etcd => Ok(Arc::new(
            lock_etcd::Etcd::connect(config.etcd.clone()).await?,
        )),
        #[allow(unreachable_patterns)]
        provider => Err(feature_off(provider)),
    }
}

fn feature_off(provider: Provider) -> Error {
    Error::config(format!(
        "LOCK_PROVIDER is {:?}, but the `{feature}` feature of the `lock` crate is not enabled; \
         enable it in Cargo.toml (features = [\"{feature}\"])",
        provider.as_str(),
        feature = provider.feature(),
    ))
}

impl Deref for Locker {
    type Target = lock_core::Locker;

    fn deref(&self) -> &lock_core::Locker {
        &self.0
    }
}

impl AsRef<lock_core::Locker> for Locker {
    fn as_ref(&self) -> &lock_core::Locker {
        &self.0
    }
}

impl From<lock_core::Locker> for Locker {
    fn from(inner: lock_core::Locker) -> Self {
        Locker(inner)
    }
}

impl From<Locker> for lock_core::Locker {
    fn from(locker: Locker) -> Self {
        locker.0
    }
}

impl std::fmt::Debug for Locker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(&self.0, f)
    }
}
