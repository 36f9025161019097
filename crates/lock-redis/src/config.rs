//! [`RedisConfig`] and the redaction of passwords in URLs.

use lock_core::Result;
use lock_core::settings::{Setting, Settings};
use std::fmt;
use std::time::Duration;

/// The settings of the Redis backend.
///
/// One URL means a single Redis instance; two or more mean Redlock over that many independent
/// instances (not replicas of each other). `redis://` and `rediss://` (TLS) URLs are accepted,
/// with a user name and password (`redis://user:password@host:6379/0`); the password never
/// appears in `Debug` output or errors.
///
/// ```
/// use lock_redis::RedisConfig;
/// let mut config = RedisConfig::default();
/// config.urls = vec!["redis://app:s3cret@cache:6379".into()];
/// assert!(!format!("{config:?}").contains("s3cret"));
/// ```
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct RedisConfig {
    /// The instances: one for a single instance, several for Redlock. Default
    /// `["redis://localhost:6379"]`.
    pub urls: Vec<String>,
    /// Prefix of every key and channel. Default `lock:`. Must not contain `{` or `}` (the lock's
    /// hash tag follows it).
    pub prefix: String,
    /// Redlock: the number of instances a grant or an extension needs; `0` (the default) = a
    /// majority. Semaphores with a limit above 1 need more (see the crate docs): the larger
    /// count applies.
    pub quorum: u32,
    /// The longest wait for one round trip to one instance, connection included; past it the
    /// instance counts as failed. Default 2 s.
    pub timeout: Duration,
    /// For `rediss://` URLs: the PEM certificate(s) of a private certificate authority to trust
    /// instead of the web PKI roots. Default `None` (web PKI roots).
    pub tls_root_cert: Option<Vec<u8>>,
}

impl Default for RedisConfig {
    fn default() -> Self {
        RedisConfig {
            urls: vec!["redis://localhost:6379".to_owned()],
            prefix: "lock:".to_owned(),
            quorum: 0,
            timeout: Duration::from_secs(2),
            tls_root_cert: None,
        }
    }
}

impl RedisConfig {
    /// A configuration for these URLs, with the other settings at their defaults.
    pub fn new<I, S>(urls: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        RedisConfig {
            urls: urls.into_iter().map(Into::into).collect(),
            ..RedisConfig::default()
        }
    }

    /// Sets the key prefix.
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// Sets the Redlock quorum (`0` = majority).
    pub fn quorum(mut self, quorum: u32) -> Self {
        self.quorum = quorum;
        self
    }

    /// Sets the round-trip timeout.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Trusts the PEM certificate(s) of a private certificate authority for `rediss://` URLs.
    pub fn tls_root_cert(mut self, pem: impl Into<Vec<u8>>) -> Self {
        self.tls_root_cert = Some(pem.into());
        self
    }

    /// The quorum in force: the configured one, or a majority of the URLs.
    pub(crate) fn effective_quorum(&self) -> usize {
        match self.quorum {
            0 => self.urls.len() / 2 + 1,
            q => q as usize,
        }
    }

    /// Checks the settings that need no connection; errors name the `LOCK_REDIS_*` variable
    /// of the field.
    ///
    /// # Errors
    ///
    /// [`Error::Config`](lock_core::Error::Config) naming the setting and its value (passwords redacted).
    pub fn validate(&self) -> Result<()> {
        self.check(&Settings::new())
    }

    /// The variables this configuration reads, for [`from_settings`](Self::from_settings).
    pub const SETTINGS: &'static [Setting] = &[URLS, PREFIX, QUORUM, TIMEOUT];

    /// The defaults, overridden by the `LOCK_REDIS_*` values `given`:
    ///
    /// | variable | default | meaning |
    /// |---|---|---|
    /// | `LOCK_REDIS_URLS` | `redis://localhost:6379` | a list; more than one = Redlock |
    /// | `LOCK_REDIS_PREFIX` | `lock:` | key prefix, without `{` or `}` |
    /// | `LOCK_REDIS_QUORUM` | `0` | `0` = a majority of the URLs |
    /// | `LOCK_REDIS_TIMEOUT` | `2s` | the longest wait for one round trip to one instance |
    ///
    /// Only parses; [`check`](Self::check) validates the whole.
    ///
    /// # Errors
    ///
    /// [`Error::Config`](lock_core::Error::Config) naming the first variable whose value does not parse.
    pub fn from_settings(given: &Settings) -> Result<Self> {
        let mut config = RedisConfig::default();
        if let Some(urls) = given.list(URLS)? {
            config.urls = urls;
        }
        if let Some(prefix) = given.text(PREFIX)? {
            config.prefix = prefix;
        }
        if let Some(quorum) = given.int(QUORUM, "a non-negative integer; 0 = a majority")? {
            config.quorum = quorum;
        }
        if let Some(timeout) = given.duration(TIMEOUT)? {
            config.timeout = timeout;
        }
        Ok(config)
    }

    /// [`validate`](Self::validate), quoting values as they were `given` and naming where
    /// they were set.
    ///
    /// # Errors
    ///
    /// [`Error::Config`](lock_core::Error::Config) naming the variable, its value and the allowed range.
    pub fn check(&self, given: &Settings) -> Result<()> {
        let fail = |setting: Setting, problem: String| Err(given.error(setting, &problem));
        let urls = self.urls.len();
        if urls == 0 {
            return fail(URLS, "at least one URL is required".to_owned());
        }
        if self.urls.iter().any(|url| url.trim().is_empty()) {
            return fail(
                URLS,
                format!(
                    "empty item in {:?}",
                    lock_core::redact::redact_all(&self.urls)
                ),
            );
        }
        for url in &self.urls {
            let trimmed = url.trim();
            if !(trimmed.starts_with("redis://")
                || trimmed.starts_with("rediss://")
                || trimmed.starts_with("redis+unix://")
                || trimmed.starts_with("unix://"))
            {
                return fail(
                    URLS,
                    format!("{trimmed:?} must start with redis:// or rediss://"),
                );
            }
        }
        // One instance listed twice would let a "quorum" be met by fewer instances (review
        // finding 12): URLs are compared by host (case-insensitive), port and database.
        let mut seen: Vec<(String, i64)> = Vec::new();
        for url in &self.urls {
            let Some(instance) = instance_of(url.trim()) else {
                continue;
            };
            if seen.contains(&instance) {
                return fail(
                    URLS,
                    format!(
                        "{:?} names the same instance ({} db {}) twice",
                        redact(url.trim()),
                        instance.0,
                        instance.1
                    ),
                );
            }
            seen.push(instance);
        }
        if self.prefix.contains(['{', '}']) {
            return fail(
                PREFIX,
                format!(
                    "{:?} must not contain braces: the lock's hash tag follows it",
                    self.prefix
                ),
            );
        }
        let quorum = self.quorum as usize;
        let majority = urls / 2 + 1;
        if quorum > urls {
            return fail(
                QUORUM,
                format!("{quorum} is more than the {urls} URL(s) of {}", URLS.name),
            );
        }
        if quorum != 0 && quorum < majority {
            return fail(
                QUORUM,
                format!(
                    "{quorum} is below a majority of the {urls} URL(s) of {} ({majority}); two \
                     holders could be granted the same lock (use 0 for a majority)",
                    URLS.name
                ),
            );
        }
        if self.timeout.is_zero() {
            return fail(TIMEOUT, "must be greater than 0".to_owned());
        }
        Ok(())
    }
}

/// The instance a URL names: `host:port` (host lower-cased) or the socket path, and the
/// database; `None` when it does not parse (connecting reports that).
fn instance_of(url: &str) -> Option<(String, i64)> {
    use redis::{ConnectionAddr, IntoConnectionInfo};
    let info = url.into_connection_info().ok()?;
    let addr = match info.addr() {
        ConnectionAddr::Tcp(host, port) | ConnectionAddr::TcpTls { host, port, .. } => {
            format!("{}:{port}", host.to_ascii_lowercase())
        }
        ConnectionAddr::Unix(path) => path.display().to_string(),
        other => format!("{other:?}"),
    };
    Some((addr, info.redis_settings().db()))
}

const URLS: Setting = Setting::new("LOCK_REDIS_URLS", "redis_urls");
const PREFIX: Setting = Setting::new("LOCK_REDIS_PREFIX", "redis_prefix");
const QUORUM: Setting = Setting::new("LOCK_REDIS_QUORUM", "redis_quorum");
const TIMEOUT: Setting = Setting::new("LOCK_REDIS_TIMEOUT", "redis_timeout");

impl fmt::Debug for RedisConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisConfig")
            .field(
                "urls",
                &self.urls.iter().map(|u| redact(u)).collect::<Vec<_>>(),
            )
            .field("prefix", &self.prefix)
            .field("quorum", &self.quorum)
            .field("timeout", &self.timeout)
            .field(
                "tls_root_cert",
                &self
                    .tls_root_cert
                    .as_ref()
                    .map(|pem| format!("{} bytes of PEM", pem.len())),
            )
            .finish()
    }
}

/// Passwords in URLs are hidden by the mechanism every crate of `lock` shares.
pub(crate) use lock_core::redact::redact;

#[cfg(test)]
mod tests {
    use super::*;
    use lock_core::Error;

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(
            redact("redis://app:s3cr@t@cache:6379/0"),
            "redis://app:***@cache:6379/0"
        );
        assert_eq!(redact("rediss://:pw@h"), "rediss://:***@h");
        assert_eq!(redact("redis://user@h:1"), "redis://user@h:1");
        assert_eq!(redact("redis://h:1/0?x=@"), "redis://h:1/0?x=@");
    }

    #[test]
    fn validation_names_the_value() {
        let bad = RedisConfig::new(["http://u:secret@h"])
            .validate()
            .unwrap_err();
        let text = bad.to_string();
        assert!(
            text.contains("http://u:***@h") && !text.contains("secret"),
            "{text}"
        );
        let q = RedisConfig::new(["redis://a", "redis://b", "redis://c"])
            .quorum(4)
            .validate()
            .unwrap_err();
        assert!(q.to_string().contains("LOCK_REDIS_QUORUM: 4"), "{q}");
        let low = RedisConfig::new(["redis://a", "redis://b", "redis://c"])
            .quorum(1)
            .validate()
            .unwrap_err();
        assert!(low.to_string().contains("below a majority"), "{low}");
        let prefix = RedisConfig::default().prefix("a{b").validate().unwrap_err();
        assert!(prefix.to_string().contains("a{b"), "{prefix}");
        assert!(matches!(
            RedisConfig::new(Vec::<String>::new()).validate(),
            Err(Error::Config { .. })
        ));
        RedisConfig::default().validate().unwrap();
    }

    /// Review finding 12: one instance listed twice (after normalising host, port and
    /// database) is a configuration error; other databases or ports are other instances.
    #[test]
    fn duplicate_urls_are_rejected() {
        for urls in [
            ["redis://h:6379", "redis://h:6379/0", "redis://c:1"],
            ["redis://H:6379", "redis://u:s3cret@h", "redis://c:1"],
            ["redis://h:1/2", " redis://h:1/2", "redis://c:1"],
        ] {
            let err = RedisConfig::new(urls).validate().unwrap_err();
            let text = err.to_string();
            assert!(text.contains("twice"), "{urls:?}: {text}");
            assert!(!text.contains("s3cret"), "{text}");
        }
        RedisConfig::new(["redis://h:6379/0", "redis://h:6379/1", "redis://h:6380"])
            .validate()
            .unwrap();
    }
}
