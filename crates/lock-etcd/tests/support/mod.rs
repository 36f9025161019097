//! A single-node etcd that one test owns (so nothing else proposes or holds leases on it):
//! started on free loopback ports, paused, killed and its data removed when dropped.

#![allow(dead_code)]

use lock_etcd::{Etcd, EtcdConfig, LeaseMode};
use lock_testkit::{ServerProcess, find_program, free_port, require_servers, wait_for_port};
use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A single-node etcd owned by one test; killed and its data removed when dropped.
pub struct Node {
    /// The etcd process (pause and resume it to stall the server).
    pub process: ServerProcess,
    port: u16,
    dir: PathBuf,
}

impl Drop for Node {
    fn drop(&mut self) {
        self.process.resume();
        self.process.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Node {
    /// Starts the node; `None` (after printing why) when etcd is not installed and servers
    /// are not required.
    pub async fn start(test: &str) -> Option<Node> {
        let Some(etcd) = find_program(&["etcd", "/usr/bin/etcd"]) else {
            let reason = "the etcd binary is not installed (Debian: etcd-server)";
            assert!(
                !require_servers(),
                "{test}: server required (LOCK_TEST_REQUIRE_SERVERS=1) but missing: {reason}"
            );
            println!("skipped {test}: {reason}");
            return None;
        };
        let run = ulid::Ulid::generate().to_string().to_lowercase();
        let dir = std::env::temp_dir().join(format!("lock-etcd-{test}-{run}"));
        std::fs::create_dir_all(&dir).unwrap();
        let (port, peer) = (free_port(), free_port());
        let args = vec![
            "--name=n0".to_owned(),
            format!("--data-dir={}", dir.join("n0").display()),
            format!("--listen-client-urls=http://127.0.0.1:{port}"),
            format!("--advertise-client-urls=http://127.0.0.1:{port}"),
            format!("--listen-peer-urls=http://127.0.0.1:{peer}"),
            format!("--initial-advertise-peer-urls=http://127.0.0.1:{peer}"),
            format!("--initial-cluster=n0=http://127.0.0.1:{peer}"),
        ];
        let process = ServerProcess::start(&etcd, args, Some(dir.join("n0.log"))).unwrap();
        let node = Node { process, port, dir };
        assert!(
            wait_for_port(port, Duration::from_secs(20)).await,
            "etcd did not listen on {port}"
        );
        Some(node)
    }

    /// The client endpoint.
    pub fn endpoint(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// A backend on this node with `lease` mode.
    pub async fn backend(&self, lease: LeaseMode) -> Etcd {
        self.backend_with(EtcdConfig::new([self.endpoint()]).with_lease(lease))
            .await
    }

    /// A backend on this node with `config`, once the node answers.
    pub async fn backend_with(&self, config: EtcdConfig) -> Etcd {
        for _ in 0..100 {
            if let Ok(etcd) = Etcd::connect(config.clone()).await {
                return etcd;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("etcd at {} never answered", self.endpoint());
    }

    /// `etcd_server_proposals_committed_total`, from the client URL's `/metrics`.
    pub async fn proposals(&self) -> u64 {
        let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", self.port))
            .await
            .unwrap();
        stream
            .write_all(b"GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
            .await
            .unwrap();
        let mut body = String::new();
        stream.read_to_string(&mut body).await.unwrap();
        let line = body
            .lines()
            .find(|l| l.starts_with("etcd_server_proposals_committed_total "))
            .expect("no etcd_server_proposals_committed_total in /metrics");
        let value: f64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let value = value as u64;
        value
    }

    /// Every lease the server knows (LeaseLeases): all of them are this test's.
    pub async fn lease_ids(&self) -> BTreeSet<i64> {
        let mut client = etcd_client::Client::connect([self.endpoint()], None)
            .await
            .unwrap();
        client
            .leases()
            .await
            .unwrap()
            .leases()
            .iter()
            .map(etcd_client::LeaseStatus::id)
            .collect()
    }

    /// How many leases the server knows.
    pub async fn leases(&self) -> usize {
        self.lease_ids().await.len()
    }
}
