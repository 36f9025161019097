//! Benchmarks of every `lock` backend against its peers, in one run, on one machine.
//!
//! `scripts/bench.sh` starts the servers and runs this; it reads the same variables as the
//! tests (`LOCK_TEST_REDIS_URLS`, `LOCK_TEST_REDLOCK_URLS`, `LOCK_TEST_POSTGRES_URL`,
//! `LOCK_TEST_ETCD_ENDPOINTS`) and writes `bench/results/latest.md` and `latest.json`.
//!
//! Scenarios: uncontended lock + release latency (one client); throughput with 1, 8 and 64
//! clients on distinct names; contended throughput (8 clients on one name); contended hand-off
//! (release → next waiter's grant, measured warm); semaphore and read-lock throughput; the
//! cost of a read-lock or semaphore cycle next to 0, 10, 100 and 1000 other holders of the
//! same lock; Redlock over 3 and 5 nodes against one node, and over 5 nodes with one paused
//! (SIGSTOP). Medians and p99.
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

    if wants("latency") {
    for c in &contenders {
        let iters = if c.group == "memory" {
            effort.memory_latency_iters
        } else {
            effort.latency_iters
        };
        eprintln!("latency: {} / {}", c.group, c.label);
        let Some(samples) = skip_failed(c, latency(c, iters).await) else { continue };
        report.push(Row::latency("uncontended cycle", c, &samples));
    }
    }
    if wants("throughput") {
    for clients in [1usize, 8, 64] {
        for c in &contenders {
            eprintln!("throughput x{clients}: {} / {}", c.group, c.label);
            let Some((ops, samples)) = skip_failed(c, throughput(c, clients, effort.throughput_for, Kind::Mutex).await) else { continue };
            report.push(Row::throughput(&format!("throughput, {clients} clients"), c, ops, &samples));
        }
    }
    }
    if wants("handoff") {
    for c in contenders.iter().filter(|c| c.waits) {
        eprintln!("hand-off: {} / {}", c.group, c.label);
        let Some(samples) = skip_failed(c, handoff(c, effort.handoffs).await) else { continue };
        report.push(Row::latency("contended hand-off", c, &samples));
    }
    }
    if wants("kinds") {
    for kind in [Kind::Semaphore, Kind::Read] {
        for c in contenders.iter().filter(|c| c.supports(kind)) {
            eprintln!("{kind:?} throughput: {} / {}", c.group, c.label);
            let Some((ops, samples)) = skip_failed(c, throughput(c, 8, effort.throughput_for, kind).await) else { continue };
            report.push(Row::throughput(&format!("{} throughput, 8 clients", kind.title()), c, ops, &samples));
        }
    }
    }

    if wants("contended") {
    for c in contenders.iter().filter(|c| c.waits) {
        eprintln!("contended throughput: {} / {}", c.group, c.label);
        let Some((ops, samples)) = skip_failed(c, contended(c, 8, effort.throughput_for).await) else { continue };
        report.push(Row::throughput("contended mutex throughput, 8 clients on one name", c, ops, &samples));
    }
    }
    if wants("holders") {
    for kind in [Kind::Read, Kind::SemaphoreMany] {
        for c in contenders.iter().filter(|c| c.supports(kind)) {
            // Advisory mode holds a server session per lease: 100 holders would exhaust the
            // test server's max_connections (review finding PG-6).
            let most = if c.label.contains("advisory") { 10 } else { 1000 };
            eprintln!("{kind:?} next to other holders: {} / {}", c.group, c.label);
            let Some(steps) = skip_failed(c, among_holders(c, kind, most, effort.latency_iters / 4).await) else { continue };
            for (others, samples) in steps {
                report.push(Row::latency(&holders_scenario(kind, others), c, &samples));
            }
        }
    }
    }
    if wants("paused") {
    for c in contenders.iter().filter(|c| c.group == "redlock-5") {
        eprintln!("latency, one node paused: {} / {}", c.group, c.label);
        match paused_latency(c, effort.latency_iters / 4).await {
            Ok(samples) => report.push(Row::latency(PAUSED, c, &samples)),
            Err(e) => eprintln!("  {}: {e:#}", c.label),
        }
    }
    }

    let mut flat = Vec::new();
    for (group, subject) in [
        ("memory", "ours"),
        ("redis-1", "ours"),
        ("redlock-5", "ours"),
        ("postgres", "ours (lease)"),
        ("etcd", "ours"),
    ] {
        for kind in [Kind::Read, Kind::SemaphoreMany] {
            flat.push(Goal::across(
                &format!("{group} {subject}: {} cycle with 1000 other holders vs none", kind.title()),
                (&holders_scenario(kind, 1000), group, subject),
                (&holders_scenario(kind, 0), group, subject),
                2.0,
            ));
        }
    }
    // This round's targets (issues 10, 13 and 14), each against a peer or a figure of the review.
    let t8 = "throughput, 8 clients";
    let t64 = "throughput, 64 clients";
    report.goals(&[
        Goal::latency_ratio("Redis single node: cycle latency vs the raw SET NX floor", "uncontended cycle", ("redis-1", "ours"), ("redis-1", "raw SET NX PX + CAD script"), 1.2),
        Goal::throughput_at_least("Redis single node: throughput (8 clients) vs rslock", t8, ("redis-1", "ours"), ("redis-1", "rslock")),
        Goal::latency_ratio("Redlock 5 nodes: cycle vs rslock 5 nodes", "uncontended cycle", ("redlock-5", "ours"), ("redlock-5", "rslock"), 1.2),
        Goal::across("Redlock 5 nodes, one paused: cycle vs all healthy", (PAUSED, "redlock-5", "ours"), ("uncontended cycle", "redlock-5", "ours"), 1.5),
        Goal::throughput_at_least("Redlock 5 nodes: contended mutex throughput vs rslock", "contended mutex throughput, 8 clients on one name", ("redlock-5", "ours"), ("redlock-5", "rslock")),
        Goal::handoff_rtts("Redis: warm hand-off", "redis-1", 3.0),
        Goal::latency_ratio("PostgreSQL advisory (durable): cycle vs sqlx PgAdvisoryLock", "uncontended cycle", ("postgres", "ours (advisory)"), ("postgres", "sqlx PgAdvisoryLock"), 5.0),
        Goal::latency_ratio("PostgreSQL advisory (relaxed): cycle vs sqlx PgAdvisoryLock", "uncontended cycle", ("postgres", "ours (advisory, relaxed)"), ("postgres", "sqlx PgAdvisoryLock"), 2.0),
        Goal::ops_at_least("PostgreSQL advisory: throughput, 8 clients, vs 3x the review's 1209 ops/s", t8, ("postgres", "ours (advisory)"), 3.0 * 1209.0),
        Goal::ops_across("PostgreSQL advisory: throughput at 64 clients vs at 8", (t64, "postgres", "ours (advisory)"), (t8, "postgres", "ours (advisory)"), 1.0),
        Goal::handoff_rtts("PostgreSQL advisory: warm hand-off", "postgres", 3.0),
        Goal::latency_ratio("etcd (lease pool): cycle vs the lock/unlock RPC", "uncontended cycle", ("etcd", "ours"), ("etcd", "etcd-client lock/unlock RPC"), 1.5),
        Goal::latency_ratio("etcd (session lease): cycle vs the lock/unlock RPC", "uncontended cycle", ("etcd", "ours (session lease)"), ("etcd", "etcd-client lock/unlock RPC"), 1.2),
        Goal::handoff_rtts("etcd: warm hand-off", "etcd", 3.0),
        Goal::absolute("Memory: uncontended cycle under 1 µs", "uncontended cycle", ("memory", "ours"), Duration::from_micros(1)),
    ]
    .into_iter()
    .chain(flat)
    .collect::<Vec<_>>());
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

/// Whether `scenario` runs: `LOCK_BENCH_SCENARIOS=holders,paused` limits a run to those
/// (latency, throughput, handoff, kinds, contended, holders, paused); unset runs them all.
fn wants(scenario: &str) -> bool {
    std::env::var("LOCK_BENCH_SCENARIOS")
        .map(|v| v.split(',').any(|s| s.trim() == scenario))
        .unwrap_or(true)
}

/// A scenario's result, or `None` after saying why it failed: one failure (a server that lost
/// its leader under load, a request timeout) skips that row instead of ending the whole run.
fn skip_failed<T>(c: &Contender, result: Result<T>) -> Option<T> {
    match result {
        Ok(value) => Some(value),
        Err(e) => {
            eprintln!("  SKIPPED {} / {}: {e:#}", c.group, c.label);
            None
        }
    }
}

/// The scenario of a cycle next to `others` other holders.
fn holders_scenario(kind: Kind, others: usize) -> String {
    format!("{} cycle, {others} other holders", kind.title())
}

const PAUSED: &str = "uncontended cycle, 1 of 5 nodes paused";

/// `clients` clients cycling one mutex name for `run_for`.
async fn contended(c: &Contender, clients: usize, run_for: Duration) -> Result<(f64, Vec<Duration>)> {
    let mut made = Vec::new();
    for _ in 0..clients {
        made.push((c.make)().await?);
    }
    let name = format!("{}/contended", c.run);
    let started = Instant::now();
    let deadline = started + run_for;
    let mut tasks = Vec::new();
    for client in made {
        let name = name.clone();
        tasks.push(tokio::spawn(async move {
            let mut samples = Vec::new();
            while Instant::now() < deadline {
                let t = Instant::now();
                client.cycle(Kind::Mutex, &name).await?;
                samples.push(t.elapsed());
            }
            Ok::<_, anyhow::Error>(samples)
        }));
    }
    let mut samples = Vec::new();
    for task in tasks {
        samples.extend(task.await??);
    }
    Ok((samples.len() as f64 / started.elapsed().as_secs_f64(), samples))
}

/// The cycle of one client on a lock that 0, 10, 100 and 1000 (at most `most`) other leases of
/// another client hold; `iters` cycles at each step.
async fn among_holders(c: &Contender, kind: Kind, most: usize, iters: usize) -> Result<Vec<(usize, Vec<Duration>)>> {
    let holder = (c.make)().await?;
    let client = (c.make)().await?;
    let name = format!("{}/holders-{kind:?}", c.run);
    let iters = iters.max(20);
    let mut held = Vec::new();
    let mut out = Vec::new();
    for others in [0usize, 10, 100, 1000].into_iter().filter(|n| *n <= most) {
        while held.len() < others {
            held.push(holder.acquire_kind(kind, &name).await?);
        }
        for _ in 0..5 {
            client.cycle(kind, &name).await?;
        }
        let mut samples = Vec::with_capacity(iters);
        for _ in 0..iters {
            let t = Instant::now();
            client.cycle(kind, &name).await?;
            samples.push(t.elapsed());
        }
        out.push((others, samples));
    }
    for h in held {
        h.release().await?;
    }
    Ok(out)
}

/// The uncontended cycle with the fifth Redlock node paused (SIGSTOP), each cycle bounded by
/// 10 s; the node is resumed whatever happens.
async fn paused_latency(c: &Contender, iters: usize) -> Result<Vec<Duration>> {
    let urls = std::env::var("LOCK_TEST_REDLOCK_URLS")?;
    let url = urls.split(',').nth(4).context("LOCK_TEST_REDLOCK_URLS lists fewer than 5 URLs")?.trim().to_owned();
    let pid = peers::redis_pid(&url).await?;
    let client = (c.make)().await?;
    let name = format!("{}/paused", c.run);
    client.cycle(Kind::Mutex, &name).await?;
    let stop = std::process::Command::new("kill").args(["-STOP", &pid.to_string()]).status()?;
    anyhow::ensure!(stop.success(), "kill -STOP {pid} failed");
    let result = async {
        let mut samples = Vec::with_capacity(iters);
        for _ in 0..iters.max(20) {
            let t = Instant::now();
            tokio::time::timeout(Duration::from_secs(10), client.cycle(Kind::Mutex, &name))
                .await
                .context("a cycle took over 10 s with one node paused")??;
            samples.push(t.elapsed());
        }
        Ok(samples)
    }
    .await;
    let _ = std::process::Command::new("kill").args(["-CONT", &pid.to_string()]).status();
    result
}

/// Two clients: A holds, B waits; the time from A's release to B's grant. While B waits, A
/// keeps its connection and the server warm by cycling another lock, so the release is not
/// measured after an idle gap (review P4a); the server round trip it is compared with is
/// measured warm too.
async fn handoff(c: &Contender, reps: usize) -> Result<Vec<Duration>> {
    let a = (c.make)().await?;
    let b: Arc<dyn subjects::Subject> = (c.make)().await?;
    let name = format!("{}/handoff", c.run);
    let warm = format!("{}/handoff-warm", c.run);
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
        // B is waiting by now; A stays warm meanwhile.
        let warm_until = Instant::now() + Duration::from_millis(30);
        while Instant::now() < warm_until {
            a.cycle(Kind::Mutex, &warm).await?;
        }
        let released = Instant::now();
        held.release().await?;
        let granted = tokio::time::timeout(Duration::from_secs(10), waiter)
            .await
            .context("the waiter was not granted within 10 s")???;
        samples.push(granted.saturating_duration_since(released));
    }
    Ok(samples)
}
