//! `list` on etcd, on a single-node etcd of its own behind a byte-counting proxy: one page
//! reads a bounded number of keys however many names are held under the prefix (counted as the
//! bytes etcd sends), a listing reports every held name once and released ones never (in both
//! lease modes), and a cluster that does not answer is an error within the request timeout.
//!
//! Needs the `etcd` binary (Debian: `etcd-server`). Without it a test is skipped with a printed
//! line, or fails when `LOCK_TEST_REQUIRE_SERVERS=1`.

mod support;

use futures_util::future::join_all;
use lock_core::{Error, ListRequest, LockInfo, Locker};
use lock_etcd::{Etcd, EtcdConfig, LeaseMode};
use lock_testkit::{TcpProxy, list_pages};
use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use support::Node;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The node's client address.
fn addr(node: &Node) -> std::net::SocketAddr {
    node.endpoint().parse().expect("a loopback address")
}

/// A backend on `node` through `endpoint` (the node's, or a proxy's), with a 1 s request
/// timeout.
async fn backend(node: &Node, endpoint: String, lease: LeaseMode) -> Etcd {
    let mut config = EtcdConfig::new([endpoint])
        .with_prefix("/list-test/")
        .with_lease(lease);
    config.request_timeout = Duration::from_secs(1);
    config.connect_timeout = Duration::from_secs(1);
    node.backend_with(config).await
}

/// A loopback proxy that counts the bytes the server sends.
struct Counter {
    addr: std::net::SocketAddr,
    down: Arc<AtomicU64>,
}

impl Counter {
    async fn start(target: std::net::SocketAddr) -> Counter {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let down = Arc::new(AtomicU64::new(0));
        let counted = Arc::clone(&down);
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = tokio::net::TcpStream::connect(target).await else {
                    continue;
                };
                let _ = client.set_nodelay(true);
                let _ = server.set_nodelay(true);
                let (mut cr, mut cw) = client.into_split();
                let (mut sr, mut sw) = server.into_split();
                tokio::spawn(async move {
                    let _ = tokio::io::copy(&mut cr, &mut sw).await;
                });
                let counted = Arc::clone(&counted);
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 65536];
                    while let Ok(n) = sr.read(&mut buf).await {
                        if n == 0 {
                            break;
                        }
                        counted.fetch_add(n as u64, Ordering::SeqCst);
                        if cw.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                });
            }
        });
        Counter { addr, down }
    }

    fn bytes(&self) -> u64 {
        self.down.load(Ordering::SeqCst)
    }
}

/// The names of a listing, each name counted once per page that holds it.
fn reports(pages: &[Vec<LockInfo>]) -> Vec<String> {
    pages
        .iter()
        .flat_map(|page| page.iter().map(|l| l.name.clone()).collect::<BTreeSet<_>>())
        .collect()
}

/// 1000 held names and 200 idle ones under the prefix: a page of 10 reads about 100 keys (a
/// few kB from etcd, where the whole range is about 100 kB), and answers quickly; the whole
/// listing reports each held name exactly once, in byte order, and no idle one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_page_reads_a_bounded_number_of_keys() {
    let Some(node) = Node::start("list-bounded").await else {
        return;
    };
    let counter = Counter::start(addr(&node)).await;
    let locker =
        Locker::with_backend(backend(&node, counter.addr.to_string(), LeaseMode::Session).await);
    for i in 0..200 {
        let guard = locker
            .mutex(format!("jobs/idle-{i:03}"))
            .lock()
            .await
            .unwrap();
        guard.release().await.unwrap();
    }
    let mut guards = Vec::new();
    let mut held = Vec::new();
    let locker = &locker;
    for chunk in 0..20 {
        let names: Vec<String> = (0..50)
            .map(|i| format!("jobs/held-{:04}", chunk * 50 + i))
            .collect();
        let granted = join_all(
            names
                .iter()
                .map(|name| async move { locker.mutex(name).lock().await }),
        )
        .await;
        for guard in granted {
            guards.push(guard.unwrap());
        }
        held.extend(names);
    }

    let before = counter.bytes();
    let started = Instant::now();
    let page = locker
        .list(&ListRequest::new("jobs/").limit(10))
        .await
        .unwrap();
    let took = started.elapsed();
    let sent = counter.bytes() - before;
    println!("one page of 10 over 1000 held names: {took:?}, {sent} bytes from etcd");
    assert_eq!(reports(&[page.locks]), held[..10].to_vec());
    assert!(page.next.is_some());
    assert!(took < Duration::from_secs(2), "one page took {took:?}");
    assert!(sent < 40_000, "{sent} bytes from etcd for one page of 10");

    let before = counter.bytes();
    let all = list_pages(locker, "jobs/", 10).await;
    let whole = counter.bytes() - before;
    println!("the whole listing: {} pages, {whole} bytes", all.len());
    assert_eq!(reports(&all), held, "every held name once, in order");
    assert_eq!(reports(&list_pages(locker, "jobs/", 1000).await), held);
    assert_eq!(
        reports(&list_pages(locker, "jobs/held-0999", 1).await),
        held[999..].to_vec()
    );
    assert!(reports(&list_pages(locker, "jobs/idle", 7).await).is_empty());
    for guard in guards {
        guard.release().await.unwrap();
    }
    assert!(reports(&list_pages(locker, "jobs/", 10).await).is_empty());
    locker.close().await;
}

/// Both lease modes: every kind is listed with all its holders as `inspect` reports them, and
/// a released lock is not listed (session mode skips the conformance property that lets a
/// leaked lease expire, so the release is checked here).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_lease_modes_list_what_inspect_reports() {
    let Some(node) = Node::start("list-modes").await else {
        return;
    };
    for mode in [LeaseMode::Pool, LeaseMode::Session] {
        let locker = Locker::with_backend(backend(&node, node.endpoint(), mode).await);
        let prefix = format!("{mode:?}/");
        let name = |tag: &str| format!("{prefix}{tag}");
        let mut guards = vec![
            locker.mutex(name("m")).lock().await.unwrap(),
            locker.rw_mutex(name("rw")).read().await.unwrap(),
            locker.rw_mutex(name("rw")).read().await.unwrap(),
            locker.semaphore(name("s"), 4).acquire(3).await.unwrap(),
            locker.semaphore(name("m"), 2).acquire(1).await.unwrap(),
        ];
        let released = locker.mutex(name("released")).lock().await.unwrap();
        released.release().await.unwrap();
        let all = list_pages(&locker, &prefix, 1).await;
        assert_eq!(
            reports(&all),
            vec![name("m"), name("rw"), name("s")],
            "{mode:?}"
        );
        for page in all.iter().filter(|page| !page.is_empty()) {
            let expected = locker.inspect(&page[0].name).await.unwrap();
            let fixed = |l: &LockInfo| (l.name.clone(), l.kind, l.token, l.mode, l.permits);
            assert_eq!(
                page.iter().map(fixed).collect::<Vec<_>>(),
                expected.iter().map(fixed).collect::<Vec<_>>(),
                "{mode:?}"
            );
        }
        for guard in guards.drain(..) {
            guard.release().await.unwrap();
        }
        assert!(
            reports(&list_pages(&locker, &prefix, 1).await).is_empty(),
            "{mode:?}"
        );
        locker.close().await;
    }
}

/// A cluster that stops answering (the connection cut off): `list` fails with
/// `ProviderUnavailable` within the request timeout (1 s here).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_that_does_not_answer_is_unavailable_within_the_timeout() {
    let Some(node) = Node::start("list-cut").await else {
        return;
    };
    let proxy = TcpProxy::start(addr(&node)).await.unwrap();
    let locker =
        Locker::with_backend(backend(&node, proxy.addr().to_string(), LeaseMode::Pool).await);
    let guard = locker.mutex("cut").lock().await.unwrap();
    assert_eq!(
        reports(&list_pages(&locker, "", 10).await),
        vec!["cut".to_owned()]
    );
    proxy.cut();
    let started = Instant::now();
    let err = locker.list(&ListRequest::new("")).await.unwrap_err();
    let took = started.elapsed();
    proxy.restore();
    assert!(matches!(err, Error::ProviderUnavailable { .. }), "{err:?}");
    assert!(took < Duration::from_secs(3), "took {took:?}");
    std::mem::forget(guard);
}
