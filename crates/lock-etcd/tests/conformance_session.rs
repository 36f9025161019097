//! The whole conformance suite in session-lease mode (`LeaseMode::Session`: one etcd lease per
//! client and TTL, shared by its grants) against the cluster named by
//! `LOCK_TEST_ETCD_ENDPOINTS` (comma-separated `host:port`s). Each run writes under its own key
//! prefix.

use lock_core::Locker;
use lock_etcd::{Etcd, EtcdConfig, LeaseMode};
use std::sync::OnceLock;
use std::time::Duration;

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
    .with_prefix(run_prefix())
    .with_lease(LeaseMode::Session);
    let a = Etcd::connect(config.clone())
        .await
        .map_err(|e| format!("etcd at {endpoints} unreachable: {e:#?}"))?;
    let b = Etcd::connect(config)
        .await
        .map_err(|e| format!("etcd at {endpoints} unreachable: {e:#?}"))?;
    Ok((Locker::with_backend(a), Locker::with_backend(b)))
}

// Every property of the suite but seven, which all crash a holder (`mem::forget` of its guard)
// in a process that keeps running and expect its lease to expire after the TTL:
// `tokens_increase_across_expiry`, `extend_after_expiry_is_expired`,
// `leaked_guard_expires_after_ttl`, `late_release_does_not_disturb_new_holder`,
// `reader_leases_expire_independently`, `semaphore_leaked_permits_come_back`,
// `list_skips_released_and_expired` (its released lock is checked in `tests/list.rs`). In
// session mode the client's live session keeps such a guard alive (what the mode gives up,
// stated in the crate README); the tests below check what holds instead: the guard ends with
// its session (closed, or lost), and every guard on a lost session is reported lost.
lock_testkit::conformance_tests!(@each etcd;
    exclusion_under_contention,
    try_lock_while_held,
    not_reentrant,
    release_then_reacquire,
    double_release_is_not_held,
    release_after_force_release_is_not_held,
    tokens_increase_across_releases,
    extend_keeps_token_and_moves_expiry,
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
    cancelled_writer_does_not_block_readers,
    semaphore_never_exceeds_limit,
    semaphore_available,
    semaphore_rejects_zero_and_over_limit,
    semaphore_limit_mismatch_names_both,
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
    list_pages_are_bounded_and_complete,
    list_rejects_bad_requests,
);

fn endpoints() -> Vec<String> {
    std::env::var("LOCK_TEST_ETCD_ENDPOINTS")
        .expect("LOCK_TEST_ETCD_ENDPOINTS")
        .split(',')
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .collect()
}

/// A session-mode backend under a prefix of the test's own, or `None` (skipped) when no
/// cluster is named and servers are not required.
async fn session_backend(test: &str) -> Option<(Etcd, String)> {
    if std::env::var("LOCK_TEST_ETCD_ENDPOINTS").is_err() {
        assert!(
            !lock_testkit::require_servers(),
            "{test}: server required (LOCK_TEST_REQUIRE_SERVERS=1) but LOCK_TEST_ETCD_ENDPOINTS is not set"
        );
        println!("skipped {test}: LOCK_TEST_ETCD_ENDPOINTS is not set");
        return None;
    }
    let prefix = format!("{}{test}/", run_prefix());
    let config = EtcdConfig::new(endpoints())
        .with_prefix(prefix.clone())
        .with_lease(LeaseMode::Session);
    Some((Etcd::connect(config).await.unwrap(), prefix))
}

/// The etcd lease of every key under `prefix`.
async fn leases_under(prefix: &str) -> Vec<i64> {
    let mut client = etcd_client::Client::connect(endpoints(), None)
        .await
        .unwrap();
    let response = client
        .get(prefix, Some(etcd_client::GetOptions::new().with_prefix()))
        .await
        .unwrap();
    response
        .kvs()
        .iter()
        .map(etcd_client::KeyValue::lease)
        .collect()
}

/// Grants of one client with the same TTL share one etcd lease; when that lease is lost (here:
/// revoked behind the client's back), every guard on it is reported lost and the locks are
/// free for others.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_lost_session_loses_every_guard_on_it() {
    let Some((etcd, prefix)) = session_backend("a_lost_session_loses_every_guard_on_it").await
    else {
        return;
    };
    let a = Locker::with_backend(etcd);
    let guards = [
        a.mutex("s1")
            .ttl(Duration::from_secs(3))
            .auto_extend(true)
            .lock()
            .await
            .unwrap(),
        a.mutex("s2")
            .ttl(Duration::from_secs(3))
            .auto_extend(true)
            .lock()
            .await
            .unwrap(),
        a.rw_mutex("s3")
            .ttl(Duration::from_secs(3))
            .auto_extend(true)
            .read()
            .await
            .unwrap(),
    ];
    let mut leases = leases_under(&prefix).await;
    leases.dedup();
    assert_eq!(
        leases.len(),
        1,
        "one session lease for all three grants: {leases:?}"
    );
    let mut client = etcd_client::Client::connect(endpoints(), None)
        .await
        .unwrap();
    client.lease_revoke(leases[0]).await.unwrap();
    for guard in &guards {
        tokio::time::timeout(Duration::from_secs(5), guard.lost())
            .await
            .expect("a guard on the lost session was not reported lost");
    }
    assert!(
        leases_under(&prefix).await.is_empty(),
        "keys survived their session"
    );
    // And the first client starts a new session for its next grant.
    let again = a.mutex("s1").try_lock().await.unwrap().expect("s1 is free");
    again.release().await.unwrap();
    drop(guards);
    a.close().await;
}

/// A crashed guard (never released) in a live session-mode client holds until the client is
/// closed: closing revokes the session lease, which frees it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn closing_a_session_client_frees_its_leaked_guards() {
    let Some((etcd, prefix)) =
        session_backend("closing_a_session_client_frees_its_leaked_guards").await
    else {
        return;
    };
    let a = Locker::with_backend(etcd);
    std::mem::forget(
        a.mutex("leak")
            .ttl(Duration::from_secs(2))
            .lock()
            .await
            .unwrap(),
    );
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(
        leases_under(&prefix).await.len(),
        1,
        "the live session keeps the leaked guard"
    );
    // `Locker::close` closes the backend, which revokes its session leases.
    a.close().await;
    assert!(
        leases_under(&prefix).await.is_empty(),
        "closing did not free the leaked guard"
    );
}
