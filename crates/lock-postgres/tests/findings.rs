//! Regression tests of the review's low findings PG-8 to PG-10 (PG-11 and PG-12 are answered in
//! the crate README), of PG-5 (tokens that survive lost commits) and of review round 4's
//! PG-R4-5 (error chains that do not repeat themselves).

mod common;

use lock_core::{Error, Locker, RetryPolicy};
use lock_postgres::{Postgres, PostgresMode};
use sqlx::Connection;
use std::time::Duration;

const MODES: [PostgresMode; 2] = [PostgresMode::Advisory, PostgresMode::Lease];

fn one_try() -> RetryPolicy {
    RetryPolicy {
        max_attempts: 1,
        ..RetryPolicy::default()
    }
}

async fn locker(url: &str, mode: PostgresMode, owner: Option<&str>) -> Locker {
    let backend = Postgres::connect(common::config(url, mode))
        .await
        .expect("connect");
    // Above the 5 s a contender waits for a hung session to end.
    let mut builder = Locker::builder(backend)
        .retry(one_try())
        .request_timeout(Duration::from_secs(15));
    if let Some(owner) = owner {
        builder = builder.owner(owner);
    }
    builder.build().unwrap()
}

/// PG-8: a NUL byte in metadata or in the owner id is stored (escaped like names) and read back
/// by `inspect`, in both modes, instead of failing as an unavailable backend and being retried.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn nul_in_metadata_or_owner_is_stored_and_read_back() {
    let Some(url) = common::url_or_skip() else {
        return;
    };
    for mode in MODES {
        let owner = "worker\0one\\0";
        let locker = locker(&url, mode, Some(owner)).await;
        let name = format!("nul-meta-{mode:?}-{}", ulid::Ulid::generate());
        let guard = locker
            .mutex(&name)
            .metadata("k\0ey", "va\0lue\\")
            .try_lock()
            .await;
        let guard = guard
            .unwrap_or_else(|e| panic!("{mode:?}: NUL in metadata or owner failed: {e:#}"))
            .expect("free lock");
        let holders = locker.inspect(&name).await.unwrap();
        assert_eq!(holders.len(), 1, "{mode:?}");
        assert_eq!(holders[0].owner, owner, "{mode:?}");
        assert_eq!(
            holders[0].metadata.get("k\0ey").map(String::as_str),
            Some("va\0lue\\"),
            "{mode:?}"
        );
        guard.release().await.unwrap();
        locker.close().await;
    }
}

/// PG-9: an advisory wait that timed out must not leave its `lock_timeout` on the session: the
/// session is reused by the next acquisition, whose wait for the lock's row (held here by
/// another transaction for 600 ms) must not fail with 55P03. The caller gives up at several
/// points, so that some end while it waits on the client between two server-side waits (the
/// session is then parked with the timed-out wait's setting, not ended as an orphan).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_timed_out_wait_leaves_no_lock_timeout_on_the_reused_session() {
    let Some(url) = common::url_or_skip() else {
        return;
    };
    for give_up in (200..=500).step_by(50) {
        timed_out_wait_then_row_wait(&url, Duration::from_millis(give_up)).await;
    }
}

async fn timed_out_wait_then_row_wait(url: &str, give_up: Duration) {
    let holder = locker(url, PostgresMode::Advisory, None).await;
    let waiter = locker(url, PostgresMode::Advisory, None).await;
    let (busy, other) = (
        format!("pg9-busy-{}", ulid::Ulid::generate()),
        format!("pg9-other-{}", ulid::Ulid::generate()),
    );
    // The other lock's row exists.
    waiter
        .mutex(&other)
        .try_lock()
        .await
        .unwrap()
        .unwrap()
        .release()
        .await
        .unwrap();
    let held = holder.mutex(&busy).lock().await.unwrap();
    // Server-side waits with lock_timeout = claim / 3 (about 170 ms) that time out.
    let timed_out = waiter
        .mutex(&busy)
        .ttl(Duration::from_millis(500))
        .lock_timeout(give_up)
        .lock()
        .await;
    assert!(
        matches!(timed_out, Err(Error::NotAcquired { .. })),
        "{timed_out:?}"
    );
    // Another transaction holds the other lock's row for 600 ms.
    let (locked_tx, locked_rx) = tokio::sync::oneshot::channel();
    let (blocker_url, row) = (url.to_owned(), other.clone());
    let release_row = tokio::spawn(async move {
        let mut blocker = sqlx::PgConnection::connect(&blocker_url).await.unwrap();
        let mut tx = blocker.begin().await.unwrap();
        sqlx::query("SELECT 1 FROM lock_test_locks WHERE name = $1 FOR UPDATE")
            .bind(&row)
            .execute(&mut *tx)
            .await
            .unwrap();
        locked_tx.send(()).unwrap();
        tokio::time::sleep(Duration::from_millis(600)).await;
        tx.commit().await.unwrap();
    });
    locked_rx.await.unwrap();
    let got = waiter.mutex(&other).try_lock().await;
    let got = got.unwrap_or_else(|e| {
        panic!("after giving up at {give_up:?}, the reused session failed the row wait: {e:#}")
    });
    got.expect("free lock").release().await.unwrap();
    release_row.await.unwrap();
    held.release().await.unwrap();
    holder.close().await;
    waiter.close().await;
}

fn signal(pid: i32, sig: &str) {
    let status = std::process::Command::new("kill")
        .args([sig, &pid.to_string()])
        .status()
        .expect("kill");
    assert!(status.success(), "kill {sig} {pid}");
}

/// PG-10: when a hung holder's session does not end within the wait (here: its backend is
/// stopped with SIGSTOP, so `pg_terminate_backend` returns false), the record of that session
/// is kept, so that a later contender ends it; the lock is granted once it is gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_session_that_does_not_end_stays_recorded() {
    let Some(url) = common::url_or_skip() else {
        return;
    };
    if !url.contains("127.0.0.1") && !url.contains("localhost") {
        println!("skipped: needs a local server (it stops a backend process)");
        return;
    }
    let hung_side = locker(&url, PostgresMode::Advisory, None).await;
    let contender = locker(&url, PostgresMode::Advisory, None).await;
    let name = format!("pg10-{}", ulid::Ulid::generate());
    let hung = hung_side
        .mutex(&name)
        .ttl(Duration::from_secs(1))
        .lock()
        .await
        .unwrap();
    let mut admin = sqlx::PgConnection::connect(&url).await.unwrap();
    let (pid,): (i32,) = sqlx::query_as("SELECT pid FROM lock_test_leases WHERE name = $1")
        .bind(&name)
        .fetch_one(&mut admin)
        .await
        .unwrap();
    signal(pid, "-STOP");
    tokio::time::sleep(Duration::from_millis(1300)).await;
    let started = std::time::Instant::now();
    let first = contender.mutex(&name).try_lock().await;
    println!("first try_lock after {:?}: {first:?}", started.elapsed());
    let recorded: Vec<(i32,)> = sqlx::query_as("SELECT pid FROM lock_test_leases WHERE name = $1")
        .bind(&name)
        .fetch_all(&mut admin)
        .await
        .unwrap();
    signal(pid, "-CONT");
    assert!(
        matches!(first, Ok(None) | Err(Error::ProviderUnavailable { .. })),
        "granted while the stopped session still held the advisory lock: {first:?}"
    );
    assert_eq!(
        recorded,
        vec![(pid,)],
        "the record of the session that did not end was deleted"
    );
    let got = contender
        .mutex(&name)
        .lock_timeout(Duration::from_secs(10))
        .lock()
        .await
        .expect("granted once the stopped session is gone");
    got.release().await.unwrap();
    drop(hung);
    hung_side.close().await;
    contender.close().await;
}

/// The server clock in microseconds since the epoch.
async fn server_micros(conn: &mut sqlx::PgConnection) -> i64 {
    let (now,): (i64,) =
        sqlx::query_as("SELECT (extract(epoch FROM clock_timestamp()) * 1000000)::bigint")
            .fetch_one(conn)
            .await
            .unwrap();
    now
}

/// PG-5: a token is at least the server clock in microseconds, so a lost commit (the lock's row
/// gone, as after an asynchronous-standby failover, a point-in-time restore or a crash with
/// `synchronous_commit = off`) never re-issues a token: here the row is deleted by hand, and
/// the next token still exceeds every earlier one.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn tokens_survive_a_lost_lock_row() {
    let Some(url) = common::url_or_skip() else {
        return;
    };
    let mut admin = sqlx::PgConnection::connect(&url).await.unwrap();
    for mode in MODES {
        let locker = locker(&url, mode, None).await;
        let name = format!("pg5-{mode:?}-{}", ulid::Ulid::generate());
        let before = server_micros(&mut admin).await;
        let guard = locker.mutex(&name).try_lock().await.unwrap().unwrap();
        let first = guard.token().0;
        guard.release().await.unwrap();
        assert!(
            i64::try_from(first).unwrap() >= before,
            "{mode:?}: token {first} is below the server clock {before}"
        );
        sqlx::query("DELETE FROM lock_test_locks WHERE name = $1")
            .bind(&name)
            .execute(&mut admin)
            .await
            .unwrap();
        let guard = locker.mutex(&name).try_lock().await.unwrap().unwrap();
        let second = guard.token().0;
        guard.release().await.unwrap();
        assert!(
            second > first,
            "{mode:?}: token {second} re-issued after the lock's row was lost (first {first})"
        );
        locker.close().await;
    }
}

/// Review finding PG-R4-5: a database error keeps its source chain, but no error in the chain
/// repeats the text of its source (DESIGN §4): sqlx's own error says "error returned from
/// database: {the server's message}" and also returns that message as its source. Here a
/// table is dropped under a lease-mode backend, so every acquisition fails on the server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn database_errors_do_not_repeat_their_source() {
    let Some(url) = common::url_or_skip() else {
        return;
    };
    let prefix = format!(
        "r45_{}_",
        ulid::Ulid::generate().to_string().to_ascii_lowercase()
    );
    let mut config = common::config(&url, PostgresMode::Lease);
    config.table_prefix = prefix.clone();
    let backend = Postgres::connect(config).await.expect("connect");
    let locker = Locker::builder(backend).retry(one_try()).build().unwrap();
    let mut admin = sqlx::PgConnection::connect(&url).await.unwrap();
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("DROP TABLE {prefix}leases")))
        .execute(&mut admin)
        .await
        .unwrap();
    let err = locker
        .mutex(format!("r45-{}", ulid::Ulid::generate()))
        .try_lock()
        .await
        .map(|g| g.map(|g| g.token()))
        .expect_err("an acquisition without its table");
    let mut chain = vec![err.to_string()];
    let mut source = std::error::Error::source(&err);
    while let Some(s) = source {
        chain.push(s.to_string());
        source = s.source();
    }
    println!("{chain:#?}");
    locker.close().await;
    let tables = ["locks", "claims"]
        .map(|t| format!("{prefix}{t}"))
        .join(", ");
    let functions = ["acquire_v1", "release_v1", "unlock_v1", "session_v1"]
        .map(|f| format!("{prefix}{f}"))
        .join(", ");
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "DROP TABLE {tables}; DROP FUNCTION {functions}"
    )))
    .execute(&mut admin)
    .await
    .unwrap();
    assert!(matches!(err, Error::ProviderUnavailable { .. }), "{err:?}");
    assert!(
        chain
            .last()
            .is_some_and(|text| text.contains("does not exist")),
        "the server's message is kept: {chain:#?}"
    );
    for pair in chain.windows(2) {
        assert!(
            !pair[0].contains(&pair[1]),
            "{:?} repeats its source {:?}",
            pair[0],
            pair[1]
        );
    }
}
