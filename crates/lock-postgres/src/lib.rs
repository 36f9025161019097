#![doc = include_str!("../README.md")]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod config;
mod sql;

pub use config::{PostgresConfig, PostgresDurability, PostgresMode};

use config::redact;
use lock_core::{
    AcquireRequest, Acquired, Backend, Error, LeaseId, ListRequest, LockInfo, LockKey, LockPage,
    Mode, Notifier, Result, Subscription,
};
use sql::{Outcome, Sql, Take, unavailable};
use sqlx::postgres::{PgConnectOptions, PgListener, PgPool, PgPoolOptions};
use sqlx::{Connection, PgConnection};
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex as StdMutex, PoisonError};
use std::time::Duration;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, oneshot};
use tokio::task::JoinHandle;

/// Idle advisory sessions kept for reuse (per [`Postgres`]).
const IDLE_SESSIONS: usize = 4;
/// How often each [`Postgres`] runs the row clean-up, and the most rows one run deletes.
const CLEAN_UP_EVERY: Duration = Duration::from_secs(60);
const CLEAN_UP_BATCH: i64 = 1000;

/// The bound of one clean-up batch on the client: a connection, then the statements (each
/// bounded by the server's statement timeout too).
fn clean_up_bound(inner: &Inner) -> Duration {
    inner.config.connect_timeout + Duration::from_secs(20)
}
/// How long a contender waits for the session of an expired or force-released lease to end.
const TERMINATE_WAIT_MS: i64 = 5000;
/// The bound of ending an orphaned session (PG-R4-4): a pooled connection, then
/// `pg_terminate_backend`'s wait. Past it, the orphan's permit is given back unconfirmed.
const ORPHAN_BOUND: Duration = Duration::from_secs(10);

/// The PostgreSQL backend, in advisory or lease mode (see the crate docs). Cheap to clone:
/// clones share the pool, the sessions of held advisory locks and the NOTIFY listener.
#[derive(Clone)]
pub struct Postgres {
    inner: Arc<Inner>,
    /// Clones share the sessions: only the last one closed ends them.
    open: lock_core::backend::LastClose,
}

struct Inner {
    config: PostgresConfig,
    options: PgConnectOptions,
    pool: PgPool,
    sql: Sql,
    notifier: Notifier,
    listener: StdMutex<Option<JoinHandle<()>>>,
    sweeper: StdMutex<Option<JoinHandle<()>>>,
    sessions: Sessions,
}

/// A connection of its own, outside the pool, that holds one lease's advisory lock.
struct Session {
    conn: PgConnection,
    pid: i32,
    reused: bool,
    /// One of the [`PostgresConfig::max_sessions`] permits, returned when the session closes
    /// (or, for an orphan, once its backend is gone).
    permit: Permit,
}

/// A session's permit, shared with the [`Flight`] of the acquisition running on the session:
/// if that acquisition is dropped mid-flight, the flight takes the permit over for the orphan,
/// which keeps it until its server backend is gone (review finding PG-R4-4).
#[derive(Clone)]
struct Permit(Arc<StdMutex<Option<OwnedSemaphorePermit>>>);

impl Permit {
    fn new(permit: OwnedSemaphorePermit) -> Permit {
        Permit(Arc::new(StdMutex::new(Some(permit))))
    }

    fn take(&self) -> Option<OwnedSemaphorePermit> {
        locked(&self.0).take()
    }
}

/// The session of an acquisition dropped mid-flight: its backend may still wait for, or hold,
/// the lock on the server until it is terminated, so it keeps its session permit until then.
struct Orphan {
    lease: LeaseId,
    /// `None` when no task ends the orphan (no runtime when it was dropped).
    permit: Option<OwnedSemaphorePermit>,
}

struct Sessions {
    /// The cap on open sessions (review finding PG-6): a permit per session, whether it holds a
    /// lease, waits, or sits in the idle cache.
    permits: Arc<Semaphore>,
    /// Acquisitions waiting in the client for a session, oldest first: a session that comes
    /// free is handed to one of them rather than cached (locked after `idle`, never before).
    waiters: StdMutex<VecDeque<oneshot::Sender<Session>>>,
    /// The sessions holding this process's advisory leases (a slot emptied by the release).
    held: StdMutex<HashMap<LeaseId, Arc<tokio::sync::Mutex<Option<Session>>>>>,
    /// Sessions that hold nothing, kept for the next acquisition.
    idle: StdMutex<Vec<Session>>,
    /// Sessions of acquisitions dropped mid-flight, by backend pid: they may still wait for, or
    /// hold, the lock on the server until they are terminated, and keep their permits till then.
    orphans: StdMutex<HashMap<i32, Orphan>>,
}

fn locked<T>(m: &StdMutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The second key of a lock's advisory lock: FNV-1a (32 bit) of its kind and name. Stable
/// across processes, versions and platforms. Two locks whose keys collide only contend with
/// each other needlessly (the side table still decides who holds what).
pub fn advisory_key(key: &LockKey) -> i32 {
    let mut hash: u32 = 0x811c_9dc5;
    let bytes = key
        .kind()
        .as_str()
        .bytes()
        .chain(std::iter::once(0))
        .chain(key.name().bytes());
    for byte in bytes {
        hash ^= u32::from(byte);
        hash = hash.wrapping_mul(0x0100_0193);
    }
    i32::from_ne_bytes(hash.to_ne_bytes())
}

/// The statement that reads the names of one page of `list` (`$1` the least stored name, `$2`
/// the bound above the prefix, `$3` the most names), for tests that check its plan with
/// `EXPLAIN`. Not part of the API: it may change in any release.
#[doc(hidden)]
pub fn list_names_statement(table_prefix: &str) -> String {
    Sql::new(table_prefix, None, false).list_names_text()
}

fn parse_url(url: &str) -> Result<PgConnectOptions> {
    let trimmed = url.trim();
    if !(trimmed.starts_with("postgres://") || trimmed.starts_with("postgresql://")) {
        return Err(Error::config(format!(
            "invalid PostgreSQL url {}: expected postgres://user:password@host:port/database",
            redact(url)
        )));
    }
    let options: PgConnectOptions = trimmed.parse().map_err(|e: sqlx::Error| {
        Error::config(format!(
            "invalid PostgreSQL url {}: {}",
            redact(url),
            redact(&e.to_string())
        ))
    })?;
    Ok(options.application_name("lock-postgres"))
}

impl Postgres {
    /// Connects, creates the tables if they are missing (idempotent, safe when many processes
    /// start at once) and starts the NOTIFY listener.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] for an invalid configuration or URL (passwords are never shown), and
    /// in advisory mode when the URL goes through a transaction-level pooler such as PgBouncer
    /// in transaction pooling mode (review finding PG-7); [`Error::ProviderUnavailable`] when
    /// the server cannot be reached or the tables cannot be created.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: dropping the future closes the connections made so far; nothing is held.
    pub async fn connect(config: PostgresConfig) -> Result<Postgres> {
        config.validate()?;
        let options = parse_url(&config.url)?;
        let listen_options = match &config.listen_url {
            Some(url) => parse_url(url)?,
            None => options.clone(),
        };
        if config.mode == PostgresMode::Advisory {
            probe_pooling(&options, config.connect_timeout).await?;
        }
        // No ping before every use (review design D6): a broken connection fails its
        // statement, and the caller's retry takes another.
        let pool = PgPoolOptions::new()
            .max_connections(config.max_connections)
            .test_before_acquire(false)
            .acquire_timeout(config.connect_timeout)
            .connect_with(options.clone())
            .await
            .map_err(unavailable)?;
        let advisory = (config.mode == PostgresMode::Advisory).then_some(config.namespace);
        let relaxed = config.durability == PostgresDurability::Relaxed;
        let sql = Sql::new(&config.table_prefix, advisory, relaxed);
        {
            let mut conn = pool.acquire().await.map_err(unavailable)?;
            sql.migrate(&mut conn).await.map_err(unavailable)?;
        }
        let notifier = Notifier::new();
        let listen_pool = PgPoolOptions::new()
            .max_connections(1)
            .max_lifetime(None)
            .idle_timeout(None)
            .acquire_timeout(config.connect_timeout)
            .connect_lazy_with(listen_options);
        let listener = tokio::spawn(listen(listen_pool, sql.channel.clone(), notifier.clone()));
        let config_max_sessions = config.max_sessions;
        let inner = Arc::new(Inner {
            config,
            options,
            pool,
            sql,
            notifier,
            listener: StdMutex::new(Some(listener)),
            sweeper: StdMutex::new(None),
            sessions: Sessions {
                permits: Arc::new(Semaphore::new(
                    usize::try_from(config_max_sessions).unwrap_or(usize::MAX),
                )),
                waiters: StdMutex::default(),
                held: StdMutex::default(),
                idle: StdMutex::default(),
                orphans: StdMutex::default(),
            },
        });
        let sweeper = tokio::spawn(sweep(Arc::downgrade(&inner)));
        *locked(&inner.sweeper) = Some(sweeper);
        Ok(Postgres {
            inner,
            open: lock_core::backend::LastClose::new(),
        })
    }

    /// Deletes up to 1000 rows of locks that have no lease and no claim and whose last token the
    /// server clock has passed; the number deleted (0 when there is nothing left to do). Each
    /// [`Postgres`] runs this every minute in the background; call it yourself to clean up
    /// sooner. A re-created lock's first token still exceeds every token handed out before.
    ///
    /// # Errors
    ///
    /// [`Error::ProviderUnavailable`] when the server cannot be reached.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: a dropped call's transaction is rolled back.
    pub async fn clean_up(&self) -> Result<usize> {
        // Bounded on the client too: a server that never answers must not hang the call (the
        // statement timeout is the server's, which never sees the query then).
        tokio::time::timeout(clean_up_bound(&self.inner), async {
            let mut conn = self.pooled().await?;
            self.inner.sql.clean_up(&mut conn, CLEAN_UP_BATCH).await
        })
        .await
        .map_err(|_| {
            Error::unavailable(
                "postgres",
                "the row clean-up got no answer within its bound",
            )
        })?
    }

    /// The mode this backend runs in.
    pub fn mode(&self) -> PostgresMode {
        self.inner.config.mode
    }

    fn advisory(&self) -> bool {
        self.inner.config.mode == PostgresMode::Advisory
    }

    async fn pooled(&self) -> Result<sqlx::pool::PoolConnection<sqlx::Postgres>> {
        self.inner.pool.acquire().await.map_err(unavailable)
    }

    async fn acquire_advisory(&self, request: &AcquireRequest) -> Result<Acquired> {
        let inner = &self.inner;
        let akey = advisory_key(&request.key);
        // A retry of a request this process was granted (its answer lost): the advisory lock
        // is ours, on the session kept for the lease. Adopt the lease on that session, from
        // now, instead of waiting behind our own lock.
        let mine = locked(&inner.sessions.held).remove(&request.lease_id);
        if let Some(slot) = mine {
            let Some(mut session) = slot.lock().await.take() else {
                return Ok(Acquired::Busy { retry_after: None });
            };
            let outcome = inner
                .sql
                .acquire(
                    &mut session.conn,
                    request,
                    Take::Held,
                    akey,
                    Some(session.pid),
                )
                .await;
            return match outcome {
                Ok(Outcome::Done(granted @ Acquired::Granted { .. })) => {
                    inner.hold(request.lease_id, session);
                    Ok(granted)
                }
                // Not ours after all (the lease had expired), or the session failed: end the
                // session, and its advisory lock with it.
                Ok(Outcome::Done(busy)) => Ok(busy),
                Ok(Outcome::Blocked(retry_after)) => Ok(Acquired::Busy { retry_after }),
                Ok(Outcome::End(_)) => Ok(Acquired::Busy {
                    retry_after: Some(Duration::from_millis(20)),
                }),
                Err(e) => Err(e),
            };
        }
        let mut ends = 0;
        loop {
            // Beyond the session cap, a waiting acquisition waits in the client (PG-6) for as
            // long as a server-side wait would. A plain try makes one attempt: it does not wait
            // for a session, and cannot say "busy" about a lock it did not look at, so it fails
            // at once, naming the cap (review finding PG-R4-1).
            let wait = request.claim.map_or(Duration::ZERO, |claim| claim / 3);
            let Some(mut session) = inner.session(wait).await? else {
                if request.claim.is_some() {
                    return Ok(Acquired::Busy { retry_after: None });
                }
                return Err(Error::unavailable(
                    "postgres",
                    format!(
                        "all {} advisory sessions (LOCK_POSTGRES_MAX_SESSIONS) are in use by this \
                         backend's held leases, waits and dropped acquisitions still ending; a try \
                         does not wait for one (lock() does, within its lock_timeout): raise \
                         LOCK_POSTGRES_MAX_SESSIONS if this process holds that many locks at once",
                        inner.config.max_sessions
                    ),
                ));
            };
            let mut flight = Flight {
                inner: Arc::clone(inner),
                lease: request.lease_id,
                pid: session.pid,
                permit: session.permit.clone(),
                armed: true,
            };
            let mut outcome = inner
                .sql
                .acquire(
                    &mut session.conn,
                    request,
                    Take::Try,
                    akey,
                    Some(session.pid),
                )
                .await;
            if outcome.is_err() && session.reused && !session.alive().await {
                // An idle session that died (a server restart): start afresh.
                flight.armed = false;
                let permit = session.permit.clone();
                drop(session);
                locked(&inner.sessions.idle).clear();
                session = inner.new_session(permit).await?;
                flight.pid = session.pid;
                flight.permit = session.permit.clone();
                flight.armed = true;
                outcome = inner
                    .sql
                    .acquire(
                        &mut session.conn,
                        request,
                        Take::Try,
                        akey,
                        Some(session.pid),
                    )
                    .await;
            }
            let outcome = match outcome {
                Ok(outcome) => outcome,
                Err(e @ Error::InvalidArgument { .. }) => {
                    // The statement released what it took.
                    inner.idle(session);
                    flight.armed = false;
                    return Err(e);
                }
                Err(e) => {
                    flight.armed = false;
                    return Err(e);
                }
            };
            match outcome {
                Outcome::Done(granted @ Acquired::Granted { .. }) => {
                    inner.hold(request.lease_id, session);
                    flight.armed = false;
                    return Ok(granted);
                }
                Outcome::Done(busy) => {
                    inner.idle(session);
                    flight.armed = false;
                    return Ok(busy);
                }
                Outcome::End(pids) => {
                    inner.idle(session);
                    flight.armed = false;
                    // Hung holders: their leases expired but their sessions still hold the
                    // advisory lock. Ended outside the lock row's lock; a session that does
                    // not end keeps its lease row (review finding PG-10).
                    let mut conn = self.pooled().await?;
                    let ended = sql::terminate_now(&mut conn, &pids, TERMINATE_WAIT_MS)
                        .await
                        .map_err(unavailable)?;
                    ends += 1;
                    if ended && ends < 3 {
                        continue;
                    }
                    return Ok(Acquired::Busy {
                        retry_after: Some(Duration::from_millis(100)),
                    });
                }
                Outcome::Blocked(retry_after) => {
                    let Some(claim) = request.claim else {
                        inner.idle(session);
                        flight.armed = false;
                        return Ok(Acquired::Busy { retry_after });
                    };
                    // Wait in the server's lock queue (the claim is recorded), for up to a
                    // third of the claim's TTL, then take the lease with the lock held.
                    let exclusive = request.mode == Mode::Exclusive;
                    let text = if exclusive {
                        &inner.sql.wait_exclusive
                    } else {
                        &inner.sql.wait_shared
                    };
                    let got = wait_session(
                        &mut session.conn,
                        text,
                        session.pid,
                        inner.config.namespace,
                        akey,
                        claim,
                    )
                    .await;
                    match got {
                        Ok(true) => {}
                        Ok(false) => {
                            inner.park(session).await;
                            flight.armed = false;
                            return Ok(Acquired::Busy { retry_after });
                        }
                        Err(e) => {
                            flight.armed = false;
                            return Err(unavailable(e));
                        }
                    }
                    let outcome = inner
                        .sql
                        .acquire(
                            &mut session.conn,
                            request,
                            Take::Held,
                            akey,
                            Some(session.pid),
                        )
                        .await;
                    flight.armed = false;
                    return match outcome {
                        Ok(Outcome::Done(granted @ Acquired::Granted { .. })) => {
                            inner.hold(request.lease_id, session);
                            Ok(granted)
                        }
                        Ok(Outcome::Done(busy)) => {
                            inner.park(session).await;
                            Ok(busy)
                        }
                        Ok(Outcome::Blocked(retry_after)) => {
                            inner.park(session).await;
                            Ok(Acquired::Busy { retry_after })
                        }
                        Ok(Outcome::End(_)) => {
                            inner.park(session).await;
                            Ok(Acquired::Busy {
                                retry_after: Some(Duration::from_millis(20)),
                            })
                        }
                        Err(e @ Error::InvalidArgument { .. }) => {
                            inner.park(session).await;
                            Err(e)
                        }
                        Err(e) => Err(e),
                    };
                }
            }
        }
    }

    async fn release_advisory(&self, key: &LockKey, lease: LeaseId) -> Result<()> {
        let inner = &self.inner;
        inner.end_orphans(lease).await;
        let slot = locked(&inner.sessions.held).remove(&lease);
        let session = match slot {
            Some(slot) => slot.lock().await.take(),
            None => None,
        };
        let deleted = match session {
            // One statement on the lease's own session: deletes the lease and ends the
            // advisory lock; the session goes back to the idle cache.
            Some(mut session) => {
                let pid = Some(session.pid);
                match inner.sql.release(&mut session.conn, key, lease, pid).await {
                    Ok(deleted) => {
                        inner.idle(session);
                        deleted
                    }
                    Err(_) => {
                        // The session failed: closing it ends its advisory lock; delete the
                        // row on a pooled connection.
                        drop(session);
                        let mut conn = self.pooled().await?;
                        inner.sql.release(&mut conn, key, lease, None).await?
                    }
                }
            }
            None => {
                let mut conn = self.pooled().await?;
                inner.sql.release(&mut conn, key, lease, None).await?
            }
        };
        if !deleted.live_pids.is_empty() {
            let mut conn = self.pooled().await?;
            sql::terminate_now(&mut conn, &deleted.live_pids, TERMINATE_WAIT_MS)
                .await
                .map_err(unavailable)?;
        }
        if deleted.changed {
            inner.notifier.notify(key);
        }
        if deleted.valid {
            Ok(())
        } else {
            Err(Error::NotHeld {
                name: key.name().to_owned(),
            })
        }
    }

    async fn extend_advisory(&self, key: &LockKey, lease: LeaseId, ttl: Duration) -> Result<()> {
        let inner = &self.inner;
        let slot = locked(&inner.sessions.held).get(&lease).cloned();
        let Some(slot) = slot else {
            let mut conn = self.pooled().await?;
            return inner.sql.extend(&mut conn, key, lease, ttl).await;
        };
        let mut guard = slot.lock().await;
        let Some(session) = guard.as_mut() else {
            return Err(Error::Expired {
                name: key.name().to_owned(),
            });
        };
        // On the lease's own session: one statement, which proves the session (and so its
        // advisory lock) alive and keeps it from sitting idle.
        match inner
            .sql
            .extend_own(&mut session.conn, key, lease, ttl, session.pid)
            .await
        {
            Ok(true) => Ok(()),
            Ok(false) => Err(Error::Expired {
                name: key.name().to_owned(),
            }),
            Err(e) => {
                if session.alive().await {
                    return Err(unavailable(e));
                }
                // The session is gone, and its advisory lock with it.
                guard.take();
                drop(guard);
                locked(&inner.sessions.held).remove(&lease);
                Err(Error::Expired {
                    name: key.name().to_owned(),
                })
            }
        }
    }
}

impl Inner {
    async fn new_session(&self, permit: Permit) -> Result<Session> {
        // The library bounds its own statements, whatever a DBA's default (review finding
        // PG-3); its single statements run in READ COMMITTED, whatever the default isolation
        // (PG-4: the grant rule reads fresh rows in each statement); PostgreSQL 14+: notice a
        // vanished client while waiting for a lock; and never end this session for being idle
        // (a DBA's `idle_session_timeout`): it may sit idle while it holds its advisory lock
        // (review finding PG-2).
        //
        // These four are session-level, unlike relaxed durability's `synchronous_commit`,
        // which each statement sets for itself (review finding PG-R4-3). Each advisory
        // statement is one extended-protocol statement in an implicit transaction (one round
        // trip): the server arms the statement timeout and the client check before the
        // statement runs and fixes the isolation level at its start, so a transaction-local
        // value set inside it comes too late; and the idle timeout is about the time between
        // statements. Transaction-local values would cost a preamble round trip per operation.
        // Only a pooler that shares server connections could carry them to other clients, and
        // advisory mode refuses those (the connect probe, the guard in every statement).
        let open = async {
            let mut conn = PgConnection::connect_with(&self.options)
                .await
                .map_err(unavailable)?;
            let (pid,): (i32,) = sqlx::query_as(
                "SELECT pg_backend_pid(), set_config('statement_timeout', $1, false), \
                 set_config('default_transaction_isolation', 'read committed', false), \
                 set_config('client_connection_check_interval', '1000', false), \
                 set_config('idle_session_timeout', '0', false)",
            )
            .bind(sql::STATEMENT_TIMEOUT)
            .fetch_one(&mut conn)
            .await
            .map_err(unavailable)?;
            Ok::<_, Error>((conn, pid))
        };
        // Bounded as a whole: a pooler with no server connection to spare accepts the
        // connection and then holds its first statement.
        let (conn, pid) = match tokio::time::timeout(self.config.connect_timeout, open).await {
            Ok(opened) => opened?,
            Err(_) => {
                return Err(Error::unavailable(
                    "postgres",
                    std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        format!("no session opened within {:?}", self.config.connect_timeout),
                    ),
                ));
            }
        };
        Ok(Session {
            conn,
            pid,
            reused: false,
            permit,
        })
    }

    /// A session for an acquisition: an idle one, or a new one within the cap. At the cap,
    /// waits up to `wait` for a session to come free (a release hands its session to us
    /// rather than caching it); `None` when none did (at once for a zero `wait`).
    async fn session(&self, wait: Duration) -> Result<Option<Session>> {
        let sessions = &self.sessions;
        let handed = {
            let mut idle = locked(&sessions.idle);
            if let Some(mut session) = idle.pop() {
                session.reused = true;
                return Ok(Some(session));
            }
            match Arc::clone(&sessions.permits).try_acquire_owned() {
                Ok(permit) => Ok(permit),
                Err(_) if wait.is_zero() => return Ok(None),
                Err(_) => {
                    // Queued under the idle cache's lock: a session released from now on is
                    // handed to us rather than cached.
                    let (tx, rx) = oneshot::channel();
                    let mut waiters = locked(&sessions.waiters);
                    // Waits that gave up leave their senders behind until a release pops
                    // them: dropped here, so a long stall at the cap does not pile them up.
                    waiters.retain(|waiter| !waiter.is_closed());
                    waiters.push_back(tx);
                    Err(rx)
                }
            }
        };
        let handed = match handed {
            Ok(permit) => return self.new_session(Permit::new(permit)).await.map(Some),
            Err(handed) => handed,
        };
        // A released session is handed over; a session closed elsewhere frees a permit.
        let got = tokio::time::timeout(wait, async {
            tokio::select! {
                session = handed => session.ok().map(|mut s| { s.reused = true; Err(s) }),
                permit = Arc::clone(&sessions.permits).acquire_owned() => permit.ok().map(Ok),
            }
        })
        .await;
        match got {
            Ok(Some(Err(session))) => Ok(Some(session)),
            Ok(Some(Ok(permit))) => self.new_session(Permit::new(permit)).await.map(Some),
            _ => Ok(None),
        }
    }

    /// Records the session holding `lease`.
    fn hold(&self, lease: LeaseId, session: Session) {
        let slot = Arc::new(tokio::sync::Mutex::new(Some(session)));
        locked(&self.sessions.held).insert(lease, slot);
    }

    /// Keeps a session that holds nothing for reuse (up to the cache size).
    fn idle(&self, mut session: Session) {
        let mut idle = locked(&self.sessions.idle);
        // An acquisition waiting for a session at the cap gets this one (PG-6); one that gave
        // up meanwhile hands it back.
        {
            let mut waiters = locked(&self.sessions.waiters);
            while let Some(waiter) = waiters.pop_front() {
                match waiter.send(session) {
                    Ok(()) => return,
                    Err(back) => session = back,
                }
            }
        }
        if idle.len() < self.idle_sessions() {
            session.reused = false;
            idle.push(session);
        }
    }

    /// The idle-session cache size: at least the pool size, so a steady load of that many
    /// concurrent acquisitions opens no new sessions (review design D6).
    fn idle_sessions(&self) -> usize {
        IDLE_SESSIONS.max(usize::try_from(self.config.max_connections).unwrap_or(usize::MAX))
    }

    /// Releases every advisory lock of the session (also one granted as a `lock_timeout`
    /// fired) and keeps it for reuse; a session that fails is closed.
    async fn park(&self, mut session: Session) {
        // Also clears the `lock_timeout` of a wait that timed out, so the next acquisition on
        // this session does not inherit it (review finding PG-9).
        // Behind the session guard: on another server connection it releases nothing (PG-7).
        let unlocked = sqlx::query(sqlx::AssertSqlSafe(Arc::clone(&self.sql.park)))
            .bind(session.pid)
            .execute(&mut session.conn)
            .await
            .is_ok();
        if unlocked {
            self.idle(session);
        }
    }

    /// Before a release of `lease`: ends the sessions of its acquisitions dropped mid-flight
    /// (which might otherwise still take the lock after the release), waiting until they are
    /// gone. Bounded; an orphan whose end is confirmed gives its permit back.
    async fn end_orphans(&self, lease: LeaseId) {
        let pids: Vec<i32> = locked(&self.sessions.orphans)
            .iter()
            .filter(|(_, orphan)| orphan.lease == lease)
            .map(|(pid, _)| *pid)
            .collect();
        for pid in pids {
            let gone = self.end_backend(pid).await;
            let mut orphans = locked(&self.sessions.orphans);
            // Without a task of its own (see `Flight::drop`), this is the orphan's only end.
            if gone || orphans.get(&pid).is_some_and(|o| o.permit.is_none()) {
                orphans.remove(&pid);
            }
        }
    }

    /// The task of an acquisition dropped mid-flight: ends its session's backend and then gives
    /// its permit back (review finding PG-R4-4). When the end cannot be confirmed within
    /// [`ORPHAN_BOUND`] (the backend is stuck, or the server does not answer), the permit is
    /// given back anyway, with a warning: the cap is exceeded by that backend while it lasts,
    /// rather than a permit being lost for good.
    async fn bury(&self, pid: i32) {
        let gone = self.end_backend(pid).await;
        let orphan = locked(&self.sessions.orphans).remove(&pid);
        if !gone && orphan.is_some_and(|o| o.permit.is_some()) {
            tracing::warn!(
                pid,
                "lock-postgres: the server session of a dropped advisory acquisition could not be \
                 confirmed ended within {ORPHAN_BOUND:?}; its session permit is given back \
                 (LOCK_POSTGRES_MAX_SESSIONS is exceeded while that session lasts)"
            );
        }
    }

    /// Terminates backend `pid` on a pooled connection and waits, within [`ORPHAN_BOUND`],
    /// until it is gone; true when it is (also when it had ended already).
    async fn end_backend(&self, pid: i32) -> bool {
        let ended = tokio::time::timeout(ORPHAN_BOUND, async {
            let mut conn = self.pool.acquire().await?;
            sql::terminate_now(&mut conn, &[pid], TERMINATE_WAIT_MS).await
        })
        .await;
        matches!(ended, Ok(Ok(true)))
    }
}

impl Session {
    /// Whether the session still answers (after a failed statement).
    async fn alive(&mut self) -> bool {
        matches!(
            tokio::time::timeout(Duration::from_secs(2), self.conn.ping()).await,
            Ok(Ok(()))
        )
    }
}

/// Marks an advisory acquisition in flight: if its future is dropped before it is disarmed, its
/// session (which may still wait for, or hold, the lock on the server) is terminated, and its
/// permit stays taken until the session's backend is gone (review finding PG-R4-4), so the
/// cap holds on the server.
struct Flight {
    inner: Arc<Inner>,
    lease: LeaseId,
    pid: i32,
    /// The session's permit (shared with it).
    permit: Permit,
    armed: bool,
}

impl Drop for Flight {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let runtime = tokio::runtime::Handle::try_current().ok();
        // The session itself is dropped right after this (it closes the connection); its
        // permit goes with the orphan. With no runtime to end the orphan, nothing could give
        // the permit back later: it is returned now.
        let permit = self.permit.take().filter(|_| runtime.is_some());
        let orphan = Orphan {
            lease: self.lease,
            permit,
        };
        locked(&self.inner.sessions.orphans).insert(self.pid, orphan);
        if let Some(runtime) = runtime {
            let inner = Arc::clone(&self.inner);
            let pid = self.pid;
            runtime.spawn(async move { inner.bury(pid).await });
        }
    }
}

/// Waits on the server for the lock's advisory lock on `conn`, for up to a third of the
/// claim's TTL. One statement: the `lock_timeout` is local to it, so nothing is left on the
/// session after a timed-out wait (review finding PG-9). False when not taken.
///
/// Behind the session guard (review finding PG-7): on another server process than `pid` it
/// waits for and takes nothing.
async fn wait_session(
    conn: &mut PgConnection,
    text: &Arc<str>,
    pid: i32,
    namespace: i32,
    akey: i32,
    claim: Duration,
) -> sqlx::Result<bool> {
    let wait = (claim / 3).as_millis().max(1);
    let result = sqlx::query(sqlx::AssertSqlSafe(Arc::clone(text)))
        .bind(format!("{wait}ms"))
        .bind(namespace)
        .bind(akey)
        .bind(pid)
        .execute(&mut *conn)
        .await;
    match result {
        Ok(_) => Ok(true),
        Err(e) if is_lock_timeout(&e) => Ok(false),
        Err(e) => Err(e),
    }
}

/// Advisory mode's check at connect for a transaction-level pooler such as PgBouncer in
/// transaction pooling mode (review findings PG-7, PG-R4-2, PG-R4-3), where a client's
/// statements run on whichever server connection is free.
///
/// Two client sessions, A and B, run single statements one after the other (no transaction is
/// held open): A twice, B twice, A again. Each statement returns its server process and a
/// session-level setting that A's first statement makes (`lock_postgres.probe`, a value unique
/// to this probe). On the server itself, or through session pooling, each client session keeps
/// its own server process and A's setting throughout, and B never sees it. Through
/// transaction pooling, whatever order the pooler hands out idle server connections in (most
/// recently freed first, PgBouncer's default; oldest first, `server_round_robin = 1`; at
/// random), the five statements cannot all keep that pattern unless the pool keeps exactly
/// one idle server connection per client for each of them: B gets A's server connection, or a
/// session moves between two of its statements, or A's setting is gone. A pooler that pins
/// server connections to clients between transactions can still pass (it is then a session
/// pooler for this purpose), and the guard on every advisory statement still refuses to take or
/// release anything on another server process than its session's.
///
/// When B cannot run at all within `within`, the probe says nothing about the pooling mode: a
/// session pool with no server connection to spare (A holds one for as long as it is
/// connected) and a transaction pool busy with other clients look the same. `connect` then
/// goes on (PG-R4-2): the per-statement guard, and the mapping of prepared-statement clashes to
/// the same configuration error, still catch transaction pooling later.
///
/// Under transaction pooling, A's setting may stay on a server connection of the pool: a
/// custom setting that nothing reads.
async fn probe_pooling(options: &PgConnectOptions, within: Duration) -> Result<()> {
    use sqlx::Row;
    /// The server process and the probe's setting, from one simple query (no prepared
    /// statement, so it runs through any pooler).
    async fn look(conn: &mut PgConnection, text: &str) -> sqlx::Result<(i32, String)> {
        let rows = sqlx::raw_sql(sqlx::AssertSqlSafe(text.to_owned()))
            .fetch_all(&mut *conn)
            .await?;
        let row = rows.into_iter().next().ok_or(sqlx::Error::RowNotFound)?;
        Ok((row.try_get(0)?, row.try_get(1)?))
    }
    let pooled = |why: String| {
        Err(Error::config(format!(
            "PgBouncer transaction pooling (or another transaction-level pooler) detected: \
             {why}; advisory mode needs a session of its own per lease. Use \
             LOCK_POSTGRES_MODE=lease through the pooler, or connect advisory mode straight to \
             the server or through session pooling"
        )))
    };
    let timed_out = || {
        Error::unavailable(
            "postgres",
            std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!(
                    "the pooling probe got no answer within {within:?} (a server, or a pooler \
                     with no server connection to spare, that does not answer)"
                ),
            ),
        )
    };
    // Unique to this probe: digits only, so it needs no quoting.
    let tag = format!(
        "{}{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos()
    );
    let set = format!("SELECT pg_backend_pid(), set_config('lock_postgres.probe', '{tag}', false)");
    let get = "SELECT pg_backend_pid(), coalesce(current_setting('lock_postgres.probe', true), '')";
    let probe = async {
        let mut a = PgConnection::connect_with(options).await?;
        let mut b = PgConnection::connect_with(options).await?;
        let mut seen = vec![('A', look(&mut a, &set).await?)];
        seen.push(('A', look(&mut a, get).await?));
        // B may find no server connection free (a busy session pool): inconclusive.
        let Ok(first) = tokio::time::timeout(within, look(&mut b, get)).await else {
            return Ok(None);
        };
        seen.push(('B', first?));
        seen.push(('B', look(&mut b, get).await?));
        seen.push(('A', look(&mut a, get).await?));
        let _ = a.close().await;
        let _ = b.close().await;
        Ok::<_, sqlx::Error>(Some(seen))
    };
    let seen = tokio::time::timeout(within * 3, probe)
        .await
        .map_err(|_| timed_out())?
        .map_err(unavailable)?;
    let Some(seen) = seen else {
        return Ok(());
    };
    let (a, b) = (seen[0].1.0, seen[2].1.0);
    for (client, (pid, setting)) in &seen {
        let (own, other) = if *client == 'A' { (a, b) } else { (b, a) };
        if *pid == other {
            return pooled(format!(
                "two client sessions ran on one server process ({pid})"
            ));
        }
        if *pid != own {
            return pooled(format!(
                "a client session moved from server process {own} to {pid} between two \
                 statements"
            ));
        }
        if (*client == 'A') != (*setting == tag) {
            return pooled(format!(
                "a session-level setting was not where it was made (server process {pid})"
            ));
        }
    }
    Ok(())
}

/// SQLSTATE 55P03 `lock_not_available`: `lock_timeout` fired.
fn is_lock_timeout(e: &sqlx::Error) -> bool {
    e.as_database_error()
        .and_then(|db| db.code())
        .is_some_and(|code| code == "55P03")
}

/// The background row clean-up: one bounded batch every [`CLEAN_UP_EVERY`], a few more while
/// batches come back full; ends with the backend.
async fn sweep(inner: std::sync::Weak<Inner>) {
    loop {
        tokio::time::sleep(CLEAN_UP_EVERY).await;
        for _ in 0..10 {
            let Some(inner) = inner.upgrade() else {
                return;
            };
            // Bounded, so a server that never answers cannot keep the backend alive.
            let deleted = tokio::time::timeout(clean_up_bound(&inner), async {
                let mut conn = inner.pool.acquire().await.map_err(unavailable)?;
                inner.sql.clean_up(&mut conn, CLEAN_UP_BATCH).await
            })
            .await;
            drop(inner);
            if !matches!(deleted, Ok(Ok(n)) if n == usize::try_from(CLEAN_UP_BATCH).unwrap_or(0)) {
                break;
            }
        }
    }
}

/// Feeds NOTIFY messages to the notifier; after every (re)connection it signals every lock,
/// since messages may have been missed meanwhile.
async fn listen(pool: PgPool, channel: String, notifier: Notifier) {
    loop {
        if let Ok(mut listener) = PgListener::connect_with(&pool).await
            && listener.listen(&channel).await.is_ok()
        {
            notifier.notify_all();
            loop {
                match listener.try_recv().await {
                    Ok(Some(message)) => {
                        if let Some(key) = sql::parse_payload(message.payload()) {
                            notifier.notify(&key);
                        }
                    }
                    Ok(None) => notifier.notify_all(),
                    Err(_) => {
                        notifier.notify_all();
                        break;
                    }
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Some(listener) = locked(&self.listener).take() {
            listener.abort();
        }
        if let Some(sweeper) = locked(&self.sweeper).take() {
            sweeper.abort();
        }
    }
}

impl Backend for Postgres {
    fn name(&self) -> &'static str {
        "postgres"
    }

    async fn acquire(&self, request: &AcquireRequest) -> Result<Acquired> {
        if self.advisory() {
            return self.acquire_advisory(request).await;
        }
        let mut conn = self.pooled().await?;
        match self
            .inner
            .sql
            .acquire(&mut conn, request, Take::None, 0, None)
            .await?
        {
            Outcome::Done(outcome) => Ok(outcome),
            Outcome::Blocked(retry_after) => Ok(Acquired::Busy { retry_after }),
            Outcome::End(_) => Ok(Acquired::Busy { retry_after: None }),
        }
    }

    async fn release(&self, key: &LockKey, lease: LeaseId) -> Result<()> {
        if self.advisory() {
            return self.release_advisory(key, lease).await;
        }
        let mut conn = self.pooled().await?;
        let deleted = self.inner.sql.release(&mut conn, key, lease, None).await?;
        if deleted.changed {
            self.inner.notifier.notify(key);
        }
        if deleted.valid {
            Ok(())
        } else {
            Err(Error::NotHeld {
                name: key.name().to_owned(),
            })
        }
    }

    async fn extend(&self, key: &LockKey, lease: LeaseId, ttl: Duration) -> Result<()> {
        if self.advisory() {
            return self.extend_advisory(key, lease, ttl).await;
        }
        let mut conn = self.pooled().await?;
        self.inner.sql.extend(&mut conn, key, lease, ttl).await
    }

    async fn inspect(&self, name: &str) -> Result<Vec<LockInfo>> {
        lock_core::validate_name(name)?;
        let mut conn = self.pooled().await?;
        self.inner.sql.inspect(&mut conn, name).await
    }

    /// Reads the names under the prefix in byte order from the leases table (both modes share
    /// it), through an index on `name COLLATE "C"`: one index probe per name, at most four
    /// names per name asked for (100 to 4000) per page, so names whose leases all expired
    /// without a release cost a bounded amount per page, and names that are only idle (no
    /// lease row) cost nothing. Then the valid leases of the first `limit` names that have
    /// any, in one more statement of the same transaction. The cursor is the last name read:
    /// pages never repeat a name.
    async fn list(&self, request: &ListRequest) -> Result<LockPage> {
        let mut conn = self.pooled().await?;
        self.inner.sql.list(&mut conn, request).await
    }

    async fn force_release(&self, name: &str) -> Result<usize> {
        lock_core::validate_name(name)?;
        let mut conn = self.pooled().await?;
        let (removed, _) = self.inner.sql.force_release(&mut conn, name).await?;
        self.inner.notifier.notify_name(name);
        Ok(removed)
    }

    async fn subscribe(&self, request: &AcquireRequest) -> Result<Subscription> {
        Ok(self.inner.notifier.subscribe(&request.key))
    }

    async fn close(&self) {
        // Another locker may still hold advisory locks on the shared sessions: closing them
        // would let a second client in under its live guards.
        if !self.open.close() {
            return;
        }
        let (slots, idle): (Vec<_>, Vec<Session>) = {
            let mut held = locked(&self.inner.sessions.held);
            let mut idle = locked(&self.inner.sessions.idle);
            (
                held.drain().map(|(_, s)| s).collect(),
                idle.drain(..).collect(),
            )
        };
        let mut sessions = idle;
        for slot in slots {
            if let Some(session) = slot.lock().await.take() {
                sessions.push(session);
            }
        }
        for session in sessions {
            let _ = session.conn.close().await;
        }
        if let Some(listener) = locked(&self.inner.listener).take() {
            listener.abort();
        }
        if let Some(sweeper) = locked(&self.inner.sweeper).take() {
            sweeper.abort();
        }
        self.inner.pool.close().await;
    }
}

impl std::fmt::Debug for Postgres {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Postgres")
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lock_core::LockKind;

    #[test]
    fn advisory_keys_are_stable_and_per_kind() {
        let mutex = LockKey::new("jobs", LockKind::Mutex).unwrap();
        let rw = LockKey::new("jobs", LockKind::RwMutex).unwrap();
        assert_eq!(advisory_key(&mutex), advisory_key(&mutex.clone()));
        assert_ne!(advisory_key(&mutex), advisory_key(&rw));
        // FNV-1a of "mutex\0jobs": pinned, so keys never change between versions.
        assert_eq!(advisory_key(&mutex), 877_081_764);
    }

    #[test]
    fn bad_url_is_a_config_error_without_password() {
        let err = parse_url("postgres://app:s3cret@db:notaport/app").unwrap_err();
        let text = format!("{err} {err:?}");
        assert!(matches!(err, Error::Config { .. }), "{text}");
        assert!(!text.contains("s3cret"), "{text}");
    }
}
