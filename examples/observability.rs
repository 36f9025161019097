//! Metrics and traces while a few workers contend for one lock.
//!
//! ```sh
//! cargo run --example observability --features metrics,tracing
//! ```
//!
//! The library only records through the `metrics` and `tracing` facades; this example installs
//! a Prometheus exporter (with its own HTTP listener) and a `tracing-subscriber` that prints a
//! line when each `lock.acquire` / `lock.extend` / `lock.release` span closes. At the end it
//! scrapes its own `/metrics` endpoint and prints the `lock_*` series.

use lock::{Locker, provider::Memory};
use metrics_exporter_prometheus::PrometheusBuilder;
use std::error::Error;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tracing_subscriber::fmt::format::FmtSpan;

#[tokio::main]
async fn main() -> Result<(), Box<dyn Error>> {
    tracing_subscriber::fmt()
        .with_span_events(FmtSpan::CLOSE)
        .with_target(false)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()))
        .init();
    let addr: SocketAddr = ([127, 0, 0, 1], free_port()?).into();
    PrometheusBuilder::new()
        .with_http_listener(addr)
        .install()?;
    println!("Prometheus endpoint: http://{addr}/metrics");

    let locker = Locker::with_backend(Memory::new());
    let mut workers = Vec::new();
    for worker in 0..3 {
        let mutex = locker
            .mutex("observability-demo")
            .ttl(Duration::from_millis(300))
            .auto_extend(true);
        workers.push(tokio::spawn(async move {
            for _ in 0..2 {
                let guard = mutex.lock().await?;
                tokio::time::sleep(Duration::from_millis(120)).await; // one auto-extension
                println!("worker {worker} did its work with token {}", guard.token());
                guard.release().await?;
            }
            Ok::<_, lock::Error>(())
        }));
    }
    for worker in workers {
        worker.await??;
    }
    let busy = locker.mutex("observability-demo").lock().await?;
    let timed_out = locker
        .mutex("observability-demo")
        .lock_timeout(Duration::from_millis(50))
        .lock()
        .await;
    println!("a waiter with a 50 ms timeout: {}", timed_out.unwrap_err());
    drop(busy); // released in the background: counted as via="drop"
    tokio::time::sleep(Duration::from_millis(50)).await;

    println!("\n--- lock_* series scraped from http://{addr}/metrics ---");
    for line in scrape(addr).await?.lines() {
        if line.starts_with("lock_") || line.starts_with("# HELP lock_") {
            println!("{line}");
        }
    }
    Ok(())
}

fn free_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// A plain HTTP/1.1 GET of `/metrics`.
async fn scrape(addr: SocketAddr) -> std::io::Result<String> {
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    let request = format!("GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await?;
    Ok(response)
}
