//! The whole conformance suite against an etcd cluster with client and peer TLS and
//! client-certificate auth (`scripts/servers.sh`, `start_etcd_tls`): its endpoints in
//! `LOCK_TEST_ETCD_TLS_ENDPOINTS` (comma-separated `https://host:port`s), the CA, the client
//! certificate and key and an unrelated CA in `LOCK_TEST_TLS_CA`, `LOCK_TEST_TLS_CLIENT_CERT`,
//! `LOCK_TEST_TLS_CLIENT_KEY` and `LOCK_TEST_TLS_WRONG_CA`. Also: a wrong CA and a missing
//! client certificate are clear errors, within the timeouts.

use lock_core::{Error, Locker};
use lock_etcd::{Etcd, EtcdConfig};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// A key prefix unique to this test process.
fn run_prefix() -> &'static str {
    static PREFIX: OnceLock<String> = OnceLock::new();
    PREFIX.get_or_init(|| format!("/lock-test-tls/{}/", ulid::Ulid::generate()))
}

/// The TLS cluster's variables: endpoints, CA, client certificate, client key, wrong CA.
struct Cluster {
    endpoints: Vec<String>,
    ca: String,
    cert: String,
    key: String,
    wrong_ca: String,
}

fn cluster() -> Result<Cluster, String> {
    let var = |name: &str| {
        std::env::var(name)
            .ok()
            .filter(|v| !v.trim().is_empty())
            .ok_or_else(|| format!("{name} is not set (scripts/servers.sh: start_etcd_tls)"))
    };
    let endpoints = var("LOCK_TEST_ETCD_TLS_ENDPOINTS")?;
    Ok(Cluster {
        endpoints: endpoints
            .split(',')
            .map(str::trim)
            .filter(|e| !e.is_empty())
            .map(str::to_owned)
            .collect(),
        ca: var("LOCK_TEST_TLS_CA")?,
        cert: var("LOCK_TEST_TLS_CLIENT_CERT")?,
        key: var("LOCK_TEST_TLS_CLIENT_KEY")?,
        wrong_ca: var("LOCK_TEST_TLS_WRONG_CA")?,
    })
}

/// The cluster, or `None` after printing why the test is skipped.
///
/// # Panics
///
/// When the cluster is not configured and `LOCK_TEST_REQUIRE_SERVERS=1`.
fn cluster_or_skip() -> Option<Cluster> {
    match cluster() {
        Ok(cluster) => Some(cluster),
        Err(reason) if lock_testkit::require_servers() => panic!("server required: {reason}"),
        Err(reason) => {
            println!("skipped: {reason}");
            None
        }
    }
}

fn config(cluster: &Cluster) -> EtcdConfig {
    EtcdConfig::new(cluster.endpoints.clone())
        .with_prefix(run_prefix())
        .with_ca_cert(&cluster.ca)
        .with_client_cert(&cluster.cert, &cluster.key)
}

async fn etcd_tls() -> Result<(Locker, Locker), String> {
    let cluster = cluster()?;
    let a = Etcd::connect(config(&cluster))
        .await
        .map_err(|e| format!("etcd at {:?} unreachable: {e:#?}", cluster.endpoints))?;
    let b = Etcd::connect(config(&cluster))
        .await
        .map_err(|e| format!("etcd at {:?} unreachable: {e:#?}", cluster.endpoints))?;
    Ok((Locker::with_backend(a), Locker::with_backend(b)))
}

lock_testkit::conformance_tests!(etcd_tls);

/// Every level of an error, `Display` and `Debug`.
fn all_text(err: &Error) -> String {
    let mut text = format!("{err} {err:?}");
    let mut source = std::error::Error::source(err);
    while let Some(e) = source {
        text.push_str(&format!(" | {e} {e:?}"));
        source = e.source();
    }
    text
}

/// The error and its source, as a user reads them.
fn message(err: &Error) -> String {
    match std::error::Error::source(err) {
        Some(source) => format!("{err}: {source}"),
        None => err.to_string(),
    }
}

/// Connects with `config` (short timeouts), expecting a failure within a bound.
async fn connect_fails(config: EtcdConfig) -> Error {
    let config = EtcdConfig {
        connect_timeout: Duration::from_secs(2),
        request_timeout: Duration::from_secs(2),
        ..config
    };
    let started = Instant::now();
    let result = tokio::time::timeout(Duration::from_secs(15), Etcd::connect(config))
        .await
        .expect("connect hangs instead of failing");
    let elapsed = started.elapsed();
    let err = result.expect_err("connect succeeded");
    assert!(elapsed < Duration::from_secs(10), "took {elapsed:?}");
    assert!(
        matches!(
            err,
            Error::ProviderUnavailable { .. } | Error::Config { .. }
        ),
        "{err:?}"
    );
    err
}

#[tokio::test]
async fn a_wrong_ca_is_a_clear_error() {
    let Some(cluster) = cluster_or_skip() else {
        return;
    };
    let err = connect_fails(config(&cluster).with_ca_cert(&cluster.wrong_ca)).await;
    let text = message(&err);
    println!("{text}");
    assert!(
        text.contains(
            "TLS: the cluster's certificate is not trusted by the CA in LOCK_ETCD_CA_CERT"
        ) && text.contains("UnknownIssuer"),
        "the message does not say the server's certificate is not trusted: {text}"
    );
}

#[tokio::test]
async fn a_missing_client_certificate_is_a_clear_error() {
    let Some(cluster) = cluster_or_skip() else {
        return;
    };
    let mut without = config(&cluster);
    without.client_cert = None;
    without.client_key = None;
    let err = connect_fails(without).await;
    let text = message(&err);
    println!("{text}");
    assert!(
        text.contains("TLS: the cluster refused the connection without a client certificate"),
        "the message does not say a client certificate is required: {text}"
    );
}

#[tokio::test]
async fn plain_http_against_the_tls_cluster_is_unavailable() {
    let Some(cluster) = cluster_or_skip() else {
        return;
    };
    let plain: Vec<String> = cluster
        .endpoints
        .iter()
        .map(|e| e.replacen("https://", "http://", 1))
        .collect();
    let err = connect_fails(EtcdConfig::new(plain)).await;
    assert!(matches!(err, Error::ProviderUnavailable { .. }), "{err:?}");
    println!("{}", all_text(&err));
}
