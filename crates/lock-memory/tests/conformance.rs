//! The whole conformance suite against the in-memory backend.

use lock_core::Locker;
use lock_memory::Memory;

async fn memory() -> Result<(Locker, Locker), String> {
    let store = Memory::new();
    Ok((
        Locker::with_backend(store.clone()),
        Locker::with_backend(store),
    ))
}

lock_testkit::conformance_tests!(memory);
