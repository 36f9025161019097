//! [`EtcdConfig`]: where the cluster is and how long a round trip may take.

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
    /// balanced over them. Default: `localhost:2379`.
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
    ///
    /// # Errors
    ///
    /// [`Error::Config`] naming the bad value.
    pub fn validate(&self) -> Result<()> {
        if self.endpoints.is_empty() {
            return Err(Error::config(
                "etcd endpoints: at least one endpoint is needed",
            ));
        }
        for endpoint in &self.endpoints {
            let trimmed = endpoint.trim();
            if trimmed.is_empty() || trimmed.contains(char::is_whitespace) {
                return Err(Error::config(format!(
                    "etcd endpoints: invalid endpoint {endpoint:?} (expected host:port or http://host:port)"
                )));
            }
        }
        if self.request_timeout.is_zero() {
            return Err(Error::config("etcd request timeout must be > 0"));
        }
        if self.connect_timeout.is_zero() {
            return Err(Error::config("etcd connect timeout must be > 0"));
        }
        Ok(())
    }
}

impl fmt::Debug for EtcdConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EtcdConfig")
            .field("endpoints", &self.endpoints)
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
