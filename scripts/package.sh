#!/usr/bin/env bash
# Packages the publishable crates as crates.io would get them, then builds and runs the README's
# quick start in a throwaway project outside the workspace that depends on those packages (as
# the README says: `distlock = "0.1"`), so a manifest or README mistake fails here first.
#
#   scripts/package.sh
#
# `cargo package --no-verify --exclude-lockfile` here: cargo cannot yet resolve a lockfile or
# verify a package whose dependencies are other unpublished members of the workspace. The
# throwaway project's build is the verification instead (it compiles the packaged sources of
# distlock, lock-core and lock-memory; the other backends' packaged sources are the workspace's
# own, which the other checks compile).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
target=${CARGO_TARGET_DIR:-$root/target}

echo "==> cargo package --workspace"
cargo package --workspace --exclude lock-testkit --no-verify --exclude-lockfile --allow-dirty --quiet

work=$(mktemp -d /tmp/lock-quickstart.XXXXXX)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/crates" "$work/app/src"
for crate in "$target"/package/*.crate; do
    tar xzf "$crate" -C "$work/crates"
done
version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)

patches=""
for dir in "$work"/crates/*-"$version"; do
    name=$(basename "$dir" "-$version")
    patches+="$name = { path = \"$dir\" }"$'\n'
done

# The dependencies exactly as the README's quick start gives them.
deps=$(awk '/^## Quick start/{q=1} q && /^```toml/{t=1; next} t && /^```/{exit} t && !/^\[/' README.md)
cat >"$work/app/Cargo.toml" <<EOF
[package]
name = "quickstart"
version = "0.0.0"
edition = "2024"
publish = false

[dependencies]
$deps

[patch.crates-io]
$patches
EOF
# The program exactly as the README's quick start gives it.
awk '/^## Quick start/{q=1} q && /^```rust/{r=1; next} r && /^```/{exit} r' README.md >"$work/app/src/main.rs"

echo "==> the README's quick start, outside the workspace, on the packaged crates"
(cd "$work/app" && CARGO_TARGET_DIR="$target/quickstart" cargo run --quiet)
