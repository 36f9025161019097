//! The server's work per lock operation, counted with `INFO commandstats` on a private instance
//! (so `CONFIG RESETSTAT` disturbs nobody): an uncontended mutex cycle is as close to
//! `SET NX PX` + compare-and-delete as fencing tokens allow (P2).

mod support;

use lock_core::Locker;
use support::{Servers, backend, commandstats, prefix, reset_stats};

/// Commands a mutex fast path may run inside its scripts: string commands only (no hash, no
/// sorted set), plus the clock and the read of the waiters' count.
const FAST: [&str; 8] = [
    "time", "get", "set", "del", "exists", "pexpire", "pttl", "hget",
];

/// The script calls themselves and this test's own commands.
fn admin(name: &str) -> bool {
    name == "evalsha" || name.starts_with("config") || name == "info"
}

/// One uncontended mutex cycle (lock + release through a `Locker`) costs two script calls
/// that run only string commands, at most 9 of them, and (printed, with the floor measured in
/// the same run) about the server time of `SET NX PX` + a compare-and-delete script.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_uncontended_mutex_cycle_is_close_to_set_nx() {
    let Some(servers) = Servers::start(1, &[]).await else {
        return;
    };
    let prefix = prefix();
    let locker = Locker::with_backend(backend(&servers.urls(), &prefix).await);
    let client = redis::Client::open(servers.url(0)).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    // Warm up: the scripts get loaded.
    locker
        .mutex("fast")
        .lock()
        .await
        .unwrap()
        .release()
        .await
        .unwrap();

    const CYCLES: u64 = 200;
    reset_stats(&mut conn).await;
    for _ in 0..CYCLES {
        let guard = locker.mutex("fast").lock().await.unwrap();
        guard.release().await.unwrap();
    }
    let stats = commandstats(&mut conn).await;
    let (scripts, script_usec) = stats.get("evalsha").copied().unwrap_or((0, 0));
    let inner: u64 = stats
        .iter()
        .filter(|(name, _)| !admin(name))
        .map(|(_, (calls, _))| calls)
        .sum();
    let floor = floor_usec(&mut conn, CYCLES).await;
    println!(
        "per mutex cycle: {} script calls, {:.1} commands inside, {:.1} µs server time \
         (floor SET NX PX + CAD: {floor:.1} µs); commands: {stats:?}",
        scripts as f64 / CYCLES as f64,
        inner as f64 / CYCLES as f64,
        script_usec as f64 / CYCLES as f64,
    );
    assert_eq!(scripts, 2 * CYCLES, "script calls per cycle: {stats:?}");
    for name in stats.keys() {
        assert!(
            FAST.contains(&name.as_str()) || admin(name),
            "an uncontended mutex cycle ran {name}: {stats:?}"
        );
    }
    assert!(
        inner <= 9 * CYCLES,
        "{inner} commands inside the scripts of {CYCLES} cycles: {stats:?}"
    );
    locker.close().await;
}

/// The server time (µs) per cycle of the floor: `SET NX PX` + a compare-and-delete script.
async fn floor_usec(conn: &mut redis::aio::MultiplexedConnection, cycles: u64) -> f64 {
    let cad = redis::Script::new(
        "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end \
         return 0",
    );
    let _: i64 = cad.key("floor").arg("x").invoke_async(conn).await.unwrap();
    reset_stats(conn).await;
    for _ in 0..cycles {
        let _: Option<String> = redis::cmd("SET")
            .arg("floor")
            .arg("x")
            .arg("NX")
            .arg("PX")
            .arg(10_000)
            .query_async(conn)
            .await
            .unwrap();
        let _: i64 = cad.key("floor").arg("x").invoke_async(conn).await.unwrap();
    }
    let stats = commandstats(conn).await;
    let usec: u64 = ["set", "evalsha"]
        .iter()
        .filter_map(|c| stats.get(*c))
        .map(|(_, usec)| usec)
        .sum();
    usec as f64 / cycles as f64
}

/// The script calls each connection's server ran since its last reset, not counting those
/// that failed (`NOSCRIPT`, before the client loads the script).
async fn script_calls(conns: &mut [redis::aio::MultiplexedConnection]) -> Vec<u64> {
    let mut calls = Vec::new();
    for conn in conns {
        let stats = commandstats(conn).await;
        calls.push(stats.get("evalsha").map_or(0, |&(calls, _)| calls));
    }
    calls
}

async fn connections(servers: &Servers, nodes: usize) -> Vec<redis::aio::MultiplexedConnection> {
    let mut conns = Vec::new();
    for url in servers.urls().into_iter().take(nodes) {
        let client = redis::Client::open(url).unwrap();
        conns.push(client.get_multiplexed_async_connection().await.unwrap());
    }
    conns
}

/// P3: an uncontended Redlock cycle is one round to acquire (every instance grants the token
/// the client proposed, so the raise round is skipped) and one to release: two script calls
/// per instance and cycle, where the raise made it three on the instances that granted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_uncontended_redlock_acquire_is_one_round() {
    let Some(servers) = Servers::start(3, &[]).await else {
        return;
    };
    let prefix = prefix();
    let mut conns = connections(&servers, 3).await;
    for kind in ["mutex", "semaphore"] {
        // Warm up: the scripts get loaded.
        let locker = Locker::with_backend(backend(&servers.urls(), &prefix).await);
        cycle(&locker, kind).await;
        locker.close().await;
        for conn in conns.iter_mut() {
            reset_stats(conn).await;
        }
        const CYCLES: u64 = 50;
        let locker = Locker::with_backend(backend(&servers.urls(), &prefix).await);
        for _ in 0..CYCLES {
            cycle(&locker, kind).await;
        }
        // The stragglers of each round finish in the background.
        locker.close().await;
        let calls = script_calls(&mut conns).await;
        println!("{kind}: script calls per instance for {CYCLES} cycles: {calls:?}");
        assert!(
            calls.iter().all(|c| *c == 2 * CYCLES),
            "{kind}: expected {} script calls (acquire, release) per instance, got {calls:?}",
            2 * CYCLES
        );
    }
}

async fn cycle(locker: &Locker, kind: &str) {
    if kind == "mutex" {
        let guard = locker.mutex("one-round").lock().await.unwrap();
        guard.release().await.unwrap();
    } else {
        let permit = locker.semaphore("one-round", 3).acquire(1).await.unwrap();
        permit.release().await.unwrap();
    }
}

/// P3's divergence path: with one instance's counter far ahead, the grants differ, the raise
/// runs on the instances that granted, and the token is above that counter; the next
/// acquisition proposes a token above it, so every instance (one of them restarted empty)
/// grants the same token again without a raise, and tokens keep increasing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_counter_ahead_is_raised_then_proposed() {
    let Some(mut servers) = Servers::start(3, &[]).await else {
        return;
    };
    let prefix = prefix();
    let name = "ahead";
    let high: u64 = 4_000_000_000_000_000;
    {
        let mut conns = connections(&servers, 1).await;
        let _: () = redis::cmd("SET")
            .arg(support::mutex_counter_key(&prefix, name))
            .arg(high)
            .query_async(&mut conns[0])
            .await
            .unwrap();
    }
    // Node 2 is down: the grant needs nodes 0 and 1, whose tokens differ.
    servers.kill(2);
    let locker = Locker::with_backend(backend(&servers.urls(), &prefix).await);
    let mut conns = connections(&servers, 2).await;
    let guard = locker.mutex(name).lock().await.unwrap();
    let first = guard.token();
    guard.release().await.unwrap();
    locker.close().await;
    let calls = script_calls(&mut conns).await;
    assert!(first.get() > high, "{first} not above the counter {high}");
    assert!(
        calls.iter().all(|c| *c == 3),
        "the raise did not run on the two granting nodes: {calls:?}"
    );

    servers.restart(2).await;
    let mut conns = connections(&servers, 3).await;
    for conn in conns.iter_mut() {
        reset_stats(conn).await;
    }
    let locker = Locker::with_backend(backend(&servers.urls(), &prefix).await);
    let mut last = first;
    for _ in 0..3 {
        let guard = locker.mutex(name).lock().await.unwrap();
        assert!(guard.token() > last, "{} not above {last}", guard.token());
        last = guard.token();
        guard.release().await.unwrap();
    }
    locker.close().await;
    let calls = script_calls(&mut conns).await;
    // The restarted instance lost its counter: the proposal (above the far-ahead counter of
    // the others) is more than a minute above its own next token, so it grants its own token
    // (see MAX_LEAD_US in common.lua). That costs one raise at most: a raise reaches it only
    // when it is among the first granting instances, and sets its counter to the others'.
    let raises: u64 = calls.iter().map(|c| c.saturating_sub(6)).sum();
    assert!(
        calls.iter().all(|c| (6..=7).contains(c)) && raises <= 2,
        "expected at most one raise once the proposal is above the counters: {calls:?}"
    );
}
