//! The environment of one conformance test.

use lock_core::Locker;
use std::future::Future;
use std::sync::OnceLock;
use std::time::Duration;

/// True when `LOCK_TEST_REQUIRE_SERVERS=1`: a test whose server is missing then fails instead
/// of being skipped.
pub fn require_servers() -> bool {
    std::env::var("LOCK_TEST_REQUIRE_SERVERS").is_ok_and(|v| v == "1")
}

/// A prefix unique to this test process, so runs against a shared server never collide.
fn run_prefix() -> &'static str {
    static PREFIX: OnceLock<String> = OnceLock::new();
    PREFIX.get_or_init(|| format!("lock-test-{}", ulid::Ulid::generate()))
}

/// Two lockers on one store (two "processes") and the test's name.
pub struct TestEnv {
    /// The first locker.
    pub a: Locker,
    /// The second locker, another owner on the same store.
    pub b: Locker,
    test: &'static str,
}

impl TestEnv {
    /// Builds the environment from `factory`; `None` (after printing why) when the server is
    /// missing and `LOCK_TEST_REQUIRE_SERVERS` is not `1`.
    ///
    /// # Panics
    ///
    /// When the server is missing and `LOCK_TEST_REQUIRE_SERVERS=1`.
    pub async fn start<F, Fut>(test: &'static str, factory: F) -> Option<TestEnv>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<(Locker, Locker), String>>,
    {
        match factory().await {
            Ok((a, b)) => Some(TestEnv { a, b, test }),
            Err(reason) if require_servers() => {
                panic!(
                    "{test}: server required (LOCK_TEST_REQUIRE_SERVERS=1) but missing: {reason}"
                )
            }
            Err(reason) => {
                println!(
                    "skipped {test}: {reason} (set LOCK_TEST_REQUIRE_SERVERS=1 to fail instead)"
                );
                None
            }
        }
    }

    /// A lock name unique to this run and test, ending in `tag`.
    pub fn name(&self, tag: &str) -> String {
        format!("{}/{}/{tag}", run_prefix(), self.test)
    }
}

/// Polls `check` every 50 ms until it returns true; false if `within` passes first.
pub async fn eventually<F, Fut>(within: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if check().await {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
