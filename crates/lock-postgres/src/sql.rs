//! The tables and the statements on them, shared by both modes.
//!
//! Times are the server's `clock_timestamp()` in microseconds since the epoch, stored as
//! `bigint` (so no date-time crate is needed on the client). Every statement that decides
//! something about a lock first locks the lock's row in `{prefix}locks` (`FOR UPDATE`), so
//! concurrent acquirers of one lock serialize; that row also holds the token counter, the claim
//! counter and the stored limit. Tokens are `greatest(last + 1, server clock µs)`, so a row
//! deleted by the clean-up (or lost with a commit) never makes a token go back.

use lock_core::{
    AcquireRequest, Acquired, Error, FencingToken, LeaseId, ListCursor, ListRequest, LockInfo,
    LockKey, LockKind, LockPage, MAX_NAME_LEN, Mode, Result,
};
use sqlx::{AssertSqlSafe, PgConnection, Postgres as Pg, Row};
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
    if let Some(db) = e.as_database_error()
        && let Some(code) = db.code()
    {
        // The session guard's error (`{prefix}session_v1`, review finding PG-7): a
        // configuration problem, not a passing outage, so it is not retried.
        if code == POOLED {
            return Error::config(format!(
                "PgBouncer transaction pooling (or another transaction-level pooler) detected: {}",
                db.message()
            ));
        }
        // sqlx's named prepared statements clashing with other clients' on a shared server
        // connection (review finding PG-R4-3): a statement prepared on one server connection
        // is missing on the next, or its name is taken there by another client's statement.
        // Only a pooler that shares server connections between transactions does that (the
        // session guard never gets to run then).
        if PREPARED_CLASH.contains(&&*code) && db.message().contains("prepared statement") {
            return Error::config(format!(
                "PgBouncer transaction pooling (or another transaction-level pooler) detected: \
                 the server answered \"{}\" (SQLSTATE {code}): the server connection is shared \
                 with other clients, whose prepared statements clash with ours; advisory mode \
                 needs a session of its own per lease. Use LOCK_POSTGRES_MODE=lease through the \
                 pooler, or connect advisory mode straight to the server or through session \
                 pooling",
                db.message()
            ));
        }
    }
    Error::unavailable("postgres", SqlxError(e))
}

/// A sqlx error as the source of [`Error::ProviderUnavailable`], saying only what sqlx adds to
/// its own source (review finding PG-R4-5, DESIGN §4 "no error message repeats its source's
/// text"): sqlx's messages embed their source ("error returned from database: {the server's
/// message}", "error communicating with database: {the I/O error}") and return it as their
/// source too, so a chain printed link by link said everything twice. The chain is kept: this
/// error's source is sqlx's.
#[derive(Debug)]
struct SqlxError(sqlx::Error);

impl std::fmt::Display for SqlxError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let text = self.0.to_string();
        if let Some(source) = std::error::Error::source(&self.0) {
            let source = source.to_string();
            if let Some(head) = text.strip_suffix(source.as_str()) {
                let head = head.trim_end().trim_end_matches(':').trim_end();
                return f.write_str(if head.is_empty() {
                    "database client error"
                } else {
                    head
                });
            }
        }
        f.write_str(&text)
    }
}

impl std::error::Error for SqlxError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        std::error::Error::source(&self.0)
    }
}

/// The SQLSTATE of the session guard (`{prefix}session_v1`).
const POOLED: &str = "LKPB1";

/// The SQLSTATEs of a prepared statement that already exists (42P05), does not exist (26000),
/// or is another one than the client prepared (08P01, "bind message supplies N parameters, but
/// prepared statement ... requires M").
const PREPARED_CLASH: [&str; 3] = ["42P05", "26000", "08P01"];

/// The statements, with the table names and (in advisory mode) the liveness test filled in.
pub(crate) struct Sql {
    /// Named (cached) prepared statements; off in lease mode, so the statements also work
    /// through PgBouncer in transaction pooling mode.
    persistent: bool,
    /// Relaxed durability (review design D4): grants (and advisory extensions) commit
    /// asynchronously, set per statement.
    relaxed: bool,
    pub(crate) channel: String,
    /// The three tables, the index and the functions, for the migration's existence check.
    tables: [String; 4],
    functions: [String; 4],
    namespace: Option<i32>,
    prefix: String,
    pub(crate) migrate: Arc<str>,
    /// Advisory mode: the server-side waits and the park, behind the session guard.
    pub(crate) wait_exclusive: Arc<str>,
    pub(crate) wait_shared: Arc<str>,
    pub(crate) park: Arc<str>,
    /// The grant rule and the release, as server-side functions (one statement each).
    acquire: Arc<str>,
    release: Arc<str>,
    extend: Arc<str>,
    /// Advisory mode: extend on the lease's own session, which proves it is alive.
    extend_own: Arc<str>,
    inspect: Arc<str>,
    /// `list`: the names after a position, in byte order, each with whether it has a valid
    /// lease; and the valid leases of some names.
    list_names: Arc<str>,
    list_holders: Arc<str>,
    /// `list`'s index, which the migration of an earlier version did not create.
    name_index: String,
    create_name_index: Arc<str>,
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

/// The server-side functions (`{prefix}acquire_v1`, `{prefix}release_v1`,
/// `{prefix}unlock_v1`), with the table names to fill in.
const FUNCTIONS: &str = include_str!("functions.sql");

/// The acquire statement's row: status, token, wait (µs), sessions to end, stored limit.
type AcquireRow = (
    String,
    Option<i64>,
    Option<i64>,
    Option<Vec<i32>>,
    Option<i64>,
);

/// Lease mode's one-round-trip simple queries start with this (one implicit transaction): READ
/// COMMITTED whatever the default isolation (review finding PG-4), and the library's own
/// statement timeout whatever a DBA's default (PG-3).
const SIMPLE_PREAMBLE: &str =
    "SET TRANSACTION ISOLATION LEVEL READ COMMITTED; SET LOCAL statement_timeout = '10s';";

/// A text value as an SQL literal: an escape string (`E'...'`) with `\` and `'` doubled, which
/// is read the same whatever `standard_conforming_strings` says. Every text the library sends
/// is free of NUL (names, owners and metadata are escaped by [`stored`]), and the client
/// encoding is UTF-8, so nothing can end the literal early.
fn text_literal(text: &str) -> String {
    format!("E'{}'", text.replace('\\', "\\\\").replace('\'', "''"))
}

fn array_literal(items: &[String]) -> String {
    if items.is_empty() {
        return "'{}'::text[]".to_owned();
    }
    let items: Vec<String> = items.iter().map(|t| text_literal(t)).collect();
    format!("ARRAY[{}]::text[]", items.join(", "))
}

/// The one row of a statement's complete answer (read to its end, so its commit is done).
fn one_row<R>(rows: Vec<R>) -> sqlx::Result<R> {
    rows.into_iter().next().ok_or(sqlx::Error::RowNotFound)
}

/// What the acquire statement does with the advisory lock.
#[derive(Clone, Copy)]
pub(crate) enum Take {
    /// Lease mode: no advisory lock.
    None = 0,
    /// Advisory mode: try to take it at once.
    Try = 1,
    /// Advisory mode: the session holds it already (a wait got it, or a retry adopts).
    Held = 2,
}

/// What the acquire statement decided.
pub(crate) enum Outcome {
    /// Granted, or busy with the advisory lock obtained (or in lease mode).
    Done(Acquired),
    /// Advisory mode: the advisory lock was not obtained (the claim is recorded); the caller
    /// may wait for it on the server.
    Blocked(Option<Duration>),
    /// Advisory mode: these sessions of expired leases still hold the advisory lock; the
    /// caller ends them (outside any transaction) and tries again.
    End(Vec<i32>),
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
    pub(crate) fn new(prefix: &str, advisory: Option<i32>, relaxed: bool) -> Sql {
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
        // Relaxed durability (review design D4) in advisory mode: the grant and extension
        // statements on the dedicated sessions commit without waiting for their WAL flush,
        // set in the statement itself (transaction-local, no extra round trip), so nothing is
        // left on the session (review finding PG-R4-3: a session-level setting would stay on a
        // server connection a pooler shares). `synchronous_commit` is read at commit, so it
        // applies to the statement's own implicit transaction wherever it is set in it.
        let relaxed_sync = "(SELECT set_config('synchronous_commit', 'off', true)) relaxed";
        let (relaxed_from, relaxed_update) = if relaxed {
            (format!("{relaxed_sync}, "), format!("FROM {relaxed_sync} "))
        } else {
            (String::new(), String::new())
        };
        let functions = FUNCTIONS
            .replace("{prefix}", prefix)
            .replace("{locks}", &locks)
            .replace("{leases}", &leases)
            .replace("{claims}", &claims);
        let create_name_index = format!(
            "CREATE INDEX IF NOT EXISTS {prefix}leases_name_c ON {leases} (name COLLATE \"C\")"
        );
        Sql {
            persistent: advisory.is_some(),
            relaxed,
            namespace: advisory,
            prefix: prefix.to_owned(),
            functions: [
                format!("{prefix}acquire_v1"),
                format!("{prefix}release_v1"),
                format!("{prefix}unlock_v1"),
                format!("{prefix}session_v1"),
            ],
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
                 {create_name_index};
                 CREATE TABLE IF NOT EXISTS {claims} (
                    name text NOT NULL, kind text NOT NULL, lease_id text NOT NULL,
                    weight bigint NOT NULL, ord bigint NOT NULL, expires_at bigint NOT NULL,
                    PRIMARY KEY (name, kind, lease_id));
                 {functions}"
            )),
            wait_exclusive: s(format!(
                "SELECT pg_advisory_lock(n, $3) \
                 FROM (SELECT set_config('lock_timeout', $1, true)) s, {prefix}session_v1($4, $2) n"
            )),
            wait_shared: s(format!(
                "SELECT pg_advisory_lock_shared(n, $3) \
                 FROM (SELECT set_config('lock_timeout', $1, true)) s, {prefix}session_v1($4, $2) n"
            )),
            park: s(format!(
                "SELECT pg_advisory_unlock_all(), set_config('lock_timeout', '0', false) \
                 FROM {prefix}session_v1($1, 0) n"
            )),
            acquire: s(format!(
                "SELECT o_status, o_token, o_wait, o_pids, o_lim FROM {relaxed_from}\
                 {prefix}acquire_v1($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, \
                 {prefix}session_v1($18, $13), $14, $15, $16, $17)"
            )),
            release: s(format!(
                "SELECT o_valid, o_changed, o_pids FROM {prefix}release_v1(\
                 $1, $2, $3, {prefix}session_v1($8, $4), $5, $6, $7)"
            )),
            extend: s(format!(
                "UPDATE {leases} l SET expires_at = {NOW} + $4 \
                 WHERE l.name = $1 AND l.kind = $2 AND l.lease_id = $3 \
                 AND l.expires_at > {NOW} AND {live} RETURNING l.token"
            )),
            extend_own: s(format!(
                "UPDATE {leases} l SET expires_at = {NOW} + $4 {relaxed_update}\
                 WHERE l.name = $1 AND l.kind = $2 AND l.lease_id = $3 \
                 AND l.expires_at > {NOW} AND l.pid = {prefix}session_v1($5, pg_backend_pid()) \
                 RETURNING l.token"
            )),
            inspect: s(format!(
                "SELECT l.kind, l.owner, l.token, l.exclusive, l.permits, l.expires_at - {NOW}, \
                 l.meta_keys, l.meta_values FROM {leases} l \
                 WHERE l.name = $1 AND l.expires_at > {NOW} ORDER BY l.token"
            )),
            // One index probe per name (a loose index scan of the byte-ordered index), up to
            // the limit, and one per name for a valid lease (a scalar subquery, never turned
            // into a hashed scan of the whole table as an EXISTS may be): the work is bounded
            // by the limit, not by the leases under the prefix.
            list_names: s(format!(
                "WITH RECURSIVE seen(name) AS ( \
                 (SELECT l.name FROM {leases} l \
                 WHERE l.name COLLATE \"C\" >= $1 AND l.name COLLATE \"C\" < $2 \
                 ORDER BY l.name COLLATE \"C\" LIMIT 1) \
                 UNION ALL \
                 SELECT (SELECT l.name FROM {leases} l \
                 WHERE l.name COLLATE \"C\" > s.name AND l.name COLLATE \"C\" < $2 \
                 ORDER BY l.name COLLATE \"C\" LIMIT 1) \
                 FROM seen s WHERE s.name IS NOT NULL) \
                 SELECT s.name, coalesce((SELECT TRUE FROM {leases} v \
                 WHERE v.name = s.name AND v.expires_at > {NOW} LIMIT 1), FALSE) \
                 FROM seen s WHERE s.name IS NOT NULL LIMIT $3"
            )),
            list_holders: s(format!(
                "SELECT l.name, l.kind, l.owner, l.token, l.exclusive, l.permits, \
                 l.expires_at - {NOW}, l.meta_keys, l.meta_values FROM {leases} l \
                 WHERE l.name = ANY($1) AND l.expires_at > {NOW} \
                 ORDER BY l.name COLLATE \"C\", l.token"
            )),
            name_index: format!("{prefix}leases_name_c"),
            create_name_index: s(create_name_index),
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
        let (present, indexed): (bool, bool) = sqlx::query_as(
            "SELECT to_regclass($1) IS NOT NULL AND to_regclass($2) IS NOT NULL \
             AND to_regclass($3) IS NOT NULL AND to_regclass($4) IS NOT NULL \
             AND to_regproc($5) IS NOT NULL AND to_regproc($6) IS NOT NULL \
             AND to_regproc($7) IS NOT NULL AND to_regproc($8) IS NOT NULL, \
             to_regclass($9) IS NOT NULL",
        )
        .persistent(self.persistent)
        .bind(&self.tables[0])
        .bind(&self.tables[1])
        .bind(&self.tables[2])
        .bind(&self.tables[3])
        .bind(&self.functions[0])
        .bind(&self.functions[1])
        .bind(&self.functions[2])
        .bind(&self.functions[3])
        .bind(&self.name_index)
        .fetch_one(&mut *tx)
        .await?;
        if present {
            tx.commit().await?;
            if !indexed {
                // Tables of an earlier version: `list`'s index is added on its own. A role that
                // may not create it still connects; `list` then reads the leases table without
                // it (each page still reads a bounded number of names, each found by a scan).
                let _ = self.add_name_index(conn).await;
            }
            return Ok(());
        }
        self.run_migration(tx, &self.migrate).await
    }

    /// The text of `list`'s name scan ($1 the least stored name, $2 the bound above, $3 the
    /// most names).
    pub(crate) fn list_names_text(&self) -> String {
        self.list_names.to_string()
    }

    /// Creates `list`'s index on the leases table of an earlier version, under the migration's
    /// lock.
    async fn add_name_index(&self, conn: &mut PgConnection) -> sqlx::Result<()> {
        let tx = begin(conn).await?;
        self.run_migration(tx, &self.create_name_index).await
    }

    /// Runs `sql` in `tx` under the migration's lock (one migration at a time across clients),
    /// and commits.
    async fn run_migration(
        &self,
        mut tx: sqlx::Transaction<'_, sqlx::Postgres>,
        sql: &Arc<str>,
    ) -> sqlx::Result<()> {
        sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))")
            .persistent(self.persistent)
            .bind(format!("lock-postgres migration {}", self.channel))
            .execute(&mut *tx)
            .await?;
        sqlx::raw_sql(AssertSqlSafe(Arc::clone(sql)))
            .execute(&mut *tx)
            .await?;
        tx.commit().await
    }

    /// The weighted rule, in one statement on `conn` (see the crate docs): in advisory mode on
    /// the acquisition's own session, which `take`s the advisory lock (or has it already).
    pub(crate) async fn acquire(
        &self,
        conn: &mut PgConnection,
        request: &AcquireRequest,
        take: Take,
        akey: i32,
        pid: Option<i32>,
    ) -> Result<Outcome> {
        let key = &request.key;
        let (keys, values): (Vec<String>, Vec<String>) = request
            .metadata
            .iter()
            .map(|(k, v)| (stored(k).into_owned(), stored(v).into_owned()))
            .unzip();
        let query = self
            .qa::<AcquireRow>(&self.acquire)
            .bind(stored(key.name()))
            .bind(key.kind().as_str())
            .bind(i64::from(request.limit))
            .bind(request.lease_id.to_ulid_string())
            // Escaped like names: PostgreSQL text cannot hold NUL (review finding PG-8).
            .bind(stored(&request.owner))
            .bind(request.mode == Mode::Exclusive)
            .bind(i64::from(request.permits))
            .bind(i64::try_from(request.weight()).unwrap_or(i64::MAX))
            .bind(micros(request.ttl))
            .bind(request.claim.map(micros))
            .bind(keys)
            .bind(values)
            .bind(self.namespace)
            .bind(akey)
            .bind(take as i32)
            .bind(&self.channel)
            .bind(payload(key))
            .bind(pid);
        let row = if self.persistent {
            // All rows, that is up to the end of the statement: its commit. A grant must not
            // be reported before it is committed (fetch_one returns at the first row).
            query.fetch_all(&mut *conn).await.and_then(one_row)
        } else {
            drop(query);
            self.acquire_simple(conn, request).await
        };
        let (status, token, wait, pids, stored_limit) = row.map_err(unavailable)?;
        let wait = wait.map(|us| Duration::from_micros(u64::try_from(us).unwrap_or(0)));
        Ok(match status.as_str() {
            "granted" => match token.and_then(|t| u64::try_from(t).ok()) {
                Some(token) if token > 0 => Outcome::Done(Acquired::Granted {
                    token: FencingToken(token),
                }),
                // Never a made-up token: the grant's outcome is unknown to the caller then.
                _ => {
                    return Err(Error::unavailable(
                        "postgres",
                        format!("the server granted without a valid token ({token:?})"),
                    ));
                }
            },
            "busy" => Outcome::Done(Acquired::Busy { retry_after: wait }),
            "blocked" => Outcome::Blocked(wait),
            "end" => Outcome::End(pids.unwrap_or_default()),
            "limit" => {
                let stored = stored_limit.unwrap_or(0);
                return Err(request.limit_mismatch(u32::try_from(stored).unwrap_or(u32::MAX)));
            }
            other => {
                return Err(Error::unavailable(
                    "postgres",
                    std::io::Error::other(format!("unexpected acquire status {other:?}")),
                ));
            }
        })
    }

    /// Lease mode's acquire: one simple query (one round trip, no named statement, so it also
    /// works through PgBouncer's transaction pooling), its values as escaped literals.
    async fn acquire_simple(
        &self,
        conn: &mut PgConnection,
        request: &AcquireRequest,
    ) -> sqlx::Result<AcquireRow> {
        let key = &request.key;
        let (keys, values): (Vec<String>, Vec<String>) = request
            .metadata
            .iter()
            .map(|(k, v)| (stored(k).into_owned(), stored(v).into_owned()))
            .unzip();
        let args = [
            text_literal(&stored(key.name())),
            text_literal(key.kind().as_str()),
            i64::from(request.limit).to_string(),
            text_literal(&request.lease_id.to_ulid_string()),
            text_literal(&stored(&request.owner)),
            (if request.mode == Mode::Exclusive {
                "TRUE"
            } else {
                "FALSE"
            })
            .to_owned(),
            i64::from(request.permits).to_string(),
            i64::try_from(request.weight())
                .unwrap_or(i64::MAX)
                .to_string(),
            micros(request.ttl).to_string(),
            request
                .claim
                .map_or_else(|| "NULL".to_owned(), |c| micros(c).to_string()),
            array_literal(&keys),
            array_literal(&values),
            "NULL".to_owned(),
            "0".to_owned(),
            "0".to_owned(),
            text_literal(&self.channel),
            text_literal(&payload(key)),
        ];
        let text = format!(
            "{SIMPLE_PREAMBLE}{} SELECT o_status, o_token, o_wait, o_lim FROM {}acquire_v1({})",
            if self.relaxed {
                " SET LOCAL synchronous_commit = off;"
            } else {
                ""
            },
            self.prefix,
            args.join(", ")
        );
        let rows = sqlx::raw_sql(AssertSqlSafe(text))
            .fetch_all(&mut *conn)
            .await?;
        let row = one_row(rows)?;
        Ok((
            row.try_get(0)?,
            row.try_get(1)?,
            row.try_get(2)?,
            None,
            row.try_get(3)?,
        ))
    }

    /// Deletes the lease and claim with this id, and signals waiters if there are any. With
    /// `own_session` (advisory mode, on the lease's session) also ends the session's advisory
    /// lock. Committed asynchronously (see `release_v1`).
    pub(crate) async fn release(
        &self,
        conn: &mut PgConnection,
        key: &LockKey,
        lease: LeaseId,
        own_session: Option<i32>,
    ) -> Result<Deleted> {
        let pid = own_session;
        let own_session = own_session.is_some();
        let query = self
            .qa::<(bool, bool, Option<Vec<i32>>)>(&self.release)
            .bind(stored(key.name()))
            .bind(key.kind().as_str())
            .bind(lease.to_ulid_string())
            .bind(self.namespace)
            .bind(own_session)
            .bind(&self.channel)
            .bind(payload(key))
            .bind(pid);
        let row = if self.persistent {
            query.fetch_all(&mut *conn).await.and_then(one_row)
        } else {
            drop(query);
            let args = [
                text_literal(&stored(key.name())),
                text_literal(key.kind().as_str()),
                text_literal(&lease.to_ulid_string()),
                "NULL".to_owned(),
                "FALSE".to_owned(),
                text_literal(&self.channel),
                text_literal(&payload(key)),
            ];
            let text = format!(
                "{SIMPLE_PREAMBLE} SELECT o_valid, o_changed FROM {}release_v1({})",
                self.prefix,
                args.join(", ")
            );
            sqlx::raw_sql(AssertSqlSafe(text))
                .fetch_all(&mut *conn)
                .await
                .and_then(one_row)
                .and_then(|row| Ok((row.try_get(0)?, row.try_get(1)?, None)))
        };
        let (valid, changed, pids) = row.map_err(unavailable)?;
        Ok(Deleted {
            valid,
            live_pids: pids.unwrap_or_default(),
            changed,
        })
    }

    /// Advisory mode: moves a valid lease's expiry to now + `ttl`, on the lease's own session
    /// (one statement, which also proves the session alive and keeps it busy).
    pub(crate) async fn extend_own(
        &self,
        conn: &mut PgConnection,
        key: &LockKey,
        lease: LeaseId,
        ttl: Duration,
        pid: i32,
    ) -> sqlx::Result<bool> {
        let rows: Vec<(i64,)> = self
            .qa(&self.extend_own)
            .bind(stored(key.name()))
            .bind(key.kind().as_str())
            .bind(lease.to_ulid_string())
            .bind(micros(ttl))
            .bind(pid)
            .fetch_all(conn)
            .await?;
        Ok(!rows.is_empty())
    }

    /// Moves a valid lease's expiry to now + `ttl`.
    pub(crate) async fn extend(
        &self,
        conn: &mut PgConnection,
        key: &LockKey,
        lease: LeaseId,
        ttl: Duration,
    ) -> Result<()> {
        let extended = if self.persistent {
            // Advisory mode without the lease's session: liveness from `pg_locks`.
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
            !rows.is_empty()
        } else {
            let text = format!(
                "{SIMPLE_PREAMBLE} UPDATE {leases} l SET expires_at = {NOW} + {ttl} \
                 WHERE l.name = {name} AND l.kind = {kind} AND l.lease_id = {lease} \
                 AND l.expires_at > {NOW} RETURNING l.token",
                leases = self.tables[1],
                ttl = micros(ttl),
                name = text_literal(&stored(key.name())),
                kind = text_literal(key.kind().as_str()),
                lease = text_literal(&lease.to_ulid_string()),
            );
            !sqlx::raw_sql(AssertSqlSafe(text))
                .fetch_all(&mut *conn)
                .await
                .map_err(unavailable)?
                .is_empty()
        };
        if !extended {
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
        // In a transaction, like every statement here: see `migrate`.
        let mut tx = begin(conn).await.map_err(unavailable)?;
        let rows: Vec<HolderRow> = self
            .qa(&self.inspect)
            .bind(stored(name))
            .fetch_all(&mut *tx)
            .await
            .map_err(unavailable)?;
        tx.commit().await.map_err(unavailable)?;
        let wall = SystemTime::now();
        let mut holders = Vec::with_capacity(rows.len());
        for row in rows {
            if let Some(info) = holder(name, row, wall)? {
                holders.push(info);
            }
        }
        Ok(holders)
    }

    /// One page of `list`: the names under the prefix after the cursor's, in byte order, at
    /// most [`list_budget`] of them read (by the byte-ordered index, see `list_names`); of
    /// those, the first `limit` with a valid lease, with their valid leases.
    ///
    /// The cursor is the stored form of the last name the page read (names are compared in
    /// their stored form, which is the form the index orders).
    pub(crate) async fn list(
        &self,
        conn: &mut PgConnection,
        request: &ListRequest,
    ) -> Result<LockPage> {
        let prefix = stored(&request.prefix).into_owned();
        let upper = upper_bound(&prefix);
        let lower = match &request.after {
            Some(cursor) => {
                let after = list_position(cursor.as_str())?;
                if after >= prefix.as_str() {
                    // `> after` as `>= after + "\x01"`: no stored name holds a NUL.
                    format!("{after}\u{1}")
                } else {
                    prefix.clone()
                }
            }
            None => prefix.clone(),
        };
        if lower >= upper {
            return Ok(LockPage::new(Vec::new(), None));
        }
        let budget = list_budget(request.limit);
        let mut tx = begin(conn).await.map_err(unavailable)?;
        let window: Vec<(String, bool)> = self
            .qa(&self.list_names)
            .bind(&lower)
            .bind(&upper)
            .bind(i64::try_from(budget).unwrap_or(i64::MAX))
            .fetch_all(&mut *tx)
            .await
            .map_err(unavailable)?;
        let picked: Vec<String> = window
            .iter()
            .filter(|(_, valid)| *valid)
            .map(|(name, _)| name.clone())
            .take(request.limit)
            .collect();
        let next = if picked.len() == request.limit {
            picked.last().cloned()
        } else if window.len() >= budget {
            window.last().map(|(name, _)| name.clone())
        } else {
            None
        };
        let rows: Vec<(String, HolderRow)> = if picked.is_empty() {
            Vec::new()
        } else {
            self.qa::<ListRow>(&self.list_holders)
                .bind(&picked)
                .fetch_all(&mut *tx)
                .await
                .map_err(unavailable)?
                .into_iter()
                .map(
                    |(name, kind, owner, token, exclusive, permits, left, keys, values)| {
                        (
                            name,
                            (kind, owner, token, exclusive, permits, left, keys, values),
                        )
                    },
                )
                .collect()
        };
        tx.commit().await.map_err(unavailable)?;
        let wall = SystemTime::now();
        let mut locks = Vec::with_capacity(rows.len());
        for (name, row) in rows {
            // A row this library did not write (a name it cannot have stored) is passed over.
            let Some(name) = unstored(&name) else {
                continue;
            };
            if let Ok(Some(info)) = holder(&name, row, wall) {
                locks.push(info);
            }
        }
        Ok(LockPage::new(locks, next.map(ListCursor::new)))
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

/// A lease row as `inspect` reads it: kind, owner, token, exclusive, permits, µs left,
/// metadata keys and values.
type HolderRow = (
    String,
    String,
    i64,
    bool,
    i64,
    i64,
    Vec<String>,
    Vec<String>,
);

/// A lease row as `list` reads it: the name, then a [`HolderRow`].
type ListRow = (
    String,
    String,
    String,
    i64,
    bool,
    i64,
    i64,
    Vec<String>,
    Vec<String>,
);

/// The holder a lease row of `name` stands for, as of `wall`; `None` for a row of an unknown
/// kind.
fn holder(name: &str, row: HolderRow, wall: SystemTime) -> Result<Option<LockInfo>> {
    let (kind, owner, token, exclusive, permits, remaining, keys, values) = row;
    let Some(kind) = parse_kind(&kind) else {
        return Ok(None);
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
    Ok(Some(LockInfo::new(
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
    )))
}

/// How many names one page of `limit` reads at most: four per name asked for, 100 to 4000.
/// Names with valid leases fill the page; the others (a holder that crashed and nobody
/// acquired the name since) are read and passed over.
pub(crate) fn list_budget(limit: usize) -> usize {
    limit.saturating_mul(4).clamp(100, 4000)
}

/// The position a `list` cursor holds: a stored name (see [`Sql::list`]).
fn list_position(cursor: &str) -> Result<&str> {
    // Stored names hold no NUL and are at most twice the longest name.
    if cursor.contains('\0') || cursor.len() > 2 * MAX_NAME_LEN {
        return Err(Error::invalid_argument(format!(
            "list cursor {:?} was not made by the postgres backend",
            cursor.chars().take(64).collect::<String>()
        )));
    }
    Ok(cursor)
}

/// The least text above every text that starts with `prefix`, in byte order: the prefix with
/// its last character that has a successor replaced by it (and what follows dropped). For an
/// empty prefix (or one of U+10FFFF alone) a text above every stored name.
pub(crate) fn upper_bound(prefix: &str) -> String {
    let mut chars: Vec<char> = prefix.chars().collect();
    while let Some(last) = chars.pop() {
        if let Some(next) = (u32::from(last) + 1..=0x10_FFFF).find_map(char::from_u32) {
            chars.push(next);
            return chars.into_iter().collect();
        }
    }
    // Stored names are at most 2 * MAX_NAME_LEN bytes: 4-byte characters, one more.
    "\u{10FFFF}".repeat(2 * MAX_NAME_LEN / 4 + 1)
}

/// Ends the sessions `pids` (advisory mode: sessions of expired or force-released leases that
/// still hold their advisory locks). Needs superuser, membership in `pg_signal_backend`, or the
/// sessions' own role.
///
/// Waits up to `wait_ms` for them to end (so their advisory locks are free when this returns):
/// PostgreSQL 14 or later.
/// [`terminate`] in a transaction of its own, so the library's statement timeout applies (not
/// a DBA's shorter default, which would cut the wait short).
///
/// True when every session ended within the wait.
pub(crate) async fn terminate_now(
    conn: &mut PgConnection,
    pids: &[i32],
    wait_ms: i64,
) -> sqlx::Result<bool> {
    if pids.is_empty() {
        return Ok(true);
    }
    let mut tx = begin(conn).await?;
    let ended = terminate(&mut tx, pids, wait_ms).await?;
    tx.commit().await?;
    Ok(ended)
}

/// Ends the sessions `pids`; true when every one of them ended within `wait_ms` (PostgreSQL's
/// `pg_terminate_backend` answers false for a session that did not, review finding PG-10), or
/// had ended already (the orphan of a dropped acquisition may have noticed its closed client
/// by itself, PG-R4-4).
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
    let (ended,): (Option<bool>,) = sqlx::query_as(
        "SELECT bool_and(NOT EXISTS (SELECT 1 FROM pg_stat_activity a WHERE a.pid = p) \
         OR pg_terminate_backend(p, $2)) FROM unnest($1::int4[]) AS p",
    )
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
    fn literals_escape_quotes_and_backslashes() {
        assert_eq!(text_literal("plain"), "E'plain'");
        assert_eq!(text_literal("it's"), "E'it''s'");
        assert_eq!(text_literal("a\\'; DROP"), "E'a\\\\''; DROP'");
        assert_eq!(array_literal(&[]), "'{}'::text[]");
        assert_eq!(array_literal(&["x".to_owned()]), "ARRAY[E'x']::text[]");
    }

    /// PG-R4-5: sqlx's own text is kept without its source's, which follows in the chain.
    #[test]
    fn sqlx_errors_do_not_repeat_their_source() {
        let chain = |e: &Error| {
            let mut links = vec![e.to_string()];
            let mut source = std::error::Error::source(e);
            while let Some(s) = source {
                links.push(s.to_string());
                source = s.source();
            }
            links
        };
        let io = unavailable(sqlx::Error::Io(std::io::Error::other("connection reset")));
        assert_eq!(
            chain(&io),
            [
                "postgres backend unavailable",
                "error communicating with database",
                "connection reset"
            ]
        );
        assert!(io.is_retryable());
        // Without a source, sqlx's text as it is.
        let plain = unavailable(sqlx::Error::PoolTimedOut);
        assert_eq!(
            chain(&plain),
            [
                "postgres backend unavailable",
                "pool timed out while waiting for an open connection"
            ]
        );
    }

    #[test]
    fn upper_bounds_end_the_prefix_range() {
        assert_eq!(upper_bound("jobs/"), "jobs0");
        assert_eq!(upper_bound("a\u{D7FF}"), "a\u{E000}");
        assert_eq!(upper_bound("a\u{10FFFF}"), "b");
        let top = upper_bound("");
        assert_eq!(upper_bound("\u{10FFFF}"), top);
        let longest = stored(&"\u{10FFFF}".repeat(MAX_NAME_LEN / 4)).into_owned();
        assert!(longest.as_str() < top.as_str());
        let slashes = stored(&"\\".repeat(MAX_NAME_LEN)).into_owned();
        assert!(slashes.as_str() < top.as_str());
        // Every name under a prefix sorts (stored) between the prefix and its bound.
        for (prefix, name) in [("a\\", "a\\b"), ("ab", "ab\u{10FFFF}"), ("", "\0x")] {
            let (p, n) = (stored(prefix), stored(name));
            assert!(p.as_ref() <= n.as_ref() && n.as_ref() < upper_bound(&p).as_str());
        }
        // A name that does not start with the prefix is outside, even a NUL next to a '\'.
        let (p, n) = (stored("a\\"), stored("a\0"));
        assert!(!n.starts_with(p.as_ref()));
    }

    #[test]
    fn list_positions_refuse_what_no_stored_name_is() {
        assert!(list_position("jobs/a").is_ok());
        assert!(list_position("").is_ok());
        assert!(matches!(
            list_position("a\0b"),
            Err(Error::InvalidArgument { .. })
        ));
        assert!(list_position(&"x".repeat(2 * MAX_NAME_LEN + 1)).is_err());
        assert_eq!(list_budget(1), 100);
        assert_eq!(list_budget(1000), 4000);
    }

    #[test]
    fn payloads_name_their_key() {
        let key = LockKey::new("a:b\0c", LockKind::Semaphore).unwrap();
        assert_eq!(parse_payload(&payload(&key)), Some(key));
        assert_eq!(parse_payload("table:x"), None);
    }
}
