//! `lock::Config` from `LOCK_*` variables (DESIGN.md §7) and `lock::Locker::new` / `from_env`.
//!
//! Every test that reads the environment runs in a `figment::Jail`, which serialises them and
//! restores the environment afterwards; each starts from an empty environment.

// `Jail::expect_with` closures must return `figment::Result`, whose error is large.
#![allow(clippy::result_large_err)]
// Tests of a backend's variables need its feature; the helpers they share are unused without.
#![cfg_attr(
    not(all(feature = "redis", feature = "postgres", feature = "etcd")),
    allow(dead_code, unused_imports)
)]

use figment::Figment;
use figment::Jail;
use figment::providers::{Env, Serialized};
#[cfg(all(feature = "redis", feature = "postgres", feature = "etcd"))]
use lock::RetryPolicy;
#[cfg(feature = "postgres")]
use lock::config::PostgresMode;
use lock::config::{Config, EnvVars, UnknownVar};
use lock::{Error, Locker, Provider};
use std::time::Duration;

/// Loads the configuration from exactly these environment variables.
fn try_load(vars: &[(&str, &str)]) -> lock::Result<Config> {
    let mut result = None;
    Jail::expect_with(|jail| {
        jail.clear_env();
        for (key, value) in vars {
            jail.set_env(key, value);
        }
        result = Some(Config::from_env());
        Ok(())
    });
    result.expect("the jail ran")
}

fn load(vars: &[(&str, &str)]) -> Config {
    match try_load(vars) {
        Ok(config) => config,
        Err(e) => panic!("{vars:?} should load, got: {e}"),
    }
}

/// The message of the configuration error these variables give.
fn load_err(vars: &[(&str, &str)]) -> String {
    match try_load(vars) {
        Ok(config) => panic!("{vars:?} should fail, got {config:?}"),
        Err(e @ Error::Config { .. }) => e.to_string(),
        Err(e) => panic!("{vars:?} should be a Config error, got: {e:?}"),
    }
}

fn assert_mentions(message: &str, parts: &[&str]) {
    for part in parts {
        assert!(
            message.contains(part),
            "{message:?} should contain {part:?}"
        );
    }
}

fn block_on<F: std::future::Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime")
        .block_on(future)
}

// --- defaults -------------------------------------------------------------------------------

#[cfg(all(feature = "redis", feature = "postgres", feature = "etcd"))]
#[test]
fn defaults_when_nothing_is_set() {
    let config = load(&[]);
    assert_eq!(config, Config::default());
    assert_eq!(config.provider, Provider::Memory);
    assert_eq!(config.default_ttl, Duration::from_secs(30));
    assert_eq!(config.extend_interval, Duration::from_secs(10));
    assert_eq!(config.owner_id, None);
    assert_eq!(config.retry, RetryPolicy::default());
    assert_eq!(config.retry.max_attempts, 3);
    assert_eq!(config.retry.initial_delay, Duration::from_millis(50));
    assert_eq!(config.retry.max_delay, Duration::from_secs(1));
    assert_eq!(config.retry.jitter, 0.1);
    assert_eq!(config.redis.urls, ["redis://localhost:6379"]);
    assert_eq!(config.redis.prefix, "lock:");
    assert_eq!(config.redis.quorum, 0);
    assert_eq!(config.postgres.url, "");
    assert_eq!(config.postgres.namespace, 1);
    assert_eq!(config.etcd.endpoints, ["localhost:2379"]);
    assert_eq!(config.etcd.prefix, "/locks/");
    config.validate().unwrap();
}

#[test]
fn test_suite_variables_are_ignored() {
    let config = load(&[
        ("LOCK_TEST_REQUIRE_SERVERS", "1"),
        ("LOCK_TEST_REDIS_URLS", "redis://127.0.0.1:7001,,"),
        ("LOCK_TEST_POSTGRES_URL", "postgres://u:p@127.0.0.1/db"),
        ("LOCK_TEST_ETCD_ENDPOINTS", "not a list ["),
        ("LOCK_SOMETHING_ELSE", "{weird=value}"),
        ("NOT_LOCK_DEFAULT_TTL", "abc"),
    ]);
    assert_eq!(config, Config::default());
}

// --- unknown variables and keys (review finding 16) -------------------------------------------

/// Loads with these variables set, returning `Config::unknown_env_vars()`, the result of
/// `Config::from_env()`, and what `tracing` logged meanwhile.
fn load_logged(vars: &[(&str, &str)]) -> (Vec<UnknownVar>, lock::Result<Config>, String) {
    let log = Log::default();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(log.clone())
        .with_ansi(false)
        .finish();
    let mut result = None;
    Jail::expect_with(|jail| {
        jail.clear_env();
        for (key, value) in vars {
            jail.set_env(key, value);
        }
        let unknown = Config::unknown_env_vars();
        let config = tracing::subscriber::with_default(subscriber, Config::from_env);
        result = Some((unknown, config));
        Ok(())
    });
    let (unknown, config) = result.expect("the jail ran");
    let text = String::from_utf8(log.0.lock().unwrap().clone()).unwrap();
    (unknown, config, text)
}

/// A `tracing` writer into memory.
#[derive(Clone, Default)]
struct Log(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Log {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Log {
    type Writer = Log;
    fn make_writer(&'a self) -> Log {
        self.clone()
    }
}

#[cfg(all(feature = "redis", feature = "postgres", feature = "etcd"))]
#[test]
fn unknown_variables_are_reported_with_the_closest_name() {
    let (unknown, config, log) = load_logged(&[
        ("LOCK_DEFAULT_TLL", "5s"),
        ("LOCK_REDIS_URL", "redis://a:6379"),
        ("LOCK_POSTGRES_NAME_SPACE", "3"),
        ("LOCK_SOMETHING_ELSE", "x"),
        ("LOCK_TEST_REQUIRE_SERVERS", "1"),
        ("LOCK_PROVIDER", "memory"),
    ]);
    // Unknown variables are not errors: they are reported and ignored.
    assert_eq!(config.unwrap(), Config::default());
    let found: Vec<(&str, Option<&str>)> = unknown
        .iter()
        .map(|u| (u.name.as_str(), u.suggestion))
        .collect();
    assert_eq!(
        found,
        [
            ("LOCK_DEFAULT_TLL", Some("LOCK_DEFAULT_TTL")),
            ("LOCK_POSTGRES_NAME_SPACE", Some("LOCK_POSTGRES_NAMESPACE")),
            ("LOCK_REDIS_URL", Some("LOCK_REDIS_URLS")),
            ("LOCK_SOMETHING_ELSE", None),
        ]
    );
    assert_eq!(
        unknown[0].to_string(),
        "unknown variable LOCK_DEFAULT_TLL is ignored (did you mean LOCK_DEFAULT_TTL?)"
    );
    assert_eq!(
        unknown[3].to_string(),
        "unknown variable LOCK_SOMETHING_ELSE is ignored"
    );
    // The same through a `tracing` warning, one per variable; LOCK_TEST_* is never reported.
    assert_eq!(log.matches("WARN").count(), 4, "{log}");
    assert_mentions(
        &log,
        &[
            "LOCK_DEFAULT_TLL",
            "did you mean LOCK_DEFAULT_TTL?",
            "LOCK_REDIS_URL is ignored (did you mean LOCK_REDIS_URLS?)",
            "LOCK_SOMETHING_ELSE",
        ],
    );
    assert!(!log.contains("LOCK_TEST_"), "{log}");

    // Known variables alone: nothing to report.
    let (unknown, _, log) = load_logged(&[("LOCK_DEFAULT_TTL", "5s"), ("LOCK_TEST_X", "1")]);
    assert!(unknown.is_empty(), "{unknown:?}");
    assert!(log.is_empty(), "{log}");
}

/// `lockctl run` gives its command LOCK_NAME, LOCK_FENCING_TOKEN and LOCK_OWNER: a program
/// run under it (or a nested lockctl) must not report them as unknown settings.
#[test]
fn variables_lockctl_sets_for_its_command_are_not_reported() {
    let (unknown, config, log) = load_logged(&[
        ("LOCK_NAME", "reports/nightly"),
        ("LOCK_FENCING_TOKEN", "42"),
        ("LOCK_OWNER", "lockctl@host:7"),
    ]);
    assert_eq!(config.unwrap(), Config::default());
    assert!(unknown.is_empty(), "{unknown:?}");
    assert!(log.is_empty(), "{log}");
}

/// A provider standing for a configuration file at `path`.
struct File {
    path: &'static str,
    values: Vec<(&'static str, &'static str)>,
}

impl figment::Provider for File {
    fn metadata(&self) -> figment::Metadata {
        figment::Metadata::named("TOML file").source(std::path::Path::new(self.path))
    }

    fn data(&self) -> figment::Result<figment::value::Map<figment::Profile, figment::value::Dict>> {
        let dict = self
            .values
            .iter()
            .map(|(k, v)| (k.to_string(), figment::value::Value::from(v.to_string())))
            .collect();
        Ok(figment::Profile::Default.collect(dict))
    }
}

#[cfg(all(feature = "redis", feature = "postgres", feature = "etcd"))]
#[test]
fn unknown_keys_in_a_file_are_errors() {
    let file = |values| File {
        path: "/etc/app/lock.toml",
        values,
    };
    let figment = Figment::new().merge(file(vec![
        ("default_ttl", "5s"),
        ("redis_url", "redis://a:6379"),
    ]));
    let err = Config::from_figment(&figment).unwrap_err();
    assert!(matches!(err, Error::Config { .. }), "{err:?}");
    assert_mentions(
        &err.to_string(),
        &[
            "unknown key `redis_url`",
            "/etc/app/lock.toml",
            "`redis_urls`",
        ],
    );

    let figment = Figment::new().merge(file(vec![("colour", "blue")]));
    let message = Config::from_figment(&figment).unwrap_err().to_string();
    assert_mentions(&message, &["unknown key `colour`", "/etc/app/lock.toml"]);
    assert!(!message.contains("did you mean"), "{message}");

    // Also from other providers, such as values set in code.
    let figment = Figment::new().merge(("retry_max_attempt", 3));
    let message = Config::from_figment(&figment).unwrap_err().to_string();
    assert_mentions(&message, &["`retry_max_attempt`", "`retry_max_attempts`"]);

    // The environment's unknown variables stay warnings, under a file's known keys.
    let mut result = None;
    Jail::expect_with(|jail| {
        jail.clear_env();
        jail.set_env("LOCK_DEFAULT_TLL", "1s");
        let figment = Figment::new()
            .merge(file(vec![("default_ttl", "5s")]))
            .merge(EnvVars::new());
        result = Some(Config::from_figment(&figment));
        Ok(())
    });
    assert_eq!(result.unwrap().unwrap().default_ttl, Duration::from_secs(5));
}

// --- one test per variable of the table -----------------------------------------------------

#[test]
fn lock_provider() {
    for (value, provider) in [
        ("memory", Provider::Memory),
        ("redis", Provider::Redis),
        ("postgres", Provider::Postgres),
        ("etcd", Provider::Etcd),
        (" ReDiS ", Provider::Redis),
        ("ETCD", Provider::Etcd),
    ] {
        let url = ("LOCK_POSTGRES_URL", "postgres://db/app");
        assert_eq!(
            load(&[("LOCK_PROVIDER", value), url]).provider,
            provider,
            "{value}"
        );
    }
}

#[test]
fn lock_default_ttl() {
    let config = load(&[("LOCK_DEFAULT_TTL", "45s")]);
    assert_eq!(config.default_ttl, Duration::from_secs(45));
    let config = load(&[("LOCK_DEFAULT_TTL", "1m 30s")]);
    assert_eq!(config.default_ttl, Duration::from_secs(90));
}

#[test]
fn lock_extend_interval() {
    let config = load(&[("LOCK_EXTEND_INTERVAL", "2500ms")]);
    assert_eq!(config.extend_interval, Duration::from_millis(2500));
}

#[test]
fn lock_owner_id() {
    let config = load(&[("LOCK_OWNER_ID", "billing-worker-1")]);
    assert_eq!(config.owner_id.as_deref(), Some("billing-worker-1"));
    // Kept exactly as written, even when it looks like a number.
    let config = load(&[("LOCK_OWNER_ID", "007")]);
    assert_eq!(config.owner_id.as_deref(), Some("007"));
}

#[test]
fn lock_retry_max_attempts() {
    assert_eq!(
        load(&[("LOCK_RETRY_MAX_ATTEMPTS", "7")]).retry.max_attempts,
        7
    );
    assert_eq!(
        load(&[("LOCK_RETRY_MAX_ATTEMPTS", "0")]).retry.max_attempts,
        0
    );
}

#[test]
fn lock_retry_initial_delay() {
    let config = load(&[("LOCK_RETRY_INITIAL_DELAY", "10ms")]);
    assert_eq!(config.retry.initial_delay, Duration::from_millis(10));
}

#[test]
fn lock_retry_max_delay() {
    let config = load(&[("LOCK_RETRY_MAX_DELAY", "5s")]);
    assert_eq!(config.retry.max_delay, Duration::from_secs(5));
}

#[test]
fn lock_retry_jitter() {
    assert_eq!(load(&[("LOCK_RETRY_JITTER", "0.5")]).retry.jitter, 0.5);
    assert_eq!(load(&[("LOCK_RETRY_JITTER", "0")]).retry.jitter, 0.0);
    assert_eq!(load(&[("LOCK_RETRY_JITTER", "1")]).retry.jitter, 1.0);
}

#[cfg(all(feature = "redis", feature = "postgres", feature = "etcd"))]
#[test]
fn lock_redis_urls() {
    let config = load(&[("LOCK_REDIS_URLS", "redis://cache:6380")]);
    assert_eq!(config.redis.urls, ["redis://cache:6380"]);
}

#[cfg(all(feature = "redis", feature = "postgres", feature = "etcd"))]
#[test]
fn lock_redis_prefix() {
    let config = load(&[("LOCK_REDIS_PREFIX", "myapp:locks:")]);
    assert_eq!(config.redis.prefix, "myapp:locks:");
}

#[cfg(all(feature = "redis", feature = "postgres", feature = "etcd"))]
#[test]
fn lock_redis_quorum() {
    let config = load(&[
        (
            "LOCK_REDIS_URLS",
            "redis://a:6379,redis://b:6379,redis://c:6379",
        ),
        ("LOCK_REDIS_QUORUM", "3"),
    ]);
    assert_eq!(config.redis.quorum, 3);
}

#[cfg(all(feature = "redis", feature = "postgres", feature = "etcd"))]
#[test]
fn lock_postgres_url() {
    let config = load(&[("LOCK_POSTGRES_URL", "postgres://app@db:5432/app")]);
    assert_eq!(config.postgres.url, "postgres://app@db:5432/app");
}

#[cfg(all(feature = "redis", feature = "postgres", feature = "etcd"))]
#[test]
fn lock_postgres_namespace() {
    assert_eq!(
        load(&[("LOCK_POSTGRES_NAMESPACE", "42")])
            .postgres
            .namespace,
        42
    );
    assert_eq!(
        load(&[("LOCK_POSTGRES_NAMESPACE", "-7")])
            .postgres
            .namespace,
        -7
    );
}

#[cfg(all(feature = "redis", feature = "postgres", feature = "etcd"))]
#[test]
fn lock_postgres_mode() {
    assert_eq!(load(&[]).postgres.mode, PostgresMode::Advisory);
    assert_eq!(
        load(&[("LOCK_POSTGRES_MODE", "lease")]).postgres.mode,
        PostgresMode::Lease
    );
    assert_eq!(
        load(&[("LOCK_POSTGRES_MODE", " Advisory ")]).postgres.mode,
        PostgresMode::Advisory
    );
    let message = load_err(&[("LOCK_POSTGRES_MODE", "table")]);
    assert_mentions(
        &message,
        &["LOCK_POSTGRES_MODE", "\"table\"", "advisory", "lease"],
    );
}

#[cfg(all(feature = "redis", feature = "postgres", feature = "etcd"))]
#[test]
fn lock_etcd_endpoints() {
    let config = load(&[("LOCK_ETCD_ENDPOINTS", "http://etcd-1:2379")]);
    assert_eq!(config.etcd.endpoints, ["http://etcd-1:2379"]);
}

#[cfg(all(feature = "redis", feature = "postgres", feature = "etcd"))]
#[test]
fn lock_etcd_prefix() {
    let config = load(&[("LOCK_ETCD_PREFIX", "/myapp/locks/")]);
    assert_eq!(config.etcd.prefix, "/myapp/locks/");
}

#[cfg(all(feature = "redis", feature = "postgres", feature = "etcd"))]
#[test]
fn every_variable_at_once() {
    let config = load(&[
        ("LOCK_PROVIDER", "etcd"),
        ("LOCK_DEFAULT_TTL", "12s"),
        ("LOCK_EXTEND_INTERVAL", "3s"),
        ("LOCK_OWNER_ID", "w-1"),
        ("LOCK_RETRY_MAX_ATTEMPTS", "9"),
        ("LOCK_RETRY_INITIAL_DELAY", "20ms"),
        ("LOCK_RETRY_MAX_DELAY", "2s"),
        ("LOCK_RETRY_JITTER", "0.25"),
        ("LOCK_REDIS_URLS", "redis://a,redis://b,redis://c"),
        ("LOCK_REDIS_PREFIX", "p:"),
        ("LOCK_REDIS_QUORUM", "2"),
        ("LOCK_POSTGRES_URL", "postgres://db/app"),
        ("LOCK_POSTGRES_NAMESPACE", "5"),
        ("LOCK_POSTGRES_MODE", "lease"),
        ("LOCK_ETCD_ENDPOINTS", "e1:2379,e2:2379"),
        ("LOCK_ETCD_PREFIX", "/l/"),
    ]);
    assert_eq!(config.provider, Provider::Etcd);
    assert_eq!(config.default_ttl, Duration::from_secs(12));
    assert_eq!(config.extend_interval, Duration::from_secs(3));
    assert_eq!(config.owner_id.as_deref(), Some("w-1"));
    assert_eq!(
        config.retry,
        RetryPolicy {
            max_attempts: 9,
            initial_delay: Duration::from_millis(20),
            max_delay: Duration::from_secs(2),
            jitter: 0.25,
        }
    );
    assert_eq!(config.redis.urls, ["redis://a", "redis://b", "redis://c"]);
    assert_eq!(config.redis.prefix, "p:");
    assert_eq!(config.redis.quorum, 2);
    assert_eq!(config.postgres.url, "postgres://db/app");
    assert_eq!(config.postgres.namespace, 5);
    assert_eq!(config.postgres.mode, PostgresMode::Lease);
    assert_eq!(config.etcd.endpoints, ["e1:2379", "e2:2379"]);
    assert_eq!(config.etcd.prefix, "/l/");
}

// --- lists ----------------------------------------------------------------------------------

#[cfg(all(feature = "redis", feature = "postgres", feature = "etcd"))]
#[test]
fn comma_separated_lists_are_split_and_trimmed() {
    let config = load(&[
        (
            "LOCK_REDIS_URLS",
            "redis://a:6379, redis://b:6379 ,redis://c:6379",
        ),
        ("LOCK_ETCD_ENDPOINTS", " e1:2379 ,e2:2379 "),
    ]);
    assert_eq!(
        config.redis.urls,
        ["redis://a:6379", "redis://b:6379", "redis://c:6379"]
    );
    assert_eq!(config.etcd.endpoints, ["e1:2379", "e2:2379"]);
}

#[cfg(all(feature = "redis", feature = "postgres", feature = "etcd"))]
#[test]
fn single_value_lists() {
    let config = load(&[
        ("LOCK_REDIS_URLS", " redis://only:6379 "),
        ("LOCK_ETCD_ENDPOINTS", "only:2379"),
    ]);
    assert_eq!(config.redis.urls, ["redis://only:6379"]);
    assert_eq!(config.etcd.endpoints, ["only:2379"]);
}

#[cfg(all(feature = "redis", feature = "postgres", feature = "etcd"))]
#[test]
fn bracketed_lists_in_variables() {
    let config = load(&[
        ("LOCK_REDIS_URLS", "[redis://a:6379, \"redis://b:6379\"]"),
        ("LOCK_ETCD_ENDPOINTS", "[e1:2379]"),
    ]);
    assert_eq!(config.redis.urls, ["redis://a:6379", "redis://b:6379"]);
    assert_eq!(config.etcd.endpoints, ["e1:2379"]);
}

#[cfg(all(feature = "redis", feature = "postgres", feature = "etcd"))]
#[test]
fn figment_arrays_and_typed_values() {
    let figment = Figment::new()
        .merge(("redis_urls", ["redis://a:6379", "redis://b:6379"]))
        .merge(("etcd_endpoints", ["e1:2379"]))
        .merge(("retry_max_attempts", 5))
        .merge(("retry_jitter", 0.5))
        .merge(("postgres_namespace", -3))
        .merge(("owner_id", 12));
    let config = Config::from_figment(&figment).unwrap();
    assert_eq!(config.redis.urls, ["redis://a:6379", "redis://b:6379"]);
    assert_eq!(config.etcd.endpoints, ["e1:2379"]);
    assert_eq!(config.retry.max_attempts, 5);
    assert_eq!(config.retry.jitter, 0.5);
    assert_eq!(config.postgres.namespace, -3);
    assert_eq!(config.owner_id.as_deref(), Some("12"));
}

#[cfg(all(feature = "redis", feature = "postgres", feature = "etcd"))]
#[test]
fn figments_own_env_provider_works_too() {
    Jail::expect_with(|jail| {
        jail.clear_env();
        jail.set_env("LOCK_DEFAULT_TTL", "5s");
        jail.set_env("LOCK_RETRY_MAX_ATTEMPTS", "8");
        jail.set_env("LOCK_RETRY_JITTER", "0.75");
        jail.set_env("LOCK_REDIS_URLS", "[redis://a:6379, redis://b:6379]");
        jail.set_env("LOCK_ETCD_ENDPOINTS", "e1:2379,e2:2379");
        let config = Config::from_figment(&Figment::from(Env::prefixed("LOCK_")))
            .map_err(|e| e.to_string())?;
        assert_eq!(config.default_ttl, Duration::from_secs(5));
        assert_eq!(config.retry.max_attempts, 8);
        assert_eq!(config.retry.jitter, 0.75);
        assert_eq!(config.redis.urls, ["redis://a:6379", "redis://b:6379"]);
        assert_eq!(config.etcd.endpoints, ["e1:2379", "e2:2379"]);
        Ok(())
    });
}

// --- figment: a file under the environment ---------------------------------------------------

#[cfg(all(feature = "redis", feature = "postgres", feature = "etcd"))]
#[test]
fn the_environment_overrides_earlier_providers() {
    Jail::expect_with(|jail| {
        jail.clear_env();
        jail.set_env("LOCK_DEFAULT_TTL", "7s");
        // Stands for a file provider such as `Toml::file("lock.toml")`.
        let file = Serialized::defaults(file_values());
        let figment = Figment::new().merge(file).merge(EnvVars::new());
        let config = Config::from_figment(&figment).map_err(|e| e.to_string())?;
        assert_eq!(config.default_ttl, Duration::from_secs(7)); // from the environment
        assert_eq!(config.redis.prefix, "from-file:"); // from the "file"
        Ok(())
    });
}

#[cfg(all(feature = "redis", feature = "postgres", feature = "etcd"))]
fn file_values() -> std::collections::BTreeMap<&'static str, &'static str> {
    [("default_ttl", "20s"), ("redis_prefix", "from-file:")].into()
}

#[test]
fn errors_from_other_sources_say_where() {
    let figment = Figment::new().merge(Serialized::defaults(std::collections::BTreeMap::from([(
        "default_ttl",
        "abc",
    )])));
    let message = Config::from_figment(&figment).unwrap_err().to_string();
    assert_mentions(&message, &["LOCK_DEFAULT_TTL", "\"abc\"", "`default_ttl`"]);
}

#[test]
fn nested_keys_are_rejected_not_ignored() {
    Jail::expect_with(|jail| {
        jail.clear_env();
        jail.set_env("LOCK_DEFAULT_TTL", "5s");
        // The trap of DEPENDENCIES.md: `split("_")` makes `default.ttl`.
        let figment = Figment::from(Env::prefixed("LOCK_").split("_"));
        let message = Config::from_figment(&figment).unwrap_err().to_string();
        assert_mentions(&message, &["default", "flat", "default_ttl"]);
        Ok(())
    });
}

// --- bad values -----------------------------------------------------------------------------

#[test]
fn bad_duration() {
    let message = load_err(&[("LOCK_DEFAULT_TTL", "abc")]);
    assert_eq!(
        message,
        "configuration error: LOCK_DEFAULT_TTL: invalid duration \"abc\" (use a unit, e.g. 30s or 500ms)"
    );
    let message = load_err(&[("LOCK_RETRY_MAX_DELAY", "5 parsecs")]);
    assert_mentions(&message, &["LOCK_RETRY_MAX_DELAY", "\"5 parsecs\""]);
}

#[test]
fn duration_without_a_unit() {
    let message = load_err(&[("LOCK_DEFAULT_TTL", "30")]);
    assert_mentions(
        &message,
        &["LOCK_DEFAULT_TTL", "\"30\"", "unit is required", "30s"],
    );
    let message = load_err(&[("LOCK_EXTEND_INTERVAL", "2.5")]);
    assert_mentions(&message, &["LOCK_EXTEND_INTERVAL", "\"2.5\"", "unit"]);
}

#[test]
fn zero_durations() {
    for var in [
        "LOCK_DEFAULT_TTL",
        "LOCK_EXTEND_INTERVAL",
        "LOCK_RETRY_INITIAL_DELAY",
    ] {
        let message = load_err(&[(var, "0s")]);
        assert_mentions(&message, &[var, "greater than 0"]);
    }
}

/// Review finding 5: `LOCK_DEFAULT_TTL=500000000000years` was accepted, and the first `lock()`
/// panicked.
#[test]
fn default_ttl_above_the_maximum() {
    for value in ["500000000000years", "2years", "366days"] {
        let message = load_err(&[("LOCK_DEFAULT_TTL", value)]);
        assert_mentions(
            &message,
            &["LOCK_DEFAULT_TTL", value, "at most", "one year"],
        );
    }
    // One year is the maximum itself.
    let config = load(&[("LOCK_DEFAULT_TTL", "365days")]);
    assert_eq!(config.default_ttl, lock::MAX_TTL);

    let mut config = Config::default();
    config.default_ttl = Duration::MAX;
    let message = config.validate().unwrap_err().to_string();
    assert_mentions(&message, &["LOCK_DEFAULT_TTL", "one year"]);
}

#[test]
fn retry_delays_above_an_hour() {
    let message = load_err(&[
        ("LOCK_RETRY_INITIAL_DELAY", "61m"),
        ("LOCK_RETRY_MAX_DELAY", "2h"),
    ]);
    assert_mentions(&message, &["LOCK_RETRY_INITIAL_DELAY", "61m", "at most 1h"]);
    let message = load_err(&[("LOCK_RETRY_MAX_DELAY", "61m")]);
    assert_mentions(&message, &["LOCK_RETRY_MAX_DELAY", "61m", "at most 1h"]);
    let config = load(&[
        ("LOCK_RETRY_INITIAL_DELAY", "1h"),
        ("LOCK_RETRY_MAX_DELAY", "1h"),
    ]);
    assert_eq!(config.retry.max_delay, Duration::from_secs(3600));
}

/// No duration, however large, makes loading or using the configuration panic.
#[test]
fn huge_durations_are_errors_not_panics() {
    for var in [
        "LOCK_DEFAULT_TTL",
        "LOCK_EXTEND_INTERVAL",
        "LOCK_RETRY_INITIAL_DELAY",
        "LOCK_RETRY_MAX_DELAY",
    ] {
        for value in [
            "500000000000years",
            "18446744073709551615s",
            "99999999999999999999999years",
        ] {
            let message = load_err(&[(var, value)]);
            assert_mentions(&message, &[var]);
        }
    }
    let mut result = None;
    Jail::expect_with(|jail| {
        jail.clear_env();
        jail.set_env("LOCK_DEFAULT_TTL", "500000000000years");
        result = Some(block_on(Locker::from_env()));
        Ok(())
    });
    let err = result.unwrap().unwrap_err();
    assert!(matches!(err, Error::Config { .. }), "{err:?}");
}

/// Review finding 16: an extend interval at or above the TTL was silently capped.
#[test]
fn extend_interval_must_be_below_the_ttl() {
    for (interval, ttl) in [("10s", "10s"), ("1m", "30s"), ("500000000000years", "30s")] {
        let message = load_err(&[
            ("LOCK_EXTEND_INTERVAL", interval),
            ("LOCK_DEFAULT_TTL", ttl),
        ]);
        assert_mentions(
            &message,
            &[
                "LOCK_EXTEND_INTERVAL",
                interval,
                "LOCK_DEFAULT_TTL",
                ttl,
                "below",
            ],
        );
    }
    // The default TTL (30s) counts when only the interval is set.
    let message = load_err(&[("LOCK_EXTEND_INTERVAL", "30s")]);
    assert_mentions(
        &message,
        &["LOCK_EXTEND_INTERVAL", "30s", "LOCK_DEFAULT_TTL"],
    );
    let config = load(&[("LOCK_EXTEND_INTERVAL", "9s"), ("LOCK_DEFAULT_TTL", "10s")]);
    assert_eq!(config.extend_interval, Duration::from_secs(9));

    // Unset, the interval is 10s or a third of a shorter TTL, never an error.
    let config = load(&[("LOCK_DEFAULT_TTL", "6s")]);
    assert_eq!(config.extend_interval, Duration::from_secs(2));
    let config = load(&[("LOCK_DEFAULT_TTL", "2m")]);
    assert_eq!(config.extend_interval, Duration::from_secs(10));

    // In code too.
    let mut config = Config::default();
    config.default_ttl = Duration::from_secs(5);
    let message = config.validate().unwrap_err().to_string();
    assert_mentions(
        &message,
        &["LOCK_EXTEND_INTERVAL", "10s", "LOCK_DEFAULT_TTL", "5s"],
    );
}

#[test]
fn max_delay_below_initial_delay() {
    let message = load_err(&[
        ("LOCK_RETRY_INITIAL_DELAY", "2s"),
        ("LOCK_RETRY_MAX_DELAY", "1s"),
    ]);
    assert_mentions(
        &message,
        &[
            "LOCK_RETRY_MAX_DELAY",
            "1s",
            "LOCK_RETRY_INITIAL_DELAY",
            "2s",
        ],
    );
}

#[cfg(all(feature = "redis", feature = "postgres", feature = "etcd"))]
#[test]
fn bad_numbers() {
    for (var, value) in [
        ("LOCK_RETRY_MAX_ATTEMPTS", "three"),
        ("LOCK_RETRY_MAX_ATTEMPTS", "-1"),
        ("LOCK_RETRY_MAX_ATTEMPTS", "1.5"),
        ("LOCK_REDIS_QUORUM", "x"),
        ("LOCK_POSTGRES_NAMESPACE", "2147483648"),
        ("LOCK_POSTGRES_NAMESPACE", "ns"),
    ] {
        let message = load_err(&[(var, value)]);
        assert_mentions(&message, &[var, &format!("{value:?}"), "expected"]);
    }
}

#[test]
fn jitter_out_of_range() {
    let message = load_err(&[("LOCK_RETRY_JITTER", "1.5")]);
    assert_mentions(&message, &["LOCK_RETRY_JITTER", "1.5", "0..=1"]);
    let message = load_err(&[("LOCK_RETRY_JITTER", "-0.1")]);
    assert_mentions(&message, &["LOCK_RETRY_JITTER", "-0.1", "0..=1"]);
    let message = load_err(&[("LOCK_RETRY_JITTER", "lots")]);
    assert_mentions(&message, &["LOCK_RETRY_JITTER", "\"lots\"", "0..=1"]);
}

#[test]
fn unknown_provider_lists_the_valid_ones() {
    let message = load_err(&[("LOCK_PROVIDER", "zookeeper")]);
    assert_mentions(
        &message,
        &[
            "LOCK_PROVIDER",
            "\"zookeeper\"",
            "memory",
            "redis",
            "postgres",
            "etcd",
        ],
    );
}

#[cfg(all(feature = "redis", feature = "postgres", feature = "etcd"))]
#[test]
fn list_with_an_empty_item() {
    let message = load_err(&[("LOCK_REDIS_URLS", "redis://a:6379,,redis://b:6379")]);
    assert_mentions(
        &message,
        &[
            "LOCK_REDIS_URLS",
            "empty item",
            "redis://a:6379,,redis://b:6379",
        ],
    );
    let message = load_err(&[("LOCK_ETCD_ENDPOINTS", "e1:2379,")]);
    assert_mentions(&message, &["LOCK_ETCD_ENDPOINTS", "empty item"]);
}

#[cfg(all(feature = "redis", feature = "postgres", feature = "etcd"))]
#[test]
fn empty_lists() {
    for var in ["LOCK_REDIS_URLS", "LOCK_ETCD_ENDPOINTS"] {
        for value in ["", " , ", "[]"] {
            let message = load_err(&[(var, value)]);
            assert_mentions(&message, &[var, "empty"]);
        }
    }
}

#[test]
fn empty_owner_id() {
    let message = load_err(&[("LOCK_OWNER_ID", "")]);
    assert_mentions(&message, &["LOCK_OWNER_ID", "empty"]);
    let message = load_err(&[("LOCK_OWNER_ID", "   ")]);
    assert_mentions(&message, &["LOCK_OWNER_ID", "empty"]);
}

#[cfg(all(feature = "redis", feature = "postgres", feature = "etcd"))]
#[test]
fn empty_postgres_url() {
    let message = load_err(&[("LOCK_PROVIDER", "postgres"), ("LOCK_POSTGRES_URL", "")]);
    assert_mentions(&message, &["LOCK_POSTGRES_URL", "required"]);
}

#[cfg(all(feature = "redis", feature = "postgres", feature = "etcd"))]
#[test]
fn quorum_out_of_range() {
    let urls = ("LOCK_REDIS_URLS", "redis://a,redis://b,redis://c");
    let redis = ("LOCK_PROVIDER", "redis");
    let message = load_err(&[redis, urls, ("LOCK_REDIS_QUORUM", "4")]);
    assert_mentions(&message, &["LOCK_REDIS_QUORUM", "4", "3 URL(s)"]);
    let message = load_err(&[redis, urls, ("LOCK_REDIS_QUORUM", "1")]);
    assert_mentions(&message, &["LOCK_REDIS_QUORUM", "1", "majority"]);
}

#[test]
fn a_list_where_one_value_is_expected() {
    let figment = Figment::new().merge(("default_ttl", ["1s", "2s"]));
    let message = Config::from_figment(&figment).unwrap_err().to_string();
    assert_mentions(&message, &["LOCK_DEFAULT_TTL", "single value"]);
}

// --- secrets --------------------------------------------------------------------------------

#[cfg(all(feature = "redis", feature = "postgres", feature = "etcd"))]
#[test]
fn passwords_are_hidden_in_debug() {
    let config = load(&[
        (
            "LOCK_REDIS_URLS",
            "redis://app:s3cret-1@a:6379,rediss://:s3cret-2@b:6380",
        ),
        (
            "LOCK_POSTGRES_URL",
            "postgres://app:s3cret-3@db:5432/app?sslmode=require",
        ),
        ("LOCK_ETCD_ENDPOINTS", "https://root:s3cret-4@etcd:2379"),
    ]);
    // The values themselves are intact ...
    assert_eq!(config.redis.urls[0], "redis://app:s3cret-1@a:6379");
    // ... but no Debug output shows them.
    for debug in [
        format!("{config:?}"),
        format!("{config:#?}"),
        format!("{:?}", config.redis),
        format!("{:?}", config.postgres),
        format!("{:?}", config.etcd),
    ] {
        assert!(!debug.contains("s3cret"), "{debug}");
    }
    let debug = format!("{config:?}");
    assert_mentions(
        &debug,
        &[
            "redis://app:***@a:6379",
            "rediss://:***@b:6380",
            "postgres://app:***@db:5432/app?sslmode=require",
            "https://root:***@etcd:2379",
        ],
    );

    let mut config = Config::default();
    config.postgres.url = "postgres://db/app?user=app&password=s3cret".into();
    let debug = format!("{config:?}");
    assert!(!debug.contains("s3cret"), "{debug}");
    assert!(debug.contains("password=***"), "{debug}");
}

/// Review finding 6: a password in `?pass=` (redis-rs Unix sockets) or holding a raw `,` or
/// `'` was shown in clear.
#[cfg(all(feature = "redis", feature = "postgres", feature = "etcd"))]
#[test]
fn odd_passwords_are_hidden_in_debug_and_errors() {
    let config = load(&[
        (
            "LOCK_REDIS_URLS",
            "redis+unix:///run/redis.sock?db=0&pass=s3cret",
        ),
        ("LOCK_POSTGRES_URL", "postgres://app:pa,ss@db:5432/app"),
        (
            "LOCK_ETCD_ENDPOINTS",
            "http://root:it's@e1:2379, root:s3cret@e2:2379",
        ),
    ]);
    let mut in_code = Config::default();
    in_code.postgres.url = "postgres://app:it's@db:5432/app".into();
    in_code.redis.urls = vec!["redis://app:pa,ss@a:6379".into(), "redis://b".into()];
    for debug in [
        format!("{config:?}"),
        format!("{config:#?}"),
        format!("{in_code:?}"),
    ] {
        for secret in ["s3cret", "pa,ss", "it's"] {
            assert!(!debug.contains(secret), "{secret}: {debug}");
        }
    }
    assert_mentions(
        &format!("{config:?}"),
        &[
            "redis+unix:///run/redis.sock?db=0&pass=***",
            "postgres://app:***@db:5432/app",
            "http://root:***@e1:2379",
        ],
    );

    // Errors that quote the values.
    let message = load_err(&[(
        "LOCK_REDIS_URLS",
        "redis+unix:///run/redis.sock?db=0&pass=s3cret,,redis://app:it's@b",
    )]);
    assert_mentions(&message, &["LOCK_REDIS_URLS", "empty item", "pass=***"]);
    assert!(
        !message.contains("s3cret") && !message.contains("it's"),
        "{message}"
    );
    let mut config = Config::default();
    config.provider = Provider::Etcd;
    config.etcd.endpoints = vec!["http://root:pa,ss@e1:2379".into(), "".into()];
    let message = config.validate().unwrap_err().to_string();
    assert_mentions(
        &message,
        &["LOCK_ETCD_ENDPOINTS", "http://root:***@e1:2379"],
    );
    assert!(!message.contains("pa,ss"), "{message}");
}

#[cfg(all(feature = "redis", feature = "postgres", feature = "etcd"))]
#[test]
fn passwords_are_hidden_in_errors() {
    let message = load_err(&[(
        "LOCK_REDIS_URLS",
        "redis://app:s3cret@a:6379,,redis://b:6379",
    )]);
    assert!(!message.contains("s3cret"), "{message}");
    assert_mentions(&message, &["LOCK_REDIS_URLS", "redis://app:***@a:6379"]);

    let message = load_err(&[("LOCK_ETCD_ENDPOINTS", "http://u:s3cret@e1:2379, ")]);
    assert!(!message.contains("s3cret"), "{message}");

    let mut config = Config::default();
    config.provider = Provider::Redis;
    config.redis.urls = vec!["redis://u:s3cret@a".into(), " ".into()];
    let message = config.validate().unwrap_err().to_string();
    assert!(!message.contains("s3cret"), "{message}");
    assert_mentions(&message, &["LOCK_REDIS_URLS", "redis://u:***@a"]);
}

// --- Locker -----------------------------------------------------------------------------------

#[tokio::test]
async fn locker_new_names_the_missing_feature() {
    for (provider, enabled) in [
        (Provider::Redis, cfg!(feature = "redis")),
        (Provider::Postgres, cfg!(feature = "postgres")),
        (Provider::Etcd, cfg!(feature = "etcd")),
    ] {
        assert_eq!(provider.is_enabled(), enabled);
        let mut config = Config::default();
        config.provider = provider;
        // Port 1 on loopback: nothing listens there. An enabled backend is unavailable, and
        // no level of the error chain shows the password.
        #[cfg(feature = "postgres")]
        {
            config.postgres.url = "postgres://app:s3cret@127.0.0.1:1/app".into();
        }
        #[cfg(feature = "redis")]
        {
            config.redis.urls = vec!["redis://app:s3cret@127.0.0.1:1".into()];
        }
        #[cfg(feature = "etcd")]
        {
            config.etcd.endpoints = vec!["http://root:s3cret@127.0.0.1:1".into()];
        }
        let err = Locker::new(config).await.unwrap_err();
        let message = format!("{err} {err:?} {:?}", std::error::Error::source(&err));
        assert!(!message.contains("s3cret"), "{message}");
        if enabled {
            assert!(
                matches!(err, Error::ProviderUnavailable { backend, .. } if backend == provider.as_str()),
                "{provider}: {err:?}"
            );
            let mut source = std::error::Error::source(&err);
            while let Some(e) = source {
                assert!(!e.to_string().contains("s3cret"), "{e}");
                source = e.source();
            }
        } else {
            assert!(matches!(err, Error::Config { .. }), "{provider}: {err:?}");
            let feature = format!("`{provider}` feature");
            let cargo = format!("features = [\"{provider}\"]");
            assert_mentions(&message, &["LOCK_PROVIDER", &feature, &cargo]);
        }
    }
}

#[test]
fn from_env_names_the_missing_feature() {
    let mut result = None;
    Jail::expect_with(|jail| {
        jail.clear_env();
        jail.set_env("LOCK_PROVIDER", "etcd");
        // Nothing listens on port 1.
        jail.set_env("LOCK_ETCD_ENDPOINTS", "127.0.0.1:1");
        result = Some(block_on(Locker::from_env()));
        Ok(())
    });
    let err = result.unwrap().unwrap_err();
    if cfg!(feature = "etcd") {
        assert!(
            matches!(
                err,
                Error::ProviderUnavailable {
                    backend: "etcd",
                    ..
                }
            ),
            "{err:?}"
        );
    } else {
        assert_mentions(
            &err.to_string(),
            &[
                "LOCK_PROVIDER",
                "\"etcd\"",
                "`etcd` feature",
                "features = [\"etcd\"]",
            ],
        );
    }
}

#[tokio::test]
async fn postgres_needs_a_url() {
    let mut config = Config::default();
    config.provider = Provider::Postgres;
    let message = Locker::new(config).await.unwrap_err().to_string();
    if cfg!(feature = "postgres") {
        assert_mentions(&message, &["LOCK_POSTGRES_URL", "required"]);
    } else {
        assert_mentions(&message, &["`postgres` feature"]);
    }
}

#[tokio::test]
async fn locker_new_validates_a_config_built_in_code() {
    let mut config = Config::default();
    config.default_ttl = Duration::ZERO;
    let err = Locker::new(config).await.unwrap_err();
    assert!(matches!(err, Error::Config { .. }), "{err:?}");
    assert_mentions(&err.to_string(), &["LOCK_DEFAULT_TTL"]);

    let mut config = Config::default();
    config.retry.jitter = 2.0;
    let message = Locker::new(config).await.unwrap_err().to_string();
    assert_mentions(&message, &["LOCK_RETRY_JITTER", "2", "0..=1"]);
}

#[cfg(feature = "memory")]
#[test]
fn from_env_with_memory_gives_a_working_locker() {
    let mut result = None;
    Jail::expect_with(|jail| {
        jail.clear_env();
        jail.set_env("LOCK_PROVIDER", "memory");
        jail.set_env("LOCK_OWNER_ID", "config-test");
        jail.set_env("LOCK_DEFAULT_TTL", "12s");
        jail.set_env("LOCK_TEST_REQUIRE_SERVERS", "1");
        result = Some(block_on(Locker::from_env()));
        Ok(())
    });
    let locker = result.unwrap().expect("a memory locker");
    block_on(async move {
        assert_eq!(locker.backend_name(), "memory");
        assert_eq!(locker.owner(), "config-test");
        assert_eq!(locker.default_ttl(), Duration::from_secs(12));

        let mutex = locker.mutex("config-test-lock");
        let guard = mutex.lock().await.unwrap();
        assert!(mutex.try_lock().await.unwrap().is_none());
        let holders = locker.inspect("config-test-lock").await.unwrap();
        assert_eq!(holders.len(), 1);
        assert_eq!(holders[0].owner, "config-test");
        assert_eq!(holders[0].token, guard.token());
        guard.release().await.unwrap();
        assert!(locker.inspect("config-test-lock").await.unwrap().is_empty());
        let again = mutex.try_lock().await.unwrap().expect("free after release");
        again.release().await.unwrap();
        locker.close().await;
    });
}

#[cfg(feature = "memory")]
#[tokio::test]
async fn locker_wraps_and_unwraps() {
    use lock::provider::Memory;
    // The inner `lock_core::Locker`, named without depending on `lock-core` directly.
    type Inner = <Locker as std::ops::Deref>::Target;
    let locker = Locker::with_backend(Memory::new());
    let inner: Inner = locker.clone().into_inner();
    let back = Locker::from(inner);
    assert_eq!(back.owner(), locker.owner());
    let inner: Inner = back.into();
    let guard = Locker::from(inner).mutex("wrap").lock().await.unwrap();
    guard.release().await.unwrap();
    assert!(format!("{locker:?}").contains("memory"));
}

#[test]
fn provider_names_round_trip() {
    for provider in Provider::ALL {
        assert_eq!(provider.to_string().parse::<Provider>().unwrap(), provider);
        assert_eq!(provider.feature(), provider.as_str());
    }
    let err = "mysql".parse::<Provider>().unwrap_err();
    assert!(matches!(err, Error::Config { .. }));
    assert_mentions(
        &err.to_string(),
        &["\"mysql\"", "memory, redis, postgres, etcd"],
    );
}

/// `LOCK_REQUEST_TIMEOUT` bounds each backend call of a locker made from the environment.
#[tokio::test]
async fn request_timeout_is_configured() {
    assert_eq!(Config::default().request_timeout, Duration::from_secs(5));
    let config = load(&[("LOCK_REQUEST_TIMEOUT", "750ms")]);
    assert_eq!(config.request_timeout, Duration::from_millis(750));
    let locker = lock::Locker::new(config).await.unwrap();
    assert_eq!(locker.request_timeout(), Duration::from_millis(750));
    for bad in ["0s", "2h"] {
        let message = load_err(&[("LOCK_REQUEST_TIMEOUT", bad)]);
        assert_mentions(&message, &["LOCK_REQUEST_TIMEOUT", bad]);
    }
}

/// A backend's variables in a build without its feature are ignored, not reported as unknown:
/// one environment serves builds with different features.
#[cfg(not(feature = "redis"))]
#[test]
fn a_disabled_backends_variables_are_ignored() {
    let config = load(&[
        ("LOCK_REDIS_URLS", "redis://a:6379"),
        ("LOCK_REDIS_QUORUM", "x"),
    ]);
    assert_eq!(config.provider, Provider::Memory);
    let mut unknown = Vec::new();
    Jail::expect_with(|jail| {
        jail.clear_env();
        jail.set_env("LOCK_REDIS_URLS", "redis://a:6379");
        jail.set_env("LOCK_DEFAULT_TLL", "1s");
        unknown = Config::unknown_env_vars();
        Ok(())
    });
    let names: Vec<&str> = unknown.iter().map(|u| u.name.as_str()).collect();
    assert_eq!(names, ["LOCK_DEFAULT_TLL"]);
}

/// Each backend owns its variables: the ones added with the backend's own configuration are
/// read through the umbrella without the umbrella naming them.
#[cfg(all(feature = "redis", feature = "postgres", feature = "etcd"))]
#[test]
fn backends_read_their_own_variables() {
    let config = load(&[
        ("LOCK_REDIS_TIMEOUT", "250ms"),
        ("LOCK_POSTGRES_TABLE_PREFIX", "app_lock_"),
        ("LOCK_POSTGRES_MAX_CONNECTIONS", "9"),
        ("LOCK_POSTGRES_CONNECT_TIMEOUT", "2s"),
        ("LOCK_POSTGRES_LISTEN_URL", "postgres://db:5432/app"),
        ("LOCK_ETCD_CONNECT_TIMEOUT", "3s"),
        ("LOCK_ETCD_LEASE", "Session"),
    ]);
    assert_eq!(config.etcd.lease, lock::provider::LeaseMode::Session);
    assert_eq!(config.redis.timeout, Duration::from_millis(250));
    assert_eq!(config.postgres.table_prefix, "app_lock_");
    assert_eq!(config.postgres.max_connections, 9);
    assert_eq!(config.postgres.connect_timeout, Duration::from_secs(2));
    assert_eq!(
        config.postgres.listen_url.as_deref(),
        Some("postgres://db:5432/app")
    );
    assert_eq!(config.etcd.connect_timeout, Duration::from_secs(3));
    let message = load_err(&[("LOCK_ETCD_LEASE", "per-grant")]);
    assert_mentions(
        &message,
        &["LOCK_ETCD_LEASE", "\"per-grant\"", "\"session\""],
    );
    let message = load_err(&[("LOCK_POSTGRES_MAX_CONNECTIONS", "many")]);
    assert_mentions(&message, &["LOCK_POSTGRES_MAX_CONNECTIONS", "\"many\""]);
    let message = load_err(&[
        ("LOCK_PROVIDER", "postgres"),
        ("LOCK_POSTGRES_URL", "postgres://db/app"),
        ("LOCK_POSTGRES_TABLE_PREFIX", "1x"),
    ]);
    assert_mentions(&message, &["LOCK_POSTGRES_TABLE_PREFIX", "\"1x\""]);
    let mut unknown = vec![UnknownVar::new("unset")];
    Jail::expect_with(|jail| {
        jail.clear_env();
        jail.set_env("LOCK_REDIS_TIMEOUT", "1s");
        jail.set_env("LOCK_ETCD_CONNECT_TIMEOUT", "1s");
        unknown = Config::unknown_env_vars();
        Ok(())
    });
    assert!(unknown.is_empty(), "{unknown:?}");
}
