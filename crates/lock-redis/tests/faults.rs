//! Fault tests: each starts its own Redis servers and kills, pauses or cuts them off.

mod support;

use lock_core::{Acquired, Backend, Error, Guard, LeaseId, LockKey, LockKind, Locker, RetryPolicy};
use lock_testkit::{FencedRegister, SafetyConfig, TcpProxy, eventually, run_safety_checker};
use std::sync::{Arc, Mutex as StdMutex};
use std::time::Duration;
use support::{
    Servers, TripProxy, backend, default_backend, locker, mutex_counter_key, prefix, request,
};
use tokio::time::Instant;

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// With 2 of 5 nodes dead a quorum of 3 remains: acquire, extend, inspect and release work.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_of_five_down_still_works() {
    let Some(mut servers) = Servers::start(5, &[]).await else {
        return;
    };
    let prefix = prefix();
    let a = locker(&servers.urls(), &prefix).await;
    let b = locker(&servers.urls(), &prefix).await;
    servers.kill(1);
    servers.kill(3);
    let name = "two-down";
    let guard = a
        .mutex(name)
        .ttl(secs(5))
        .lock_timeout(secs(10))
        .lock()
        .await
        .expect("lock with 3 of 5 nodes");
    guard.extend(secs(5)).await.expect("extend with 3 of 5");
    let holders = b.inspect(name).await.expect("inspect with 3 of 5");
    assert_eq!(holders.len(), 1);
    assert_eq!(holders[0].token, guard.token());
    assert!(b.mutex(name).try_lock().await.unwrap().is_none());
    guard.release().await.expect("release with 3 of 5");
    let next = b
        .mutex(name)
        .try_lock()
        .await
        .unwrap()
        .expect("free after release");
    assert!(next.token() > holders[0].token);
    next.release().await.unwrap();
}

/// With 3 of 5 nodes dead no quorum remains: acquisition fails with `ProviderUnavailable`
/// in bounded time, and once the nodes return nothing is left held on any node.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_of_five_down_is_unavailable_and_nothing_stays_held() {
    let Some(mut servers) = Servers::start(5, &[]).await else {
        return;
    };
    let prefix = prefix();
    let a = locker(&servers.urls(), &prefix).await;
    for i in [0, 2, 4] {
        servers.kill(i);
    }
    let name = "three-down";
    let started = Instant::now();
    let result = a
        .mutex(name)
        .ttl(secs(30))
        .lock_timeout(secs(30))
        .lock()
        .await;
    assert!(
        matches!(result, Err(Error::ProviderUnavailable { .. })),
        "{result:?}"
    );
    assert!(started.elapsed() < secs(15), "took {:?}", started.elapsed());
    assert!(matches!(
        a.mutex(name).try_lock().await,
        Err(Error::ProviderUnavailable { .. })
    ));
    assert!(matches!(
        a.semaphore(name, 3).try_acquire(1).await,
        Err(Error::ProviderUnavailable { .. })
    ));
    for i in [0, 2, 4] {
        servers.restart(i).await;
    }
    // No node, asked on its own, holds a lease of the failed attempts.
    for url in servers.urls() {
        let single = Locker::with_backend(backend(std::slice::from_ref(&url), &prefix).await);
        assert!(
            single.inspect(name).await.unwrap().is_empty(),
            "{url} still holds a lease"
        );
    }
    let guard = a
        .mutex(name)
        .lock_timeout(secs(10))
        .lock()
        .await
        .expect("lock once the nodes are back");
    guard.release().await.unwrap();
}

/// A holder cut off from every node is declared lost before its lease expires on the
/// servers (the next holder is granted only after it), and its late write is fenced off.
async fn cut_off_holder(nodes: usize) {
    let Some(servers) = Servers::start(nodes, &[]).await else {
        return;
    };
    let prefix = prefix();
    let mut proxies = Vec::new();
    for port in &servers.ports {
        let target = std::net::SocketAddr::from(([127, 0, 0, 1], *port));
        proxies.push(TcpProxy::start(target).await.unwrap());
    }
    let proxied: Vec<String> = proxies
        .iter()
        .map(|p| format!("redis://{}", p.addr()))
        .collect();
    let holder = locker(&proxied, &prefix).await;
    let other = locker(&servers.urls(), &prefix).await;
    let register = FencedRegister::new();
    let lost_at: Arc<StdMutex<Option<Instant>>> = Arc::default();
    let record = lost_at.clone();
    let name = "cut-off";
    let ttl = secs(2);
    let guard = holder
        .mutex(name)
        .ttl(ttl)
        .auto_extend(true)
        .on_lost(move |_| {
            record.lock().unwrap().get_or_insert(Instant::now());
        })
        .lock()
        .await
        .unwrap();
    register.write(guard.token(), 1).unwrap();
    for proxy in &proxies {
        proxy.cut();
    }
    tokio::time::timeout(secs(10), guard.lost())
        .await
        .expect("the cut-off holder was not declared lost");
    assert!(guard.is_lost());
    let next = other
        .mutex(name)
        .lock_timeout(secs(20))
        .lock()
        .await
        .expect("the lease never expired");
    let granted_at = Instant::now();
    let lost_at = lost_at.lock().unwrap().expect("on_lost did not run");
    assert!(
        lost_at < granted_at,
        "declared lost {:?} after the next holder was granted",
        lost_at - granted_at
    );
    assert!(next.token() > guard.token());
    register.write(next.token(), 2).unwrap();
    let stale = register
        .write(guard.token(), 3)
        .expect_err("the stale write was accepted");
    assert_eq!(stale.highest, next.token());
    assert_eq!(register.read(), 2);
    assert!(matches!(guard.release().await, Err(Error::Lost { .. })));
    next.release().await.unwrap();
    for proxy in &proxies {
        proxy.restore();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cut_off_single_node_holder_is_lost_and_fenced() {
    cut_off_holder(1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cut_off_redlock_holder_is_lost_and_fenced() {
    cut_off_holder(5).await;
}

/// A SIGSTOPped single node makes operations fail with `ProviderUnavailable` in bounded time
/// (never a hang); once resumed, the lock works and its state is intact.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn paused_single_node_is_unavailable_not_a_hang() {
    let Some(servers) = Servers::start(1, &[]).await else {
        return;
    };
    let prefix = prefix();
    let a = locker(&servers.urls(), &prefix).await;
    let name = "paused";
    let guard = a.mutex(name).ttl(secs(30)).lock().await.unwrap();
    servers.pause(0);
    let started = Instant::now();
    let attempt = tokio::time::timeout(secs(10), a.mutex(name).try_lock())
        .await
        .expect("try_lock hung on a paused server");
    assert!(
        matches!(attempt, Err(Error::ProviderUnavailable { .. })),
        "{attempt:?}"
    );
    let extend = tokio::time::timeout(secs(10), guard.extend(secs(30)))
        .await
        .expect("extend hung on a paused server");
    assert!(extend.is_err(), "extend answered by a paused server");
    assert!(started.elapsed() < secs(8));
    servers.resume(0);
    let b = locker(&servers.urls(), &prefix).await;
    assert!(
        b.mutex(name).try_lock().await.unwrap().is_none(),
        "the held lease vanished while the server was paused"
    );
}

/// The safety checker runs while nodes are paused (SIGSTOP) and resumed one after another:
/// no overlap, no stale write.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn paused_nodes_do_not_break_safety() {
    let Some(servers) = Servers::start(5, &[]).await else {
        return;
    };
    let servers = Arc::new(servers);
    let prefix = prefix();
    let a = locker(&servers.urls(), &prefix).await;
    let b = locker(&servers.urls(), &prefix).await;
    let faults = tokio::spawn({
        let servers = servers.clone();
        async move {
            for i in [0, 3, 1, 4, 2] {
                servers.pause(i);
                tokio::time::sleep(ms(800)).await;
                servers.resume(i);
                tokio::time::sleep(ms(200)).await;
            }
        }
    });
    let handles = (0..4)
        .map(|i| {
            if i % 2 == 0 { &a } else { &b }
                .mutex("paused-safety")
                .ttl(secs(3))
        })
        .collect();
    let config = SafetyConfig {
        grants_per_worker: 10,
        hold: ms(10),
        max_duration: secs(60),
    };
    let report = run_safety_checker(handles, config).await;
    faults.await.unwrap();
    println!("paused nodes: {report}");
    assert_eq!(report.overlaps, 0, "{report}");
    assert_eq!(report.stale_writes_rejected, 0, "{report}");
    assert_eq!(report.grants, 40, "{report}");
}

/// The safety checker runs while nodes are killed and restarted (each restart delayed past
/// the TTL, as the docs advise): no overlap, every write fenced in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn killed_and_restarted_nodes_do_not_break_safety() {
    let Some(servers) = Servers::start(5, &[]).await else {
        return;
    };
    let servers = Arc::new(tokio::sync::Mutex::new(servers));
    let urls = servers.lock().await.urls();
    let prefix = prefix();
    let a = locker(&urls, &prefix).await;
    let b = locker(&urls, &prefix).await;
    let ttl = secs(1);
    let faults = tokio::spawn({
        let servers = servers.clone();
        async move {
            for i in [2, 0, 4, 1, 3] {
                servers.lock().await.kill(i);
                tokio::time::sleep(ttl + ms(300)).await;
                servers.lock().await.restart(i).await;
                tokio::time::sleep(ms(300)).await;
            }
        }
    });
    let retry = RetryPolicy {
        max_attempts: 0,
        ..RetryPolicy::default()
    };
    let handles = (0..4)
        .map(|i| {
            if i % 2 == 0 { &a } else { &b }
                .mutex("killed-safety")
                .ttl(ttl)
                .retry(retry)
        })
        .collect();
    let config = SafetyConfig {
        grants_per_worker: 25,
        hold: ms(5),
        max_duration: secs(60),
    };
    let report = run_safety_checker(handles, config).await;
    faults.await.unwrap();
    println!("killed nodes: {report}");
    assert_eq!(report.overlaps, 0, "{report}");
    assert_eq!(report.stale_writes_rejected, 0, "{report}");
    assert_eq!(report.final_value, report.writes_accepted, "{report}");
    assert_eq!(report.grants, 100, "{report}");
}

/// DESIGN §5, first trap: grants won on different quorums whose counters started far apart
/// still get strictly increasing tokens (the second round raises a quorum's counters).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn tokens_increase_across_quorums_with_far_apart_counters() {
    let Some(mut servers) = Servers::start(5, &[]).await else {
        return;
    };
    let prefix = prefix();
    let name = "far-apart";
    // Nodes 0 and 1 count far ahead of the others (and of the clock, in microseconds).
    let high: u64 = 4_000_000_000_000_000;
    for i in [0, 1] {
        let client = redis::Client::open(servers.url(i)).unwrap();
        let mut conn = client.get_multiplexed_async_connection().await.unwrap();
        let _: () = redis::cmd("SET")
            .arg(mutex_counter_key(&prefix, name))
            .arg(high)
            .query_async(&mut conn)
            .await
            .unwrap();
    }
    let a = locker(&servers.urls(), &prefix).await;
    let mut tokens = Vec::new();
    // Each grant lands on the three live nodes: {0,1,2}, then {2,3,4}, then {0,1,4}.
    for (down, up) in [
        (vec![3, 4], vec![]),
        (vec![0, 1], vec![3, 4]),
        (vec![2, 3], vec![0, 1]),
    ] {
        for i in up {
            servers.restart(i).await;
        }
        for i in down {
            servers.kill(i);
        }
        // A grant needs all three live nodes, one of them just restarted: its connection may
        // still be in its reconnect back-off for several seconds (seen: up to ~10 s on a loaded
        // machine), so the wait is generous; the property is the token order.
        let guard: Guard = a
            .mutex(name)
            .ttl(secs(10))
            .lock_timeout(secs(40))
            .lock()
            .await
            .expect("lock on the live quorum");
        tokens.push(guard.token());
        guard.release().await.unwrap();
    }
    assert!(
        tokens[0].get() > high,
        "the first grant must start from the high counters: {tokens:?}"
    );
    assert!(
        tokens.windows(2).all(|w| w[1] > w[0]),
        "tokens did not strictly increase: {tokens:?}"
    );
}

/// DESIGN §5, second trap: a semaphore of limit 2 on 5 nodes never has more than 2 holders
/// when grants land on different node subsets (a grant needs 4 nodes, not a majority). The
/// clients reach the nodes through proxies, and each grant is tried with some links cut.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn semaphore_never_over_limit_across_node_subsets() {
    let Some(servers) = Servers::start(5, &[]).await else {
        return;
    };
    let mut proxies = Vec::new();
    for port in &servers.ports {
        let target = std::net::SocketAddr::from(([127, 0, 0, 1], *port));
        proxies.push(TcpProxy::start(target).await.unwrap());
    }
    let proxied: Vec<String> = proxies
        .iter()
        .map(|p| format!("redis://{}", p.addr()))
        .collect();
    let prefix = prefix();
    let a = locker(&proxied, &prefix).await;
    let b = locker(&proxied, &prefix).await;
    let name = "subsets";
    let mut held = Vec::new();
    // With a majority quorum, the first three would be granted on {0,1,2}, {0,3,4} and
    // {1,2,3}: three holders of a limit of 2. Then single links cut, where grants can land.
    let patterns: [&[usize]; 8] = [&[3, 4], &[1, 2], &[0, 4], &[4], &[0], &[2], &[1], &[3]];
    for (step, cut) in patterns.iter().enumerate() {
        for &i in *cut {
            proxies[i].cut();
        }
        let locker = if step % 2 == 0 { &a } else { &b };
        match locker.semaphore(name, 2).ttl(secs(60)).try_acquire(1).await {
            Ok(Some(permit)) => held.push(permit),
            Ok(None) | Err(Error::ProviderUnavailable { .. }) => {}
            Err(e) => panic!("step {step}: {e}"),
        }
        for &i in *cut {
            proxies[i].restore();
        }
        assert!(
            held.len() <= 2,
            "step {step} (links {cut:?} cut): {} holders of a semaphore of limit 2",
            held.len()
        );
    }
    assert_eq!(held.len(), 2, "grants with one link cut must succeed");
    let sem = a.semaphore(name, 2);
    assert_eq!(sem.available().await.unwrap(), 0);
    for permit in held {
        permit.release().await.unwrap();
    }
    assert_eq!(sem.available().await.unwrap(), 2);
}

/// A single instance restarted without persistence forgets its counters, and tokens still
/// increase: they continue from the server's clock.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn tokens_increase_across_a_restart_without_persistence() {
    let Some(mut servers) = Servers::start(1, &[]).await else {
        return;
    };
    let prefix = prefix();
    let a = locker(&servers.urls(), &prefix).await;
    let name = "restart-tokens";
    let mut last = None;
    for round in 0..3 {
        for _ in 0..3 {
            let guard = a.mutex(name).try_lock().await.unwrap().expect("free");
            if let Some(last) = last {
                assert!(
                    guard.token() > last,
                    "round {round}: {} <= {last}",
                    guard.token()
                );
            }
            last = Some(guard.token());
            guard.release().await.unwrap();
        }
        servers.kill(0);
        servers.restart(0).await;
    }
}

/// A single-node backend on node `i` alone.
async fn single_node(servers: &Servers, i: usize, prefix: &str) -> lock_redis::Redis {
    backend(&[servers.url(i)], prefix).await
}

/// The token of a grant; panics on anything else.
fn granted(what: &str, result: lock_core::Result<Acquired>) -> lock_core::FencingToken {
    match result {
        Ok(Acquired::Granted { token }) => token,
        other => panic!("{what}: expected a grant, got {other:?}"),
    }
}

/// Sets the mutex `name`'s token counter on node `i` to `value`.
async fn set_counter(servers: &Servers, i: usize, prefix: &str, name: &str, value: u64) {
    let client = redis::Client::open(servers.url(i)).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let _: () = redis::cmd("SET")
        .arg(mutex_counter_key(prefix, name))
        .arg(value)
        .query_async(&mut conn)
        .await
        .unwrap();
}

/// Review finding 1: one paused (SIGSTOP) node of three, with the default 2 s node timeout,
/// costs nothing while the two healthy nodes answer: lock, extend and release return at once
/// (the round is decided by the quorum, the paused node is left to the background), a busy
/// lock's `lock_timeout` is kept, and an auto-extended guard with a TTL no longer than the node
/// timeout is kept for many TTLs.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_paused_node_of_three_does_not_slow_redlock_down() {
    let Some(servers) = Servers::start(3, &[]).await else {
        return;
    };
    let prefix = prefix();
    let a = Locker::with_backend(default_backend(&servers.urls(), &prefix).await);
    let b = Locker::with_backend(default_backend(&servers.urls(), &prefix).await);
    for locker in [&a, &b] {
        let warm = locker.mutex("warm-up").try_lock().await.unwrap().unwrap();
        warm.release().await.unwrap();
    }
    servers.pause(2);
    // Far below the 2 s node timeout, and generous for a loaded machine.
    let fast = ms(1000);

    let started = Instant::now();
    let guard = a
        .mutex("one-paused")
        .ttl(secs(3))
        .lock_timeout(secs(20))
        .lock()
        .await
        .expect("lock with one node paused");
    let took = started.elapsed();
    assert!(took < fast, "lock took {took:?}");
    let started = Instant::now();
    guard.extend(secs(3)).await.expect("extend with one paused");
    let took = started.elapsed();
    assert!(took < fast, "extend took {took:?}");
    let started = Instant::now();
    guard.release().await.expect("release with one paused");
    let took = started.elapsed();
    assert!(took < fast, "release took {took:?}");

    // A busy lock: each attempt is answered by the two healthy nodes, and the wait ends at its
    // timeout (review finding 8).
    let held = b
        .mutex("one-paused-busy")
        .ttl(secs(30))
        .lock()
        .await
        .unwrap();
    let started = Instant::now();
    let waited = a
        .mutex("one-paused-busy")
        .lock_timeout(secs(1))
        .lock()
        .await;
    let took = started.elapsed();
    assert!(
        matches!(waited, Err(Error::NotAcquired { .. })),
        "{waited:?}"
    );
    assert!(took < secs(1) + ms(500), "lock_timeout(1 s) took {took:?}");
    held.release().await.unwrap();

    // TTL 2 s, no longer than the node timeout: extended every 2/3 s for 7 s.
    let kept = a
        .mutex("one-paused-kept")
        .ttl(secs(2))
        .auto_extend(true)
        .lock_timeout(secs(20))
        .lock()
        .await
        .expect("lock with ttl 2 s");
    tokio::time::sleep(secs(7)).await;
    assert!(!kept.is_lost(), "the auto-extended guard was declared lost");
    assert!(
        b.mutex("one-paused-kept")
            .try_lock()
            .await
            .unwrap()
            .is_none(),
        "the kept lock is free"
    );
    kept.release().await.expect("release the kept guard");
    servers.resume(2);
}

/// Review finding 1: with 2 of 3 nodes hanging (SIGSTOP) and the default 2 s node timeout, a
/// call on a 0.5 s lease returns within that lease's validity (plus scheduling slack), not
/// after node timeouts paid per round.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_hanging_nodes_of_three_cost_at_most_the_validity() {
    let Some(servers) = Servers::start(3, &[]).await else {
        return;
    };
    let prefix = prefix();
    let a = Locker::with_backend(default_backend(&servers.urls(), &prefix).await);
    let guard = a.mutex("two-hang-held").ttl(secs(30)).lock().await.unwrap();
    servers.pause(1);
    servers.pause(2);
    let ttl = ms(500);
    let bound = ttl + ms(300);

    let started = Instant::now();
    let attempt = a.mutex("two-hang").ttl(ttl).try_lock().await;
    let took = started.elapsed();
    assert!(
        matches!(attempt, Err(Error::ProviderUnavailable { .. }) | Ok(None)),
        "{attempt:?}"
    );
    assert!(took < bound, "try_lock with ttl {ttl:?} took {took:?}");

    let started = Instant::now();
    let extended = guard.extend(ttl).await;
    let took = started.elapsed();
    assert!(extended.is_err(), "extended with one node of three");
    assert!(took < bound, "extend to {ttl:?} took {took:?}");

    // Release has no lease validity to go by: the node timeout bounds it.
    let started = Instant::now();
    let released = guard.release().await;
    let took = started.elapsed();
    assert!(released.is_err(), "released with one node of three");
    assert!(took < secs(2) + ms(700), "release took {took:?}");
    servers.resume(1);
    servers.resume(2);
}

/// Review finding 2, its trace on five nodes (q = 3): A is granted on nodes 0, 1, 2 (node 2's
/// counter is far ahead) and busy on 3 and 4; B already holds node 3, its requests to 0 and 1
/// are late. A's raise is cut on nodes 0 and 1. A must not be reported with a token that a
/// later grant of B's on {0, 1, 3} undercuts: either A's grant is rolled back, or B's token is
/// larger.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn raise_cut_on_granting_nodes_keeps_tokens_in_order() {
    let Some(servers) = Servers::start(5, &[]).await else {
        return;
    };
    let prefix = prefix();
    let name = "raise-cut";
    let key = LockKey::new(name, LockKind::Mutex).unwrap();
    let high: u64 = 4_000_000_000_000_000;
    set_counter(&servers, 2, &prefix, name, high).await;
    let single = |i: usize| single_node(&servers, i, &prefix);

    // B's request reached node 3 first; C holds node 4.
    let b_lease = LeaseId::generate();
    granted(
        "B on node 3",
        single(3)
            .await
            .acquire(&request(name, "b", b_lease, secs(60)))
            .await,
    );
    granted(
        "C on node 4",
        single(4)
            .await
            .acquire(&request(name, "c", LeaseId::generate(), secs(60)))
            .await,
    );

    // A reaches nodes 0 and 1 through proxies that cut the link right after the grant.
    let mut proxies = Vec::new();
    for i in [0, 1] {
        let target = std::net::SocketAddr::from(([127, 0, 0, 1], servers.ports[i]));
        proxies.push(TripProxy::start(target).await);
    }
    let a_urls = vec![
        proxies[0].url(),
        proxies[1].url(),
        servers.url(2),
        servers.url(3),
        servers.url(4),
    ];
    let a = backend(&a_urls, &prefix).await;
    for proxy in &proxies {
        proxy.trip_on(b"granted");
    }
    let a_lease = LeaseId::generate();
    let a_result = a.acquire(&request(name, "a", a_lease, secs(3))).await;
    assert!(
        proxies.iter().all(TripProxy::is_tripped),
        "A was not granted on nodes 0 and 1: {a_result:?}"
    );
    for proxy in &proxies {
        proxy.restore();
    }

    match a_result {
        Ok(Acquired::Granted { token: t1 }) => {
            // A releases; D takes node 2; B's late requests arrive and win {0, 1, 3}.
            a.release(&key, a_lease).await.unwrap();
            granted(
                "D on node 2",
                single(2)
                    .await
                    .acquire(&request(name, "d", LeaseId::generate(), secs(60)))
                    .await,
            );
            let b = backend(&servers.urls(), &prefix).await;
            let t2 = granted(
                "B on 0, 1, 3",
                b.acquire(&request(name, "b", b_lease, secs(60))).await,
            );
            assert!(
                t2 > t1,
                "B was granted after A with a smaller token: {t2} <= {t1}"
            );
        }
        Ok(Acquired::Busy { .. }) | Err(Error::ProviderUnavailable { .. }) => {
            // Rolled back: node 2, where A's grant stays reachable, drops it.
            let node2 = single(2).await;
            let gone = eventually(secs(5), || async {
                let holders = node2.inspect(name).await.unwrap();
                holders.iter().all(|h| h.owner != "a")
            })
            .await;
            assert!(gone, "A's partial grant was not rolled back on node 2");
        }
        other => panic!("A: {other:?}"),
    }
}

/// Review finding 9: a Redlock release or extension counts only when a quorum confirmed it. A
/// lease left on one node of three is not "released" (it was not held) and cannot be
/// extended; the extension that reached that one node is rolled back. A lease on two nodes,
/// one of them paused, cannot be confirmed released.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn release_and_extend_count_only_with_a_quorum() {
    let Some(servers) = Servers::start(3, &[]).await else {
        return;
    };
    let prefix = prefix();
    let name = "quorum-confirmed";
    let key = LockKey::new(name, LockKind::Mutex).unwrap();
    let redlock = backend(&servers.urls(), &prefix).await;
    let node = |i: usize| single_node(&servers, i, &prefix);

    // A lease left on node 0 only (its quorum lost).
    let node0 = node(0).await;
    let lingering = LeaseId::generate();
    granted(
        "node 0",
        node0
            .acquire(&request(name, "a", lingering, ms(1500)))
            .await,
    );
    let extended = redlock.extend(&key, lingering, secs(60)).await;
    assert!(
        matches!(extended, Err(Error::Expired { .. })),
        "{extended:?}"
    );
    // The copy the extension reached is rolled back, not kept for 60 s.
    let gone = eventually(secs(1), || async {
        node0.inspect(name).await.unwrap().is_empty()
    })
    .await;
    assert!(gone, "the extended copy on node 0 was not rolled back");

    let lingering = LeaseId::generate();
    granted(
        "node 0",
        node0
            .acquire(&request(name, "a", lingering, secs(60)))
            .await,
    );
    let released = redlock.release(&key, lingering).await;
    assert!(
        matches!(released, Err(Error::NotHeld { .. })),
        "a lease on one node of three was released: {released:?}"
    );

    // A lease on nodes 0 and 1; node 1 paused: only one node confirms the release.
    let lease = LeaseId::generate();
    for i in [0, 1] {
        granted(
            "nodes 0 and 1",
            node(i)
                .await
                .acquire(&request(name, "a", lease, secs(60)))
                .await,
        );
    }
    servers.pause(1);
    let released = redlock.release(&key, lease).await;
    assert!(
        matches!(released, Err(Error::ProviderUnavailable { .. })),
        "a release confirmed by one node of three: {released:?}"
    );
    servers.resume(1);
}

/// Review finding 7: every connection to an instance (commands and pub/sub) has TCP keepalive
/// on, so a half-open connection (a peer gone without a reset, a NAT that dropped the flow) is
/// found and replaced. `ss` shows the keepalive timer of each client socket.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn connections_use_tcp_keepalive() {
    let Some(servers) = Servers::start(1, &[]).await else {
        return;
    };
    let Some(ss) = lock_testkit::find_program(&["ss", "/usr/bin/ss", "/usr/sbin/ss"]) else {
        println!("skipped: ss not found");
        return;
    };
    let a = locker(&servers.urls(), &prefix()).await;
    let guard = a.mutex("keepalive").try_lock().await.unwrap().unwrap();
    // The listener's pub/sub connection comes up in the background.
    let port = servers.ports[0];
    let sockets = || {
        let out = std::process::Command::new(&ss)
            .args(["-tnoH", "state", "established"])
            .arg(format!("( dport = :{port} )"))
            .output()
            .expect("run ss");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let both = eventually(secs(5), || async { sockets().lines().count() >= 2 }).await;
    let listing = sockets();
    assert!(
        both,
        "expected a command and a pub/sub connection:\n{listing}"
    );
    for line in listing.lines() {
        assert!(
            line.contains("keepalive"),
            "a connection without keepalive:\n{listing}"
        );
    }
    guard.release().await.unwrap();
}
