//! The tables and the statements on them, shared by both modes.
//!
//! Times are the server's `clock_timestamp()` in microseconds since the epoch, stored as
//! `bigint` (so no date-time crate is needed on the client). Every statement that decides
//! something about a lock first locks the lock's row in `{prefix}locks` (`FOR UPDATE`), so
//! concurrent acquirers of one lock serialize; that row also holds the token counter, the claim
//! counter and the stored limit. Tokens are `greatest(last + 1, server clock µs)`, so a row
//! deleted by the clean-up (or lost with a commit) never makes a token go back.

use lock_core::{
    AcquireRequest, Acquired, Error, FencingToken, LeaseId, LockInfo, LockKey, LockKind, Mode,
    Result,
};
use sqlx::{AssertSqlSafe, PgConnection, Postgres as Pg};
use std::borrow::Cow;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

const NOW: &str = "(extract(epoch FROM clock_timestamp()) * 1000000)::bigint";

/// The longest TTL stored: about 100 years (bigger TTLs are clamped, not rejected).
const MAX_TTL_MICROS: i64 = 100 * 365 * 24 * 3600 * 1_000_000;

pub(crate) fn micros(d: Duration) -> i64 {
    i64::try_from(d.as_micros())
        .unwrap_or(i64::MAX)
        .min(MAX_TTL_MICROS)
}

pub(crate) fn unavailable(e: sqlx::Error) -> Error {
    Error::unavailable("postgres", e)
}

/// The statements, with the table names and (in advisory mode) the liveness test filled in.
pub(crate) struct Sql {
    /// Named (cached) prepared statements; off in lease mode, so the statements also work
    /// through PgBouncer in transaction pooling mode.
    persistent: bool,
    pub(crate) channel: String,
    /// The three tables and the index, for the migration's existence check.
    tables: [String; 4],
    pub(crate) migrate: Arc<str>,
    upsert_lock: Arc<str>,
    lock_row: Arc<str>,
    reap_leases: Arc<str>,
    reap_claims: Arc<str>,
    held: Arc<str>,
    claims: Arc<str>,
    set_limit: Arc<str>,
    next_token: Arc<str>,
    insert_lease: Arc<str>,
    delete_claim: Arc<str>,
    adopt: Arc<str>,
    colliding: Arc<str>,
    refresh_claim: Arc<str>,
    next_claim: Arc<str>,
    insert_claim: Arc<str>,
    release: Arc<str>,
    extend: Arc<str>,
    inspect: Arc<str>,
    lock_rows_of_name: Arc<str>,
    force_leases: Arc<str>,
    force_claims: Arc<str>,
    sweep_pick: Arc<str>,
    sweep_delete: Arc<str>,
}

fn s(text: String) -> Arc<str> {
    text.into()
}

/// Whether the session of lease row `l` still holds the lease's advisory lock (advisory mode).
///
/// A lease counts until its expiry whatever happens to its session (so a holder whose session
/// was killed is never overtaken before the TTL its keeper relies on); liveness decides whether
/// the holder may *extend* it, and which sessions contenders must end. Rows without a session
/// (written by a lease-mode client on the same tables) are always live, so both modes can share
/// tables safely: every grant, in either mode, is decided by the same weighted rule under the
/// same row lock.
fn live(advisory: Option<i32>) -> String {
    match advisory {
        None => "TRUE".to_owned(),
        Some(namespace) => format!(
            "(l.pid IS NULL OR EXISTS (SELECT 1 FROM pg_locks k \
             WHERE k.locktype = 'advisory' AND k.granted \
             AND k.objsubid = 2 AND k.pid = l.pid AND k.classid::bigint = {} \
             AND k.objid::bigint = (l.akey::bigint & 4294967295) \
             AND k.database = (SELECT oid FROM pg_database WHERE datname = current_database())))",
            u32::from_ne_bytes(namespace.to_ne_bytes())
        ),
    }
}

/// Starts a transaction in READ COMMITTED whatever the session's default: the grant rule reads
/// fresh rows in each statement, and a REPEATABLE READ or SERIALIZABLE default set by a DBA
/// would turn every contended grant into a serialization failure (review finding PG-4).
///
/// Its statements also get their own statement timeout, [`STATEMENT_TIMEOUT`], whatever the
/// session's default: a DBA's short `statement_timeout` would cancel the designed waits
/// (ending a hung holder's session waits up to 5 s) and turn contention into errors (review
/// finding PG-3). The client bounds every call anyway.
async fn begin(conn: &mut PgConnection) -> sqlx::Result<sqlx::Transaction<'_, sqlx::Postgres>> {
    sqlx::Connection::begin_with(
        conn,
        "BEGIN ISOLATION LEVEL READ COMMITTED; SET LOCAL statement_timeout = '10s'",
    )
    .await
}

/// The statement timeout of the library's own statements: above its longest designed wait
/// (ending a session, 5 s; an advisory-lock wait, at most 1.7 s).
pub(crate) const STATEMENT_TIMEOUT: &str = "10s";

/// Decisions the acquire transaction may take.
#[derive(Clone, Copy)]
pub(crate) enum Grant {
    /// Grant if the weighted rule allows; record `pid` and `akey` (advisory mode) with the lease.
    Allowed { pid: Option<i32>, akey: i32 },
    /// Never grant (the advisory lock was not obtained): reap, record the claim, report busy.
    Denied { akey: i32 },
}

/// What a lease deletion found.
pub(crate) struct Deleted {
    /// The lease was valid.
    pub(crate) valid: bool,
    /// Sessions (advisory mode) still holding deleted leases' advisory locks.
    pub(crate) live_pids: Vec<i32>,
    /// Something was deleted.
    pub(crate) changed: bool,
}

/// A lock name as stored: PostgreSQL text cannot hold NUL, so `\` becomes `\\` and NUL
/// becomes `\0` (reversible; names without either are stored as they are).
pub(crate) fn stored(name: &str) -> Cow<'_, str> {
    if name.contains(['\\', '\0']) {
        Cow::Owned(name.replace('\\', "\\\\").replace('\0', "\\0"))
    } else {
        Cow::Borrowed(name)
    }
}

/// The inverse of [`stored`]; `None` for a string `stored` cannot produce.
fn unstored(text: &str) -> Option<String> {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            match chars.next()? {
                '\\' => out.push('\\'),
                '0' => out.push('\0'),
                _ => return None,
            }
        } else {
            out.push(c);
        }
    }
    Some(out)
}

fn payload(key: &LockKey) -> String {
    format!("{}:{}", key.kind().as_str(), stored(key.name()))
}

/// Parses a NOTIFY payload back into its key.
pub(crate) fn parse_payload(payload: &str) -> Option<LockKey> {
    let (kind, name) = payload.split_once(':')?;
    LockKey::new(&unstored(name)?, parse_kind(kind)?).ok()
}

fn parse_kind(kind: &str) -> Option<LockKind> {
    match kind {
        "mutex" => Some(LockKind::Mutex),
        "rwmutex" => Some(LockKind::RwMutex),
        "semaphore" => Some(LockKind::Semaphore),
        _ => None,
    }
}

const KINDS: [LockKind; 3] = [LockKind::Mutex, LockKind::RwMutex, LockKind::Semaphore];

impl Sql {
    fn q(&self, text: &Arc<str>) -> sqlx::query::Query<'static, Pg, sqlx::postgres::PgArguments> {
        sqlx::query(AssertSqlSafe(Arc::clone(text))).persistent(self.persistent)
    }

    fn qa<T>(
        &self,
        text: &Arc<str>,
    ) -> sqlx::query::QueryAs<'static, Pg, T, sqlx::postgres::PgArguments>
    where
        T: for<'r> sqlx::FromRow<'r, sqlx::postgres::PgRow>,
    {
        sqlx::query_as(AssertSqlSafe(Arc::clone(text))).persistent(self.persistent)
    }

    /// `prefix` is validated by [`PostgresConfig::validate`](crate::PostgresConfig::validate);
    /// `advisory` is the namespace in advisory mode.
    pub(crate) fn new(prefix: &str, advisory: Option<i32>) -> Sql {
        let locks = format!("{prefix}locks");
        let leases = format!("{prefix}leases");
        let claims = format!("{prefix}claims");
        let live = live(advisory);
        // Whether a deleted lease's session is to be ended: only advisory-mode clients end
        // sessions (they need the advisory lock the session holds). A lease-mode client needs
        // table privileges only and never ends an advisory client's session (review PG-1);
        // that session's holder finds out at its next extension.
        let ends = match advisory {
            Some(_) => live.clone(),
            None => "FALSE".to_owned(),
        };
        // A lease-mode client leaves expired rows of advisory-mode holders in place: advisory
        // contenders find a hung holder's session through its row, and end it. Expired rows
        // never count as held.
        let reapable = match advisory {
            Some(_) => "",
            None => " AND l.pid IS NULL",
        };
        let key = "name = $1 AND kind = $2";
        Sql {
            persistent: advisory.is_some(),
            channel: format!("{prefix}changes"),
            tables: [
                locks.clone(),
                leases.clone(),
                claims.clone(),
                format!("{prefix}leases_akey"),
            ],
            migrate: s(format!(
                "CREATE TABLE IF NOT EXISTS {locks} (
                    name text NOT NULL, kind text NOT NULL, lim bigint NOT NULL,
                    last_token bigint NOT NULL DEFAULT 0, last_claim bigint NOT NULL DEFAULT 0,
                    PRIMARY KEY (name, kind));
                 CREATE TABLE IF NOT EXISTS {leases} (
                    name text NOT NULL, kind text NOT NULL, lease_id text NOT NULL,
                    owner text NOT NULL, exclusive boolean NOT NULL, permits bigint NOT NULL,
                    weight bigint NOT NULL, token bigint NOT NULL, expires_at bigint NOT NULL,
                    meta_keys text[] NOT NULL, meta_values text[] NOT NULL,
                    pid integer, akey integer,
                    PRIMARY KEY (name, kind, lease_id));
                 CREATE INDEX IF NOT EXISTS {prefix}leases_akey ON {leases} (akey);
                 CREATE TABLE IF NOT EXISTS {claims} (
                    name text NOT NULL, kind text NOT NULL, lease_id text NOT NULL,
                    weight bigint NOT NULL, ord bigint NOT NULL, expires_at bigint NOT NULL,
                    PRIMARY KEY (name, kind, lease_id));"
            )),
            upsert_lock: s(format!(
                "INSERT INTO {locks} (name, kind, lim) VALUES ($1, $2, $3) \
                 ON CONFLICT (name, kind) DO UPDATE SET lim = EXCLUDED.lim WHERE FALSE"
            )),
            lock_row: s(format!(
                "SELECT lim, {NOW} FROM {locks} WHERE {key} FOR UPDATE"
            )),
            reap_leases: s(format!(
                "DELETE FROM {leases} l WHERE l.name = $1 AND l.kind = $2 \
                 AND l.expires_at <= $3{reapable} RETURNING l.pid, {ends}"
            )),
            reap_claims: s(format!(
                "DELETE FROM {claims} WHERE {key} AND expires_at <= $3"
            )),
            held: s(format!(
                "SELECT coalesce(sum(weight), 0)::bigint, min(expires_at), count(*) \
                 FROM {leases} WHERE {key} AND expires_at > $3"
            )),
            claims: s(format!(
                "SELECT lease_id, weight, ord, expires_at FROM {claims} WHERE {key}"
            )),
            set_limit: s(format!("UPDATE {locks} SET lim = $3 WHERE {key}")),
            next_token: s(format!(
                "UPDATE {locks} SET last_token = greatest(last_token + 1, {NOW}) \
                 WHERE {key} RETURNING last_token"
            )),
            insert_lease: s(format!(
                "INSERT INTO {leases} (name, kind, lease_id, owner, exclusive, permits, weight, \
                 token, expires_at, meta_keys, meta_values, pid, akey) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)"
            )),
            delete_claim: s(format!(
                "DELETE FROM {claims} WHERE {key} AND lease_id = $3"
            )),
            colliding: s(format!(
                "SELECT l.pid FROM {leases} l WHERE l.akey = $1 AND l.expires_at <= {NOW} \
                 AND l.pid IS NOT NULL AND {live}"
            )),
            adopt: s(format!(
                "UPDATE {leases} SET expires_at = $4 + $5, pid = $6, akey = $7 \
                 WHERE {key} AND lease_id = $3 RETURNING token"
            )),
            refresh_claim: s(format!(
                "UPDATE {claims} SET expires_at = $4 WHERE {key} AND lease_id = $3"
            )),
            next_claim: s(format!(
                "UPDATE {locks} SET last_claim = last_claim + 1 WHERE {key} RETURNING last_claim"
            )),
            insert_claim: s(format!(
                "INSERT INTO {claims} (name, kind, lease_id, weight, ord, expires_at) \
                 VALUES ($1, $2, $3, $4, $5, $6)"
            )),
            release: s(format!(
                "DELETE FROM {leases} l WHERE l.name = $1 AND l.kind = $2 AND l.lease_id = $3 \
                 RETURNING l.expires_at > {NOW}, l.pid, {ends}"
            )),
            extend: s(format!(
                "UPDATE {leases} l SET expires_at = {NOW} + $4 \
                 WHERE l.name = $1 AND l.kind = $2 AND l.lease_id = $3 \
                 AND l.expires_at > {NOW} AND {live} RETURNING l.token"
            )),
            inspect: s(format!(
                "SELECT l.kind, l.owner, l.token, l.exclusive, l.permits, l.expires_at - {NOW}, \
                 l.meta_keys, l.meta_values FROM {leases} l \
                 WHERE l.name = $1 AND l.expires_at > {NOW} ORDER BY l.token"
            )),
            lock_rows_of_name: s(format!(
                "SELECT kind FROM {locks} WHERE name = $1 ORDER BY kind FOR UPDATE"
            )),
            force_leases: s(match advisory {
                Some(_) => format!(
                    "DELETE FROM {leases} l WHERE l.name = $1 \
                     RETURNING l.expires_at > {NOW}, l.pid, {ends}"
                ),
                // Lease mode ends no session: an advisory-mode holder's lease is expired in
                // place instead of deleted, so advisory contenders (woken by the notification)
                // reap it and end its session; the holder's next extension fails.
                None => format!(
                    "WITH gone AS (DELETE FROM {leases} l WHERE l.name = $1 AND l.pid IS NULL \
                     RETURNING l.expires_at > {NOW} AS valid, l.pid), \
                     cut AS (UPDATE {leases} l SET expires_at = {NOW} WHERE l.name = $1 \
                     AND l.pid IS NOT NULL AND l.expires_at > {NOW} RETURNING TRUE AS valid, l.pid) \
                     SELECT valid, pid, FALSE FROM gone UNION ALL SELECT valid, pid, FALSE FROM cut"
                ),
            }),
            force_claims: s(format!("DELETE FROM {claims} WHERE name = $1")),
            sweep_pick: s(format!(
                "SELECT l.name, l.kind FROM {locks} l WHERE l.last_token < {NOW} \
                 AND NOT EXISTS (SELECT 1 FROM {leases} x WHERE x.name = l.name AND x.kind = l.kind) \
                 AND NOT EXISTS (SELECT 1 FROM {claims} c WHERE c.name = l.name AND c.kind = l.kind) \
                 LIMIT $1 FOR UPDATE SKIP LOCKED"
            )),
            sweep_delete: s(format!(
                "DELETE FROM {locks} l USING unnest($1::text[], $2::text[]) AS p(name, kind) \
                 WHERE l.name = p.name AND l.kind = p.kind AND l.last_token < {NOW} \
                 AND NOT EXISTS (SELECT 1 FROM {leases} x WHERE x.name = l.name AND x.kind = l.kind) \
                 AND NOT EXISTS (SELECT 1 FROM {claims} c WHERE c.name = l.name AND c.kind = l.kind)"
            )),
        }
    }

    async fn notify(&self, conn: &mut PgConnection, key: &LockKey) -> sqlx::Result<()> {
        sqlx::query("SELECT pg_notify($1, $2)")
            .persistent(self.persistent)
            .bind(&self.channel)
            .bind(payload(key))
            .execute(conn)
            .await?;
        Ok(())
    }

    /// Creates the tables if they are missing, under a transaction-level advisory lock so many
    /// processes starting at once do not race on the catalog.
    ///
    /// When everything exists already nothing is run, so roles that may use the tables but
    /// not create objects (or own the tables) connect fine.
    pub(crate) async fn migrate(&self, conn: &mut PgConnection) -> sqlx::Result<()> {
        // One transaction even for the check: behind PgBouncer's transaction pooling, a
        // statement outside a transaction may have its parse and its execution sent to two
        // different server connections.
        let mut tx = begin(conn).await?;
        let (present,): (bool,) = sqlx::query_as(
            "SELECT to_regclass($1) IS NOT NULL AND to_regclass($2) IS NOT NULL \
             AND to_regclass($3) IS NOT NULL AND to_regclass($4) IS NOT NULL",
        )
        .persistent(self.persistent)
        .bind(&self.tables[0])
        .bind(&self.tables[1])
        .bind(&self.tables[2])
        .bind(&self.tables[3])
        .fetch_one(&mut *tx)
        .await?;
        if present {
            return tx.commit().await;
        }
        sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))")
            .persistent(self.persistent)
            .bind(format!("lock-postgres migration {}", self.channel))
            .execute(&mut *tx)
            .await?;
        sqlx::raw_sql(AssertSqlSafe(Arc::clone(&self.migrate)))
            .execute(&mut *tx)
            .await?;
        tx.commit().await
    }

    /// The weighted rule, in one transaction on `conn` (see the crate docs).
    pub(crate) async fn acquire(
        &self,
        conn: &mut PgConnection,
        request: &AcquireRequest,
        grant: Grant,
    ) -> Result<(Acquired, bool)> {
        let outcome = self.acquire_tx(conn, request, grant).await;
        match outcome {
            Ok(Ok(result)) => Ok(result),
            Ok(Err(e)) => Err(e),
            Err(e) => Err(unavailable(e)),
        }
    }

    #[allow(clippy::too_many_lines)]
    async fn acquire_tx(
        &self,
        conn: &mut PgConnection,
        request: &AcquireRequest,
        grant: Grant,
    ) -> sqlx::Result<Result<(Acquired, bool)>> {
        let key = &request.key;
        let stored_name = stored(key.name());
        let (name, kind) = (&*stored_name, key.kind().as_str());
        let lease_id = request.lease_id.to_ulid_string();
        let limit = i64::from(request.limit);
        let weight = i64::try_from(request.weight()).unwrap_or(i64::MAX);

        let mut tx = begin(conn).await?;
        self.q(&self.upsert_lock)
            .bind(name)
            .bind(kind)
            .bind(limit)
            .execute(&mut *tx)
            .await?;
        let (stored, now): (i64, i64) = self
            .qa(&self.lock_row)
            .bind(name)
            .bind(kind)
            .fetch_one(&mut *tx)
            .await?;
        let reaped: Vec<(Option<i32>, bool)> = self
            .qa(&self.reap_leases)
            .bind(name)
            .bind(kind)
            .bind(now)
            .fetch_all(&mut *tx)
            .await?;
        let mut live_pids: Vec<i32> = reaped
            .iter()
            .filter_map(|(pid, live)| pid.filter(|_| *live))
            .collect();
        if let Grant::Denied { akey } = grant {
            // A hung holder of another lock whose key collides with ours blocks us too.
            let colliding: Vec<(Option<i32>,)> = self
                .qa(&self.colliding)
                .bind(akey)
                .fetch_all(&mut *tx)
                .await?;
            live_pids.extend(colliding.into_iter().filter_map(|(pid,)| pid));
        }
        // Never end the session this transaction runs on (a retry adopting its own expired
        // lease on the lease's session).
        if let Grant::Allowed { pid: Some(own), .. } = grant {
            live_pids.retain(|pid| *pid != own);
        }
        // Hung holders: their leases expired but their sessions still hold the advisory lock.
        // A session that did not end within the wait keeps its record (the reap is rolled
        // back), so a later contender ends it (review finding PG-10).
        if !terminate(&mut tx, &live_pids, crate::TERMINATE_WAIT_MS).await? {
            tx.rollback().await?;
            let retry_after = Some(Duration::from_millis(100));
            return Ok(Ok((Acquired::Busy { retry_after }, false)));
        }
        let terminated = !live_pids.is_empty();
        let claims_reaped = self
            .q(&self.reap_claims)
            .bind(name)
            .bind(kind)
            .bind(now)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        let changed = !reaped.is_empty() || claims_reaped > 0;

        // A retry of a request whose grant committed but whose answer was lost (a killed
        // connection): the lease is already ours. Adopt it (with this session) rather than
        // count it against ourselves.
        if let Grant::Allowed { pid, akey } = grant {
            let adopted: Option<(i64,)> = self
                .qa(&self.adopt)
                .bind(name)
                .bind(kind)
                .bind(&lease_id)
                .bind(now)
                .bind(micros(request.ttl))
                .bind(pid)
                .bind(pid.map(|_| akey))
                .fetch_optional(&mut *tx)
                .await?;
            if let Some((token,)) = adopted {
                if changed {
                    self.notify(&mut tx, key).await?;
                }
                tx.commit().await?;
                let token = FencingToken(u64::try_from(token).unwrap_or(0));
                return Ok(Ok((Acquired::Granted { token }, terminated)));
            }
        }
        let (held, first_lease_expiry, lease_count): (i64, Option<i64>, i64) = self
            .qa(&self.held)
            .bind(name)
            .bind(kind)
            .bind(now)
            .fetch_one(&mut *tx)
            .await?;
        let claims: Vec<(String, i64, i64, i64)> = self
            .qa(&self.claims)
            .bind(name)
            .bind(kind)
            .fetch_all(&mut *tx)
            .await?;

        if lease_count > 0 || !claims.is_empty() {
            if stored != limit {
                tx.rollback().await?;
                let stored = u32::try_from(stored).unwrap_or(u32::MAX);
                return Ok(Err(request.limit_mismatch(stored)));
            }
        } else if stored != limit {
            self.q(&self.set_limit)
                .bind(name)
                .bind(kind)
                .bind(limit)
                .execute(&mut *tx)
                .await?;
        }

        let mine = claims.iter().find(|c| c.0 == lease_id).map(|c| c.2);
        let ahead = claims
            .iter()
            .filter(|c| c.0 != lease_id && mine.is_none_or(|order| c.2 < order));
        let waiting: i64 = ahead.clone().map(|c| c.1).fold(0i64, i64::saturating_add);
        let fits = held.saturating_add(waiting).saturating_add(weight) <= limit;

        if let (true, Grant::Allowed { pid, akey }) = (fits, grant) {
            let (token,): (i64,) = self
                .qa(&self.next_token)
                .bind(name)
                .bind(kind)
                .fetch_one(&mut *tx)
                .await?;
            // Escaped like names: PostgreSQL text cannot hold NUL (review finding PG-8).
            let (keys, values): (Vec<String>, Vec<String>) = request
                .metadata
                .iter()
                .map(|(k, v)| (self::stored(k).into_owned(), self::stored(v).into_owned()))
                .unzip();
            self.q(&self.insert_lease)
                .bind(name)
                .bind(kind)
                .bind(&lease_id)
                .bind(self::stored(&request.owner))
                .bind(request.mode == Mode::Exclusive)
                .bind(i64::from(request.permits))
                .bind(weight)
                .bind(token)
                .bind(now.saturating_add(micros(request.ttl)))
                .bind(keys)
                .bind(values)
                .bind(pid)
                .bind(pid.map(|_| akey))
                .execute(&mut *tx)
                .await?;
            self.q(&self.delete_claim)
                .bind(name)
                .bind(kind)
                .bind(&lease_id)
                .execute(&mut *tx)
                .await?;
            if changed {
                self.notify(&mut tx, key).await?;
            }
            tx.commit().await?;
            let token = FencingToken(u64::try_from(token).unwrap_or(0));
            return Ok(Ok((Acquired::Granted { token }, terminated)));
        }

        let first_expiry = ahead.map(|c| c.3).chain(first_lease_expiry).min();
        if let Some(claim_ttl) = request.claim {
            let expires = now.saturating_add(micros(claim_ttl));
            if mine.is_some() {
                self.q(&self.refresh_claim)
                    .bind(name)
                    .bind(kind)
                    .bind(&lease_id)
                    .bind(expires)
                    .execute(&mut *tx)
                    .await?;
            } else {
                let (order,): (i64,) = self
                    .qa(&self.next_claim)
                    .bind(name)
                    .bind(kind)
                    .fetch_one(&mut *tx)
                    .await?;
                self.q(&self.insert_claim)
                    .bind(name)
                    .bind(kind)
                    .bind(&lease_id)
                    .bind(weight)
                    .bind(order)
                    .bind(expires)
                    .execute(&mut *tx)
                    .await?;
            }
        }
        if changed {
            self.notify(&mut tx, key).await?;
        }
        tx.commit().await?;
        let retry_after = if fits {
            // Denied although the table allows it: the advisory lock is still held by a
            // session that is going away; try again soon.
            Some(Duration::from_millis(20))
        } else {
            first_expiry
                .map(|at| Duration::from_micros(u64::try_from(at.saturating_sub(now)).unwrap_or(0)))
        };
        Ok(Ok((Acquired::Busy { retry_after }, terminated)))
    }

    /// Deletes the lease and claim with this id and signals the change.
    pub(crate) async fn release(
        &self,
        conn: &mut PgConnection,
        key: &LockKey,
        lease: LeaseId,
    ) -> Result<Deleted> {
        self.release_tx(conn, key, lease).await.map_err(unavailable)
    }

    async fn release_tx(
        &self,
        conn: &mut PgConnection,
        key: &LockKey,
        lease: LeaseId,
    ) -> sqlx::Result<Deleted> {
        let stored_name = stored(key.name());
        let (name, kind) = (&*stored_name, key.kind().as_str());
        let lease_id = lease.to_ulid_string();
        let mut tx = begin(conn).await?;
        let rows: Vec<(bool, Option<i32>, bool)> = self
            .qa(&self.release)
            .bind(name)
            .bind(kind)
            .bind(&lease_id)
            .fetch_all(&mut *tx)
            .await?;
        let claims = self
            .q(&self.delete_claim)
            .bind(name)
            .bind(kind)
            .bind(&lease_id)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        let changed = !rows.is_empty() || claims > 0;
        if changed {
            self.notify(&mut tx, key).await?;
        }
        tx.commit().await?;
        Ok(Deleted {
            valid: rows.iter().any(|r| r.0),
            live_pids: rows
                .iter()
                .filter_map(|(_, pid, live)| pid.filter(|_| *live))
                .collect(),
            changed,
        })
    }

    /// Moves a valid lease's expiry to now + `ttl`.
    pub(crate) async fn extend(
        &self,
        conn: &mut PgConnection,
        key: &LockKey,
        lease: LeaseId,
        ttl: Duration,
    ) -> Result<()> {
        // In a transaction, like every statement here: see `migrate`.
        let mut tx = begin(conn).await.map_err(unavailable)?;
        let rows: Vec<(i64,)> = self
            .qa(&self.extend)
            .bind(stored(key.name()))
            .bind(key.kind().as_str())
            .bind(lease.to_ulid_string())
            .bind(micros(ttl))
            .fetch_all(&mut *tx)
            .await
            .map_err(unavailable)?;
        tx.commit().await.map_err(unavailable)?;
        if rows.is_empty() {
            Err(Error::Expired {
                name: key.name().to_owned(),
            })
        } else {
            Ok(())
        }
    }

    /// Deletes up to `batch` lock rows that have no lease, no claim, and a last token the
    /// server clock has passed; the number deleted.
    ///
    /// Two statements in one transaction: the first locks candidate rows (skipping rows other
    /// transactions have locked), the second deletes those that still qualify. Leases and
    /// claims are only ever inserted under their lock row's lock, so the second statement's
    /// fresh snapshot sees every one of them. A re-created row starts from the server clock
    /// (`greatest(last_token + 1, clock)`), above every token of the deleted row.
    pub(crate) async fn clean_up(&self, conn: &mut PgConnection, batch: i64) -> Result<usize> {
        self.clean_up_tx(conn, batch).await.map_err(unavailable)
    }

    async fn clean_up_tx(&self, conn: &mut PgConnection, batch: i64) -> sqlx::Result<usize> {
        let mut tx = begin(conn).await?;
        let picked: Vec<(String, String)> = self
            .qa(&self.sweep_pick)
            .bind(batch)
            .fetch_all(&mut *tx)
            .await?;
        if picked.is_empty() {
            tx.commit().await?;
            return Ok(0);
        }
        let (names, kinds): (Vec<String>, Vec<String>) = picked.into_iter().unzip();
        let deleted = self
            .q(&self.sweep_delete)
            .bind(names)
            .bind(kinds)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        tx.commit().await?;
        Ok(usize::try_from(deleted).unwrap_or(usize::MAX))
    }

    /// The valid leases of every kind named `name`, by token.
    pub(crate) async fn inspect(
        &self,
        conn: &mut PgConnection,
        name: &str,
    ) -> Result<Vec<LockInfo>> {
        type Row = (
            String,
            String,
            i64,
            bool,
            i64,
            i64,
            Vec<String>,
            Vec<String>,
        );
        // In a transaction, like every statement here: see `migrate`.
        let mut tx = begin(conn).await.map_err(unavailable)?;
        let rows: Vec<Row> = self
            .qa(&self.inspect)
            .bind(stored(name))
            .fetch_all(&mut *tx)
            .await
            .map_err(unavailable)?;
        tx.commit().await.map_err(unavailable)?;
        let wall = SystemTime::now();
        let mut holders = Vec::with_capacity(rows.len());
        for (kind, owner, token, exclusive, permits, remaining, keys, values) in rows {
            let Some(kind) = parse_kind(&kind) else {
                continue;
            };
            let key = LockKey::new(name, kind)?;
            let unstored_or = |text: String| unstored(&text).unwrap_or(text);
            let owner = unstored_or(owner);
            let metadata = keys
                .into_iter()
                .zip(values)
                .map(|(k, v)| (unstored_or(k), unstored_or(v)))
                .collect();
            let remaining = Duration::from_micros(u64::try_from(remaining).unwrap_or(0));
            holders.push(LockInfo::new(
                &key,
                owner,
                FencingToken(u64::try_from(token).unwrap_or(0)),
                if exclusive {
                    Mode::Exclusive
                } else {
                    Mode::Shared
                },
                u32::try_from(permits).unwrap_or(u32::MAX),
                wall + remaining,
                metadata,
            ));
        }
        Ok(holders)
    }

    /// Deletes every lease and claim named `name`; the valid leases deleted and the sessions
    /// that still hold their advisory locks.
    pub(crate) async fn force_release(
        &self,
        conn: &mut PgConnection,
        name: &str,
    ) -> Result<(usize, Vec<i32>)> {
        self.force_tx(conn, name).await.map_err(unavailable)
    }

    async fn force_tx(
        &self,
        conn: &mut PgConnection,
        name: &str,
    ) -> sqlx::Result<(usize, Vec<i32>)> {
        let db_name = stored(name);
        let mut tx = begin(conn).await?;
        let _: Vec<(String,)> = self
            .qa(&self.lock_rows_of_name)
            .bind(&*db_name)
            .fetch_all(&mut *tx)
            .await?;
        let rows: Vec<(bool, Option<i32>, bool)> = self
            .qa(&self.force_leases)
            .bind(&*db_name)
            .fetch_all(&mut *tx)
            .await?;
        self.q(&self.force_claims)
            .bind(&*db_name)
            .execute(&mut *tx)
            .await?;
        let pids: Vec<i32> = rows
            .iter()
            .filter_map(|(_, pid, live)| pid.filter(|_| *live))
            .collect();
        if !terminate(&mut tx, &pids, crate::TERMINATE_WAIT_MS).await? {
            // Keep the records of sessions that did not end (review finding PG-10).
            tx.rollback().await?;
            return Err(sqlx::Error::Protocol(
                "a holder's session did not end within the wait".to_owned(),
            ));
        }
        for kind in KINDS {
            if let Ok(key) = LockKey::new(name, kind) {
                self.notify(&mut tx, &key).await?;
            }
        }
        tx.commit().await?;
        Ok((rows.iter().filter(|r| r.0).count(), pids))
    }
}

/// Ends the sessions `pids` (advisory mode: sessions of expired or force-released leases that
/// still hold their advisory locks). Needs superuser, membership in `pg_signal_backend`, or the
/// sessions' own role.
///
/// Waits up to `wait_ms` for them to end (so their advisory locks are free when this returns):
/// PostgreSQL 14 or later.
/// [`terminate`] in a transaction of its own, so the library's statement timeout applies (not
/// a DBA's shorter default, which would cut the wait short).
pub(crate) async fn terminate_now(
    conn: &mut PgConnection,
    pids: &[i32],
    wait_ms: i64,
) -> sqlx::Result<()> {
    if pids.is_empty() {
        return Ok(());
    }
    let mut tx = begin(conn).await?;
    terminate(&mut tx, pids, wait_ms).await?;
    tx.commit().await
}

/// Ends the sessions `pids`; true when every one of them ended within `wait_ms` (PostgreSQL's
/// `pg_terminate_backend` answers false for a session that did not, review finding PG-10).
///
/// A named statement: only advisory mode ends sessions (lease mode never does, review finding
/// PG-1), and advisory mode needs session-level connections anyway (PG-11).
pub(crate) async fn terminate(
    conn: &mut PgConnection,
    pids: &[i32],
    wait_ms: i64,
) -> sqlx::Result<bool> {
    if pids.is_empty() {
        return Ok(true);
    }
    let (ended,): (Option<bool>,) =
        sqlx::query_as("SELECT bool_and(pg_terminate_backend(p, $2)) FROM unnest($1::int4[]) AS p")
            .bind(pids)
            .bind(wait_ms)
            .fetch_one(conn)
            .await?;
    Ok(ended.unwrap_or(true))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_names_round_trip() {
        for name in [
            "plain",
            "back\\slash",
            "nul\0byte",
            "\\0",
            "\0\\",
            "x\\\\0y",
        ] {
            let text = stored(name);
            assert!(!text.contains('\0'), "{name:?} -> {text:?}");
            assert_eq!(unstored(&text).as_deref(), Some(name));
        }
        assert_eq!(stored("plain"), Cow::Borrowed("plain"));
        assert_eq!(unstored("bad\\x"), None);
    }

    #[test]
    fn payloads_name_their_key() {
        let key = LockKey::new("a:b\0c", LockKind::Semaphore).unwrap();
        assert_eq!(parse_payload(&payload(&key)), Some(key));
        assert_eq!(parse_payload("table:x"), None);
    }
}
