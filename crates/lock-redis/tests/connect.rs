//! Connecting: bad settings, passwords, TLS, unreachable servers, pub/sub reconnects.

mod support;

use lock_core::{
    AcquireRequest, Acquired, Backend, Error, LeaseId, LockKey, LockKind, Locker, Metadata, Mode,
};
use lock_redis::{Redis, RedisConfig};
use std::sync::Arc;
use std::time::Duration;
use support::{QUICK, Servers, prefix};
use tokio::time::Instant;

/// Every level of an error, `Display` and `Debug`.
fn all_text(err: &Error) -> String {
    let mut text = format!("{err} {err:?}");
    let mut source = std::error::Error::source(err);
    while let Some(e) = source {
        text.push_str(&format!(" | {e} {e:?}"));
        source = e.source();
    }
    text
}

#[tokio::test]
async fn bad_settings_are_config_errors_naming_the_value() {
    let cases: [(RedisConfig, &str); 5] = [
        (
            RedisConfig::new(["http://u:pw-s3cret@h:1"]),
            "http://u:***@h:1",
        ),
        (
            RedisConfig::new(["redis://a:1", "redis://b:1"]).quorum(3),
            "LOCK_REDIS_QUORUM: 3",
        ),
        (RedisConfig::default().prefix("app{x}:"), "app{x}:"),
        (RedisConfig::new(Vec::<String>::new()), "at least one URL"),
        (
            RedisConfig::new(["redis://u:pw-s3cret@h:notaport"]),
            "redis://u:***@h:notaport",
        ),
    ];
    for (config, expected) in cases {
        let err = Redis::connect(config).await.unwrap_err();
        assert!(matches!(err, Error::Config { .. }), "{err:?}");
        let text = all_text(&err);
        assert!(text.contains(expected), "{expected:?} not in {text}");
        assert!(!text.contains("pw-s3cret"), "{text}");
    }
}

#[tokio::test]
async fn unreachable_server_is_unavailable() {
    let started = Instant::now();
    let err = Redis::connect(RedisConfig::new(["redis://:pw-s3cret@127.0.0.1:1"]).timeout(QUICK))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::ProviderUnavailable { .. }), "{err:?}");
    let text = all_text(&err);
    assert!(text.contains("redis://:***@127.0.0.1:1"), "{text}");
    assert!(!text.contains("pw-s3cret"), "{text}");
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn redlock_connect_needs_a_quorum() {
    let Some(servers) = Servers::start(1, &[]).await else {
        return;
    };
    let urls = [
        servers.url(0),
        "redis://127.0.0.1:1".into(),
        "redis://127.0.0.1:2".into(),
    ];
    let err = Redis::connect(RedisConfig::new(urls).timeout(QUICK))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::ProviderUnavailable { .. }), "{err:?}");
    assert!(
        all_text(&err).contains("2 of 3 redis nodes failed"),
        "{err:?}"
    );
}

#[tokio::test]
async fn passwords_work_and_never_show() {
    let Some(servers) = Servers::start(1, &["--requirepass", "pw-s3cret-42"]).await else {
        return;
    };
    let port = servers.ports[0];
    let wrong = format!("redis://:wrong-s3cret@127.0.0.1:{port}");
    let err = Redis::connect(RedisConfig::new([wrong]).timeout(QUICK))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::ProviderUnavailable { .. }), "{err:?}");
    let text = all_text(&err);
    assert!(!text.contains("wrong-s3cret"), "{text}");

    let right = format!("redis://default:pw-s3cret-42@127.0.0.1:{port}");
    let config = RedisConfig::new([right]).prefix(prefix());
    assert!(!format!("{config:?}").contains("pw-s3cret-42"));
    let redis = Redis::connect(config)
        .await
        .expect("connect with the password");
    assert!(!format!("{redis:?}").contains("pw-s3cret-42"), "{redis:?}");
    assert!(format!("{redis:?}").contains("default:***@"), "{redis:?}");
    let locker = Locker::with_backend(redis);
    let guard = locker.mutex("with-password").lock().await.unwrap();
    guard.release().await.unwrap();
}

/// `rediss://` goes through rustls (with the `ring` provider installed by `connect`): against
/// a plain server the handshake fails cleanly, without a panic or a hang.
#[tokio::test]
async fn tls_handshake_failure_is_unavailable() {
    let Some(servers) = Servers::start(1, &[]).await else {
        return;
    };
    let url = format!("rediss://:tls-s3cret@127.0.0.1:{}", servers.ports[0]);
    let started = Instant::now();
    let err = Redis::connect(RedisConfig::new([url]).timeout(QUICK))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::ProviderUnavailable { .. }), "{err:?}");
    assert!(!all_text(&err).contains("tls-s3cret"), "{err:?}");
    assert!(started.elapsed() < Duration::from_secs(5));
}

/// The pub/sub listener reconnects after the server restarts: subscribers are signalled on
/// the reconnect (messages may have been lost meanwhile), and changes published after it reach
/// them again.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn listener_reconnects_and_signals_subscribers() {
    let Some(mut servers) = Servers::start(1, &[]).await else {
        return;
    };
    let prefix = prefix();
    let watcher = support::backend(&servers.urls(), &prefix).await;
    let other = support::locker(&servers.urls(), &prefix).await;
    let name = "reconnect";
    let mut request = AcquireRequest::new(
        LockKey::new(name, LockKind::Mutex).unwrap(),
        LeaseId::generate(),
        "watcher".into(),
        Mode::Exclusive,
        1,
        1,
        Duration::from_secs(10),
        Arc::new(Metadata::new()),
    );
    // A waiter records its claim before it waits: changes are published only to locks with
    // waiters.
    request.claim = Some(Duration::from_secs(10));
    let mut subscription = watcher.subscribe(&request).await.unwrap();
    let held = other.mutex(name).lock().await.unwrap();
    assert!(matches!(
        watcher.acquire(&request).await.unwrap(),
        Acquired::Busy { .. }
    ));
    held.release().await.unwrap();
    tokio::time::timeout(Duration::from_secs(5), subscription.changed())
        .await
        .expect("a release was not signalled");
    servers.kill(0);
    servers.restart(0).await;
    // Nothing is published now; only the listener's reconnect can signal.
    tokio::time::timeout(Duration::from_secs(10), subscription.changed())
        .await
        .expect("no signal after the listener reconnected");
    // And after the reconnect, published changes arrive again.
    let held = tokio::time::timeout(Duration::from_secs(10), other.mutex(name).lock())
        .await
        .expect("the restarted server is not usable")
        .unwrap();
    assert!(matches!(
        watcher.acquire(&request).await.unwrap(),
        Acquired::Busy { .. }
    ));
    held.release().await.unwrap();
    tokio::time::timeout(Duration::from_secs(5), subscription.changed())
        .await
        .expect("a release after the reconnect was not signalled");
}

/// Owners and metadata of any text (quotes, braces, newlines, colons, non-ASCII) come back
/// from `inspect` unchanged, and the longest TTL the handles accept (`MAX_TTL`) works.
#[tokio::test]
async fn owner_and_metadata_round_trip_any_text() {
    let Some(servers) = Servers::start(1, &[]).await else {
        return;
    };
    let redis = support::backend(&servers.urls(), &prefix()).await;
    let owner = "wörker \"7\"\n{a}:1";
    let locker = Locker::builder(redis).owner(owner).build().unwrap();
    let guard = locker
        .mutex("text")
        .ttl(lock_core::MAX_TTL)
        .metadata("k:1{", "v\n\"ü\" 2:3")
        .metadata("", "")
        .lock()
        .await
        .unwrap();
    let holders = locker.inspect("text").await.unwrap();
    assert_eq!(holders.len(), 1);
    assert_eq!(holders[0].owner, owner);
    assert_eq!(holders[0].metadata, guard.info().metadata);
    assert_eq!(holders[0].metadata.len(), 2);
    guard.release().await.unwrap();
}

/// Runs `openssl` with `args` in `dir`.
fn openssl(dir: &std::path::Path, args: &[&str]) {
    let status = std::process::Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .expect("run openssl");
    assert!(status.success(), "openssl {args:?} failed");
}

/// `rediss://` end to end: a TLS-only server with a certificate from a private CA and a
/// password. Trusting the CA (`tls_root_cert`), locks work; without it, the handshake fails
/// with `ProviderUnavailable`, and the password shows nowhere.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_a_private_ca_and_password() {
    let Some(program) = lock_testkit::find_program(&["redis-server"]) else {
        assert!(!lock_testkit::require_servers(), "redis-server not found");
        return;
    };
    if lock_testkit::find_program(&["openssl"]).is_none() {
        assert!(!lock_testkit::require_servers(), "openssl not found");
        println!("skipped: openssl not found");
        return;
    }
    let dir = std::env::temp_dir().join(format!("lock-redis-tls-{}", ulid::Ulid::generate()));
    std::fs::create_dir_all(&dir).unwrap();
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    let mut ca = vec!["req", "-x509", "-days", "1", "-subj", "/CN=lock-test-ca"];
    ca.extend(ec);
    ca.extend(["-keyout", "ca.key", "-out", "ca.pem"]);
    openssl(&dir, &ca);
    let mut csr = vec!["req", "-subj", "/CN=127.0.0.1"];
    csr.extend(ec);
    csr.extend(["-keyout", "server.key", "-out", "server.csr"]);
    openssl(&dir, &csr);
    std::fs::write(dir.join("ext.cnf"), "subjectAltName=IP:127.0.0.1\n").unwrap();
    openssl(
        &dir,
        &[
            "x509",
            "-req",
            "-days",
            "1",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-extfile",
            "ext.cnf",
            "-out",
            "server.pem",
        ],
    );
    let port = lock_testkit::free_port();
    let path = |f: &str| dir.join(f).to_str().unwrap().to_owned();
    let port_arg = port.to_string();
    let args = [
        "--port",
        "0",
        "--tls-port",
        &port_arg,
        "--bind",
        "127.0.0.1",
        "--tls-cert-file",
        &path("server.pem"),
        "--tls-key-file",
        &path("server.key"),
        "--tls-ca-cert-file",
        &path("ca.pem"),
        "--tls-auth-clients",
        "no",
        "--requirepass",
        "tls-pw-s3cret",
        "--save",
        "",
        "--appendonly",
        "no",
    ];
    let _server = lock_testkit::ServerProcess::start(&program, args, None).unwrap();
    assert!(lock_testkit::wait_for_port(port, Duration::from_secs(10)).await);
    let url = format!("rediss://default:tls-pw-s3cret@127.0.0.1:{port}");

    let untrusted = Redis::connect(RedisConfig::new([url.clone()]).timeout(QUICK))
        .await
        .unwrap_err();
    assert!(
        matches!(untrusted, Error::ProviderUnavailable { .. }),
        "{untrusted:?}"
    );
    assert!(!all_text(&untrusted).contains("tls-pw-s3cret"));

    let ca_pem = std::fs::read(dir.join("ca.pem")).unwrap();
    let config = RedisConfig::new([url])
        .prefix(prefix())
        .tls_root_cert(ca_pem);
    assert!(!format!("{config:?}").contains("tls-pw-s3cret"));
    let a = Locker::with_backend(Redis::connect(config.clone()).await.expect("TLS connect"));
    let b = Locker::with_backend(Redis::connect(config).await.expect("TLS connect"));
    let guard = a.mutex("tls").lock().await.unwrap();
    assert!(b.mutex("tls").try_lock().await.unwrap().is_none());
    // A waiter over TLS is woken through the TLS pub/sub connection.
    let waiter = tokio::spawn({
        let mutex = b.mutex("tls").retry(lock_core::RetryPolicy {
            initial_delay: Duration::from_secs(10),
            max_delay: Duration::from_secs(10),
            ..lock_core::RetryPolicy::default()
        });
        async move { mutex.lock().await }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let released = Instant::now();
    guard.release().await.unwrap();
    let next = tokio::time::timeout(Duration::from_secs(5), waiter)
        .await
        .expect("waiter not woken")
        .unwrap()
        .unwrap();
    assert!(released.elapsed() < Duration::from_secs(1));
    next.release().await.unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}
