#!/usr/bin/env bash
# Checks the BitTorrent harness itself (no btfs involved): every combination the Rust interop tests rely on,
# on 127.0.0.1 only. Exit 0 when all pass. About 40 s; with BENCH_MIB=256 (or 1024) it also measures
# libtorrent->libtorrent and libtorrent->aria2c on a file of that size and prints the speeds.
#
#   tests/bt/selftest.sh            # WORK=/var/tmp/bt-harness/selftest.PID by default, deleted at the end
#   BENCH_MIB=256 BENCH_RUNS=3 tests/bt/selftest.sh
set -uo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
PY=/usr/bin/python3
LT="$HERE/lt.py"
ARIA="$HERE/aria2.py"
WORK=${WORK:-/var/tmp/bt-harness/selftest.$$}
KEEP=${KEEP:-}
mkdir -p "$WORK"
WORK=$(cd "$WORK" && pwd)
PIDS=()
FAILS=0

cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null; done
  [ -n "$KEEP" ] || rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

say() { printf '%s\n' "$*" >&2; }
ok() { say "ok   - $*"; }
bad() { say "FAIL - $*"; FAILS=$((FAILS + 1)); }
json() { $PY -c 'import json,sys; d=json.loads(sys.stdin.readline()); v=d
for k in sys.argv[1].split("."): v=v[int(k)] if isinstance(v,list) else v[k]
print(v if not isinstance(v,(list,dict)) else json.dumps(v))' "$1"; }

wait_file() { # FILE PID [SECONDS]
  local i
  for ((i = 0; i < ${3:-30} * 10; i++)); do
    [ -s "$1" ] && return 0
    kill -0 "$2" 2>/dev/null || return 1
    sleep 0.1
  done
  return 1
}

# seed TORRENT DIR NAME [args...] -> sets SEED_PORT; seeder pid appended to PIDS
seed() {
  local t=$1 d=$2 name=$3; shift 3
  rm -f "$WORK/$name.port"
  $PY "$LT" seed --torrent "$t" --dir "$d" --port-file "$WORK/$name.port" --lifetime 600 "$@" \
    > "$WORK/$name.out" 2> "$WORK/$name.err" &
  local pid=$!
  PIDS+=("$pid")
  if ! wait_file "$WORK/$name.port" "$pid" 60; then
    say "seeder $name did not start:"; cat "$WORK/$name.out" "$WORK/$name.err" >&2; SEED_PORT=""; return 1
  fi
  SEED_PORT=$(json port < "$WORK/$name.port")
  SEED_PID=$pid
}
stop() { kill "$1" 2>/dev/null; wait "$1" 2>/dev/null; }

same() { # A B -> compare file or directory trees
  if [ -d "$1" ]; then diff -r "$1" "$2" > /dev/null; else cmp -s "$1" "$2"; fi
}

for tool in opentracker mktorrent aria2c; do
  command -v $tool > /dev/null || { say "missing $tool (scripts/setup.sh installs it)"; exit 1; }
done
$PY -c 'import libtorrent' || { say "python3-libtorrent missing"; exit 1; }

# ------------------------------------------------------------------------------------------------ content
SRC="$WORK/src"
mkdir -p "$SRC/tree/sub"
head -c 3000000 /dev/urandom > "$SRC/single.bin"
head -c 300000 /dev/urandom > "$SRC/tree/a.bin"
: > "$SRC/tree/empty.txt"
head -c 70001 /dev/urandom > "$SRC/tree/sub/b.bin"
echo hidden > "$SRC/tree/.hidden"

# ------------------------------------------------------------------------------------------------ tracker
"$HERE/opentracker.sh" "$WORK/ot" "$WORK/ot.port" > "$WORK/ot.out" 2> "$WORK/ot.err" &
PIDS+=($!)
wait_file "$WORK/ot.port" $! 10 || { say "opentracker did not start"; cat "$WORK/ot.err" >&2; exit 1; }
OT_TCP=$(json port < "$WORK/ot.port")
OT_UDP=$(json udp_port < "$WORK/ot.port")
OT_PID=$(json pid < "$WORK/ot.port")
HTTP_TR="http://127.0.0.1:$OT_TCP/announce"
UDP_TR="udp://127.0.0.1:$OT_UDP"
whitelist() { # JSON line from lt.py make on stdin
  json whitelist | $PY -c 'import json,sys; print("\n".join(json.load(sys.stdin)))' >> "$WORK/ot/whitelist"
  kill -HUP "$OT_PID"
  sleep 0.2
}
ok "opentracker on tcp $OT_TCP udp $OT_UDP"

# ------------------------------------------------------------------------------------------------ make
mk() { # OUT PATH args... -> prints lt.py make JSON
  local out=$1 path=$2; shift 2
  $PY "$LT" make --out "$out" "$@" "$path"
}
J_SINGLE=$(mk "$WORK/single.torrent" "$SRC/single.bin" --piece-kib 64) || bad "make single"
J_TREE=$(mk "$WORK/tree.torrent" "$SRC/tree" --piece-kib 16) || bad "make tree"
J_HYB=$(mk "$WORK/tree-h.torrent" "$SRC/tree" --piece-kib 16 --hybrid) || bad "make hybrid"
[ "$(json info_hash_v2 <<< "$J_SINGLE")" = None ] && [ ${#J_SINGLE} -gt 0 ] && ok "make v1 single file" || bad "make v1"
[ "$(json files.2.size <<< "$J_TREE")" = 0 ] && ok "make directory with a 0-byte file" || bad "make tree files: $J_TREE"
[ "$($PY -c 'import json,sys; print(len(json.loads(sys.argv[1])["info_hash_v2"]))' "$J_HYB")" = 64 ] \
  && ok "make hybrid" || bad "make hybrid: $J_HYB"

# ------------------------------------------------------------------------------------------------ direct peer
if seed "$WORK/single.torrent" "$SRC" s1; then
  $PY "$LT" download --dir "$WORK/d1" --torrent "$WORK/single.torrent" --peer "127.0.0.1:$SEED_PORT" --timeout 30 \
    > "$WORK/d1.json" 2> "$WORK/d1.err" && same "$SRC/single.bin" "$WORK/d1/single.bin" \
    && ok "lt -> lt, direct peer, torrent file" || { bad "lt -> lt direct"; cat "$WORK/d1.err" >&2; }
  MAG=$(json magnet <<< "$J_SINGLE")
  $PY "$LT" download --dir "$WORK/d1m" --magnet "$MAG" --peer "127.0.0.1:$SEED_PORT" --timeout 30 \
    > /dev/null 2> "$WORK/d1m.err" && same "$SRC/single.bin" "$WORK/d1m/single.bin" \
    && ok "lt -> lt, direct peer, magnet" || { bad "lt -> lt direct magnet"; cat "$WORK/d1m.err" >&2; }
  stop "$SEED_PID"
fi
if seed "$WORK/tree.torrent" "$SRC" s2; then
  $PY "$LT" download --dir "$WORK/d2" --torrent "$WORK/tree.torrent" --peer "127.0.0.1:$SEED_PORT" --timeout 30 \
    > /dev/null 2> "$WORK/d2.err" && same "$SRC/tree" "$WORK/d2/tree" && [ -f "$WORK/d2/tree/empty.txt" ] \
    && ok "lt -> lt, directory with a 0-byte file" || { bad "lt -> lt tree"; cat "$WORK/d2.err" >&2; }
  stop "$SEED_PID"
fi
# a seeder refuses content that does not match
cp "$SRC/single.bin" "$WORK/corrupt.bin"; mkdir -p "$WORK/corrupt"; mv "$WORK/corrupt.bin" "$WORK/corrupt/single.bin"
printf 'XXXX' | dd of="$WORK/corrupt/single.bin" bs=1 seek=100 conv=notrunc 2> /dev/null
if timeout 30 $PY "$LT" seed --torrent "$WORK/single.torrent" --dir "$WORK/corrupt" > "$WORK/bad.json" 2> /dev/null; then
  bad "seeder accepted corrupt content"
else
  grep -q 'does not match' "$WORK/bad.json" && ok "seeder refuses corrupt content" || bad "corrupt: $(cat "$WORK/bad.json")"
fi

# ------------------------------------------------------------------------------------------------ DHT
$PY "$LT" dht-node --port-file "$WORK/boot.port" --lifetime 600 > /dev/null 2> "$WORK/boot.err" &
PIDS+=($!)
if wait_file "$WORK/boot.port" $! 10; then
  BOOT="127.0.0.1:$(json port < "$WORK/boot.port")"
  if seed "$WORK/tree.torrent" "$SRC" s3 --dht-bootstrap "$BOOT"; then
    $PY "$LT" download --dir "$WORK/d3" --magnet "$(json magnet <<< "$J_TREE")" --dht-bootstrap "$BOOT" --timeout 60 \
      > /dev/null 2> "$WORK/d3.err" && same "$SRC/tree" "$WORK/d3/tree" \
      && ok "lt -> lt, magnet found through the DHT (3 nodes)" || { bad "DHT magnet"; cat "$WORK/d3.err" >&2; }
    $PY "$ARIA" --dir "$WORK/a3" --magnet "$(json magnet <<< "$J_TREE")" --dht-entry "$BOOT" --timeout 60 \
      > "$WORK/a3.json" 2> "$WORK/a3.err" && same "$SRC/tree" "$WORK/a3/tree" \
      && ok "lt -> aria2c, magnet found through the DHT" || { bad "aria2 DHT magnet"; cat "$WORK/a3.json" "$WORK/a3.err" >&2; }
    stop "$SEED_PID"
  fi
else
  bad "dht-node did not start"
fi

# ------------------------------------------------------------------------------------------------ opentracker
for kind in http udp; do
  for hy in v1 hybrid; do
    tr=$HTTP_TR; [ $kind = udp ] && tr=$UDP_TR
    flag=(); [ $hy = hybrid ] && flag=(--hybrid)
    t="$WORK/t-$kind-$hy.torrent"
    J=$(mk "$t" "$SRC/single.bin" --piece-kib 32 --tracker "$tr" "${flag[@]}") || { bad "make $t"; continue; }
    whitelist <<< "$J"
    if seed "$t" "$SRC" "s-$kind-$hy"; then
      $PY "$LT" download --dir "$WORK/d-$kind-$hy" --torrent "$t" --timeout 30 > /dev/null 2> "$WORK/d-$kind-$hy.err" \
        && same "$SRC/single.bin" "$WORK/d-$kind-$hy/single.bin" \
        && ok "lt -> lt through opentracker ($kind, $hy)" || { bad "tracker $kind $hy"; cat "$WORK/d-$kind-$hy.err" >&2; }
      if [ $hy = v1 ]; then
        aflag=(); [ $kind = udp ] && aflag=(--udp-tracker)
        $PY "$ARIA" --dir "$WORK/a-$kind" --torrent "$t" "${aflag[@]}" --timeout 30 > "$WORK/a-$kind.json" \
          2> "$WORK/a-$kind.err" && same "$SRC/single.bin" "$WORK/a-$kind/single.bin" \
          && ok "lt -> aria2c through opentracker ($kind)" || { bad "aria2 $kind"; cat "$WORK/a-$kind.json" "$WORK/a-$kind.err" >&2; }
        if [ $kind = http ]; then
          $PY "$ARIA" --dir "$WORK/a-mag" --magnet "$(json magnet <<< "$J")" --timeout 30 > "$WORK/a-mag.json" \
            2> "$WORK/a-mag.err" && same "$SRC/single.bin" "$WORK/a-mag/single.bin" \
            && ok "lt -> aria2c, magnet with tr= (http)" || { bad "aria2 magnet"; cat "$WORK/a-mag.json" "$WORK/a-mag.err" >&2; }
        fi
      fi
      stop "$SEED_PID"
    fi
  done
done

# ------------------------------------------------------------------------------------------------ mktorrent
mktorrent -l 15 -a "$HTTP_TR" -o "$WORK/mk-tree.torrent" "$SRC/tree" > /dev/null 2>&1 || bad "mktorrent tree"
mktorrent -l 16 -a "$HTTP_TR" -o "$WORK/mk-single.torrent" "$SRC/single.bin" > /dev/null 2>&1 || bad "mktorrent single"
J_LT32=$(mk "$WORK/lt-tree32.torrent" "$SRC/tree" --piece-kib 32)
MK_IH=$($PY -c 'import libtorrent as lt,sys; print(lt.torrent_info(sys.argv[1]).info_hashes().v1)' "$WORK/mk-tree.torrent")
[ "$MK_IH" = "$(json info_hash <<< "$J_LT32")" ] && ok "mktorrent and lt.py make give the same v1 info hash" \
  || bad "mktorrent info hash $MK_IH differs from lt.py's"
for m in tree single; do
  echo "$($PY -c 'import libtorrent as lt,sys; print(lt.torrent_info(sys.argv[1]).info_hashes().v1)' "$WORK/mk-$m.torrent")" \
    >> "$WORK/ot/whitelist"
done
kill -HUP "$OT_PID"; sleep 0.2
for m in tree single; do
  if seed "$WORK/mk-$m.torrent" "$SRC" "s-mk-$m"; then
    name=tree; [ $m = single ] && name=single.bin
    $PY "$LT" download --dir "$WORK/d-mk-$m" --torrent "$WORK/mk-$m.torrent" --timeout 30 > /dev/null \
      2> "$WORK/d-mk-$m.err" && same "$SRC/$name" "$WORK/d-mk-$m/$name" \
      && ok "mktorrent $m torrent seeded by lt, downloaded by lt" || { bad "mktorrent $m"; cat "$WORK/d-mk-$m.err" >&2; }
    stop "$SEED_PID"
  fi
done

# ------------------------------------------------------------------------------------------------ SIGTERM
if seed "$WORK/single.torrent" "$SRC" s-term; then
  t0=$(date +%s%N); kill -TERM "$SEED_PID"; wait "$SEED_PID"; rc=$?; t1=$(date +%s%N)
  ms=$(((t1 - t0) / 1000000))
  [ $rc = 0 ] && [ $ms -lt 6000 ] && ok "seeder exits 0 on SIGTERM (${ms} ms)" || bad "seeder SIGTERM rc=$rc ${ms} ms"
fi
timeout 30 $PY "$LT" download --dir "$WORK/d-to" --torrent "$WORK/tree.torrent" --timeout 3 > "$WORK/to.json" 2> /dev/null
rc=$?
[ $rc = 1 ] && grep -q timeout "$WORK/to.json" && ok "download without peers times out with exit 1" || bad "timeout rc=$rc"

# ------------------------------------------------------------------------------------------------ benchmark
if [ -n "${BENCH_MIB:-}" ]; then
  mkdir -p "$WORK/big"
  head -c $((BENCH_MIB << 20)) /dev/urandom > "$WORK/big/bench.bin"
  for pk in ${BENCH_PIECE_KIB:-256 1024}; do
    J=$(mk "$WORK/bench-$pk.torrent" "$WORK/big/bench.bin" --piece-kib $pk --tracker "$HTTP_TR")
    whitelist <<< "$J"
    seed "$WORK/bench-$pk.torrent" "$WORK/big" bench || continue
    for r in $(seq ${BENCH_RUNS:-3}); do
      rm -rf "$WORK/bd"
      R=$($PY "$LT" download --dir "$WORK/bd" --torrent "$WORK/bench-$pk.torrent" --peer "127.0.0.1:$SEED_PORT" \
        --timeout 300 2> /dev/null)
      say "bench lt->lt     ${BENCH_MIB} MiB piece ${pk} KiB: $R"
      rm -rf "$WORK/ba"
      R=$($PY "$ARIA" --dir "$WORK/ba" --torrent "$WORK/bench-$pk.torrent" --timeout 300 2> /dev/null)
      say "bench lt->aria2c ${BENCH_MIB} MiB piece ${pk} KiB: $R"
    done
    same "$WORK/big/bench.bin" "$WORK/bd/bench.bin" && same "$WORK/big/bench.bin" "$WORK/ba/bench.bin" \
      || bad "bench content differs"
    rm -rf "$WORK/bd" "$WORK/ba"
    stop "$SEED_PID"
  done
fi

if [ $FAILS -eq 0 ]; then say "all passed"; else say "$FAILS failed"; fi
[ $FAILS -eq 0 ]
