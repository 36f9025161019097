//! What is measured: our backends and their peers behind one small interface.

use crate::peers;
use anyhow::Result;
use lock::{Config, Locker, Provider, provider::Memory};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

/// A boxed, `Send` future of a `Result`.
pub type Fut<'a, T> = Pin<Box<dyn Future<Output = Result<T>> + Send + 'a>>;

/// The lease TTL every subject uses: long enough never to expire during a run.
pub const TTL: Duration = Duration::from_secs(30);

/// The semaphore limit of the semaphore scenario.
pub const SEMAPHORE_LIMIT: u32 = 4;

/// The semaphore limit of the "other holders" scenario: room for 1000 holders and the client
/// measured.
pub const MANY_LIMIT: u32 = 1004;

/// What a scenario asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Mutex,
    Semaphore,
    Read,
    /// One permit of a semaphore with [`MANY_LIMIT`] permits.
    SemaphoreMany,
}

impl Kind {
    pub fn title(self) -> &'static str {
        match self {
            Kind::Mutex => "mutex",
            Kind::Semaphore => "semaphore (1 of 4 permits)",
            Kind::Read => "read lock",
            Kind::SemaphoreMany => "semaphore (1 of 1004 permits)",
        }
    }
}

/// Something held, to be released.
pub trait Held: Send {
    fn release(self: Box<Self>) -> Fut<'static, ()>;
}

/// One client of a lock implementation.
pub trait Subject: Send + Sync {
    /// Waits until `name` is granted (or, for subjects that cannot wait, tries until it is).
    fn acquire_kind<'a>(&'a self, kind: Kind, name: &'a str) -> Fut<'a, Box<dyn Held>>;
}

impl dyn Subject {
    pub async fn acquire(&self, name: &str) -> Result<Box<dyn Held>> {
        self.acquire_kind(Kind::Mutex, name).await
    }

    pub async fn cycle(&self, kind: Kind, name: &str) -> Result<()> {
        self.acquire_kind(kind, name).await?.release().await
    }
}

/// A lock implementation in one group of comparable ones.
pub struct Contender {
    /// `memory`, `redis-1`, `redlock-3`, `redlock-5`, `postgres`, `etcd`.
    pub group: &'static str,
    /// `ours`, or the peer's name.
    pub label: String,
    /// A prefix for lock names, unique to the run.
    pub run: String,
    /// True if its clients can wait for a held lock (the hand-off scenario).
    pub waits: bool,
    /// The kinds beyond mutex it supports.
    pub kinds: Vec<Kind>,
    /// Makes a new client (a connection of its own, where the implementation has one).
    pub make: Box<dyn Fn() -> Fut<'static, Arc<dyn Subject>> + Send + Sync>,
}

impl Contender {
    pub fn supports(&self, kind: Kind) -> bool {
        self.kinds.contains(&kind)
    }
}

/// Our locker, with one handle per name and kind made once and reused, as an application
/// would (the tokio peer keeps one primitive per name the same way).
struct Ours {
    locker: Locker,
    handles: std::sync::Mutex<std::collections::HashMap<String, Arc<Handles>>>,
}

struct Handles {
    mutex: lock::Mutex,
    semaphore: lock::Semaphore,
    semaphore_many: lock::Semaphore,
    rw: lock::RwMutex,
}

impl Ours {
    fn new(locker: Locker) -> Ours {
        Ours { locker, handles: Default::default() }
    }

    fn handles(&self, name: &str) -> Arc<Handles> {
        let mut handles = self.handles.lock().unwrap();
        if let Some(h) = handles.get(name) {
            return h.clone();
        }
        let h = Arc::new(Handles {
            mutex: self.locker.mutex(name).ttl(TTL),
            semaphore: self.locker.semaphore(name, SEMAPHORE_LIMIT).ttl(TTL),
            semaphore_many: self.locker.semaphore(name, MANY_LIMIT).ttl(TTL),
            rw: self.locker.rw_mutex(name).ttl(TTL),
        });
        handles.insert(name.to_owned(), h.clone());
        h
    }
}

struct OursHeld(lock::Guard);

impl Held for OursHeld {
    fn release(self: Box<Self>) -> Fut<'static, ()> {
        Box::pin(async move { Ok(self.0.release().await?) })
    }
}

impl Subject for Ours {
    fn acquire_kind<'a>(&'a self, kind: Kind, name: &'a str) -> Fut<'a, Box<dyn Held>> {
        Box::pin(async move {
            let handles = self.handles(name);
            let guard = match kind {
                Kind::Mutex => handles.mutex.lock().await?,
                Kind::Semaphore => handles.semaphore.acquire(1).await?,
                Kind::Read => handles.rw.read().await?,
                Kind::SemaphoreMany => handles.semaphore_many.acquire(1).await?,
            };
            Ok(Box::new(OursHeld(guard)) as Box<dyn Held>)
        })
    }
}

fn ours_from(config: Config) -> Box<dyn Fn() -> Fut<'static, Arc<dyn Subject>> + Send + Sync> {
    Box::new(move || {
        let config = config.clone();
        Box::pin(async move { Ok(Arc::new(Ours::new(Locker::new(config).await?)) as Arc<dyn Subject>) })
    })
}

fn contender(
    group: &'static str,
    label: &str,
    run: &str,
    waits: bool,
    kinds: Vec<Kind>,
    make: Box<dyn Fn() -> Fut<'static, Arc<dyn Subject>> + Send + Sync>,
) -> Contender {
    Contender {
        group,
        label: label.to_owned(),
        run: format!("{run}/{group}/{label}"),
        waits,
        kinds,
        make,
    }
}

fn list(var: &str) -> Option<Vec<String>> {
    let value = std::env::var(var).ok()?;
    let items: Vec<String> = value.split(',').map(|s| s.trim().to_owned()).filter(|s| !s.is_empty()).collect();
    (!items.is_empty()).then_some(items)
}

/// Every contender whose server is configured; a group without its variable is skipped, loudly.
pub async fn all(run: &str) -> Result<Vec<Contender>> {
    let every = vec![Kind::Semaphore, Kind::Read, Kind::SemaphoreMany];
    let mut out = Vec::new();

    let store = Memory::new();
    out.push(contender("memory", "ours", run, true, every.clone(), Box::new(move || {
        let store = store.clone();
        Box::pin(async move { Ok(Arc::new(Ours::new(Locker::with_backend(store))) as Arc<dyn Subject>) })
    })));
    out.push(contender("memory", "tokio::sync (Mutex, Semaphore, RwLock)", run, true, every.clone(), peers::tokio_sync()));

    match list("LOCK_TEST_REDIS_URLS") {
        Some(urls) => {
            let mut config = Config::default();
            config.provider = Provider::Redis;
            config.redis.urls = urls[..1].to_vec();
            out.push(contender("redis-1", "ours", run, true, every.clone(), ours_from(config)));
            out.push(contender("redis-1", "raw SET NX PX + CAD script", run, false, vec![], peers::redis_floor(urls[0].clone())));
            out.push(contender("redis-1", "rslock", run, true, vec![], peers::rslock(urls[..1].to_vec())));
            out.push(contender("redis-1", "redlock (blocking)", run, true, vec![], peers::redlock(urls[..1].to_vec())));
        }
        None => eprintln!("skipping redis-1: LOCK_TEST_REDIS_URLS is not set"),
    }
    match list("LOCK_TEST_REDLOCK_URLS") {
        Some(urls) if urls.len() >= 5 => {
            for (group, n) in [("redlock-3", 3), ("redlock-5", 5)] {
                let mut config = Config::default();
                config.provider = Provider::Redis;
                config.redis.urls = urls[..n].to_vec();
                out.push(contender(group, "ours", run, true, every.clone(), ours_from(config)));
                out.push(contender(group, "rslock", run, true, vec![], peers::rslock(urls[..n].to_vec())));
                out.push(contender(group, "redlock (blocking)", run, true, vec![], peers::redlock(urls[..n].to_vec())));
            }
        }
        _ => eprintln!("skipping redlock-3/5: LOCK_TEST_REDLOCK_URLS does not list 5 URLs"),
    }
    match std::env::var("LOCK_TEST_POSTGRES_URL") {
        Ok(url) => {
            let mut config = Config::default();
            config.provider = Provider::Postgres;
            config.postgres.url = url.clone();
            out.push(contender("postgres", "ours (advisory)", run, true, every.clone(), ours_from(config.clone())));
            let mut relaxed = config.clone();
            relaxed.postgres.durability = lock::config::PostgresDurability::Relaxed;
            out.push(contender("postgres", "ours (advisory, relaxed)", run, true, vec![], ours_from(relaxed)));
            let mut lease = config;
            lease.postgres.mode = lock::config::PostgresMode::Lease;
            out.push(contender("postgres", "ours (lease)", run, true, every.clone(), ours_from(lease)));
            out.push(contender("postgres", "sqlx PgAdvisoryLock", run, true, vec![], peers::pg_advisory(url)));
        }
        Err(_) => eprintln!("skipping postgres: LOCK_TEST_POSTGRES_URL is not set"),
    }
    match list("LOCK_TEST_ETCD_ENDPOINTS") {
        Some(endpoints) => {
            let mut config = Config::default();
            config.provider = Provider::Etcd;
            config.etcd.endpoints = endpoints.clone();
            out.push(contender("etcd", "ours", run, true, every.clone(), ours_from(config)));
            let session = lock_etcd::EtcdConfig::new(endpoints.clone()).with_lease(lock_etcd::LeaseMode::Session);
            out.push(contender("etcd", "ours (session lease)", run, true, every.clone(), Box::new(move || {
                let session = session.clone();
                Box::pin(async move {
                    let etcd = lock_etcd::Etcd::connect(session).await?;
                    Ok(Arc::new(Ours::new(Locker::with_backend(etcd))) as Arc<dyn Subject>)
                })
            })));
            out.push(contender("etcd", "etcd-client lock/unlock RPC", run, true, vec![], peers::etcd_rpc(endpoints)));
        }
        None => eprintln!("skipping etcd: LOCK_TEST_ETCD_ENDPOINTS is not set"),
    }
    Ok(out)
}
