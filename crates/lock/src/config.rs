//! [`Config`]: the `LOCK_*` settings, loaded through [figment](https://docs.rs/figment).
//!
//! | variable | default | meaning |
//! |---|---|---|
//! | `LOCK_PROVIDER` | `memory` | `memory`, `redis`, `postgres` or `etcd` (any case) |
//! | `LOCK_DEFAULT_TTL` | `30s` | lease time to live, a [humantime] duration with a unit (`30s`, `500ms`, `1m`); at most one year ([`MAX_TTL`](crate::MAX_TTL)) |
//! | `LOCK_EXTEND_INTERVAL` | `10s`, or a third of a shorter `LOCK_DEFAULT_TTL` | auto-extension period; must be below `LOCK_DEFAULT_TTL` (each handle uses at most a third of its TTL) |
//! | `LOCK_OWNER_ID` | a ULID per locker | owner recorded in leases |
//! | `LOCK_RETRY_MAX_ATTEMPTS` | `3` | consecutive backend errors tolerated while acquiring; `0` = no limit |
//! | `LOCK_RETRY_INITIAL_DELAY` | `50ms` | first delay of the error retry and of the fallback poll; at most `1h` ([`MAX_RETRY_DELAY`]) |
//! | `LOCK_RETRY_MAX_DELAY` | `1s` | cap of both; at most `1h` |
//! | `LOCK_RETRY_JITTER` | `0.1` | share of each delay taken off at random, in `0..=1` |
//! | `LOCK_REQUEST_TIMEOUT` | `5s` | bound of each backend call that is not a wait (an attempt, a release, an extension, an inspection), above 0 and at most `1h` |
//! | `LOCK_REDIS_URLS` | `redis://localhost:6379` | comma-separated; more than one = Redlock |
//! | `LOCK_REDIS_PREFIX` | `lock:` | key prefix |
//! | `LOCK_REDIS_QUORUM` | `0` | `0` = a majority of the URLs |
//! | `LOCK_POSTGRES_URL` | (none) | required for `postgres` |
//! | `LOCK_POSTGRES_NAMESPACE` | `1` | advisory-lock namespace (an `i32`) |
//! | `LOCK_POSTGRES_MODE` | `advisory` | `advisory` (advisory locks, a session per held lock) or `lease` (rows only; works behind PgBouncer transaction pooling) |
//! | `LOCK_ETCD_ENDPOINTS` | `localhost:2379` | comma-separated |
//! | `LOCK_ETCD_PREFIX` | `/locks/` | key prefix |
//!
//! Lists take one value, comma-separated values (spaces around items are trimmed; empty items
//! are rejected) or figment's array form `[a, b]`; a comma inside a URL must be
//! percent-encoded (`%2C`). A bad value is an [`Error::Config`] naming the variable and the
//! value; passwords in URLs are replaced by `***` in errors and in `Debug` output (see
//! [`lock_core::redact::redact`] for what is hidden).
//!
//! Any other `LOCK_*` variable (a typo such as `LOCK_DEFAULT_TLL`) is ignored, and reported:
//! loading logs a `tracing` warning for each, naming the closest known variable when one is
//! close, and [`Config::unknown_env_vars`] lists them ([`UnknownVar`]). The test suite's
//! `LOCK_TEST_*` variables are never reported. An unknown key in a configuration file (or any
//! other figment provider but the environment) is an error naming the key, the file and the
//! closest known key.
//!
//! [humantime]: https://docs.rs/humantime

use figment::value::{Dict, Map, Value};
use figment::{Figment, Metadata, Profile};
use lock_core::redact::{Redacted, redact, redact_all};
use lock_core::{Error, Result, RetryPolicy};
use serde::Deserialize;
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

/// The prefix of every variable this crate reads.
pub const ENV_PREFIX: &str = "LOCK_";

/// The longest delay `LOCK_RETRY_INITIAL_DELAY` and `LOCK_RETRY_MAX_DELAY` accept: one hour,
/// the same limit as [`RetryPolicy::validate`](lock_core::RetryPolicy::validate). They pace
/// the fallback poll and the retries after backend errors; a longer pause would leave a waiter
/// asleep long after the lock came free.
pub use lock_core::MAX_RETRY_DELAY;

/// A `LOCK_*` environment variable that is not in the table (a typo, or a variable of another
/// version), with the known variable whose name is closest when one is close. Variables
/// starting with `LOCK_TEST_` (the test suite's) are never reported.
///
/// Loading ignores such variables but logs each through a `tracing` warning;
/// [`Config::unknown_env_vars`] lists them, for a program that wants to show them itself.
///
/// ```
/// use lock::config::UnknownVar;
/// let unknown = UnknownVar::new("LOCK_DEFAULT_TLL");
/// assert_eq!(unknown.suggestion, Some("LOCK_DEFAULT_TTL"));
/// assert_eq!(
///     unknown.to_string(),
///     "unknown variable LOCK_DEFAULT_TLL is ignored (did you mean LOCK_DEFAULT_TTL?)"
/// );
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct UnknownVar {
    /// The variable's name, in uppercase (`LOCK_DEFAULT_TLL`).
    pub name: String,
    /// The known variable with the closest name, when one is close (`LOCK_DEFAULT_TTL`).
    pub suggestion: Option<&'static str>,
}

impl UnknownVar {
    /// The report for the variable `name`, with the closest known name.
    pub fn new(name: impl Into<String>) -> UnknownVar {
        let name = name.into().to_ascii_uppercase();
        let key = name
            .strip_prefix(ENV_PREFIX)
            .unwrap_or(&name)
            .to_ascii_lowercase();
        UnknownVar {
            suggestion: closest(&key).map(|var| var.name),
            name,
        }
    }
}

impl fmt::Display for UnknownVar {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "unknown variable {} is ignored", self.name)?;
        if let Some(known) = self.suggestion {
            write!(f, " (did you mean {known}?)")?;
        }
        Ok(())
    }
}

/// The backend a [`Config`] selects (`LOCK_PROVIDER`).
///
/// Parsing is case-insensitive and ignores surrounding spaces; [`Display`](fmt::Display)
/// gives the lowercase name, which is also the name of the Cargo feature that enables it.
///
/// ```
/// use lock::Provider;
/// assert_eq!("Redis".parse::<Provider>().unwrap(), Provider::Redis);
/// assert_eq!(Provider::Postgres.to_string(), "postgres");
/// assert!("zookeeper".parse::<Provider>().is_err());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Provider {
    /// In-process locks (feature `memory`, on by default).
    #[default]
    Memory,
    /// Redis, one instance or Redlock over several (feature `redis`).
    Redis,
    /// PostgreSQL (feature `postgres`).
    Postgres,
    /// etcd v3 (feature `etcd`).
    Etcd,
}

impl Provider {
    /// Every provider, in the order of the docs.
    pub const ALL: [Provider; 4] = [
        Provider::Memory,
        Provider::Redis,
        Provider::Postgres,
        Provider::Etcd,
    ];

    /// The lowercase name: `memory`, `redis`, `postgres` or `etcd`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Provider::Memory => "memory",
            Provider::Redis => "redis",
            Provider::Postgres => "postgres",
            Provider::Etcd => "etcd",
        }
    }

    /// The Cargo feature of the `lock` crate that brings this backend (its name).
    pub const fn feature(self) -> &'static str {
        self.as_str()
    }

    /// True when this build of the `lock` crate has the provider's Cargo feature on.
    pub const fn is_enabled(self) -> bool {
        match self {
            Provider::Memory => cfg!(feature = "memory"),
            Provider::Redis => cfg!(feature = "redis"),
            Provider::Postgres => cfg!(feature = "postgres"),
            Provider::Etcd => cfg!(feature = "etcd"),
        }
    }
}

impl fmt::Display for Provider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Provider {
    type Err = Error;

    /// Parses a provider name, ignoring case and surrounding spaces.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] for any other name, listing the valid ones.
    fn from_str(s: &str) -> Result<Self> {
        let name = s.trim();
        Provider::ALL
            .into_iter()
            .find(|p| p.as_str().eq_ignore_ascii_case(name))
            .ok_or_else(|| Error::config(unknown_provider(name)))
    }
}

fn unknown_provider(name: &str) -> String {
    let names: Vec<&str> = Provider::ALL.iter().map(|p| p.as_str()).collect();
    format!(
        "unknown provider {name:?} (expected one of {})",
        names.join(", ")
    )
}

/// The settings of the Redis backend (`LOCK_REDIS_*`).
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct RedisConfig {
    /// `LOCK_REDIS_URLS`: one URL for a single instance, several for Redlock. Default
    /// `["redis://localhost:6379"]`.
    pub urls: Vec<String>,
    /// `LOCK_REDIS_PREFIX`: prefix of every key. Default `lock:`.
    pub prefix: String,
    /// `LOCK_REDIS_QUORUM`: grants needed with Redlock; `0` (the default) = a majority.
    pub quorum: u32,
}

impl Default for RedisConfig {
    fn default() -> Self {
        RedisConfig {
            urls: vec!["redis://localhost:6379".to_owned()],
            prefix: "lock:".to_owned(),
            quorum: 0,
        }
    }
}

impl fmt::Debug for RedisConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisConfig")
            .field(
                "urls",
                &self.urls.iter().map(|u| Redacted(u)).collect::<Vec<_>>(),
            )
            .field("prefix", &self.prefix)
            .field("quorum", &self.quorum)
            .finish()
    }
}

/// The settings of the PostgreSQL backend (`LOCK_POSTGRES_*`).
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct PostgresConfig {
    /// `LOCK_POSTGRES_URL`: the connection URL; required when the provider is `postgres`.
    pub url: Option<String>,
    /// `LOCK_POSTGRES_NAMESPACE`: the first key of every advisory lock. Default 1.
    pub namespace: i32,
    /// `LOCK_POSTGRES_MODE`: advisory locks (the default) or lease rows.
    pub mode: PostgresMode,
}

impl Default for PostgresConfig {
    fn default() -> Self {
        PostgresConfig {
            url: None,
            namespace: 1,
            mode: PostgresMode::default(),
        }
    }
}

/// How the PostgreSQL backend keeps locks (`LOCK_POSTGRES_MODE`); the backend's own type is
/// `provider::PostgresMode` (feature `postgres`). See the `lock-postgres` README for the
/// comparison.
///
/// ```
/// use lock::config::PostgresMode;
/// assert_eq!("lease".parse::<PostgresMode>().unwrap(), PostgresMode::Lease);
/// assert_eq!(PostgresMode::default().to_string(), "advisory");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum PostgresMode {
    /// PostgreSQL advisory locks, one session per held lock, a side table (the default).
    #[default]
    Advisory,
    /// Rows in tables only, pooled connections: works behind PgBouncer transaction pooling.
    Lease,
}

impl PostgresMode {
    /// The lowercase name: `advisory` or `lease`.
    pub const fn as_str(self) -> &'static str {
        match self {
            PostgresMode::Advisory => "advisory",
            PostgresMode::Lease => "lease",
        }
    }
}

impl fmt::Display for PostgresMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for PostgresMode {
    type Err = Error;

    /// `advisory` or `lease`, in any case.
    fn from_str(s: &str) -> Result<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "advisory" => Ok(PostgresMode::Advisory),
            "lease" => Ok(PostgresMode::Lease),
            _ => Err(Error::config(format!(
                "invalid PostgreSQL mode {:?} (expected \"advisory\" or \"lease\")",
                s.trim()
            ))),
        }
    }
}

impl fmt::Debug for PostgresConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresConfig")
            .field("url", &self.url.as_deref().map(Redacted))
            .field("namespace", &self.namespace)
            .field("mode", &self.mode)
            .finish()
    }
}

/// The settings of the etcd backend (`LOCK_ETCD_*`).
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct EtcdConfig {
    /// `LOCK_ETCD_ENDPOINTS`: the cluster's client endpoints. Default `["localhost:2379"]`.
    pub endpoints: Vec<String>,
    /// `LOCK_ETCD_PREFIX`: prefix of every key. Default `/locks/`.
    pub prefix: String,
}

impl Default for EtcdConfig {
    fn default() -> Self {
        EtcdConfig {
            endpoints: vec!["localhost:2379".to_owned()],
            prefix: "/locks/".to_owned(),
        }
    }
}

impl fmt::Debug for EtcdConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EtcdConfig")
            .field(
                "endpoints",
                &self
                    .endpoints
                    .iter()
                    .map(|u| Redacted(u))
                    .collect::<Vec<_>>(),
            )
            .field("prefix", &self.prefix)
            .finish()
    }
}

/// The settings of a [`Locker`](crate::Locker): which backend, its connection settings, and
/// the defaults of every lock handle. See the [module docs](self) for the variables.
///
/// Load it with [`Config::from_env`] (or [`Config::from_figment`] to add a configuration file
/// before the environment), or start from [`Config::default`] and set fields.
/// `Debug` output hides passwords in URLs.
///
/// ```
/// # fn main() -> lock::Result<()> {
/// use lock::{Config, Provider};
/// use std::time::Duration;
///
/// let mut config = Config::default();
/// assert_eq!(config.provider, Provider::Memory);
/// assert_eq!(config.default_ttl, Duration::from_secs(30));
///
/// config.redis.urls = vec!["redis://app:s3cret@cache:6379".into()];
/// assert!(format!("{config:?}").contains("redis://app:***@cache:6379"));
/// config.validate()?;
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Config {
    /// `LOCK_PROVIDER`: the backend. Default [`Provider::Memory`].
    pub provider: Provider,
    /// `LOCK_DEFAULT_TTL`: lease time to live of handles that set none. Default 30 s.
    pub default_ttl: Duration,
    /// `LOCK_EXTEND_INTERVAL`: auto-extension period of handles that set none (each handle
    /// uses at most a third of its TTL). Must be below `default_ttl`. Default 10 s; loaded
    /// from a figment that does not set it, 10 s or a third of a shorter `default_ttl`.
    pub extend_interval: Duration,
    /// `LOCK_OWNER_ID`: the owner recorded in leases; `None` (the default) = a fresh ULID per
    /// locker.
    pub owner_id: Option<String>,
    /// `LOCK_RETRY_*`: the retry policy of acquisitions.
    pub retry: RetryPolicy,
    /// `LOCK_REQUEST_TIMEOUT`: the bound of each backend call that is not a wait; see
    /// [`LockerBuilder::request_timeout`](lock_core::LockerBuilder::request_timeout). Default
    /// 5 s.
    pub request_timeout: Duration,
    /// `LOCK_REDIS_*`.
    pub redis: RedisConfig,
    /// `LOCK_POSTGRES_*`.
    pub postgres: PostgresConfig,
    /// `LOCK_ETCD_*`.
    pub etcd: EtcdConfig,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            provider: Provider::Memory,
            default_ttl: lock_core::DEFAULT_TTL,
            extend_interval: Duration::from_secs(10),
            owner_id: None,
            retry: RetryPolicy::default(),
            request_timeout: lock_core::DEFAULT_REQUEST_TIMEOUT,
            redis: RedisConfig::default(),
            postgres: PostgresConfig::default(),
            etcd: EtcdConfig::default(),
        }
    }
}

impl Config {
    /// Loads the configuration from the `LOCK_*` environment variables over the defaults.
    ///
    /// Equivalent to `Config::from_figment(&Figment::from(EnvVars::new()))`.
    ///
    /// ```no_run
    /// # fn main() -> lock::Result<()> {
    /// // LOCK_PROVIDER=memory LOCK_DEFAULT_TTL=10s
    /// let config = lock::Config::from_env()?;
    /// println!("{config:?}");
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::Config`] naming the first bad variable and its value (passwords hidden).
    pub fn from_env() -> Result<Config> {
        Config::from_figment(&Figment::from(EnvVars::new()))
    }

    /// The `LOCK_*` environment variables that are not in the table, sorted by name, each with
    /// the closest known name when one is close; `LOCK_TEST_*` is left out. Loading ignores
    /// them (and logs each through a `tracing` warning): this is for a program that wants to
    /// show them itself.
    ///
    /// ```
    /// for unknown in lock::Config::unknown_env_vars() {
    ///     eprintln!("warning: {unknown}");
    /// }
    /// ```
    pub fn unknown_env_vars() -> Vec<UnknownVar> {
        let mut found: Vec<UnknownVar> = figment::providers::Env::prefixed(ENV_PREFIX)
            .iter()
            .filter(|(key, _)| is_unknown_env_key(key.as_str()))
            .map(|(key, _)| UnknownVar::new(format!("{ENV_PREFIX}{}", key.as_str())))
            .collect();
        found.sort_by(|a, b| a.name.cmp(&b.name));
        found.dedup();
        found
    }

    /// Loads the configuration from `figment` over the defaults. Its keys are the variable
    /// names without `LOCK_`, in lowercase and flat (`default_ttl`, `redis_urls`,
    /// `retry_max_attempts`, ...). Values may be strings, numbers, booleans or (for lists)
    /// arrays; durations are strings with a unit.
    ///
    /// Merge a file provider before [`EnvVars`] to let the environment override the file:
    ///
    /// ```
    /// # fn main() -> lock::Result<()> {
    /// use lock::config::{Config, EnvVars};
    /// use lock::figment::Figment;
    /// use std::time::Duration;
    ///
    /// // With figment's `toml` feature: `.merge(Toml::file("lock.toml"))`.
    /// let figment = Figment::new()
    ///     .merge(("default_ttl", "10s"))
    ///     .merge(("redis_urls", ["redis://a:6379", "redis://b:6379", "redis://c:6379"]))
    ///     .merge(EnvVars::new());
    /// let config = Config::from_figment(&figment)?;
    /// # if std::env::var_os("LOCK_DEFAULT_TTL").is_none() {
    /// assert_eq!(config.default_ttl, Duration::from_secs(10));
    /// # }
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// Prefer [`EnvVars`] to figment's own `Env::prefixed("LOCK_")`: it keeps values exactly as
    /// written (figment's reads `LOCK_OWNER_ID=007` as the number 7). Never add
    /// `.split("_")`: nested keys such as `default.ttl` are rejected.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] naming the first bad variable and its value (passwords hidden), and
    /// where it was set when that was not the environment; or naming an unknown key that was
    /// not set by the environment, where it was set, and the closest known key. Unknown
    /// `LOCK_*` environment variables are not errors: see [`UnknownVar`].
    pub fn from_figment(figment: &Figment) -> Result<Config> {
        for section in NESTED_SECTIONS {
            if let Ok(Value::Dict(..)) = figment.find_value(section) {
                return Err(Error::config(redact(&format!(
                    "nested key `{section}`{}: keys are flat, named like the variables without \
                     {ENV_PREFIX} (`{section}_...`, e.g. `default_ttl`, `redis_urls`, \
                     `retry_max_attempts`)",
                    origin(figment, section)
                ))));
            }
        }
        check_keys(figment)?;
        let raw: Raw = figment
            .extract()
            .map_err(|e| Error::config(redact(&e.to_string())))?;
        let mut written = Written::new();
        let loader = Loader { figment };
        let mut config = Config::default();

        if let Some(v) = raw.provider {
            config.provider = loader.parse(PROVIDER, v, |s| {
                Provider::from_str(s).map_err(|_| unknown_provider(s.trim()))
            })?;
        }
        if let Some(v) = raw.default_ttl {
            config.default_ttl = loader.duration(DEFAULT_TTL, v, &mut written)?;
        }
        match raw.extend_interval {
            Some(v) => {
                config.extend_interval = loader.duration(EXTEND_INTERVAL, v, &mut written)?
            }
            // Unset: 10s, or a third of a shorter TTL (what each handle would use anyway).
            None => {
                config.extend_interval = config
                    .extend_interval
                    .min(config.default_ttl / 3)
                    .max(Duration::from_nanos(1));
            }
        }
        if let Some(v) = raw.owner_id {
            config.owner_id = Some(loader.parse(OWNER_ID, v, |s| Ok(s.trim().to_owned()))?);
        }
        if let Some(v) = raw.retry_max_attempts {
            config.retry.max_attempts = loader.parse(RETRY_MAX_ATTEMPTS, v, |s| {
                parse_int(s, "a non-negative integer; 0 = no limit")
            })?;
        }
        if let Some(v) = raw.retry_initial_delay {
            config.retry.initial_delay = loader.duration(RETRY_INITIAL_DELAY, v, &mut written)?;
        }
        if let Some(v) = raw.retry_max_delay {
            config.retry.max_delay = loader.duration(RETRY_MAX_DELAY, v, &mut written)?;
        }
        if let Some(v) = raw.retry_jitter {
            config.retry.jitter = loader.parse(RETRY_JITTER, v, parse_fraction)?;
        }
        if let Some(v) = raw.request_timeout {
            config.request_timeout = loader.duration(REQUEST_TIMEOUT, v, &mut written)?;
        }
        if let Some(v) = raw.redis_urls {
            config.redis.urls = loader.list(REDIS_URLS, v)?;
        }
        if let Some(v) = raw.redis_prefix {
            config.redis.prefix = loader.parse(REDIS_PREFIX, v, |s| Ok(s.trim().to_owned()))?;
        }
        if let Some(v) = raw.redis_quorum {
            config.redis.quorum = loader.parse(REDIS_QUORUM, v, |s| {
                parse_int(s, "a non-negative integer; 0 = a majority")
            })?;
        }
        if let Some(v) = raw.postgres_url {
            config.postgres.url = Some(loader.parse(POSTGRES_URL, v, |s| Ok(s.trim().to_owned()))?);
        }
        if let Some(v) = raw.postgres_namespace {
            config.postgres.namespace = loader.parse(POSTGRES_NAMESPACE, v, |s| {
                parse_int(s, "an integer in -2147483648..=2147483647")
            })?;
        }
        if let Some(v) = raw.postgres_mode {
            config.postgres.mode = loader.parse(POSTGRES_MODE, v, |s| {
                let t = s.trim();
                PostgresMode::from_str(t).map_err(|_| {
                    format!("invalid value {t:?} (expected \"advisory\" or \"lease\")")
                })
            })?;
        }
        if let Some(v) = raw.etcd_endpoints {
            config.etcd.endpoints = loader.list(ETCD_ENDPOINTS, v)?;
        }
        if let Some(v) = raw.etcd_prefix {
            config.etcd.prefix = loader.parse(ETCD_PREFIX, v, |s| Ok(s.trim().to_owned()))?;
        }

        config.check(&|key| origin(figment, key), &written)?;
        Ok(config)
    }

    /// Checks the ranges of every field: TTL and extend interval > 0, an extend interval below
    /// the TTL, a TTL of at most
    /// [`MAX_TTL`](crate::MAX_TTL) (one year), a non-empty owner id, retry delays > 0 and at
    /// most [`MAX_RETRY_DELAY`] (one hour) with `max_delay >= initial_delay`, jitter in
    /// `0..=1`, non-empty URL and endpoint lists without empty items, a non-empty PostgreSQL
    /// URL when set, and a Redis quorum of 0 or between a majority and the number of URLs.
    /// [`Config::from_env`], [`Config::from_figment`] and [`Locker::new`](crate::Locker::new)
    /// call it.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] naming the variable, its value and the allowed range.
    pub fn validate(&self) -> Result<()> {
        self.check(&|_| String::new(), &Written::new())
    }

    /// `written` holds the text of each duration as it was given, to quote it in errors.
    fn check(&self, origin: &dyn Fn(&str) -> String, written: &Written) -> Result<()> {
        let show = |var: Var, d: Duration| match written.get(var.key) {
            Some(text) => text.clone(),
            None => show_duration(d),
        };
        let fail = |var: Var, problem: String| -> Result<()> {
            Err(Error::config(redact(&format!(
                "{}: {problem}{}",
                var.name,
                origin(var.key)
            ))))
        };
        for (var, d) in [
            (DEFAULT_TTL, self.default_ttl),
            (EXTEND_INTERVAL, self.extend_interval),
            (RETRY_INITIAL_DELAY, self.retry.initial_delay),
            (REQUEST_TIMEOUT, self.request_timeout),
        ] {
            if d.is_zero() {
                return fail(var, format!("must be greater than 0, got {}", show(var, d)));
            }
        }
        if self.extend_interval >= self.default_ttl {
            return fail(
                EXTEND_INTERVAL,
                format!(
                    "{} must be below {} ({}): the lease would expire between two extensions \
                     (leave it unset for 10s or a third of a shorter TTL)",
                    show(EXTEND_INTERVAL, self.extend_interval),
                    DEFAULT_TTL.name,
                    show(DEFAULT_TTL, self.default_ttl)
                ),
            );
        }
        if self.default_ttl > lock_core::MAX_TTL || self.default_ttl < lock_core::MIN_TTL {
            return fail(
                DEFAULT_TTL,
                format!(
                    "{} is out of range: a lease TTL must be at least 10ms and at most one year \
                     (365 days)",
                    show(DEFAULT_TTL, self.default_ttl)
                ),
            );
        }
        for (var, d) in [
            (RETRY_INITIAL_DELAY, self.retry.initial_delay),
            (RETRY_MAX_DELAY, self.retry.max_delay),
            (REQUEST_TIMEOUT, self.request_timeout),
        ] {
            if d > MAX_RETRY_DELAY {
                return fail(
                    var,
                    format!(
                        "{} is out of range: it must be at most {}",
                        show(var, d),
                        show_duration(MAX_RETRY_DELAY)
                    ),
                );
            }
        }
        if self.retry.max_delay < self.retry.initial_delay {
            return fail(
                RETRY_MAX_DELAY,
                format!(
                    "{:?} is below {} ({:?})",
                    self.retry.max_delay, RETRY_INITIAL_DELAY.name, self.retry.initial_delay
                ),
            );
        }
        let jitter = self.retry.jitter;
        if !(0.0..=1.0).contains(&jitter) {
            return fail(RETRY_JITTER, format!("{jitter} is outside the range 0..=1"));
        }
        if let Some(owner) = &self.owner_id
            && owner.trim().is_empty()
        {
            return fail(
                OWNER_ID,
                format!("{owner:?} is empty; leave it unset to get a generated ULID"),
            );
        }
        for (var, list) in [
            (REDIS_URLS, &self.redis.urls),
            (ETCD_ENDPOINTS, &self.etcd.endpoints),
        ] {
            if list.is_empty() {
                return fail(var, "must not be empty".to_owned());
            }
            if list.iter().any(|item| item.trim().is_empty()) {
                return fail(var, format!("empty item in {:?}", redact_all(list)));
            }
        }
        let urls = self.redis.urls.len();
        let quorum = self.redis.quorum as usize;
        let majority = urls / 2 + 1;
        if quorum > urls {
            return fail(
                REDIS_QUORUM,
                format!(
                    "{quorum} is more than the {urls} URL(s) of {}",
                    REDIS_URLS.name
                ),
            );
        }
        if quorum != 0 && quorum < majority {
            return fail(
                REDIS_QUORUM,
                format!(
                    "{quorum} is below a majority of the {urls} URL(s) of {} ({majority}); two \
                     holders could be granted the same lock (use 0 for a majority)",
                    REDIS_URLS.name
                ),
            );
        }
        if let Some(url) = &self.postgres.url
            && url.trim().is_empty()
        {
            return fail(POSTGRES_URL, "must not be empty".to_owned());
        }
        Ok(())
    }
}

/// A figment provider of the `LOCK_*` environment variables, with each value kept as the
/// string it is (figment's `Env` reads `007` as a number and `[a, b]` as an array). Keys are
/// the variable names without `LOCK_`, in lowercase: `LOCK_DEFAULT_TTL` is `default_ttl`.
///
/// [`Config::from_env`] uses it; merge it last in your own figment so the environment wins
/// (see [`Config::from_figment`]).
#[derive(Debug, Clone, Default)]
pub struct EnvVars {
    _private: (),
}

impl EnvVars {
    /// The provider of the `LOCK_*` variables.
    pub fn new() -> Self {
        EnvVars::default()
    }
}

impl figment::Provider for EnvVars {
    fn metadata(&self) -> Metadata {
        Metadata::named(format!("`{ENV_PREFIX}*` environment variables")).interpolater(
            |_: &Profile, keys: &[&str]| {
                format!("{ENV_PREFIX}{}", keys.join(".").to_ascii_uppercase())
            },
        )
    }

    fn data(&self) -> std::result::Result<Map<Profile, Dict>, figment::Error> {
        let mut dict = Dict::new();
        for (key, value) in figment::providers::Env::prefixed(ENV_PREFIX).iter() {
            dict.insert(key.as_str().to_owned(), Value::from(value));
        }
        Ok(Profile::Default.collect(dict))
    }
}

/// A variable: its name and its figment key.
#[derive(Clone, Copy)]
struct Var {
    name: &'static str,
    key: &'static str,
}

macro_rules! vars {
    ($($konst:ident = $name:literal, $key:literal;)*) => {
        $(const $konst: Var = Var { name: $name, key: $key };)*
    };
}

vars! {
    PROVIDER = "LOCK_PROVIDER", "provider";
    DEFAULT_TTL = "LOCK_DEFAULT_TTL", "default_ttl";
    EXTEND_INTERVAL = "LOCK_EXTEND_INTERVAL", "extend_interval";
    OWNER_ID = "LOCK_OWNER_ID", "owner_id";
    RETRY_MAX_ATTEMPTS = "LOCK_RETRY_MAX_ATTEMPTS", "retry_max_attempts";
    RETRY_INITIAL_DELAY = "LOCK_RETRY_INITIAL_DELAY", "retry_initial_delay";
    RETRY_MAX_DELAY = "LOCK_RETRY_MAX_DELAY", "retry_max_delay";
    RETRY_JITTER = "LOCK_RETRY_JITTER", "retry_jitter";
    REQUEST_TIMEOUT = "LOCK_REQUEST_TIMEOUT", "request_timeout";
    REDIS_URLS = "LOCK_REDIS_URLS", "redis_urls";
    REDIS_PREFIX = "LOCK_REDIS_PREFIX", "redis_prefix";
    REDIS_QUORUM = "LOCK_REDIS_QUORUM", "redis_quorum";
    POSTGRES_URL = "LOCK_POSTGRES_URL", "postgres_url";
    POSTGRES_NAMESPACE = "LOCK_POSTGRES_NAMESPACE", "postgres_namespace";
    POSTGRES_MODE = "LOCK_POSTGRES_MODE", "postgres_mode";
    ETCD_ENDPOINTS = "LOCK_ETCD_ENDPOINTS", "etcd_endpoints";
    ETCD_PREFIX = "LOCK_ETCD_PREFIX", "etcd_prefix";
}

/// Every variable of the table.
const KNOWN: [Var; 17] = [
    PROVIDER,
    DEFAULT_TTL,
    EXTEND_INTERVAL,
    OWNER_ID,
    RETRY_MAX_ATTEMPTS,
    RETRY_INITIAL_DELAY,
    RETRY_MAX_DELAY,
    RETRY_JITTER,
    REQUEST_TIMEOUT,
    REDIS_URLS,
    REDIS_PREFIX,
    REDIS_QUORUM,
    POSTGRES_URL,
    POSTGRES_NAMESPACE,
    POSTGRES_MODE,
    ETCD_ENDPOINTS,
    ETCD_PREFIX,
];

/// Whether an environment variable's key (its name without `LOCK_`, in any case) is neither in
/// the table nor one of the test suite's `LOCK_TEST_*`.
fn is_unknown_env_key(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    !key.starts_with("test_") && !KNOWN.iter().any(|var| var.key == key)
}

/// The known variable whose key is closest to `key`, when it is close: at most 2 edits, or a
/// quarter of the key's length for long keys.
fn closest(key: &str) -> Option<Var> {
    let limit = (key.chars().count() / 4).max(2);
    KNOWN
        .iter()
        .map(|var| (edit_distance(key, var.key), *var))
        .filter(|(distance, _)| *distance <= limit)
        .min_by_key(|(distance, _)| *distance)
        .map(|(_, var)| var)
}

/// The Levenshtein distance: insertions, deletions and substitutions of characters.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let above = row[j + 1];
            row[j + 1] = if ca == *cb {
                diagonal
            } else {
                1 + diagonal.min(above).min(row[j])
            };
            diagonal = above;
        }
    }
    row[b.len()]
}

/// Rejects unknown keys that come from anything but the environment (a file, values set in
/// code), and logs a `tracing` warning for each unknown `LOCK_*` variable.
fn check_keys(figment: &Figment) -> Result<()> {
    let keys: Dict = figment
        .extract()
        .map_err(|e| Error::config(redact(&e.to_string())))?;
    for key in keys.keys() {
        if KNOWN.iter().any(|var| var.key == key) {
            continue;
        }
        let metadata = figment.find_metadata(key);
        if metadata.is_some_and(|md| md.name.contains("environment variable")) {
            if is_unknown_env_key(key) {
                let unknown = UnknownVar::new(format!("{ENV_PREFIX}{key}"));
                tracing::warn!(variable = %unknown.name, "{unknown}");
            }
            continue;
        }
        let place = match metadata {
            Some(md) => match &md.source {
                Some(source) => format!(" in {} {source}", md.name),
                None => format!(" in {}", md.name),
            },
            None => String::new(),
        };
        let hint = match closest(key) {
            Some(var) => format!(" (did you mean `{}`?)", var.key),
            None => format!(
                " (keys are the variable names without {ENV_PREFIX}, in lowercase: `default_ttl`, \
                 `redis_urls`, ...)"
            ),
        };
        return Err(Error::config(redact(&format!(
            "unknown key `{key}`{place}{hint}"
        ))));
    }
    Ok(())
}

/// First words of the variables: what `Env::split("_")` would nest them under.
const NESTED_SECTIONS: [&str; 7] = [
    "default", "extend", "owner", "retry", "redis", "postgres", "etcd",
];

/// Where a key was set, when that was not the environment: ` (set as `key` in TOML file x)`.
fn origin(figment: &Figment, key: &str) -> String {
    match figment.find_metadata(key) {
        Some(md) if !md.name.contains("environment variable") => match &md.source {
            Some(source) => format!(" (set as `{key}` by {} {source})", md.name),
            None => format!(" (set as `{key}` by {})", md.name),
        },
        _ => String::new(),
    }
}

/// The text each duration was given as, by figment key.
type Written = std::collections::BTreeMap<&'static str, String>;

/// The flat form every source is read into.
#[derive(Deserialize, Default)]
struct Raw {
    provider: Option<RawValue>,
    default_ttl: Option<RawValue>,
    extend_interval: Option<RawValue>,
    owner_id: Option<RawValue>,
    retry_max_attempts: Option<RawValue>,
    retry_initial_delay: Option<RawValue>,
    retry_max_delay: Option<RawValue>,
    retry_jitter: Option<RawValue>,
    request_timeout: Option<RawValue>,
    redis_urls: Option<RawValue>,
    redis_prefix: Option<RawValue>,
    redis_quorum: Option<RawValue>,
    postgres_url: Option<RawValue>,
    postgres_namespace: Option<RawValue>,
    postgres_mode: Option<RawValue>,
    etcd_endpoints: Option<RawValue>,
    etcd_prefix: Option<RawValue>,
}

/// A value of any scalar type as its string, or a list of them.
enum RawValue {
    One(String),
    Many(Vec<String>),
}

impl<'de> Deserialize<'de> for RawValue {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        d.deserialize_any(RawVisitor { nested: false })
    }
}

/// An item of a list: a scalar only.
struct Scalar(String);

impl<'de> Deserialize<'de> for Scalar {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        match d.deserialize_any(RawVisitor { nested: true })? {
            RawValue::One(s) => Ok(Scalar(s)),
            RawValue::Many(_) => unreachable!("a nested visitor rejects lists"),
        }
    }
}

struct RawVisitor {
    nested: bool,
}

impl<'de> serde::de::Visitor<'de> for RawVisitor {
    type Value = RawValue;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.nested {
            f.write_str("a string, number or boolean")
        } else {
            f.write_str("a string, number, boolean or a list of them")
        }
    }

    fn visit_bool<E>(self, v: bool) -> std::result::Result<RawValue, E> {
        Ok(RawValue::One(v.to_string()))
    }
    fn visit_i64<E>(self, v: i64) -> std::result::Result<RawValue, E> {
        Ok(RawValue::One(v.to_string()))
    }
    fn visit_i128<E>(self, v: i128) -> std::result::Result<RawValue, E> {
        Ok(RawValue::One(v.to_string()))
    }
    fn visit_u64<E>(self, v: u64) -> std::result::Result<RawValue, E> {
        Ok(RawValue::One(v.to_string()))
    }
    fn visit_u128<E>(self, v: u128) -> std::result::Result<RawValue, E> {
        Ok(RawValue::One(v.to_string()))
    }
    fn visit_f64<E>(self, v: f64) -> std::result::Result<RawValue, E> {
        Ok(RawValue::One(v.to_string()))
    }
    fn visit_char<E>(self, v: char) -> std::result::Result<RawValue, E> {
        Ok(RawValue::One(v.to_string()))
    }
    fn visit_str<E>(self, v: &str) -> std::result::Result<RawValue, E> {
        Ok(RawValue::One(v.to_owned()))
    }
    fn visit_string<E>(self, v: String) -> std::result::Result<RawValue, E> {
        Ok(RawValue::One(v))
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(
        self,
        mut seq: A,
    ) -> std::result::Result<RawValue, A::Error> {
        if self.nested {
            return Err(serde::de::Error::invalid_type(
                serde::de::Unexpected::Seq,
                &self,
            ));
        }
        let mut items = Vec::new();
        while let Some(Scalar(item)) = seq.next_element()? {
            items.push(item);
        }
        Ok(RawValue::Many(items))
    }
}

struct Loader<'a> {
    figment: &'a Figment,
}

impl Loader<'_> {
    fn error(&self, var: Var, problem: &str) -> Error {
        Error::config(redact(&format!(
            "{}: {problem}{}",
            var.name,
            origin(self.figment, var.key)
        )))
    }

    /// Parses a single value with `parse`, whose error names the problem and the value.
    fn parse<T>(
        &self,
        var: Var,
        value: RawValue,
        parse: impl FnOnce(&str) -> std::result::Result<T, String>,
    ) -> Result<T> {
        match value {
            RawValue::One(s) => parse(&s).map_err(|problem| self.error(var, &problem)),
            RawValue::Many(items) => Err(self.error(
                var,
                &format!("expected a single value, got the list {items:?}"),
            )),
        }
    }

    /// A duration with a unit; its text is kept in `written` for later errors.
    fn duration(&self, var: Var, value: RawValue, written: &mut Written) -> Result<Duration> {
        let d = self.parse(var, value, |s| {
            written.insert(var.key, s.trim().to_owned());
            parse_duration(s)
        })?;
        Ok(d)
    }

    /// A list: one value, comma-separated values, `[a, b]`, or an array.
    fn list(&self, var: Var, value: RawValue) -> Result<Vec<String>> {
        let (shown, items): (String, Vec<String>) = match value {
            RawValue::One(s) => {
                let trimmed = s.trim();
                let inner = trimmed
                    .strip_prefix('[')
                    .and_then(|t| t.strip_suffix(']'))
                    .unwrap_or(trimmed);
                let items = inner.split(',').map(|item| unquote(item.trim())).collect();
                // Each item redacted on its own: only a lone URL can be redacted exactly.
                let shown: Vec<String> = s.split(',').map(|p| redact(p).into_owned()).collect();
                (shown.join(","), items)
            }
            RawValue::Many(items) => (
                format!("{:?}", redact_all(&items)),
                items.iter().map(|item| unquote(item.trim())).collect(),
            ),
        };
        if items.iter().all(String::is_empty) {
            return Err(self.error(
                var,
                &format!(
                    "must not be empty, got {shown:?} (give one value or a comma-separated list)"
                ),
            ));
        }
        if items.iter().any(String::is_empty) {
            return Err(self.error(
                var,
                &format!("empty item in {shown:?} (items are separated by single commas)"),
            ));
        }
        Ok(items)
    }
}

/// Strips one pair of matching quotes.
fn unquote(s: &str) -> String {
    for q in ['"', '\''] {
        if let Some(inner) = s.strip_prefix(q).and_then(|t| t.strip_suffix(q)) {
            return inner.trim().to_owned();
        }
    }
    s.to_owned()
}

fn parse_duration(s: &str) -> std::result::Result<Duration, String> {
    let t = s.trim();
    if t.parse::<f64>().is_ok_and(|n| n >= 0.0) {
        return Err(format!(
            "invalid duration {t:?}: a unit is required (e.g. {t}s or {t}ms)"
        ));
    }
    humantime::parse_duration(t)
        .map_err(|_| format!("invalid duration {t:?} (use a unit, e.g. 30s or 500ms)"))
}

/// A duration as humantime writes it (`2years`, `1h 1m`, `250ms`).
fn show_duration(d: Duration) -> String {
    humantime::format_duration(d).to_string()
}

fn parse_int<T: FromStr>(s: &str, expected: &str) -> std::result::Result<T, String> {
    let t = s.trim();
    t.parse()
        .map_err(|_| format!("invalid value {t:?} (expected {expected})"))
}

fn parse_fraction(s: &str) -> std::result::Result<f64, String> {
    let t = s.trim();
    match t.parse::<f64>() {
        Ok(v) if (0.0..=1.0).contains(&v) => Ok(v),
        Ok(_) => Err(format!("{t} is outside the range 0..=1")),
        Err(_) => Err(format!(
            "invalid value {t:?} (expected a number in the range 0..=1)"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_need_a_unit() {
        assert_eq!(parse_duration(" 250ms "), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("1m 30s"), Ok(Duration::from_secs(90)));
        let err = parse_duration("30").unwrap_err();
        assert!(err.contains("unit is required"), "{err}");
        let err = parse_duration("abc").unwrap_err();
        assert_eq!(
            err,
            r#"invalid duration "abc" (use a unit, e.g. 30s or 500ms)"#
        );
    }

    #[test]
    fn fractions_stay_in_range() {
        assert_eq!(parse_fraction("0"), Ok(0.0));
        assert_eq!(parse_fraction("1.0"), Ok(1.0));
        assert!(parse_fraction("1.5").unwrap_err().contains("0..=1"));
        assert!(parse_fraction("NaN").is_err());
        assert!(parse_fraction("x").unwrap_err().contains(r#""x""#));
    }

    #[test]
    fn unquote_strips_one_pair() {
        assert_eq!(unquote(r#""a""#), "a");
        assert_eq!(unquote("'a'"), "a");
        assert_eq!(unquote(r#""a"#), r#""a"#);
    }
}
