//! The lease sets, kept in one map behind a mutex.

use lock_core::backend::weight;
use lock_core::{
    AcquireRequest, Acquired, Backend, Error, FencingToken, LeaseId, ListCursor, ListRequest,
    LockInfo, LockKey, LockKind, LockPage, Metadata, Mode, Notifier, Result, Subscription, later,
};
use std::collections::HashMap;
use std::sync::{Arc, Mutex as StdMutex, PoisonError};
use std::time::{Duration, SystemTime};
use tokio::time::Instant;

/// The in-process backend. Cheap to clone; clones share their locks.
#[derive(Clone, Default)]
pub struct Memory {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    state: StdMutex<State>,
    notifier: Notifier,
}

#[derive(Default)]
struct State {
    locks: HashMap<LockKey, Entry, foldhash::fast::RandomState>,
    counters: Counters,
}

#[derive(Default)]
struct Counters {
    /// One counter for every lock: tokens of each lock strictly increase.
    last_token: u64,
    /// Orders waiting claims: first come, first served.
    last_claim: u64,
}

struct Entry {
    limit: u32,
    leases: Vec<Lease>,
    claims: Vec<Claim>,
}

struct Lease {
    id: LeaseId,
    owner: Arc<str>,
    mode: Mode,
    permits: u32,
    token: FencingToken,
    expires: Instant,
    metadata: Arc<Metadata>,
}

struct Claim {
    id: LeaseId,
    weight: u64,
    order: u64,
    expires: Instant,
}

impl Entry {
    fn new(limit: u32) -> Self {
        Entry {
            limit,
            leases: Vec::new(),
            claims: Vec::new(),
        }
    }

    /// Drops expired leases and claims; true if any lease expired.
    fn purge(&mut self, now: Instant) -> bool {
        let before = self.leases.len();
        self.leases.retain(|l| l.expires > now);
        self.claims.retain(|c| c.expires > now);
        self.leases.len() != before
    }

    fn is_empty(&self) -> bool {
        self.leases.is_empty() && self.claims.is_empty()
    }
}

impl Memory {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.inner
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Runs `f` on the key's entry after purging it, removes the entry if it is left empty, and
    /// signals waiters if `f` (or the purge) changed the lock.
    fn with_entry<T>(
        &self,
        key: &LockKey,
        limit: u32,
        f: impl FnOnce(&mut Counters, &mut Entry, Instant) -> (T, bool),
    ) -> T {
        let now = Instant::now();
        let (result, changed) = {
            let mut state = self.state();
            let State { locks, counters } = &mut *state;
            let entry = locks
                .entry(key.clone())
                .or_insert_with(|| Entry::new(limit));
            let expired = entry.purge(now);
            let (result, changed) = f(counters, entry, now);
            if entry.is_empty() {
                locks.remove(key);
            }
            (result, changed || expired)
        };
        if changed {
            self.inner.notifier.notify(key);
        }
        result
    }
}

fn try_acquire(
    counters: &mut Counters,
    entry: &mut Entry,
    request: &AcquireRequest,
    now: Instant,
) -> Result<Acquired> {
    if entry.is_empty() {
        entry.limit = request.limit;
    } else if entry.limit != request.limit {
        return Err(request.limit_mismatch(entry.limit));
    }
    // A retry of a request whose grant was applied but whose answer was lost: the lease is
    // already ours. Adopt it, from now.
    if let Some(lease) = entry.leases.iter_mut().find(|l| l.id == request.lease_id) {
        lease.expires = later(now, request.ttl);
        return Ok(Acquired::Granted { token: lease.token });
    }
    let limit = u64::from(entry.limit);
    let mine = entry
        .claims
        .iter()
        .find(|c| c.id == request.lease_id)
        .map(|c| c.order);
    let held: u64 = entry
        .leases
        .iter()
        .map(|l| weight(l.mode, l.permits, entry.limit))
        .sum();
    let ahead = entry
        .claims
        .iter()
        .filter(|c| c.id != request.lease_id && mine.is_none_or(|order| c.order < order));
    let waiting: u64 = ahead.clone().map(|c| c.weight).sum();

    if held + waiting + request.weight() <= limit {
        entry.claims.retain(|c| c.id != request.lease_id);
        counters.last_token += 1;
        let token = FencingToken(counters.last_token);
        entry.leases.push(Lease {
            id: request.lease_id,
            owner: Arc::clone(&request.owner),
            mode: request.mode,
            permits: request.permits,
            token,
            expires: later(now, request.ttl),
            metadata: Arc::clone(&request.metadata),
        });
        return Ok(Acquired::Granted { token });
    }

    let first_expiry = entry
        .leases
        .iter()
        .map(|l| l.expires)
        .chain(ahead.map(|c| c.expires))
        .min();
    if let Some(claim_ttl) = request.claim {
        let expires = later(now, claim_ttl);
        match entry.claims.iter_mut().find(|c| c.id == request.lease_id) {
            Some(claim) => claim.expires = expires,
            None => {
                counters.last_claim += 1;
                entry.claims.push(Claim {
                    id: request.lease_id,
                    weight: request.weight(),
                    order: counters.last_claim,
                    expires,
                });
            }
        }
    }
    Ok(Acquired::Busy {
        retry_after: first_expiry.map(|at| at.saturating_duration_since(now)),
    })
}

const KINDS: [LockKind; 3] = [LockKind::Mutex, LockKind::RwMutex, LockKind::Semaphore];

impl Backend for Memory {
    fn name(&self) -> &'static str {
        "memory"
    }

    fn reliable_notifications(&self) -> bool {
        true
    }

    async fn acquire(&self, request: &AcquireRequest) -> Result<Acquired> {
        self.with_entry(&request.key, request.limit, |counters, entry, now| {
            (try_acquire(counters, entry, request, now), false)
        })
    }

    async fn release(&self, key: &LockKey, lease: LeaseId) -> Result<()> {
        self.with_entry(key, 1, |_, entry, _| {
            let leases = entry.leases.len();
            let claims = entry.claims.len();
            entry.leases.retain(|l| l.id != lease);
            entry.claims.retain(|c| c.id != lease);
            let released = entry.leases.len() != leases;
            let changed = released || entry.claims.len() != claims;
            let result = if released {
                Ok(())
            } else {
                Err(Error::NotHeld {
                    name: key.name().to_owned(),
                })
            };
            (result, changed)
        })
    }

    async fn extend(&self, key: &LockKey, lease: LeaseId, ttl: Duration) -> Result<()> {
        self.with_entry(key, 1, |_, entry, now| {
            let result = match entry.leases.iter_mut().find(|l| l.id == lease) {
                Some(l) => {
                    l.expires = later(now, ttl);
                    Ok(())
                }
                None => Err(Error::Expired {
                    name: key.name().to_owned(),
                }),
            };
            (result, false)
        })
    }

    async fn inspect(&self, name: &str) -> Result<Vec<LockInfo>> {
        Ok(holders(
            &self.state(),
            name,
            Instant::now(),
            SystemTime::now(),
        ))
    }

    /// Scans the map, which holds only locks with leases or claims (an entry goes when its last
    /// lease and claim do, or at its next use after they expire): the work is bounded by the
    /// number of such locks, not by the names ever used.
    async fn list(&self, request: &ListRequest) -> Result<LockPage> {
        let now = Instant::now();
        let wall = SystemTime::now();
        let state = self.state();
        let after = request.after.as_ref().map(ListCursor::as_str);
        let mut names: Vec<&str> = state
            .locks
            .iter()
            .filter(|(key, entry)| {
                key.name().starts_with(&request.prefix)
                    && after.is_none_or(|after| key.name() > after)
                    && entry.leases.iter().any(|l| l.expires > now)
            })
            .map(|(key, _)| key.name())
            .collect();
        names.sort_unstable();
        names.dedup();
        let more = names.len() > request.limit;
        names.truncate(request.limit);
        let next = more.then(|| ListCursor::new(*names.last().expect("limit >= 1")));
        let locks = names
            .into_iter()
            .flat_map(|name| holders(&state, name, now, wall))
            .collect();
        Ok(LockPage::new(locks, next))
    }

    async fn force_release(&self, name: &str) -> Result<usize> {
        let now = Instant::now();
        let mut removed = 0;
        {
            let mut state = self.state();
            for kind in KINDS {
                if let Some(entry) = state.locks.remove(&LockKey::new(name, kind)?) {
                    removed += entry.leases.iter().filter(|l| l.expires > now).count();
                }
            }
        }
        self.inner.notifier.notify_name(name);
        Ok(removed)
    }

    async fn subscribe(&self, request: &AcquireRequest) -> Result<Subscription> {
        Ok(self.inner.notifier.subscribe(&request.key))
    }
}

/// The valid leases of every kind of lock named `name`, in token order.
fn holders(state: &State, name: &str, now: Instant, wall: SystemTime) -> Vec<LockInfo> {
    let mut holders = Vec::new();
    for kind in KINDS {
        let Ok(key) = LockKey::new(name, kind) else {
            continue;
        };
        let Some(entry) = state.locks.get(&key) else {
            continue;
        };
        for lease in entry.leases.iter().filter(|l| l.expires > now) {
            holders.push(LockInfo::new(
                &key,
                &*lease.owner,
                lease.token,
                lease.mode,
                lease.permits,
                wall + (lease.expires - now),
                (*lease.metadata).clone(),
            ));
        }
    }
    holders.sort_by_key(|info| info.token);
    holders
}

impl std::fmt::Debug for Memory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let locks = self.state().locks.len();
        f.debug_struct("Memory").field("locks", &locks).finish()
    }
}
