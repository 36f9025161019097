//! The server's work per lock operation, counted with `INFO commandstats` on a private instance
//! (so `CONFIG RESETSTAT` disturbs nobody): an uncontended mutex cycle is as close to
//! `SET NX PX` + compare-and-delete as fencing tokens allow (P2).

mod support;

use lock_core::Locker;
use std::collections::HashMap;
use support::{Servers, backend, prefix};

/// `INFO commandstats` as command -> (calls, usec).
async fn commandstats(conn: &mut redis::aio::MultiplexedConnection) -> HashMap<String, (u64, u64)> {
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(conn)
        .await
        .unwrap();
    let mut out = HashMap::new();
    for line in info.lines() {
        let Some((name, fields)) = line
            .strip_prefix("cmdstat_")
            .and_then(|l| l.split_once(':'))
        else {
            continue;
        };
        let field = |key: &str| -> u64 {
            fields
                .split(',')
                .find_map(|f| f.strip_prefix(key)?.strip_prefix('='))
                .and_then(|v| v.parse().ok())
                .unwrap_or(0)
        };
        out.insert(name.to_owned(), (field("calls"), field("usec")));
    }
    out
}

async fn reset(conn: &mut redis::aio::MultiplexedConnection) {
    let _: () = redis::cmd("CONFIG")
        .arg("RESETSTAT")
        .query_async(conn)
        .await
        .unwrap();
}

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
    reset(&mut conn).await;
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
    reset(conn).await;
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
