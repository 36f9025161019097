//! Conformance properties of [`Locker::list`](lock_core::Locker::list): complete, bounded
//! pages of the held locks under a prefix.

use crate::TestEnv;
use crate::harness::eventually;
use lock_core::{
    Error, Guard, ListCursor, ListRequest, LockInfo, LockKind, Locker, MAX_LIST_LIMIT,
    MAX_NAME_LEN, Mode,
};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

/// More pages than this for one listing in these tests means a listing that does not end.
const MAX_PAGES: usize = 10_000;

/// Follows `next` from the first page to the last; returns every page's holders. Panics when a
/// page holds more than `limit` names or a name outside `prefix`, or the listing does not end.
pub async fn list_pages(locker: &Locker, prefix: &str, limit: usize) -> Vec<Vec<LockInfo>> {
    let mut request = ListRequest::new(prefix).limit(limit);
    let mut pages = Vec::new();
    loop {
        let page = locker.list(&request).await.expect("list failed");
        let names: BTreeSet<&str> = page.locks.iter().map(|l| l.name.as_str()).collect();
        assert!(
            names.len() <= limit,
            "a page of limit {limit} held {} names",
            names.len()
        );
        for info in &page.locks {
            assert!(
                info.name.starts_with(prefix),
                "list({prefix:?}) reported {:?}, outside the prefix",
                info.name
            );
        }
        pages.push(page.locks);
        assert!(pages.len() < MAX_PAGES, "list({prefix:?}) did not end");
        match page.next {
            Some(next) => request = request.after(Some(next)),
            None => return pages,
        }
    }
}

/// Every holder reported by a whole listing, keyed by name, each name's holders as the page
/// that held the name last reported them (sorted by token).
async fn listed(locker: &Locker, prefix: &str, limit: usize) -> BTreeMap<String, Vec<LockInfo>> {
    let mut by_name: BTreeMap<String, Vec<LockInfo>> = BTreeMap::new();
    for page in list_pages(locker, prefix, limit).await {
        let mut in_page: BTreeMap<String, Vec<LockInfo>> = BTreeMap::new();
        for info in page {
            in_page.entry(info.name.clone()).or_default().push(info);
        }
        for (name, mut holders) in in_page {
            holders.sort_by_key(|h| h.token);
            by_name.insert(name, holders);
        }
    }
    by_name
}

/// What `inspect` says about `name`, sorted by token.
async fn inspected(locker: &Locker, name: &str) -> Vec<LockInfo> {
    let mut holders = locker.inspect(name).await.expect("inspect failed");
    holders.sort_by_key(|h| h.token);
    holders
}

/// The fields that do not move while a lease is held (the expiry is read at another moment).
fn fixed(holders: &[LockInfo]) -> Vec<(String, LockKind, String, u64, Mode, u32)> {
    holders
        .iter()
        .map(|h| {
            (
                h.name.clone(),
                h.kind,
                h.owner.clone(),
                h.token.get(),
                h.mode,
                h.permits,
            )
        })
        .collect()
}

/// `list` reports every held lock under the prefix, of every kind, with what `inspect` reports
/// (owner, token, mode, permits, metadata), and nothing outside the prefix.
pub async fn list_reports_held_locks(env: &TestEnv) {
    let prefix = env.name("");
    let mutex = env.name("a-mutex");
    let rw = env.name("b-rw");
    let sem = env.name("c-sem");
    let mut guards: Vec<Guard> = Vec::new();
    guards.push(
        env.a
            .mutex(&mutex)
            .metadata("job", "report")
            .lock()
            .await
            .unwrap(),
    );
    guards.push(env.a.rw_mutex(&rw).read().await.unwrap());
    guards.push(env.b.rw_mutex(&rw).read().await.unwrap());
    guards.push(env.b.semaphore(&sem, 5).acquire(2).await.unwrap());
    // The same name as another kind: one name, two kinds, one group.
    guards.push(env.b.semaphore(&mutex, 3).acquire(1).await.unwrap());
    // Outside the prefix: a sibling whose name only shares the test's stem.
    let outside = format!("{}-outside", prefix.trim_end_matches('/'));
    guards.push(env.a.mutex(&outside).lock().await.unwrap());

    let all = listed(&env.b, &prefix, 100).await;
    assert_eq!(
        all.keys().cloned().collect::<Vec<_>>(),
        vec![mutex.clone(), rw.clone(), sem.clone()],
        "list({prefix:?}) must report exactly the three held names"
    );
    for name in [&mutex, &rw, &sem] {
        let expected = inspected(&env.a, name).await;
        assert_eq!(
            fixed(&all[name]),
            fixed(&expected),
            "{name}: list vs inspect"
        );
        for (listed, inspected) in all[name].iter().zip(&expected) {
            assert_eq!(listed.metadata, inspected.metadata, "{name}: metadata");
            let skew = match listed.expires_at.duration_since(inspected.expires_at) {
                Ok(d) => d,
                Err(e) => e.duration(),
            };
            assert!(
                skew < Duration::from_secs(5),
                "{name}: expiry {skew:?} apart"
            );
        }
    }
    assert_eq!(all[&rw].len(), 2, "both readers listed");
    assert_eq!(
        all[&mutex].len(),
        2,
        "the mutex and the semaphore of one name"
    );
    for guard in guards {
        guard.release().await.unwrap();
    }
}

/// Released and expired locks are not listed.
pub async fn list_skips_released_and_expired(env: &TestEnv) {
    let prefix = env.name("");
    let released = env.a.mutex(env.name("released")).lock().await.unwrap();
    released.release().await.unwrap();
    let leaked = env
        .a
        .mutex(env.name("leaked"))
        .ttl(Duration::from_secs(1))
        .auto_extend(false)
        .lock()
        .await
        .unwrap();
    std::mem::forget(leaked);
    let held = env.name("held");
    let guard = env.b.rw_mutex(&held).write().await.unwrap();
    assert!(
        eventually(Duration::from_secs(15), || async {
            listed(&env.a, &prefix, 10)
                .await
                .keys()
                .cloned()
                .collect::<Vec<_>>()
                == vec![held.clone()]
        })
        .await,
        "only {held:?} must be listed once the leaked lease expired"
    );
    guard.release().await.unwrap();
    assert!(
        listed(&env.a, &prefix, 10).await.is_empty(),
        "nothing listed after the release"
    );
}

/// Pages hold at most `limit` names, every name's holders in one page, and following `next`
/// reaches every held name, also past many idle names (locked once and released).
pub async fn list_pages_are_bounded_and_complete(env: &TestEnv) {
    let prefix = env.name("");
    for i in 0..60 {
        let idle = env
            .a
            .mutex(env.name(&format!("idle-{i:03}")))
            .lock()
            .await
            .unwrap();
        idle.release().await.unwrap();
    }
    let mut held = BTreeSet::new();
    let mut guards = Vec::new();
    for i in 0..23 {
        let name = env.name(&format!("held-{i:03}"));
        let locker = if i % 2 == 0 { &env.a } else { &env.b };
        guards.push(locker.rw_mutex(&name).read().await.unwrap());
        guards.push(locker.rw_mutex(&name).read().await.unwrap());
        held.insert(name);
    }
    for page in list_pages(&env.a, &prefix, 7).await {
        let mut count: BTreeMap<&str, usize> = BTreeMap::new();
        for info in &page {
            *count.entry(info.name.as_str()).or_default() += 1;
        }
        for (name, n) in count {
            assert_eq!(n, 2, "{name}: both readers belong in the same page");
        }
    }
    let all = listed(&env.a, &prefix, 7).await;
    assert_eq!(
        all.keys().cloned().collect::<BTreeSet<_>>(),
        held,
        "a paged listing must reach every held name"
    );
    let one = listed(&env.b, &prefix, 1).await;
    assert_eq!(
        one.len(),
        held.len(),
        "pages of one name reach them all too"
    );
    for guard in guards {
        guard.release().await.unwrap();
    }
}

/// Out-of-range requests are `InvalidArgument`; a cursor the backend did not make is
/// `InvalidArgument` or is read as a position, never a panic or a backend failure.
pub async fn list_rejects_bad_requests(env: &TestEnv) {
    let invalid = |r: &lock_core::Result<_>| matches!(r, Err(Error::InvalidArgument { .. }));
    assert!(invalid(&env.a.list(&ListRequest::new("").limit(0)).await));
    assert!(invalid(
        &env.a
            .list(&ListRequest::new("").limit(MAX_LIST_LIMIT + 1))
            .await
    ));
    assert!(invalid(
        &env.a
            .list(&ListRequest::new("x".repeat(MAX_NAME_LEN + 1)))
            .await
    ));
    for garbage in [
        "",
        "not a cursor",
        "\u{0}\u{ffff}",
        "99999999999999999999999:zz",
    ] {
        let request = ListRequest::new(env.name("")).after(Some(ListCursor::new(garbage)));
        match env.a.list(&request).await {
            Ok(_) | Err(Error::InvalidArgument { .. }) => {}
            Err(other) => {
                panic!("cursor {garbage:?}: expected Ok or InvalidArgument, got {other:?}")
            }
        }
    }
}
