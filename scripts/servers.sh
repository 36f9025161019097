# Shared by scripts/test.sh and scripts/bench.sh (sourced, not run): installs server packages
# and starts throwaway servers on loopback; `cleanup` (an EXIT trap) stops them.
#
#   start_redis     LOCK_TEST_REDIS_URLS (one node), LOCK_TEST_REDLOCK_URLS (five nodes)
#   start_postgres  LOCK_TEST_POSTGRES_URL, and LOCK_TEST_PGBOUNCER_URL (PgBouncer in front of it)
#   start_postgres_tls  LOCK_TEST_POSTGRES_TLS_URL (a second cluster: TLS only, client
#                   certificates required) and the certificate paths (make_test_certs)
#   start_etcd      LOCK_TEST_ETCD_ENDPOINTS (a 3-node cluster); also installs protoc
#   start_etcd_tls  LOCK_TEST_ETCD_TLS_ENDPOINTS (a 3-node cluster with client and peer TLS and
#                   client-certificate auth) and the certificate paths (make_test_certs)
#
# Each one uses the variable instead when it is already set.

log() { printf '\n==> %s\n' "$*"; }
have() { command -v "$1" >/dev/null 2>&1; }

apt_updated=0
apt_install() {
    if [ "$(id -u)" != 0 ]; then
        echo "missing packages: $* (run as root or install them: apt-get install $*)" >&2
        return 1
    fi
    if [ "$apt_updated" = 0 ]; then
        DEBIAN_FRONTEND=noninteractive apt-get update -qq
        apt_updated=1
    fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

servers_dir=$(mktemp -d "${TMPDIR:-/tmp}/lock-test-servers.XXXXXX")
chmod 755 "$servers_dir"
pids=()
cleanup() {
    for pid in "${pids[@]}"; do
        kill -CONT "$pid" 2>/dev/null || true
        kill "$pid" 2>/dev/null || true
    done
    for pid in "${pids[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
    if [ -n "${pgbouncer_pidfile:-}" ] && [ -f "$pgbouncer_pidfile" ]; then
        kill "$(cat "$pgbouncer_pidfile")" 2>/dev/null || true
    fi
    if [ -n "${pg_data:-}" ] && [ -f "$pg_data/postmaster.pid" ]; then
        runuser -u postgres -- "$pg_bin/pg_ctl" -D "$pg_data" -m immediate stop >/dev/null 2>&1 || true
    fi
    if [ -n "${pg_tls_data:-}" ] && [ -f "$pg_tls_data/postmaster.pid" ]; then
        runuser -u postgres -- "$pg_bin/pg_ctl" -D "$pg_tls_data" -m immediate stop >/dev/null 2>&1 || true
    fi
    rm -rf "$servers_dir"
}
trap cleanup EXIT

# Waits until something accepts TCP connections on 127.0.0.1:$1.
wait_port() {
    for _ in $(seq 1 100); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then
            return 0
        fi
        sleep 0.1
    done
    echo "nothing listens on 127.0.0.1:$1 after 10 s" >&2
    return 1
}

# Sets `picked` to a loopback TCP port nothing listens on, never one picked before by this
# script: several runs (worktrees, a CI run next to a developer's) never share servers.
picked_ports=" "
pick_port() {
    local port
    for _ in $(seq 1 500); do
        # Below 32768: outside the range the kernel hands to outgoing connections.
        port=$((10000 + RANDOM % 22000))
        if [[ "$picked_ports" != *" $port "* ]] && ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            picked_ports+="$port "
            picked=$port
            return 0
        fi
    done
    echo "no free TCP port found on 127.0.0.1" >&2
    return 1
}

# Redis: one instance for single-node tests, five independent ones for Redlock.
start_redis() {
    # The fault tests start their own redis-server processes, whatever LOCK_TEST_* say; the
    # TLS test makes its certificates with openssl.
    have redis-server || apt_install redis-server
    have openssl || apt_install openssl
    if [ -n "${LOCK_TEST_REDIS_URLS:-}" ]; then
        log "Redis: using LOCK_TEST_REDIS_URLS"
        return
    fi
    local urls=() ports=() port
    for _ in 1 2 3 4 5 6; do pick_port; ports+=("$picked"); done
    for port in "${ports[@]}"; do
        mkdir -p "$servers_dir/redis-$port"
        redis-server --port "$port" --bind 127.0.0.1 --save "" --appendonly no \
            --dir "$servers_dir/redis-$port" --logfile "$servers_dir/redis-$port/log" &
        pids+=("$!")
        urls+=("redis://127.0.0.1:$port")
    done
    for port in "${ports[@]}"; do wait_port "$port"; done
    export LOCK_TEST_REDIS_URLS="${urls[0]}"
    export LOCK_TEST_REDLOCK_URLS
    LOCK_TEST_REDLOCK_URLS=$(IFS=,; echo "${urls[*]:1}")
    log "Redis: single $LOCK_TEST_REDIS_URLS, Redlock $LOCK_TEST_REDLOCK_URLS"
}

# PostgreSQL: a throwaway cluster run as the postgres user (it refuses to run as root).
start_postgres() {
    if [ -n "${LOCK_TEST_POSTGRES_URL:-}" ]; then
        log "PostgreSQL: using LOCK_TEST_POSTGRES_URL"
        return
    fi
    pg_bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1 || true)
    if [ -z "$pg_bin" ]; then
        apt_install postgresql
        pg_bin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
    fi
    local port
    pick_port
    port=$picked
    pg_data="$servers_dir/pg"
    mkdir -p "$pg_data"
    chown postgres "$pg_data"
    runuser -u postgres -- "$pg_bin/initdb" -D "$pg_data" -U postgres -A trust >/dev/null
    runuser -u postgres -- "$pg_bin/pg_ctl" -D "$pg_data" -l "$pg_data/log" -w \
        -o "-p $port -k $pg_data -c listen_addresses=127.0.0.1 -c max_connections=300" start >/dev/null
    export LOCK_TEST_POSTGRES_URL="postgres://postgres@127.0.0.1:$port/postgres"
    log "PostgreSQL: $LOCK_TEST_POSTGRES_URL"
    start_pgbouncer "$port"
}

# PgBouncer in transaction pooling mode in front of the cluster on port $1, for the lease-mode
# tests through a pooler. It refuses to run as root: it runs as the postgres user.
start_pgbouncer() {
    if [ -n "${LOCK_TEST_PGBOUNCER_URL:-}" ]; then
        log "PgBouncer: using LOCK_TEST_PGBOUNCER_URL"
        return
    fi
    local pgbouncer
    pgbouncer=$(command -v pgbouncer || echo /usr/sbin/pgbouncer)
    [ -x "$pgbouncer" ] || { apt_install pgbouncer; pgbouncer=$(command -v pgbouncer || echo /usr/sbin/pgbouncer); }
    local dir="$servers_dir/pgbouncer" port
    pick_port
    port=$picked
    mkdir -p "$dir"
    echo '"postgres" ""' >"$dir/users.txt"
    cat >"$dir/pgbouncer.ini" <<INI
[databases]
postgres = host=127.0.0.1 port=$1 dbname=postgres user=postgres
[pgbouncer]
listen_addr = 127.0.0.1
listen_port = $port
unix_socket_dir =
auth_type = trust
auth_file = $dir/users.txt
pool_mode = transaction
ignore_startup_parameters = extra_float_digits
max_client_conn = 1000
default_pool_size = 40
logfile = $dir/log
pidfile = $dir/pid
INI
    chown -R postgres "$dir"
    runuser -u postgres -- "$pgbouncer" -d "$dir/pgbouncer.ini"
    pgbouncer_pidfile="$dir/pid"
    wait_port "$port"
    export LOCK_TEST_PGBOUNCER_URL="postgres://postgres@127.0.0.1:$port/postgres"
    log "PgBouncer (transaction pooling): $LOCK_TEST_PGBOUNCER_URL"
}

# etcd 3.5 for the version matrix: Debian 12 packages only 3.4.23, below the minimum the README
# states (3.4.31 / 3.5.13); Debian 13's package is unpacked here, checked against its SHA-256,
# not installed. Sets etcd35_bin to the folder holding the `etcd` binary.
etcd35_version=3.5.16-4
etcd35_sha256=0875921bb0d023f2af9b8e15cdfbe417a03e65731345fb832c40f9c2dd72967b
fetch_etcd35() {
    local dir="${XDG_CACHE_HOME:-$HOME/.cache}/lock-test/etcd-server-$etcd35_version"
    if [ ! -x "$dir/usr/bin/etcd" ]; then
        local deb="$servers_dir/etcd-server-$etcd35_version.deb"
        curl -fsSL --retry 3 -o "$deb" \
            "http://deb.debian.org/debian/pool/main/e/etcd/etcd-server_${etcd35_version}_amd64.deb"
        echo "$etcd35_sha256  $deb" | sha256sum -c --quiet
        rm -rf "$dir" && mkdir -p "$dir"
        dpkg -x "$deb" "$dir"
    fi
    etcd35_bin="$dir/usr/bin"
}

# etcd: a 3-node cluster on loopback, of the first `etcd` on PATH.
start_etcd() {
    # The fault tests start their own etcd processes, whatever LOCK_TEST_* say; etcdctl waits
    # for the cluster's health.
    if [ -n "${LOCK_TEST_ETCD_ENDPOINTS:-}" ]; then
        log "etcd: using LOCK_TEST_ETCD_ENDPOINTS"
        return
    fi
    start_etcd_cluster http
}

# Test certificates, made once per run with openssl into $servers_dir/certs: a CA; a
# server/peer certificate for 127.0.0.1 and localhost (server and client auth: etcd peers are
# both); a client certificate (CN lock-test-client); and a second, unrelated CA for the
# wrong-CA tests. Exports LOCK_TEST_TLS_CA, LOCK_TEST_TLS_CLIENT_CERT, LOCK_TEST_TLS_CLIENT_KEY
# and LOCK_TEST_TLS_WRONG_CA; sets certs_dir.
make_test_certs() {
    have openssl || apt_install openssl
    certs_dir="$servers_dir/certs"
    if [ -f "$certs_dir/ca.pem" ]; then
        return
    fi
    mkdir -p "$certs_dir"
    local d=$certs_dir
    (
        set -e
        cd "$d"
        for ca in ca wrong-ca; do
            openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
                -keyout "$ca-key.pem" -out "$ca.pem" -subj "/CN=lock-test $ca" \
                -addext basicConstraints=critical,CA:TRUE \
                -addext keyUsage=critical,keyCertSign,cRLSign 2>/dev/null
        done
        # server: also the etcd peer certificate (peers authenticate each other as clients).
        printf '%s\n' "subjectAltName=IP:127.0.0.1,DNS:localhost" \
            "extendedKeyUsage=serverAuth,clientAuth" "basicConstraints=CA:FALSE" >server.ext
        printf '%s\n' "extendedKeyUsage=clientAuth" "basicConstraints=CA:FALSE" >client.ext
        for name in server client; do
            openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
                -keyout "$name-key.pem" -out "$name.csr" -subj "/CN=lock-test-$name" 2>/dev/null
            openssl x509 -req -in "$name.csr" -CA ca.pem -CAkey ca-key.pem -CAcreateserial \
                -days 2 -extfile "$name.ext" -out "$name.pem" 2>/dev/null
        done
        # PKCS#8 keys: every client (rustls, libpq, etcd's Go) reads them.
        for name in server client; do
            openssl pkcs8 -topk8 -nocrypt -in "$name-key.pem" -out "$name-key.p8.pem"
            mv "$name-key.p8.pem" "$name-key.pem"
        done
        chmod 644 ./*.pem
        chmod 600 ./*-key.pem
    ) || { echo "making test certificates with openssl failed" >&2; return 1; }
    export LOCK_TEST_TLS_CA="$d/ca.pem" LOCK_TEST_TLS_WRONG_CA="$d/wrong-ca.pem"
    export LOCK_TEST_TLS_CLIENT_CERT="$d/client.pem" LOCK_TEST_TLS_CLIENT_KEY="$d/client-key.pem"
    log "test certificates in $d"
}

# etcd with TLS: a 3-node cluster whose client and peer URLs are https://, requiring a client
# certificate signed by the test CA on both (--client-cert-auth, --peer-client-cert-auth).
start_etcd_tls() {
    if [ -n "${LOCK_TEST_ETCD_TLS_ENDPOINTS:-}" ]; then
        log "etcd TLS: using LOCK_TEST_ETCD_TLS_ENDPOINTS"
        return
    fi
    make_test_certs
    start_etcd_cluster https
}

# A 3-node etcd cluster on loopback; `http` exports LOCK_TEST_ETCD_ENDPOINTS, `https` (client
# and peer TLS with client certificates of the test CA) LOCK_TEST_ETCD_TLS_ENDPOINTS. Returns
# once a leader is elected and every member answers.
start_etcd_cluster() {
    local scheme=$1
    have protoc || apt_install protobuf-compiler
    have etcd || apt_install etcd-server
    have etcdctl || apt_install etcd-client
    local cluster="" endpoints=() client=() peer=() i dir name tls=() ctl=() var
    if [ "$scheme" = https ]; then
        local c=$certs_dir
        name=t var=LOCK_TEST_ETCD_TLS_ENDPOINTS
        tls=(--cert-file "$c/server.pem" --key-file "$c/server-key.pem"
            --client-cert-auth --trusted-ca-file "$c/ca.pem"
            --peer-cert-file "$c/server.pem" --peer-key-file "$c/server-key.pem"
            --peer-client-cert-auth --peer-trusted-ca-file "$c/ca.pem")
        ctl=(--cacert "$c/ca.pem" --cert "$c/client.pem" --key "$c/client-key.pem")
    else
        name=n var=LOCK_TEST_ETCD_ENDPOINTS
    fi
    # A folder per cluster: the version matrix starts a second one.
    dir=$(mktemp -d "$servers_dir/etcd-$scheme.XXXXXX")
    for i in 1 2 3; do
        pick_port
        client[i]=$picked
        pick_port
        peer[i]=$picked
        cluster+="$name$i=$scheme://127.0.0.1:${peer[i]},"
    done
    for i in 1 2 3; do
        etcd --name "$name$i" --data-dir "$dir/data-$i" \
            --listen-client-urls "$scheme://127.0.0.1:${client[i]}" \
            --advertise-client-urls "$scheme://127.0.0.1:${client[i]}" \
            --listen-peer-urls "$scheme://127.0.0.1:${peer[i]}" \
            --initial-advertise-peer-urls "$scheme://127.0.0.1:${peer[i]}" \
            --initial-cluster "${cluster%,}" --initial-cluster-state new \
            --initial-cluster-token "lock-test-$scheme" "${tls[@]}" >"$dir/$i.log" 2>&1 &
        pids+=("$!")
        if [ "$scheme" = https ]; then
            endpoints+=("https://127.0.0.1:${client[i]}")
        else
            endpoints+=("127.0.0.1:${client[i]}")
        fi
    done
    for i in 1 2 3; do wait_port "${client[i]}"; done
    local list
    list=$(IFS=,; echo "${endpoints[*]}")
    export "$var=$list"
    # Listening is not ready: wait until a leader is elected and every member answers.
    local ready=0
    for _ in $(seq 1 60); do
        if ETCDCTL_API=3 etcdctl --endpoints "$list" --command-timeout=2s "${ctl[@]}" \
            endpoint health >/dev/null 2>&1; then
            ready=1
            break
        fi
        sleep 0.5
    done
    if [ "$ready" != 1 ]; then
        echo "etcd $scheme cluster $list not healthy after 30 s" >&2
        return 1
    fi
    log "etcd ($scheme): $list"
}

# PostgreSQL with TLS: a cluster of its own (the plain one stays the server without TLS) with
# `ssl = on` and the test server certificate, accepting only TLS connections that present a
# client certificate of the test CA (`hostssl ... cert`, the certificate's CN lock-test-client
# mapped to the role postgres). The URL verifies the server in verify-full and presents the
# client certificate.
start_postgres_tls() {
    if [ -n "${LOCK_TEST_POSTGRES_TLS_URL:-}" ]; then
        log "PostgreSQL TLS: using LOCK_TEST_POSTGRES_TLS_URL"
        return
    fi
    make_test_certs
    pg_bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1 || true)
    if [ -z "$pg_bin" ]; then
        apt_install postgresql
        pg_bin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
    fi
    local port c=$certs_dir
    pick_port
    port=$picked
    pg_tls_data="$servers_dir/pg-tls"
    mkdir -p "$pg_tls_data"
    chown postgres "$pg_tls_data"
    runuser -u postgres -- "$pg_bin/initdb" -D "$pg_tls_data" -U postgres -A trust >/dev/null
    # The server's key must belong to the server's user and be private to it.
    install -o postgres -m 600 "$c/server-key.pem" "$pg_tls_data/server.key"
    install -o postgres -m 644 "$c/server.pem" "$pg_tls_data/server.crt"
    install -o postgres -m 644 "$c/ca.pem" "$pg_tls_data/ca.crt"
    printf '%s\n' "local all all trust" \
        "hostssl all all 127.0.0.1/32 cert map=lock" \
        "hostnossl all all 127.0.0.1/32 reject" >"$pg_tls_data/pg_hba.conf"
    printf '%s\n' "lock lock-test-client postgres" >"$pg_tls_data/pg_ident.conf"
    runuser -u postgres -- "$pg_bin/pg_ctl" -D "$pg_tls_data" -l "$pg_tls_data/log" -w \
        -o "-p $port -k $pg_tls_data -c listen_addresses=127.0.0.1 -c max_connections=300 \
            -c ssl=on -c ssl_cert_file=server.crt -c ssl_key_file=server.key \
            -c ssl_ca_file=ca.crt" start >/dev/null
    export LOCK_TEST_POSTGRES_TLS_URL="postgres://postgres@127.0.0.1:$port/postgres?sslmode=verify-full&sslrootcert=$c/ca.pem&sslcert=$c/client.pem&sslkey=$c/client-key.pem"
    log "PostgreSQL TLS: $LOCK_TEST_POSTGRES_TLS_URL"
}
