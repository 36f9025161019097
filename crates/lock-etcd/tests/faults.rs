//! Fault tests: each starts its own 3-node etcd cluster on free loopback ports (and temporary
//! data directories), then kills the leader, kills a majority, or cuts a client off through a
//! TCP proxy.
//!
//! Needs the `etcd` binary (Debian: `etcd-server`). Without it a test is skipped with a printed
//! line, or fails when `LOCK_TEST_REQUIRE_SERVERS=1`.
//!
//! With `LOCK_TEST_ETCD_FAULTS_TLS` naming a folder of certificates (`ca.pem`, `server.pem`,
//! `server-key.pem`, `client.pem`, `client-key.pem`, as `make_test_certs` of
//! `scripts/servers.sh` makes them), every cluster runs with client and peer TLS and
//! client-certificate authentication, and every client connects over TLS.

use lock_core::{Error, Locker, RetryPolicy};
use lock_etcd::{Etcd, EtcdConfig};
use lock_testkit::{
    FencedRegister, SafetyConfig, ServerProcess, TcpProxy, eventually, find_program, free_port,
    require_servers, run_safety_checker, wait_for_port,
};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex as StdMutex};
use std::time::Duration;
use tokio::time::Instant;

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

/// Errors are retried for as long as a wait lasts (a leader election is not a reason to give
/// up).
fn patient() -> RetryPolicy {
    RetryPolicy {
        max_attempts: 0,
        ..RetryPolicy::default()
    }
}

/// The certificates folder when the clusters run with TLS.
fn tls_dir() -> Option<PathBuf> {
    std::env::var_os("LOCK_TEST_ETCD_FAULTS_TLS").map(PathBuf::from)
}

fn scheme() -> &'static str {
    if tls_dir().is_some() { "https" } else { "http" }
}

/// The server's TLS flags, when the clusters run with TLS.
fn tls_args() -> Vec<String> {
    let Some(dir) = tls_dir() else {
        return Vec::new();
    };
    let file = |name: &str| dir.join(name).display().to_string();
    vec![
        format!("--cert-file={}", file("server.pem")),
        format!("--key-file={}", file("server-key.pem")),
        "--client-cert-auth".to_owned(),
        format!("--trusted-ca-file={}", file("ca.pem")),
        format!("--peer-cert-file={}", file("server.pem")),
        format!("--peer-key-file={}", file("server-key.pem")),
        "--peer-client-cert-auth".to_owned(),
        format!("--peer-trusted-ca-file={}", file("ca.pem")),
    ]
}

/// The raw etcd client's options (TLS when the clusters run with it).
fn client_options() -> Option<etcd_client::ConnectOptions> {
    let dir = tls_dir()?;
    let read = |name: &str| std::fs::read(dir.join(name)).unwrap();
    let tls = etcd_client::TlsOptions::new()
        .ca_certificate(etcd_client::Certificate::from_pem(read("ca.pem")))
        .identity(etcd_client::Identity::from_pem(
            read("client.pem"),
            read("client-key.pem"),
        ));
    Some(etcd_client::ConnectOptions::new().with_tls(tls))
}

/// One etcd member.
struct Node {
    process: ServerProcess,
    client_port: u16,
}

/// A 3-node cluster owned by one test; killed and its data removed when dropped.
struct Cluster {
    nodes: Vec<Node>,
    dir: PathBuf,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            node.process.kill();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Cluster {
    /// Starts the cluster and waits until it has a leader and accepts writes; `None` (after
    /// printing why) when etcd is not installed and servers are not required.
    async fn start(test: &str) -> Option<Cluster> {
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
        let ports: Vec<(u16, u16)> = (0..3).map(|_| (free_port(), free_port())).collect();
        let initial_cluster = ports
            .iter()
            .enumerate()
            .map(|(i, (_, peer))| format!("n{i}={}://127.0.0.1:{peer}", scheme()))
            .collect::<Vec<_>>()
            .join(",");
        let mut cluster = Cluster {
            nodes: Vec::new(),
            dir: dir.clone(),
        };
        for (i, (client, peer)) in ports.iter().enumerate() {
            let scheme = scheme();
            let mut args = vec![
                format!("--name=n{i}"),
                format!("--data-dir={}", dir.join(format!("n{i}")).display()),
                format!("--listen-client-urls={scheme}://127.0.0.1:{client}"),
                format!("--advertise-client-urls={scheme}://127.0.0.1:{client}"),
                format!("--listen-peer-urls={scheme}://127.0.0.1:{peer}"),
                format!("--initial-advertise-peer-urls={scheme}://127.0.0.1:{peer}"),
                format!("--initial-cluster={initial_cluster}"),
                "--initial-cluster-state=new".to_owned(),
                format!("--initial-cluster-token={test}-{run}"),
            ];
            args.extend(tls_args());
            let log = dir.join(format!("n{i}.log"));
            let process = ServerProcess::start(&etcd, args, Some(log)).unwrap();
            cluster.nodes.push(Node {
                process,
                client_port: *client,
            });
        }
        for node in &cluster.nodes {
            assert!(
                wait_for_port(node.client_port, secs(20)).await,
                "etcd did not listen on {}",
                node.client_port
            );
        }
        cluster.wait_for_leader(secs(30)).await;
        Some(cluster)
    }

    fn endpoint(&self, i: usize) -> String {
        format!("{}://127.0.0.1:{}", scheme(), self.nodes[i].client_port)
    }

    fn endpoints(&self) -> Vec<String> {
        (0..self.nodes.len()).map(|i| self.endpoint(i)).collect()
    }

    fn addr(&self, i: usize) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.nodes[i].client_port))
    }

    /// The index of the node that is leader, asked through the maintenance status API of each
    /// running node.
    async fn leader(&mut self) -> Option<usize> {
        for i in 0..self.nodes.len() {
            if !self.nodes[i].process.is_running() {
                continue;
            }
            let Ok(Ok(mut client)) = tokio::time::timeout(
                secs(2),
                etcd_client::Client::connect([self.endpoint(i)], client_options()),
            )
            .await
            else {
                continue;
            };
            let Ok(Ok(status)) = tokio::time::timeout(secs(2), client.status()).await else {
                continue;
            };
            let me = status.header().map(etcd_client::ResponseHeader::member_id);
            if status.leader() != 0 && me == Some(status.leader()) {
                return Some(i);
            }
        }
        None
    }

    /// Waits until a leader is elected and a write through every running node succeeds.
    async fn wait_for_leader(&mut self, within: Duration) -> usize {
        let deadline = Instant::now() + within;
        loop {
            if let Some(leader) = self.leader().await {
                let mut endpoints = Vec::new();
                for i in 0..self.nodes.len() {
                    if self.nodes[i].process.is_running() {
                        endpoints.push(self.endpoint(i));
                    }
                }
                let written = async {
                    let mut client = etcd_client::Client::connect(&endpoints, client_options())
                        .await
                        .ok()?;
                    client.put("/lock-fault-probe", "x", None).await.ok()
                };
                if tokio::time::timeout(secs(5), written)
                    .await
                    .ok()
                    .flatten()
                    .is_some()
                {
                    return leader;
                }
            }
            assert!(
                Instant::now() < deadline,
                "no etcd leader within {within:?}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    async fn locker(&self, endpoints: Vec<String>) -> Locker {
        let mut config = EtcdConfig::new(endpoints).with_request_timeout(secs(2));
        if let Some(dir) = tls_dir() {
            config = config
                .with_ca_cert(dir.join("ca.pem"))
                .with_client_cert(dir.join("client.pem"), dir.join("client-key.pem"));
        }
        Locker::with_backend(Etcd::connect(config).await.unwrap())
    }
}

/// The leader dies while a lock is held: the holder's auto-extension rides out the election
/// and it keeps the lock; nobody else gets it meanwhile.
#[tokio::test]
async fn leader_killed_while_held_holder_keeps_lock() {
    let Some(mut cluster) = Cluster::start("held").await else {
        return;
    };
    let holder = cluster.locker(cluster.endpoints()).await;
    let other = cluster.locker(cluster.endpoints()).await;
    let guard = holder
        .mutex("job")
        .ttl(secs(6))
        .auto_extend(true)
        .retry(patient())
        .lock()
        .await
        .unwrap();
    let token = guard.token();

    let leader = cluster.wait_for_leader(secs(10)).await;
    cluster.nodes[leader].process.kill();
    let new_leader = cluster.wait_for_leader(secs(30)).await;
    assert_ne!(new_leader, leader);

    // Three TTLs after the kill the holder still holds, and nobody else could lock.
    let until = Instant::now() + secs(18);
    while Instant::now() < until {
        assert!(
            !guard.is_lost(),
            "the holder lost its lock to a leader election"
        );
        if let Ok(Some(stolen)) = other.mutex("job").try_lock().await {
            panic!("another client got the held lock: {stolen:?}");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let holders = other.inspect("job").await.unwrap();
    assert_eq!(holders.len(), 1);
    assert_eq!(holders[0].token, token);
    guard.release().await.unwrap();
}

/// The leader dies while three clients wait: each is still granted, in the order it queued,
/// with increasing tokens.
#[tokio::test]
async fn leader_killed_while_others_wait_they_are_granted_in_order() {
    let Some(mut cluster) = Cluster::start("waiting").await else {
        return;
    };
    let holder = cluster.locker(cluster.endpoints()).await;
    let guard = holder
        .mutex("queue")
        .ttl(secs(6))
        .auto_extend(true)
        .retry(patient())
        .lock()
        .await
        .unwrap();
    let first_token = guard.token();

    let order = Arc::new(StdMutex::new(Vec::new()));
    let mut waiters = Vec::new();
    for i in 0..3 {
        let locker = cluster.locker(cluster.endpoints()).await;
        let order = Arc::clone(&order);
        waiters.push(tokio::spawn(async move {
            let guard = locker
                .mutex("queue")
                .ttl(secs(6))
                .auto_extend(true)
                .retry(patient())
                .lock_timeout(secs(90))
                .lock()
                .await
                .unwrap();
            order.lock().unwrap().push((i, guard.token()));
            tokio::time::sleep(Duration::from_millis(300)).await;
            guard.release().await.unwrap();
        }));
        // Let this waiter's claim reach the queue before the next one queues.
        tokio::time::sleep(Duration::from_millis(700)).await;
    }

    let leader = cluster.wait_for_leader(secs(10)).await;
    cluster.nodes[leader].process.kill();
    cluster.wait_for_leader(secs(30)).await;
    tokio::time::sleep(secs(2)).await;
    assert!(order.lock().unwrap().is_empty(), "granted while held");
    guard.release().await.unwrap();

    for waiter in waiters {
        tokio::time::timeout(secs(90), waiter)
            .await
            .expect("a waiter was never granted")
            .unwrap();
    }
    let order = order.lock().unwrap().clone();
    let queued: Vec<usize> = order.iter().map(|(i, _)| *i).collect();
    assert_eq!(
        queued,
        vec![0, 1, 2],
        "not granted in queue order: {order:?}"
    );
    let mut last = first_token;
    for (_, token) in order {
        assert!(token > last, "token {token} not above {last}");
        last = token;
    }
}

/// Two of three nodes die: operations fail with `ProviderUnavailable` within a bounded time
/// (no hang), and work again once a node returns.
#[tokio::test]
async fn majority_killed_fails_fast_and_recovers() {
    let Some(mut cluster) = Cluster::start("quorum").await else {
        return;
    };
    let locker = cluster.locker(cluster.endpoints()).await;
    let warm = locker.mutex("q").try_lock().await.unwrap().unwrap();
    warm.release().await.unwrap();

    cluster.nodes[0].process.kill();
    cluster.nodes[1].process.kill();
    let bound = secs(15);

    let started = Instant::now();
    match tokio::time::timeout(bound, locker.mutex("q").try_lock()).await {
        Ok(Err(Error::ProviderUnavailable { backend, .. })) => assert_eq!(backend, "etcd"),
        Ok(other) => panic!("try_lock without quorum: expected ProviderUnavailable, got {other:?}"),
        Err(_) => panic!("try_lock without quorum hung for {bound:?}"),
    }
    match tokio::time::timeout(bound, locker.inspect("q")).await {
        Ok(Err(Error::ProviderUnavailable { .. })) => {}
        Ok(other) => panic!("inspect without quorum: expected ProviderUnavailable, got {other:?}"),
        Err(_) => panic!("inspect without quorum hung for {bound:?}"),
    }
    let blocking_mutex = locker.mutex("q").lock_timeout(secs(60)).retry(RetryPolicy {
        max_attempts: 2,
        ..RetryPolicy::default()
    });
    match tokio::time::timeout(bound * 2, blocking_mutex.lock()).await {
        Ok(Err(Error::ProviderUnavailable { .. })) => {}
        Ok(other) => panic!("lock without quorum: expected ProviderUnavailable, got {other:?}"),
        Err(_) => panic!("lock without quorum hung"),
    }
    println!("failures reported within {:?}", started.elapsed());

    cluster.nodes[1].process.restart().unwrap();
    let mutex = locker.mutex("q");
    assert!(
        eventually(secs(60), || async {
            match mutex.try_lock().await {
                Ok(Some(guard)) => guard.release().await.is_ok(),
                _ => false,
            }
        })
        .await,
        "no recovery after a node returned"
    );
}

/// A holder cut off from every node is declared lost before its lease can expire; the next
/// holder gets a larger token and the cut-off holder's late write is rejected by the fenced
/// register.
#[tokio::test]
async fn cut_off_holder_is_lost_before_expiry_and_fenced() {
    let Some(cluster) = Cluster::start("cutoff").await else {
        return;
    };
    let mut proxies = Vec::new();
    for i in 0..3 {
        proxies.push(TcpProxy::start(cluster.addr(i)).await.unwrap());
    }
    let through_proxies = proxies
        .iter()
        .map(|p| format!("{}://{}", scheme(), p.addr()))
        .collect();
    let holder = cluster.locker(through_proxies).await;
    let other = cluster.locker(cluster.endpoints()).await;

    let lost_at = Arc::new(StdMutex::new(None));
    let on_lost = Arc::clone(&lost_at);
    let ttl = secs(4);
    let guard = holder
        .mutex("fenced")
        .ttl(ttl)
        .auto_extend(true)
        .on_lost(move |_| *on_lost.lock().unwrap() = Some(Instant::now()))
        .lock()
        .await
        .unwrap();
    let register = FencedRegister::new();
    register.write(guard.token(), 1).unwrap();
    tokio::time::sleep(secs(2)).await;
    assert!(!guard.is_lost());

    for proxy in &proxies {
        proxy.cut();
    }
    let cut = Instant::now();
    let next = tokio::spawn(async move {
        let guard = other
            .mutex("fenced")
            .lock_timeout(secs(60))
            .retry(patient())
            .lock()
            .await
            .unwrap();
        (Instant::now(), guard)
    });
    tokio::time::timeout(ttl * 2, guard.lost())
        .await
        .expect("the cut-off holder was never declared lost");
    let lost = lost_at.lock().unwrap().expect("on_lost did not run");
    // The last confirmed extension was sent before the cut, so the server keeps the lease at
    // least `ttl` after that: being lost within `ttl` of the cut is before the lease expired.
    assert!(
        lost.duration_since(cut) < ttl,
        "declared lost {:?} after the cut, past the TTL",
        lost.duration_since(cut)
    );

    let (granted_at, fresh) = tokio::time::timeout(secs(60), next)
        .await
        .expect("nobody got the lock after the holder was cut off")
        .unwrap();
    assert!(
        granted_at > lost,
        "the next holder was granted before the old one was lost"
    );
    assert!(fresh.token() > guard.token());
    register.write(fresh.token(), 2).unwrap();
    let stale = register.write(guard.token(), 3);
    assert!(stale.is_err(), "the cut-off holder's write was accepted");
    assert_eq!(register.read(), 2);
    fresh.release().await.unwrap();
    for proxy in &proxies {
        proxy.restore();
    }
    assert!(matches!(guard.release().await, Err(Error::Lost { .. })));
}

/// The fenced-register safety checker while the leader is killed under load: no overlaps.
#[tokio::test]
async fn safety_checker_with_leader_killed_reports_no_overlap() {
    let Some(mut cluster) = Cluster::start("safety").await else {
        return;
    };
    let mut handles = Vec::new();
    for _ in 0..2 {
        let locker = cluster.locker(cluster.endpoints()).await;
        for _ in 0..2 {
            handles.push(
                locker
                    .mutex("checked")
                    .ttl(secs(4))
                    .auto_extend(true)
                    .retry(patient()),
            );
        }
    }
    let run = tokio::spawn(run_safety_checker(
        handles,
        SafetyConfig {
            grants_per_worker: 15,
            hold: Duration::from_millis(20),
            max_duration: secs(90),
        },
    ));
    tokio::time::sleep(secs(1)).await;
    let leader = cluster.wait_for_leader(secs(10)).await;
    cluster.nodes[leader].process.kill();
    let report = run.await.unwrap();
    println!("safety checker with the leader killed: {report}");
    assert_eq!(report.overlaps, 0, "{report}");
    assert!(report.grants >= 30, "too few grants: {report}");
    assert_eq!(report.final_value, report.writes_accepted, "{report}");
}
