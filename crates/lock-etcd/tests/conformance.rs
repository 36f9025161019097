//! The whole conformance suite against an etcd cluster named by `LOCK_TEST_ETCD_ENDPOINTS`
//! (comma-separated `host:port`s). Each run writes under its own key prefix.

use lock_core::Locker;
use lock_etcd::{Etcd, EtcdConfig};
use std::sync::OnceLock;

/// A key prefix unique to this test process.
fn run_prefix() -> &'static str {
    static PREFIX: OnceLock<String> = OnceLock::new();
    PREFIX.get_or_init(|| format!("/lock-test/{}/", ulid::Ulid::generate()))
}

async fn etcd() -> Result<(Locker, Locker), String> {
    let endpoints = std::env::var("LOCK_TEST_ETCD_ENDPOINTS")
        .map_err(|_| "LOCK_TEST_ETCD_ENDPOINTS is not set".to_owned())?;
    let config = EtcdConfig::new(
        endpoints
            .split(',')
            .map(str::trim)
            .filter(|e| !e.is_empty()),
    )
    .with_prefix(run_prefix());
    let a = Etcd::connect(config.clone())
        .await
        .map_err(|e| format!("etcd at {endpoints} unreachable: {e:#?}"))?;
    let b = Etcd::connect(config)
        .await
        .map_err(|e| format!("etcd at {endpoints} unreachable: {e:#?}"))?;
    Ok((Locker::with_backend(a), Locker::with_backend(b)))
}

lock_testkit::conformance_tests!(etcd);
