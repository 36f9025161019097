//! Connecting: bad configurations are clear errors, passwords never show.

mod common;

use lock_core::Error;
use lock_postgres::{Postgres, PostgresConfig, PostgresMode};
use lock_testkit::require_servers;
use std::time::Duration;

#[tokio::test]
async fn bad_configurations_are_named_errors() {
    let mut config = PostgresConfig::new("postgres://app:s3cret@127.0.0.1:1/app");
    config.table_prefix = "bad-prefix".into();
    match Postgres::connect(config).await {
        Err(Error::Config { message }) => assert!(message.contains("bad-prefix"), "{message}"),
        other => panic!("expected a configuration error, got {other:?}"),
    }
    let err = Postgres::connect(PostgresConfig::new("mysql://app:s3cret@db/app"))
        .await
        .unwrap_err();
    let text = format!("{err} {err:?}");
    assert!(matches!(err, Error::Config { .. }), "{text}");
    assert!(
        text.contains("mysql://app:***@db/app") && !text.contains("s3cret"),
        "{text}"
    );

    // Nothing listens on port 1.
    let mut config = PostgresConfig::new("postgres://app:s3cret@127.0.0.1:1/app");
    config.connect_timeout = Duration::from_secs(1);
    let err = Postgres::connect(config).await.unwrap_err();
    let text = format!("{err} {err:?} {:?}", std::error::Error::source(&err));
    assert!(
        matches!(
            err,
            Error::ProviderUnavailable {
                backend: "postgres",
                ..
            }
        ),
        "{text}"
    );
    assert!(!text.contains("s3cret"), "{text}");
}

#[tokio::test]
async fn debug_never_shows_the_password() {
    let url = match common::url() {
        Ok(url) => url,
        Err(reason) if require_servers() => panic!("server required: {reason}"),
        Err(reason) => {
            println!("skipped: {reason}");
            return;
        }
    };
    // Trust authentication ignores the password; it must still never be shown.
    let with_password = url.replacen("postgres://postgres@", "postgres://postgres:s3cret@", 1);
    let mut config = common::config(&with_password, PostgresMode::Lease);
    config.listen_url = Some(with_password.clone());
    let debug = format!("{config:?}");
    assert!(!debug.contains("s3cret"), "{debug}");
    let backend = Postgres::connect(config)
        .await
        .expect("trust authentication accepts any password");
    let debug = format!("{backend:?}");
    assert!(
        !debug.contains("s3cret") && debug.contains("Lease"),
        "{debug}"
    );
    lock_core::Backend::close(&backend).await;
}
