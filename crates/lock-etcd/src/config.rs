//! [`EtcdConfig`]: where the cluster is and how long a round trip may take.

use lock_core::settings::{Setting, Settings};
use lock_core::{Error, Result};
use std::fmt;
use std::time::Duration;

/// How to reach the etcd cluster.
///
/// ```
/// let config = lock_etcd::EtcdConfig {
///     endpoints: vec!["10.0.0.1:2379".into(), "10.0.0.2:2379".into()],
///     ..Default::default()
/// };
/// assert_eq!(config.prefix, "/locks/");
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct EtcdConfig {
    /// The cluster's client endpoints, `host:port` or `http://host:port`; requests are
    /// balanced over them. An endpoint may carry credentials (`http://user:password@host:port`):
    /// they are used as [`user`](Self::user) and never shown. Default: `localhost:2379`.
    pub endpoints: Vec<String>,
    /// Every key this backend writes starts with this prefix. Default: `/locks/`.
    pub prefix: String,
    /// The longest a single round trip may take before the operation fails with
    /// `ProviderUnavailable` (a cluster without quorum never makes a call hang). Default: 5 s.
    pub request_timeout: Duration,
    /// The longest establishing a connection may take. Default: 5 s.
    pub connect_timeout: Duration,
    /// User name and password, when the cluster has authentication on. Never shown by `Debug`.
    pub user: Option<(String, String)>,
}

impl Default for EtcdConfig {
    fn default() -> Self {
        EtcdConfig {
            endpoints: vec!["localhost:2379".to_owned()],
            prefix: "/locks/".to_owned(),
            request_timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(5),
            user: None,
        }
    }
}

impl EtcdConfig {
    /// A configuration for `endpoints` with the default prefix and timeouts.
    pub fn new<S: Into<String>>(endpoints: impl IntoIterator<Item = S>) -> Self {
        EtcdConfig {
            endpoints: endpoints.into_iter().map(Into::into).collect(),
            ..Self::default()
        }
    }

    /// The same configuration with another key prefix.
    pub fn with_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// The same configuration with another per-round-trip timeout.
    pub fn with_request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }

    /// Checks the values: at least one endpoint, none empty or holding spaces, timeouts > 0.
    /// Errors name the `LOCK_ETCD_*` variable of the field.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] naming the bad value.
    pub fn validate(&self) -> Result<()> {
        self.check(&Settings::new())
    }

    /// The variables this configuration reads, for [`from_settings`](Self::from_settings).
    pub const SETTINGS: &'static [Setting] = &[ENDPOINTS, PREFIX, CONNECT_TIMEOUT];

    /// The defaults, overridden by the `LOCK_ETCD_*` values `given`:
    ///
    /// | variable | default | meaning |
    /// |---|---|---|
    /// | `LOCK_ETCD_ENDPOINTS` | `localhost:2379` | a list of client endpoints |
    /// | `LOCK_ETCD_PREFIX` | `/locks/` | key prefix |
    /// | `LOCK_ETCD_CONNECT_TIMEOUT` | `5s` | the longest wait for a connection |
    ///
    /// Only parses; [`check`](Self::check) validates the whole.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] naming the first variable whose value does not parse.
    pub fn from_settings(given: &Settings) -> Result<Self> {
        let mut config = EtcdConfig::default();
        if let Some(endpoints) = given.list(ENDPOINTS)? {
            config.endpoints = endpoints;
        }
        if let Some(prefix) = given.text(PREFIX)? {
            config.prefix = prefix;
        }
        if let Some(timeout) = given.duration(CONNECT_TIMEOUT)? {
            config.connect_timeout = timeout;
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
        if self.endpoints.is_empty() {
            return fail(ENDPOINTS, "at least one endpoint is needed");
        }
        if self.endpoints.iter().any(|e| e.trim().is_empty()) {
            return fail(
                ENDPOINTS,
                &format!(
                    "empty item in {:?}",
                    lock_core::redact::redact_all(&self.endpoints)
                ),
            );
        }
        for endpoint in &self.endpoints {
            let trimmed = endpoint.trim();
            if trimmed.is_empty() || trimmed.contains(char::is_whitespace) {
                return fail(
                    ENDPOINTS,
                    &format!(
                        "invalid endpoint {:?} (expected host:port or http://host:port)",
                        redact(endpoint)
                    ),
                );
            }
            if trimmed.to_ascii_lowercase().starts_with("https://") {
                return fail(
                    ENDPOINTS,
                    &format!(
                        "{:?} uses TLS, which this version of lock-etcd does not support",
                        redact(endpoint)
                    ),
                );
            }
        }
        if self.request_timeout.is_zero() {
            return Err(Error::config("etcd request timeout must be > 0"));
        }
        if self.connect_timeout.is_zero() {
            return fail(CONNECT_TIMEOUT, "must be greater than 0");
        }
        Ok(())
    }
}

const ENDPOINTS: Setting = Setting::new("LOCK_ETCD_ENDPOINTS", "etcd_endpoints");
const PREFIX: Setting = Setting::new("LOCK_ETCD_PREFIX", "etcd_prefix");
const CONNECT_TIMEOUT: Setting = Setting::new("LOCK_ETCD_CONNECT_TIMEOUT", "etcd_connect_timeout");

/// Splits `scheme://user:password@host:port` into the endpoint without its credentials, and
/// the credentials.
pub(crate) fn split_credentials(endpoint: &str) -> (String, Option<(String, String)>) {
    let endpoint = endpoint.trim();
    let (scheme, rest) = match endpoint.find("://") {
        Some(i) => endpoint.split_at(i + 3),
        None => ("", endpoint),
    };
    match rest.rfind('@') {
        Some(at) => {
            let (userinfo, host) = (&rest[..at], &rest[at + 1..]);
            let (user, password) = userinfo.split_once(':').unwrap_or((userinfo, ""));
            (
                format!("{scheme}{host}"),
                Some((user.to_owned(), password.to_owned())),
            )
        }
        None => (endpoint.to_owned(), None),
    }
}

/// The endpoint with any password replaced by `***`: the mechanism every crate of `lock`
/// shares.
pub(crate) fn redact(endpoint: &str) -> String {
    lock_core::redact::redact(endpoint).into_owned()
}

impl fmt::Debug for EtcdConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EtcdConfig")
            .field(
                "endpoints",
                &self.endpoints.iter().map(|e| redact(e)).collect::<Vec<_>>(),
            )
            .field("prefix", &self.prefix)
            .field("request_timeout", &self.request_timeout)
            .field("connect_timeout", &self.connect_timeout)
            .field(
                "user",
                &self.user.as_ref().map(|(name, _)| (name, "<redacted>")),
            )
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_hides_the_password() {
        let config = EtcdConfig {
            user: Some(("root".into(), "s3cret".into())),
            ..EtcdConfig::default()
        };
        let shown = format!("{config:?}");
        assert!(shown.contains("root"), "{shown}");
        assert!(!shown.contains("s3cret"), "{shown}");
    }

    #[test]
    fn credentials_in_endpoints_are_split_and_hidden() {
        let (clean, user) = split_credentials("http://root:s3cret@e1:2379");
        assert_eq!(clean, "http://e1:2379");
        assert_eq!(user, Some(("root".into(), "s3cret".into())));
        assert_eq!(split_credentials("e1:2379"), ("e1:2379".into(), None));
        assert_eq!(redact("root:s3cret@e1:2379"), "root:***@e1:2379");
        let shown = format!("{:?}", EtcdConfig::new(["http://root:s3cret@e1:2379"]));
        assert!(
            !shown.contains("s3cret") && shown.contains("http://root:***@e1:2379"),
            "{shown}"
        );
        let err = EtcdConfig::new(["https://root:s3cret@e1:2379"])
            .validate()
            .unwrap_err();
        assert!(
            !err.to_string().contains("s3cret") && err.to_string().contains("TLS"),
            "{err}"
        );
    }

    #[test]
    fn validate_names_the_bad_endpoint() {
        let err = EtcdConfig::new(["a:1", "b c:2"]).validate().unwrap_err();
        assert!(err.to_string().contains("\"b c:2\""), "{err}");
        let err = EtcdConfig::new(Vec::<String>::new())
            .validate()
            .unwrap_err();
        assert!(err.to_string().contains("at least one"), "{err}");
        EtcdConfig::default().validate().unwrap();
    }
}
