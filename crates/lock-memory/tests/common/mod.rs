//! Shared by the paused-time fault tests of the memory backend.

#![allow(dead_code)]

use lock_core::Locker;
use lock_memory::Memory;
use lock_testkit::faults::Faults;
use std::time::Duration;

pub fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

pub fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// Two lockers on one store, the first behind a fault wrapper; and the store itself.
pub fn lockers() -> (Locker, Faults, Locker, Memory) {
    let store = Memory::new();
    let faults = Faults::wrap(store.clone());
    (
        Locker::with_backend(faults.clone()),
        faults,
        Locker::with_backend(store.clone()),
        store,
    )
}
