#!/usr/bin/env bash
# Benchmarks every backend against its peers in one run, on this machine:
#
#   scripts/bench.sh           # the full run (a few minutes)
#   scripts/bench.sh --quick   # a smoke run with few samples
#
# Starts throwaway Redis (1 + 5 nodes), PostgreSQL and a 3-node etcd cluster on loopback (or
# uses the LOCK_TEST_* variables when set), builds the bench crate (its own workspace, so the
# peers never enter the main build), and writes bench/results/latest.md and latest.json.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
source "$root/scripts/servers.sh"

if [ "${1:-}" = "--quick" ]; then
    export LOCK_BENCH_QUICK=1
fi
start_redis
start_postgres
start_etcd
log "building and running the benchmarks"
cargo run --release --quiet --manifest-path bench/Cargo.toml --bin lock-bench
