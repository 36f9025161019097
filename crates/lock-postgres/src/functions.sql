CREATE OR REPLACE FUNCTION {prefix}acquire_v1(
    p_name text, p_kind text, p_lim bigint, p_lease text, p_owner text, p_exclusive boolean,
    p_permits bigint, p_weight bigint, p_ttl bigint, p_claim bigint, p_keys text[],
    p_values text[], p_ns integer, p_akey integer, p_take integer, p_channel text,
    p_payload text,
    OUT o_status text, OUT o_token bigint, OUT o_wait bigint, OUT o_pids integer[],
    OUT o_lim bigint)
LANGUAGE plpgsql AS $f$
DECLARE
    v_now bigint; v_lim bigint; v_pid integer; v_got boolean := false; v_n bigint;
    v_changed boolean := false; v_held numeric; v_first bigint; v_count bigint;
    v_mine bigint; v_waiting numeric; v_ahead bigint; v_claims bigint; v_allowed boolean;
    v_db oid;
BEGIN
    -- The advisory lock (advisory mode): tried at once (1) or already taken by a wait (2).
    IF p_take = 1 THEN
        IF p_exclusive THEN v_got := pg_try_advisory_lock(p_ns, p_akey);
        ELSE v_got := pg_try_advisory_lock_shared(p_ns, p_akey); END IF;
    ELSIF p_take = 2 THEN
        v_got := true;
    END IF;
    v_allowed := p_ns IS NULL OR v_got;
    IF p_ns IS NOT NULL AND v_got THEN v_pid := pg_backend_pid(); END IF;
    -- The lock's row, locked (without writing when it exists) for the whole decision.
    INSERT INTO {locks} AS r (name, kind, lim) VALUES (p_name, p_kind, p_lim)
        ON CONFLICT (name, kind) DO UPDATE SET lim = EXCLUDED.lim WHERE FALSE;
    SELECT r.lim, (extract(epoch FROM clock_timestamp()) * 1000000)::bigint INTO v_lim, v_now
        FROM {locks} r WHERE r.name = p_name AND r.kind = p_kind FOR UPDATE;
    -- Advisory mode: sessions of expired leases that still hold the advisory lock (and, when
    -- the lock was not obtained, of expired leases of colliding keys) are ended first, by the
    -- caller, outside this transaction (review finding PG-10).
    IF p_ns IS NOT NULL THEN
        v_db := (SELECT oid FROM pg_database WHERE datname = current_database());
        SELECT array_agg(l.pid) INTO o_pids FROM {leases} l
            WHERE l.name = p_name AND l.kind = p_kind AND l.expires_at <= v_now
            AND l.pid IS NOT NULL AND l.pid <> pg_backend_pid()
            AND EXISTS (SELECT 1 FROM pg_locks k WHERE k.locktype = 'advisory' AND k.granted
                AND k.objsubid = 2 AND k.pid = l.pid
                AND k.classid::bigint = (p_ns::bigint & 4294967295)
                AND k.objid::bigint = (l.akey::bigint & 4294967295) AND k.database = v_db);
        IF NOT v_got THEN
            o_pids := o_pids || (SELECT array_agg(l.pid) FROM {leases} l
                WHERE l.akey = p_akey AND l.expires_at <= v_now
                AND l.pid IS NOT NULL AND l.pid <> pg_backend_pid()
                AND EXISTS (SELECT 1 FROM pg_locks k WHERE k.locktype = 'advisory' AND k.granted
                    AND k.objsubid = 2 AND k.pid = l.pid
                    AND k.classid::bigint = (p_ns::bigint & 4294967295)
                    AND k.objid::bigint = (l.akey::bigint & 4294967295) AND k.database = v_db));
        END IF;
        IF o_pids IS NOT NULL THEN
            PERFORM {prefix}unlock_v1(p_ns, p_akey, p_exclusive, p_take = 1 AND v_got);
            o_status := 'end';
            RETURN;
        END IF;
    END IF;
    -- Reap expired leases (lease mode leaves advisory holders' rows for advisory contenders,
    -- review finding PG-1) and expired claims.
    DELETE FROM {leases} l WHERE l.name = p_name AND l.kind = p_kind AND l.expires_at <= v_now
        AND (p_ns IS NOT NULL OR l.pid IS NULL);
    GET DIAGNOSTICS v_n = ROW_COUNT;
    v_changed := v_n > 0;
    DELETE FROM {claims} c WHERE c.name = p_name AND c.kind = p_kind AND c.expires_at <= v_now;
    GET DIAGNOSTICS v_n = ROW_COUNT;
    v_changed := v_changed OR v_n > 0;
    -- A retry of a request whose grant committed but whose answer was lost: adopt the lease.
    IF v_allowed THEN
        UPDATE {leases} l SET expires_at = v_now + p_ttl, pid = v_pid,
            akey = CASE WHEN v_pid IS NULL THEN NULL ELSE p_akey END
            WHERE l.name = p_name AND l.kind = p_kind AND l.lease_id = p_lease
            RETURNING l.token INTO o_token;
        IF FOUND THEN
            IF v_changed AND EXISTS (SELECT 1 FROM {claims} c
                    WHERE c.name = p_name AND c.kind = p_kind) THEN
                PERFORM pg_notify(p_channel, p_payload);
            END IF;
            o_status := 'granted';
            RETURN;
        END IF;
    END IF;
    SELECT coalesce(sum(l.weight), 0), min(l.expires_at), count(*) INTO v_held, v_first, v_count
        FROM {leases} l WHERE l.name = p_name AND l.kind = p_kind AND l.expires_at > v_now;
    SELECT count(*), max(c.ord) FILTER (WHERE c.lease_id = p_lease) INTO v_claims, v_mine
        FROM {claims} c WHERE c.name = p_name AND c.kind = p_kind;
    IF v_count > 0 OR v_claims > 0 THEN
        IF v_lim <> p_lim THEN
            PERFORM {prefix}unlock_v1(p_ns, p_akey, p_exclusive, p_take > 0 AND v_got);
            o_status := 'limit';
            o_lim := v_lim;
            RETURN;
        END IF;
    ELSIF v_lim <> p_lim THEN
        UPDATE {locks} r SET lim = p_lim WHERE r.name = p_name AND r.kind = p_kind;
    END IF;
    SELECT coalesce(sum(c.weight), 0), min(c.expires_at) INTO v_waiting, v_ahead
        FROM {claims} c WHERE c.name = p_name AND c.kind = p_kind AND c.lease_id <> p_lease
        AND (v_mine IS NULL OR c.ord < v_mine);
    IF v_allowed AND v_held + v_waiting + p_weight <= p_lim THEN
        -- Clock-seeded: never below an earlier token, even after a lost commit (PG-5).
        UPDATE {locks} r SET last_token = greatest(r.last_token + 1, v_now)
            WHERE r.name = p_name AND r.kind = p_kind RETURNING r.last_token INTO o_token;
        INSERT INTO {leases} (name, kind, lease_id, owner, exclusive, permits, weight, token,
            expires_at, meta_keys, meta_values, pid, akey)
            VALUES (p_name, p_kind, p_lease, p_owner, p_exclusive, p_permits, p_weight, o_token,
            v_now + p_ttl, p_keys, p_values, v_pid,
            CASE WHEN v_pid IS NULL THEN NULL ELSE p_akey END);
        IF v_mine IS NOT NULL THEN
            DELETE FROM {claims} c WHERE c.name = p_name AND c.kind = p_kind
                AND c.lease_id = p_lease;
            v_claims := v_claims - 1;
        END IF;
        -- Waiters are told only when there are any (review design D3): claims are inserted
        -- under this row's lock, so none is missed.
        IF v_changed AND v_claims > 0 THEN
            PERFORM pg_notify(p_channel, p_payload);
        END IF;
        o_status := 'granted';
        RETURN;
    END IF;
    IF p_claim IS NOT NULL THEN
        IF v_mine IS NOT NULL THEN
            UPDATE {claims} c SET expires_at = v_now + p_claim
                WHERE c.name = p_name AND c.kind = p_kind AND c.lease_id = p_lease;
        ELSE
            UPDATE {locks} r SET last_claim = r.last_claim + 1
                WHERE r.name = p_name AND r.kind = p_kind RETURNING r.last_claim INTO v_n;
            INSERT INTO {claims} (name, kind, lease_id, weight, ord, expires_at)
                VALUES (p_name, p_kind, p_lease, p_weight, v_n, v_now + p_claim);
        END IF;
    END IF;
    IF v_changed AND EXISTS (SELECT 1 FROM {claims} c
            WHERE c.name = p_name AND c.kind = p_kind AND c.lease_id <> p_lease) THEN
        PERFORM pg_notify(p_channel, p_payload);
    END IF;
    PERFORM {prefix}unlock_v1(p_ns, p_akey, p_exclusive, p_take > 0 AND v_got);
    IF NOT v_allowed THEN
        o_status := 'blocked';
        IF v_held + v_waiting + p_weight <= p_lim THEN
            -- The table allows it, but a session that is going away still holds the lock.
            o_wait := 20000;
            RETURN;
        END IF;
    ELSE
        o_status := 'busy';
    END IF;
    o_wait := least(v_first, v_ahead) - v_now;
END
$f$;

-- Advisory mode: the guard every statement on a dedicated session runs before it takes or
-- releases anything (review finding PG-7). A session's statements must all run on the server
-- process it was opened on (p_pid); behind PgBouncer in transaction pooling mode they need not,
-- and an advisory lock taken or released there would belong to other clients. Returns p_ns;
-- no check when p_pid is NULL (statements on pooled connections).
CREATE OR REPLACE FUNCTION {prefix}session_v1(p_pid integer, p_ns integer) RETURNS integer
LANGUAGE plpgsql VOLATILE AS $f$
BEGIN
    IF p_pid IS NOT NULL AND p_pid <> pg_backend_pid() THEN
        RAISE EXCEPTION USING ERRCODE = 'LKPB1',
            MESSAGE = format('lock-postgres advisory session opened on server process %s runs '
                'on server process %s: the connection goes through a pooler such as PgBouncer '
                'in transaction pooling mode, which advisory mode cannot use (nothing was taken '
                'or released); use LOCK_POSTGRES_MODE=lease there, or connect advisory mode '
                'straight to the server or through session pooling', p_pid, pg_backend_pid());
    END IF;
    RETURN p_ns;
END
$f$;

CREATE OR REPLACE FUNCTION {prefix}unlock_v1(p_ns integer, p_akey integer,
    p_exclusive boolean, p_do boolean) RETURNS void
LANGUAGE plpgsql AS $f$
BEGIN
    IF p_do THEN
        IF p_exclusive THEN PERFORM pg_advisory_unlock(p_ns, p_akey);
        ELSE PERFORM pg_advisory_unlock_shared(p_ns, p_akey); END IF;
    END IF;
END
$f$;

CREATE OR REPLACE FUNCTION {prefix}release_v1(p_name text, p_kind text, p_lease text,
    p_ns integer, p_unlock boolean, p_channel text, p_payload text,
    OUT o_valid boolean, OUT o_changed boolean, OUT o_pids integer[])
LANGUAGE plpgsql AS $f$
DECLARE
    v_n bigint; v_db oid;
BEGIN
    -- A crash may undo a release: its lease then counts until its expiry (liveness only;
    -- exclusion and tokens are unaffected), and the next durable commit flushes it anyway
    -- (review design D2).
    PERFORM set_config('synchronous_commit', 'off', true);
    -- Under the lock row's lock: a claim inserted concurrently is seen (D3), and a waiter
    -- woken by the unlock below blocks on the row until this commits.
    PERFORM 1 FROM {locks} r WHERE r.name = p_name AND r.kind = p_kind FOR UPDATE;
    v_db := (SELECT oid FROM pg_database WHERE datname = current_database());
    WITH gone AS (
        DELETE FROM {leases} l WHERE l.name = p_name AND l.kind = p_kind AND l.lease_id = p_lease
        RETURNING l.expires_at > (extract(epoch FROM clock_timestamp()) * 1000000)::bigint AS valid,
            l.pid, l.akey)
    SELECT coalesce(bool_or(g.valid), false), count(*) > 0,
        array_agg(g.pid) FILTER (WHERE p_ns IS NOT NULL AND g.pid IS NOT NULL
            AND g.pid <> pg_backend_pid()
            AND EXISTS (SELECT 1 FROM pg_locks k WHERE k.locktype = 'advisory' AND k.granted
                AND k.objsubid = 2 AND k.pid = g.pid
                AND k.classid::bigint = (p_ns::bigint & 4294967295)
                AND k.objid::bigint = (g.akey::bigint & 4294967295) AND k.database = v_db))
        INTO o_valid, o_changed, o_pids FROM gone g;
    DELETE FROM {claims} c WHERE c.name = p_name AND c.kind = p_kind AND c.lease_id = p_lease;
    GET DIAGNOSTICS v_n = ROW_COUNT;
    o_changed := o_changed OR v_n > 0;
    IF o_changed AND EXISTS (SELECT 1 FROM {claims} c
            WHERE c.name = p_name AND c.kind = p_kind) THEN
        PERFORM pg_notify(p_channel, p_payload);
    END IF;
    IF p_unlock THEN
        PERFORM pg_advisory_unlock_all();
    END IF;
END
$f$;
