//! Where grants get their etcd lease, off the critical path: a pool of pre-granted leases
//! ([`LeaseMode::Pool`], the default) or one session lease per TTL ([`LeaseMode::Session`]).
//!
//! Both are kept alive by one background task per [`Etcd`](crate::Etcd) (and its clones), at
//! most every [`TICK`], so that a lease handed out for a TTL `t` still has, on the server, at
//! least `t` to live from the moment it is handed out: each lease is granted with
//! `⌈t⌉ + 1` seconds, and one whose last confirmed renewal is too old for that is renewed first,
//! inline. The validity `lock-core` computes (from the attempt's start, before the hand-out)
//! therefore never exceeds what the server honours.
//!
//! Also here: the etcd lease each grant of this process was made on, remembered by lease id, so
//! `release` is one `LeaseRevoke` and `extend` one keep-alive, without a read.

use crate::keys::lease_secs;
use crate::store::{Failure, Repeat, call_repeating, unavailable};
use etcd_client::Client;
use lock_core::{LeaseId, Result};
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;
use tokio::sync::Notify;
use tokio::time::Instant;

/// How grants get their etcd lease. Set with [`EtcdConfig::lease`](crate::EtcdConfig::lease).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum LeaseMode {
    /// Each grant gets an etcd lease of its own, taken from a pool of leases granted ahead of
    /// time and kept alive in the background (the default). Per-grant TTLs and independent
    /// expiry; a crashed holder's lock may outlive its TTL by about a second.
    #[default]
    Pool,
    /// All grants of one client with the same TTL (in whole seconds) share one etcd lease, kept
    /// alive in the background, as in etcd's own `concurrency` package. Two raft proposals per
    /// lock/unlock cycle; a live process keeps all its grants alive, and when the shared lease
    /// is lost, every grant on it is.
    Session,
}

/// How often the background task renews the pooled and session leases.
pub(crate) const TICK: Duration = Duration::from_millis(400);

/// At most this many idle pooled leases per TTL.
pub(crate) const POOL_PER_TTL: usize = 8;

/// At most this many idle pooled leases in all.
pub(crate) const POOL_TOTAL: usize = 32;

/// A TTL's pool unused for this long is revoked and dropped (no background traffic for TTLs
/// no longer in use).
const POOL_IDLE: Duration = Duration::from_secs(30);

/// At most this many grants are remembered by lease id; beyond that, `release` and `extend` of
/// the others read the key first (as for grants made by another process).
const HELD_MAX: usize = 100_000;

/// An etcd lease and what is known of its expiry.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Lease {
    pub(crate) id: i64,
    /// The TTL in seconds the server granted.
    pub(crate) ttl: i64,
    /// When the last grant or keep-alive the server confirmed was sent: the server's expiry is
    /// at least this + `ttl`.
    renewed: Instant,
}

impl Lease {
    /// True if the server keeps the lease at least `ttl` past `now`.
    fn lasts(&self, ttl: Duration, now: Instant) -> bool {
        let granted = Duration::from_secs(u64::try_from(self.ttl).unwrap_or(0));
        lock_core::later(self.renewed, granted) >= lock_core::later(now, ttl)
    }
}

/// A lease handed out for one acquisition attempt.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Taken {
    pub(crate) lease: Lease,
    /// Shared by the client's grants (session mode): never revoked for one grant.
    pub(crate) session: bool,
    /// The TTL in whole seconds it was handed out for.
    secs: i64,
}

/// The etcd lease a grant of this process was made on.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Held {
    pub(crate) lease: i64,
    /// The TTL in seconds the server granted that lease.
    pub(crate) ttl: i64,
    pub(crate) session: bool,
    /// The key is a reader's (under the read-write lock's `s/`).
    pub(crate) reader: bool,
}

#[derive(Default)]
struct State {
    closed: bool,
    pools: HashMap<i64, Pool>,
    sessions: HashMap<i64, Lease>,
    held: HashMap<LeaseId, Held>,
    /// Requests of this process queued with a waiting claim: their next attempt reads first.
    waiting: HashSet<LeaseId>,
}

struct Pool {
    idle: Vec<Lease>,
    /// How many idle leases the background task keeps (grows by one per miss).
    want: usize,
    used: Instant,
}

struct Inner {
    client: Client,
    timeout: Duration,
    mode: LeaseMode,
    state: Mutex<State>,
    wake: Arc<Notify>,
    /// Serialises the creation of session leases (one per TTL, not one per racing caller).
    creating: tokio::sync::Mutex<()>,
    task: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

/// The leases of one [`Etcd`](crate::Etcd) and its clones.
#[derive(Clone)]
pub(crate) struct Leases {
    inner: Arc<Inner>,
}

impl Leases {
    /// Starts the background task (in the current Tokio runtime).
    pub(crate) fn start(client: Client, timeout: Duration, mode: LeaseMode) -> Leases {
        let wake = Arc::new(Notify::new());
        let inner = Arc::new(Inner {
            client,
            timeout,
            mode,
            state: Mutex::new(State::default()),
            wake: wake.clone(),
            creating: tokio::sync::Mutex::new(()),
            task: Mutex::new(None),
        });
        let task = tokio::spawn(maintain(Arc::downgrade(&inner), wake));
        *lock(&inner.task) = Some(task);
        Leases { inner }
    }

    pub(crate) fn mode(&self) -> LeaseMode {
        self.inner.mode
    }

    fn state(&self) -> MutexGuard<'_, State> {
        lock(&self.inner.state)
    }

    /// A lease that the server keeps at least `ttl` from now: pooled or the session's, else
    /// granted now.
    pub(crate) async fn take(&self, ttl: Duration) -> Result<Taken> {
        let secs = lease_secs(ttl);
        let now = Instant::now();
        let (closed, found) = {
            let mut state = self.state();
            let closed = state.closed;
            let found = match self.inner.mode {
                _ if closed => None,
                LeaseMode::Pool => {
                    let pool = state.pools.entry(secs).or_insert_with(|| Pool {
                        idle: Vec::new(),
                        want: 0,
                        used: now,
                    });
                    pool.used = now;
                    let found = pool.idle.pop();
                    if found.is_none() {
                        pool.want = (pool.want + 1).min(POOL_PER_TTL);
                    }
                    found
                }
                LeaseMode::Session => state.sessions.get(&secs).copied(),
            };
            (closed, found)
        };
        let session = self.inner.mode == LeaseMode::Session && !closed;
        if !closed && self.inner.mode == LeaseMode::Pool {
            self.inner.wake.notify_one();
        }
        if let Some(lease) = found {
            if let Some(lease) = self.fresh(lease, ttl).await? {
                return Ok(Taken {
                    lease,
                    session,
                    secs,
                });
            }
            if session {
                self.drop_session(secs, lease.id);
            }
        }
        if !session {
            let lease = self.grant(secs + 1).await?;
            return Ok(Taken {
                lease,
                session,
                secs,
            });
        }
        // A session lease for this TTL: one caller creates it, the others use it.
        let _creating = self.inner.creating.lock().await;
        let current = self.state().sessions.get(&secs).copied();
        if let Some(lease) = current
            && let Some(lease) = self.fresh(lease, ttl).await?
        {
            return Ok(Taken {
                lease,
                session,
                secs,
            });
        }
        let lease = self.grant(secs + 1).await?;
        let mut state = self.state();
        if state.closed {
            // Closed meanwhile: the lease serves this grant alone.
            return Ok(Taken {
                lease,
                session: false,
                secs,
            });
        }
        state.sessions.insert(secs, lease);
        drop(state);
        self.inner.wake.notify_one();
        Ok(Taken {
            lease,
            session,
            secs,
        })
    }

    /// The lease, renewed first if its last renewal is too old to cover `ttl` from now; `None`
    /// if it is gone.
    async fn fresh(&self, mut lease: Lease, ttl: Duration) -> Result<Option<Lease>> {
        let now = Instant::now();
        if lease.lasts(ttl, now) {
            return Ok(Some(lease));
        }
        if !keep_alive(&self.inner.client, self.inner.timeout, lease.id).await? {
            return Ok(None);
        }
        lease.renewed = now;
        if !lease.lasts(ttl, now) {
            // Never: a lease is granted with at least ⌈ttl⌉ + 1 s.
            return Ok(None);
        }
        self.renewed(lease.id, now);
        Ok(Some(lease))
    }

    /// Renews `taken` if needed so that the server keeps it at least `ttl` from now.
    ///
    /// # Errors
    ///
    /// `ProviderUnavailable`, also when the lease is gone.
    pub(crate) async fn ensure(&self, taken: &mut Taken, ttl: Duration) -> Result<()> {
        match self.fresh(taken.lease, ttl).await? {
            Some(lease) => {
                taken.lease = lease;
                Ok(())
            }
            None => {
                if taken.session {
                    self.drop_session(taken.secs, taken.lease.id);
                }
                Err(unavailable(format!(
                    "etcd lease {:x} expired before it could be used",
                    taken.lease.id
                )))
            }
        }
    }

    fn drop_session(&self, secs: i64, id: i64) {
        let mut state = self.state();
        if state.sessions.get(&secs).is_some_and(|s| s.id == id) {
            state.sessions.remove(&secs);
        }
    }

    fn renewed(&self, id: i64, at: Instant) {
        let mut state = self.state();
        let state = &mut *state;
        for lease in state
            .pools
            .values_mut()
            .flat_map(|p| p.idle.iter_mut())
            .chain(state.sessions.values_mut())
        {
            if lease.id == id && lease.renewed < at {
                lease.renewed = at;
            }
        }
    }

    async fn grant(&self, secs: i64) -> Result<Lease> {
        grant(&self.inner.client, self.inner.timeout, secs).await
    }

    /// A lease taken and not used for a grant: back to the pool (or revoked, when the pool is
    /// full or closed). A session lease stays as it is.
    pub(crate) async fn give_back(&self, taken: Taken) {
        if taken.session {
            return;
        }
        {
            let mut state = self.state();
            let total: usize = state.pools.values().map(|p| p.idle.len()).sum();
            if !state.closed
                && total < POOL_TOTAL
                && let Some(pool) = state.pools.get_mut(&taken.secs)
                && pool.idle.len() < POOL_PER_TTL
            {
                pool.idle.push(taken.lease);
                return;
            }
        }
        let _ = revoke(&self.inner.client, self.inner.timeout, taken.lease.id).await;
    }

    /// Notes that a request of this process waits with a claim: the lock is not empty, so
    /// its next attempt reads instead of trying the one-transaction grant.
    pub(crate) fn mark_waiting(&self, id: LeaseId) {
        let mut state = self.state();
        if state.waiting.len() < HELD_MAX {
            state.waiting.insert(id);
        }
    }

    /// True if the request waits with a claim ([`mark_waiting`](Self::mark_waiting)).
    pub(crate) fn is_waiting(&self, id: LeaseId) -> bool {
        self.state().waiting.contains(&id)
    }

    /// Remembers the lease a grant was made on.
    pub(crate) fn remember(&self, id: LeaseId, held: Held) {
        let mut state = self.state();
        state.waiting.remove(&id);
        if state.held.len() < HELD_MAX || state.held.contains_key(&id) {
            state.held.insert(id, held);
        }
    }

    /// The lease a grant of this process was made on, if remembered.
    pub(crate) fn held(&self, id: LeaseId) -> Option<Held> {
        self.state().held.get(&id).copied()
    }

    /// Forgets a grant's lease (released, expired, or about to move).
    pub(crate) fn forget(&self, id: LeaseId) -> Option<Held> {
        let mut state = self.state();
        state.waiting.remove(&id);
        state.held.remove(&id)
    }

    /// Stops the background task and revokes every pooled and session lease. Later grants get
    /// leases of their own, granted when needed.
    pub(crate) async fn close(&self) {
        let ids = {
            let mut state = self.state();
            state.closed = true;
            state.held.clear();
            state.waiting.clear();
            take_all(&mut state)
        };
        if let Some(task) = lock(&self.inner.task).take() {
            task.abort();
        }
        // Concurrently, so a cluster that is gone costs one bound, not one per lease.
        let _ = revoke_all(&self.inner.client, self.inner.timeout, ids, 1).await;
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Every pooled and session lease id, removed from the state.
fn take_all(state: &mut State) -> Vec<i64> {
    let mut ids: Vec<i64> = state
        .pools
        .drain()
        .flat_map(|(_, p)| p.idle)
        .map(|l| l.id)
        .collect();
    ids.extend(state.sessions.drain().map(|(_, l)| l.id));
    ids
}

impl Drop for Inner {
    /// The last handle is gone without `close`: revoke what is left, if a runtime still runs.
    fn drop(&mut self) {
        if let Some(task) = lock(&self.task).take() {
            task.abort();
        }
        let ids = take_all(&mut lock(&self.state));
        if ids.is_empty() {
            return;
        }
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let (client, timeout) = (self.client.clone(), self.timeout);
            runtime.spawn(async move {
                for id in ids {
                    let _ = revoke(&client, timeout, id).await;
                }
            });
        }
    }
}

/// The background task: refills the pools and renews pooled and session leases, every
/// [`TICK`] or when woken, until the last handle is gone or it is aborted.
async fn maintain(inner: Weak<Inner>, wake: Arc<Notify>) {
    loop {
        tokio::select! {
            () = wake.notified() => {}
            () = tokio::time::sleep(TICK) => {}
        }
        let Some(inner) = inner.upgrade() else { return };
        let leases = Leases { inner };
        leases.maintain_once().await;
    }
}

impl Leases {
    async fn maintain_once(&self) {
        let now = Instant::now();
        let (revoke_ids, grants, renew) = {
            let mut state = self.state();
            if state.closed {
                return;
            }
            let mut revoke_ids = Vec::new();
            state.pools.retain(|_, pool| {
                let keep = now.saturating_duration_since(pool.used) < POOL_IDLE;
                if !keep {
                    revoke_ids.extend(pool.idle.drain(..).map(|l| l.id));
                }
                keep
            });
            let mut room =
                POOL_TOTAL.saturating_sub(state.pools.values().map(|p| p.idle.len()).sum());
            let mut grants = Vec::new();
            for (secs, pool) in &state.pools {
                let n = pool.want.saturating_sub(pool.idle.len()).min(room);
                room -= n;
                grants.extend(std::iter::repeat_n(*secs, n));
            }
            let due = |l: &Lease| now.saturating_duration_since(l.renewed) >= TICK;
            let renew: Vec<(i64, Option<i64>)> = state
                .pools
                .values()
                .flat_map(|p| p.idle.iter())
                .filter(|l| due(l))
                .map(|l| (l.id, None))
                .chain(
                    state
                        .sessions
                        .iter()
                        .filter(|(_, l)| due(l))
                        .map(|(secs, l)| (l.id, Some(*secs))),
                )
                .collect();
            (revoke_ids, grants, renew)
        };
        let (client, timeout) = (&self.inner.client, self.inner.timeout);
        for id in revoke_ids {
            let _ = revoke(client, timeout, id).await;
        }
        for secs in grants {
            let Ok(lease) = grant(client, timeout, secs + 1).await else {
                break;
            };
            let kept = {
                let mut state = self.state();
                let total: usize = state.pools.values().map(|p| p.idle.len()).sum();
                let closed = state.closed;
                match state.pools.get_mut(&secs) {
                    Some(pool)
                        if !closed && total < POOL_TOTAL && pool.idle.len() < POOL_PER_TTL =>
                    {
                        pool.idle.push(lease);
                        true
                    }
                    _ => false,
                }
            };
            if !kept {
                let _ = revoke(client, timeout, lease.id).await;
            }
        }
        for (id, session) in renew {
            let sent = Instant::now();
            match keep_alive(client, timeout, id).await {
                Ok(true) => self.renewed(id, sent),
                Ok(false) => {
                    // Expired or revoked: drop it. A lost session's grants find out at their
                    // next extend (`Expired`), and the next grant starts a new session.
                    let mut state = self.state();
                    for pool in state.pools.values_mut() {
                        pool.idle.retain(|l| l.id != id);
                    }
                    if let Some(secs) = session
                        && state.sessions.get(&secs).is_some_and(|l| l.id == id)
                    {
                        state.sessions.remove(&secs);
                    }
                }
                Err(_) => {} // tried again next tick; a stale lease is renewed before use
            }
        }
    }
}

/// Grants a lease of `secs` seconds (etcd may raise it to its minimum, never lower it).
pub(crate) async fn grant(client: &Client, timeout: Duration, secs: i64) -> Result<Lease> {
    let sent = Instant::now();
    let response = call_repeating(timeout, Repeat::No, || {
        let mut lease = client.lease_client();
        async move { lease.grant(secs, None).await }
    })
    .await
    .map_err(|f| f.into_error("lease grant", timeout))?
    .0;
    if !response.error().is_empty() {
        return Err(unavailable(format!(
            "etcd lease grant failed: {}",
            response.error()
        )));
    }
    if response.ttl() < secs {
        // Never seen: etcd only raises TTLs. A shorter lease would break the caller's
        // validity, so it is not used.
        let _ = revoke(client, timeout, response.id()).await;
        return Err(unavailable(format!(
            "etcd granted a lease of {} s when {secs} s were asked",
            response.ttl()
        )));
    }
    Ok(Lease {
        id: response.id(),
        ttl: response.ttl(),
        renewed: sent,
    })
}

/// Renews a lease: `Ok(true)` if it was alive, `Ok(false)` if it had expired or was revoked.
pub(crate) async fn keep_alive(client: &Client, timeout: Duration, lease: i64) -> Result<bool> {
    let renewed = call_repeating(timeout, Repeat::Once, || {
        let mut client = client.lease_client();
        async move { client.keep_alive(lease).await }
    })
    .await;
    match renewed {
        Ok(_) => Ok(true),
        Err(Failure::Etcd(etcd_client::Error::LeaseKeepAliveError(_))) => Ok(false),
        Err(f) => Err(f.into_error("lease keep-alive", timeout)),
    }
}

/// Revokes a lease: `Ok(true)` if it existed, `Ok(false)` if it had expired or was revoked.
/// Revokes every lease of `ids` concurrently, each tried up to `attempts` times (a lease
/// already gone counts as revoked): every one is tried whatever happens to the others, and
/// the first error is returned after all have finished. Bounded by `attempts` times one
/// revoke's bound.
pub(crate) async fn revoke_all(
    client: &Client,
    timeout: Duration,
    ids: Vec<i64>,
    attempts: usize,
) -> Result<()> {
    let mut revokes = tokio::task::JoinSet::new();
    for id in ids {
        let client = client.clone();
        revokes.spawn(async move {
            let mut last = None;
            for _ in 0..attempts.max(1) {
                match revoke(&client, timeout, id).await {
                    Ok(_) => return Ok(()),
                    Err(e) => last = Some(e),
                }
            }
            Err(last.unwrap_or_else(|| crate::store::unavailable("lease revoke failed")))
        });
    }
    let mut first = None;
    while let Some(done) = revokes.join_next().await {
        let result = done.unwrap_or_else(|e| Err(crate::store::unavailable(e)));
        if let Err(e) = result {
            first.get_or_insert(e);
        }
    }
    first.map_or(Ok(()), Err)
}

pub(crate) async fn revoke(client: &Client, timeout: Duration, lease: i64) -> Result<bool> {
    let revoked = call_repeating(timeout, Repeat::Once, || {
        let mut client = client.lease_client();
        async move { client.revoke(lease).await }
    })
    .await;
    match revoked {
        Ok(_) => Ok(true),
        Err(Failure::Etcd(etcd_client::Error::GRpcStatus(status)))
            if status.message().contains("lease not found") =>
        {
            Ok(false)
        }
        Err(f) => Err(f.into_error("lease revoke", timeout)),
    }
}
