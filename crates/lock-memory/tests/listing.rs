//! The `list` properties on the in-memory backend, until every backend lists and they join the
//! conformance suite.

use lock_core::Locker;
use lock_memory::Memory;

async fn memory() -> Result<(Locker, Locker), String> {
    let store = Memory::new();
    Ok((
        Locker::with_backend(store.clone()),
        Locker::with_backend(store),
    ))
}

lock_testkit::conformance_tests!(@each memory;
    list_reports_held_locks,
    list_skips_released_and_expired,
    list_pages_are_bounded_and_complete,
    list_rejects_bad_requests
);
