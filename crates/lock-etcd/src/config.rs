//! [`EtcdConfig`]: where the cluster is and how long a round trip may take.

use crate::leases::LeaseMode;
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
    /// Where grants get their etcd lease: [`LeaseMode::Pool`] (the default: a pool of
    /// pre-granted leases, one per grant) or [`LeaseMode::Session`] (one lease per client and
    /// TTL, shared by its grants). See the crate documentation for what each costs.
    pub lease: LeaseMode,
}

impl Default for EtcdConfig {
    fn default() -> Self {
        EtcdConfig {
            endpoints: vec!["localhost:2379".to_owned()],
            prefix: "/locks/".to_owned(),
            request_timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(5),
            user: None,
            lease: LeaseMode::default(),
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

    /// The same configuration with another [`LeaseMode`].
    pub fn with_lease(mut self, lease: LeaseMode) -> Self {
        self.lease = lease;
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
                    "etcd endpoints: invalid endpoint {:?} (expected host:port or http://host:port)",
                    redact(endpoint)
                )));
            }
            if trimmed.to_ascii_lowercase().starts_with("https://") {
                return Err(Error::config(format!(
                    "etcd endpoints: {:?} uses TLS, which this version of lock-etcd does not support",
                    redact(endpoint)
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
            .field("lease", &self.lease)
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
