//! [`Redis`]: the [`Backend`] on one instance or, with Redlock, on several.

use crate::config::RedisConfig;
use crate::keys::{KINDS, Layout, decode_metadata, encode_metadata};
use crate::node::{Node, NodeError};
use futures_util::future::join_all;
use lock_core::{
    AcquireRequest, Acquired, Backend, Error, FencingToken, LeaseId, LockInfo, LockKey, LockKind,
    Mode, Notifier, Result, Subscription,
};
use redis::Script;
use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, LazyLock};
use std::time::{Duration, SystemTime};
use tokio::task::JoinHandle;
use tokio::time::Instant;

macro_rules! script {
    ($file:literal) => {
        LazyLock::new(|| {
            Script::new(concat!(
                include_str!("scripts/common.lua"),
                include_str!(concat!("scripts/", $file))
            ))
        })
    };
}

static ACQUIRE: LazyLock<Script> = script!("acquire.lua");
static RELEASE: LazyLock<Script> = script!("release.lua");
static EXTEND: LazyLock<Script> = script!("extend.lua");
static INSPECT: LazyLock<Script> = script!("inspect.lua");
static FORCE_RELEASE: LazyLock<Script> = script!("force_release.lua");
static RAISE: LazyLock<Script> = script!("raise.lua");

/// How long a token counter outlives the last grant of its lock (7 days). After that the
/// counter restarts from the server's clock in microseconds, which is above every earlier
/// token unless a counter ran more than that far ahead of the clock.
const COUNTER_TTL_MS: u64 = 7 * 24 * 3600 * 1000;

/// The Redis backend: one instance, or Redlock over several independent instances.
///
/// Cheap to clone: clones share connections and listeners. Every operation is one Lua script
/// per instance, run atomically with the instance's `TIME`; with Redlock it runs on every
/// instance in parallel and needs a quorum (see the crate docs).
#[derive(Clone)]
pub struct Redis {
    inner: Arc<Inner>,
}

struct Inner {
    nodes: Vec<Node>,
    layout: Layout,
    quorum: usize,
    notifier: Notifier,
    listeners: Vec<JoinHandle<()>>,
    config: RedisConfig,
}

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
        let pings = join_all(nodes.iter().map(Node::ping)).await;
        let failed: Vec<NodeError> = pings.into_iter().filter_map(|r| r.err()).collect();
        if nodes.len() - failed.len() < quorum {
            return Err(unavailable(failed, nodes.len(), quorum));
        }
        let layout = Layout::new(&config.prefix);
        let notifier = Notifier::new();
        let listeners = nodes
            .iter()
            .map(|node| node.listen(layout.clone(), notifier.clone()))
            .collect();
        Ok(Redis {
            inner: Arc::new(Inner {
                nodes,
                layout,
                quorum,
                notifier,
                listeners,
                config,
            }),
        })
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
    ) -> Result<Result<NodeAcquired, NodeError>> {
        let layout = &self.inner.layout;
        let mut invocation = ACQUIRE.key(layout.set(&request.key));
        invocation
            .key(layout.counter(&request.key))
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
            .arg(layout.channel(&request.key))
            .arg(COUNTER_TTL_MS);
        let reply: Vec<String> = match node.run(&invocation).await {
            Ok(reply) => reply,
            Err(e) => return Ok(Err(e)),
        };
        let parsed = match (reply.first().map(String::as_str), reply.get(1)) {
            (Some("granted"), Some(token)) => token.parse().ok().map(NodeAcquired::Granted),
            (Some("busy"), Some(after)) if after.is_empty() => Some(NodeAcquired::Busy(None)),
            (Some("busy"), Some(after)) => after
                .parse::<u64>()
                .ok()
                .map(|us| NodeAcquired::Busy(Some(Duration::from_micros(us)))),
            (Some("mismatch"), Some(limit)) => limit.parse().ok().map(NodeAcquired::Mismatch),
            _ => None,
        };
        parsed.map(Ok).ok_or_else(|| bad_reply(&reply))
    }

    async fn release_on(
        &self,
        node: &Node,
        key: &LockKey,
        lease: LeaseId,
    ) -> Result<bool, NodeError> {
        let layout = &self.inner.layout;
        let mut invocation = RELEASE.key(layout.set(key));
        invocation
            .arg(lease.to_ulid_string())
            .arg(layout.channel(key));
        node.run::<i64>(&invocation).await.map(|held| held == 1)
    }

    /// Releases `lease` on every instance (Redlock's roll-back), ignoring failures: the TTL is
    /// the backstop.
    async fn roll_back(&self, nodes: &[&Node], key: &LockKey, lease: LeaseId) {
        join_all(nodes.iter().map(|node| self.release_on(node, key, lease))).await;
    }

    async fn acquire_redlock(&self, request: &AcquireRequest, metadata: &str) -> Result<Acquired> {
        let nodes = self.nodes();
        let n = nodes.len();
        let quorum = self.quorum_for(request.key.kind(), request.limit);
        let started = Instant::now();
        let answers = join_all(
            nodes
                .iter()
                .map(|node| self.acquire_on(node, request, metadata)),
        )
        .await;
        let elapsed = started.elapsed();

        let mut tokens = Vec::new();
        let mut busy_after: Option<Duration> = None;
        let mut mismatch = None;
        let mut failed = Vec::new();
        let mut bad = None;
        // Instances that may hold the lease: granted, failed or timed out.
        let mut touched = Vec::new();
        for (node, answer) in nodes.iter().zip(answers) {
            match answer {
                Ok(Ok(NodeAcquired::Granted(token))) => {
                    tokens.push(token);
                    touched.push(node);
                }
                Ok(Ok(NodeAcquired::Busy(after))) => {
                    if let Some(after) = after {
                        busy_after = Some(busy_after.map_or(after, |b| b.min(after)));
                    }
                }
                Ok(Ok(NodeAcquired::Mismatch(limit))) => mismatch = Some(limit),
                Ok(Err(e)) => {
                    failed.push(e);
                    touched.push(node);
                }
                Err(e) => {
                    bad = Some(e);
                    touched.push(node);
                }
            }
        }

        let validity = request.ttl.saturating_sub(drift(request.ttl));
        if mismatch.is_none() && bad.is_none() && tokens.len() >= quorum && elapsed < validity {
            // The second round: raise a quorum's counters to T before reporting T, so any
            // later quorum (which meets this one) counts from above T.
            let token = tokens.iter().copied().max().unwrap_or(0);
            let layout = &self.inner.layout;
            let raised = join_all(nodes.iter().map(|node| async move {
                let mut invocation = RAISE.key(layout.set(&request.key));
                invocation
                    .key(layout.counter(&request.key))
                    .arg(request.lease_id.to_ulid_string())
                    .arg(token)
                    .arg(COUNTER_TTL_MS);
                node.run::<i64>(&invocation).await
            }))
            .await;
            let mut raise_failed = Vec::new();
            for result in raised {
                if let Err(e) = result {
                    raise_failed.push(e);
                }
            }
            if n - raise_failed.len() >= quorum && started.elapsed() < validity {
                return Ok(Acquired::Granted {
                    token: FencingToken(token),
                });
            }
            self.roll_back(&touched, &request.key, request.lease_id)
                .await;
            if n - raise_failed.len() < quorum {
                return Err(unavailable(raise_failed, n, quorum));
            }
            return Ok(Acquired::Busy {
                retry_after: Some(Duration::from_millis(jitter_ms())),
            });
        }

        let split = !tokens.is_empty();
        if !touched.is_empty() {
            self.roll_back(&touched, &request.key, request.lease_id)
                .await;
        }
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
            // Grants were split between contenders and rolled back: try again soon, at a
            // jittered moment so the contenders do not collide again.
            Some(Duration::from_millis(jitter_ms()))
        } else {
            busy_after
        };
        Ok(Acquired::Busy { retry_after })
    }
}

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
            .acquire_on(&self.nodes()[0], request, &metadata)
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
        let nodes = self.nodes();
        let answers = join_all(nodes.iter().map(|node| self.release_on(node, key, lease))).await;
        let mut held = false;
        let mut failed = Vec::new();
        for answer in answers {
            match answer {
                Ok(h) => held |= h,
                Err(e) => failed.push(e),
            }
        }
        if held {
            return Ok(());
        }
        // Not held where we could ask: `NotHeld` when a quorum says so (then no one could
        // count this lease as held), else we cannot tell.
        let quorum = self.inner.quorum.min(nodes.len());
        if nodes.len() - failed.len() >= quorum {
            Err(Error::NotHeld {
                name: key.name().to_owned(),
            })
        } else {
            Err(unavailable(failed, nodes.len(), quorum))
        }
    }

    async fn extend(&self, key: &LockKey, lease: LeaseId, ttl: Duration) -> Result<()> {
        let nodes = self.nodes();
        let layout = &self.inner.layout;
        let started = Instant::now();
        let answers = join_all(nodes.iter().map(|node| async move {
            let mut invocation = EXTEND.key(layout.set(key));
            invocation
                .arg(lease.to_ulid_string())
                .arg(micros(ttl))
                .arg(layout.channel(key));
            node.run::<i64>(&invocation).await
        }))
        .await;
        let mut extended = 0;
        let mut limit = 1u32;
        let mut failed = Vec::new();
        for answer in answers {
            match answer {
                Ok(0) => {}
                Ok(stored) => {
                    extended += 1;
                    limit = limit.max(u32::try_from(stored).unwrap_or(u32::MAX));
                }
                Err(e) => failed.push(e),
            }
        }
        let n = nodes.len();
        let quorum = self.quorum_for(key.kind(), limit);
        let in_time = n == 1 || started.elapsed() < ttl.saturating_sub(drift(ttl));
        if extended >= quorum && in_time {
            return Ok(());
        }
        if extended + failed.len() < quorum || (extended >= quorum && !in_time) {
            // Enough instances answered that the lease is gone for a quorum to be out of reach
            // (or the extension came too late to count).
            Err(Error::Expired {
                name: key.name().to_owned(),
            })
        } else {
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
            let mut invocation = INSPECT.key(layout.set_of(name, KINDS[0]));
            invocation
                .key(layout.set_of(name, KINDS[1]))
                .key(layout.set_of(name, KINDS[2]));
            node.run::<Vec<String>>(&invocation).await
        }))
        .await;
        let now = SystemTime::now();
        // Per lease: the info (highest token, earliest expiry) and on how many instances.
        let mut seen: HashMap<String, (LockInfo, usize)> = HashMap::new();
        let mut failed = Vec::new();
        for answer in answers {
            let items = match answer {
                Ok(items) => items,
                Err(e) => {
                    failed.push(e);
                    continue;
                }
            };
            if items.len() % 8 != 0 {
                return Err(bad_reply(&items));
            }
            for lease in items.chunks_exact(8) {
                let info = parse_lease(&keys, lease, now).ok_or_else(|| bad_reply(lease))?;
                seen.entry(lease[1].clone())
                    .and_modify(|(known, count)| {
                        *count += 1;
                        known.token = known.token.max(info.token);
                        known.expires_at = known.expires_at.min(info.expires_at);
                    })
                    .or_insert((info, 1));
            }
        }
        let n = nodes.len();
        let quorum = self.inner.quorum.min(n);
        if n - failed.len() < quorum {
            return Err(unavailable(failed, n, quorum));
        }
        // A lease counts when it is (or, with the instances that did not answer, may be) on a
        // quorum: a partial grant being rolled back does not, a holder behind a failed
        // instance does.
        let unknown = failed.len();
        let mut holders: Vec<LockInfo> = seen
            .into_values()
            .filter(|(_, count)| count + unknown >= quorum)
            .map(|(info, _)| info)
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
            let mut invocation = FORCE_RELEASE.key(layout.set_of(name, KINDS[0]));
            invocation
                .key(layout.set_of(name, KINDS[1]))
                .key(layout.set_of(name, KINDS[2]));
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

    async fn subscribe(&self, request: &AcquireRequest) -> Result<Subscription> {
        Ok(self.inner.notifier.subscribe(&request.key))
    }

    async fn close(&self) {
        for listener in &self.inner.listeners {
            listener.abort();
        }
    }
}

/// One lease of an inspect reply: kind index, id, owner, mode, permits, token, µs left,
/// metadata.
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
