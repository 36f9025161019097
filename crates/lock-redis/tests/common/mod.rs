//! Connecting the conformance tests to the servers named by `LOCK_TEST_*` variables.

#![allow(dead_code)]

use lock_core::Locker;
use lock_redis::{Redis, RedisConfig};
use std::sync::OnceLock;

/// A key prefix unique to this test process.
pub fn run_prefix() -> &'static str {
    static PREFIX: OnceLock<String> = OnceLock::new();
    PREFIX.get_or_init(|| format!("lock-test-{}:", ulid::Ulid::generate()))
}

/// The comma-separated URLs of `var`.
///
/// # Errors
///
/// Why they are missing.
pub fn urls(var: &str) -> Result<Vec<String>, String> {
    let value = std::env::var(var).map_err(|_| format!("{var} is not set"))?;
    let urls: Vec<String> = value
        .split(',')
        .map(str::trim)
        .filter(|u| !u.is_empty())
        .map(str::to_owned)
        .collect();
    if urls.is_empty() {
        return Err(format!("{var} is empty"));
    }
    Ok(urls)
}

/// Two lockers on two separate connections (two "processes") to the servers of `var`.
///
/// # Errors
///
/// Why the servers cannot be used.
pub async fn lockers(var: &str) -> Result<(Locker, Locker), String> {
    let urls = urls(var)?;
    let config = RedisConfig::new(urls).prefix(run_prefix());
    let a = Redis::connect(config.clone())
        .await
        .map_err(|e| format!("{var}: cannot connect: {e:#?}"))?;
    let b = Redis::connect(config)
        .await
        .map_err(|e| format!("{var}: cannot connect: {e:#?}"))?;
    Ok((Locker::with_backend(a), Locker::with_backend(b)))
}
