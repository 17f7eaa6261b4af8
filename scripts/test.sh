#!/usr/bin/env bash
# Runs the whole test suite: formatting, lints, unit and property tests, and the end-to-end tests against
# the btfs binary and the reference JavaScript importer. The build directory defaults to one kept outside the
# clone (RocksDB's C++ takes ~20 minutes to build cold), shared by every clone on this machine.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/btfs-target}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"

./scripts/setup.sh

echo "== cargo fmt --check" >&2
cargo fmt --all --check
echo "== cargo build (release)" >&2
cargo build --release --locked --workspace --bins
echo "== cargo clippy" >&2
cargo clippy --release --locked --workspace --all-targets -- -D warnings
echo "== cargo test" >&2
cargo test --release --locked --workspace --no-fail-fast
