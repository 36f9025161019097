//! Fault tests: each starts its own Redis servers and kills, pauses or cuts them off.

mod support;

use lock_core::{Error, Guard, Locker, RetryPolicy};
use lock_testkit::{FencedRegister, SafetyConfig, TcpProxy, run_safety_checker};
use std::sync::{Arc, Mutex as StdMutex};
use std::time::Duration;
use support::{Servers, backend, locker, mutex_counter_key, prefix};
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
        let guard: Guard = a
            .mutex(name)
            .ttl(secs(10))
            .lock_timeout(secs(15))
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
