//! [`Etcd`]: the backend's operations, each a few bounded round trips.

use crate::config::{EtcdConfig, split_credentials};
use crate::keys::{
    Entry, Stored, hex, kind_of, lease_secs, lock_prefix, name_prefix, prefix_end, segment, unhex,
};
use crate::leases::{self, Held, Leases, Taken};
use crate::subscribe;
use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, DeleteOptions, GetOptions, PutOptions, Txn, TxnOp,
    TxnOpResponse, TxnResponse,
};
use futures_util::{StreamExt, TryStreamExt};
use lock_core::{
    AcquireRequest, Acquired, Backend, Error, FencingToken, LeaseId, ListCursor, ListRequest,
    LockInfo, LockKey, LockKind, LockPage, Mode, Result, Subscription,
};
use std::future::Future;
use std::time::{Duration, SystemTime};

/// How often an operation re-reads and retries when a concurrent write changed the lock
/// between its read and its transaction.
const CONFLICT_RETRIES: usize = 16;

/// The segment under a read-write lock's prefix that holds its readers' keys (waiting or
/// granted). Lease ids are upper-case ULIDs, so every other key of the lock sorts before it:
/// `[lock prefix, lock prefix + "s/")` is the range of the writers' keys.
const READERS: &str = "s/";

/// True for a request whose key goes under [`READERS`].
fn is_reader(request: &AcquireRequest) -> bool {
    request.key.kind() == LockKind::RwMutex && request.mode == Mode::Shared
}

/// How often `inspect` follows a holder's key to the new lease an extend moved it to.
const MOVED_RETRIES: usize = 4;

/// The etcd v3 backend: one etcd lease per grant (from a pool of pre-granted leases) or one
/// session lease per TTL ([`LeaseMode`](crate::LeaseMode)), one per waiting claim, waiters queued in revision
/// order. Cheap to clone; clones share the connection and the leases.
///
/// See the crate documentation for the design, the guarantees and the limits.
#[derive(Clone)]
pub struct Etcd {
    client: Client,
    prefix: String,
    timeout: Duration,
    leases: Leases,
    /// Clones share the leases: only the last one closed revokes them.
    open: lock_core::backend::LastClose,
}

impl std::fmt::Debug for Etcd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Etcd")
            .field("prefix", &self.prefix)
            .field("timeout", &self.timeout)
            .field("lease", &self.leases.mode())
            .finish_non_exhaustive()
    }
}

pub(crate) fn unavailable(e: impl Into<lock_core::BoxError>) -> Error {
    Error::unavailable("etcd", e)
}

/// Why a round trip failed.
pub(crate) enum Failure {
    /// etcd (or the transport) reported an error.
    Etcd(etcd_client::Error),
    /// No answer within the timeout.
    TimedOut,
}

impl Failure {
    pub(crate) fn into_error(self, what: &str, timeout: Duration) -> Error {
        match self {
            Failure::Etcd(e) => unavailable(e),
            Failure::TimedOut => unavailable(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("etcd {what} timed out after {timeout:?}"),
            )),
        }
    }
}

/// True when the request never left this process: no connection to the endpoint the balancer
/// picked (a killed node). Such a request is safe to send again.
fn never_sent(e: &etcd_client::Error) -> bool {
    match e {
        etcd_client::Error::GRpcStatus(status) => {
            format!("{:?}", status.code()) == "Unavailable"
                && status.message().contains("connect error")
        }
        etcd_client::Error::TransportError(_) => true,
        _ => false,
    }
}

/// True when the connection broke under the request (gRPC `Unknown` "transport error": a
/// broken pipe, a connection the server closed, for example with a GOAWAY, just as the request
/// went out). The request may or may not have reached the server: only a request that is safe
/// to repeat is sent again.
fn connection_broke(e: &etcd_client::Error) -> bool {
    match e {
        etcd_client::Error::GRpcStatus(status) => {
            format!("{:?}", status.code()) == "Unknown"
                && status.message().contains("transport error")
        }
        _ => false,
    }
}

/// Whether a request may be sent again after its connection broke under it.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Repeat {
    /// Not safe to repeat (a lease grant: a second one would leak a lease for its whole TTL).
    No,
    /// Safe to repeat once: a read, a keep-alive, a revoke, a compare-guarded transaction.
    Once,
}

/// Runs one round trip within `timeout`, sending it again (to another endpoint, as the
/// balancer picks) while it could not even be sent.
pub(crate) async fn call<T, F, Fut>(timeout: Duration, send: F) -> Result<T, Failure>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, etcd_client::Error>>,
{
    call_repeating(timeout, Repeat::No, send)
        .await
        .map(|(value, _)| value)
}

/// [`call`], also sending the request once more when its connection broke under it (with
/// [`Repeat::Once`]); true with the answer when the request was sent again that way, so the
/// first copy may have applied too.
pub(crate) async fn call_repeating<T, F, Fut>(
    timeout: Duration,
    repeat: Repeat,
    mut send: F,
) -> Result<(T, bool), Failure>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, etcd_client::Error>>,
{
    // Saturated: a configured timeout of any size never panics.
    let deadline = lock_core::later(tokio::time::Instant::now(), timeout);
    let pause = Duration::from_millis(50);
    let mut repeated = false;
    loop {
        match tokio::time::timeout_at(deadline, send()).await {
            Ok(Ok(value)) => return Ok((value, repeated)),
            Ok(Err(e)) if never_sent(&e) && tokio::time::Instant::now() + pause < deadline => {
                tokio::time::sleep(pause).await;
            }
            // The channel reconnects at once: no pause.
            Ok(Err(e)) if repeat == Repeat::Once && !repeated && connection_broke(&e) => {
                repeated = true;
            }
            Ok(Err(e)) => return Err(Failure::Etcd(e)),
            Err(_) => return Err(Failure::TimedOut),
        }
    }
}

/// [`call_repeating`], with failures mapped to [`Error::ProviderUnavailable`] and without the
/// flag.
pub(crate) async fn rpc<T, F, Fut>(
    timeout: Duration,
    repeat: Repeat,
    what: &str,
    send: F,
) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, etcd_client::Error>>,
{
    call_repeating(timeout, repeat, send)
        .await
        .map(|(value, _)| value)
        .map_err(|f| f.into_error(what, timeout))
}

/// How many keys one page of `list` reads at most: four per name asked for, 100 to 4000.
fn list_budget(limit: usize) -> usize {
    limit.saturating_mul(4).clamp(100, 4000)
}

/// How many names of a page `list` inspects at once.
const INSPECTS_IN_FLIGHT: usize = 16;

/// A `list` cursor for the name segment `segment` (see [`segment`]): the segment itself, which
/// for a key of this layout is the hex of the name; a segment of another key (not hex) as `~`
/// and the hex of its bytes, so that every segment round-trips.
fn segment_cursor(segment: &[u8]) -> ListCursor {
    if segment.iter().all(u8::is_ascii_hexdigit) {
        ListCursor::new(String::from_utf8_lossy(segment).into_owned())
    } else {
        ListCursor::new(format!("~{}", hex_bytes(segment)))
    }
}

/// Lowercase hex of bytes.
fn hex_bytes(bytes: &[u8]) -> String {
    use std::fmt::Write;
    let mut out = String::with_capacity(bytes.len() * 2);
    for byte in bytes {
        let _ = write!(out, "{byte:02x}");
    }
    out
}

/// The segment a `list` cursor stands for (see [`segment_cursor`]). Any other text is read
/// as a position among the segments, except a `~` not followed by hex.
fn cursor_segment(cursor: &str) -> Result<Vec<u8>> {
    let Some(escaped) = cursor.strip_prefix('~') else {
        return Ok(cursor.as_bytes().to_vec());
    };
    let bad = || {
        Error::invalid_argument(format!(
            "list cursor {:?} was not made by the etcd backend",
            cursor.chars().take(64).collect::<String>()
        ))
    };
    if escaped.is_empty()
        || !escaped.len().is_multiple_of(2)
        || !escaped.bytes().all(|b| b.is_ascii_hexdigit())
    {
        return Err(bad());
    }
    (0..escaped.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&escaped[i..i + 2], 16).map_err(|_| bad()))
        .collect()
}

/// etcd's largest lease TTL (`MaxLeaseTTL`), in seconds: a longer one is refused.
const MAX_LEASE_TTL_SECS: i64 = 9_000_000_000;

/// A TTL etcd refuses is an invalid argument, not a failure worth retrying. (`lock-core`
/// already caps TTLs at a year; this guards direct callers of the backend.)
fn check_lease_ttl(ttl: Duration) -> Result<()> {
    if lease_secs(ttl) > MAX_LEASE_TTL_SECS {
        return Err(Error::invalid_argument(format!(
            "ttl {ttl:?} is above etcd's maximum lease TTL of {MAX_LEASE_TTL_SECS} s"
        )));
    }
    Ok(())
}

/// The keys and revision a transaction's `Get` (in its taken branch) read.
fn range_of(response: &TxnResponse) -> Result<(Vec<Entry>, i64)> {
    let revision = header_revision(response.header())?;
    let get = response
        .op_responses()
        .into_iter()
        .find_map(|op| match op {
            TxnOpResponse::Get(get) => Some(get),
            _ => None,
        })
        .ok_or_else(|| unavailable("etcd transaction answered without its read"))?;
    let entries = get
        .kvs()
        .iter()
        .map(Entry::from_kv)
        .collect::<Result<Vec<_>>>()?;
    Ok((entries, revision))
}

fn header_revision(header: Option<&etcd_client::ResponseHeader>) -> Result<i64> {
    header
        .map(etcd_client::ResponseHeader::revision)
        .ok_or_else(|| unavailable("etcd response without a header"))
}

impl Etcd {
    /// Connects to the cluster and checks it answers one read.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] for an invalid configuration (naming the value);
    /// [`Error::ProviderUnavailable`] when the cluster cannot be reached within
    /// `connect_timeout` + `request_timeout`.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: nothing is written.
    pub async fn connect(config: EtcdConfig) -> Result<Etcd> {
        config.validate()?;
        let mut options = ConnectOptions::new()
            .with_connect_timeout(config.connect_timeout)
            // HTTP/2 pings only while a request or a watch is open, and no more often than etcd
            // accepts (its gRPC server allows one per 5 s, none on an idle connection: more
            // pings are answered with GOAWAY too_many_pings, and the connection drops under the
            // next request). A connection idle for longer is pinged as the next request starts.
            .with_keep_alive(Duration::from_secs(10), config.request_timeout)
            .with_keep_alive_while_idle(false)
            .with_require_leader(true);
        let mut user = config.user.clone();
        let mut endpoints = Vec::new();
        for endpoint in &config.endpoints {
            let (clean, credentials) = split_credentials(endpoint);
            user = user.or(credentials);
            endpoints.push(clean);
        }
        if let Some((name, password)) = user {
            options = options.with_user(name, password);
        }
        if let Some(tls) = config.tls_options()? {
            options = options.with_tls(tls);
        }
        let connected = call(config.connect_timeout + config.request_timeout, || {
            Client::connect(&endpoints, Some(options.clone()))
        })
        .await;
        let client = match connected {
            Ok(client) => client,
            Err(Failure::Etcd(
                e @ (etcd_client::Error::InvalidUri(_) | etcd_client::Error::InvalidArgs(_)),
            )) => {
                return Err(Error::config(format!(
                    "etcd endpoints: invalid endpoint in {endpoints:?}: {e}"
                )));
            }
            Err(f) => {
                let source = f.into_error("connect", config.connect_timeout);
                let source = std::error::Error::source(&source)
                    .map_or_else(|| source.to_string(), ToString::to_string);
                let hint = config
                    .tls_hint(&source)
                    .map(|h| h + ": ")
                    .unwrap_or_default();
                return Err(Error::unavailable(
                    "etcd",
                    format!("{hint}cannot connect to {endpoints:?}: {source}"),
                ));
            }
        };
        let etcd = Etcd {
            leases: Leases::start(client.clone(), config.request_timeout, config.lease),
            client,
            prefix: config.prefix.clone(),
            timeout: config.request_timeout,
            open: lock_core::backend::LastClose::new(),
        };
        // One small read (a count of one key) proves the cluster answers and has a leader.
        rpc(etcd.timeout, Repeat::Once, "read", || {
            let mut kv = etcd.client.kv_client();
            let key = etcd.prefix.clone();
            async move { kv.get(key, Some(GetOptions::new().with_count_only())).await }
        })
        .await
        .map_err(|e| {
            // A TLS failure shows only at the first request: say what it means.
            let mut text = String::new();
            let mut source = std::error::Error::source(&e);
            while let Some(s) = source {
                text.push_str(&format!("{s} {s:?}; "));
                source = s.source();
            }
            match (config.tls_hint(&text), std::error::Error::source(&e)) {
                (Some(hint), Some(source)) => {
                    Error::unavailable("etcd", format!("{hint}: {source}"))
                }
                _ => e,
            }
        })?;
        Ok(etcd)
    }

    /// The key prefix.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// A request's key: `{lock prefix}{lease id}`, or `{lock prefix}s/{lease id}` for a reader of
    /// a read-write lock (`shared`), so readers can compare on the writers' keys alone.
    fn own_key(&self, key: &LockKey, lease: LeaseId, shared: bool) -> String {
        format!(
            "{}{}{}",
            lock_prefix(&self.prefix, key),
            if shared { READERS } else { "" },
            lease.to_ulid_string()
        )
    }

    /// The request's key and entry, wherever it is (a reader's or another key), if any.
    async fn find_own(&self, key: &LockKey, lease: LeaseId) -> Result<Option<Entry>> {
        let candidates: &[bool] = if key.kind() == LockKind::RwMutex {
            &[false, true]
        } else {
            &[false]
        };
        for &shared in candidates {
            let own_key = self.own_key(key, lease, shared);
            let (entries, _) = self.read(own_key.into_bytes(), false).await?;
            if let Some(entry) = entries.into_iter().next() {
                return Ok(Some(entry));
            }
        }
        Ok(None)
    }

    /// Reads a key (or a prefix): the entries and the revision of the read.
    async fn read(&self, key: Vec<u8>, prefix: bool) -> Result<(Vec<Entry>, i64)> {
        let options = prefix.then(|| GetOptions::new().with_prefix());
        let response = rpc(self.timeout, Repeat::Once, "read", || {
            let mut kv = self.client.kv_client();
            let (key, options) = (key.clone(), options.clone());
            async move { kv.get(key, options).await }
        })
        .await?;
        let revision = header_revision(response.header())?;
        let entries = response
            .kvs()
            .iter()
            .map(Entry::from_kv)
            .collect::<Result<Vec<_>>>()?;
        Ok((entries, revision))
    }

    /// Grants a lease of at least `ttl`: its id and the TTL in seconds the server granted (etcd
    /// raises a TTL below its minimum, about 2 s on a default cluster).
    async fn grant_lease(&self, ttl: Duration) -> Result<(i64, i64)> {
        let lease = leases::grant(&self.client, self.timeout, lease_secs(ttl)).await?;
        Ok((lease.id, lease.ttl))
    }

    /// Revokes a lease, ignoring failures: it expires by itself anyway.
    async fn revoke_quietly(&self, lease: i64) {
        if lease != 0 {
            let _ = self.revoke(lease).await;
        }
    }

    /// Renews a lease: `Ok(true)` if it was alive, `Ok(false)` if it had expired or was revoked.
    async fn keep_alive(&self, lease: i64) -> Result<bool> {
        leases::keep_alive(&self.client, self.timeout, lease).await
    }

    /// Revokes a lease: `Ok(true)` if it existed, `Ok(false)` if it had expired or was revoked.
    async fn revoke(&self, lease: i64) -> Result<bool> {
        leases::revoke(&self.client, self.timeout, lease).await
    }

    /// Runs a compare-guarded transaction: the answer, and whether it was sent twice (its
    /// connection broke under the first copy). Every transaction here is guarded by a compare
    /// that the first copy, had it applied, makes fail: the second copy never applies twice.
    async fn txn_response(&self, txn: Txn) -> Result<(TxnResponse, bool)> {
        call_repeating(self.timeout, Repeat::Once, || {
            let mut kv = self.client.kv_client();
            let txn = txn.clone();
            async move { kv.txn(txn).await }
        })
        .await
        .map_err(|f| f.into_error("transaction", self.timeout))
    }

    /// Runs a compare-guarded transaction: whether its compare held, and the revision. Any
    /// error leaves it unclear whether the transaction applied. So does a failed compare on a
    /// copy sent again (the first copy may have applied and made it fail): that is an error too,
    /// so `Ok(false)` always means the transaction did not apply.
    async fn txn(&self, txn: Txn) -> Result<(bool, i64)> {
        let (response, repeated) = self.txn_response(txn).await?;
        if repeated && !response.succeeded() {
            return Err(unavailable(
                "etcd transaction sent again after its connection broke found its compare \
                 failed: the first copy may have applied",
            ));
        }
        Ok((response.succeeded(), header_revision(response.header())?))
    }

    /// One acquisition attempt. The etcd lease a grant is made on is taken once (from the pool
    /// or the session, [`LeaseMode`](crate::LeaseMode)) and kept across conflict retries; unused, it goes back.
    async fn try_acquire(&self, request: &AcquireRequest) -> Result<Acquired> {
        check_lease_ttl(request.ttl)?;
        let mut taken = None;
        let result = self.attempt(request, &mut taken).await;
        if let Some(taken) = taken {
            self.leases.give_back(taken).await;
        }
        result
    }

    /// The lease for this attempt's grant, that the server keeps at least the request's TTL
    /// from now: taken on first use, renewed if it got too old while the attempt retried.
    async fn lease_for(
        &self,
        request: &AcquireRequest,
        taken: &mut Option<Taken>,
    ) -> Result<Taken> {
        match taken {
            Some(t) => {
                if let Err(e) = self.leases.ensure(t, request.ttl).await {
                    *taken = None;
                    return Err(e);
                }
                Ok(*t)
            }
            None => {
                let t = self.leases.take(request.ttl).await?;
                *taken = Some(t);
                Ok(t)
            }
        }
    }

    /// The value of a grant on `lease`.
    fn granted_value(request: &AcquireRequest, lease: &Taken) -> Stored {
        Stored {
            held: true,
            owner: request.owner.to_string(),
            mode: request.mode,
            permits: request.permits,
            limit: request.limit,
            token: None,
            lease_ttl: lease.lease.ttl,
            asked_ttl: Some(lease_secs(request.ttl)),
            session: lease.session,
            metadata: (*request.metadata).clone(),
        }
    }

    /// A grant's transaction applied at `revision`: the lease is the grant's now.
    fn granted(
        &self,
        request: &AcquireRequest,
        taken: &mut Option<Taken>,
        revision: i64,
    ) -> Result<Acquired> {
        if let Some(t) = taken.take() {
            self.leases.remember(
                request.lease_id,
                Held {
                    lease: t.lease.id,
                    ttl: t.lease.ttl,
                    session: t.session,
                    reader: is_reader(request),
                },
            );
        }
        // The revision of the grant's own write: strictly above every earlier write to the
        // cluster, hence above every earlier token of this lock.
        let token = u64::try_from(revision).map_err(|_| unavailable("negative etcd revision"))?;
        Ok(Acquired::Granted {
            token: FencingToken(token),
        })
    }

    /// A grant's transaction ended without a clear answer: its lease may hold the key. A lease
    /// of its own is revoked, so a grant nobody heard of cannot linger; on a session lease the
    /// key stays until the caller releases the lease id (as it does when it gives up) or
    /// adopts it on its next attempt.
    async fn unclear(&self, taken: &mut Option<Taken>) {
        if let Some(t) = taken.take()
            && !t.session
        {
            self.revoke_quietly(t.lease.id).await;
        }
    }

    async fn attempt(
        &self,
        request: &AcquireRequest,
        taken: &mut Option<Taken>,
    ) -> Result<Acquired> {
        let base = lock_prefix(&self.prefix, &request.key);
        let reader = is_reader(request);
        let own_key = self.own_key(&request.key, request.lease_id, reader);
        // An exclusive request that is not already queued tries first with one transaction:
        // granted if the lock has no key at all, else it reads the lock's keys (the read the
        // slow path needs). A re-sent copy of it that finds the first applied reads the own
        // grant and adopts it below.
        let mut first = None;
        if request.mode == Mode::Exclusive && !self.leases.is_waiting(request.lease_id) {
            let lease = self.lease_for(request, taken).await?;
            let txn = Txn::new()
                .when([Compare::version(base.clone(), CompareOp::Equal, 0).with_prefix()])
                .and_then([TxnOp::put(
                    own_key.clone(),
                    Self::granted_value(request, &lease).encode(),
                    Some(PutOptions::new().with_lease(lease.lease.id)),
                )])
                .or_else([TxnOp::get(
                    base.clone(),
                    Some(GetOptions::new().with_prefix()),
                )]);
            match self.txn_response(txn).await {
                Ok((response, _)) if response.succeeded() => {
                    return self.granted(request, taken, header_revision(response.header())?);
                }
                Ok((response, _)) => first = Some(range_of(&response)?),
                Err(e) => {
                    self.unclear(taken).await;
                    return Err(e);
                }
            }
        }
        for _ in 0..CONFLICT_RETRIES {
            let (entries, revision) = match first.take() {
                Some(read) => read,
                None => self.read(base.clone().into_bytes(), true).await?,
            };
            if let Some(other) = entries.iter().find(|e| e.stored.limit != request.limit) {
                return Err(request.limit_mismatch(other.stored.limit));
            }
            let mine = entries.iter().find(|e| e.key == own_key.as_bytes());
            if let Some(mine) = mine.filter(|m| m.stored.held) {
                // A re-sent request whose grant went through (its reply was lost). Its lease
                // was granted for an earlier attempt, but the caller counts the grant's
                // validity from this one: renew the lease first. The keep-alive is sent after
                // this attempt, so the lease then lasts at least its TTL past this attempt's
                // start. Gone meanwhile: busy, and the next attempt starts over.
                if taken.is_some_and(|t| t.lease.id == mine.lease) {
                    // This attempt's own first copy applied (a transaction sent again after its
                    // connection broke): the lease holds the key now, it never goes back to
                    // the pool.
                    *taken = None;
                }
                if !self.keep_alive(mine.lease).await? {
                    return Ok(Acquired::Busy {
                        retry_after: Some(Duration::ZERO),
                    });
                }
                self.leases.remember(
                    request.lease_id,
                    Held {
                        lease: mine.lease,
                        ttl: mine.stored.lease_ttl,
                        session: mine.stored.session,
                        reader,
                    },
                );
                return Ok(Acquired::Granted {
                    token: FencingToken(mine.token()),
                });
            }
            let held: u64 = entries
                .iter()
                .filter(|e| e.stored.held)
                .map(|e| e.stored.weight())
                .sum();
            let ahead: u64 = entries
                .iter()
                .filter(|e| !e.stored.held && e.key != own_key.as_bytes())
                .filter(|e| mine.is_none_or(|m| e.create_revision < m.create_revision))
                .map(|e| e.stored.weight())
                .sum();

            if held + ahead + request.weight() <= u64::from(request.limit) {
                let lease = self.lease_for(request, taken).await?;
                // Granted only if nothing in the set was created or changed since the read
                // (deletions only free room); for a reader, nothing among the writers' keys
                // (another reader adds a weight of 1 to a limit of `u32::MAX`: it never changes
                // the decision). The put names a lease the server keeps at least the TTL from
                // now, and etcd refuses a put on a lease that no longer exists, so a grant is
                // never made on a dead lease (no keep-alive after it is needed). Lost the race:
                // the `Else` branch is the next read.
                let unchanged = Compare::mod_revision(base.clone(), CompareOp::Less, revision + 1);
                let unchanged = if reader {
                    unchanged.with_range(format!("{base}{READERS}"))
                } else {
                    unchanged.with_prefix()
                };
                let txn = Txn::new()
                    .when([unchanged])
                    .and_then([TxnOp::put(
                        own_key.clone(),
                        Self::granted_value(request, &lease).encode(),
                        Some(PutOptions::new().with_lease(lease.lease.id)),
                    )])
                    .or_else([TxnOp::get(
                        base.clone(),
                        Some(GetOptions::new().with_prefix()),
                    )]);
                match self.txn_response(txn).await {
                    Ok((response, _)) if response.succeeded() => {
                        if let Some(claim) = mine {
                            self.revoke_quietly(claim.lease).await;
                        }
                        return self.granted(request, taken, header_revision(response.header())?);
                    }
                    // Lost a race (or a copy sent again found the first applied: the read shows
                    // the own grant, adopted above): read again, with the same lease.
                    Ok((response, _)) => {
                        first = Some(range_of(&response)?);
                        continue;
                    }
                    Err(e) => {
                        self.unclear(taken).await;
                        return Err(e);
                    }
                }
            }

            let Some(claim_ttl) = request.claim else {
                return Ok(Acquired::Busy { retry_after: None });
            };
            if let Some(mine) = mine
                && self.keep_alive(mine.lease).await?
            {
                self.leases.mark_waiting(request.lease_id);
                return Ok(Acquired::Busy { retry_after: None });
            }
            // No claim yet (or it expired): queue at the back, in revision order.
            let (lease, granted_ttl) = self.grant_lease(claim_ttl).await?;
            let stored = Stored {
                held: false,
                owner: request.owner.to_string(),
                mode: request.mode,
                permits: request.permits,
                limit: request.limit,
                token: None,
                lease_ttl: granted_ttl,
                asked_ttl: Some(lease_secs(claim_ttl)),
                session: false,
                metadata: Default::default(),
            };
            let txn = Txn::new()
                .when([Compare::create_revision(
                    own_key.clone(),
                    CompareOp::Equal,
                    0,
                )])
                .and_then([TxnOp::put(
                    own_key.clone(),
                    stored.encode(),
                    Some(PutOptions::new().with_lease(lease)),
                )]);
            match self.txn(txn).await {
                Ok((true, _)) => {
                    self.leases.mark_waiting(request.lease_id);
                    return Ok(Acquired::Busy { retry_after: None });
                }
                Ok((false, _)) => {
                    self.revoke_quietly(lease).await;
                    continue;
                }
                Err(e) => {
                    self.revoke_quietly(lease).await;
                    return Err(e);
                }
            }
        }
        // Heavy contention: report busy, the caller retries.
        Ok(Acquired::Busy {
            retry_after: Some(Duration::from_millis(10)),
        })
    }

    /// Settles an extend whose move of `entry` to `new_lease` ended without a clear answer
    /// (`unclear`): it may have applied, not applied, or still be on its way. A fence decides: a
    /// transaction that re-writes the key unchanged, on its old lease, if it still is the entry
    /// that was read (after that the move's compare can never hold), and else reads it.
    ///
    /// Moved: the extend succeeded, and the old lease is revoked. Fenced, or on another lease:
    /// the move never applies, the new lease is revoked and the extend reports `unclear`
    /// (retryable; the key keeps its old lease, kept alive just before). Gone: `expired`. Fence
    /// without a clear answer either: the new lease is left to expire by itself, it may hold
    /// the key.
    async fn settle_move(
        &self,
        entry: &Entry,
        new: Taken,
        unclear: Error,
        expired: Error,
    ) -> Result<()> {
        let new_lease = new.lease.id;
        // A session lease is shared: never revoked for one key.
        let revoke_new = || async {
            if !new.session {
                self.revoke_quietly(new_lease).await;
            }
        };
        let revoke_old = || async {
            if !entry.stored.session {
                self.revoke_quietly(entry.lease).await;
            }
        };
        let mut stored = entry.stored.clone();
        stored.token = Some(entry.token());
        let fence = Txn::new()
            .when([Compare::mod_revision(
                entry.key.clone(),
                CompareOp::Equal,
                entry.mod_revision,
            )])
            .and_then([TxnOp::put(
                entry.key.clone(),
                stored.encode(),
                Some(PutOptions::new().with_lease(entry.lease)),
            )])
            .or_else([TxnOp::get(entry.key.clone(), None)]);
        let Ok((response, _)) = self.txn_response(fence).await else {
            return Err(unclear);
        };
        if response.succeeded() {
            revoke_new().await;
            return Err(unclear);
        }
        let now = response.op_responses().into_iter().find_map(|op| match op {
            TxnOpResponse::Get(get) => Some(get.kvs().first().map(Entry::from_kv)),
            _ => None,
        });
        match now {
            Some(Some(Ok(now))) if now.lease == new_lease && now.stored.held => {
                revoke_old().await;
                Ok(())
            }
            Some(Some(Ok(now))) if now.lease != new_lease && now.stored.held => {
                revoke_new().await;
                Err(unclear)
            }
            Some(None | Some(Ok(_))) => {
                // Gone, or no longer a granted lease: not held any more.
                revoke_new().await;
                Err(expired)
            }
            Some(Some(Err(_))) | None => Err(unclear),
        }
    }

    /// A lease's remaining TTL in whole seconds (truncated), negative if it is gone.
    async fn lease_ttl(&self, lease: i64) -> Result<i64> {
        let response = rpc(self.timeout, Repeat::Once, "lease time-to-live", || {
            let mut client = self.client.lease_client();
            async move { client.time_to_live(lease, None).await }
        })
        .await?;
        Ok(response.ttl())
    }

    /// One page of `list`: one range read of at most [`list_budget`] keys (keys only) from
    /// the cursor on, grouped by name; the first `limit` names read to their last key are
    /// inspected. The cursor is the last name's segment.
    async fn list_page(&self, request: &ListRequest) -> Result<LockPage> {
        let prefix = self.prefix.as_bytes();
        let base = format!("{}{}", self.prefix, hex(&request.prefix)).into_bytes();
        let end = prefix_end(&base);
        let mut start = base;
        if let Some(cursor) = &request.after {
            // Past every key of that segment: they go on with '/', and '0' follows '/'.
            let mut after = prefix.to_vec();
            after.extend_from_slice(&cursor_segment(cursor.as_str())?);
            after.push(b'0');
            start = start.max(after);
        }
        if start.is_empty() {
            start.push(0);
        }
        if end != [0] && start >= end {
            return Ok(LockPage::new(Vec::new(), None));
        }
        let budget = list_budget(request.limit);
        let options = GetOptions::new()
            .with_range(end)
            .with_keys_only()
            .with_limit(i64::try_from(budget).unwrap_or(i64::MAX));
        let response = rpc(self.timeout, Repeat::Once, "list", || {
            let mut kv = self.client.kv_client();
            let (start, options) = (start.clone(), options.clone());
            async move { kv.get(start, Some(options)).await }
        })
        .await?;
        let mut segments: Vec<&[u8]> = Vec::new();
        for kv in response.kvs() {
            if let Some(segment) = segment(prefix, kv.key())
                && segments.last() != Some(&segment)
            {
                segments.push(segment);
            }
        }
        // The keys of the last name may go on past the read: it is left for the next page,
        // unless it is the only one (its inspection reads all of its keys).
        if response.more() && segments.len() > 1 {
            segments.pop();
        }
        let cut = segments.len() > request.limit;
        segments.truncate(request.limit);
        let next = if cut || response.more() {
            segments.last().map(|s| segment_cursor(s))
        } else {
            None
        };
        let names: Vec<String> = segments
            .iter()
            .filter_map(|s| unhex(s))
            .filter(|name| lock_core::validate_name(name).is_ok())
            .collect();
        let holders: Vec<Vec<LockInfo>> = futures_util::stream::iter(names)
            .map(|name| async move { self.inspect(&name).await })
            .buffered(INSPECTS_IN_FLIGHT)
            .try_collect()
            .await?;
        Ok(LockPage::new(holders.into_iter().flatten().collect(), next))
    }

    /// Deletes the request's key if it is still the entry that was read.
    async fn delete_entry(&self, entry: &Entry) -> Result<bool> {
        let txn = Txn::new()
            .when([Compare::mod_revision(
                entry.key.clone(),
                CompareOp::Equal,
                entry.mod_revision,
            )])
            .and_then([TxnOp::delete(entry.key.clone(), None)]);
        let (deleted, _) = self.txn(txn).await?;
        if deleted && !entry.stored.session {
            self.revoke_quietly(entry.lease).await;
        }
        Ok(deleted)
    }
}

impl Backend for Etcd {
    fn name(&self) -> &'static str {
        "etcd"
    }

    /// Waiters are signalled by an etcd watch on their predecessor; changes further ahead are
    /// seen at the claim refresh (a third of the claim TTL), so this stays `false` and the
    /// handles keep their fallback poll.
    fn reliable_notifications(&self) -> bool {
        false
    }

    async fn acquire(&self, request: &AcquireRequest) -> Result<Acquired> {
        self.try_acquire(request).await
    }

    /// A grant of this process on a lease of its own is released by revoking that lease (one
    /// proposal: etcd deletes the key with it, and watchers see the delete); "lease not found"
    /// means it had expired or was force-released: `NotHeld`. A grant on a session lease is
    /// deleted if it is still on that lease. Anything else (a waiting claim, a grant of another
    /// process or one this process no longer remembers) is read first and deleted by
    /// compare-and-delete.
    async fn release(&self, key: &LockKey, lease: LeaseId) -> Result<()> {
        let not_held = || Error::NotHeld {
            name: key.name().to_owned(),
        };
        match self.leases.forget(lease) {
            Some(Held {
                lease: id,
                session: false,
                ..
            }) => {
                return if self.revoke(id).await? {
                    Ok(())
                } else {
                    Err(not_held())
                };
            }
            Some(Held {
                lease: id,
                session: true,
                reader,
                ..
            }) => {
                let own_key = self.own_key(key, lease, reader);
                let txn = Txn::new()
                    .when([Compare::lease(own_key.clone(), CompareOp::Equal, id)])
                    .and_then([TxnOp::delete(own_key.clone(), None)]);
                return if self.txn(txn).await?.0 {
                    Ok(())
                } else {
                    Err(not_held())
                };
            }
            None => {}
        }
        for _ in 0..CONFLICT_RETRIES {
            let Some(entry) = self.find_own(key, lease).await? else {
                return Err(Error::NotHeld {
                    name: key.name().to_owned(),
                });
            };
            if self.delete_entry(&entry).await? {
                return if entry.stored.held {
                    Ok(())
                } else {
                    // Only a waiting claim was withdrawn.
                    Err(Error::NotHeld {
                        name: key.name().to_owned(),
                    })
                };
            }
        }
        Err(unavailable(format!(
            "release of {:?} kept conflicting with concurrent writes",
            self.own_key(key, lease, false)
        )))
    }

    /// A grant of this process on a lease of its own whose TTL covers `ttl` is extended by one
    /// keep-alive of that lease, without a read: its key lives exactly as long as its lease
    /// (every deletion of such a key here revokes its lease). Otherwise the key is read (gone,
    /// or only a claim: `Expired`); if its lease's TTL covers `ttl`, the lease is kept alive.
    /// A longer TTL moves the key to a lease for that TTL (from the pool, or the session for
    /// that TTL) in one transaction (the token is kept in the value), then revokes the old
    /// lease if it was the key's own.
    async fn extend(&self, key: &LockKey, lease: LeaseId, ttl: Duration) -> Result<()> {
        let expired = || Error::Expired {
            name: key.name().to_owned(),
        };
        check_lease_ttl(ttl)?;
        let secs = lease_secs(ttl);
        if let Some(held) = self.leases.held(lease)
            && !held.session
            && held.ttl >= secs
        {
            return if self.keep_alive(held.lease).await? {
                Ok(())
            } else {
                self.leases.forget(lease);
                Err(expired())
            };
        }
        // Read first; remembered again once the outcome is clear.
        self.leases.forget(lease);
        for _ in 0..CONFLICT_RETRIES {
            let Some(entry) = self.find_own(key, lease).await?.filter(|e| e.stored.held) else {
                return Err(expired());
            };
            let reader = entry
                .key
                .ends_with(format!("{READERS}{}", lease.to_ulid_string()).as_bytes());
            // The lease lives at least `ttl` after a keep-alive sent now: keep it alive.
            if entry.stored.lease_ttl >= secs {
                if !self.keep_alive(entry.lease).await? {
                    return Err(expired());
                }
                self.leases.remember(
                    lease,
                    Held {
                        lease: entry.lease,
                        ttl: entry.stored.lease_ttl,
                        session: entry.stored.session,
                        reader,
                    },
                );
                return Ok(());
            }
            // Keep the old lease alive while the key moves, and make sure it still is.
            if !self.keep_alive(entry.lease).await? {
                return Err(expired());
            }
            let new = self.leases.take(ttl).await?;
            let mut stored = entry.stored.clone();
            stored.token = Some(entry.token());
            stored.lease_ttl = new.lease.ttl;
            stored.asked_ttl = Some(secs);
            stored.session = new.session;
            let txn = Txn::new()
                .when([Compare::mod_revision(
                    entry.key.clone(),
                    CompareOp::Equal,
                    entry.mod_revision,
                )])
                .and_then([TxnOp::put(
                    entry.key.clone(),
                    stored.encode(),
                    Some(PutOptions::new().with_lease(new.lease.id)),
                )]);
            let moved = Held {
                lease: new.lease.id,
                ttl: new.lease.ttl,
                session: new.session,
                reader,
            };
            match self.txn(txn).await {
                Ok((true, _)) => {
                    if !entry.stored.session {
                        self.revoke_quietly(entry.lease).await;
                    }
                    self.leases.remember(lease, moved);
                    return Ok(());
                }
                // The compare definitely failed: the key is not on the new lease.
                Ok((false, _)) => self.leases.give_back(new).await,
                // The move may have applied (its answer lost), or may still apply: revoking the
                // new lease could delete the holder's key. Settle it first.
                Err(e) => {
                    self.settle_move(&entry, new, e, expired()).await?;
                    self.leases.remember(lease, moved);
                    return Ok(());
                }
            }
        }
        Err(unavailable(format!(
            "extend of {:?} kept conflicting with concurrent writes",
            self.own_key(key, lease, false)
        )))
    }

    async fn inspect(&self, name: &str) -> Result<Vec<LockInfo>> {
        lock_core::validate_name(name)?;
        let prefix = name_prefix(&self.prefix, name);
        let (entries, _) = self.read(prefix.clone().into_bytes(), true).await?;
        let mut holders = Vec::new();
        for mut entry in entries.into_iter().filter(|e| e.stored.held) {
            let rest = String::from_utf8_lossy(&entry.key[prefix.len()..]).into_owned();
            let Some(kind) = kind_of(&rest) else { continue };
            let mut ttl = self.lease_ttl(entry.lease).await?;
            // The lease is gone: it expired since the read, or an extend moved the key to a new
            // lease (and revoked this one). Read the key again and ask its current lease, a
            // few times (each move needs an extend with another TTL).
            for _ in 0..MOVED_RETRIES {
                if ttl >= 0 {
                    break;
                }
                let (again, _) = self.read(entry.key.clone(), false).await?;
                match again.into_iter().next() {
                    Some(now) if now.stored.held && now.lease != entry.lease => {
                        ttl = self.lease_ttl(now.lease).await?;
                        entry = now;
                    }
                    _ => break,
                }
            }
            if ttl < 0 {
                continue; // expired (or released) since the read
            }
            let key = LockKey::new(name, kind)?;
            // etcd truncates the remaining TTL to whole seconds: the lease ends within the
            // second after `ttl`. Report that second's end, never an expiry before the real one.
            let expires_at = SystemTime::now()
                + Duration::from_secs(u64::try_from(ttl).unwrap_or(0).saturating_add(1));
            holders.push(LockInfo::new(
                &key,
                entry.stored.owner.clone(),
                FencingToken(entry.token()),
                entry.stored.mode,
                entry.stored.permits,
                expires_at,
                entry.stored.metadata.clone(),
            ));
        }
        holders.sort_by_key(|info| info.token);
        Ok(holders)
    }

    /// One range read of the keys under the prefix from the cursor on, keys only, at most four
    /// per name asked for (100 to 4000), in key order, which is the names' byte order (the
    /// name's hex, then `/`); then each of the first `limit` names read to its end is
    /// inspected. Idle names have no key (keys live with their leases), so they cost nothing.
    /// etcd counts the keys of the rest of the range in its in-memory index to answer a
    /// limited range read, but reads and sends only the first ones.
    async fn list(&self, request: &ListRequest) -> Result<LockPage> {
        self.list_page(request).await
    }

    async fn force_release(&self, name: &str) -> Result<usize> {
        lock_core::validate_name(name)?;
        let prefix = name_prefix(&self.prefix, name);
        // Every key of the name goes in one write, a range delete that answers the keys it
        // deleted: the count is exactly the granted leases removed, and a holder re-written
        // just before (an extend moving it to another lease, a waiter's grant) is removed and
        // counted with the rest; nothing to retry, whatever the contention. Not sent again
        // after a broken connection: a second copy would count nothing.
        let response = rpc(self.timeout, Repeat::No, "delete", || {
            let mut kv = self.client.kv_client();
            let prefix = prefix.clone();
            async move {
                kv.delete(
                    prefix,
                    Some(DeleteOptions::new().with_prefix().with_prev_key()),
                )
                .await
            }
        })
        .await?;
        let deleted: Vec<Entry> = response
            .prev_kvs()
            .iter()
            .filter_map(|kv| Entry::from_kv(kv).ok())
            .collect();
        // A holder of this version extends by keep-alive alone, trusting that its key lives as
        // long as its lease: each lease of a key's own must go too (a shared session lease must
        // not: its client's other grants live on it).
        let mut leases: Vec<i64> = deleted
            .iter()
            .filter(|e| !e.stored.session && e.lease != 0)
            .map(|e| e.lease)
            .collect();
        leases.sort_unstable();
        leases.dedup();
        // Every lease is tried even when one fails (review R-2): a lease skipped would let
        // its holder keep extending a key that is gone.
        leases::revoke_all(&self.client, self.timeout, leases, 3).await?;
        Ok(deleted.iter().filter(|e| e.stored.held).count())
    }

    /// Revokes every pooled and session lease (a session's keys go with it) and stops the
    /// background task; later grants get leases of their own.
    async fn close(&self) {
        // Another locker may still hold grants on the shared leases (review R-1).
        if self.open.close() {
            self.leases.close().await;
        }
    }

    async fn subscribe(&self, request: &AcquireRequest) -> Result<Subscription> {
        Ok(subscribe::follow(
            self.client.clone(),
            self.timeout,
            lock_prefix(&self.prefix, &request.key),
            self.own_key(&request.key, request.lease_id, is_reader(request)),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn list_cursors_round_trip_every_segment() {
        for segment in [&b"612f62"[..], b"", b"zz", b"\xff\x00/", b"~61"] {
            let cursor = segment_cursor(segment);
            assert_eq!(cursor_segment(cursor.as_str()).unwrap(), segment);
        }
        assert_eq!(segment_cursor(b"6162").as_str(), "6162");
        assert_eq!(cursor_segment("not a cursor").unwrap(), b"not a cursor");
        for bad in ["~", "~6", "~zz", "~+1"] {
            assert!(
                matches!(cursor_segment(bad), Err(Error::InvalidArgument { .. })),
                "{bad:?}"
            );
        }
        assert_eq!(list_budget(1), 100);
        assert_eq!(list_budget(1000), 4000);
    }

    #[tokio::test]
    async fn a_bad_endpoint_is_a_config_error_naming_it() {
        let err = Etcd::connect(EtcdConfig::new(["http://[::1"]))
            .await
            .unwrap_err();
        assert!(matches!(err, Error::Config { .. }), "{err:?}");
        assert!(err.to_string().contains("http://[::1"), "{err}");
    }

    #[tokio::test]
    async fn an_unreachable_cluster_is_unavailable_within_the_timeouts() {
        let config = EtcdConfig {
            endpoints: vec!["http://user:s3cret@127.0.0.1:1".into()],
            request_timeout: Duration::from_millis(500),
            connect_timeout: Duration::from_millis(500),
            ..EtcdConfig::default()
        };
        let started = std::time::Instant::now();
        let err = Etcd::connect(config).await.unwrap_err();
        assert!(matches!(err, Error::ProviderUnavailable { .. }), "{err:?}");
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{:?}",
            started.elapsed()
        );
        let shown = format!("{err} {err:?}");
        assert!(!shown.contains("s3cret"), "{shown}");
    }
}
