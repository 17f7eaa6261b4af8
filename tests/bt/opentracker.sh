#!/usr/bin/env bash
# Starts Debian's opentracker (whitelist mode) on 127.0.0.1 with kernel-chosen ports, for tests and manual runs.
#
#   tests/bt/opentracker.sh DIR [PORT_FILE] [INFOHASH_HEX ...]
#
# DIR holds the whitelist (DIR/whitelist: one 40-hex info hash a line; created if missing, the given hashes
# appended). opentracker is started with `-p 0 -P 0` and the ports it got are read back from /proc (no race with
# other tests picking ports). Once both sockets are bound it writes
#   {"port": TCP_PORT, "udp_port": UDP_PORT, "pid": PID, "whitelist": "DIR/whitelist"}
# to PORT_FILE (if given) and stdout, then stays in the foreground until SIGTERM/SIGINT, which it forwards.
# Announce URLs: http://127.0.0.1:TCP_PORT/announce and udp://127.0.0.1:UDP_PORT.
# Add hashes later with: echo HASH >> DIR/whitelist && kill -HUP PID   (PID = opentracker's, from the JSON)
# README.md lists the arguments for starting the binary directly (what the Rust tests do).
set -euo pipefail

dir=${1:?usage: opentracker.sh DIR [PORT_FILE] [INFOHASH ...]}
port_file=${2:-}
shift $(( $# >= 2 ? 2 : 1 ))
mkdir -p "$dir"
dir=$(cd "$dir" && pwd)
touch "$dir/whitelist"
for h in "$@"; do
  [[ $h =~ ^[0-9a-fA-F]{40}$ ]] || { echo "opentracker.sh: not a 40-hex info hash: $h" >&2; exit 2; }
  echo "$h" >> "$dir/whitelist"
done
# As root opentracker chroots into -d and then runs as `nobody`: the directory must be searchable and the
# whitelist readable by nobody, or the whitelist is silently empty and every announce is refused.
chmod a+rx "$dir"
chmod a+r "$dir/whitelist"

pid=""
cleanup() { if [ -n "$pid" ]; then kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; fi; }
trap 'cleanup; exit 0' TERM INT HUP
trap 'cleanup' EXIT

# -i must come before -p/-P: each -p/-P binds the address of the last -i (without -i: all addresses).
# -d then -w: the whitelist path is opened after the chroot into -d (root) or chdir to -d (non-root).
opentracker -i 127.0.0.1 -p 0 -P 0 -d "$dir" -w whitelist &
pid=$!

ports=$(/usr/bin/python3 - "$pid" <<'EOF'
import os, sys, time
pid = sys.argv[1]

def listening():
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            link = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if link.startswith("socket:["):
            inodes.add(link[8:-1])
    found = {}
    for table, state, key in (("tcp", "0A", "tcp"), ("udp", "07", "udp")):
        with open(f"/proc/net/{table}") as f:
            for line in f.read().splitlines()[1:]:
                c = line.split()
                if c[9] in inodes and c[3] == state:
                    found[key] = int(c[1].split(":")[1], 16)
    return found

for _ in range(100):
    try:
        found = listening()
    except FileNotFoundError:
        sys.exit(1)  # opentracker exited
    if "tcp" in found and "udp" in found:
        print(found["tcp"], found["udp"])
        sys.exit(0)
    time.sleep(0.05)
sys.exit(1)
EOF
) || { echo "opentracker.sh: opentracker did not start listening" >&2; exit 1; }
read -r tcp_port udp_port <<<"$ports"
json="{\"port\": $tcp_port, \"udp_port\": $udp_port, \"pid\": $pid, \"whitelist\": \"$dir/whitelist\"}"
if [ -n "$port_file" ]; then
  echo "$json" > "$port_file.tmp.$$" && mv "$port_file.tmp.$$" "$port_file"
fi
echo "$json"
set +e
wait "$pid"
rc=$?
pid=""
exit $rc
