//! Redis servers that a fault test owns: started on free loopback ports, killed, paused,
//! restarted.

#![allow(dead_code)]

use lock_core::{AcquireRequest, LeaseId, LockKey, LockKind, Locker, Metadata, Mode};
use lock_redis::{Redis, RedisConfig};
use lock_testkit::{ServerProcess, find_program, free_port, require_servers, wait_for_port};
use std::sync::Arc;
use std::time::Duration;

/// The round-trip timeout of fault-test clients: short, so a dead or paused node costs little.
pub const QUICK: Duration = Duration::from_millis(500);

/// Redis servers owned by one test, killed when dropped.
pub struct Servers {
    pub procs: Vec<ServerProcess>,
    pub ports: Vec<u16>,
}

impl Servers {
    /// Starts `n` throwaway servers without persistence; `None` (after saying why) when
    /// `redis-server` is missing and `LOCK_TEST_REQUIRE_SERVERS` is not `1`.
    ///
    /// # Panics
    ///
    /// When a server cannot be started, or `redis-server` is missing and servers are required.
    pub async fn start(n: usize, extra: &[&str]) -> Option<Servers> {
        let Some(program) = find_program(&["redis-server", "/usr/bin/redis-server"]) else {
            assert!(
                !require_servers(),
                "redis-server not found (LOCK_TEST_REQUIRE_SERVERS=1)"
            );
            println!("skipped: redis-server not found");
            return None;
        };
        let mut procs = Vec::new();
        let mut ports = Vec::new();
        for _ in 0..n {
            let port = free_port();
            let dir = std::env::temp_dir();
            let mut args: Vec<String> = [
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                dir.to_str().expect("utf-8 temp dir"),
            ]
            .iter()
            .map(|s| (*s).to_owned())
            .collect();
            args.extend(extra.iter().map(|s| (*s).to_owned()));
            procs.push(ServerProcess::start(&program, args, None).expect("start redis-server"));
            ports.push(port);
        }
        for port in &ports {
            assert!(
                wait_for_port(*port, Duration::from_secs(10)).await,
                "redis-server on port {port} did not start"
            );
        }
        Some(Servers { procs, ports })
    }

    pub fn url(&self, i: usize) -> String {
        format!("redis://127.0.0.1:{}", self.ports[i])
    }

    pub fn urls(&self) -> Vec<String> {
        (0..self.ports.len()).map(|i| self.url(i)).collect()
    }

    pub fn kill(&mut self, i: usize) {
        self.procs[i].kill();
    }

    /// Starts a killed server again (empty: no persistence) and waits for it.
    pub async fn restart(&mut self, i: usize) {
        self.procs[i].restart().expect("restart redis-server");
        assert!(
            wait_for_port(self.ports[i], Duration::from_secs(10)).await,
            "redis-server on port {} did not come back",
            self.ports[i]
        );
    }

    pub fn pause(&self, i: usize) {
        self.procs[i].pause();
    }

    pub fn resume(&self, i: usize) {
        self.procs[i].resume();
    }
}

/// A prefix unique to one test.
pub fn prefix() -> String {
    format!("faults-{}:", ulid::Ulid::generate())
}

/// A backend on `urls` with the quick timeout.
///
/// # Panics
///
/// When it cannot connect.
pub async fn backend(urls: &[String], prefix: &str) -> Redis {
    Redis::connect(
        RedisConfig::new(urls.iter().cloned())
            .prefix(prefix)
            .timeout(QUICK),
    )
    .await
    .expect("connect")
}

/// A locker on `urls` with the quick timeout.
pub async fn locker(urls: &[String], prefix: &str) -> Locker {
    Locker::with_backend(backend(urls, prefix).await)
}

/// The key of a mutex's token counter (see the crate's key layout).
pub fn mutex_counter_key(prefix: &str, name: &str) -> String {
    let hex: String = name.bytes().map(|b| format!("{b:02x}")).collect();
    format!("{prefix}{{{hex}}}:mutex:token")
}

/// A backend on `urls` with the default round-trip timeout (2 s), as in production.
///
/// # Panics
///
/// When it cannot connect.
pub async fn default_backend(urls: &[String], prefix: &str) -> Redis {
    Redis::connect(RedisConfig::new(urls.iter().cloned()).prefix(prefix))
        .await
        .expect("connect")
}

/// A TCP proxy that cuts the link at one precise moment: once armed with
/// [`trip_on`](TripProxy::trip_on), the first reply from the server that contains the pattern
/// is delivered, and from then on nothing the client sends reaches the server (on every
/// connection, old or new) until [`restore`](TripProxy::restore), which closes the cut
/// connections. This puts a fault between two rounds of one operation (say, after the grant
/// and before the raise) without depending on timing.
pub struct TripProxy {
    addr: std::net::SocketAddr,
    state: std::sync::Arc<TripState>,
    accept: tokio::task::JoinHandle<()>,
}

struct TripState {
    armed: std::sync::Mutex<Option<Vec<u8>>>,
    /// The generation of the link: odd while tripped.
    link: tokio::sync::watch::Sender<u64>,
}

impl TripState {
    fn tripped(&self) -> bool {
        *self.link.borrow() % 2 == 1
    }

    /// Trips when armed and `bytes` hold the pattern.
    fn check(&self, bytes: &[u8]) {
        let mut armed = self.armed.lock().unwrap();
        if let Some(pattern) = armed.as_ref()
            && bytes
                .windows(pattern.len())
                .any(|w| w == pattern.as_slice())
        {
            *armed = None;
            self.link.send_modify(|g| {
                if *g % 2 == 0 {
                    *g += 1;
                }
            });
        }
    }
}

impl TripProxy {
    /// Starts a proxy to `target` on a free loopback port.
    ///
    /// # Panics
    ///
    /// When no loopback port can be bound.
    pub async fn start(target: std::net::SocketAddr) -> TripProxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = std::sync::Arc::new(TripState {
            armed: std::sync::Mutex::new(None),
            link: tokio::sync::watch::channel(0).0,
        });
        let accept = tokio::spawn({
            let state = state.clone();
            async move {
                while let Ok((client, _)) = listener.accept().await {
                    tokio::spawn(trip_forward(client, target, state.clone()));
                }
            }
        });
        TripProxy {
            addr,
            state,
            accept,
        }
    }

    /// The URL clients use.
    pub fn url(&self) -> String {
        format!("redis://{}", self.addr)
    }

    /// Cuts the link right after the next server reply that contains `pattern`.
    pub fn trip_on(&self, pattern: &[u8]) {
        *self.state.armed.lock().unwrap() = Some(pattern.to_vec());
    }

    /// True once tripped (until restored).
    pub fn is_tripped(&self) -> bool {
        self.state.tripped()
    }

    /// Disarms, closes the cut connections and forwards again.
    pub fn restore(&self) {
        *self.state.armed.lock().unwrap() = None;
        self.state.link.send_modify(|g| {
            if *g % 2 == 1 {
                *g += 1;
            }
        });
    }
}

impl Drop for TripProxy {
    fn drop(&mut self) {
        self.accept.abort();
        self.restore();
    }
}

async fn trip_forward(
    client: tokio::net::TcpStream,
    target: std::net::SocketAddr,
    state: std::sync::Arc<TripState>,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let Ok(server) = tokio::net::TcpStream::connect(target).await else {
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    let up = async {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = client_read.read(&mut buf).await?;
            if n == 0 {
                return Ok::<_, std::io::Error>(());
            }
            if state.tripped() {
                // Held back: wait for the restore, then close this connection.
                let mut link = state.link.subscribe();
                let _ = link.wait_for(|g| g % 2 == 0).await;
                return Ok(());
            }
            server_write.write_all(&buf[..n]).await?;
        }
    };
    let down = async {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = server_read.read(&mut buf).await?;
            if n == 0 {
                return Ok::<_, std::io::Error>(());
            }
            // Trip before the client sees the reply, so that its next request is held.
            state.check(&buf[..n]);
            client_write.write_all(&buf[..n]).await?;
        }
    };
    tokio::select! {
        _ = up => {}
        _ = down => {}
    }
}

/// An exclusive request on the mutex `name` by `owner`.
pub fn request(name: &str, owner: &str, lease: LeaseId, ttl: Duration) -> AcquireRequest {
    AcquireRequest::new(
        LockKey::new(name, LockKind::Mutex).unwrap(),
        lease,
        Arc::from(owner),
        Mode::Exclusive,
        1,
        1,
        ttl,
        Arc::new(Metadata::new()),
    )
}

/// `INFO commandstats` as command -> (calls, usec), not counting the failed and rejected calls
/// (`NOSCRIPT`, before the client loads a script).
pub async fn commandstats(
    conn: &mut redis::aio::MultiplexedConnection,
) -> std::collections::HashMap<String, (u64, u64)> {
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(conn)
        .await
        .unwrap();
    let mut out = std::collections::HashMap::new();
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
        let calls = field("calls").saturating_sub(field("failed_calls") + field("rejected_calls"));
        out.insert(name.to_owned(), (calls, field("usec")));
    }
    out
}

/// `CONFIG RESETSTAT`: only on an instance the test owns.
pub async fn reset_stats(conn: &mut redis::aio::MultiplexedConnection) {
    let _: () = redis::cmd("CONFIG")
        .arg("RESETSTAT")
        .query_async(conn)
        .await
        .unwrap();
}
