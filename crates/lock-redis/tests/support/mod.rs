//! Redis servers that a fault test owns: started on free loopback ports, killed, paused,
//! restarted.

#![allow(dead_code)]

use lock_core::Locker;
use lock_redis::{Redis, RedisConfig};
use lock_testkit::{ServerProcess, find_program, free_port, require_servers, wait_for_port};
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
