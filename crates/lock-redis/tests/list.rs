//! `list` on Redis, on instances this test owns: one page does bounded server work however many
//! idle names the instance holds (counted with `INFO commandstats`), a listing reaches every
//! held name and no idle one, Redlock lists what a quorum holds, and a failed instance is an
//! error within the round-trip timeout (one instance) or passed over (Redlock).

mod support;

use lock_core::{Error, ListRequest, LockInfo, Locker};
use lock_testkit::list_pages;
use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};
use support::{QUICK, Servers, backend, commandstats, prefix, reset_stats};

/// `INFO commandstats` as command -> calls that did not fail.
async fn calls(conn: &mut redis::aio::MultiplexedConnection) -> HashMap<String, u64> {
    commandstats(conn)
        .await
        .into_iter()
        .map(|(name, (calls, _))| (name, calls))
        .collect()
}

async fn connection(url: String) -> redis::aio::MultiplexedConnection {
    redis::Client::open(url)
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}

fn names(pages: &[Vec<LockInfo>]) -> BTreeSet<String> {
    pages.iter().flatten().map(|l| l.name.clone()).collect()
}

/// 3000 idle names (locked once and released: each leaves its token counter for a minute) and
/// one held name under the prefix: one page of 10 makes at most 4 `SCAN` calls (of `COUNT`
/// 100) and inspects at most 10 names, and answers quickly; the whole listing reports the held
/// name and no idle one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_page_does_bounded_work_past_idle_names() {
    let Some(servers) = Servers::start(1, &[]).await else {
        return;
    };
    let prefix = prefix();
    let locker = Locker::with_backend(backend(&servers.urls(), &prefix).await);
    let mut conn = connection(servers.url(0)).await;
    const IDLE: usize = 3000;
    for i in 0..IDLE {
        let guard = locker
            .mutex(format!("jobs/idle-{i:04}"))
            .lock()
            .await
            .unwrap();
        guard.release().await.unwrap();
    }
    let held = locker.mutex("jobs/held").lock().await.unwrap();
    let keys: u64 = redis::cmd("DBSIZE").query_async(&mut conn).await.unwrap();
    assert!(
        keys > IDLE as u64,
        "the idle names' counters must still be there: {keys} keys"
    );
    // Loads the inspect script, so that the page below counts no NOSCRIPT.
    locker.inspect("jobs/held").await.unwrap();

    reset_stats(&mut conn).await;
    let started = Instant::now();
    let page = locker
        .list(&ListRequest::new("jobs/").limit(10))
        .await
        .unwrap();
    let took = started.elapsed();
    let stats = calls(&mut conn).await;
    let scans = stats.get("scan").copied().unwrap_or(0);
    let scripts =
        stats.get("evalsha").copied().unwrap_or(0) + stats.get("eval").copied().unwrap_or(0);
    println!("one page of 10 over {keys} keys: {took:?}, {stats:?}");
    assert!(scans <= 4, "{scans} SCAN calls in one page: {stats:?}");
    assert!(scripts <= 10, "{scripts} scripts in one page: {stats:?}");
    assert!(took < Duration::from_secs(2), "one page took {took:?}");
    assert!(
        page.locks.iter().all(|l| l.name == "jobs/held"),
        "only the held name may be listed: {:?}",
        page.locks
    );

    reset_stats(&mut conn).await;
    let all = list_pages(&locker, "jobs/", 10).await;
    let stats = calls(&mut conn).await;
    println!("whole listing: {} pages, {stats:?}", all.len());
    assert_eq!(names(&all), BTreeSet::from(["jobs/held".to_owned()]));
    assert!(
        stats.get("scan").copied().unwrap_or(0) <= 4 * all.len() as u64,
        "{stats:?}"
    );
    // Outside the prefix: nothing.
    assert!(names(&list_pages(&locker, "job/", 10).await).is_empty());
    held.release().await.unwrap();
    assert!(names(&list_pages(&locker, "jobs/", 10).await).is_empty());
    locker.close().await;
}

/// Pages of one name over many held names (more per `SCAN` batch than fit in a page): the
/// names of a batch that do not fit are carried in the cursor, and every one is reported.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_larger_than_the_page_is_carried_over() {
    let Some(servers) = Servers::start(1, &[]).await else {
        return;
    };
    let prefix = prefix();
    let locker = Locker::with_backend(backend(&servers.urls(), &prefix).await);
    let mut guards = Vec::new();
    let mut held = BTreeSet::new();
    for i in 0..150 {
        let name = format!("held-{i:03}");
        // Mutexes on the fast path, read locks and semaphores: every kind of key is found.
        guards.push(match i % 3 {
            0 => locker.mutex(&name).lock().await.unwrap(),
            1 => locker.rw_mutex(&name).read().await.unwrap(),
            _ => locker.semaphore(&name, 3).acquire(2).await.unwrap(),
        });
        held.insert(name);
    }
    let all = list_pages(&locker, "held-", 1).await;
    assert_eq!(names(&all), held);
    assert!(all.len() >= held.len());
    let all = list_pages(&locker, "held-", 1000).await;
    assert_eq!(names(&all), held);
    for guard in guards {
        guard.release().await.unwrap();
    }
    locker.close().await;
}

/// Redlock over three instances lists the names a quorum holds, once per scanned instance at
/// most, and never a lease that only one instance holds; with one instance down it still lists
/// them all (as `inspect` reports them); with two down it fails within the round-trip timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redlock_lists_what_a_quorum_holds() {
    let Some(mut servers) = Servers::start(3, &[]).await else {
        return;
    };
    let prefix = prefix();
    let redlock = Locker::with_backend(backend(&servers.urls(), &prefix).await);
    // A lease on instance 1 alone, as a partial grant leaves it: no quorum holds it.
    let single = Locker::with_backend(backend(&servers.urls()[1..2], &prefix).await);
    let partial = single.mutex("partial").lock().await.unwrap();
    let mut guards = Vec::new();
    let mut held = BTreeSet::new();
    for i in 0..30 {
        let name = format!("whole-{i:02}");
        guards.push(redlock.rw_mutex(&name).read().await.unwrap());
        held.insert(name);
    }
    let all = list_pages(&redlock, "", 7).await;
    assert_eq!(names(&all), held, "only what a quorum holds");
    let reported: usize = all
        .iter()
        .map(|page| page.iter().map(|l| &l.name).collect::<BTreeSet<_>>().len())
        .sum();
    // Two of the three instances are scanned: each name is reported at most twice.
    assert!(
        reported <= 2 * held.len(),
        "{reported} reports of {} names",
        held.len()
    );

    servers.kill(0);
    let started = Instant::now();
    let all = list_pages(&redlock, "", 7).await;
    println!("listing with instance 0 down: {:?}", started.elapsed());
    // As `inspect` reports them: a lease counts when it may be on a quorum, counting the
    // instance that does not answer, so the partial lease on instance 1 now counts too.
    let mut inspected = BTreeSet::new();
    for name in held.iter().chain(["partial".to_owned()].iter()) {
        if !redlock.inspect(name).await.unwrap().is_empty() {
            inspected.insert(name.clone());
        }
    }
    assert!(held.is_subset(&inspected));
    assert_eq!(
        names(&all),
        inspected,
        "one instance down: what inspect reports"
    );

    servers.kill(2);
    // Instance 0 is passed over (one page); then too few instances are left.
    let mut request = ListRequest::new("").limit(7);
    let err = loop {
        let started = Instant::now();
        let result = redlock.list(&request).await;
        assert!(
            started.elapsed() < QUICK * 4,
            "took {:?}",
            started.elapsed()
        );
        match result {
            Ok(page) => {
                let next = page
                    .next
                    .expect("two of three instances down: no complete listing");
                request = request.after(Some(next));
            }
            Err(err) => break err,
        }
    };
    assert!(
        matches!(err, Error::ProviderUnavailable { .. }),
        "two of three instances down: {err:?}"
    );
    std::mem::forget(guards);
    std::mem::forget(partial);
}

/// One instance that does not answer (paused with SIGSTOP): `list` fails with
/// `ProviderUnavailable` within the round-trip timeout, and lists again once it answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_instance_is_unavailable_within_the_timeout() {
    let Some(servers) = Servers::start(1, &[]).await else {
        return;
    };
    let prefix = prefix();
    let locker = Locker::with_backend(backend(&servers.urls(), &prefix).await);
    let guard = locker.mutex("paused").lock().await.unwrap();
    servers.pause(0);
    let started = Instant::now();
    let result = locker.list(&ListRequest::new("")).await;
    let took = started.elapsed();
    servers.resume(0);
    let err = result.unwrap_err();
    assert!(matches!(err, Error::ProviderUnavailable { .. }), "{err:?}");
    assert!(took < QUICK * 4, "took {took:?}");
    let all = list_pages(&locker, "", 10).await;
    assert_eq!(names(&all), BTreeSet::from(["paused".to_owned()]));
    guard.release().await.unwrap();
    locker.close().await;
}
