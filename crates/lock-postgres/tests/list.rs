//! `list` on PostgreSQL (`LOCK_TEST_POSTGRES_URL`): one page reads a bounded number of names
//! through the byte-ordered index however many leases of crashed holders lie before the held
//! ones (checked with `EXPLAIN ANALYZE` of the statement), idle names cost nothing, both modes
//! list the same tables, and a server that does not answer is an error within the request
//! timeout.

mod common;

use lock_core::{Error, ListRequest, LockInfo, Locker};
use lock_postgres::{Postgres, PostgresMode};
use lock_testkit::{TcpProxy, list_pages};
use sqlx::Connection;
use std::collections::BTreeSet;
use std::time::{Duration, Instant};

fn names(pages: &[Vec<LockInfo>]) -> BTreeSet<String> {
    pages.iter().flatten().map(|l| l.name.clone()).collect()
}

/// Tables of their own for one test, dropped at its end.
fn table_prefix() -> String {
    let id = ulid::Ulid::generate().to_string().to_lowercase();
    format!("lock_list_{}_", &id[16..])
}

async fn drop_tables(conn: &mut sqlx::PgConnection, prefix: &str) {
    let text = format!(
        "DROP TABLE IF EXISTS {prefix}locks, {prefix}leases, {prefix}claims; \
         DROP FUNCTION IF EXISTS {prefix}acquire_v1, {prefix}release_v1, {prefix}unlock_v1, \
         {prefix}session_v1"
    );
    sqlx::raw_sql(sqlx::AssertSqlSafe(text))
        .execute(conn)
        .await
        .unwrap();
}

/// The rows the index scans of an `EXPLAIN ANALYZE` text plan read: per index scan node,
/// `(rows + rows removed by its filter) * loops` (both are averages per loop), summed.
fn index_rows(plan: &str) -> u64 {
    let field = |line: &str, key: &str| -> u64 {
        line.rsplit_once(key)
            .and_then(|(_, rest)| {
                rest.trim_start()
                    .split(|c: char| !c.is_ascii_digit())
                    .next()
                    .and_then(|n| n.parse().ok())
            })
            .unwrap_or(0)
    };
    let mut total = 0;
    let mut loops = 0;
    for line in plan.lines() {
        if line.contains("->") || line.contains("actual") {
            // A new node: an index scan counts its rows, another stops the filter lines below.
            loops = 0;
            if line.contains("Index") && line.contains("actual") {
                loops = field(line, "loops=");
                total += field(line, "rows=") * loops;
            }
        } else if line.contains("Rows Removed by Filter:") {
            total += field(line, "Rows Removed by Filter:") * loops;
        }
    }
    total
}

/// 3000 names whose leases expired without a release (crashed holders), 300 idle names and
/// one held name after all of them: a page of 10 reads at most 100 names (one index probe
/// each, `EXPLAIN ANALYZE`), and answers quickly; the whole listing reports the held name and
/// nothing else, in either mode.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_page_reads_a_bounded_number_of_names() {
    let Some(url) = common::url_or_skip() else {
        return;
    };
    let prefix = table_prefix();
    let mut config = common::config(&url, PostgresMode::Lease);
    config.table_prefix = prefix.clone();
    let locker = Locker::with_backend(Postgres::connect(config.clone()).await.unwrap());
    let mut admin = sqlx::PgConnection::connect(&url).await.unwrap();
    for i in 0..300 {
        let guard = locker
            .mutex(format!("jobs/idle-{i:03}"))
            .lock()
            .await
            .unwrap();
        guard.release().await.unwrap();
    }
    // As crashed holders leave them: lease rows past their expiry that nobody released, on
    // names nobody used since (which would have deleted them).
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "INSERT INTO {prefix}leases (name, kind, lease_id, owner, exclusive, permits, weight, \
         token, expires_at, meta_keys, meta_values) \
         SELECT 'jobs/dead-' || lpad(i::text, 4, '0'), 'mutex', 'L' || i, 'crashed', true, 1, \
         1, i, 1, '{{}}', '{{}}' FROM generate_series(1, 3000) AS i; ANALYZE {prefix}leases"
    )))
    .execute(&mut admin)
    .await
    .unwrap();
    let held = locker.mutex("jobs/zz-held").lock().await.unwrap();

    let started = Instant::now();
    let page = locker
        .list(&ListRequest::new("jobs/").limit(10))
        .await
        .unwrap();
    let took = started.elapsed();
    assert!(took < Duration::from_secs(2), "one page took {took:?}");
    assert!(page.locks.is_empty(), "{:?}", page.locks);
    assert!(page.next.is_some(), "the page ends before the held name");

    // The same statement, as the first page ran it: 100 names at most, by the index.
    let explain = format!(
        "EXPLAIN (ANALYZE, COSTS OFF) {}",
        lock_postgres::list_names_statement(&prefix)
    );
    let plan: Vec<(String,)> = sqlx::query_as(sqlx::AssertSqlSafe(explain))
        .bind("jobs/")
        .bind("jobs0")
        .bind(100_i64)
        .fetch_all(&mut admin)
        .await
        .unwrap();
    let plan: String = plan.into_iter().map(|(line,)| line + "\n").collect();
    println!("{plan}");
    assert!(
        plan.contains(&format!("{prefix}leases_name_c")),
        "the name scan must use the byte-ordered index:\n{plan}"
    );
    assert!(!plan.contains("Seq Scan"), "no sequential scan:\n{plan}");
    let read = index_rows(&plan);
    println!("index rows read by the first page: {read}");
    assert!(
        (50..=400).contains(&read),
        "{read} index rows read for a page of at most 100 names over 3300:\n{plan}"
    );

    let all = list_pages(&locker, "jobs/", 10).await;
    assert_eq!(names(&all), BTreeSet::from(["jobs/zz-held".to_owned()]));
    assert!(
        all.len() > 30,
        "3000 dead names take 30 pages: {}",
        all.len()
    );
    let all = list_pages(&locker, "jobs/", 1000).await;
    assert_eq!(names(&all), BTreeSet::from(["jobs/zz-held".to_owned()]));

    // Advisory mode reads the same tables.
    config.mode = PostgresMode::Advisory;
    let advisory = Locker::with_backend(Postgres::connect(config).await.unwrap());
    assert_eq!(
        names(&list_pages(&advisory, "jobs/", 50).await),
        BTreeSet::from(["jobs/zz-held".to_owned()])
    );
    held.release().await.unwrap();
    assert!(names(&list_pages(&advisory, "jobs/", 50).await).is_empty());
    advisory.close().await;
    locker.close().await;
    drop_tables(&mut admin, &prefix).await;
}

/// Names with a backslash or a NUL (stored escaped) are listed under their own prefix, and
/// only there, in pages of one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn escaped_names_are_listed_under_their_prefix() {
    let Some(url) = common::url_or_skip() else {
        return;
    };
    let prefix = table_prefix();
    let mut config = common::config(&url, PostgresMode::Lease);
    config.table_prefix = prefix.clone();
    let locker = Locker::with_backend(Postgres::connect(config).await.unwrap());
    let mut guards = Vec::new();
    let held = ["a\\", "a\\b", "a\0", "a\0\\", "a\u{1}", "a\u{10FFFF}", "b"];
    for name in held {
        guards.push(locker.mutex(name).lock().await.unwrap());
    }
    for (list_prefix, expected) in [
        ("", &held[..]),
        ("a", &held[..6]),
        ("a\\", &held[..2]),
        ("a\0", &held[2..4]),
        ("a\u{10FFFF}", &held[5..6]),
        ("c", &[][..]),
    ] {
        let expected: BTreeSet<String> = expected.iter().map(|s| (*s).to_owned()).collect();
        assert_eq!(
            names(&list_pages(&locker, list_prefix, 1).await),
            expected,
            "prefix {list_prefix:?}"
        );
    }
    for guard in guards {
        guard.release().await.unwrap();
    }
    locker.close().await;
    let mut admin = sqlx::PgConnection::connect(&url).await.unwrap();
    drop_tables(&mut admin, &prefix).await;
}

/// Whether the tables of `prefix` have `list`'s index.
async fn index_exists(admin: &mut sqlx::PgConnection, prefix: &str) -> bool {
    let text = format!("SELECT to_regclass('{prefix}leases_name_c') IS NOT NULL");
    let (exists,): (bool,) = sqlx::query_as(sqlx::AssertSqlSafe(text))
        .fetch_one(admin)
        .await
        .unwrap();
    exists
}

/// Tables of an earlier version (without `list`'s index): a role that may not create the index
/// still connects and lists (without the index); the next connection of a role that may
/// create it adds it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_earlier_versions_tables_get_the_index() {
    let Some(url) = common::url_or_skip() else {
        return;
    };
    const ROLE: &str = "lock_test_list_only";
    let prefix = table_prefix();
    let mut config = common::config(&url, PostgresMode::Lease);
    config.table_prefix = prefix.clone();
    let first = Postgres::connect(config.clone()).await.unwrap();
    lock_core::Backend::close(&first).await;
    let mut admin = sqlx::PgConnection::connect(&url).await.unwrap();
    assert!(index_exists(&mut admin, &prefix).await);
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "DROP INDEX {prefix}leases_name_c;          DO $$ BEGIN IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{ROLE}') THEN          CREATE ROLE {ROLE} LOGIN; END IF; END $$;          GRANT SELECT, INSERT, UPDATE, DELETE ON {prefix}locks, {prefix}leases, {prefix}claims          TO {ROLE};"
    )))
    .execute(&mut admin)
    .await
    .unwrap();

    let role_url = url.replacen("://postgres@", &format!("://{ROLE}@"), 1);
    assert_ne!(role_url, url, "the test URL names the postgres role");
    let mut limited = config.clone();
    limited.url = role_url;
    let locker = Locker::with_backend(
        Postgres::connect(limited)
            .await
            .expect("a role that may not create the index connects"),
    );
    let guard = locker.mutex("old/held").lock().await.unwrap();
    assert_eq!(
        names(&list_pages(&locker, "old/", 10).await),
        BTreeSet::from(["old/held".to_owned()])
    );
    assert!(
        !index_exists(&mut admin, &prefix).await,
        "the role could not add it"
    );

    let owner = Locker::with_backend(Postgres::connect(config).await.unwrap());
    assert!(
        index_exists(&mut admin, &prefix).await,
        "the owner's connection adds it"
    );
    assert_eq!(
        names(&list_pages(&owner, "old/", 10).await),
        BTreeSet::from(["old/held".to_owned()])
    );
    guard.release().await.unwrap();
    locker.close().await;
    owner.close().await;
    drop_tables(&mut admin, &prefix).await;
}

/// A server that stops answering (a cut-off connection): `list` fails with
/// `ProviderUnavailable` within the request timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_does_not_answer_is_unavailable_within_the_request_timeout() {
    let Some(url) = common::url_or_skip() else {
        return;
    };
    let options: sqlx::postgres::PgConnectOptions = url.parse().unwrap();
    let target = format!("{}:{}", options.get_host(), options.get_port());
    let proxy = TcpProxy::start(
        target
            .parse()
            .expect("a loopback IP address in the test URL"),
    )
    .await
    .unwrap();
    assert!(url.contains(&target), "{url} must name {target}");
    let through = url.replacen(&target, &proxy.addr().to_string(), 1);
    for mode in [PostgresMode::Lease, PostgresMode::Advisory] {
        let backend = Postgres::connect(common::config(&through, mode))
            .await
            .unwrap();
        let locker = Locker::builder(backend)
            .request_timeout(Duration::from_secs(1))
            .build()
            .unwrap();
        locker.list(&ListRequest::new("x")).await.unwrap();
        proxy.cut();
        let started = Instant::now();
        let err = locker.list(&ListRequest::new("x")).await.unwrap_err();
        let took = started.elapsed();
        proxy.restore();
        assert!(matches!(err, Error::ProviderUnavailable { .. }), "{err:?}");
        assert!(took < Duration::from_secs(3), "{mode:?}: took {took:?}");
    }
}
