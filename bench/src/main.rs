//! Benchmarks of every `lock` backend against its peers, in one run, on one machine.
//!
//! `scripts/bench.sh` starts the servers and runs this; it reads the same variables as the
//! tests (`LOCK_TEST_REDIS_URLS`, `LOCK_TEST_REDLOCK_URLS`, `LOCK_TEST_POSTGRES_URL`,
//! `LOCK_TEST_ETCD_ENDPOINTS`) and writes `bench/results/latest.md` and `latest.json`.
//!
//! Scenarios: uncontended lock + release latency (one client); throughput with 1, 8 and 64
//! clients on distinct names; contended hand-off (release → next waiter's grant); semaphore
//! and read-lock throughput; Redlock over 3 and 5 nodes against one node. Medians and p99.
//! `LOCK_BENCH_QUICK=1` makes a smoke run; `LOCK_BENCH_GROUPS=redis-1,etcd` limits the groups.

mod peers;
mod report;
mod subjects;

use anyhow::{Context, Result};
use report::{Goal, Report, Row};
use std::sync::Arc;
use std::time::{Duration, Instant};
use subjects::{Contender, Kind};

/// How hard each scenario works; `LOCK_BENCH_QUICK=1` shrinks everything (a smoke run).
#[derive(Clone, Copy)]
struct Effort {
    latency_iters: usize,
    memory_latency_iters: usize,
    throughput_for: Duration,
    handoffs: usize,
}

impl Effort {
    fn from_env() -> Self {
        if std::env::var("LOCK_BENCH_QUICK").is_ok_and(|v| v == "1") {
            Effort {
                latency_iters: 100,
                memory_latency_iters: 20_000,
                throughput_for: Duration::from_millis(500),
                handoffs: 15,
            }
        } else {
            Effort {
                latency_iters: 1000,
                memory_latency_iters: 200_000,
                throughput_for: Duration::from_secs(2),
                handoffs: 60,
            }
        }
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<()> {
    let effort = Effort::from_env();
    let run = format!("bench-{}", std::process::id());
    let mut contenders = subjects::all(&run).await?;
    // LOCK_BENCH_GROUPS=redis-1,memory runs only those groups (for profiling one backend).
    if let Ok(groups) = std::env::var("LOCK_BENCH_GROUPS") {
        let groups: Vec<&str> = groups.split(',').map(str::trim).collect();
        contenders.retain(|c| groups.contains(&c.group));
    }
    let mut report = Report::new();
    for (group, rtt) in peers::round_trips().await? {
        report.rtt(group, rtt);
    }

    for c in &contenders {
        let iters = if c.group == "memory" {
            effort.memory_latency_iters
        } else {
            effort.latency_iters
        };
        eprintln!("latency: {} / {}", c.group, c.label);
        let samples = latency(c, iters).await.with_context(|| c.label.clone())?;
        report.push(Row::latency("uncontended cycle", c, &samples));
    }
    for clients in [1usize, 8, 64] {
        for c in &contenders {
            eprintln!("throughput x{clients}: {} / {}", c.group, c.label);
            let (ops, samples) = throughput(c, clients, effort.throughput_for, Kind::Mutex)
                .await
                .with_context(|| c.label.clone())?;
            report.push(Row::throughput(&format!("throughput, {clients} clients"), c, ops, &samples));
        }
    }
    for c in contenders.iter().filter(|c| c.waits) {
        eprintln!("hand-off: {} / {}", c.group, c.label);
        let samples = handoff(c, effort.handoffs).await.with_context(|| c.label.clone())?;
        report.push(Row::latency("contended hand-off", c, &samples));
    }
    for kind in [Kind::Semaphore, Kind::Read] {
        for c in contenders.iter().filter(|c| c.supports(kind)) {
            eprintln!("{kind:?} throughput: {} / {}", c.group, c.label);
            let (ops, samples) = throughput(c, 8, effort.throughput_for, kind)
                .await
                .with_context(|| c.label.clone())?;
            report.push(Row::throughput(&format!("{} throughput, 8 clients", kind.title()), c, ops, &samples));
        }
    }

    report.goals(&[
        Goal::latency_ratio("Redis single node: cycle latency vs the raw SET NX floor", "uncontended cycle", ("redis-1", "ours"), ("redis-1", "raw SET NX PX + CAD script"), 1.2),
        Goal::throughput_at_least("Redis single node: throughput (8 clients) vs rslock", "throughput, 8 clients", ("redis-1", "ours"), ("redis-1", "rslock")),
        Goal::latency_ratio("Redlock 5 nodes: latency vs our single node", "uncontended cycle", ("redlock-5", "ours"), ("redis-1", "ours"), 1.5),
        Goal::latency_ratio("Redlock 5 nodes: latency vs rslock 5 nodes", "uncontended cycle", ("redlock-5", "ours"), ("redlock-5", "rslock"), 1.0),
        Goal::handoff_rtts("Redis: contended hand-off within 3 round trips", "redis-1", 3.0),
        Goal::handoff_rtts("PostgreSQL advisory: contended hand-off within 3 round trips", "postgres", 3.0),
        Goal::handoff_rtts("etcd: contended hand-off within 3 round trips", "etcd", 3.0),
        Goal::latency_ratio("PostgreSQL advisory: cycle latency vs sqlx PgAdvisoryLock", "uncontended cycle", ("postgres", "ours (advisory)"), ("postgres", "sqlx PgAdvisoryLock"), 1.5),
        Goal::latency_ratio("etcd: cycle latency vs the lock/unlock RPC", "uncontended cycle", ("etcd", "ours"), ("etcd", "etcd-client lock/unlock RPC"), 1.2),
        Goal::absolute("Memory: uncontended cycle under 1 µs", "uncontended cycle", ("memory", "ours"), Duration::from_micros(1)),
    ]);
    report.write(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("results"))?;
    Ok(())
}

/// One client: lock + release, `iters` times, after a short warm-up.
async fn latency(c: &Contender, iters: usize) -> Result<Vec<Duration>> {
    let client = (c.make)().await?;
    let name = format!("{}/latency", c.run);
    for _ in 0..(iters / 20).clamp(5, 100) {
        client.cycle(Kind::Mutex, &name).await?;
    }
    let mut samples = Vec::with_capacity(iters);
    for _ in 0..iters {
        let started = Instant::now();
        client.cycle(Kind::Mutex, &name).await?;
        samples.push(started.elapsed());
    }
    Ok(samples)
}

/// `clients` clients, each on its own name (mutex) or all on one (semaphore, read lock),
/// cycling for `run_for`. Returns operations per second and the cycle times.
async fn throughput(
    c: &Contender,
    clients: usize,
    run_for: Duration,
    kind: Kind,
) -> Result<(f64, Vec<Duration>)> {
    let mut made = Vec::new();
    for _ in 0..clients {
        made.push((c.make)().await?);
    }
    let started = Instant::now();
    let deadline = started + run_for;
    let mut tasks = Vec::new();
    for (i, client) in made.into_iter().enumerate() {
        let name = match kind {
            Kind::Mutex => format!("{}/tp/{clients}/{i}", c.run),
            _ => format!("{}/tp-{kind:?}/{clients}", c.run),
        };
        tasks.push(tokio::spawn(async move {
            let mut samples = Vec::new();
            while Instant::now() < deadline {
                let t = Instant::now();
                client.cycle(kind, &name).await?;
                samples.push(t.elapsed());
            }
            Ok::<_, anyhow::Error>(samples)
        }));
    }
    let mut samples = Vec::new();
    for task in tasks {
        samples.extend(task.await??);
    }
    let elapsed = started.elapsed().as_secs_f64();
    Ok((samples.len() as f64 / elapsed, samples))
}

/// Two clients: A holds, B waits; the time from A's release to B's grant.
async fn handoff(c: &Contender, reps: usize) -> Result<Vec<Duration>> {
    let a = (c.make)().await?;
    let b: Arc<dyn subjects::Subject> = (c.make)().await?;
    let name = format!("{}/handoff", c.run);
    let mut samples = Vec::with_capacity(reps);
    for _ in 0..reps {
        let held = a.acquire(&name).await?;
        let waiter = {
            let b = b.clone();
            let name = name.clone();
            tokio::spawn(async move {
                let held = b.acquire(&name).await?;
                let granted = Instant::now();
                held.release().await?;
                Ok::<_, anyhow::Error>(granted)
            })
        };
        tokio::time::sleep(Duration::from_millis(30)).await; // B is waiting by now
        let released = Instant::now();
        held.release().await?;
        let granted = tokio::time::timeout(Duration::from_secs(10), waiter)
            .await
            .context("the waiter was not granted within 10 s")???;
        samples.push(granted.saturating_duration_since(released));
    }
    Ok(samples)
}
