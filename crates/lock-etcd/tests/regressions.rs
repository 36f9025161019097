//! Regression tests for the correctness findings of the etcd review (E-1 .. E-7 in
//! `reviews/postgres-etcd.md`), against the cluster named by `LOCK_TEST_ETCD_ENDPOINTS`. Each
//! was seen failing before its fix.

use etcd_client::{EventType, GetOptions, WatchOptions};
use lock_core::{
    AcquireRequest, Acquired, Backend, Error, LeaseId, LockKey, LockKind, Locker, Mode, RetryPolicy,
};
use lock_etcd::{Etcd, EtcdConfig};
use lock_testkit::faults::{Fault, Faults, Op};
use lock_testkit::{TcpProxy, require_servers};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio::time::Instant;

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

/// The cluster's endpoints, a backend on them under a prefix of its own, and that prefix.
struct Env {
    endpoints: Vec<String>,
    prefix: String,
    etcd: Etcd,
}

impl Env {
    async fn new(test: &str) -> Option<Env> {
        let reason = match std::env::var("LOCK_TEST_ETCD_ENDPOINTS") {
            Ok(endpoints) => {
                let endpoints: Vec<String> = endpoints
                    .split(',')
                    .map(str::trim)
                    .filter(|e| !e.is_empty())
                    .map(str::to_owned)
                    .collect();
                let prefix = format!("/lock-test-regressions/{}/", ulid::Ulid::generate());
                let config = EtcdConfig::new(endpoints.clone()).with_prefix(prefix.clone());
                match Etcd::connect(config).await {
                    Ok(etcd) => {
                        return Some(Env {
                            endpoints,
                            prefix,
                            etcd,
                        });
                    }
                    Err(e) => format!("etcd at {endpoints:?} unreachable: {e}"),
                }
            }
            Err(_) => "LOCK_TEST_ETCD_ENDPOINTS is not set".to_owned(),
        };
        assert!(
            !require_servers(),
            "{test}: server required (LOCK_TEST_REQUIRE_SERVERS=1) but missing: {reason}"
        );
        println!("skipped {test}: {reason}");
        None
    }

    /// Another backend on the same cluster and prefix, through `endpoints`.
    async fn backend(&self, endpoints: Vec<String>) -> Etcd {
        let config = EtcdConfig::new(endpoints).with_prefix(self.prefix.clone());
        Etcd::connect(config).await.unwrap()
    }

    async fn client(&self) -> etcd_client::Client {
        etcd_client::Client::connect(&self.endpoints, None)
            .await
            .unwrap()
    }

    /// Every key under this test's prefix: (key, value, lease).
    async fn keys(&self) -> Vec<(String, serde_json::Value, i64)> {
        let mut client = self.client().await;
        let response = client
            .get(self.prefix.clone(), Some(GetOptions::new().with_prefix()))
            .await
            .unwrap();
        response
            .kvs()
            .iter()
            .map(|kv| {
                (
                    String::from_utf8_lossy(kv.key()).into_owned(),
                    serde_json::from_slice(kv.value()).unwrap(),
                    kv.lease(),
                )
            })
            .collect()
    }
}

fn request(key: &LockKey, mode: Mode, permits: u32, limit: u32, ttl: Duration) -> AcquireRequest {
    AcquireRequest::new(
        key.clone(),
        LeaseId::generate(),
        Arc::from("regression-test"),
        mode,
        permits,
        limit,
        ttl,
        Arc::default(),
    )
}

fn waiting(mut request: AcquireRequest) -> AcquireRequest {
    request.claim = Some(secs(2));
    request
}

async fn granted(etcd: &Etcd, request: &AcquireRequest) {
    match etcd.acquire(request).await.unwrap() {
        Acquired::Granted { .. } => {}
        other => panic!("expected a grant, got {other:?}"),
    }
}

async fn busy(etcd: &Etcd, request: &AcquireRequest) {
    match etcd.acquire(request).await.unwrap() {
        Acquired::Busy { .. } => {}
        other => panic!("expected busy, got {other:?}"),
    }
}

/// E-1: a grant applied whose reply was lost is found again by the retry (same lease id). The
/// retry must refresh the lease: the holder counts its validity from the retry, and nobody else
/// may be granted the lock while the holder's guard is still valid.
#[tokio::test]
async fn e1_a_resent_grant_is_valid_as_long_as_its_guard_says() {
    let Some(env) = Env::new("e1_a_resent_grant_is_valid_as_long_as_its_guard_says").await else {
        return;
    };
    let faults = Faults::wrap(env.etcd.clone());
    // The first attempt's grant goes through; its reply is lost.
    faults.nth(Op::Acquire, 1, Fault::ApplyThenFail);
    let holder = Locker::with_backend(faults.clone());
    let other = Locker::with_backend(env.backend(env.endpoints.clone()).await);
    let gap = secs(3);
    let guard = holder
        .mutex("e1")
        .ttl(secs(5))
        .auto_extend(false)
        .retry(RetryPolicy {
            max_attempts: 0,
            initial_delay: gap,
            max_delay: gap,
            jitter: 0.0,
        })
        .lock_timeout(secs(30))
        .lock()
        .await
        .unwrap();
    assert_eq!(faults.calls(Op::Acquire), 2, "the grant was not re-sent");

    // Until the guard stops being valid, the lock must stay held on the server.
    let end = guard.valid_until();
    while Instant::now() + Duration::from_millis(200) < end {
        if guard.is_lost() {
            break;
        }
        if let Some(stolen) = other.mutex("e1").try_lock().await.unwrap() {
            panic!(
                "another client was granted the lock {:?} before the holder's guard ends: {stolen:?}",
                end - Instant::now()
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let _ = guard.release().await;
}

/// E-4: etcd grants at least its minimum TTL (2 s on a default cluster). The stored TTL is the
/// one the server granted, and extending with that TTL is a keep-alive of the same lease.
#[tokio::test]
async fn e4_the_stored_lease_ttl_is_the_granted_one() {
    let Some(env) = Env::new("e4_the_stored_lease_ttl_is_the_granted_one").await else {
        return;
    };
    let key = LockKey::new("e4", LockKind::Mutex).unwrap();
    let holder = request(&key, Mode::Exclusive, 1, 1, secs(1));
    granted(&env.etcd, &holder).await;
    let keys = env.keys().await;
    assert_eq!(keys.len(), 1);
    let (_, value, lease) = &keys[0];
    let mut client = env.client().await;
    let granted_ttl = client
        .lease_time_to_live(*lease, None)
        .await
        .unwrap()
        .granted_ttl();
    assert_eq!(
        value["lease_ttl"].as_i64(),
        Some(granted_ttl),
        "stored {value}, granted {granted_ttl} s"
    );

    // Extending with the asked TTL or the granted one keeps the lease (a keep-alive).
    for ttl in [
        secs(1),
        Duration::from_secs(u64::try_from(granted_ttl).unwrap()),
    ] {
        env.etcd.extend(&key, holder.lease_id, ttl).await.unwrap();
        let keys = env.keys().await;
        assert_eq!(
            keys[0].2, *lease,
            "extend({ttl:?}) moved the key to another lease"
        );
    }
    env.etcd.release(&key, holder.lease_id).await.unwrap();
}

/// E-6: a TTL above etcd's maximum lease TTL is an invalid argument, not a retryable failure.
#[tokio::test]
async fn e6_a_ttl_above_etcds_maximum_is_invalid() {
    let Some(env) = Env::new("e6_a_ttl_above_etcds_maximum_is_invalid").await else {
        return;
    };
    let key = LockKey::new("e6", LockKind::Mutex).unwrap();
    let huge = secs(10_000_000_000);
    let err = env
        .etcd
        .acquire(&request(&key, Mode::Exclusive, 1, 1, huge))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::InvalidArgument { .. }), "{err:?}");

    let holder = request(&key, Mode::Exclusive, 1, 1, secs(5));
    granted(&env.etcd, &holder).await;
    let err = env
        .etcd
        .extend(&key, holder.lease_id, huge)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::InvalidArgument { .. }), "{err:?}");
    env.etcd.release(&key, holder.lease_id).await.unwrap();
}

/// E-5: etcd reports a lease's remaining TTL in whole seconds, truncated. `inspect` must not
/// report an expiry before the one the server can have: at least the grant's send time + TTL.
#[tokio::test]
async fn e5_inspect_never_reports_an_expiry_before_the_lease_ends() {
    let Some(env) = Env::new("e5_inspect_never_reports_an_expiry_before_the_lease_ends").await
    else {
        return;
    };
    let key = LockKey::new("e5", LockKind::Mutex).unwrap();
    let ttl = secs(3);
    let holder = request(&key, Mode::Exclusive, 1, 1, ttl);
    let sent = SystemTime::now();
    granted(&env.etcd, &holder).await;
    let holders = env.etcd.inspect("e5").await.unwrap();
    assert_eq!(holders.len(), 1);
    let expires_at = holders[0].expires_at;
    assert!(
        expires_at >= sent + ttl,
        "inspect says the lease expires {:?} before it can",
        (sent + ttl).duration_since(expires_at).unwrap_or_default()
    );
    env.etcd.release(&key, holder.lease_id).await.unwrap();
}

/// E-7: `force_release` removes every key of the name in one write: a holder re-written between
/// its read and its delete (an extend moving it to another lease) cannot survive it.
#[tokio::test]
async fn e7_force_release_deletes_every_key_in_one_write() {
    let Some(env) = Env::new("e7_force_release_deletes_every_key_in_one_write").await else {
        return;
    };
    let semaphore = LockKey::new("e7", LockKind::Semaphore).unwrap();
    let mutex = LockKey::new("e7", LockKind::Mutex).unwrap();
    granted(
        &env.etcd,
        &request(&semaphore, Mode::Shared, 1, 3, secs(30)),
    )
    .await;
    granted(
        &env.etcd,
        &request(&semaphore, Mode::Shared, 1, 3, secs(30)),
    )
    .await;
    busy(
        &env.etcd,
        &waiting(request(&semaphore, Mode::Shared, 2, 3, secs(30))),
    )
    .await;
    granted(&env.etcd, &request(&mutex, Mode::Exclusive, 1, 1, secs(30))).await;
    assert_eq!(env.keys().await.len(), 4);

    let mut client = env.client().await;
    let revision = client
        .get(
            env.prefix.clone(),
            Some(GetOptions::new().with_count_only()),
        )
        .await
        .unwrap()
        .header()
        .unwrap()
        .revision();
    let mut events = client
        .watch(
            env.prefix.clone(),
            Some(
                WatchOptions::new()
                    .with_prefix()
                    .with_start_revision(revision + 1),
            ),
        )
        .await
        .unwrap();

    assert_eq!(env.etcd.force_release("e7").await.unwrap(), 3);
    assert!(env.keys().await.is_empty());

    let mut deletions = Vec::new();
    while deletions.len() < 4 {
        let message = tokio::time::timeout(secs(5), events.message())
            .await
            .expect("missing deletion events")
            .unwrap()
            .unwrap();
        for event in message.events() {
            assert_eq!(event.event_type(), EventType::Delete, "{event:?}");
            deletions.push(event.kv().unwrap().mod_revision());
        }
    }
    deletions.dedup();
    assert_eq!(
        deletions.len(),
        1,
        "the keys were deleted in separate writes at revisions {deletions:?}"
    );
}

/// E-3: after its watch breaks, the follower must signal once the new watch is in place: a
/// release between the waiter's re-check (prompted by the error) and the new watch would
/// otherwise go unnoticed until the next poll.
#[tokio::test]
async fn e3_a_release_while_the_watch_is_re_established_is_signalled() {
    let Some(env) = Env::new("e3_a_release_while_the_watch_is_re_established_is_signalled").await
    else {
        return;
    };
    let target: SocketAddr = env.endpoints[0].parse().unwrap();
    let proxy = TcpProxy::start(target).await.unwrap();
    let waiter_backend = env.backend(vec![proxy.addr().to_string()]).await;

    let key = LockKey::new("e3", LockKind::Mutex).unwrap();
    let holder = request(&key, Mode::Exclusive, 1, 1, secs(30));
    granted(&env.etcd, &holder).await;
    let waiter = waiting(request(&key, Mode::Exclusive, 1, 1, secs(30)));
    busy(&waiter_backend, &waiter).await;
    let mut subscription = waiter_backend.subscribe(&waiter).await.unwrap();
    // Let the follower settle on its predecessor (the holder).
    tokio::time::sleep(Duration::from_millis(1000)).await;

    // Break the follower's watch: it signals the error; the waiter re-checks (still busy).
    proxy.cut();
    tokio::time::sleep(Duration::from_millis(100)).await;
    proxy.restore();
    tokio::time::timeout(secs(10), subscription.changed())
        .await
        .expect("the broken watch was not signalled");
    busy(&waiter_backend, &waiter).await;

    // The holder releases while the follower sets up its next watch.
    env.etcd.release(&key, holder.lease_id).await.unwrap();
    tokio::time::timeout(secs(5), subscription.changed())
        .await
        .expect("the release during the watch's re-establishment was never signalled");
    granted(&waiter_backend, &waiter).await;
    waiter_backend.release(&key, waiter.lease_id).await.unwrap();
}
