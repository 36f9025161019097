//! The cost of an uncontended cycle, counted (not timed): round trips through a counting TCP
//! proxy, and WAL flushes from `pg_stat_wal`. Targets (review designs D1-D3): an advisory
//! `lock()` + `release()` takes at most 2 round trips and 1 WAL flush.

mod common;

use lock_core::Locker;
use lock_postgres::{Postgres, PostgresMode};
use sqlx::Connection;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A loopback proxy that counts round trips: client-to-server messages that follow a
/// server-to-client message (or start a connection), over all its connections.
struct Counter {
    addr: std::net::SocketAddr,
    turns: Arc<AtomicU64>,
}

impl Counter {
    async fn start(target: std::net::SocketAddr) -> Counter {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let turns = Arc::new(AtomicU64::new(0));
        let counted = Arc::clone(&turns);
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = TcpStream::connect(target).await else {
                    continue;
                };
                let _ = client.set_nodelay(true);
                let _ = server.set_nodelay(true);
                let (mut cr, mut cw) = client.into_split();
                let (mut sr, mut sw) = server.into_split();
                // True while the last bytes went from the server to the client.
                let answered = Arc::new(AtomicBool::new(true));
                let (up, turns) = (Arc::clone(&answered), Arc::clone(&counted));
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 65536];
                    while let Ok(n) = cr.read(&mut buf).await {
                        if n == 0 {
                            break;
                        }
                        if up.swap(false, Ordering::SeqCst) {
                            turns.fetch_add(1, Ordering::SeqCst);
                        }
                        if sw.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                });
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 65536];
                    while let Ok(n) = sr.read(&mut buf).await {
                        if n == 0 {
                            break;
                        }
                        answered.store(true, Ordering::SeqCst);
                        if cw.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                });
            }
        });
        Counter { addr, turns }
    }

    fn turns(&self) -> u64 {
        self.turns.load(Ordering::SeqCst)
    }
}

/// `url` with its host and port replaced by `addr`.
fn through(url: &str, addr: std::net::SocketAddr) -> String {
    let (scheme, rest) = url.split_once("://").unwrap();
    let (auth, rest) = rest.split_once('@').map_or(("", rest), |(a, r)| (a, r));
    let path = rest.find('/').map_or("", |i| &rest[i..]);
    let at = if auth.is_empty() { "" } else { "@" };
    format!("{scheme}://{auth}{at}{addr}{path}")
}

fn server_addr(url: &str) -> std::net::SocketAddr {
    let rest = url.split_once("://").unwrap().1;
    let rest = rest.split_once('@').map_or(rest, |(_, r)| r);
    let host_port = rest.split('/').next().unwrap();
    let host_port = host_port.replace("localhost", "127.0.0.1");
    host_port.parse().expect("a host:port server url")
}

async fn wal_syncs(url: &str) -> i64 {
    let mut conn = sqlx::PgConnection::connect(url).await.unwrap();
    let (syncs,): (i64,) = sqlx::query_as("SELECT wal_sync FROM pg_stat_wal")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    syncs
}

const CYCLES: u64 = 100;

/// A locker whose calls never time out here: a call given up (on a loaded machine, where a
/// WAL flush can take a second) would end its session, and the new session's set-up would be
/// counted.
fn patient(backend: Postgres) -> Locker {
    Locker::builder(backend)
        .request_timeout(Duration::from_secs(120))
        .build()
        .unwrap()
}

async fn cycle(locker: &Locker, name: &str) {
    let guard = locker.mutex(name).lock().await.unwrap();
    guard.release().await.unwrap();
}

/// Advisory mode, durable (the default): one uncontended `lock()` + `release()` is at most 2
/// round trips (the acquire and the release statements, each on the lease's own session) and
/// at most 1 WAL flush (the grant's commit; the release commits asynchronously).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uncontended_cycles_are_two_round_trips_and_one_flush() {
    let Some(url) = common::url_or_skip() else {
        return;
    };
    let counter = Counter::start(server_addr(&url)).await;
    let mut config = common::config(&through(&url, counter.addr), PostgresMode::Advisory);
    config.table_prefix = "lock_cost_".to_owned();
    let backend = Postgres::connect(config).await.expect("connect");
    let locker = patient(backend);
    let name = format!("cost-{}", ulid::Ulid::generate());
    // Warm up: the session is opened and its statements prepared.
    for _ in 0..5 {
        cycle(&locker, &name).await;
    }
    // Let the warm-up's statistics reach pg_stat_wal (backends report at most once a second).
    tokio::time::sleep(Duration::from_millis(1500)).await;
    cycle(&locker, &name).await;
    let (turns, syncs) = (counter.turns(), wal_syncs(&url).await);
    for _ in 0..CYCLES {
        cycle(&locker, &name).await;
    }
    let turns = counter.turns() - turns;
    locker.close().await;
    // The sessions' exits flushed their statistics.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let syncs = u64::try_from(wal_syncs(&url).await - syncs).unwrap();
    println!(
        "advisory: {turns} round trips and {syncs} WAL flushes in {CYCLES} cycles \
         ({:.2} and {:.2} per cycle)",
        turns as f64 / CYCLES as f64,
        syncs as f64 / CYCLES as f64
    );
    assert!(
        turns <= 2 * CYCLES,
        "{turns} round trips in {CYCLES} cycles"
    );
    // The WAL writer also flushes the asynchronous releases in the background (at most every
    // 200 ms, or per full WAL page): a small allowance on top of one flush per cycle.
    assert!(
        syncs <= CYCLES + CYCLES / 5 + 10,
        "{syncs} WAL flushes in {CYCLES} cycles"
    );
    lease_operations_are_two_round_trips(&url).await;
}

/// Counts the round trips of `CYCLES` uncontended lease-mode cycles through `url` (LISTEN
/// straight to `direct`).
async fn lease_round_trips(url: &str, direct: &str) -> u64 {
    let counter = Counter::start(server_addr(url)).await;
    let mut config = common::config(&through(url, counter.addr), PostgresMode::Lease);
    config.table_prefix = "lock_cost_".to_owned();
    config.listen_url = Some(direct.to_owned());
    let backend = Postgres::connect(config).await.expect("connect");
    let locker = patient(backend);
    let name = format!("cost-lease-{}", ulid::Ulid::generate());
    for _ in 0..5 {
        cycle(&locker, &name).await;
    }
    let turns = counter.turns();
    for _ in 0..CYCLES {
        cycle(&locker, &name).await;
    }
    let turns = counter.turns() - turns;
    locker.close().await;
    turns
}

/// Lease mode: each operation is one simple query (plus sqlx's ping when the connection goes
/// back to the pool), so at most 2 round trips per operation, directly and through PgBouncer
/// (the targets: 2 direct, 4 through PgBouncer). Run after the advisory count, in the
/// same test, so that its WAL flushes are not counted there. A few turns of slack: the pool's
/// background ping of the last connection returned before the count starts.
async fn lease_operations_are_two_round_trips(url: &str) {
    let url = url.to_owned();
    let direct = lease_round_trips(&url, &url).await;
    println!(
        "lease, direct: {direct} round trips in {CYCLES} cycles ({:.2} per operation)",
        direct as f64 / (2 * CYCLES) as f64
    );
    assert!(
        direct <= 2 * 2 * CYCLES + 5,
        "{direct} round trips in {CYCLES} cycles"
    );
    match std::env::var("LOCK_TEST_PGBOUNCER_URL") {
        Ok(pooled) if !pooled.trim().is_empty() => {
            let bounced = lease_round_trips(&pooled, &url).await;
            println!(
                "lease, through PgBouncer: {bounced} round trips in {CYCLES} cycles \
                 ({:.2} per operation)",
                bounced as f64 / (2 * CYCLES) as f64
            );
            assert!(
                bounced <= 2 * 2 * CYCLES + 5,
                "{bounced} round trips in {CYCLES} cycles"
            );
        }
        _ if lock_testkit::require_servers() => panic!("LOCK_TEST_PGBOUNCER_URL is not set"),
        _ => println!("PgBouncer not counted: LOCK_TEST_PGBOUNCER_URL is not set"),
    }
}
