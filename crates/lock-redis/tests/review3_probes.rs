//! Regression tests from the adversarial review of the Redlock round changes (both failed
//! before their fixes): an adopted copy of an earlier grant is valid from the adopting request
//! (P1), and `close` waits for the roll-back of a straggler's partial grant (P2).

mod support;

use lock_core::{Acquired, Backend, LeaseId, LockKey, LockKind, Locker};
use lock_testkit::eventually;
use std::time::Duration;
use support::{Servers, TripProxy, backend, prefix, request};
use tokio::time::Instant;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

async fn owners_on(servers: &Servers, i: usize, prefix: &str, name: &str) -> Vec<String> {
    let node = backend(&[servers.url(i)], prefix).await;
    node.inspect(name)
        .await
        .unwrap()
        .into_iter()
        .map(|h| h.owner.to_string())
        .collect()
}

/// P1: an attempt that ends Busy leaves its grant on node 0 (roll-back lost on a cut link);
/// the next attempt of the same lock() call adopts that copy with its OLD expiry, and
/// lock-core counts validity from the new attempt's send time. After the old copy expires on
/// node 0, C is granted {0, 2} while A's guard is still "valid".
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn p1_adopted_stale_copy_gives_two_holders() {
    let Some(servers) = Servers::start(3, &[]).await else {
        return;
    };
    let prefix = prefix();
    let name = "p1";
    let key = LockKey::new(name, LockKind::Mutex).unwrap();
    let ttl = Duration::from_secs(10);

    // B holds nodes 1 and 2 (single-node leases).
    let b1 = backend(&[servers.url(1)], &prefix).await;
    let b2 = backend(&[servers.url(2)], &prefix).await;
    let (l1, l2) = (LeaseId::generate(), LeaseId::generate());
    assert!(matches!(
        b1.acquire(&request(name, "b", l1, Duration::from_secs(60)))
            .await,
        Ok(Acquired::Granted { .. })
    ));
    assert!(matches!(
        b2.acquire(&request(name, "b", l2, Duration::from_secs(60)))
            .await,
        Ok(Acquired::Granted { .. })
    ));

    let target = std::net::SocketAddr::from(([127, 0, 0, 1], servers.ports[0]));
    let proxy = TripProxy::start(target).await;
    let a = Locker::with_backend(
        backend(&[proxy.url(), servers.url(1), servers.url(2)], &prefix).await,
    );
    proxy.trip_on(b"granted");
    let t0 = Instant::now();
    let a_task = tokio::spawn({
        let a = a.clone();
        async move {
            a.mutex(name)
                .ttl(ttl)
                .lock_timeout(Duration::from_secs(30))
                .lock()
                .await
        }
    });
    assert!(eventually(Duration::from_secs(3), || async { proxy.is_tripped() }).await);
    tokio::time::sleep(ms(700)).await;
    let on0 = owners_on(&servers, 0, &prefix, name).await;
    println!("P1 after attempt 1, node 0 holds: {on0:?} (roll-back lost)");

    // At t0 + 5 s: B gives up node 1, then the link to node 0 comes back.
    tokio::time::sleep_until(t0 + Duration::from_secs(5)).await;
    b1.release(&key, l1).await.unwrap();
    tokio::time::sleep(ms(100)).await;
    proxy.restore();
    let guard = a_task.await.unwrap().expect("A granted");
    let granted_at = t0.elapsed();
    println!(
        "P1 A granted at t0+{granted_at:?}, token {}, valid for {:?} more",
        guard.token(),
        guard
            .valid_until()
            .saturating_duration_since(Instant::now())
    );
    for i in 0..3 {
        println!(
            "P1 node {i}: {:?}",
            owners_on(&servers, i, &prefix, name).await
        );
    }

    // Node 0's copy (granted at ~t0) expires at ~t0 + 10 s; A's claim on node 2 ~5 s after
    // the grant. B gives up node 2.
    b2.release(&key, l2).await.unwrap();
    let c = Locker::with_backend(backend(&servers.urls(), &prefix).await);
    let mut second = None;
    while Instant::now() < guard.valid_until() {
        if let Some(g) = c.mutex(name).ttl(ttl).try_lock().await.unwrap() {
            second = Some(g);
            break;
        }
        tokio::time::sleep(ms(100)).await;
    }
    match second {
        Some(g) => {
            let now = Instant::now();
            println!(
                "P1 FAIL: C granted at t0+{:?} with token {} while A's guard (token {}) is valid for {:?} more, lost={}",
                t0.elapsed(),
                g.token(),
                guard.token(),
                guard.valid_until().saturating_duration_since(now),
                guard.is_lost()
            );
            assert!(guard.valid_until() <= now || guard.is_lost(), "two holders");
        }
        None => println!("P1 ok: C never granted while A valid"),
    }
}

/// P2: a try_lock that loses on nodes 0 and 1 while node 2 is paused leaves node 2's
/// request to the background; the roll-back is sent only after node 2 answers. A program
/// that closes its locker and exits before that leaves the lease on node 2 for a full TTL.
#[test]
fn p2_close_does_not_wait_for_straggler_roll_back() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let Some(servers) = rt.block_on(Servers::start(3, &[])) else {
        return;
    };
    let prefix = prefix();
    let name = "p2";
    rt.block_on(async {
        for i in [0, 1] {
            let b = backend(&[servers.url(i)], &prefix).await;
            assert!(matches!(
                b.acquire(&request(
                    name,
                    "b",
                    LeaseId::generate(),
                    Duration::from_secs(60)
                ))
                .await,
                Ok(Acquired::Granted { .. })
            ));
        }
    });
    // The client program, on a runtime of its own.
    let client = tokio::runtime::Runtime::new().unwrap();
    client.block_on(async {
        let a = Locker::with_backend(
            lock_redis::Redis::connect(
                lock_redis::RedisConfig::new(servers.urls()).prefix(&prefix),
            )
            .await
            .unwrap(),
        );
        // Warm up: the scripts are loaded on every node.
        let w = a.mutex("p2-warm").try_lock().await.unwrap().unwrap();
        w.release().await.unwrap();
        servers.pause(2);
        let got = a.mutex(name).ttl(Duration::from_secs(60)).try_lock().await;
        println!("P2 try_lock: {:?}", got.as_ref().map(|g| g.is_some()));
        let report = a.close().await;
        println!("P2 close: {report:?}");
    });
    drop(client); // the program exits
    servers.resume(2);
    let on2 = rt.block_on(async {
        tokio::time::sleep(ms(500)).await;
        owners_on(&servers, 2, &prefix, name).await
    });
    println!("P2 node 2 holds after exit: {on2:?}");
    assert!(
        !on2.iter().any(|o| o != "b"),
        "A's lease left on node 2 for its TTL"
    );
}
