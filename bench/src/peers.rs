//! The peers: the libraries and raw protocols our backends are measured against.

use crate::subjects::{Fut, Held, Kind, MANY_LIMIT, SEMAPHORE_LIMIT, Subject, TTL};
use anyhow::{Context, Result, anyhow};
use sqlx::Connection;
use std::collections::HashMap;
use std::sync::{Arc, Mutex as StdMutex};
use std::time::{Duration, Instant};

type Make = Box<dyn Fn() -> Fut<'static, Arc<dyn Subject>> + Send + Sync>;

struct Dropped<T: Send>(T);

impl<T: Send + 'static> Held for Dropped<T> {
    fn release(self: Box<Self>) -> Fut<'static, ()> {
        drop(self);
        Box::pin(async { Ok(()) })
    }
}

/// tokio's in-process primitives, one per name: the floor for the memory backend.
#[derive(Default)]
struct TokioSync {
    mutexes: StdMutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    semaphores: StdMutex<HashMap<String, Arc<tokio::sync::Semaphore>>>,
    rwlocks: StdMutex<HashMap<String, Arc<tokio::sync::RwLock<()>>>>,
}

fn entry<T>(map: &StdMutex<HashMap<String, Arc<T>>>, name: &str, make: impl FnOnce() -> T) -> Arc<T> {
    let mut map = map.lock().unwrap();
    match map.get(name) {
        Some(value) => value.clone(),
        None => {
            let value = Arc::new(make());
            map.insert(name.to_owned(), value.clone());
            value
        }
    }
}

impl Subject for TokioSync {
    fn acquire_kind<'a>(&'a self, kind: Kind, name: &'a str) -> Fut<'a, Box<dyn Held>> {
        Box::pin(async move {
            Ok(match kind {
                Kind::Mutex => Box::new(Dropped(entry(&self.mutexes, name, Default::default).lock_owned().await)) as Box<dyn Held>,
                Kind::Semaphore => Box::new(Dropped(
                    entry(&self.semaphores, name, || tokio::sync::Semaphore::new(SEMAPHORE_LIMIT as usize))
                        .acquire_owned()
                        .await?,
                )),
                Kind::Read => Box::new(Dropped(entry(&self.rwlocks, name, Default::default).read_owned().await)),
                Kind::SemaphoreMany => Box::new(Dropped(
                    entry(&self.semaphores, name, || tokio::sync::Semaphore::new(MANY_LIMIT as usize))
                        .acquire_owned()
                        .await?,
                )),
            })
        })
    }
}

pub fn tokio_sync() -> Make {
    let shared: Arc<TokioSync> = Arc::default();
    Box::new(move || {
        let shared = shared.clone();
        Box::pin(async move { Ok(shared as Arc<dyn Subject>) })
    })
}

/// Compare-and-delete: the release half of the floor.
const CAD: &str = r#"if redis.call("GET", KEYS[1]) == ARGV[1] then return redis.call("DEL", KEYS[1]) else return 0 end"#;

/// The floor for one Redis node: `SET key token NX PX ttl`, then a compare-and-delete script,
/// on a `ConnectionManager` like ours. It cannot wait: it retries at once while busy.
struct RedisFloor {
    conn: redis::aio::ConnectionManager,
    script: redis::Script,
}

struct RedisFloorHeld {
    conn: redis::aio::ConnectionManager,
    script: redis::Script,
    key: String,
    token: String,
}

impl Held for RedisFloorHeld {
    fn release(self: Box<Self>) -> Fut<'static, ()> {
        Box::pin(async move {
            let mut conn = self.conn.clone();
            let _: i64 = self.script.key(&self.key).arg(&self.token).invoke_async(&mut conn).await?;
            Ok(())
        })
    }
}

impl Subject for RedisFloor {
    fn acquire_kind<'a>(&'a self, _: Kind, name: &'a str) -> Fut<'a, Box<dyn Held>> {
        Box::pin(async move {
            let token = format!("{:x}", fastish_random());
            let mut conn = self.conn.clone();
            loop {
                let set: Option<String> = redis::cmd("SET")
                    .arg(name)
                    .arg(&token)
                    .arg("NX")
                    .arg("PX")
                    .arg(TTL.as_millis() as u64)
                    .query_async(&mut conn)
                    .await?;
                if set.is_some() {
                    return Ok(Box::new(RedisFloorHeld {
                        conn: self.conn.clone(),
                        script: self.script.clone(),
                        key: name.to_owned(),
                        token,
                    }) as Box<dyn Held>);
                }
            }
        })
    }
}

fn fastish_random() -> u128 {
    use std::hash::{BuildHasher, RandomState};
    let a = RandomState::new().hash_one(Instant::now());
    let b = RandomState::new().hash_one(std::thread::current().id());
    (u128::from(a) << 64) | u128::from(b)
}

pub fn redis_floor(url: String) -> Make {
    Box::new(move || {
        let url = url.clone();
        Box::pin(async move {
            let client = redis::Client::open(url.as_str())?;
            let conn = redis::aio::ConnectionManager::new(client).await?;
            Ok(Arc::new(RedisFloor { conn, script: redis::Script::new(CAD) }) as Arc<dyn Subject>)
        })
    })
}

/// rslock: Redlock over the given nodes (one node = single instance). Its `acquire` polls.
struct Rslock(rslock::LockManager);

struct RslockHeld(rslock::LockGuard);

impl Held for RslockHeld {
    fn release(self: Box<Self>) -> Fut<'static, ()> {
        Box::pin(async move {
            self.0.release().await;
            Ok(())
        })
    }
}

impl Subject for Rslock {
    fn acquire_kind<'a>(&'a self, _: Kind, name: &'a str) -> Fut<'a, Box<dyn Held>> {
        Box::pin(async move {
            let guard = self.0.acquire(name, TTL).await.map_err(|e| anyhow!("rslock: {e:?}"))?;
            Ok(Box::new(RslockHeld(guard)) as Box<dyn Held>)
        })
    }
}

pub fn rslock(urls: Vec<String>) -> Make {
    Box::new(move || {
        let urls = urls.clone();
        Box::pin(async move { Ok(Arc::new(Rslock(rslock::LockManager::new(urls))) as Arc<dyn Subject>) })
    })
}

/// redlock: the blocking Redlock client, run on tokio's blocking pool. Its `lock` tries a few
/// times with random delays; a waiter calls it again until it gets the lock.
struct Redlock(Arc<redlock::RedLock>);

struct RedlockHeld {
    manager: Arc<redlock::RedLock>,
    resource: Vec<u8>,
    val: Vec<u8>,
}

impl Held for RedlockHeld {
    fn release(self: Box<Self>) -> Fut<'static, ()> {
        Box::pin(async move {
            tokio::task::spawn_blocking(move || {
                let lock = redlock::Lock {
                    resource: self.resource.clone(),
                    val: self.val.clone(),
                    validity_time: 0,
                    lock_manager: &self.manager,
                };
                self.manager.unlock(&lock);
            })
            .await?;
            Ok(())
        })
    }
}

impl Subject for Redlock {
    fn acquire_kind<'a>(&'a self, _: Kind, name: &'a str) -> Fut<'a, Box<dyn Held>> {
        Box::pin(async move {
            let manager = self.0.clone();
            let resource = name.as_bytes().to_vec();
            let ttl = TTL.as_millis() as usize;
            let (resource, val) = tokio::task::spawn_blocking(move || loop {
                match manager.lock(&resource, ttl) {
                    Ok(Some(lock)) => return Ok((lock.resource.clone(), lock.val.clone())),
                    Ok(None) => {}
                    Err(e) => return Err(anyhow!("redlock: {e}")),
                }
            })
            .await??;
            Ok(Box::new(RedlockHeld { manager: self.0.clone(), resource, val }) as Box<dyn Held>)
        })
    }
}

pub fn redlock(urls: Vec<String>) -> Make {
    Box::new(move || {
        let urls = urls.clone();
        Box::pin(async move { Ok(Arc::new(Redlock(Arc::new(redlock::RedLock::new(urls)))) as Arc<dyn Subject>) })
    })
}

/// sqlx's `PgAdvisoryLock` on a connection of its own; waits in the server.
struct PgAdvisory {
    conn: tokio::sync::Mutex<Option<sqlx::PgConnection>>,
}

struct PgAdvisoryHeld {
    guard: sqlx::postgres::PgAdvisoryLockGuard<sqlx::PgConnection>,
    owner: Arc<PgAdvisory>,
}

impl Held for PgAdvisoryHeld {
    fn release(self: Box<Self>) -> Fut<'static, ()> {
        Box::pin(async move {
            let conn = self.guard.release_now().await?;
            *self.owner.conn.lock().await = Some(conn);
            Ok(())
        })
    }
}

struct PgClient(Arc<PgAdvisory>);

impl Subject for PgClient {
    fn acquire_kind<'a>(&'a self, _: Kind, name: &'a str) -> Fut<'a, Box<dyn Held>> {
        Box::pin(async move {
            let conn = self.0.conn.lock().await.take().context("one lock at a time per connection")?;
            let guard = sqlx::postgres::PgAdvisoryLock::new(name).acquire(conn).await?;
            Ok(Box::new(PgAdvisoryHeld { guard, owner: self.0.clone() }) as Box<dyn Held>)
        })
    }
}

pub fn pg_advisory(url: String) -> Make {
    Box::new(move || {
        let url = url.clone();
        Box::pin(async move {
            let conn = sqlx::PgConnection::connect(&url).await?;
            Ok(Arc::new(PgClient(Arc::new(PgAdvisory { conn: tokio::sync::Mutex::new(Some(conn)) })))
                as Arc<dyn Subject>)
        })
    })
}

/// etcd's own lock service (`Lock`/`Unlock` RPCs) with one lease per client; waits in the
/// server.
struct EtcdRpc {
    client: etcd_client::Client,
    lease: i64,
}

struct EtcdHeld {
    client: etcd_client::Client,
    key: Vec<u8>,
}

impl Held for EtcdHeld {
    fn release(self: Box<Self>) -> Fut<'static, ()> {
        Box::pin(async move {
            let mut client = self.client.clone();
            client.unlock(self.key).await?;
            Ok(())
        })
    }
}

impl Subject for EtcdRpc {
    fn acquire_kind<'a>(&'a self, _: Kind, name: &'a str) -> Fut<'a, Box<dyn Held>> {
        Box::pin(async move {
            let mut client = self.client.clone();
            let options = etcd_client::LockOptions::new().with_lease(self.lease);
            let response = client.lock(name, Some(options)).await?;
            Ok(Box::new(EtcdHeld { client: self.client.clone(), key: response.key().to_vec() }) as Box<dyn Held>)
        })
    }
}

pub fn etcd_rpc(endpoints: Vec<String>) -> Make {
    Box::new(move || {
        let endpoints = endpoints.clone();
        Box::pin(async move {
            let mut client = etcd_client::Client::connect(&endpoints, None).await?;
            let lease = client.lease_grant(600, None).await?.id();
            Ok(Arc::new(EtcdRpc { client, lease }) as Arc<dyn Subject>)
        })
    })
}

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

/// The median round trip of each network group's server, measured with the cheapest request.
/// The process id of the Redis server at `url` (`INFO server`), to pause it.
pub async fn redis_pid(url: &str) -> Result<u32> {
    let mut conn = redis::Client::open(url)?.get_multiplexed_async_connection().await?;
    let info: String = redis::cmd("INFO").arg("server").query_async(&mut conn).await?;
    info.lines()
        .find_map(|line| line.strip_prefix("process_id:"))
        .and_then(|pid| pid.trim().parse().ok())
        .ok_or_else(|| anyhow::anyhow!("no process_id in INFO server of {url}"))
}

pub async fn round_trips() -> Result<Vec<(&'static str, Duration)>> {
    const N: usize = 200;
    let mut out = Vec::new();
    if let Ok(urls) = std::env::var("LOCK_TEST_REDIS_URLS") {
        let url = urls.split(',').next().unwrap_or_default().trim().to_owned();
        let mut conn = redis::aio::ConnectionManager::new(redis::Client::open(url.as_str())?).await?;
        let mut samples = Vec::new();
        for _ in 0..N {
            let t = Instant::now();
            let _: String = redis::cmd("PING").query_async(&mut conn).await?;
            samples.push(t.elapsed());
        }
        out.push(("redis-1", median(samples)));
    }
    if let Ok(url) = std::env::var("LOCK_TEST_POSTGRES_URL") {
        let mut conn = sqlx::PgConnection::connect(&url).await?;
        let mut samples = Vec::new();
        for _ in 0..N {
            let t = Instant::now();
            sqlx::query("SELECT 1").execute(&mut conn).await?;
            samples.push(t.elapsed());
        }
        out.push(("postgres", median(samples)));
    }
    if let Ok(endpoints) = std::env::var("LOCK_TEST_ETCD_ENDPOINTS") {
        let endpoints: Vec<&str> = endpoints.split(',').map(str::trim).collect();
        let mut client = etcd_client::Client::connect(&endpoints, None).await?;
        let mut samples = Vec::new();
        for _ in 0..N {
            let t = Instant::now();
            client.get("lock-bench-rtt", None).await?;
            samples.push(t.elapsed());
        }
        out.push(("etcd", median(samples)));
    }
    Ok(out)
}
