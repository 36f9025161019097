//! [`PostgresConfig`] and [`PostgresMode`].

use lock_core::settings::{Setting, Settings};
use lock_core::{Error, Result};
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

/// How the PostgreSQL backend keeps locks. See the crate docs for the comparison.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum PostgresMode {
    /// Advisory locks held by a dedicated session per lease, a side table for tokens, owner,
    /// expiry and metadata. Needs session-level connections (not PgBouncer transaction pooling).
    #[default]
    Advisory,
    /// Rows in tables only, pooled connections, no session state: works behind PgBouncer in
    /// transaction pooling mode.
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

    /// Parses `advisory` or `lease` (any case, surrounding spaces ignored).
    ///
    /// ```
    /// use lock_postgres::PostgresMode;
    /// assert_eq!("Lease".parse::<PostgresMode>().unwrap(), PostgresMode::Lease);
    /// assert!("leases".parse::<PostgresMode>().is_err());
    /// ```
    fn from_str(s: &str) -> Result<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "advisory" => Ok(PostgresMode::Advisory),
            "lease" => Ok(PostgresMode::Lease),
            _ => Err(Error::config(format!(
                "invalid PostgreSQL mode {s:?} (expected \"advisory\" or \"lease\")"
            ))),
        }
    }
}

/// How grants are committed (`LOCK_POSTGRES_DURABILITY`, review design D4). Releases always
/// commit asynchronously (a lost release only delays the next grant until the lease's TTL).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum PostgresDurability {
    /// Grants (and extensions) commit with the server's `synchronous_commit` (default `on`):
    /// a grant is reported only once its WAL is flushed, so a server crash cannot undo it.
    #[default]
    Durable,
    /// Grants (and, in advisory mode, extensions) commit with `synchronous_commit = off`, set
    /// per transaction: no WAL flush on the critical path, but a server *crash* can lose a
    /// grant reported in the last moments (up to three `wal_writer_delay`s, 600 ms by default)
    /// with its lease row, or undo an extension (the lease then expires at an earlier
    /// extension's time than its holder computed); another client can then be granted while
    /// the first still believes it holds (mutual exclusion is lost for that window). Fencing
    /// tokens still never repeat (they are seeded from the server clock). See the crate
    /// README.
    Relaxed,
}

impl PostgresDurability {
    /// The lowercase name: `durable` or `relaxed`.
    pub const fn as_str(self) -> &'static str {
        match self {
            PostgresDurability::Durable => "durable",
            PostgresDurability::Relaxed => "relaxed",
        }
    }
}

impl fmt::Display for PostgresDurability {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for PostgresDurability {
    type Err = Error;

    /// Parses `durable` or `relaxed` (any case, surrounding spaces ignored).
    ///
    /// ```
    /// use lock_postgres::PostgresDurability;
    /// assert_eq!("Relaxed".parse::<PostgresDurability>().unwrap(), PostgresDurability::Relaxed);
    /// assert!("fast".parse::<PostgresDurability>().is_err());
    /// ```
    fn from_str(s: &str) -> Result<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "durable" => Ok(PostgresDurability::Durable),
            "relaxed" => Ok(PostgresDurability::Relaxed),
            _ => Err(Error::config(format!(
                "invalid PostgreSQL durability {s:?} (expected \"durable\" or \"relaxed\")"
            ))),
        }
    }
}

/// How to reach PostgreSQL and where to keep locks.
///
/// ```
/// use lock_postgres::{PostgresConfig, PostgresMode};
/// let mut config = PostgresConfig::new("postgres://app:secret@db:5432/app");
/// config.mode = PostgresMode::Lease;
/// assert!(!format!("{config:?}").contains("secret"));
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct PostgresConfig {
    /// The connection URL (`postgres://user:password@host:port/database?...`). TLS is set
    /// with libpq's parameters `sslmode` (`disable`, `prefer`, `require`, `verify-ca`,
    /// `verify-full`), `sslrootcert`, `sslcert` and `sslkey`; see the crate README.
    pub url: String,
    /// The first key of every advisory lock (`LOCK_POSTGRES_NAMESPACE`, advisory mode): it
    /// isolates the advisory-lock key space, so other users of advisory locks in the database
    /// (or another application of this library) do not meet our keys. It does **not**
    /// separate lock names: rows are keyed by name, so the same name under two namespaces on
    /// the same tables is one lock. Applications sharing a database keep their names apart
    /// with their own [`table_prefix`](Self::table_prefix) (separate tables) and, in advisory
    /// mode, their own namespace (else they contend for the same advisory keys).
    pub namespace: i32,
    /// Advisory (the default) or lease mode (`LOCK_POSTGRES_MODE`).
    pub mode: PostgresMode,
    /// Durable (the default) or relaxed commits of grants (`LOCK_POSTGRES_DURABILITY`); see
    /// [`PostgresDurability`] and the crate README for what a server crash can do.
    pub durability: PostgresDurability,
    /// Prefix of the tables (`{prefix}locks`, `{prefix}leases`, `{prefix}claims`) and of the
    /// NOTIFY channel: ASCII letters, digits and `_`, starting with a letter or `_`, at most 40
    /// bytes. Default `lock_`.
    pub table_prefix: String,
    /// Size of the connection pool used for everything but held advisory locks. Default 5.
    pub max_connections: u32,
    /// Advisory mode: the most server sessions this backend opens for held leases, waiting
    /// acquisitions and its idle-session cache (`LOCK_POSTGRES_MAX_SESSIONS`, review finding
    /// PG-6), on top of the pool and the one `LISTEN` session; the session of a dropped
    /// acquisition counts until its backend is gone (PG-R4-4). Waiting acquisitions beyond it
    /// wait in the client for a session to come free (woken by a local release), within their
    /// own bounds; a try (`try_lock` and the like, which make one attempt) fails at once with
    /// [`Error::ProviderUnavailable`] naming `LOCK_POSTGRES_MAX_SESSIONS`, whether the lock is
    /// free or not (PG-R4-1). Default 64: a third of PostgreSQL's default `max_connections`
    /// (100) below it, so a herd on one hot lock in one process cannot take the whole server,
    /// while 64 leases held at once by one process is far above ordinary use. Lease mode opens
    /// no sessions.
    pub max_sessions: u32,
    /// How long to wait for a connection (from the pool or a new session). Default 5 s.
    pub connect_timeout: Duration,
    /// The URL of the one `LISTEN` connection, when it must differ from `url` — for example
    /// straight to the server when `url` goes through PgBouncer in transaction pooling mode,
    /// where `LISTEN` does not work. `None` (the default): `url`.
    pub listen_url: Option<String>,
}

impl PostgresConfig {
    /// A configuration for `url` with the defaults for everything else.
    pub fn new(url: impl Into<String>) -> Self {
        PostgresConfig {
            url: url.into(),
            ..PostgresConfig::default()
        }
    }

    /// Checks the fields that can be checked without a server; errors name the
    /// `LOCK_POSTGRES_*` variable of the field.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] naming the field and its value.
    pub fn validate(&self) -> Result<()> {
        self.check(&Settings::new())
    }

    /// The variables this configuration reads, for [`from_settings`](Self::from_settings).
    pub const SETTINGS: &'static [Setting] = &[
        URL,
        NAMESPACE,
        MODE,
        DURABILITY,
        TABLE_PREFIX,
        MAX_CONNECTIONS,
        MAX_SESSIONS,
        CONNECT_TIMEOUT,
        LISTEN_URL,
    ];

    /// The defaults, overridden by the `LOCK_POSTGRES_*` values `given`:
    ///
    /// | variable | default | meaning |
    /// |---|---|---|
    /// | `LOCK_POSTGRES_URL` | (none) | the connection URL; required |
    /// | `LOCK_POSTGRES_NAMESPACE` | `1` | the first key of every advisory lock (an `i32`): isolates advisory keys, not lock names (use the table prefix) |
    /// | `LOCK_POSTGRES_MODE` | `advisory` | `advisory` or `lease` |
    /// | `LOCK_POSTGRES_DURABILITY` | `durable` | `durable`, or `relaxed`: grants commit without a WAL flush (a server crash can undo a reported grant) |
    /// | `LOCK_POSTGRES_TABLE_PREFIX` | `lock_` | prefix of the tables and the NOTIFY channel |
    /// | `LOCK_POSTGRES_MAX_CONNECTIONS` | `5` | size of the pool (held advisory locks have their own sessions) |
    /// | `LOCK_POSTGRES_MAX_SESSIONS` | `64` | advisory mode: the most sessions for held leases, waiters and idle reuse (beyond it, waiting acquisitions wait in the client and tries fail at once) |
    /// | `LOCK_POSTGRES_CONNECT_TIMEOUT` | `5s` | the longest wait for a connection |
    /// | `LOCK_POSTGRES_LISTEN_URL` | the URL | where the one `LISTEN` session connects (straight to the server when the URL goes through PgBouncer) |
    ///
    /// Only parses; [`check`](Self::check) validates the whole.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] naming the first variable whose value does not parse.
    pub fn from_settings(given: &Settings) -> Result<Self> {
        let mut config = PostgresConfig::default();
        if let Some(url) = given.text(URL)? {
            config.url = url;
        }
        if let Some(namespace) = given.int(NAMESPACE, "an integer in -2147483648..=2147483647")? {
            config.namespace = namespace;
        }
        if let Some(mode) = given.parse(MODE, |s| {
            let t = s.trim();
            PostgresMode::from_str(t)
                .map_err(|_| format!("invalid value {t:?} (expected \"advisory\" or \"lease\")"))
        })? {
            config.mode = mode;
        }
        if let Some(durability) = given.parse(DURABILITY, |s| {
            let t = s.trim();
            PostgresDurability::from_str(t)
                .map_err(|_| format!("invalid value {t:?} (expected \"durable\" or \"relaxed\")"))
        })? {
            config.durability = durability;
        }
        if let Some(prefix) = given.text(TABLE_PREFIX)? {
            config.table_prefix = prefix;
        }
        if let Some(max) = given.int(MAX_CONNECTIONS, "a positive integer")? {
            config.max_connections = max;
        }
        if let Some(max) = given.int(MAX_SESSIONS, "a positive integer")? {
            config.max_sessions = max;
        }
        if let Some(timeout) = given.duration(CONNECT_TIMEOUT)? {
            config.connect_timeout = timeout;
        }
        if let Some(url) = given.text(LISTEN_URL)? {
            config.listen_url = Some(url);
        }
        Ok(config)
    }

    /// [`validate`](Self::validate), quoting values as they were `given` and naming where
    /// they were set.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] naming the variable, its value and the allowed range.
    pub fn check(&self, given: &Settings) -> Result<()> {
        let fail = |setting: Setting, problem: &str| Err(given.error(setting, problem));
        if self.url.trim().is_empty() {
            return fail(URL, "required: the PostgreSQL connection URL");
        }
        let prefix = &self.table_prefix;
        let valid = !prefix.is_empty()
            && prefix.len() <= 40
            && prefix
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_')
            && !prefix.as_bytes()[0].is_ascii_digit();
        if !valid {
            return fail(
                TABLE_PREFIX,
                &format!(
                    "{prefix:?} must be 1 to 40 ASCII letters, digits or '_', not starting with \
                     a digit"
                ),
            );
        }
        if self.max_connections == 0 {
            return fail(MAX_CONNECTIONS, "must be at least 1");
        }
        if self.max_sessions == 0 {
            return fail(MAX_SESSIONS, "must be at least 1");
        }
        if self.connect_timeout.is_zero() {
            return fail(CONNECT_TIMEOUT, "must be greater than 0");
        }
        if let Some(url) = &self.listen_url
            && url.trim().is_empty()
        {
            return fail(
                LISTEN_URL,
                "must not be empty (leave it unset to use the URL)",
            );
        }
        Ok(())
    }
}

const URL: Setting = Setting::new("LOCK_POSTGRES_URL", "postgres_url");
const NAMESPACE: Setting = Setting::new("LOCK_POSTGRES_NAMESPACE", "postgres_namespace");
const MODE: Setting = Setting::new("LOCK_POSTGRES_MODE", "postgres_mode");
const DURABILITY: Setting = Setting::new("LOCK_POSTGRES_DURABILITY", "postgres_durability");
const TABLE_PREFIX: Setting = Setting::new("LOCK_POSTGRES_TABLE_PREFIX", "postgres_table_prefix");
const MAX_CONNECTIONS: Setting =
    Setting::new("LOCK_POSTGRES_MAX_CONNECTIONS", "postgres_max_connections");
const MAX_SESSIONS: Setting = Setting::new("LOCK_POSTGRES_MAX_SESSIONS", "postgres_max_sessions");
const CONNECT_TIMEOUT: Setting =
    Setting::new("LOCK_POSTGRES_CONNECT_TIMEOUT", "postgres_connect_timeout");
const LISTEN_URL: Setting = Setting::new("LOCK_POSTGRES_LISTEN_URL", "postgres_listen_url");

impl Default for PostgresConfig {
    fn default() -> Self {
        PostgresConfig {
            url: String::new(),
            namespace: 1,
            mode: PostgresMode::default(),
            durability: PostgresDurability::default(),
            table_prefix: "lock_".to_owned(),
            max_connections: 5,
            max_sessions: 64,
            connect_timeout: Duration::from_secs(5),
            listen_url: None,
        }
    }
}

impl fmt::Debug for PostgresConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresConfig")
            .field("url", &redact(&self.url))
            .field("namespace", &self.namespace)
            .field("mode", &self.mode)
            .field("durability", &self.durability)
            .field("table_prefix", &self.table_prefix)
            .field("max_connections", &self.max_connections)
            .field("max_sessions", &self.max_sessions)
            .field("connect_timeout", &self.connect_timeout)
            .field("listen_url", &self.listen_url.as_deref().map(redact))
            .finish()
    }
}

/// Passwords in URLs are hidden by the mechanism every crate of `lock` shares.
pub(crate) use lock_core::redact::redact;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_passwords() {
        assert_eq!(
            redact("postgres://app:s3cret@db:5432/app"),
            "postgres://app:***@db:5432/app"
        );
        assert_eq!(
            redact("postgres://db/app?user=u&password=s3cret&sslmode=disable"),
            "postgres://db/app?user=u&password=***&sslmode=disable"
        );
        assert_eq!(redact("postgres://app@db/app"), "postgres://app@db/app");
    }

    #[test]
    fn mode_round_trips() {
        for mode in [PostgresMode::Advisory, PostgresMode::Lease] {
            assert_eq!(mode.to_string().parse::<PostgresMode>().unwrap(), mode);
        }
        let err = "table".parse::<PostgresMode>().unwrap_err().to_string();
        assert!(err.contains("\"table\""), "{err}");
    }

    #[test]
    fn max_sessions_is_read_and_checked() {
        let mut given = Settings::new();
        given.insert(
            "postgres_url",
            lock_core::settings::Value::One("postgres://db/app".into()),
            "",
        );
        assert_eq!(
            PostgresConfig::from_settings(&given).unwrap().max_sessions,
            64
        );
        given.insert(
            "postgres_max_sessions",
            lock_core::settings::Value::One("8".into()),
            "",
        );
        let config = PostgresConfig::from_settings(&given).unwrap();
        assert_eq!(config.max_sessions, 8);
        config.check(&given).unwrap();
        let mut zero = config.clone();
        zero.max_sessions = 0;
        let err = zero.check(&given).unwrap_err().to_string();
        assert!(err.contains("LOCK_POSTGRES_MAX_SESSIONS"), "{err}");
    }

    #[test]
    fn durability_is_read_and_named() {
        let mut given = Settings::new();
        assert_eq!(
            PostgresConfig::from_settings(&given).unwrap().durability,
            PostgresDurability::Durable
        );
        given.insert(
            "postgres_durability",
            lock_core::settings::Value::One(" Relaxed ".into()),
            "",
        );
        let config = PostgresConfig::from_settings(&given).unwrap();
        assert_eq!(config.durability, PostgresDurability::Relaxed);
        given.insert(
            "postgres_durability",
            lock_core::settings::Value::One("fast".into()),
            "",
        );
        let err = PostgresConfig::from_settings(&given)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("LOCK_POSTGRES_DURABILITY") && err.contains("fast"),
            "{err}"
        );
    }

    #[test]
    fn bad_prefix_is_named() {
        let mut config = PostgresConfig::new("postgres://db/app");
        config.table_prefix = "x; drop".into();
        let err = config.validate().unwrap_err().to_string();
        assert!(err.contains("x; drop"), "{err}");
        config.table_prefix = "ok_1".into();
        config.validate().unwrap();
    }
}
