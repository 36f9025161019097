//! Fault tests on a PostgreSQL server of their own: server restarts, killed connections, hung
//! holders, and the safety checker under those faults.
//!
//! Each test runs `initdb` and `postgres` from the PostgreSQL binaries (found on `PATH` or under
//! `/usr/lib/postgresql/*/bin`) in a temporary directory. PostgreSQL refuses to run as root, so
//! as root both run as the `postgres` user through `setpriv`, which execs the program itself:
//! the test's `ServerProcess` is the postmaster, and signals reach it. Without the binaries a
//! test is skipped, or fails with `LOCK_TEST_REQUIRE_SERVERS=1`.

use lock_core::{Error, Guard, Locker};
use lock_postgres::{Postgres, PostgresConfig, PostgresMode};
use lock_testkit::{
    FencedRegister, SafetyConfig, ServerProcess, find_program, free_port, require_servers,
    run_safety_checker, wait_for_port,
};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::Duration;
use tokio::time::Instant;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// A throwaway PostgreSQL server.
struct PgServer {
    process: ServerProcess,
    port: u16,
    dir: PathBuf,
}

fn is_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

fn pg_program(name: &str) -> Option<PathBuf> {
    let mut candidates = vec![name.to_owned()];
    for version in ["18", "17", "16", "15", "14"] {
        candidates.push(format!("/usr/lib/postgresql/{version}/bin/{name}"));
    }
    let candidates: Vec<&str> = candidates.iter().map(String::as_str).collect();
    find_program(&candidates)
}

/// `program args...`, or `setpriv ... program args...` as the `postgres` user when root.
fn as_postgres(program: &Path, args: &[String]) -> Result<(PathBuf, Vec<String>), String> {
    let mut all: Vec<String> = args.to_vec();
    if !is_root() {
        return Ok((program.to_owned(), all));
    }
    let setpriv = find_program(&["setpriv"]).ok_or("setpriv (util-linux) not found")?;
    let mut wrapped = vec![
        "--reuid=postgres".to_owned(),
        "--regid=postgres".to_owned(),
        "--init-groups".to_owned(),
        program.display().to_string(),
    ];
    wrapped.append(&mut all);
    Ok((setpriv, wrapped))
}

impl PgServer {
    /// Starts a server; `Err(reason)` when PostgreSQL is not installed.
    fn start() -> Result<PgServer, String> {
        let initdb = pg_program("initdb").ok_or("PostgreSQL's initdb not found")?;
        let postgres = pg_program("postgres").ok_or("PostgreSQL's postgres not found")?;
        let dir = std::env::temp_dir().join(format!("lock-pg-faults-{}", ulid::Ulid::generate()));
        std::fs::create_dir_all(&dir).map_err(|e| format!("create {}: {e}", dir.display()))?;
        if is_root() {
            let status = Command::new("chown")
                .args(["postgres:postgres", &dir.display().to_string()])
                .status()
                .map_err(|e| format!("chown: {e}"))?;
            if !status.success() {
                return Err("chown of the data directory to postgres failed".into());
            }
        }
        let data = dir.join("data");
        let (program, args) = as_postgres(
            &initdb,
            &[
                "-D".into(),
                data.display().to_string(),
                "-U".into(),
                "postgres".into(),
                "-A".into(),
                "trust".into(),
                "-E".into(),
                "UTF8".into(),
                "--no-sync".into(),
            ],
        )?;
        let output = Command::new(program)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("initdb: {e}"))?;
        if !output.status.success() {
            return Err(format!(
                "initdb failed: {}",
                String::from_utf8_lossy(&output.stderr)
            ));
        }
        let port = free_port();
        let (program, args) = as_postgres(
            &postgres,
            &[
                "-D".into(),
                data.display().to_string(),
                "-p".into(),
                port.to_string(),
                "-k".into(),
                dir.display().to_string(),
                "-c".into(),
                "listen_addresses=127.0.0.1".into(),
                "-c".into(),
                "max_connections=200".into(),
                "-c".into(),
                "fsync=off".into(),
            ],
        )?;
        let process = ServerProcess::start(program, args, Some(dir.join("server.log")))
            .map_err(|e| format!("start postgres: {e}"))?;
        Ok(PgServer { process, port, dir })
    }

    fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    fn signal(&self, signal: &str) {
        if let Some(pid) = self.process.pid() {
            let _ = Command::new("kill")
                .args([signal, &pid.to_string()])
                .status();
        }
    }

    /// Waits until the postmaster has exited (after a shutdown signal).
    async fn wait_exit(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(15);
        while self.process.is_running() && Instant::now() < deadline {
            tokio::time::sleep(ms(50)).await;
        }
    }

    /// Crashes the server (immediate shutdown: every session ends at once, no checkpoint)
    /// and starts it again on the same data.
    async fn restart(&mut self) {
        self.signal("-QUIT");
        self.wait_exit().await;
        self.process.restart().expect("restart postgres");
        assert!(
            wait_for_port(self.port, Duration::from_secs(30)).await,
            "postgres did not come back"
        );
    }

    /// A plain connection for the test's own queries.
    async fn admin(&self) -> sqlx::PgConnection {
        use sqlx::Connection;
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match sqlx::PgConnection::connect(&self.url()).await {
                Ok(conn) => return conn,
                Err(e) if Instant::now() > deadline => panic!("admin connection: {e}"),
                Err(_) => tokio::time::sleep(ms(100)).await,
            }
        }
    }

    /// A locker on this server, waiting for the server to accept connections.
    async fn locker(&self, mode: PostgresMode) -> Locker {
        self.locker_as("postgres", mode).await
    }

    /// A locker connecting as `role`.
    async fn locker_as(&self, role: &str, mode: PostgresMode) -> Locker {
        let url = format!("postgres://{role}@127.0.0.1:{}/postgres", self.port);
        let mut config = PostgresConfig::new(url);
        config.mode = mode;
        config.max_connections = 4;
        config.connect_timeout = Duration::from_secs(2);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match Postgres::connect(config.clone()).await {
                Ok(backend) => return Locker::with_backend(backend),
                Err(e) if Instant::now() > deadline => panic!("connect: {e:#}"),
                Err(_) => tokio::time::sleep(ms(100)).await,
            }
        }
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        // Fast shutdown, so no backend outlives the postmaster; then clean up.
        self.signal("-INT");
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while self.process.is_running() && std::time::Instant::now() < deadline {
            std::thread::sleep(ms(50));
        }
        self.process.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The server, or `None` (after saying why) when PostgreSQL is missing and not required.
fn server(test: &str) -> Option<PgServer> {
    match PgServer::start() {
        Ok(server) => Some(server),
        Err(reason) if require_servers() => {
            panic!("{test}: PostgreSQL required (LOCK_TEST_REQUIRE_SERVERS=1): {reason}")
        }
        Err(reason) => {
            println!("skipped {test}: {reason}");
            None
        }
    }
}

/// An `on_lost` counter.
fn lost_counter() -> (
    Arc<AtomicU32>,
    impl Fn(&lock_core::LockInfo) + Send + Sync + 'static,
) {
    let count = Arc::new(AtomicU32::new(0));
    let counter = count.clone();
    (count, move |_: &lock_core::LockInfo| {
        counter.fetch_add(1, Ordering::SeqCst);
    })
}

async fn session_pid(admin: &mut sqlx::PgConnection, name: &str) -> i32 {
    let (pid,): (Option<i32>,) = sqlx::query_as("SELECT pid FROM lock_leases WHERE name = $1")
        .bind(name)
        .fetch_one(&mut *admin)
        .await
        .expect("the lease row");
    pid.expect("an advisory lease records its session")
}

async fn session_exists(admin: &mut sqlx::PgConnection, pid: i32) -> bool {
    let (n,): (i64,) = sqlx::query_as("SELECT count(*) FROM pg_stat_activity WHERE pid = $1")
        .bind(pid)
        .fetch_one(&mut *admin)
        .await
        .unwrap();
    n > 0
}

/// Ends every connection the library opened (pools, listeners, held sessions, waiters).
async fn kill_library_connections(admin: &mut sqlx::PgConnection) -> i64 {
    let (n,): (i64,) = sqlx::query_as(
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
         WHERE application_name = 'lock-postgres' AND pid <> pg_backend_pid()",
    )
    .fetch_one(&mut *admin)
    .await
    .unwrap();
    n
}

/// Advisory mode: a restart ends every session. Holders are told `Lost`, the old leases still
/// block until their TTL (they are in the table), new acquisitions work after that, with larger
/// tokens, and nothing stays held.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn advisory_restart_tells_holders_lost_and_locks_come_back() {
    let Some(mut server) = server("advisory_restart_tells_holders_lost_and_locks_come_back") else {
        return;
    };
    let locker = server.locker(PostgresMode::Advisory).await;
    let (lost, on_lost) = lost_counter();
    let guard = locker
        .mutex("held")
        .ttl(ms(2000))
        .auto_extend(true)
        .on_lost(on_lost)
        .lock()
        .await
        .unwrap();
    let reader = locker.rw_mutex("rw").ttl(ms(2000)).read().await.unwrap();
    let crashed = locker.mutex("crashed").ttl(ms(2000)).lock().await.unwrap();
    let (held_token, crashed_token) = (guard.token(), crashed.token());
    std::mem::forget(crashed);

    server.restart().await;

    tokio::time::timeout(Duration::from_secs(20), guard.lost())
        .await
        .expect("the holder was not told its lock was lost");
    assert!(
        lock_testkit::eventually(Duration::from_secs(5), || async {
            lost.load(Ordering::SeqCst) > 0
        })
        .await,
        "on_lost did not run"
    );
    tokio::time::sleep(ms(300)).await;
    assert_eq!(lost.load(Ordering::SeqCst), 1, "on_lost must run once");
    assert!(matches!(guard.release().await, Err(Error::Lost { .. })));

    let other = server.locker(PostgresMode::Advisory).await;
    for (name, old) in [("held", held_token), ("crashed", crashed_token)] {
        let next = other
            .mutex(name)
            .lock_timeout(Duration::from_secs(30))
            .lock()
            .await
            .unwrap_or_else(|e| panic!("{name} not acquirable after the restart: {e}"));
        assert!(
            next.token() > old,
            "{name}: token {} not above {old}",
            next.token()
        );
        next.release().await.unwrap();
    }
    let writer = other
        .rw_mutex("rw")
        .lock_timeout(Duration::from_secs(30))
        .write()
        .await
        .expect("the reader's lease stayed after the restart");
    writer.release().await.unwrap();
    drop(reader);
    for name in ["held", "crashed", "rw"] {
        assert!(
            lock_testkit::eventually(Duration::from_secs(10), || async {
                other.inspect(name).await.unwrap().is_empty()
            })
            .await,
            "{name} still held"
        );
    }
    other.close().await;
    locker.close().await;
}

/// Lease mode: the leases are rows that survive the restart. A holder whose extensions get
/// through keeps its lock (the table proves nobody else got it); new acquisitions work at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn lease_restart_keeps_the_lock_of_a_live_holder() {
    let Some(mut server) = server("lease_restart_keeps_the_lock_of_a_live_holder") else {
        return;
    };
    let locker = server.locker(PostgresMode::Lease).await;
    let (lost, on_lost) = lost_counter();
    let guard = locker
        .mutex("held")
        .ttl(Duration::from_secs(10))
        .auto_extend(true)
        .extend_interval(ms(500))
        .on_lost(on_lost)
        .lock()
        .await
        .unwrap();
    let crashed = locker.mutex("crashed").ttl(ms(1500)).lock().await.unwrap();
    let crashed_token = crashed.token();
    std::mem::forget(crashed);

    server.restart().await;
    // Past several extension periods, and past the crashed holder's TTL.
    tokio::time::sleep(Duration::from_secs(3)).await;

    assert!(
        !guard.is_lost(),
        "a live holder lost its lock over a restart"
    );
    assert_eq!(lost.load(Ordering::SeqCst), 0);
    let other = server.locker(PostgresMode::Lease).await;
    let holders = other.inspect("held").await.unwrap();
    assert_eq!(holders.len(), 1);
    assert_eq!(holders[0].token, guard.token());
    assert!(other.mutex("held").try_lock().await.unwrap().is_none());

    let next = other
        .mutex("crashed")
        .lock_timeout(Duration::from_secs(15))
        .lock()
        .await
        .expect("the crashed holder's lease did not expire after the restart");
    assert!(next.token() > crashed_token);
    next.release().await.unwrap();
    let fresh = other.mutex("fresh").try_lock().await.unwrap();
    fresh
        .expect("a new lock right after the restart")
        .release()
        .await
        .unwrap();

    guard.release().await.unwrap();
    assert!(other.inspect("held").await.unwrap().is_empty());
    other.close().await;
    locker.close().await;
}

/// Advisory mode: `pg_terminate_backend` on a holder's session. The holder is told `Lost`
/// (`on_lost` runs once) at its next extension; the lock is released (its lease stops at its
/// TTL) and goes to the next client with a larger token; the old holder's write is fenced off.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn advisory_killed_session_fires_on_lost_and_frees_the_lock() {
    let Some(server) = server("advisory_killed_session_fires_on_lost_and_frees_the_lock") else {
        return;
    };
    let mut admin = server.admin().await;
    let locker = server.locker(PostgresMode::Advisory).await;
    let other = server.locker(PostgresMode::Advisory).await;
    let (lost, on_lost) = lost_counter();
    let guard = locker
        .mutex("m")
        .ttl(ms(2000))
        .auto_extend(true)
        .extend_interval(ms(300))
        .on_lost(on_lost)
        .lock()
        .await
        .unwrap();
    let pid = session_pid(&mut admin, "m").await;
    let (terminated,): (bool,) = sqlx::query_as("SELECT pg_terminate_backend($1, 5000)")
        .bind(pid)
        .fetch_one(&mut admin)
        .await
        .unwrap();
    assert!(terminated);

    tokio::time::timeout(Duration::from_secs(5), guard.lost())
        .await
        .expect("on_lost did not fire after the session was killed");
    tokio::time::sleep(ms(300)).await;
    assert_eq!(
        lost.load(Ordering::SeqCst),
        1,
        "on_lost must run exactly once"
    );

    let started = Instant::now();
    let next = other
        .mutex("m")
        .lock_timeout(Duration::from_secs(15))
        .lock()
        .await
        .expect("the killed holder's lock was never released");
    assert!(started.elapsed() < Duration::from_secs(10));
    assert!(next.token() > guard.token());
    let register = FencedRegister::new();
    register.write(next.token(), 1).unwrap();
    assert!(
        register.write(guard.token(), 2).is_err(),
        "the old holder's write must be rejected"
    );
    assert!(matches!(guard.release().await, Err(Error::Lost { .. })));
    next.release().await.unwrap();
    locker.close().await;
    other.close().await;
}

/// Lease mode, the equivalent fault: every connection of the library killed (pool, listener).
/// There is no session state, so the holder keeps its lease, keeps extending on new
/// connections, and releases normally; waiters still get the lock afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn lease_killed_connections_do_not_lose_the_lock() {
    let Some(server) = server("lease_killed_connections_do_not_lose_the_lock") else {
        return;
    };
    let mut admin = server.admin().await;
    let locker = server.locker(PostgresMode::Lease).await;
    let other = server.locker(PostgresMode::Lease).await;
    let (lost, on_lost) = lost_counter();
    let guard = locker
        .mutex("m")
        .ttl(ms(1500))
        .auto_extend(true)
        .on_lost(on_lost)
        .lock()
        .await
        .unwrap();
    let waiter = tokio::spawn({
        let mutex = other.mutex("m").lock_timeout(Duration::from_secs(20));
        async move { mutex.lock().await }
    });
    for _ in 0..3 {
        assert!(kill_library_connections(&mut admin).await > 0);
        tokio::time::sleep(ms(700)).await;
    }
    tokio::time::sleep(ms(1000)).await; // past the TTL: only extensions kept it
    assert!(
        !guard.is_lost(),
        "the holder lost its lock to killed connections"
    );
    assert_eq!(lost.load(Ordering::SeqCst), 0);
    assert!(!waiter.is_finished(), "the waiter was granted a held lock");
    let holders = other.inspect("m").await.unwrap();
    assert_eq!(holders.len(), 1);
    assert_eq!(holders[0].token, guard.token());
    let token = guard.token();
    guard.release().await.unwrap();
    let next = tokio::time::timeout(Duration::from_secs(20), waiter)
        .await
        .expect("waiter not granted after the release")
        .unwrap()
        .unwrap();
    assert!(next.token() > token);
    next.release().await.unwrap();
    locker.close().await;
    other.close().await;
}

/// A hung holder (no extensions, process alive, session open) loses the lock after its TTL; the
/// next holder gets a larger token and the hung holder's late write is rejected. In advisory
/// mode the contender ends the hung session with `pg_terminate_backend`.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hung_holder_loses_the_lock_after_its_ttl() {
    let Some(server) = server("hung_holder_loses_the_lock_after_its_ttl") else {
        return;
    };
    let mut admin = server.admin().await;
    for mode in [PostgresMode::Advisory, PostgresMode::Lease] {
        let name = format!("hung-{mode}");
        let hung_locker = server.locker(mode).await;
        let other = server.locker(mode).await;
        let register = FencedRegister::new();
        let hung: Guard = hung_locker.mutex(&name).ttl(ms(1000)).lock().await.unwrap();
        let value = register.read();
        let pid = match mode {
            PostgresMode::Advisory => Some(session_pid(&mut admin, &name).await),
            PostgresMode::Lease => None,
        };

        let started = Instant::now();
        let next = other
            .mutex(&name)
            .lock_timeout(Duration::from_secs(20))
            .lock()
            .await
            .unwrap_or_else(|e| panic!("{mode}: the hung holder kept the lock: {e}"));
        assert!(
            started.elapsed() >= ms(500),
            "{mode}: granted long before the hung holder's TTL"
        );
        assert!(next.token() > hung.token());
        register.write(next.token(), value + 1).unwrap();
        let stale = register.write(hung.token(), value + 1);
        assert!(
            stale.is_err(),
            "{mode}: the hung holder's stale write was accepted"
        );
        if let Some(pid) = pid {
            assert!(
                !session_exists(&mut admin, pid).await,
                "{mode}: the hung holder's session was not ended"
            );
        }
        // The backend no longer has the lease; the guard, past its validity, is lost.
        let key = lock_core::LockKey::new(&name, lock_core::LockKind::Mutex).unwrap();
        assert!(matches!(
            hung_locker
                .backend()
                .extend_dyn(&key, hung.lease_id(), ms(1000))
                .await,
            Err(Error::Expired { .. })
        ));
        assert!(matches!(
            hung.extend(ms(1000)).await,
            Err(Error::Lost { .. })
        ));
        assert!(matches!(
            hung.release().await,
            Err(Error::NotHeld { .. } | Error::Lost { .. })
        ));
        let holders = other.inspect(&name).await.unwrap();
        assert_eq!(holders.len(), 1, "{mode}");
        assert_eq!(holders[0].token, next.token(), "{mode}");
        next.release().await.unwrap();
        hung_locker.close().await;
        other.close().await;
    }
}

/// Advisory mode with application roles that may use the tables but not create them, nor end
/// each other's sessions: a contender cannot end a hung holder's session and says why
/// (`ProviderUnavailable`, SQLSTATE 42501); granted `pg_signal_backend`, it can.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ending_a_hung_session_needs_the_privilege() {
    let Some(server) = server("ending_a_hung_session_needs_the_privilege") else {
        return;
    };
    let mut admin = server.admin().await;
    server.locker(PostgresMode::Advisory).await.close().await; // creates the tables
    for role in ["app_a", "app_b"] {
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
            "CREATE ROLE {role} LOGIN; \
             GRANT SELECT, INSERT, UPDATE, DELETE ON lock_locks, lock_leases, lock_claims TO {role}"
        )))
        .execute(&mut admin)
        .await
        .unwrap();
    }
    let holder = server.locker_as("app_a", PostgresMode::Advisory).await;
    let contender = server.locker_as("app_b", PostgresMode::Advisory).await;
    let hung = holder.mutex("m").ttl(ms(1000)).lock().await.unwrap();
    tokio::time::sleep(ms(1200)).await;
    match contender
        .mutex("m")
        .lock_timeout(Duration::from_secs(15))
        .lock()
        .await
    {
        Err(e @ Error::ProviderUnavailable { .. }) => {
            let chain = format!("{e:?}");
            assert!(
                chain.contains("42501"),
                "insufficient_privilege expected: {chain}"
            );
        }
        other => panic!("expected ProviderUnavailable (insufficient privilege), got {other:?}"),
    }
    sqlx::query("GRANT pg_signal_backend TO app_b")
        .execute(&mut admin)
        .await
        .unwrap();
    let next = contender
        .mutex("m")
        .lock_timeout(Duration::from_secs(20))
        .lock()
        .await
        .expect("with pg_signal_backend the hung holder's session is ended");
    assert!(next.token() > hung.token());
    next.release().await.unwrap();
    holder.close().await;
    contender.close().await;
}

/// The safety checker while a fault injector kills the library's connections (held sessions,
/// waiters, pools, listeners) every few hundred milliseconds and the server is crashed and
/// restarted once: no two holders overlap, in either mode.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn safety_checker_under_faults_finds_no_overlap() {
    let Some(server) = server("safety_checker_under_faults_finds_no_overlap") else {
        return;
    };
    let server = Arc::new(tokio::sync::Mutex::new(server));
    for mode in [PostgresMode::Advisory, PostgresMode::Lease] {
        let lockers = {
            let server = server.lock().await;
            let mut lockers = Vec::new();
            for _ in 0..3 {
                lockers.push(server.locker(mode).await);
            }
            lockers
        };
        let name = format!("register-{mode}");
        let handles = (0..6)
            .map(|i| {
                lockers[i % 3]
                    .mutex(&name)
                    .ttl(ms(1500))
                    .auto_extend(true)
                    .lock_timeout(Duration::from_secs(20))
            })
            .collect();
        let stop = Arc::new(AtomicBool::new(false));
        let injector = tokio::spawn({
            let (server, stop, name) = (server.clone(), stop.clone(), name.clone());
            async move {
                let mut admin = server.lock().await.admin().await;
                let mut round = 0u32;
                let mut kills = 0i64;
                let mut restarted = false;
                while !stop.load(Ordering::SeqCst) {
                    tokio::time::sleep(ms(200)).await;
                    round += 1;
                    if round == 8 {
                        let mut server = server.lock().await;
                        server.restart().await;
                        admin = server.admin().await;
                        restarted = true;
                        continue;
                    }
                    // Alternately: the current holder's session (advisory mode), and any one
                    // connection of the library (pools, listeners, waiters, held sessions).
                    let text = if round.is_multiple_of(2) {
                        "SELECT count(pg_terminate_backend(pid)) FROM lock_leases \
                         WHERE name = $1 AND pid IS NOT NULL"
                    } else {
                        "SELECT count(pg_terminate_backend(pid)) FROM (SELECT pid FROM \
                         pg_stat_activity WHERE application_name = 'lock-postgres' \
                         AND $1 <> '' ORDER BY random() LIMIT 1) s"
                    };
                    let killed: Result<(i64,), _> =
                        sqlx::query_as(text).bind(&name).fetch_one(&mut admin).await;
                    kills += killed.map_or(0, |k| k.0);
                }
                (kills, restarted)
            }
        });
        let config = SafetyConfig {
            grants_per_worker: 12,
            hold: ms(30),
            max_duration: Duration::from_secs(50),
        };
        let report = run_safety_checker(handles, config).await;
        stop.store(true, Ordering::SeqCst);
        let (kills, restarted) = injector.await.unwrap();
        println!("{mode}: {report}; connections killed: {kills}, restarted: {restarted}");
        assert_eq!(report.overlaps, 0, "{mode}: {report}");
        assert!(report.grants >= 24, "{mode}: too little progress: {report}");
        assert!(kills > 0, "{mode}: the injector killed nothing");
        assert!(restarted, "{mode}: the run ended before the server restart");
        for locker in lockers {
            locker.close().await;
        }
    }
}
