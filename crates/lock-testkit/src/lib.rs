//! The shared test kit of `lock` backends.
//!
//! - [`conformance`]: one `pub async fn` per property of the semantics (DESIGN.md §4), and the
//!   [`conformance_tests!`] macro that expands to one named `#[tokio::test]` each.
//! - [`faults`]: timing faults on top of a real backend (slow calls and replies, hangs, errors
//!   before or after the operation was applied), used by the timing properties of the suite.
//! - [`safety`]: the fenced-register safety checker.
//! - [`harness`]: the per-test environment (two lockers on one store, unique lock names) and
//!   the rule for missing servers (`LOCK_TEST_REQUIRE_SERVERS=1` makes them a failure).
//! - [`proxy`] and [`process`]: fault injection — a TCP proxy that can be cut off, and server
//!   processes a test can kill, pause (SIGSTOP), resume and restart.

pub mod conformance;
pub mod faults;
pub mod harness;
mod listing;
pub mod process;
pub mod proxy;
pub mod safety;
mod timing;

pub use harness::{TestEnv, eventually, require_servers};
pub use listing::list_pages;
pub use process::{ServerProcess, find_program, free_port, wait_for_port};
pub use proxy::TcpProxy;
pub use safety::{FencedRegister, SafetyConfig, SafetyReport, StaleWrite, run_safety_checker};

/// Expands to one `#[tokio::test]` per conformance property.
///
/// `$factory` is an expression of a function (or closure) returning a future of
/// `Result<(Locker, Locker), String>`: two lockers (two "processes") on one shared store, or
/// the reason the server is missing. Every property gets fresh lockers.
///
/// ```no_run
/// use lock_core::Locker;
///
/// async fn memory() -> Result<(Locker, Locker), String> {
///     let store = lock_memory::Memory::new();
///     Ok((Locker::with_backend(store.clone()), Locker::with_backend(store)))
/// }
/// lock_testkit::conformance_tests!(memory);
/// ```
#[macro_export]
macro_rules! conformance_tests {
    ($factory:expr) => {
        $crate::conformance_tests!(@each $factory;
            exclusion_under_contention,
            try_lock_while_held,
            not_reentrant,
            release_then_reacquire,
            double_release_is_not_held,
            release_after_force_release_is_not_held,
            tokens_increase_across_releases,
            tokens_increase_across_expiry,
            extend_keeps_token_and_moves_expiry,
            extend_after_expiry_is_expired,
            leaked_guard_expires_after_ttl,
            late_release_does_not_disturb_new_holder,
            drop_releases_in_background,
            cancelled_lock_leaves_nothing_held,
            lock_timeout_is_not_acquired,
            waiter_woken_by_notification,
            auto_extend_holds_past_ttl,
            force_release_fires_lost_once,
            force_release_wakes_waiter,
            zero_ttl_rejected,
            guard_info_matches_inspect,
            readers_share,
            writer_excludes_everyone,
            readers_block_writer,
            waiting_writer_blocks_new_readers,
            reader_leases_expire_independently,
            cancelled_writer_does_not_block_readers,
            semaphore_never_exceeds_limit,
            semaphore_available,
            semaphore_rejects_zero_and_over_limit,
            semaphore_limit_mismatch_names_both,
            semaphore_leaked_permits_come_back,
            cancelled_large_request_unblocks_smaller,
            metadata_visible_in_inspect,
            empty_name_rejected,
            long_name_rejected,
            odd_names_work,
            kinds_do_not_interfere,
            safety_checker_finds_no_overlap,
            late_grant_is_not_a_valid_guard,
            lock_timeout_bounds_hung_calls,
            try_lock_is_one_round_trip,
            shorter_extend_replans_keeper,
            applied_then_cancelled_leaves_nothing,
            applied_grant_is_adopted_on_retry,
            hung_release_and_extend_are_bounded,
            dropped_guard_released_from_any_thread,
            zero_lock_timeout_is_one_attempt,
            durations_checked_before_sending,
            lost_at_validity_without_auto_extend,
            list_reports_held_locks,
            list_skips_released_and_expired,
            list_pages_are_bounded_and_complete,
            list_rejects_bad_requests
        );
    };
    (@each $factory:expr; $($property:ident),* $(,)?) => {
        $(
            #[::tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $property() {
                if let Some(env) =
                    $crate::TestEnv::start(stringify!($property), $factory).await
                {
                    $crate::conformance::$property(&env).await;
                }
            }
        )*
    };
}
