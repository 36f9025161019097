//! [`EtcdConfig`]: where the cluster is and how long a round trip may take.

use crate::leases::LeaseMode;
use etcd_client::{Certificate, Identity, TlsOptions};
use lock_core::settings::{Setting, Settings};
use lock_core::{Error, Result};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use std::fmt;
use std::path::{Path, PathBuf};
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
    /// The cluster's client endpoints, `host:port`, `http://host:port` or `https://host:port`
    /// (TLS; all endpoints or none); requests are balanced over them. An endpoint may carry
    /// credentials (`https://user:password@host:port`): they are used as [`user`](Self::user)
    /// and never shown. Default: `localhost:2379`.
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
    /// A PEM file holding the CA certificate(s) the servers' certificates must chain to, for
    /// `https://` endpoints. Default: none, Mozilla's root certificates (webpki-roots).
    pub ca_cert: Option<PathBuf>,
    /// A PEM file holding this client's certificate (and any intermediates), for a cluster
    /// started with `--client-cert-auth`; needs [`client_key`](Self::client_key). Default: none.
    pub client_cert: Option<PathBuf>,
    /// A PEM file holding the private key of [`client_cert`](Self::client_cert). Default: none.
    pub client_key: Option<PathBuf>,
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
            ca_cert: None,
            client_cert: None,
            client_key: None,
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

    /// The same configuration trusting the CA certificate(s) in the PEM file `path` (for
    /// `https://` endpoints).
    pub fn with_ca_cert(mut self, path: impl Into<PathBuf>) -> Self {
        self.ca_cert = Some(path.into());
        self
    }

    /// The same configuration presenting the client certificate in the PEM file `cert`, with
    /// its private key in the PEM file `key` (for `https://` endpoints).
    pub fn with_client_cert(mut self, cert: impl Into<PathBuf>, key: impl Into<PathBuf>) -> Self {
        self.client_cert = Some(cert.into());
        self.client_key = Some(key.into());
        self
    }

    /// The same configuration with another [`LeaseMode`].
    pub fn with_lease(mut self, lease: LeaseMode) -> Self {
        self.lease = lease;
        self
    }

    /// Checks the values: at least one endpoint, none empty or holding spaces, `https://` for
    /// all endpoints or none, certificate files only with `https://` and a client certificate
    /// only with its key, timeouts > 0. Errors name the `LOCK_ETCD_*` variable of the field.
    /// The files are read by `Etcd::connect`.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] naming the bad value.
    pub fn validate(&self) -> Result<()> {
        self.check(&Settings::new())
    }

    /// The variables this configuration reads, for [`from_settings`](Self::from_settings).
    pub const SETTINGS: &'static [Setting] = &[
        ENDPOINTS,
        PREFIX,
        CONNECT_TIMEOUT,
        CA_CERT,
        CLIENT_CERT,
        CLIENT_KEY,
        LEASE,
    ];

    /// The defaults, overridden by the `LOCK_ETCD_*` values `given`:
    ///
    /// | variable | default | meaning |
    /// |---|---|---|
    /// | `LOCK_ETCD_ENDPOINTS` | `localhost:2379` | a list of client endpoints |
    /// | `LOCK_ETCD_PREFIX` | `/locks/` | key prefix |
    /// | `LOCK_ETCD_CONNECT_TIMEOUT` | `5s` | the longest wait for a connection |
    /// | `LOCK_ETCD_CA_CERT` | (Mozilla's roots) | PEM file of the CA for `https://` endpoints |
    /// | `LOCK_ETCD_CLIENT_CERT` | (none) | PEM file of the client certificate |
    /// | `LOCK_ETCD_CLIENT_KEY` | (none) | PEM file of the client certificate's key |
    /// | `LOCK_ETCD_LEASE` | `pool` | `pool` (a lease per grant, from a pool) or `session` (one lease per client and TTL) |
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
        config.ca_cert = given.text(CA_CERT)?.map(PathBuf::from);
        config.client_cert = given.text(CLIENT_CERT)?.map(PathBuf::from);
        config.client_key = given.text(CLIENT_KEY)?.map(PathBuf::from);
        if let Some(lease) =
            given.parse(LEASE, |s| match s.trim().to_ascii_lowercase().as_str() {
                "pool" => Ok(LeaseMode::Pool),
                "session" => Ok(LeaseMode::Session),
                other => Err(format!(
                    "invalid value {other:?} (expected \"pool\" or \"session\")"
                )),
            })?
        {
            config.lease = lease;
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
        }
        let https = self.endpoints.iter().filter(|e| is_https(e)).count();
        if https != 0 && https != self.endpoints.len() {
            return fail(
                ENDPOINTS,
                &format!(
                    "mixes https:// and plain endpoints in {:?}: TLS is for all endpoints or none",
                    lock_core::redact::redact_all(&self.endpoints)
                ),
            );
        }
        for (setting, path) in self.tls_files() {
            if path.as_os_str().is_empty() {
                return fail(setting, "empty path");
            }
            if https == 0 {
                return fail(
                    setting,
                    &format!(
                        "{} is set but no endpoint uses https:// (TLS is only for https:// endpoints)",
                        path.display()
                    ),
                );
            }
        }
        match (&self.client_cert, &self.client_key) {
            (Some(_), None) => {
                return fail(
                    CLIENT_CERT,
                    "a client certificate needs its key (LOCK_ETCD_CLIENT_KEY)",
                );
            }
            (None, Some(_)) => {
                return fail(
                    CLIENT_KEY,
                    "a client key needs its certificate (LOCK_ETCD_CLIENT_CERT)",
                );
            }
            _ => {}
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
const CA_CERT: Setting = Setting::new("LOCK_ETCD_CA_CERT", "etcd_ca_cert");
const CLIENT_CERT: Setting = Setting::new("LOCK_ETCD_CLIENT_CERT", "etcd_client_cert");
const CLIENT_KEY: Setting = Setting::new("LOCK_ETCD_CLIENT_KEY", "etcd_client_key");
const LEASE: Setting = Setting::new("LOCK_ETCD_LEASE", "etcd_lease");

fn is_https(endpoint: &str) -> bool {
    endpoint.trim().to_ascii_lowercase().starts_with("https://")
}

impl EtcdConfig {
    /// The certificate files that are set, with their variables.
    fn tls_files(&self) -> impl Iterator<Item = (Setting, &Path)> {
        [
            (CA_CERT, &self.ca_cert),
            (CLIENT_CERT, &self.client_cert),
            (CLIENT_KEY, &self.client_key),
        ]
        .into_iter()
        .filter_map(|(setting, path)| path.as_deref().map(|path| (setting, path)))
    }

    /// The TLS options for the connection: `None` for plain endpoints; for `https://` ones the
    /// CA (or Mozilla's roots) and the client certificate, read from their files now, with the
    /// TLS handshake bounded by the connect timeout. Call after [`validate`](Self::validate).
    ///
    /// A file that cannot be read or holds no PEM item of its kind is an [`Error::Config`]
    /// naming the variable and the path, never the file's content.
    pub(crate) fn tls_options(&self) -> Result<Option<TlsOptions>> {
        if !self.endpoints.iter().any(|e| is_https(e)) {
            return Ok(None);
        }
        let mut tls = TlsOptions::new().timeout(self.connect_timeout);
        tls = match &self.ca_cert {
            Some(path) => tls.ca_certificate(Certificate::from_pem(read_pem(
                CA_CERT,
                path,
                "certificate",
                holds_certificates,
            )?)),
            None => tls.with_webpki_roots(),
        };
        if let (Some(cert), Some(key)) = (&self.client_cert, &self.client_key) {
            let cert = read_pem(CLIENT_CERT, cert, "certificate", holds_certificates)?;
            let key = read_pem(CLIENT_KEY, key, "private key", |pem| {
                PrivateKeyDer::from_pem_slice(pem).is_ok()
            })?;
            tls = tls.identity(Identity::from_pem(cert, key));
        }
        Ok(Some(tls))
    }
}

impl EtcdConfig {
    /// What a connection failure of this configuration (`failure`: the text of the error and
    /// its sources) says about TLS, when it is a TLS failure: the server's certificate not
    /// trusted, or the client's certificate refused or missing (the server then closes the
    /// connection, with or without an alert).
    pub(crate) fn tls_hint(&self, failure: &str) -> Option<String> {
        if !self.endpoints.iter().any(|e| is_https(e)) {
            return None;
        }
        if failure.contains("invalid peer certificate") {
            let trusted = match &self.ca_cert {
                Some(path) => format!("the CA in LOCK_ETCD_CA_CERT ({})", path.display()),
                None => "Mozilla's roots (LOCK_ETCD_CA_CERT is not set)".to_owned(),
            };
            return Some(format!(
                "TLS: the cluster's certificate is not trusted by {trusted}"
            ));
        }
        let refused = [
            "BadCertificate",
            "CertificateRequired",
            "UnknownCA",
            "HandshakeFailure",
            "connection closed",
            // With TLS 1.3 the server checks the client's certificate after the client's last
            // handshake message: the refusal may reach the client as its next write failing.
            "BrokenPipe",
            "broken pipe",
            "ConnectionReset",
        ];
        if !refused.iter().any(|r| failure.contains(r)) {
            return None;
        }
        Some(match &self.client_cert {
            None => "TLS: the cluster refused the connection without a client certificate; \
                     it probably requires one (--client-cert-auth): set LOCK_ETCD_CLIENT_CERT \
                     and LOCK_ETCD_CLIENT_KEY"
                .to_owned(),
            Some(path) => format!(
                "TLS: the cluster refused the connection; is the client certificate in \
                 LOCK_ETCD_CLIENT_CERT ({}) signed by a CA it trusts (--trusted-ca-file)?",
                path.display()
            ),
        })
    }
}

/// True when `pem` holds at least one certificate and nothing malformed.
fn holds_certificates(pem: &[u8]) -> bool {
    let mut certificates = CertificateDer::pem_slice_iter(pem).peekable();
    certificates.peek().is_some() && certificates.all(|c| c.is_ok())
}

/// The content of the PEM file `path` of `setting` when `valid` accepts it.
fn read_pem(
    setting: Setting,
    path: &Path,
    what: &str,
    valid: impl FnOnce(&[u8]) -> bool,
) -> Result<Vec<u8>> {
    let given = Settings::new();
    let pem = std::fs::read(path)
        .map_err(|e| given.error(setting, &format!("cannot read {}: {e}", path.display())))?;
    if !valid(&pem) {
        return Err(given.error(
            setting,
            &format!("{} holds no valid PEM {what}", path.display()),
        ));
    }
    Ok(pem)
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
            .field("ca_cert", &self.ca_cert)
            .field("client_cert", &self.client_cert)
            .field("client_key", &self.client_key)
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
        let err = EtcdConfig::new(["https://root:s3cret@e1:2379", "http://e2:2379"])
            .validate()
            .unwrap_err();
        assert!(
            !err.to_string().contains("s3cret") && err.to_string().contains("mixes https://"),
            "{err}"
        );
    }

    #[test]
    fn https_endpoints_are_accepted() {
        EtcdConfig::new(["https://e1:2379", "https://root:s3cret@e2:2379"])
            .validate()
            .unwrap();
    }

    #[test]
    fn tls_settings_are_checked_together() {
        let https = || EtcdConfig::new(["https://e1:2379", "https://e2:2379"]);
        let err = EtcdConfig::new(["https://e1:2379", "e2:2379"])
            .validate()
            .unwrap_err();
        assert!(
            err.to_string()
                .starts_with("configuration error: LOCK_ETCD_ENDPOINTS: mixes https:// and plain"),
            "{err}"
        );
        let mut config = https().with_client_cert("/c.pem", "/k.pem");
        config.client_key = None;
        let err = config.validate().unwrap_err().to_string();
        assert!(
            err.contains("LOCK_ETCD_CLIENT_CERT: a client certificate needs its key"),
            "{err}"
        );
        let mut config = https().with_client_cert("/c.pem", "/k.pem");
        config.client_cert = None;
        let err = config.validate().unwrap_err().to_string();
        assert!(
            err.contains("LOCK_ETCD_CLIENT_KEY: a client key needs its certificate"),
            "{err}"
        );
        let err = EtcdConfig::new(["http://e1:2379"])
            .with_ca_cert("/ca.pem")
            .validate()
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("LOCK_ETCD_CA_CERT: /ca.pem is set but no endpoint uses https://"),
            "{err}"
        );
        https()
            .with_ca_cert("/ca.pem")
            .with_client_cert("/c.pem", "/k.pem")
            .validate()
            .unwrap();
        assert!(EtcdConfig::default().tls_options().unwrap().is_none());
        assert!(https().tls_options().unwrap().is_some());
    }

    #[test]
    fn tls_files_missing_or_not_pem_name_the_variable_and_the_path() {
        let dir = std::env::temp_dir().join(format!("lock-etcd-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let not_pem = dir.join("key.pem");
        std::fs::write(&not_pem, "s3cret-key-material\n").unwrap();
        let missing = dir.join("missing.pem");
        let https = EtcdConfig::new(["https://e1:2379"]);

        let err = https
            .clone()
            .with_ca_cert(&missing)
            .tls_options()
            .unwrap_err();
        assert!(matches!(err, Error::Config { .. }), "{err:?}");
        let text = err.to_string();
        assert!(
            text.contains(&format!(
                "LOCK_ETCD_CA_CERT: cannot read {}",
                missing.display()
            )),
            "{text}"
        );
        let err = https
            .clone()
            .with_ca_cert(&not_pem)
            .tls_options()
            .unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains(&format!(
                "LOCK_ETCD_CA_CERT: {} holds no valid PEM certificate",
                not_pem.display()
            )),
            "{text}"
        );
        let err = https
            .clone()
            .with_client_cert(&not_pem, &not_pem)
            .tls_options()
            .unwrap_err();
        assert!(err.to_string().contains("LOCK_ETCD_CLIENT_CERT"), "{err}");
        assert!(!format!("{err} {err:?}").contains("s3cret"), "{err:?}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn tls_variables_are_read() {
        use lock_core::settings::Value;
        let mut given = Settings::new();
        for (key, value) in [
            ("etcd_endpoints", "https://e1:2379"),
            ("etcd_ca_cert", "/etc/etcd/ca.pem"),
            ("etcd_client_cert", "/etc/etcd/client.pem"),
            ("etcd_client_key", "/etc/etcd/client-key.pem"),
        ] {
            given.insert(key, Value::One(value.into()), "");
        }
        let config = EtcdConfig::from_settings(&given).unwrap();
        config.check(&given).unwrap();
        assert_eq!(config.ca_cert, Some("/etc/etcd/ca.pem".into()));
        assert_eq!(config.client_cert, Some("/etc/etcd/client.pem".into()));
        assert_eq!(config.client_key, Some("/etc/etcd/client-key.pem".into()));
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
