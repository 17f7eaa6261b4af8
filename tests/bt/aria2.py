#!/usr/bin/python3
"""Download a torrent or magnet with aria2c on loopback and print one JSON line (like `lt.py download`).

  tests/bt/aria2.py --dir D (--torrent X.torrent | --magnet M) [--dht-entry 127.0.0.1:P] [--timeout S]

aria2c cannot be given a peer directly (no option for it, and it ignores `x.pe=` in magnets): it needs a tracker
(in the torrent or the magnet's `tr=`) or a DHT entry point. A UDP tracker only works with aria2's DHT on, so
--udp-tracker (or --dht-entry) turns the DHT on, bound to loopback, with a fresh routing-table file and no entry
point other than the one given. aria2 1.36 computes the wrong info hash for libtorrent's hybrid (v1+v2) torrents:
use v1-only torrents with it. See README.md.

Prints {"seconds", "transfer_seconds", "bytes", "mib_per_s", "transfer_mib_per_s", "exit_code"} on success
(exit 0); {"error": ...} and exit 1 on failure or timeout. "seconds" is aria2c's wall clock (it spends about 2 s
in its one-second ticks: before dialling the first peer and before exiting); "transfer_seconds" runs from the
first peer handshake to "download was complete" in aria2's log.
"""

import argparse
import datetime
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time


def emit(obj):
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def fail(msg, **extra):
    d = {"error": msg}
    d.update(extra)
    emit(d)
    sys.stderr.write(f"aria2.py: error: {msg}\n")
    return 1


def log_time(line):
    m = re.match(r"(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+)", line)
    return datetime.datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S.%f").timestamp() if m else None


def free_port(kind):
    """A loopback port the kernel says is free now. A random one could be another process's: other tests
    running at the same time hold ephemeral ports, and aria2 gives up if it cannot bind its port."""
    with socket.socket(socket.AF_INET, kind) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def aria2_args(d, workdir, dht_entry=None, dht=False, timeout=120, extra=()):
    """The aria2c command line that keeps everything on 127.0.0.1 and exits once the download is complete."""
    use_dht = dht or bool(dht_entry)
    a = [
        "aria2c",
        "--no-conf=true",  # ignore ~/.aria2/aria2.conf
        f"--dir={d}",
        "--seed-time=0",  # exit as soon as the download is complete
        "--bt-enable-lpd=false",
        "--enable-dht6=false",
        f"--enable-dht={'true' if use_dht else 'false'}",
        f"--dht-file-path={os.path.join(workdir, 'dht.dat')}",  # never reuse ~/.cache/aria2/dht.dat (public nodes)
        f"--dht-listen-port={free_port(socket.SOCK_DGRAM)}",
        f"--listen-port={free_port(socket.SOCK_STREAM)}",
        "--interface=127.0.0.1",  # bind peer, DHT and tracker sockets to loopback
        "--disable-ipv6=true",
        "--bt-external-ip=127.0.0.1",
        "--enable-peer-exchange=true",
        "--file-allocation=none",
        "--allow-overwrite=true",
        "--auto-file-renaming=false",
        "--bt-save-metadata=false",
        "--bt-stop-timeout=%d" % max(5, int(timeout)),  # give up after this long at 0 B/s
        "--quiet=true",  # no console readout; the log below has everything
        f"--stop-with-process={os.getpid()}",  # never outlive this wrapper
        f"--log={os.path.join(workdir, 'aria2.log')}",
        "--log-level=info",
    ]
    if dht_entry:
        a.append(f"--dht-entry-point={dht_entry}")
    a.extend(extra)
    return a


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dir", required=True)
    p.add_argument("--torrent")
    p.add_argument("--magnet")
    p.add_argument("--dht-entry", help="127.0.0.1:PORT of a DHT node (turns aria2's DHT on)")
    p.add_argument("--udp-tracker", action="store_true", help="turn aria2's DHT on so that udp:// trackers work")
    p.add_argument("--timeout", type=float, default=120)
    p.add_argument("--keep-log", help="copy aria2's log here")
    p.add_argument("extra", nargs="*", help="more aria2c options (after --)")
    args = p.parse_args()
    if bool(args.torrent) == bool(args.magnet):
        return fail("give exactly one of --torrent and --magnet")
    if args.dht_entry and not args.dht_entry.startswith("127."):
        return fail("refusing a non-loopback DHT entry point")
    if not shutil.which("aria2c"):
        return fail("aria2c not installed")
    os.makedirs(args.dir, exist_ok=True)
    work = tempfile.mkdtemp(prefix="aria2-")
    cmd = aria2_args(os.path.abspath(args.dir), work, args.dht_entry, args.udp_tracker, args.timeout, args.extra)
    cmd.append(os.path.abspath(args.torrent) if args.torrent else args.magnet)
    proc = None

    def on_signal(signum, _frame):
        if proc and proc.poll() is None:
            proc.kill()
        shutil.rmtree(work, ignore_errors=True)
        os._exit(1)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    t0 = time.time()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=args.timeout + 10)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        sys.stderr.write(out)
        shutil.rmtree(work, ignore_errors=True)
        return fail(f"timeout after {args.timeout}s")
    t1 = time.time()
    logtxt = ""
    try:
        with open(os.path.join(work, "aria2.log"), errors="replace") as f:
            logtxt = f.read()
        if args.keep_log:
            shutil.copy(os.path.join(work, "aria2.log"), args.keep_log)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if out.strip():
        sys.stderr.write(out)
    if proc.returncode != 0:
        errs = [l for l in logtxt.splitlines() if "[ERROR]" in l or "[WARN]" in l or "errorCode" in l]
        sys.stderr.write("\n".join(errs[-20:]) + "\n")
        return fail(f"aria2c exited with {proc.returncode} (7: unfinished, e.g. --bt-stop-timeout hit)",
                    exit_code=proc.returncode)
    t_hs = t_done = t_last_complete = None
    nbytes = None
    for line in logtxt.splitlines():
        if t_hs is None and " handshake peerId=" in line and "From:" in line:
            t_hs = log_time(line)
        # the tracker request (an HTTP download) also logs "The download was complete.": take the one just
        # before "Seeding is over." (printed at once with --seed-time=0)
        if "The download was complete." in line:
            t_last_complete = log_time(line)
        if "Seeding is over." in line and t_done is None:
            t_done = t_last_complete
        m = re.search(r"[?&]left=(\d+)", line)
        if m and int(m.group(1)) > (nbytes or 0):
            nbytes = int(m.group(1))
    if nbytes is None:
        nbytes = sum(os.path.getsize(os.path.join(r, f)) for r, _, fs in os.walk(args.dir) for f in fs)
    secs = t1 - t0
    xfer = (t_done - t_hs) if (t_hs and t_done and t_done > t_hs) else None
    emit({
        "seconds": round(secs, 3),
        "transfer_seconds": round(xfer, 3) if xfer else None,
        "bytes": nbytes,
        "mib_per_s": round(nbytes / secs / 2 ** 20, 1),
        "transfer_mib_per_s": round(nbytes / xfer / 2 ** 20, 1) if xfer else None,
        "exit_code": proc.returncode,
    })
    return 0


if __name__ == "__main__":
    sys.exit(main())
