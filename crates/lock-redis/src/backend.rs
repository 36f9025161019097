//! [`Redis`]: the [`Backend`] on one instance or, with Redlock, on several.

use crate::config::RedisConfig;
use crate::keys::{KINDS, Layout, decode_metadata, encode_metadata};
use crate::node::{Node, NodeError};
use crate::round::Round;
use futures_util::future::join_all;
use lock_core::{
    AcquireRequest, Acquired, Backend, Error, FencingToken, LeaseId, ListRequest, LockInfo,
    LockKey, LockKind, LockPage, Mode, Notifier, Result, Subscription, Tracker,
};
use redis::Script;
use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock};
use std::time::{Duration, SystemTime};
use tokio::task::JoinHandle;
use tokio::time::Instant;

macro_rules! script {
    // A prelude runs first, before common.lua's definitions: the mutex fast path, so that it
    // pays for none of them.
    ($prelude:literal, $file:literal) => {
        LazyLock::new(|| {
            Script::new(concat!(
                include_str!(concat!("scripts/", $prelude)),
                include_str!("scripts/common.lua"),
                include_str!(concat!("scripts/", $file))
            ))
        })
    };
    ($file:literal) => {
        LazyLock::new(|| {
            Script::new(concat!(
                include_str!("scripts/common.lua"),
                include_str!(concat!("scripts/", $file))
            ))
        })
    };
}

static ACQUIRE: LazyLock<Script> = script!("acquire_fast.lua", "acquire.lua");
static RELEASE: LazyLock<Script> = script!("release_fast.lua", "release.lua");
static EXTEND: LazyLock<Script> = script!("extend.lua");
static INSPECT: LazyLock<Script> = script!("inspect.lua");
static FORCE_RELEASE: LazyLock<Script> = script!("force_release.lua");
static RAISE: LazyLock<Script> = script!("raise.lua");

/// How long a token counter outlives the moment the server's clock passed it (60 s). Tokens
/// are `max(counter + 1, server time in µs)`, so once the clock is ahead the counter adds
/// nothing and may go: an idle lock name leaves no key behind. Tokens stay monotonic unless
/// the server clock steps back by more than this.
const COUNTER_MARGIN_MS: u64 = 60 * 1000;

/// The Redis backend: one instance, or Redlock over several independent instances.
///
/// Cheap to clone: clones share connections and listeners. Every operation is one Lua script
/// per instance, run atomically with the instance's `TIME`; with Redlock it runs on every
/// instance in parallel and needs a quorum (see the crate docs).
#[derive(Clone)]
pub struct Redis {
    inner: Arc<Inner>,
    /// Clones share the listeners: only the last one closed stops them.
    open: lock_core::backend::LastClose,
}

struct Inner {
    nodes: Vec<Node>,
    layout: Layout,
    quorum: usize,
    notifier: Notifier,
    listeners: Vec<JoinHandle<()>>,
    config: RedisConfig,
    /// Stragglers and roll-backs still running; `close` waits for them.
    background: Tracker,
    /// Redlock: the highest token seen per slot of lock keys (hashed), for the next proposal.
    seen: [AtomicU64; SEEN_SLOTS],
}

/// How many slots [`Inner::seen`] hashes lock keys into: bounded memory whatever the number
/// of lock names; keys sharing a slot only raise each other's proposals.
const SEEN_SLOTS: usize = 64;

/// How far ahead of the client's clock a Redlock proposal is: an instance grants
/// `max(counter + 1, its clock, proposal)`, so the proposal wins on every instance (and they
/// grant the same token, which skips the raise) when it is ahead of their clocks by the time
/// the request arrives. Instances with clocks further ahead only cost the raise round.
const PROPOSAL_LEAD: Duration = Duration::from_millis(200);

impl Drop for Inner {
    fn drop(&mut self) {
        for listener in &self.listeners {
            listener.abort();
        }
    }
}

/// What one instance answered to an acquisition.
enum NodeAcquired {
    Granted(u64),
    Busy(Option<Duration>),
    Mismatch(u32),
}

impl Redis {
    /// Checks `config`, connects to its instances and starts one pub/sub listener per
    /// instance. With several URLs (Redlock), at least a quorum of instances must answer; the
    /// others are connected to when they come back.
    ///
    /// Installs rustls' `ring` crypto provider as the process default if none is installed
    /// (for `rediss://`).
    ///
    /// # Errors
    ///
    /// [`Error::Config`] for an invalid setting or URL (naming it, password redacted);
    /// [`Error::ProviderUnavailable`] when fewer instances than the quorum answer.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: nothing is held yet; dropping the future drops the connections.
    pub async fn connect(config: RedisConfig) -> Result<Redis> {
        config.validate()?;
        // Ignore "already installed": any installed provider serves.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let nodes = config
            .urls
            .iter()
            .map(|url| Node::new(url, config.timeout, config.tls_root_cert.as_deref()))
            .collect::<Result<Vec<_>>>()?;
        let quorum = config.effective_quorum();
        let mut pings = join_all(nodes.iter().map(Node::ping)).await;
        let answered: Vec<bool> = pings.iter().map(Result::is_ok).collect();
        let failed: Vec<NodeError> = pings.drain(..).filter_map(|r| r.err()).collect();
        if nodes.len() - failed.len() < quorum {
            return Err(unavailable(failed, nodes.len(), quorum));
        }
        let layout = Layout::new(&config.prefix);
        let notifier = Notifier::new();
        let (listeners, ready): (Vec<_>, Vec<_>) = nodes
            .iter()
            .map(|node| node.listen(layout.clone(), notifier.clone()))
            .unzip();
        // Wait (up to the timeout) until the instances that answered have acknowledged the
        // subscription, so a release right after `connect` is heard (review finding 11).

        let subscriptions = ready.into_iter().zip(answered).filter(|(_, ok)| *ok).map(
            |(mut ready, _)| async move {
                let _ = ready.wait_for(|subscribed| *subscribed).await;
            },
        );
        let _ = tokio::time::timeout(config.timeout, join_all(subscriptions)).await;
        Ok(Redis {
            inner: Arc::new(Inner {
                nodes,
                layout,
                quorum,
                notifier,
                listeners,
                config,
                background: Tracker::default(),
                seen: std::array::from_fn(|_| AtomicU64::new(0)),
            }),
            open: lock_core::backend::LastClose::new(),
        })
    }

    /// A handle for this backend's own background work (round stragglers, roll-backs): it
    /// does not count as an open clone, so it never keeps `close` from doing its work.
    fn background(&self) -> Redis {
        Redis {
            inner: self.inner.clone(),
            open: self.open.uncounted(),
        }
    }

    /// The configuration this backend was connected with.
    pub fn config(&self) -> &RedisConfig {
        &self.inner.config
    }

    /// True with more than one instance (Redlock).
    pub fn is_redlock(&self) -> bool {
        self.inner.nodes.len() > 1
    }

    /// The number of instances a grant of `kind` with `limit` needs: the configured quorum
    /// (default a majority), and for a semaphore with limit `L > 1` at least
    /// `floor(N * L / (L + 1)) + 1` of the `N` instances, so that no `L + 1` grants can each
    /// find room on their own quorum.
    pub fn quorum_for(&self, kind: LockKind, limit: u32) -> usize {
        quorum_for(self.inner.nodes.len(), self.inner.quorum, kind, limit)
    }

    fn nodes(&self) -> &[Node] {
        &self.inner.nodes
    }

    /// How many instances this backend has.
    pub(crate) fn node_count(&self) -> usize {
        self.inner.nodes.len()
    }

    /// Instance `i`.
    pub(crate) fn node(&self, i: usize) -> &Node {
        &self.inner.nodes[i]
    }

    /// The key layout.
    pub(crate) fn layout(&self) -> &Layout {
        &self.inner.layout
    }

    /// How many instances a listing scans to the end: `N - quorum + 1`, so that every quorum
    /// includes one of them (1 for a single instance).
    pub(crate) fn list_needed(&self) -> usize {
        let n = self.inner.nodes.len();
        n - self.inner.quorum.min(n) + 1
    }

    /// The error of a listing that cannot go on: instance `e` failed and too few are left to
    /// scan.
    pub(crate) fn list_unavailable(&self, e: NodeError) -> Error {
        if !self.is_redlock() {
            return Error::unavailable("redis", e);
        }
        Error::unavailable(
            "redis",
            ListError {
                n: self.inner.nodes.len(),
                needed: self.list_needed(),
                first: e,
            },
        )
    }

    fn seen_slot(&self, key: &LockKey) -> &AtomicU64 {
        use std::hash::{Hash, Hasher};
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        key.hash(&mut hasher);
        &self.inner.seen[(hasher.finish() % SEEN_SLOTS as u64) as usize]
    }

    /// The token a Redlock acquisition proposes (P3): `max(client clock µs + lead, the last
    /// token seen for the lock + 1)`. Instances grant `max(counter + 1, clock, proposal)`, so
    /// in the normal case every instance grants exactly the proposal.
    fn propose(&self, key: &LockKey) -> u64 {
        let clock = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default()
            + PROPOSAL_LEAD;
        let clock = u64::try_from(clock.as_micros()).unwrap_or(u64::MAX);
        clock.max(
            self.seen_slot(key)
                .load(Ordering::Relaxed)
                .saturating_add(1),
        )
    }

    /// Records a token granted for `key`, so the next proposal is above it.
    fn saw(&self, key: &LockKey, token: u64) {
        self.seen_slot(key).fetch_max(token, Ordering::Relaxed);
    }
}

pub(crate) fn quorum_for(n: usize, quorum: usize, kind: LockKind, limit: u32) -> usize {
    if n == 1 {
        return 1;
    }
    if kind == LockKind::Semaphore && limit > 1 {
        let l = u128::from(limit);
        let needed = (n as u128 * l / (l + 1)) as usize + 1;
        quorum.max(needed).min(n)
    } else {
        quorum
    }
}

/// The error when fewer than `quorum` of `n` instances could answer.
fn unavailable(mut failed: Vec<NodeError>, n: usize, quorum: usize) -> Error {
    if n == 1 && failed.len() == 1 {
        return Error::unavailable("redis", failed.remove(0));
    }
    Error::unavailable(
        "redis",
        QuorumError {
            failed: failed.len(),
            n,
            quorum,
            first: failed.into_iter().next(),
        },
    )
}

/// Too many Redlock instances failed.
#[derive(Debug)]
struct QuorumError {
    failed: usize,
    n: usize,
    quorum: usize,
    first: Option<NodeError>,
}

impl fmt::Display for QuorumError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} of {} redis nodes failed; {} must answer (the first failure is the source)",
            self.failed, self.n, self.quorum
        )
    }
}

impl std::error::Error for QuorumError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.first.as_ref().map(|e| e as _)
    }
}

/// A Redlock listing that ran out of instances to scan.
#[derive(Debug)]
struct ListError {
    n: usize,
    needed: usize,
    first: NodeError,
}

impl fmt::Display for ListError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "a listing scans {} of the {} redis nodes to the end, and too few are left that \
             answer (the latest failure is the source)",
            self.needed, self.n
        )
    }
}

impl std::error::Error for ListError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.first)
    }
}

/// A script's reply that is not what the script returns.
#[derive(Debug)]
struct BadReply(String);

impl fmt::Display for BadReply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "unexpected reply from a lock script: {}", self.0)
    }
}

impl std::error::Error for BadReply {}

fn bad_reply(what: impl fmt::Debug) -> Error {
    Error::unavailable("redis", BadReply(format!("{what:?}")))
}

/// The acquire script's fast-path argument: `f` for an exclusive mutex request without
/// metadata (it may take the fast path's lease, see `common.lua`), `m` for another mutex
/// request (the fast path's lease counts as held), else empty.
fn acquire_path(request: &AcquireRequest, metadata: &str) -> &'static str {
    if request.key.kind() != LockKind::Mutex {
        ""
    } else if request.mode == Mode::Exclusive && request.limit == 1 && metadata.is_empty() {
        "f"
    } else {
        "m"
    }
}

/// The release, extend and raise scripts' argument: `m` when the lease may be the mutex fast
/// path's, else empty.
fn mutex_flag(key: &LockKey) -> &'static str {
    if key.kind() == LockKind::Mutex {
        "m"
    } else {
        ""
    }
}

/// The longest TTL sent to a script: 10 years, so that `TIME + ttl` in microseconds stays
/// exact in Lua's doubles.
const MAX_TTL: Duration = Duration::from_secs(10 * 365 * 24 * 3600);

fn micros(d: Duration) -> u64 {
    u64::try_from(d.min(MAX_TTL).as_micros())
        .unwrap_or(u64::MAX)
        .max(1)
}

/// The Redlock drift allowance for a lease of `ttl`: 1 % plus 2 ms.
fn drift(ttl: Duration) -> Duration {
    ttl.mul_f64(0.01) + Duration::from_millis(2)
}

impl Redis {
    async fn acquire_on(
        &self,
        node: &Node,
        request: &AcquireRequest,
        metadata: &str,
        attempt: u64,
        proposed: u64,
    ) -> Result<Result<NodeAcquired, NodeError>> {
        let layout = &self.inner.layout;
        let key = &request.key;
        let mut invocation = ACQUIRE.key(layout.set(key));
        invocation
            .key(layout.expiries(key))
            .key(layout.claims(key))
            .key(layout.counter(key))
            .key(layout.fast(key))
            .arg(request.lease_id.to_ulid_string())
            .arg(&*request.owner)
            .arg(match request.mode {
                Mode::Exclusive => "x",
                Mode::Shared => "s",
            })
            .arg(request.permits)
            .arg(request.limit)
            .arg(micros(request.ttl))
            .arg(request.claim.map_or(0, micros))
            .arg(metadata)
            .arg(layout.channel(key))
            .arg(COUNTER_MARGIN_MS)
            .arg(attempt)
            .arg(acquire_path(request, metadata))
            .arg(proposed);
        let reply: redis::Value = match node.run(&invocation).await {
            Ok(reply) => reply,
            Err(e) => return Ok(Err(e)),
        };
        parse_acquired(&reply)
            .map(Ok)
            .ok_or_else(|| bad_reply(&reply))
    }

    /// Releases `lease` on one instance (with `attempt`, only if that Redlock attempt granted
    /// it there, leaving its claim): `Ok(0)` when it did not hold the lease, else the lock's
    /// limit.
    async fn release_on(
        &self,
        i: usize,
        key: &LockKey,
        lease: LeaseId,
        attempt: Option<Attempt>,
    ) -> Result<u32, NodeError> {
        let layout = &self.inner.layout;
        let mut invocation = RELEASE.key(layout.set(key));
        invocation
            .key(layout.expiries(key))
            .key(layout.claims(key))
            .key(layout.fast(key))
            .arg(lease.to_ulid_string())
            .arg(layout.channel(key));
        match attempt {
            Some(attempt) => invocation
                .arg(attempt.number)
                .arg(attempt.claim.map_or(0, micros)),
            None => invocation.arg("").arg(0),
        };
        invocation.arg(mutex_flag(key));
        self.inner.nodes[i]
            .run::<i64>(&invocation)
            .await
            .map(|limit| u32::try_from(limit.max(0)).unwrap_or(u32::MAX))
    }

    /// Redlock's roll-back, in the background: releases `lease` (with `attempt`, only where that
    /// attempt granted it) on the instances of `holding` (which answered that they hold it), of
    /// `unsure` (which failed and may hold it) and of `stragglers` (still working: the release
    /// follows their call on the connection), and again on each instance of `stragglers` once
    /// its call answers, if `may_hold` says that answer may have left the lease there. Failures are
    /// ignored: the TTL is the backstop. Each part is bounded by two round trips' timeouts.
    /// When the attempt's request waits (it has a claim TTL), each rolled-back lease turns back
    /// into its waiting claim, which keeps its place: claims are ordered by lease id on every
    /// instance, so the waiters agree on one order and a split grant does not cost its winner
    /// its turn (review finding 5).
    ///
    /// Returns the task releasing on `holding`: those instances just answered, so a caller
    /// about to report a failure waits a moment for it (see [`ROLL_BACK_WAIT`]).
    #[allow(clippy::too_many_arguments)]
    fn roll_back<T: Send + 'static>(
        &self,
        holding: Vec<usize>,
        unsure: Vec<usize>,
        stragglers: Round<T>,
        may_hold: fn(&T) -> bool,
        key: &LockKey,
        lease: LeaseId,
        attempt: Option<Attempt>,
    ) -> Option<JoinHandle<()>> {
        let release_on = |nodes: Vec<usize>| {
            let this = self.background();
            let key = key.clone();
            this.inner.background.clone().spawn(async move {
                join_all(
                    nodes
                        .iter()
                        .map(|&i| this.release_on(i, &key, lease, attempt)),
                )
                .await;
            })
        };
        let quick = (!holding.is_empty()).then(|| release_on(holding));
        // Instances still working on the call get the release at once too: on their
        // connection it runs right after the call, so a program that closes its locker and
        // exits leaves nothing there (the release after their answer below is the backstop).
        let unsure: Vec<usize> = unsure.into_iter().chain(stragglers.pending()).collect();
        if !unsure.is_empty() {
            release_on(unsure);
        }
        let this = self.background();
        let owned_key = key.clone();
        stragglers.finish_in_background(&self.inner.background, move |i, answer| {
            let this = this.clone();
            let key = owned_key.clone();
            async move {
                if may_hold(&answer) {
                    let _ = this.release_on(i, &key, lease, attempt).await;
                }
            }
        });
        quick
    }

    /// Waits up to [`ROLL_BACK_WAIT`] for a roll-back's first part.
    async fn wait_briefly(task: Option<JoinHandle<()>>) {
        if let Some(task) = task {
            let _ = tokio::time::timeout(ROLL_BACK_WAIT, task).await;
        }
    }

    /// The errors of the instances whose calls were still running when a round ended.
    fn unanswered<T: Send + 'static>(&self, round: &Round<T>, started: Instant) -> Vec<NodeError> {
        round
            .pending()
            .map(|i| self.inner.nodes[i].unanswered(started.elapsed()))
            .collect()
    }

    /// Redlock's acquisition. The first round asks every instance and is decided as soon as
    /// `q` granted or `q` can no longer grant; the second raises the counters of the instances
    /// that granted and is decided at `q` acknowledgements (from instances still holding the
    /// lease) or when they can no longer come. Both end by the lease's validity
    /// (`ttl - drift` after the first request was sent). Instances still answering finish in
    /// the background, and a grant that is not reported is rolled back in the background.
    async fn acquire_redlock(&self, request: &AcquireRequest, metadata: &str) -> Result<Acquired> {
        let n = self.nodes().len();
        let quorum = self.quorum_for(request.key.kind(), request.limit);
        let started = Instant::now();
        let validity = request.ttl.saturating_sub(drift(request.ttl));
        let deadline = started.checked_add(validity);
        let attempt = ATTEMPT.fetch_add(1, Ordering::Relaxed);
        let proposed = self.propose(&request.key);
        let shared = Arc::new((request.clone(), metadata.to_owned()));
        let mut round = Round::start(n, 0..n, |i| {
            let this = self.background();
            let shared = Arc::clone(&shared);
            async move {
                let (request, metadata) = &*shared;
                this.acquire_on(&this.inner.nodes[i], request, metadata, attempt, proposed)
                    .await
            }
        });

        let mut grants: Vec<(usize, u64)> = Vec::new();
        let mut busy_after: Option<Duration> = None;
        let mut mismatch = None;
        let mut failed = Vec::new();
        let mut bad = None;
        // Instances that failed (or answered badly) and may hold the lease.
        let mut unsure = Vec::new();
        let mut timed_out = false;
        while mismatch.is_none()
            && bad.is_none()
            && grants.len() < quorum
            && grants.len() + round.remaining() >= quorum
        {
            // The loop's condition leaves a call running: no answer means the deadline.
            let Some((i, answer)) = round.next(deadline).await else {
                timed_out = true;
                break;
            };
            match answer {
                Ok(Ok(NodeAcquired::Granted(token))) => grants.push((i, token)),
                Ok(Ok(NodeAcquired::Busy(after))) => {
                    if let Some(after) = after {
                        busy_after = Some(busy_after.map_or(after, |b| b.min(after)));
                    }
                }
                Ok(Ok(NodeAcquired::Mismatch(limit))) => mismatch = Some(limit),
                Ok(Err(e)) => {
                    failed.push(e);
                    unsure.push(i);
                }
                Err(e) => {
                    bad = Some(e);
                    unsure.push(i);
                }
            }
        }
        let in_time = || deadline.is_none_or(|d| Instant::now() < d);
        // A late answer may leave the lease on its instance unless it says busy or mismatch.
        let may_hold: fn(&Result<Result<NodeAcquired, NodeError>>) -> bool = |answer| {
            !matches!(
                answer,
                Ok(Ok(NodeAcquired::Busy(_) | NodeAcquired::Mismatch(_)))
            )
        };

        if let Some(highest) = grants.iter().map(|&(_, t)| t).max() {
            self.saw(&request.key, highest);
        }
        if mismatch.is_none() && bad.is_none() && grants.len() >= quorum && in_time() {
            let token = grants.iter().map(|&(_, t)| t).max().unwrap_or(0);
            if grants.iter().filter(|&&(_, t)| t == token).count() >= quorum {
                // P3, the normal case: a quorum of instances granted the same token T (the
                // proposal), so their counters are T while they hold the lease, which is
                // what the raise would establish: any later quorum meets one of them, where
                // it is granted only after this lease ended, above T. No second round.
                round.detach(&self.inner.background);
                return Ok(Acquired::Granted {
                    token: FencingToken(token),
                });
            }
            // The second round: raise the counters of the instances holding the lease to T
            // before reporting T, so any later quorum (which meets them on an instance where
            // it can be granted only after this lease ended) counts from above T.
            let granted: Vec<usize> = grants.iter().map(|&(i, _)| i).collect();
            let mut raise = Round::start(n, granted.iter().copied(), |i| {
                let this = self.background();
                let key = request.key.clone();
                let lease = request.lease_id;
                async move {
                    let layout = &this.inner.layout;
                    let mut invocation = RAISE.key(layout.set(&key));
                    invocation
                        .key(layout.expiries(&key))
                        .key(layout.counter(&key))
                        .key(layout.fast(&key))
                        .arg(lease.to_ulid_string())
                        .arg(token)
                        .arg(COUNTER_MARGIN_MS)
                        .arg(attempt)
                        .arg(mutex_flag(&key));
                    this.inner.nodes[i].run::<i64>(&invocation).await
                }
            });
            let mut acked = 0;
            let mut refused = 0;
            let mut raise_failed = Vec::new();
            while acked < quorum && acked + raise.remaining() >= quorum {
                match raise.next(deadline).await {
                    Some((_, Ok(1))) => acked += 1,
                    Some((_, Ok(_))) => refused += 1,
                    Some((_, Err(e))) => raise_failed.push(e),
                    None => break,
                }
            }
            if acked >= quorum && in_time() {
                // Late grants belong to this lease (release and extend reach every instance);
                // their tokens were not raised, so inspect reports the token that a quorum
                // of instances holds.
                round.detach(&self.inner.background);
                raise.detach(&self.inner.background);
                return Ok(Acquired::Granted {
                    token: FencingToken(token),
                });
            }
            if !in_time() {
                raise_failed.extend(self.unanswered(&raise, started));
            }
            raise.detach(&self.inner.background);
            let rolling = self.roll_back(
                granted,
                unsure,
                round,
                may_hold,
                &request.key,
                request.lease_id,
                Some(Attempt {
                    number: attempt,
                    claim: request.claim,
                }),
            );
            Self::wait_briefly(rolling).await;
            if refused == 0 && !raise_failed.is_empty() {
                return Err(unavailable(raise_failed, grants.len(), quorum));
            }
            return Ok(Acquired::Busy {
                retry_after: Some(Duration::from_millis(jitter_ms())),
            });
        }

        let split = !grants.is_empty();
        if timed_out {
            failed.extend(self.unanswered(&round, started));
        }
        let granted = grants.iter().map(|&(i, _)| i).collect();
        let rolling = self.roll_back(
            granted,
            unsure,
            round,
            may_hold,
            &request.key,
            request.lease_id,
            Some(Attempt {
                number: attempt,
                claim: request.claim,
            }),
        );
        Self::wait_briefly(rolling).await;
        if let Some(stored) = mismatch {
            return Err(request.limit_mismatch(stored));
        }
        if let Some(e) = bad {
            return Err(e);
        }
        if n - failed.len() < quorum {
            return Err(unavailable(failed, n, quorum));
        }
        let retry_after = if split {
            // Grants were split between contenders (or came too late) and are rolled back:
            // try again soon, at a jittered moment so the contenders do not collide again.
            Some(Duration::from_millis(jitter_ms()))
        } else {
            busy_after
        };
        Ok(Acquired::Busy { retry_after })
    }
}

/// One Redlock acquisition attempt, for its roll-back.
#[derive(Debug, Clone, Copy)]
struct Attempt {
    /// Its number (see [`ATTEMPT`]).
    number: u64,
    /// The request's claim TTL, when it waits.
    claim: Option<Duration>,
}

/// The number of the next Redlock acquisition attempt. Numbers increase across the attempts of
/// one lease id (a waiting request retries under its lease id), so that the roll-back of one
/// attempt never removes a grant of a later one (`acquire.lua` records the latest attempt).
static ATTEMPT: AtomicU64 = AtomicU64::new(1);

/// How long a failed Redlock call waits for its roll-back on the instances that just granted
/// before it returns; the rest goes on in the background.
const ROLL_BACK_WAIT: Duration = Duration::from_millis(100);

/// A random delay of 5..50 ms.
fn jitter_ms() -> u64 {
    fastrand::u64(5..50)
}

impl Backend for Redis {
    fn name(&self) -> &'static str {
        "redis"
    }

    async fn acquire(&self, request: &AcquireRequest) -> Result<Acquired> {
        let metadata = encode_metadata(&request.metadata);
        if self.is_redlock() {
            return self.acquire_redlock(request, &metadata).await;
        }
        match self
            .acquire_on(&self.nodes()[0], request, &metadata, 0, 0)
            .await?
        {
            Ok(NodeAcquired::Granted(token)) => Ok(Acquired::Granted {
                token: FencingToken(token),
            }),
            Ok(NodeAcquired::Busy(retry_after)) => Ok(Acquired::Busy { retry_after }),
            Ok(NodeAcquired::Mismatch(stored)) => Err(request.limit_mismatch(stored)),
            Err(e) => Err(Error::unavailable("redis", e)),
        }
    }

    async fn release(&self, key: &LockKey, lease: LeaseId) -> Result<()> {
        let n = self.nodes().len();
        let mut round = Round::start(n, 0..n, |i| {
            let this = self.background();
            let key = key.clone();
            async move { this.release_on(i, &key, lease, None).await }
        });
        // Released only when a quorum confirmed it deleted the lease; `NotHeld` once so many
        // instances did not have it that no quorum can have; else we cannot tell. Every call
        // is bounded by the instance's timeout; the rest finish in the background.
        let mut deleted = 0;
        let mut absent = 0;
        let mut limit = 1;
        let mut failed = Vec::new();
        let outcome = loop {
            let quorum = quorum_for(n, self.inner.quorum, key.kind(), limit);
            if deleted >= quorum {
                break Ok(());
            }
            if n - absent < quorum {
                break Err(Error::NotHeld {
                    name: key.name().to_owned(),
                });
            }
            match round.next(None).await {
                Some((_, Ok(0))) => absent += 1,
                Some((_, Ok(stored))) => {
                    deleted += 1;
                    limit = limit.max(stored);
                }
                Some((_, Err(e))) => failed.push(e),
                None => break Err(unavailable(failed, n, quorum)),
            }
        };
        round.detach(&self.inner.background);
        if outcome.is_ok() {
            // P4 (c): waiters of this backend (the same Locker) hear of our own release at
            // once, without the round trip through the server's pub/sub.
            self.inner.notifier.notify(key);
        }
        outcome
    }

    async fn extend(&self, key: &LockKey, lease: LeaseId, ttl: Duration) -> Result<()> {
        let n = self.nodes().len();
        let started = Instant::now();
        // With Redlock an extension counts only within its validity; one instance's answer
        // counts whenever it comes (its timeout bounds it).
        let deadline = if n == 1 {
            None
        } else {
            started.checked_add(ttl.saturating_sub(drift(ttl)))
        };
        let mut round = Round::start(n, 0..n, |i| {
            let this = self.background();
            let key = key.clone();
            async move {
                let layout = &this.inner.layout;
                let mut invocation = EXTEND.key(layout.set(&key));
                invocation
                    .key(layout.expiries(&key))
                    .key(layout.claims(&key))
                    .key(layout.fast(&key))
                    .arg(lease.to_ulid_string())
                    .arg(micros(ttl))
                    .arg(layout.channel(&key))
                    .arg(mutex_flag(&key));
                this.inner.nodes[i].run::<i64>(&invocation).await
            }
        });
        let mut extended = Vec::new();
        let mut absent = 0;
        let mut limit = 1u32;
        let mut failed = Vec::new();
        let mut unsure = Vec::new();
        let quorum = loop {
            let quorum = quorum_for(n, self.inner.quorum, key.kind(), limit);
            if extended.len() >= quorum || n - absent < quorum {
                break quorum;
            }
            match round.next(deadline).await {
                Some((_, Ok(0))) => absent += 1,
                Some((i, Ok(stored))) => {
                    extended.push(i);
                    limit = limit.max(u32::try_from(stored).unwrap_or(u32::MAX));
                }
                Some((i, Err(e))) => {
                    failed.push(e);
                    unsure.push(i);
                }
                None => break quorum,
            }
        };
        let in_time = deadline.is_none_or(|d| Instant::now() < d);
        if extended.len() >= quorum && in_time {
            round.detach(&self.inner.background);
            return Ok(());
        }
        failed.extend(self.unanswered(&round, started));
        if extended.len() + failed.len() < quorum || extended.len() >= quorum {
            // Enough instances answered that the lease is gone for a quorum to be out of reach
            // (or the extension came too late to count): the copies it did extend would block
            // grants there for a whole TTL, so they are rolled back.
            let may_hold: fn(&Result<i64, NodeError>) -> bool = |answer| !matches!(answer, Ok(0));
            let rolling = self.roll_back(extended, unsure, round, may_hold, key, lease, None);
            Self::wait_briefly(rolling).await;
            Err(Error::Expired {
                name: key.name().to_owned(),
            })
        } else {
            // It may still be valid on a quorum with its old expiry: the caller may retry.
            round.detach(&self.inner.background);
            Err(unavailable(failed, n, quorum))
        }
    }

    async fn inspect(&self, name: &str) -> Result<Vec<LockInfo>> {
        let keys = KINDS
            .iter()
            .map(|kind| LockKey::new(name, *kind))
            .collect::<Result<Vec<_>>>()?;
        let nodes = self.nodes();
        let layout = &self.inner.layout;
        let answers = join_all(nodes.iter().map(|node| async move {
            let mut invocation = INSPECT.prepare_invoke();
            for kind in KINDS {
                invocation
                    .key(layout.set_of(name, kind))
                    .key(layout.expiries_of(name, kind));
            }
            invocation.key(layout.fast_of(name, LockKind::Mutex));
            node.run::<Vec<String>>(&invocation).await
        }))
        .await;
        let now = SystemTime::now();
        // Per lease: the info (earliest expiry), on how many instances, its token on each, and
        // the quorum a grant of its kind and limit needs.
        let mut seen: HashMap<String, (LockInfo, usize, Vec<FencingToken>, usize)> = HashMap::new();
        let mut failed = Vec::new();
        for answer in answers {
            let items = match answer {
                Ok(items) => items,
                Err(e) => {
                    failed.push(e);
                    continue;
                }
            };
            if items.len() % 9 != 0 {
                return Err(bad_reply(&items));
            }
            for lease in items.chunks_exact(9) {
                let info = parse_lease(&keys, lease, now).ok_or_else(|| bad_reply(lease))?;
                let token = info.token;
                let limit: u32 = lease[8].parse().map_err(|_| bad_reply(lease))?;
                let needed = quorum_for(nodes.len(), self.inner.quorum, info.kind, limit);
                let (known, count, tokens, _) =
                    seen.entry(lease[1].clone())
                        .or_insert((info.clone(), 0, Vec::new(), needed));
                *count += 1;
                tokens.push(token);
                known.expires_at = known.expires_at.min(info.expires_at);
            }
        }
        let n = nodes.len();
        let quorum = self.inner.quorum.min(n);
        if n - failed.len() < quorum {
            return Err(unavailable(failed, n, quorum));
        }
        // A lease counts when it is (or, with the instances that did not answer, may be) on as
        // many instances as a grant of its kind and limit needs (more than a majority for a
        // semaphore with a limit above 1, review finding 10): a partial grant being rolled back
        // does not, a holder behind a failed instance does.
        let unknown = failed.len();
        // Its token: the one a quorum of instances holds (the raised one; instances that granted
        // late keep their own), else the highest seen.
        let majority = quorum.max(n / 2 + 1);
        let mut holders: Vec<LockInfo> = seen
            .into_values()
            .filter(|(_, count, _, needed)| count + unknown >= *needed)
            .map(|(mut info, _, tokens, _)| {
                info.token = tokens
                    .iter()
                    .copied()
                    .find(|t| tokens.iter().filter(|u| *u == t).count() >= majority)
                    .or_else(|| tokens.iter().copied().max())
                    .unwrap_or(info.token);
                info
            })
            .collect();
        holders.sort_by_key(|info| info.token);
        Ok(holders)
    }

    async fn force_release(&self, name: &str) -> Result<usize> {
        for kind in KINDS {
            LockKey::new(name, kind)?;
        }
        let nodes = self.nodes();
        let layout = &self.inner.layout;
        let answers = join_all(nodes.iter().map(|node| async move {
            let mut invocation = FORCE_RELEASE.prepare_invoke();
            for kind in KINDS {
                invocation
                    .key(layout.set_of(name, kind))
                    .key(layout.expiries_of(name, kind))
                    .key(layout.claims_of(name, kind));
            }
            invocation.key(layout.fast_of(name, LockKind::Mutex));
            for kind in KINDS {
                invocation.arg(layout.channel_of(name, kind));
            }
            node.run::<i64>(&invocation).await
        }))
        .await;
        let mut removed = 0usize;
        let mut failed = Vec::new();
        for answer in answers {
            match answer {
                Ok(count) => removed = removed.max(usize::try_from(count).unwrap_or(0)),
                Err(e) => failed.push(e),
            }
        }
        self.inner.notifier.notify_name(name);
        let n = nodes.len();
        let quorum = self.inner.quorum.min(n);
        if n - failed.len() < quorum {
            return Err(unavailable(failed, n, quorum));
        }
        Ok(removed)
    }

    /// `SCAN`s the keys of the names under the prefix, at most 4 calls of `COUNT` ten times
    /// the limit (100 to 1000) per page, and reports each name found as [`inspect`](Backend::inspect)
    /// does (with Redlock: the leases a quorum holds). Pages come in the server's hash order,
    /// not by name. With Redlock the instances are scanned one after the other, `N - quorum +
    /// 1` of them (a failed one is passed over while enough are left), so a name held by a
    /// quorum is reported once per scanned instance that holds it: a name may repeat across
    /// pages. `SCAN` may miss a key created or deleted while it runs, so a name whose holder
    /// changed during the listing may be missed; a name held by one lease for the whole
    /// listing never is.
    async fn list(&self, request: &ListRequest) -> Result<LockPage> {
        self.list_page(request).await
    }

    async fn subscribe(&self, request: &AcquireRequest) -> Result<Subscription> {
        Ok(self.inner.notifier.subscribe(&request.key))
    }

    /// Stops the pub/sub listeners and waits (up to twice the round-trip timeout) for the work
    /// left running in the background: the stragglers of Redlock rounds and the roll-backs, so
    /// a program that closes its locker and exits leaves no partial grant behind.
    async fn close(&self) {
        // Another locker may still wait on the shared listeners.
        if !self.open.close() {
            return;
        }
        for listener in &self.inner.listeners {
            listener.abort();
        }
        self.inner
            .background
            .settled(Instant::now() + self.inner.config.timeout * 2)
            .await;
    }
}

/// An acquire script's reply: `['granted', token]`, `['busy', µs or -1]` or
/// `['mismatch', limit]`.
fn parse_acquired(reply: &redis::Value) -> Option<NodeAcquired> {
    let redis::Value::Array(items) = reply else {
        return None;
    };
    let [tag, value] = items.as_slice() else {
        return None;
    };
    let tag = match tag {
        redis::Value::BulkString(bytes) => bytes.as_slice(),
        redis::Value::SimpleString(s) => s.as_bytes(),
        _ => return None,
    };
    let redis::Value::Int(value) = *value else {
        return None;
    };
    match tag {
        b"granted" => u64::try_from(value).ok().map(NodeAcquired::Granted),
        b"busy" => Some(NodeAcquired::Busy(
            u64::try_from(value).ok().map(Duration::from_micros),
        )),
        b"mismatch" => u32::try_from(value).ok().map(NodeAcquired::Mismatch),
        _ => None,
    }
}

/// One lease of an inspect reply: kind index, id, owner, mode, permits, token, µs left,
/// metadata (and the set's limit, read by the caller).
fn parse_lease(keys: &[LockKey], item: &[String], now: SystemTime) -> Option<LockInfo> {
    let kind: usize = item[0].parse().ok()?;
    let key = keys.get(kind.checked_sub(1)?)?;
    let mode = match item[3].as_str() {
        "x" => Mode::Exclusive,
        "s" => Mode::Shared,
        _ => return None,
    };
    let permits = item[4].parse().ok()?;
    let token = FencingToken(item[5].parse().ok()?);
    let left = Duration::from_micros(item[6].parse().ok()?);
    let metadata = decode_metadata(&item[7])?;
    Some(LockInfo::new(
        key,
        item[2].as_str(),
        token,
        mode,
        permits,
        now.checked_add(left)?,
        metadata,
    ))
}

impl fmt::Debug for Redis {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Redis")
            .field(
                "nodes",
                &self
                    .inner
                    .nodes
                    .iter()
                    .map(|n| n.url.as_str())
                    .collect::<Vec<_>>(),
            )
            .field("prefix", &self.inner.config.prefix)
            .field("quorum", &self.inner.quorum)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttls_are_clamped_for_lua() {
        assert_eq!(micros(Duration::ZERO), 1);
        assert_eq!(micros(Duration::from_millis(1500)), 1_500_000);
        assert_eq!(micros(Duration::MAX), micros(MAX_TTL));
        assert!(micros(Duration::MAX) < (1 << 53) / 8);
    }

    #[test]
    fn semaphore_quorum_grows_with_the_limit() {
        let q = |n, limit| quorum_for(n, n / 2 + 1, LockKind::Semaphore, limit);
        assert_eq!(q(5, 1), 3);
        assert_eq!(q(5, 2), 4);
        assert_eq!(q(5, 3), 4);
        assert_eq!(q(5, 4), 5);
        assert_eq!(q(5, u32::MAX), 5);
        assert_eq!(q(3, 2), 3);
        assert_eq!(q(1, 10), 1);
        assert_eq!(quorum_for(5, 3, LockKind::RwMutex, u32::MAX), 3);
        assert_eq!(quorum_for(5, 4, LockKind::Mutex, 1), 4);
    }
}
