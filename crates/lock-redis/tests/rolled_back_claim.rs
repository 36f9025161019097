//! Review of this session (issue 10), finding 1: a Redlock roll-back of a fast-path lease turned
//! it into a claim in a lease set without its limit field, and acquire purged only sets with
//! that field: the claim never lapsed and later waiters on that node waited for ever. The test
//! runs the real scripts with EVAL, as backend.rs assembles them.

use std::time::Duration;

const ACQUIRE: &str = concat!(
    include_str!("../src/scripts/acquire_fast.lua"),
    include_str!("../src/scripts/common.lua"),
    include_str!("../src/scripts/acquire.lua")
);
const RELEASE: &str = concat!(
    include_str!("../src/scripts/release_fast.lua"),
    include_str!("../src/scripts/common.lua"),
    include_str!("../src/scripts/release.lua")
);

fn url() -> Option<String> {
    let url = std::env::var("LOCK_TEST_REDIS_URLS")
        .ok()
        .map(|u| u.split(',').next().unwrap_or_default().to_owned());
    assert!(
        url.is_some() || !lock_testkit::require_servers(),
        "server required (LOCK_TEST_REQUIRE_SERVERS=1) but LOCK_TEST_REDIS_URLS is not set"
    );
    url
}

struct Keys {
    h: String,
    e: String,
    q: String,
    counter: String,
    f: String,
    channel: String,
}

fn keys(tag: &str) -> Keys {
    let base = format!("reviewprobe:{}:{{{}}}:mutex", ulid::Ulid::generate(), tag);
    Keys {
        h: base.clone(),
        e: format!("{base}:exp"),
        q: format!("{base}:claims"),
        counter: format!("{base}:token"),
        f: format!("{base}:lease"),
        channel: format!("{base}:changed"),
    }
}

async fn acquire(
    c: &mut redis::aio::MultiplexedConnection,
    k: &Keys,
    id: &str,
    claim_us: u64,
    attempt: u64,
) -> redis::Value {
    redis::Script::new(ACQUIRE)
        .key(&k.h)
        .key(&k.e)
        .key(&k.q)
        .key(&k.counter)
        .key(&k.f)
        .arg(id)
        .arg("owner")
        .arg("x")
        .arg("1")
        .arg("1")
        .arg(10_000_000u64)
        .arg(claim_us)
        .arg("")
        .arg(&k.channel)
        .arg(60_000u64)
        .arg(attempt)
        .arg("f")
        .arg(0u64)
        .invoke_async(c)
        .await
        .unwrap()
}

fn granted(v: &redis::Value) -> bool {
    format!("{v:?}").contains("granted")
}

/// A Redlock roll-back of a waiting request whose lease was the fast path's F turns F into a
/// claim in a lease set that has no 'l' field (release.lua's F branch never writes it). The
/// acquire script purges only `if s.l`, so once that claim expires (its owner died) it is
/// never purged while later waiters keep refreshing theirs, and it stays ahead of them.
#[tokio::test]
async fn an_expired_rolled_back_fast_claim_lapses() {
    let Some(url) = url() else { return };
    let client = redis::Client::open(url).unwrap();
    let mut c = client.get_multiplexed_async_connection().await.unwrap();
    let k = keys("6e");
    let a = ulid::Ulid::generate().to_string();
    tokio::time::sleep(Duration::from_millis(2)).await;
    let b = ulid::Ulid::generate().to_string();
    // A's attempt 5 is granted on this instance through F ...
    let r = acquire(&mut c, &k, &a, 500_000, 5).await;
    assert!(granted(&r), "{r:?}");
    // ... and rolled back (busy elsewhere): F turns into A's claim (claim ttl 500 ms).
    let r: i64 = redis::Script::new(RELEASE)
        .key(&k.h)
        .key(&k.e)
        .key(&k.q)
        .key(&k.f)
        .arg(&a)
        .arg(&k.channel)
        .arg(5u64)
        .arg(500_000u64)
        .arg("m")
        .invoke_async(&mut c)
        .await
        .unwrap();
    assert_eq!(r, 1);
    let l: Option<String> = redis::cmd("HGET")
        .arg(&k.h)
        .arg("l")
        .query_async(&mut c)
        .await
        .unwrap();
    println!("after the roll-back: H.l = {l:?}");
    // A dies. B waits (claim ttl 2 s) and retries every 200 ms, for 4 s: A's claim expired
    // after 500 ms, so B must be granted well before the end.
    let mut answers = Vec::new();
    let start = std::time::Instant::now();
    let mut won = false;
    while start.elapsed() < Duration::from_secs(4) {
        let r = acquire(&mut c, &k, &b, 2_000_000, 1).await;
        answers.push(format!("{:?}:{}", start.elapsed().as_millis(), granted(&r)));
        if granted(&r) {
            won = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let q: Vec<String> = redis::cmd("ZRANGE")
        .arg(&k.q)
        .arg(0)
        .arg(-1)
        .query_async(&mut c)
        .await
        .unwrap();
    println!("B's answers (ms:granted): {answers:?}; claims left: {q:?} (A = {a})");
    assert!(won, "B never granted: A's expired claim is never purged");
}
