//! The whole conformance suite against one Redis instance (`LOCK_TEST_REDIS_URLS`).

mod common;

async fn single() -> Result<(lock_core::Locker, lock_core::Locker), String> {
    common::lockers("LOCK_TEST_REDIS_URLS").await
}

lock_testkit::conformance_tests!(single);
