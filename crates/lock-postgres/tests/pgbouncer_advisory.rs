//! Review finding PG-7: advisory mode behind PgBouncer in transaction pooling mode is detected
//! and refused with a clear error, never silently run (where it would release other clients'
//! advisory locks and end PgBouncer's server connections). Review round 4: a busy session pool
//! is not taken for transaction pooling (PG-R4-2); transaction pooling is detected whatever
//! order the pooler hands out server connections in, the errors of a pooler that gets past the
//! probe name it, and relaxed durability's setting never reaches shared server connections
//! (PG-R4-3).

mod common;

use lock_core::{Error, Locker};
use lock_postgres::{Postgres, PostgresMode};
use sqlx::Connection;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

fn pgbouncer_url() -> Option<String> {
    match std::env::var("LOCK_TEST_PGBOUNCER_URL")
        .ok()
        .filter(|u| !u.trim().is_empty())
    {
        Some(url) => Some(url),
        None if lock_testkit::require_servers() => {
            panic!("server required: LOCK_TEST_PGBOUNCER_URL is not set")
        }
        None => {
            println!("skipped: LOCK_TEST_PGBOUNCER_URL is not set");
            None
        }
    }
}

/// An error with its whole source chain.
fn chain(e: &Error) -> String {
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        text.push_str(&format!(": {s}"));
        source = s.source();
    }
    text
}

fn names_pooling(e: &Error) -> bool {
    let text = format!("{e:#} {e:?}");
    text.contains("PgBouncer") && text.contains("transaction pooling")
}

/// Advisory mode through PgBouncer's transaction pooling is refused at connect (a
/// configuration error naming the cause); should a connection slip past the probe, every
/// operation errors clearly and two lockers never hold one name at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn advisory_mode_behind_transaction_pooling_is_refused() {
    let (Some(pooled), Some(direct)) = (pgbouncer_url(), common::url_or_skip()) else {
        return;
    };
    let mut lockers = Vec::new();
    let mut refused = 0;
    for _ in 0..2 {
        let mut config = common::config(&pooled, PostgresMode::Advisory);
        config.listen_url = Some(direct.clone());
        match Postgres::connect(config).await {
            Ok(backend) => lockers.push(Locker::with_backend(backend)),
            Err(e) => {
                assert!(
                    matches!(e, Error::Config { .. }) && names_pooling(&e),
                    "refused, but not clearly: {e:#}"
                );
                refused += 1;
            }
        }
    }
    println!("{refused} of 2 connections refused at connect");
    // Whatever got through: never two holders, and errors name the cause.
    let name = format!("bouncer-{}", ulid::Ulid::generate());
    let holding = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for locker in &lockers {
        let (locker, name, holding) = (locker.clone(), name.clone(), Arc::clone(&holding));
        tasks.push(tokio::spawn(async move {
            let mut errors = 0;
            for _ in 0..50 {
                match locker.mutex(&name).try_lock().await {
                    Ok(Some(guard)) => {
                        assert!(!holding.swap(true, Ordering::SeqCst), "double grant");
                        tokio::task::yield_now().await;
                        holding.store(false, Ordering::SeqCst);
                        let _ = guard.release().await;
                    }
                    Ok(None) => {}
                    Err(e) => {
                        assert!(names_pooling(&e), "an unclear error: {e:#}");
                        errors += 1;
                    }
                }
            }
            errors
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    assert_eq!(
        refused, 2,
        "advisory mode through transaction pooling was not refused"
    );
}

/// The guard every advisory statement on a dedicated session runs first: a statement that
/// lands on another server connection than the one the session was opened on takes nothing and
/// fails with an error naming PgBouncer transaction pooling.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_statement_on_another_server_connection_takes_nothing() {
    let Some(url) = common::url_or_skip() else {
        return;
    };
    // Creates the tables and functions.
    let backend = Postgres::connect(common::config(&url, PostgresMode::Advisory))
        .await
        .expect("connect");
    let mut conn = sqlx::PgConnection::connect(&url).await.unwrap();
    let err = sqlx::query(
        "SELECT pg_advisory_lock(n, 77) FROM lock_test_session_v1(pg_backend_pid() + 1, 7) n",
    )
    .execute(&mut conn)
    .await
    .unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("PgBouncer") && text.contains("transaction pooling"),
        "{text}"
    );
    let (held,): (i64,) = sqlx::query_as(
        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid()",
    )
    .fetch_one(&mut conn)
    .await
    .unwrap();
    assert_eq!(held, 0, "the statement took an advisory lock");
    drop(backend);
}

// ---------------------------------------------------------------------------------------------
// Review round 4: PG-R4-2 and PG-R4-3, each with a PgBouncer of its own.
// ---------------------------------------------------------------------------------------------

/// A PgBouncer of the test's own in front of `LOCK_TEST_POSTGRES_URL`'s server (killed, and its
/// folder removed, on drop).
struct Bouncer {
    process: lock_testkit::ServerProcess,
    dir: std::path::PathBuf,
    url: String,
}

impl Drop for Bouncer {
    fn drop(&mut self) {
        self.process.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Bouncer {
    /// Writes `settings` into the `[pgbouncer]` section and reloads (SIGHUP): PgBouncer applies
    /// a new `pool_mode` to connected clients too.
    async fn reload(&self, settings: &str) {
        let ini = std::fs::read_to_string(self.dir.join("pgbouncer.ini")).unwrap();
        let base = ini.split("# test settings\n").next().unwrap();
        std::fs::write(
            self.dir.join("pgbouncer.ini"),
            format!("{base}# test settings\n{settings}\n"),
        )
        .unwrap();
        let pid = self.process.pid().expect("pgbouncer runs");
        let status = std::process::Command::new("kill")
            .args(["-HUP", &pid.to_string()])
            .status()
            .unwrap();
        assert!(status.success(), "kill -HUP {pid}");
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
}

/// PgBouncer (`pgbouncer` on `PATH` or `/usr/sbin/pgbouncer`) with `settings`, in front of
/// `server_url`'s server; `None` (skipped) when PgBouncer is not installed and servers are not
/// required.
async fn bouncer(server_url: &str, settings: &str) -> Option<Bouncer> {
    let Some(program) = lock_testkit::find_program(&["pgbouncer", "/usr/sbin/pgbouncer"]) else {
        assert!(
            !lock_testkit::require_servers(),
            "server required: pgbouncer not found"
        );
        println!("skipped: pgbouncer not found");
        return None;
    };
    let rest = server_url
        .split('@')
        .nth(1)
        .expect("LOCK_TEST_POSTGRES_URL of the form postgres://user@host:port/db");
    let host_port = rest.split('/').next().unwrap();
    let (host, port) = host_port.split_once(':').unwrap_or((host_port, "5432"));
    let dir = std::env::temp_dir().join(format!("lock-bouncer-{}", ulid::Ulid::generate()));
    std::fs::create_dir_all(&dir).unwrap();
    let listen = lock_testkit::free_port();
    std::fs::write(dir.join("users.txt"), "\"postgres\" \"\"\n").unwrap();
    let ini = format!(
        "[databases]\npostgres = host={host} port={port} dbname=postgres user=postgres\n\
         [pgbouncer]\nlisten_addr = 127.0.0.1\nlisten_port = {listen}\nunix_socket_dir =\n\
         auth_type = trust\nauth_file = {}\nignore_startup_parameters = extra_float_digits\n\
         max_client_conn = 200\n# test settings\n{settings}\n",
        dir.join("users.txt").display()
    );
    std::fs::write(dir.join("pgbouncer.ini"), ini).unwrap();
    // PgBouncer refuses to run as root: `-u postgres` drops to that user in the same process.
    let root = std::process::Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.starts_with(b"0\n"));
    let mut args = vec![dir.join("pgbouncer.ini").display().to_string()];
    if root {
        let _ = std::process::Command::new("chmod")
            .args(["-R", "a+rwX", &dir.display().to_string()])
            .status();
        args.splice(0..0, ["-u".to_owned(), "postgres".to_owned()]);
    }
    let process = lock_testkit::ServerProcess::start(&program, args, Some(dir.join("log")))
        .expect("start pgbouncer");
    assert!(
        lock_testkit::wait_for_port(listen, std::time::Duration::from_secs(10)).await,
        "pgbouncer did not start; see {}",
        dir.join("log").display()
    );
    Some(Bouncer {
        process,
        dir,
        url: format!("postgres://postgres@127.0.0.1:{listen}/postgres"),
    })
}

/// Creates the tables and functions straight on the server, so a connection through a pooler
/// runs no DDL.
async fn migrated(url: &str) {
    let backend = Postgres::connect(common::config(url, PostgresMode::Advisory))
        .await
        .expect("connect");
    Locker::with_backend(backend).close().await;
}

/// Review finding PG-R4-2: through PgBouncer in *session* pooling (which advisory mode can use)
/// whose pool has no server connection to spare at the moment, `connect` in advisory mode is
/// not refused as transaction pooling: the probe's second session cannot run, which says
/// nothing about the pooling mode.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_session_pool_is_not_taken_for_transaction_pooling() {
    let Some(url) = common::url_or_skip() else {
        return;
    };
    migrated(&url).await;
    let Some(bouncer) = bouncer(&url, "pool_mode = session\ndefault_pool_size = 2").await else {
        return;
    };
    // Another client of the pool holds one of its two server connections.
    let mut other = sqlx::PgConnection::connect(&bouncer.url).await.unwrap();
    sqlx::query("SELECT 1").execute(&mut other).await.unwrap();
    let mut config = common::config(&bouncer.url, PostgresMode::Advisory);
    config.listen_url = Some(url.clone());
    config.connect_timeout = std::time::Duration::from_secs(2);
    let started = tokio::time::Instant::now();
    let result = Postgres::connect(config).await;
    let text = match &result {
        Ok(_) => "connected".to_owned(),
        Err(e) => chain(e),
    };
    println!(
        "session pooling, pool of 2, one taken: after {:?}: {text}",
        started.elapsed()
    );
    assert!(
        !matches!(result, Err(Error::Config { .. })),
        "session pooling refused as transaction pooling: {text}"
    );
    // And it works: the pool is free again once `other` leaves.
    drop(other);
    if let Ok(backend) = result {
        let locker = Locker::with_backend(backend);
        let guard = locker
            .mutex(format!("busy-pool-{}", ulid::Ulid::generate()))
            .lock()
            .await
            .expect("a lock through session pooling");
        guard.release().await.unwrap();
        locker.close().await;
    }
}

/// Review finding PG-R4-3: PgBouncer in transaction pooling that hands out server connections
/// oldest-freed first (`server_round_robin = 1`) is refused at connect too (the probe does not
/// depend on the hand-out order), and nothing of advisory mode's session settings reaches the
/// pool's server connections.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifo_transaction_pooling_is_refused_and_leaks_no_setting() {
    let Some(url) = common::url_or_skip() else {
        return;
    };
    migrated(&url).await;
    let Some(bouncer) = bouncer(
        &url,
        "pool_mode = transaction\nserver_round_robin = 1\ndefault_pool_size = 2",
    )
    .await
    else {
        return;
    };
    for _ in 0..3 {
        let mut config = common::config(&bouncer.url, PostgresMode::Advisory);
        config.listen_url = Some(url.clone());
        config.durability = lock_postgres::PostgresDurability::Relaxed;
        let result = Postgres::connect(config).await;
        let text = match &result {
            Ok(_) => "accepted".to_owned(),
            Err(e) => chain(e),
        };
        println!("connect through FIFO transaction pooling: {text}");
        assert!(
            matches!(&result, Err(e @ Error::Config { .. }) if names_pooling(e)),
            "FIFO transaction pooling was not refused at connect: {text}"
        );
    }
    // What another client of the pool runs with on each server connection.
    let mut plain = sqlx::PgConnection::connect(&bouncer.url).await.unwrap();
    let mut seen = Vec::new();
    for _ in 0..6 {
        use sqlx::Row;
        let row = sqlx::raw_sql(
            "SELECT pg_backend_pid(), current_setting('synchronous_commit'), \
             current_setting('statement_timeout')",
        )
        .fetch_one(&mut plain)
        .await
        .unwrap();
        seen.push((
            row.get::<i32, _>(0),
            row.get::<String, _>(1),
            row.get::<String, _>(2),
        ));
    }
    println!("another client of the pool sees: {seen:?}");
    assert!(
        seen.iter()
            .all(|(_, sync, timeout)| sync == "on" && timeout == "0"),
        "session settings leaked to the pool: {seen:?}"
    );
}

/// PG-R4-3, should a pooler get past the connect probe (here PgBouncer is switched from session
/// to transaction pooling while advisory mode is connected through it; the sessions opened
/// before stay on their server connections, new ones are pooled per transaction): every error
/// names transaction pooling — also sqlx's prepared statements clashing on shared server
/// connections, which the session guard cannot catch — and relaxed durability's
/// `synchronous_commit = off` stays inside the library's own transactions, so it never reaches
/// another client of the pool.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pooling_that_starts_after_connect_fails_clearly_and_leaks_no_relaxed_commit() {
    let Some(url) = common::url_or_skip() else {
        return;
    };
    migrated(&url).await;
    let Some(bouncer) = bouncer(&url, "pool_mode = session\ndefault_pool_size = 20").await else {
        return;
    };
    let mut config = common::config(&bouncer.url, PostgresMode::Advisory);
    config.listen_url = Some(url.clone());
    config.durability = lock_postgres::PostgresDurability::Relaxed;
    let backend = Postgres::connect(config)
        .await
        .expect("connect through session pooling");
    let locker = Locker::with_backend(backend);
    let names: Vec<String> = (0..6)
        .map(|i| format!("switch{i}-{}", ulid::Ulid::generate()))
        .collect();
    // Two dedicated sessions opened under session pooling, idle in the cache.
    let a = locker.mutex(&names[0]).lock().await.unwrap();
    let b = locker.mutex(&names[1]).lock().await.unwrap();
    a.release().await.unwrap();
    b.release().await.unwrap();
    bouncer
        .reload("pool_mode = transaction\nserver_round_robin = 1\ndefault_pool_size = 20")
        .await;
    // Six locks held at once: new sessions, opened under transaction pooling.
    let (mut outcomes, mut errors) = (Vec::new(), Vec::new());
    for _ in 0..3 {
        let mut guards = Vec::new();
        for name in &names {
            match locker.mutex(name).try_lock().await {
                Ok(Some(guard)) => {
                    outcomes.push("granted".to_owned());
                    guards.push(guard);
                }
                Ok(None) => outcomes.push("busy".to_owned()),
                Err(e) => {
                    outcomes.push(chain(&e));
                    errors.push(e);
                }
            }
        }
        for guard in guards {
            if let Err(e) = guard.release().await {
                outcomes.push(format!("release: {}", chain(&e)));
                errors.push(e);
            }
        }
    }
    println!("after the switch to transaction pooling: {outcomes:#?}");
    locker.close().await;
    let unclear: Vec<String> = errors
        .iter()
        .filter(|e| !(matches!(e, Error::Config { .. }) && names_pooling(e)))
        .map(chain)
        .collect();
    assert!(
        unclear.is_empty(),
        "errors that do not name pooling: {unclear:#?}"
    );
    assert!(
        errors
            .iter()
            .any(|e| chain(e).contains("prepared statement")),
        "no clash of prepared statements was seen (the test did not reach its point)"
    );
    // What another client of the pool runs with on its server connections (handed out in turn),
    // the closed sessions' among them: `statement_timeout` is still session-level there (see
    // the crate README), `synchronous_commit` never is.
    let mut plain = sqlx::PgConnection::connect(&bouncer.url).await.unwrap();
    let mut seen = Vec::new();
    for _ in 0..12 {
        use sqlx::Row;
        let row = sqlx::raw_sql(
            "SELECT pg_backend_pid(), current_setting('synchronous_commit'), \
             current_setting('statement_timeout')",
        )
        .fetch_one(&mut plain)
        .await
        .unwrap();
        seen.push((
            row.get::<i32, _>(0),
            row.get::<String, _>(1),
            row.get::<String, _>(2),
        ));
    }
    println!("another client of the pool sees: {seen:?}");
    assert!(
        seen.iter().all(|(_, sync, _)| sync == "on"),
        "synchronous_commit = off leaked to the pool: {seen:?}"
    );
}
