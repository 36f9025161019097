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
//! | `LOCK_REDIS_TIMEOUT` | `2s` | the longest wait for one round trip to one instance |
//! | `LOCK_POSTGRES_URL` | (none) | required for `postgres` |
//! | `LOCK_POSTGRES_NAMESPACE` | `1` | an `i32`; advisory mode: the first key of its advisory locks, so other users of advisory locks in the database do not meet ours; it does **not** separate lock names (rows are keyed by name): applications sharing a database use their own `LOCK_POSTGRES_TABLE_PREFIX` (and, in advisory mode, their own namespace) |
//! | `LOCK_POSTGRES_MODE` | `advisory` | `advisory` (advisory locks, a session per held lock; refused behind PgBouncer transaction pooling) or `lease` (rows only; works behind PgBouncer transaction pooling) |
//! | `LOCK_POSTGRES_DURABILITY` | `durable` | `durable`, or `relaxed`: grants commit without a WAL flush, and a server crash can undo a reported grant (exclusion lost for that window; tokens still never repeat) |
//! | `LOCK_POSTGRES_TABLE_PREFIX` | `lock_` | prefix of the tables and of the NOTIFY channel |
//! | `LOCK_POSTGRES_MAX_CONNECTIONS` | `5` | size of the connection pool |
//! | `LOCK_POSTGRES_MAX_SESSIONS` | `64` | advisory mode: the most sessions for held leases, waiters and reuse; beyond it waiting acquisitions wait in the client and tries fail at once |
//! | `LOCK_POSTGRES_CONNECT_TIMEOUT` | `5s` | the longest wait for a connection |
//! | `LOCK_POSTGRES_LISTEN_URL` | the URL | where the `LISTEN` session connects (straight to the server behind PgBouncer) |
//! | `LOCK_ETCD_ENDPOINTS` | `localhost:2379` | comma-separated; `https://host:port` for TLS (all or none) |
//! | `LOCK_ETCD_PREFIX` | `/locks/` | key prefix |
//! | `LOCK_ETCD_CONNECT_TIMEOUT` | `5s` | the longest wait for a connection |
//! | `LOCK_ETCD_CA_CERT` | (Mozilla's roots) | PEM file of the CA the cluster's certificates chain to (`https://` endpoints) |
//! | `LOCK_ETCD_CLIENT_CERT` | (none) | PEM file of the client certificate (a cluster with `--client-cert-auth`) |
//! | `LOCK_ETCD_CLIENT_KEY` | (none) | PEM file of that certificate's private key |
//! | `LOCK_ETCD_LEASE` | `pool` | `pool`: each grant has its own etcd lease, from a pool granted ahead; `session`: one lease per client and TTL, as etcd's `concurrency` package (fewer proposals; a live process keeps its leaked guards alive) |
//!
//! Each backend owns and parses its own variables (`RedisConfig::from_settings`,
//! `PostgresConfig::from_settings`, `EtcdConfig::from_settings`, through
//! [`lock_core::settings`]); this module collects what was given, picks the provider and hands
//! the values over. The variables of a backend whose Cargo feature is off are ignored (a
//! `tracing` warning says so), so one environment can serve builds with different features.
//! Every backend's variables are parsed when given; the cross-field checks of a backend (a
//! quorum against its URLs, a required URL) run for the selected provider only.
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
//! `LOCK_TEST_*` variables are never reported, nor are `LOCK_NAME`, `LOCK_FENCING_TOKEN` and
//! `LOCK_OWNER`, which `lockctl run` gives the command it runs. An unknown key in a configuration file (or any
//! other figment provider but the environment) is an error naming the key, the file and the
//! closest known key.
//!
//! [humantime]: https://docs.rs/humantime

use figment::value::{Dict, Map};
use figment::{Figment, Metadata, Profile};
use lock_core::redact::redact;
use lock_core::settings::{Setting, Settings, Value, show_duration};
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
/// starting with `LOCK_TEST_` (the test suite's) are never reported, nor are `LOCK_NAME`,
/// `LOCK_FENCING_TOKEN` and `LOCK_OWNER` (set by `lockctl run` for its command).
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

#[cfg(feature = "etcd")]
pub use lock_etcd::EtcdConfig;
#[cfg(feature = "postgres")]
pub use lock_postgres::{PostgresConfig, PostgresDurability, PostgresMode};
#[cfg(feature = "redis")]
pub use lock_redis::RedisConfig;

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
/// config.owner_id = Some("worker-1".into());
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
    /// `LOCK_REDIS_*` (feature `redis`), parsed by [`RedisConfig::from_settings`].
    #[cfg(feature = "redis")]
    #[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
    pub redis: RedisConfig,
    /// `LOCK_POSTGRES_*` (feature `postgres`), parsed by [`PostgresConfig::from_settings`].
    #[cfg(feature = "postgres")]
    #[cfg_attr(docsrs, doc(cfg(feature = "postgres")))]
    pub postgres: PostgresConfig,
    /// `LOCK_ETCD_*` (feature `etcd`), parsed by [`EtcdConfig::from_settings`].
    #[cfg(feature = "etcd")]
    #[cfg_attr(docsrs, doc(cfg(feature = "etcd")))]
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
            #[cfg(feature = "redis")]
            redis: RedisConfig::default(),
            #[cfg(feature = "postgres")]
            postgres: PostgresConfig::default(),
            #[cfg(feature = "etcd")]
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
            if let Ok(figment::value::Value::Dict(..)) = figment.find_value(section) {
                return Err(Error::config(redact(&format!(
                    "nested key `{section}`{}: keys are flat, named like the variables without \
                     {ENV_PREFIX} (`{section}_...`, e.g. `default_ttl`, `redis_urls`, \
                     `retry_max_attempts`)",
                    origin(figment, section)
                ))));
            }
        }
        check_keys(figment)?;
        let given = given(figment)?;
        let mut config = Config::default();

        if let Some(provider) = given.parse(PROVIDER, |s| {
            Provider::from_str(s).map_err(|_| unknown_provider(s.trim()))
        })? {
            config.provider = provider;
        }
        if let Some(ttl) = given.duration(DEFAULT_TTL)? {
            config.default_ttl = ttl;
        }
        match given.duration(EXTEND_INTERVAL)? {
            Some(interval) => config.extend_interval = interval,
            // Unset: 10s, or a third of a shorter TTL (what each handle would use anyway).
            None => {
                config.extend_interval = config
                    .extend_interval
                    .min(config.default_ttl / 3)
                    .max(Duration::from_nanos(1));
            }
        }
        if let Some(owner) = given.text(OWNER_ID)? {
            config.owner_id = Some(owner);
        }
        if let Some(attempts) =
            given.int(RETRY_MAX_ATTEMPTS, "a non-negative integer; 0 = no limit")?
        {
            config.retry.max_attempts = attempts;
        }
        if let Some(delay) = given.duration(RETRY_INITIAL_DELAY)? {
            config.retry.initial_delay = delay;
        }
        if let Some(delay) = given.duration(RETRY_MAX_DELAY)? {
            config.retry.max_delay = delay;
        }
        if let Some(jitter) = given.parse(RETRY_JITTER, parse_fraction)? {
            config.retry.jitter = jitter;
        }
        if let Some(timeout) = given.duration(REQUEST_TIMEOUT)? {
            config.request_timeout = timeout;
        }
        // Each backend parses its own variables.
        #[cfg(feature = "redis")]
        {
            config.redis = RedisConfig::from_settings(&given)?;
        }
        #[cfg(feature = "postgres")]
        {
            config.postgres = PostgresConfig::from_settings(&given)?;
        }
        #[cfg(feature = "etcd")]
        {
            config.etcd = EtcdConfig::from_settings(&given)?;
        }

        config.check(&given)?;
        Ok(config)
    }

    /// Checks the ranges of every field: TTL and extend interval > 0, an extend interval below
    /// the TTL, a TTL of at most
    /// [`MAX_TTL`](crate::MAX_TTL) (one year), a non-empty owner id, retry delays > 0 and at
    /// most [`MAX_RETRY_DELAY`] (one hour) with `max_delay >= initial_delay`, jitter in
    /// `0..=1`; then the selected provider's own checks (its configuration's `validate`: for
    /// example a Redis quorum between a majority and the number of URLs, a PostgreSQL URL).
    /// [`Config::from_env`], [`Config::from_figment`] and [`Locker::new`](crate::Locker::new)
    /// call it.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] naming the variable, its value and the allowed range.
    pub fn validate(&self) -> Result<()> {
        self.check(&Settings::new())
    }

    /// [`validate`](Self::validate), quoting values as they were `given`.
    fn check(&self, given: &Settings) -> Result<()> {
        let show = |setting: Setting, d: Duration| given.show_duration(setting, d);
        let fail = |setting: Setting, problem: String| -> Result<()> {
            Err(given.error(setting, &problem))
        };
        for (setting, d) in [
            (DEFAULT_TTL, self.default_ttl),
            (EXTEND_INTERVAL, self.extend_interval),
            (RETRY_INITIAL_DELAY, self.retry.initial_delay),
            (REQUEST_TIMEOUT, self.request_timeout),
        ] {
            if d.is_zero() {
                return fail(
                    setting,
                    format!("must be greater than 0, got {}", show(setting, d)),
                );
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
        for (setting, d) in [
            (RETRY_INITIAL_DELAY, self.retry.initial_delay),
            (RETRY_MAX_DELAY, self.retry.max_delay),
            (REQUEST_TIMEOUT, self.request_timeout),
        ] {
            if d > MAX_RETRY_DELAY {
                return fail(
                    setting,
                    format!(
                        "{} is out of range: it must be at most {}",
                        show(setting, d),
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
        // The selected backend checks its own settings.
        match self.provider {
            #[cfg(feature = "redis")]
            Provider::Redis => self.redis.check(given),
            #[cfg(feature = "postgres")]
            Provider::Postgres => self.postgres.check(given),
            #[cfg(feature = "etcd")]
            Provider::Etcd => self.etcd.check(given),
            _ => Ok(()),
        }
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
            dict.insert(key.as_str().to_owned(), figment::value::Value::from(value));
        }
        Ok(Profile::Default.collect(dict))
    }
}

const PROVIDER: Setting = Setting::new("LOCK_PROVIDER", "provider");
const DEFAULT_TTL: Setting = Setting::new("LOCK_DEFAULT_TTL", "default_ttl");
const EXTEND_INTERVAL: Setting = Setting::new("LOCK_EXTEND_INTERVAL", "extend_interval");
const OWNER_ID: Setting = Setting::new("LOCK_OWNER_ID", "owner_id");
const RETRY_MAX_ATTEMPTS: Setting = Setting::new("LOCK_RETRY_MAX_ATTEMPTS", "retry_max_attempts");
const RETRY_INITIAL_DELAY: Setting =
    Setting::new("LOCK_RETRY_INITIAL_DELAY", "retry_initial_delay");
const RETRY_MAX_DELAY: Setting = Setting::new("LOCK_RETRY_MAX_DELAY", "retry_max_delay");
const RETRY_JITTER: Setting = Setting::new("LOCK_RETRY_JITTER", "retry_jitter");
const REQUEST_TIMEOUT: Setting = Setting::new("LOCK_REQUEST_TIMEOUT", "request_timeout");

/// The variables this crate reads itself; each backend lists its own.
const CORE: [Setting; 9] = [
    PROVIDER,
    DEFAULT_TTL,
    EXTEND_INTERVAL,
    OWNER_ID,
    RETRY_MAX_ATTEMPTS,
    RETRY_INITIAL_DELAY,
    RETRY_MAX_DELAY,
    RETRY_JITTER,
    REQUEST_TIMEOUT,
];

/// Every variable this build reads: ours and those of the enabled backends.
fn known() -> Vec<Setting> {
    #[allow(unused_mut)]
    let mut known = CORE.to_vec();
    #[cfg(feature = "redis")]
    known.extend_from_slice(RedisConfig::SETTINGS);
    #[cfg(feature = "postgres")]
    known.extend_from_slice(PostgresConfig::SETTINGS);
    #[cfg(feature = "etcd")]
    known.extend_from_slice(EtcdConfig::SETTINGS);
    known
}

/// The provider whose feature is off and whose variables `key` looks like (`redis_urls` in a
/// build without `redis`): such keys are ignored, not unknown.
fn disabled_backend(key: &str) -> Option<Provider> {
    Provider::ALL.into_iter().find(|provider| {
        !provider.is_enabled()
            && key
                .strip_prefix(provider.as_str())
                .is_some_and(|rest| rest.starts_with('_'))
    })
}

/// The variables `lockctl run` gives its command (`LOCK_NAME`, `LOCK_FENCING_TOKEN`,
/// `LOCK_OWNER`), as keys: not settings, and not unknown either.
const SET_BY_LOCKCTL: [&str; 3] = ["name", "fencing_token", "owner"];

/// Whether an environment variable's key (its name without `LOCK_`, in any case) is neither
/// known, nor one of a disabled backend's, nor one of the test suite's `LOCK_TEST_*`, nor one
/// that `lockctl run` sets for its command.
fn is_unknown_env_key(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    !key.starts_with("test_")
        && !SET_BY_LOCKCTL.contains(&key.as_str())
        && disabled_backend(&key).is_none()
        && !known().iter().any(|setting| setting.key == key)
}

/// The known variable whose key is closest to `key`, when it is close: at most 2 edits, or a
/// quarter of the key's length for long keys.
fn closest(key: &str) -> Option<Setting> {
    let limit = (key.chars().count() / 4).max(2);
    known()
        .into_iter()
        .map(|setting| (edit_distance(key, setting.key), setting))
        .filter(|(distance, _)| *distance <= limit)
        .min_by_key(|(distance, _)| *distance)
        .map(|(_, setting)| setting)
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
    let known = known();
    for key in keys.keys() {
        if known.iter().any(|setting| setting.key == key) {
            continue;
        }
        if let Some(provider) = disabled_backend(key) {
            tracing::warn!(
                key = %key,
                "{ENV_PREFIX}{} is ignored: this build of `lock` has no `{}` feature",
                key.to_ascii_uppercase(),
                provider.feature()
            );
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
            Some(setting) => format!(" (did you mean `{}`?)", setting.key),
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

/// The values of the known keys `figment` holds, each with where it was set.
fn given(figment: &Figment) -> Result<Settings> {
    let mut given = Settings::new();
    for setting in known() {
        let Ok(value) = figment.find_value(setting.key) else {
            continue;
        };
        let origin = origin(figment, setting.key);
        let RawValue(value) = value
            .deserialize()
            .map_err(|e| Error::config(redact(&format!("{}: {}{origin}", setting.name, e.kind))))?;
        given.insert(setting.key, value, origin);
    }
    Ok(given)
}

/// A value of any scalar type as its string, or a list of them.
struct RawValue(Value);

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
            RawValue(Value::One(s)) => Ok(Scalar(s)),
            RawValue(Value::Many(_)) => unreachable!("a nested visitor rejects lists"),
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
        Ok(RawValue(Value::One(v.to_string())))
    }
    fn visit_i64<E>(self, v: i64) -> std::result::Result<RawValue, E> {
        Ok(RawValue(Value::One(v.to_string())))
    }
    fn visit_i128<E>(self, v: i128) -> std::result::Result<RawValue, E> {
        Ok(RawValue(Value::One(v.to_string())))
    }
    fn visit_u64<E>(self, v: u64) -> std::result::Result<RawValue, E> {
        Ok(RawValue(Value::One(v.to_string())))
    }
    fn visit_u128<E>(self, v: u128) -> std::result::Result<RawValue, E> {
        Ok(RawValue(Value::One(v.to_string())))
    }
    fn visit_f64<E>(self, v: f64) -> std::result::Result<RawValue, E> {
        Ok(RawValue(Value::One(v.to_string())))
    }
    fn visit_char<E>(self, v: char) -> std::result::Result<RawValue, E> {
        Ok(RawValue(Value::One(v.to_string())))
    }
    fn visit_str<E>(self, v: &str) -> std::result::Result<RawValue, E> {
        Ok(RawValue(Value::One(v.to_owned())))
    }
    fn visit_string<E>(self, v: String) -> std::result::Result<RawValue, E> {
        Ok(RawValue(Value::One(v)))
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
        Ok(RawValue(Value::Many(items)))
    }
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
    fn fractions_stay_in_range() {
        assert_eq!(parse_fraction("0"), Ok(0.0));
        assert_eq!(parse_fraction("1.0"), Ok(1.0));
        assert!(parse_fraction("1.5").unwrap_err().contains("0..=1"));
        assert!(parse_fraction("NaN").is_err());
        assert!(parse_fraction("x").unwrap_err().contains(r#""x""#));
    }
}
