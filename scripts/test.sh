#!/usr/bin/env bash
# The README's test command: every check CI runs, on a fresh machine.
#
#   scripts/test.sh
#
# 1. installs what the checks need (cargo-deny, the advisory snapshot; server packages and
#    protoc once the backend crates that need them exist),
# 2. starts throwaway servers on loopback ports, unless LOCK_TEST_REDIS_URLS,
#    LOCK_TEST_POSTGRES_URL, LOCK_TEST_ETCD_ENDPOINTS (and LOCK_TEST_POSTGRES_TLS_URL,
#    LOCK_TEST_ETCD_TLS_ENDPOINTS) point at servers already running,
# 3. runs fmt, clippy, docs, every test (with LOCK_TEST_REQUIRE_SERVERS=1: a missing server
#    fails its tests), the basic example and cargo-deny,
# 4. stops the servers it started.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

source "$root/scripts/servers.sh"

# cargo-deny and the offline advisory snapshot (DEPENDENCIES.md).
ensure_cargo_deny() {
    if ! cargo deny --version >/dev/null 2>&1; then
        log "installing cargo-deny (a few minutes)"
        cargo install cargo-deny --locked --quiet
    fi
    local snapshot="$root/../shared/rustsec-advisory-db.tar.gz"
    local dbs="${CARGO_HOME:-$HOME/.cargo}/advisory-dbs"
    if [ -f "$snapshot" ]; then
        if [ ! -d "$dbs/advisory-db-3157b0e258782691" ]; then
            mkdir -p "$dbs"
            tar xzf "$snapshot" -C "$dbs"
        fi
        deny_args=(--offline check)
    else
        deny_args=(check)
    fi
}

# Start only the servers whose backend crates exist.
[ -d crates/lock-redis ] && start_redis
[ -d crates/lock-postgres ] && start_postgres && start_postgres_tls
[ -d crates/lock-etcd ] && start_etcd && start_etcd_tls
export LOCK_TEST_REQUIRE_SERVERS=1

log "cargo fmt --check"
cargo fmt --all -- --check

log "cargo clippy (all targets, all features)"
cargo clippy --workspace --all-targets --all-features -- -D warnings

log "cargo doc (warnings are errors)"
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --all-features --no-deps --quiet

log "cargo test (all features, doc tests included)"
cargo test --workspace --all-features

# The etcd version matrix: the conformance suite and the fault tests (which start clusters of
# the first `etcd` on PATH) once more on etcd 3.5, on a cluster of its own.
if [ -d crates/lock-etcd ]; then
    fetch_etcd35
    saved_endpoints=$LOCK_TEST_ETCD_ENDPOINTS
    saved_path=$PATH
    unset LOCK_TEST_ETCD_ENDPOINTS
    export PATH="$etcd35_bin:$PATH"
    start_etcd
    log "cargo test -p lock-etcd on $(etcd --version | head -1)"
    cargo test -p lock-etcd --all-features --test conformance --test faults
    export PATH=$saved_path LOCK_TEST_ETCD_ENDPOINTS=$saved_endpoints
    # The fault tests once more on clusters with client and peer TLS (the conformance suite
    # ran on the TLS cluster above, in conformance_tls).
    log "cargo test -p lock-etcd --test faults on TLS clusters"
    LOCK_TEST_ETCD_FAULTS_TLS=$certs_dir cargo test -p lock-etcd --all-features --test faults
fi

log "cargo test -p distlock (default features)"
cargo test -p distlock

log "cargo run --example basic"
cargo run --quiet --example basic

# The crates as crates.io would get them, and the README's quick start built on them.
bash scripts/package.sh

ensure_cargo_deny
# cargo-deny reads `cargo metadata` of every target platform: fetch those crates first.
cargo fetch --quiet
log "cargo deny ${deny_args[*]}"
cargo deny "${deny_args[@]}"

log "all checks passed"
