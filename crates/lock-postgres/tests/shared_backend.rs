//! Two lockers over clones of one `Postgres` share its sessions: closing one must not end the
//! advisory sessions under the other's live guards (the etcd review's R-1, found on PostgreSQL
//! too: `Postgres::close` closed every held session of every clone, so a third client was
//! granted while the other locker's guard still counted itself the holder). Only the last
//! clone closed ends the shared sessions.

mod common;

use lock_core::{Backend, Locker};
use lock_postgres::{Postgres, PostgresMode};
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn closing_one_locker_keeps_anothers_sessions() {
    let Some(url) = common::url_or_skip() else {
        return;
    };
    for mode in [PostgresMode::Advisory, PostgresMode::Lease] {
        let shared = Postgres::connect(common::config(&url, mode)).await.unwrap();
        let a = Locker::with_backend(shared.clone());
        let b = Locker::with_backend(shared.clone());
        let other =
            Locker::with_backend(Postgres::connect(common::config(&url, mode)).await.unwrap());
        let name = format!("shared-backend-{}-{mode}", ulid::Ulid::generate());
        let held = b
            .mutex(&name)
            .ttl(Duration::from_secs(10))
            .auto_extend(false)
            .lock()
            .await
            .unwrap();
        a.close().await;
        let second = other.mutex(&name).try_lock().await.unwrap();
        assert!(
            second.is_none(),
            "{mode}: another client was granted after a closed (b's guard lost: {})",
            held.is_lost()
        );
        // The other locker still works on the shared backend.
        held.extend(Duration::from_secs(10)).await.unwrap();
        held.release().await.unwrap();
        let again = b.mutex(&name).lock().await.unwrap();
        again.release().await.unwrap();
        b.close().await;
        other.close().await;
        shared.close().await;
    }
}
