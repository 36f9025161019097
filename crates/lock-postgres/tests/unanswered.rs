//! A server that accepts connections and then answers nothing (a proxy that stops forwarding):
//! every call returns within its bound. The review of this session found `Postgres::clean_up`
//! (and the background clean-up) waiting for ever there: the server's statement timeout cannot
//! help when the server never sees the query.

mod common;

use lock_core::{Locker, RetryPolicy};
use lock_postgres::{Postgres, PostgresMode};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Copies bytes one way, holding them while `frozen` is set.
async fn pipe(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    frozen: Arc<AtomicBool>,
) {
    let mut buf = vec![0u8; 65536];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        while frozen.load(Ordering::SeqCst) {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

/// A proxy to `target` that stops forwarding (without closing) while its flag is set.
async fn freezing_proxy(target: String) -> (u16, Arc<AtomicBool>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let frozen = Arc::new(AtomicBool::new(false));
    let flag = frozen.clone();
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let Ok(server) = tokio::net::TcpStream::connect(&target).await else {
                continue;
            };
            let (client_read, client_write) = client.into_split();
            let (server_read, server_write) = server.into_split();
            tokio::spawn(pipe(client_read, server_write, flag.clone()));
            tokio::spawn(pipe(server_read, client_write, flag.clone()));
        }
    });
    (port, frozen)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_call_is_bounded_when_the_server_stops_answering() {
    let Some(url) = common::url_or_skip() else {
        return;
    };
    let host_port = url
        .split('@')
        .nth(1)
        .and_then(|rest| rest.split('/').next())
        .expect("a URL with user@host:port")
        .to_owned();
    for mode in [PostgresMode::Lease, PostgresMode::Advisory] {
        let (port, frozen) = freezing_proxy(host_port.clone()).await;
        let proxied = url.replace(&host_port, &format!("127.0.0.1:{port}"));
        let mut config = common::config(&proxied, mode);
        config.connect_timeout = Duration::from_secs(2);
        config.listen_url = Some(url.clone());
        let backend = Postgres::connect(config).await.unwrap();
        let locker = Locker::builder(backend.clone())
            .request_timeout(Duration::from_secs(3))
            .retry(RetryPolicy {
                max_attempts: 1,
                ..RetryPolicy::default()
            })
            .build()
            .unwrap();
        let name = format!("unanswered-{}", ulid::Ulid::generate());
        let guard = locker.mutex(&name).try_lock().await.unwrap().unwrap();
        frozen.store(true, Ordering::SeqCst);
        // The clean-up's bound: the connect timeout plus 20 s for its statements (its pooled
        // connection is the same in both modes: checked once).
        let bound = Duration::from_secs(30);
        if mode == PostgresMode::Lease {
            let started = Instant::now();
            let cleaned = tokio::time::timeout(bound, backend.clean_up()).await;
            assert!(
                matches!(cleaned, Ok(Err(_))),
                "{mode}: clean_up with the server silent: {cleaned:?} after {:?}",
                started.elapsed()
            );
        }
        let started = Instant::now();
        let tried = tokio::time::timeout(bound, locker.mutex(format!("{name}-2")).try_lock()).await;
        assert!(
            tried.is_ok(),
            "{mode}: try_lock hung {:?}",
            started.elapsed()
        );
        let released = tokio::time::timeout(bound, guard.release()).await;
        assert!(released.is_ok(), "{mode}: release hung");
        frozen.store(false, Ordering::SeqCst);
        locker.close().await;
    }
}
