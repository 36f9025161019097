//! PostgreSQL over TLS (sqlx with rustls), against the server `scripts/servers.sh` starts with
//! `start_postgres_tls`: TLS only, a client certificate required. `LOCK_TEST_POSTGRES_TLS_URL`
//! carries `sslmode=verify-full`, `sslrootcert`, `sslcert` and `sslkey`; `LOCK_TEST_TLS_WRONG_CA`
//! is a CA that did not sign the server's certificate.
//!
//! The conformance suite runs in both modes: the server refuses every connection without TLS
//! and a client certificate, so the suite passing proves every connection lock-postgres opens
//! (the pool, the dedicated advisory sessions, the `LISTEN` session) used the URL's TLS
//! parameters.

mod common;

use lock_core::{Error, Locker};
use lock_postgres::{Postgres, PostgresConfig, PostgresMode};
use std::time::{Duration, Instant};

fn tls_url() -> Result<String, String> {
    std::env::var("LOCK_TEST_POSTGRES_TLS_URL")
        .ok()
        .filter(|u| !u.trim().is_empty())
        .ok_or_else(|| {
            "LOCK_TEST_POSTGRES_TLS_URL is not set (scripts/servers.sh: start_postgres_tls)"
                .to_owned()
        })
}

/// The variable `name`, or `None` after printing why the test is skipped.
///
/// # Panics
///
/// When it is not set and `LOCK_TEST_REQUIRE_SERVERS=1`.
fn var_or_skip(name: &str) -> Option<String> {
    match std::env::var(name).ok().filter(|v| !v.trim().is_empty()) {
        Some(value) => Some(value),
        None if lock_testkit::require_servers() => {
            panic!("server required: {name} is not set (scripts/servers.sh)")
        }
        None => {
            println!("skipped: {name} is not set");
            None
        }
    }
}

async fn lockers(mode: PostgresMode) -> Result<(Locker, Locker), String> {
    let url = tls_url()?;
    let connect = || async {
        Postgres::connect(common::config(&url, mode))
            .await
            .map_err(|e| format!("PostgreSQL at LOCK_TEST_POSTGRES_TLS_URL unreachable: {e:#}"))
    };
    let a = connect().await?;
    let b = connect().await?;
    Ok((Locker::with_backend(a), Locker::with_backend(b)))
}

mod advisory {
    use super::*;

    async fn advisory_tls() -> Result<(Locker, Locker), String> {
        lockers(PostgresMode::Advisory).await
    }

    lock_testkit::conformance_tests!(advisory_tls);
}

mod lease {
    use super::*;

    async fn lease_tls() -> Result<(Locker, Locker), String> {
        lockers(PostgresMode::Lease).await
    }

    lock_testkit::conformance_tests!(lease_tls);
}

/// The error and its sources, as a user reads them.
fn message(err: &Error) -> String {
    let mut text = err.to_string();
    let mut source = std::error::Error::source(err);
    while let Some(s) = source {
        text.push_str(&format!(": {s}"));
        source = s.source();
    }
    text
}

/// Connects to `url` (a short timeout), expecting a failure within a bound; its message.
async fn connect_fails(url: &str) -> String {
    let mut config = common::config(url, PostgresMode::Advisory);
    config.connect_timeout = Duration::from_secs(3);
    let started = Instant::now();
    let result = tokio::time::timeout(Duration::from_secs(20), Postgres::connect(config))
        .await
        .expect("connect hangs instead of failing");
    let elapsed = started.elapsed();
    let err = result.expect_err("connect succeeded");
    assert!(elapsed < Duration::from_secs(15), "took {elapsed:?}");
    assert!(
        matches!(
            err,
            Error::ProviderUnavailable { .. } | Error::Config { .. }
        ),
        "{err:?}"
    );
    let text = message(&err);
    println!("{text}");
    assert!(!format!("{text} {err:?}").contains("pw-s3cret"), "{text}");
    text
}

/// The URL with a password added (trust and cert authentication ignore it): errors must not
/// show it.
fn with_password(url: &str) -> String {
    url.replacen("postgres@", "postgres:pw-s3cret@", 1)
}

/// Replaces the value of the URL parameter `name` (or appends it).
fn with_param(url: &str, name: &str, value: &str) -> String {
    let (base, query) = url.split_once('?').unwrap_or((url, ""));
    let mut params: Vec<String> = query
        .split('&')
        .filter(|p| !p.is_empty() && !p.starts_with(&format!("{name}=")))
        .map(str::to_owned)
        .collect();
    params.push(format!("{name}={value}"));
    format!("{base}?{}", params.join("&"))
}

#[tokio::test]
async fn a_wrong_ca_is_a_clear_error() {
    let (Some(url), Some(wrong_ca)) = (
        var_or_skip("LOCK_TEST_POSTGRES_TLS_URL"),
        var_or_skip("LOCK_TEST_TLS_WRONG_CA"),
    ) else {
        return;
    };
    let text = connect_fails(&with_password(&with_param(&url, "sslrootcert", &wrong_ca))).await;
    assert!(
        text.contains("invalid peer certificate: UnknownIssuer"),
        "the message does not say the server's certificate is not trusted: {text}"
    );
}

#[tokio::test]
async fn verify_ca_with_the_right_ca_connects() {
    let Some(url) = var_or_skip("LOCK_TEST_POSTGRES_TLS_URL") else {
        return;
    };
    let url = with_param(&url, "sslmode", "verify-ca");
    let postgres = Postgres::connect(common::config(&url, PostgresMode::Lease))
        .await
        .expect("verify-ca connects");
    let locker = Locker::with_backend(postgres);
    let guard = locker.mutex("tls-verify-ca").try_lock().await.unwrap();
    guard.expect("free").release().await.unwrap();
}

#[tokio::test]
async fn a_missing_client_certificate_is_a_clear_error() {
    let Some(url) = var_or_skip("LOCK_TEST_POSTGRES_TLS_URL") else {
        return;
    };
    let (base, query) = url.split_once('?').unwrap();
    let query: Vec<&str> = query
        .split('&')
        .filter(|p| !p.starts_with("sslcert=") && !p.starts_with("sslkey="))
        .collect();
    let text = connect_fails(&with_password(&format!("{base}?{}", query.join("&")))).await;
    assert!(
        text.contains("connection requires a valid client certificate"),
        "the message does not say a client certificate is required: {text}"
    );
}

#[tokio::test]
async fn require_against_a_server_without_tls_is_a_clear_error() {
    let Some(plain) = common::url_or_skip() else {
        return;
    };
    let text = connect_fails(&with_password(&with_param(&plain, "sslmode", "require"))).await;
    assert!(
        text.contains("server does not support TLS"),
        "the message does not say the server has no TLS: {text}"
    );
}

/// `prefer` (sqlx's default, as libpq's) falls back to a plain connection on a server without
/// TLS, and `disable` never tries.
#[tokio::test]
async fn prefer_and_disable_connect_to_a_server_without_tls() {
    let Some(plain) = common::url_or_skip() else {
        return;
    };
    for mode in ["prefer", "disable"] {
        let url = with_param(&plain, "sslmode", mode);
        Postgres::connect(common::config(&url, PostgresMode::Lease))
            .await
            .unwrap_or_else(|e| panic!("sslmode={mode}: {e:?}"));
    }
}

/// The `LISTEN` session and the dedicated advisory sessions are TLS sessions too, also with
/// a `listen_url` of their own.
#[tokio::test]
async fn every_session_uses_tls() {
    let Some(url) = var_or_skip("LOCK_TEST_POSTGRES_TLS_URL") else {
        return;
    };
    let mut config: PostgresConfig = common::config(&url, PostgresMode::Advisory);
    config.listen_url = Some(url.clone());
    let locker = Locker::with_backend(Postgres::connect(config).await.expect("connect"));
    let guard = locker.mutex("tls-sessions").lock().await.unwrap();
    // The server's view: every lock-postgres session, its query and whether it is TLS.
    use sqlx::Connection;
    let mut conn = sqlx::PgConnection::connect(&url).await.expect("connect");
    let mut listening = false;
    for _ in 0..100 {
        let rows: Vec<(String, bool)> = sqlx::query_as(
            "SELECT a.query, s.ssl FROM pg_stat_activity a JOIN pg_stat_ssl s USING (pid) \
             WHERE a.application_name = 'lock-postgres'",
        )
        .fetch_all(&mut conn)
        .await
        .unwrap();
        assert!(rows.iter().all(|(_, ssl)| *ssl), "{rows:?}");
        listening = rows.iter().any(|(query, _)| query.starts_with("LISTEN"));
        if listening {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(listening, "no LISTEN session");
    guard.release().await.unwrap();
}
