#!/usr/bin/env bash
# Sets up, builds btfs, creates a repo (at $BTFS_PATH, default ~/.btfs) if there is none, adds a file and
# reads it back: the node's main job, end to end.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/btfs-target}"
./scripts/setup.sh
cargo build --release --locked -p btfs-node
btfs="$CARGO_TARGET_DIR/release/btfs"
repo="${BTFS_PATH:-$HOME/.btfs}"
[ -f "$repo/config" ] || "$btfs" init
echo "hello from btfs" > /tmp/btfs-demo.txt
cid=$("$btfs" add -Q /tmp/btfs-demo.txt)
echo "added /tmp/btfs-demo.txt as $cid"
echo -n "btfs cat $cid: "
"$btfs" cat "$cid"
echo "the btfs binary is $btfs"
