//! Review finding PG-6: advisory mode caps the server sessions it opens
//! (`LOCK_POSTGRES_MAX_SESSIONS`); acquisitions beyond the cap wait in the client. Review
//! round 4: the cap holds on the server, also for acquisitions dropped mid-flight (PG-R4-4),
//! and a `try_lock` at the cap fails at once (PG-R4-1).

mod common;

use lock_core::Locker;
use lock_postgres::{Postgres, PostgresMode};
use sqlx::Connection;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::Duration;

/// The tests of this file count the library's server sessions, and stop backends: one at a
/// time, so that no other test's sessions are counted.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const CAP: u32 = 4;
const POOL: u32 = 2;
const WAITERS: usize = 24;

/// The server sessions of this library (its `application_name`) started since `since` (the
/// server clock when the test began): sessions of earlier test binaries still ending are not
/// counted.
async fn our_sessions(conn: &mut sqlx::PgConnection, since: f64) -> i64 {
    let (n,): (i64,) = sqlx::query_as(
        "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'lock-postgres' \
         AND extract(epoch FROM backend_start) >= $1",
    )
    .bind(since)
    .fetch_one(conn)
    .await
    .unwrap();
    n
}

/// More waiters than the cap on one hot lock: every waiter is granted in turn, and the
/// library's server sessions never exceed the cap plus the pool (plus the one LISTEN session).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_herd_on_one_lock_stays_within_the_session_cap() {
    let Some(url) = common::url_or_skip() else {
        return;
    };
    let _one = ONE_AT_A_TIME.lock().await;
    let since: f64 = {
        let mut conn = sqlx::PgConnection::connect(&url).await.unwrap();
        let (now,): (f64,) = sqlx::query_as("SELECT extract(epoch FROM clock_timestamp())::float8")
            .fetch_one(&mut conn)
            .await
            .unwrap();
        now
    };
    let mut config = common::config(&url, PostgresMode::Advisory);
    config.max_connections = POOL;
    config.max_sessions = CAP;
    let backend = Postgres::connect(config).await.expect("connect");
    let locker = Locker::builder(backend)
        .request_timeout(Duration::from_secs(20))
        .build()
        .unwrap();
    let name = format!("herd-{}", ulid::Ulid::generate());
    // The two sessions of the connect-time pooling probe (PG-7) are closed before `connect`
    // returns, but the server may list them for a few more milliseconds.
    {
        let mut conn = sqlx::PgConnection::connect(&url).await.unwrap();
        for _ in 0..100 {
            if our_sessions(&mut conn, since).await <= i64::from(POOL + 1) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let done = Arc::new(AtomicBool::new(false));
    let peak = Arc::new(AtomicI64::new(0));
    let sampler = {
        let (done, peak, url) = (Arc::clone(&done), Arc::clone(&peak), url.clone());
        tokio::spawn(async move {
            let mut conn = sqlx::PgConnection::connect(&url).await.unwrap();
            while !done.load(Ordering::SeqCst) {
                let n = our_sessions(&mut conn, since).await;
                peak.fetch_max(n, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
    };
    let holding = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for _ in 0..WAITERS {
        let (locker, name, holding) = (locker.clone(), name.clone(), Arc::clone(&holding));
        tasks.push(tokio::spawn(async move {
            let guard = locker
                .mutex(&name)
                .lock_timeout(Duration::from_secs(60))
                .lock()
                .await
                .expect("every waiter is granted in turn");
            assert!(!holding.swap(true, Ordering::SeqCst), "two holders at once");
            tokio::time::sleep(Duration::from_millis(20)).await;
            holding.store(false, Ordering::SeqCst);
            guard.release().await.unwrap();
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    done.store(true, Ordering::SeqCst);
    sampler.await.unwrap();
    let peak = peak.load(Ordering::SeqCst);
    println!("{WAITERS} waiters, cap {CAP}, pool {POOL}: at most {peak} server sessions");
    assert!(
        peak <= i64::from(CAP + POOL + 1),
        "{peak} server sessions for {WAITERS} waiters (cap {CAP} + pool {POOL} + LISTEN 1)"
    );
    locker.close().await;
}

// ---------------------------------------------------------------------------------------------
// Review round 4, PG-R4-4 and PG-R4-1.
// ---------------------------------------------------------------------------------------------

/// An error with its whole source chain.
fn chain(e: &lock_core::Error) -> String {
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        text.push_str(&format!(": {s}"));
        source = s.source();
    }
    text
}

fn unique(tag: &str) -> String {
    format!("{tag}-{}", ulid::Ulid::generate())
}

/// A configuration with a session cap of `cap` and a pool of two.
fn capped(url: &str, cap: u32) -> lock_postgres::PostgresConfig {
    let mut config = common::config(url, PostgresMode::Advisory);
    config.max_sessions = cap;
    config.max_connections = POOL;
    config
}

/// The test server's URL when it runs on this machine (the tests below stop one of its
/// backends with SIGSTOP); `None`, after saying why, for a server elsewhere.
fn local_url() -> Option<String> {
    let url = common::url_or_skip()?;
    let host = url
        .split('@')
        .nth(1)
        .or_else(|| url.split("//").nth(1))
        .and_then(|rest| rest.split([':', '/']).next())
        .unwrap_or_default();
    if matches!(host, "127.0.0.1" | "localhost" | "::1" | "[::1]") {
        Some(url)
    } else {
        println!(
            "skipped: the server at {host} is not on this machine (its backends are signalled)"
        );
        None
    }
}

/// A server backend stopped with SIGSTOP: it answers nothing, and neither its own timeouts
/// nor `pg_terminate_backend` end it until it is resumed (on drop, so a failing test never
/// leaves it stopped).
struct Stopped(i32);

impl Stopped {
    fn new(pid: i32) -> Stopped {
        let status = std::process::Command::new("kill")
            .args(["-STOP", &pid.to_string()])
            .status()
            .expect("run kill");
        assert!(
            status.success(),
            "kill -STOP {pid} failed (run the tests as root or as the server's user)"
        );
        Stopped(pid)
    }
}

impl Drop for Stopped {
    fn drop(&mut self) {
        let _ = std::process::Command::new("kill")
            .args(["-CONT", &self.0.to_string()])
            .status();
    }
}

/// The backend waiting on the server for the advisory lock of mutex `name` (polled for up to
/// 10 s).
async fn waiting_backend(url: &str, name: &str) -> i32 {
    let key = lock_core::LockKey::new(name, lock_core::LockKind::Mutex).unwrap();
    let akey = lock_postgres::advisory_key(&key);
    let mut conn = sqlx::PgConnection::connect(url).await.unwrap();
    for _ in 0..500 {
        let pid: Option<(i32,)> = sqlx::query_as(
            "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND NOT granted \
             AND classid::bigint = ($1::bigint & 4294967295) \
             AND objid::bigint = ($2::bigint & 4294967295) LIMIT 1",
        )
        .bind(common::namespace())
        .bind(akey)
        .fetch_optional(&mut conn)
        .await
        .unwrap();
        if let Some((pid,)) = pid {
            return pid;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("no backend waits for {name:?}");
}

async fn backend_exists(url: &str, pid: i32) -> bool {
    let mut conn = sqlx::PgConnection::connect(url).await.unwrap();
    let (exists,): (bool,) =
        sqlx::query_as("SELECT EXISTS (SELECT 1 FROM pg_stat_activity WHERE pid = $1)")
            .bind(pid)
            .fetch_one(&mut conn)
            .await
            .unwrap();
    exists
}

/// An acquisition of `hot` (held by another process) on a backend with a cap of one session,
/// dropped by its `lock_timeout` while its session waits on the server, and that session's
/// backend, stopped (SIGSTOP) while it waits: it outlives the acquisition until it is resumed.
async fn orphan_a_stopped_waiter(capped: &Locker, hot: &str, url: &str) -> Stopped {
    let waiter = {
        let mutex = capped.mutex(hot).lock_timeout(Duration::from_secs(2));
        tokio::spawn(async move { mutex.lock().await.map(|guard| guard.token()) })
    };
    let stopped = Stopped::new(waiting_backend(url, hot).await);
    let result = waiter.await.unwrap();
    assert!(
        matches!(result, Err(lock_core::Error::NotAcquired { .. })),
        "the waiter: {result:?}"
    );
    stopped
}

/// Review finding PG-R4-4: an acquisition dropped mid-flight keeps its session's permit until
/// its server backend is gone, so the cap holds on the server. Its backend is stopped here, so
/// it outlives the acquisition: no other acquisition gets a session meanwhile (the cap is one);
/// once it can end, its permit comes back at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_dropped_acquisition_keeps_its_session_permit_until_its_backend_is_gone() {
    let Some(url) = local_url() else {
        return;
    };
    let _one = ONE_AT_A_TIME.lock().await;
    let holder = Locker::with_backend(
        Postgres::connect(common::config(&url, PostgresMode::Advisory))
            .await
            .expect("connect"),
    );
    let capped = Locker::with_backend(Postgres::connect(capped(&url, 1)).await.expect("connect"));
    let hot = unique("orphan-hot");
    let held = holder.mutex(&hot).lock().await.unwrap();
    let stopped = orphan_a_stopped_waiter(&capped, &hot, &url).await;
    let pid = stopped.0;
    let other = capped
        .mutex(unique("orphan-free"))
        .lock_timeout(Duration::from_millis(1500))
        .lock()
        .await;
    let orphan_alive = backend_exists(&url, pid).await;
    println!(
        "while the orphaned backend {pid} lives (alive: {orphan_alive}): {:?}",
        other.as_ref().map(|g| g.token())
    );
    assert!(orphan_alive, "the stopped backend {pid} ended");
    assert!(
        matches!(other, Err(lock_core::Error::NotAcquired { .. })),
        "a second session was opened beyond the cap of 1 while the orphaned backend {pid} still \
         ran: {:?}",
        other.map(|g| g.token())
    );
    // Resumed, the backend ends (its termination was asked for), and the permit comes back.
    drop(stopped);
    let started = tokio::time::Instant::now();
    let next = capped
        .mutex(unique("orphan-free"))
        .lock_timeout(Duration::from_secs(10))
        .lock()
        .await
        .expect("the orphan's permit came back");
    let took = started.elapsed();
    println!("after the orphaned backend could end: a session in {took:?}");
    assert!(!backend_exists(&url, pid).await, "backend {pid} still runs");
    assert!(
        took < Duration::from_secs(4),
        "the permit came back after {took:?}"
    );
    next.release().await.unwrap();
    held.release().await.unwrap();
    capped.close().await;
    holder.close().await;
}

/// PG-R4-4, the bound: an orphaned backend whose end cannot be confirmed (it stays stopped,
/// so `pg_terminate_backend` waits its 5 s in vain) gives its permit back after that bound,
/// with a warning: the cap is then exceeded by it, rather than the permit leaked for ever.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_orphan_that_does_not_end_gives_its_permit_back_after_the_bound() {
    let Some(url) = local_url() else {
        return;
    };
    let _one = ONE_AT_A_TIME.lock().await;
    let holder = Locker::with_backend(
        Postgres::connect(common::config(&url, PostgresMode::Advisory))
            .await
            .expect("connect"),
    );
    let capped = Locker::builder(Postgres::connect(capped(&url, 1)).await.expect("connect"))
        .request_timeout(Duration::from_secs(20))
        .build()
        .unwrap();
    let hot = unique("bound-hot");
    let held = holder.mutex(&hot).lock().await.unwrap();
    let stopped = orphan_a_stopped_waiter(&capped, &hot, &url).await;
    let started = tokio::time::Instant::now();
    let next = capped
        .mutex(unique("bound-free"))
        .lock_timeout(Duration::from_secs(20))
        .lock()
        .await;
    let took = started.elapsed();
    let orphan_alive = backend_exists(&url, stopped.0).await;
    println!(
        "orphaned backend {} never ends: a session after {took:?} (orphan alive: {orphan_alive}): {:?}",
        stopped.0,
        next.as_ref().map(|g| g.token())
    );
    let next = next.expect("the permit came back after the bound");
    assert!(orphan_alive, "the stopped backend ended");
    assert!(
        took >= Duration::from_secs(3),
        "a session after {took:?}: the permit did not wait for the termination's bound"
    );
    drop(stopped);
    next.release().await.unwrap();
    held.release().await.unwrap();
    capped.close().await;
    holder.close().await;
}

/// PG-R4-4 under load (the review's probe): waiters at the cap that give up at every stage —
/// queued in the client, handed a freed session, waiting on the server — leak no permit (the
/// whole cap is usable afterwards) and the server never sees more of this backend's sessions
/// than the cap, the pool and the `LISTEN` session.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cancelled_waiters_at_the_cap_leak_nothing_and_stay_within_the_cap() {
    let Some(url) = common::url_or_skip() else {
        return;
    };
    let _one = ONE_AT_A_TIME.lock().await;
    const SMALL_CAP: u32 = 2;
    let since: f64 = {
        let mut conn = sqlx::PgConnection::connect(&url).await.unwrap();
        let (now,): (f64,) = sqlx::query_as("SELECT extract(epoch FROM clock_timestamp())::float8")
            .fetch_one(&mut conn)
            .await
            .unwrap();
        now
    };
    let backend = Postgres::connect(capped(&url, SMALL_CAP))
        .await
        .expect("connect");
    let locker = Locker::with_backend(backend);
    let done = Arc::new(AtomicBool::new(false));
    let peak = Arc::new(AtomicI64::new(0));
    let sampler = {
        let (done, peak, url) = (Arc::clone(&done), Arc::clone(&peak), url.clone());
        tokio::spawn(async move {
            let mut conn = sqlx::PgConnection::connect(&url).await.unwrap();
            // The connect-time pooling probe's sessions are gone by then.
            tokio::time::sleep(Duration::from_millis(300)).await;
            while !done.load(Ordering::SeqCst) {
                peak.fetch_max(our_sessions(&mut conn, since).await, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
    };
    let (mut granted, mut timed_out) = (0, 0);
    for round in 0..6u64 {
        // The cap is full (two holders); the waiters queue in the client for a session, get
        // one handed over when `a` is released, then wait on the server for `hot`; their
        // timeouts fire at every one of these stages.
        let a = locker.mutex(unique("a")).lock().await.unwrap();
        let hot = unique("hot");
        let h = locker.mutex(&hot).lock().await.unwrap();
        let mut tasks = Vec::new();
        for i in 0..8u64 {
            let m = locker
                .mutex(&hot)
                .lock_timeout(Duration::from_millis(20 + (i * 71 + round * 13) % 600));
            tasks.push(tokio::spawn(async move {
                match m.lock().await {
                    Ok(g) => {
                        g.release().await.unwrap();
                        true
                    }
                    Err(lock_core::Error::NotAcquired { .. }) => false,
                    Err(e) => panic!("unexpected {}", chain(&e)),
                }
            }));
        }
        tokio::time::sleep(Duration::from_millis((round * 29) % 300)).await;
        a.release().await.unwrap();
        tokio::time::sleep(Duration::from_millis((round * 17) % 300)).await;
        h.release().await.unwrap();
        for t in tasks {
            if t.await.unwrap() {
                granted += 1;
            } else {
                timed_out += 1;
            }
        }
    }
    // The whole cap at once: no permit leaked.
    let started = tokio::time::Instant::now();
    let x = locker
        .mutex(unique("x"))
        .lock_timeout(Duration::from_secs(10))
        .lock()
        .await
        .expect("first permit");
    let y = locker
        .mutex(unique("y"))
        .lock_timeout(Duration::from_secs(10))
        .lock()
        .await
        .expect("second permit");
    let took = started.elapsed();
    x.release().await.unwrap();
    y.release().await.unwrap();
    done.store(true, Ordering::SeqCst);
    sampler.await.unwrap();
    let peak = peak.load(Ordering::SeqCst);
    println!(
        "cap {SMALL_CAP}: {granted} granted, {timed_out} timed out; the whole cap afterwards in \
         {took:?}; at most {peak} server sessions"
    );
    locker.close().await;
    assert!(
        peak <= i64::from(SMALL_CAP + POOL + 1),
        "{peak} server sessions (cap {SMALL_CAP} + pool {POOL} + LISTEN 1)"
    );
}

/// Review finding PG-R4-1: at the session cap, `try_lock` (which makes one attempt) does not
/// wait for a session: it fails at once with an error naming `LOCK_POSTGRES_MAX_SESSIONS`,
/// rather than blocking for the connect timeout, and never reports a free lock busy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn try_lock_at_the_session_cap_fails_at_once_naming_the_cap() {
    let Some(url) = common::url_or_skip() else {
        return;
    };
    let _one = ONE_AT_A_TIME.lock().await;
    let backend = Postgres::connect(capped(&url, 1)).await.expect("connect");
    let locker = Locker::builder(backend)
        .request_timeout(Duration::from_secs(20))
        .build()
        .unwrap();
    let held = locker.mutex(unique("held")).lock().await.unwrap();
    for _ in 0..3 {
        let started = tokio::time::Instant::now();
        let result = locker.mutex(unique("free")).try_lock().await;
        let waited = started.elapsed();
        let text = match &result {
            Ok(Some(_)) => "granted".to_owned(),
            Ok(None) => "busy".to_owned(),
            Err(e) => chain(e),
        };
        println!("try_lock of a free lock at the cap: after {waited:?}: {text}");
        assert!(
            matches!(&result, Err(e) if e.is_retryable()),
            "not a retryable error: {text}"
        );
        assert!(text.contains("LOCK_POSTGRES_MAX_SESSIONS"), "{text}");
        assert!(
            waited < Duration::from_secs(1),
            "try_lock waited {waited:?} at the cap"
        );
    }
    // Below the cap again, it takes the lock.
    held.release().await.unwrap();
    let guard = locker
        .mutex(unique("free"))
        .try_lock()
        .await
        .unwrap()
        .expect("a free lock below the cap");
    guard.release().await.unwrap();
    locker.close().await;
}
