//! What `LOCK_POSTGRES_NAMESPACE` and `LOCK_POSTGRES_TABLE_PREFIX` isolate (documented in the
//! crate README): separate table prefixes (plus, in advisory mode, separate namespaces) keep
//! lock names apart; namespaces on the same tables do not (the namespace only keys the advisory
//! locks, and rows are keyed by name).

mod common;

use lock_core::Locker;
use lock_postgres::{Postgres, PostgresMode};

async fn locker(url: &str, mode: PostgresMode, prefix: &str, namespace: i32) -> Locker {
    let mut config = common::config(url, mode);
    config.table_prefix = prefix.to_owned();
    config.namespace = namespace;
    Locker::with_backend(Postgres::connect(config).await.expect("connect"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn table_prefixes_isolate_names_and_namespaces_do_not() {
    let Some(url) = common::url_or_skip() else {
        return;
    };
    let ns = common::namespace();
    for mode in [PostgresMode::Advisory, PostgresMode::Lease] {
        let name = format!("shared-{mode}-{}", ulid::Ulid::generate());
        // Two applications with their own tables (and namespaces): one name, two locks.
        let app_a = locker(&url, mode, "lock_ns_a_", ns).await;
        let app_b = locker(&url, mode, "lock_ns_b_", ns ^ 0x0200_0000).await;
        let held = app_a.mutex(&name).try_lock().await.unwrap().expect("free");
        let other = app_b.mutex(&name).try_lock().await.unwrap();
        assert!(
            other.is_some(),
            "{mode:?}: separate table prefixes share a lock"
        );
        assert!(app_b.inspect(&name).await.unwrap().len() == 1, "{mode:?}");
        drop(other);
        // Advisory mode, separate tables but one namespace: the advisory key is
        // (namespace, hash(kind, name)), so the two applications contend for it (safe, but the
        // other application's holder blocks this one).
        let same_namespace = locker(&url, mode, "lock_ns_b_", ns).await;
        let other = same_namespace.mutex(&name).try_lock().await.unwrap();
        match mode {
            PostgresMode::Advisory => assert!(other.is_none(), "advisory keys stopped meeting"),
            PostgresMode::Lease => assert!(other.is_some(), "lease mode has no advisory keys"),
        }
        drop(other);
        same_namespace.close().await;
        // Two namespaces on the same tables: one name, one lock (rows are keyed by name).
        let same_tables = locker(&url, mode, "lock_ns_a_", ns ^ 0x0100_0000).await;
        let other = same_tables.mutex(&name).try_lock().await.unwrap();
        assert!(
            other.is_none(),
            "{mode:?}: another namespace on the same tables was granted a held name"
        );
        assert_eq!(
            same_tables.inspect(&name).await.unwrap().len(),
            1,
            "{mode:?}"
        );
        held.release().await.unwrap();
        for locker in [app_a, app_b, same_tables] {
            locker.close().await;
        }
    }
}
