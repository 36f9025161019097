//! The whole conformance suite against Redlock over five independent Redis instances
//! (`LOCK_TEST_REDLOCK_URLS`, comma-separated).

mod common;

async fn redlock() -> Result<(lock_core::Locker, lock_core::Locker), String> {
    let urls = common::urls("LOCK_TEST_REDLOCK_URLS")?;
    if urls.len() < 2 {
        return Err(format!(
            "LOCK_TEST_REDLOCK_URLS names {} URL(s); Redlock needs several",
            urls.len()
        ));
    }
    common::lockers("LOCK_TEST_REDLOCK_URLS").await
}

lock_testkit::conformance_tests!(redlock);
