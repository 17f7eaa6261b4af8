#!/usr/bin/python3
"""Real BitTorrent peers for btfs interop tests, built on Debian's python3-libtorrent (2.0.8).

Run with /usr/bin/python3 (the libtorrent module is not importable from other Pythons). Every subcommand prints
exactly one JSON line on stdout (its result, or {"error": ...}); progress and diagnostics go to stderr.

  make      create a .torrent (v1-only by default, --hybrid for v1+v2)
  seed      seed a torrent from a directory until SIGTERM/SIGINT (or --lifetime)
  download  download a torrent or magnet, exit 0 when complete, 1 on timeout or error
  dht-node  a bare DHT node on 127.0.0.1 that others use as their bootstrap node

Everything stays on 127.0.0.1: TCP only for peers (uTP off), no LSD/UPnP/NAT-PMP, DHT off unless a loopback
bootstrap node is given (and then only that node), and an IP filter that blocks every peer, tracker and DHT node
outside 127.0.0.0/8. See README.md next to this file.
"""

import argparse
import json
import os
import signal
import sys
import threading
import time

try:
    import libtorrent as lt
except ImportError as e:  # pragma: no cover - environment problem
    print(json.dumps({"error": f"cannot import libtorrent ({e}); run with /usr/bin/python3 and install "
                               f"python3-libtorrent"}), flush=True)
    sys.exit(2)

PROG = os.path.basename(sys.argv[0])
T0 = time.monotonic()
STOP = threading.Event()


def log(cmd, msg):
    sys.stderr.write(f"[lt {cmd} {time.monotonic() - T0:7.2f}s] {msg}\n")
    sys.stderr.flush()


def emit(obj):
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def fail(msg, code=1, **extra):
    d = {"error": msg}
    d.update(extra)
    emit(d)
    sys.stderr.write(f"{PROG}: error: {msg}\n")
    sys.stderr.flush()
    return code


def write_port_file(path, obj):
    """Atomically (write + rename) so a reader polling for the file never sees half of it."""
    if not path:
        return
    tmp = f"{path}.tmp.{os.getpid()}"
    with open(tmp, "w") as f:
        f.write(json.dumps(obj) + "\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def parse_hostport(s):
    host, _, port = s.rpartition(":")
    if not host or not port.isdigit():
        raise argparse.ArgumentTypeError(f"expected host:port, got {s!r}")
    return host.strip("[]"), int(port)


def install_signal_handlers():
    def handler(signum, _frame):
        STOP.set()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGHUP, handler)


def hard_exit_after(seconds, code):
    """libtorrent's session destructor can block (tracker 'stopped' announces, DHT shutdown): never let that keep
    the process alive after we decided to exit."""

    def run():
        time.sleep(seconds)
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)

    t = threading.Thread(target=run, daemon=True)
    t.start()


def die_with_parent():
    """PR_SET_PDEATHSIG: SIGTERM when the thread that spawned us exits (opt-in, see README)."""
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM, 0, 0, 0)  # PR_SET_PDEATHSIG = 1
        if os.getppid() == 1:
            STOP.set()
    except Exception as e:  # pragma: no cover
        log("-", f"prctl(PR_SET_PDEATHSIG) failed: {e}")


ALERT_MASK = (
    lt.alert.category_t.error_notification
    | lt.alert.category_t.status_notification
    | lt.alert.category_t.storage_notification
    | lt.alert.category_t.tracker_notification
    | lt.alert.category_t.connect_notification
    | lt.alert.category_t.dht_notification
    | lt.alert.category_t.performance_warning
    | lt.alert.category_t.progress_notification  # piece_finished_alert: one per piece
)


def loopback_settings(dht_bootstrap=None, dht=False, verbose=False, port=0):
    """Session settings, given at construction so nothing (DHT bootstrap, LSD, UPnP) starts with defaults."""
    s = {
        # port 0: an ephemeral port; TCP and UDP (DHT, UDP trackers) on the same number
        "listen_interfaces": f"127.0.0.1:{port}",
        "outgoing_interfaces": "",
        "enable_outgoing_utp": False,
        "enable_incoming_utp": False,
        "enable_outgoing_tcp": True,
        "enable_incoming_tcp": True,
        "enable_lsd": False,
        "enable_upnp": False,
        "enable_natpmp": False,
        "enable_dht": bool(dht or dht_bootstrap),
        "dht_bootstrap_nodes": f"{dht_bootstrap[0]}:{dht_bootstrap[1]}" if dht_bootstrap else "",
        "dht_restrict_routing_ips": False,
        "dht_restrict_search_ips": False,
        "dht_announce_interval": 15,
        "allow_multiple_connections_per_ip": True,
        "announce_to_all_trackers": True,
        "announce_to_all_tiers": True,
        "min_reconnect_time": 1,
        "peer_connect_timeout": 5,
        "stop_tracker_timeout": 1,
        "tracker_completion_timeout": 10,
        "tracker_receive_timeout": 5,
        "user_agent": "btfs-tests/libtorrent-" + lt.__version__,
        "alert_mask": ALERT_MASK | (lt.alert.category_t.peer_notification if verbose else 0),
        # throughput on loopback: deeper request queues and bigger socket buffers than the defaults
        "max_out_request_queue": 1500,
        "max_allowed_in_request_queue": 2000,
        "send_buffer_watermark": 4 * 1024 * 1024,
        "send_buffer_low_watermark": 1024 * 1024,
        "send_socket_buffer_size": 4 * 1024 * 1024,
        "recv_socket_buffer_size": 4 * 1024 * 1024,
        "unchoke_slots_limit": 16,
        "active_seeds": 100,
        "active_downloads": 100,
        "active_limit": 200,
    }
    return s


def make_session(cmd, args, dht=False):
    boot = getattr(args, "dht_bootstrap", None)
    if getattr(args, "no_dht", False):
        boot = None
    verbose = getattr(args, "verbose", False)
    ses = lt.session(loopback_settings(boot, dht=dht, verbose=verbose, port=getattr(args, "port", 0) or 0))
    f = lt.ip_filter()
    f.add_rule("0.0.0.0", "255.255.255.255", 1)  # block
    f.add_rule("127.0.0.0", "127.255.255.255", 0)  # allow loopback
    f.add_rule("::", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", 1)
    ses.set_ip_filter(f)
    return ses


def wait_listen(cmd, ses, timeout=10):
    """Wait for the TCP and UDP listen sockets; returns {"tcp": port, "udp": port}."""
    ports = {}
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not STOP.is_set():
        ses.wait_for_alert(200)
        for a in ses.pop_alerts():
            if isinstance(a, lt.listen_succeeded_alert):
                kind = {lt.socket_type_t.tcp: "tcp", lt.socket_type_t.udp: "udp"}.get(a.socket_type)
                if kind:
                    ports[kind] = a.port
                log(cmd, a.message())
            elif isinstance(a, lt.listen_failed_alert):
                log(cmd, a.message())
            elif args_verbose:
                log(cmd, a.message())
        if "tcp" in ports and "udp" in ports:
            return ports
    if "tcp" not in ports and ses.listen_port():
        ports["tcp"] = ses.listen_port()
    return ports


args_verbose = False


def handle_common_alert(cmd, a, verbose):
    """Log what matters; returns nothing. Errors are always logged."""
    if isinstance(a, (lt.tracker_error_alert, lt.tracker_warning_alert, lt.scrape_failed_alert)):
        log(cmd, a.message())
    elif isinstance(a, lt.tracker_reply_alert):
        log(cmd, a.message())
    elif isinstance(a, (lt.torrent_error_alert, lt.file_error_alert, lt.listen_failed_alert,
                        lt.metadata_failed_alert, lt.hash_failed_alert, lt.performance_alert)):
        log(cmd, a.message())
    elif isinstance(a, lt.dht_bootstrap_alert):
        log(cmd, a.message())
    elif verbose:
        log(cmd, a.message())


def torrent_summary(ti):
    ihs = ti.info_hashes()
    v1 = str(ihs.v1) if ihs.has_v1() else None
    v2 = str(ihs.v2) if ihs.has_v2() else None
    fs = ti.files()
    files = []
    for i in range(fs.num_files()):
        pad = bool(fs.file_flags(i) & lt.file_storage.flag_pad_file)
        files.append({"path": fs.file_path(i), "size": fs.file_size(i), "pad": pad})
    whitelist = [h for h in (v1, v2[:40] if v2 else None) if h]
    return {
        "info_hash": v1,
        "info_hash_v2": v2,
        "name": ti.name(),
        "total_size": sum(f["size"] for f in files if not f["pad"]),
        "piece_length": ti.piece_length(),
        "num_pieces": ti.num_pieces(),
        "private": bool(ti.priv()),
        "files": files,
        "whitelist": whitelist,
    }


# ---------------------------------------------------------------------------------------------------------- make


def cmd_make(args):
    path = os.path.abspath(args.path.rstrip("/") or "/")
    if not os.path.exists(path):
        return fail(f"{path} does not exist", 2)
    piece = args.piece_kib * 1024
    if args.piece_kib < 16 or piece & (piece - 1):
        return fail("--piece-kib must be a power of two >= 16", 2)
    fs = lt.file_storage()
    lt.add_files(fs, path)
    if fs.num_files() == 0:
        return fail(f"no files under {path}", 2)
    flags = 0 if args.hybrid else lt.create_torrent.v1_only
    ct = lt.create_torrent(fs, piece, flags)
    for tier, url in enumerate(args.tracker or []):
        ct.add_tracker(url, tier)
    if args.private:
        ct.set_priv(True)
    ct.set_creator("btfs-tests lt.py (libtorrent %s)" % lt.__version__)
    if args.comment:
        ct.set_comment(args.comment)
    lt.set_piece_hashes(ct, os.path.dirname(path))
    data = lt.bencode(ct.generate())
    out = args.out
    tmp = f"{out}.tmp.{os.getpid()}"
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, out)
    ti = lt.torrent_info(out)
    res = torrent_summary(ti)
    res["torrent"] = os.path.abspath(out)
    res["magnet"] = lt.make_magnet_uri(ti)
    emit(res)
    return 0


# ---------------------------------------------------------------------------------------------------------- seed


def cmd_seed(args):
    install_signal_handlers()
    if args.die_with_parent:
        die_with_parent()
    try:
        ti = lt.torrent_info(args.torrent)
    except Exception as e:
        return fail(f"cannot load {args.torrent}: {e}", 2)
    if not os.path.isdir(args.dir):
        return fail(f"--dir {args.dir} is not a directory", 2)
    ses = make_session("seed", args)
    ports = wait_listen("seed", ses)
    if "tcp" not in ports:
        return fail("libtorrent did not start listening on 127.0.0.1", 1)

    atp = lt.add_torrent_params()
    atp.ti = ti
    atp.save_path = os.path.abspath(args.dir)
    fl = lt.torrent_flags.default_flags
    fl &= ~lt.torrent_flags.auto_managed  # no queueing, no share-ratio stop
    fl &= ~lt.torrent_flags.paused
    if args.seed_mode:
        fl |= lt.torrent_flags.seed_mode  # trust the files, verify pieces lazily as they are sent
    if args.no_dht or not args.dht_bootstrap:
        fl |= lt.torrent_flags.disable_dht
    fl |= lt.torrent_flags.disable_lsd
    atp.flags = fl
    h = ses.add_torrent(atp)
    log("seed", f"added {ti.name()} ({ti.total_size()} bytes) from {atp.save_path}, "
                f"checking={'no (seed_mode)' if args.seed_mode else 'full'}")

    ready = False
    checked = False
    deadline = time.monotonic() + args.check_timeout
    last_announce = time.monotonic()
    lifetime_end = time.monotonic() + args.lifetime if args.lifetime > 0 else None
    summary = torrent_summary(ti)
    while not STOP.is_set():
        ses.wait_for_alert(250)
        for a in ses.pop_alerts():
            handle_common_alert("seed", a, args.verbose)
            if isinstance(a, lt.torrent_checked_alert):
                checked = True
            elif isinstance(a, lt.dht_bootstrap_alert) and args.dht_bootstrap and ready:
                h.force_dht_announce()
        st = h.status()
        if st.errc.value() != 0:
            return shutdown(ses, fail(f"torrent error: {st.errc.message()} ({st.error_file})", 1))
        now = time.monotonic()
        if not ready:
            if st.is_seeding:
                ready = True
                res = {"port": ports["tcp"], "udp_port": ports.get("udp"), "info_hash": summary["info_hash"],
                       "info_hash_v2": summary["info_hash_v2"], "pid": os.getpid()}
                write_port_file(args.port_file, res)
                emit(res)
                log("seed", f"seeding on 127.0.0.1:{ports['tcp']}")
                h.force_reannounce(0, -1, lt.reannounce_flags_t.ignore_min_interval)
                if args.dht_bootstrap:
                    h.force_dht_announce()
                last_announce = now
            elif checked and st.state == lt.torrent_status.states.downloading:
                return shutdown(ses, fail(
                    f"content under {args.dir} does not match the torrent: {st.num_pieces}/{ti.num_pieces()} "
                    f"pieces verified", 1))
            elif now > deadline:
                return shutdown(ses, fail(f"checking did not finish in {args.check_timeout}s "
                                          f"({st.progress * 100:.1f}%)", 1))
        else:
            interval = args.tracker_interval
            if args.dht_bootstrap and (interval <= 0 or interval > 5) and st.num_peers == 0:
                interval = 5  # the DHT may not have been bootstrapped at the first announce
            if interval > 0 and now - last_announce >= interval:
                if args.tracker_interval > 0:
                    h.force_reannounce(0, -1, lt.reannounce_flags_t.ignore_min_interval)
                if args.dht_bootstrap:
                    h.force_dht_announce()
                last_announce = now
        if lifetime_end and now > lifetime_end:
            log("seed", f"--lifetime {args.lifetime}s reached, exiting")
            break
    st = h.status()
    log("seed", f"stopping: uploaded {st.total_payload_upload} payload bytes")
    return shutdown(ses, 0)


def shutdown(ses, code):
    """Remove the torrents (closes the files, sends 'stopped' to trackers) and give libtorrent a moment; a
    watchdog makes sure we exit even if libtorrent blocks. main() then leaves with os._exit."""
    hard_exit_after(5, code)
    try:
        torrents = ses.get_torrents()
        for t in torrents:
            ses.remove_torrent(t)
        end = time.monotonic() + 2
        left = len(torrents)
        while left > 0 and time.monotonic() < end:
            ses.wait_for_alert(100)
            left -= sum(isinstance(a, lt.torrent_removed_alert) for a in ses.pop_alerts())
    except Exception:
        pass
    return code


# ------------------------------------------------------------------------------------------------------ download


def cmd_download(args):
    install_signal_handlers()
    if args.die_with_parent:
        die_with_parent()
    if bool(args.torrent) == bool(args.magnet):
        return fail("give exactly one of --torrent and --magnet", 2)
    peers = args.peer or []
    for host, _ in peers:
        if not host.startswith("127."):
            return fail(f"refusing non-loopback peer {host}", 2)
    ses = make_session("download", args)
    ports = wait_listen("download", ses)
    if "tcp" not in ports:
        return fail("libtorrent did not start listening on 127.0.0.1", 1)

    if args.torrent:
        atp = lt.add_torrent_params()
        try:
            atp.ti = lt.torrent_info(args.torrent)
        except Exception as e:
            return fail(f"cannot load {args.torrent}: {e}", 2)
    else:
        try:
            atp = lt.parse_magnet_uri(args.magnet)
        except Exception as e:
            return fail(f"bad magnet: {e}", 2)
    os.makedirs(args.dir, exist_ok=True)
    atp.save_path = os.path.abspath(args.dir)
    fl = lt.torrent_flags.default_flags
    fl &= ~lt.torrent_flags.auto_managed
    fl &= ~lt.torrent_flags.paused
    if not args.dht_bootstrap:
        fl |= lt.torrent_flags.disable_dht
    fl |= lt.torrent_flags.disable_lsd
    atp.flags = fl
    t_add = time.monotonic()
    h = ses.add_torrent(atp)
    for p in peers:
        h.connect_peer(p)
    log("download", f"added {'torrent ' + args.torrent if args.torrent else 'magnet'}, "
                    f"peers={['%s:%d' % p for p in peers]}, dht={'%s:%d' % args.dht_bootstrap if args.dht_bootstrap else 'off'}")

    deadline = t_add + args.timeout
    t_first_peer = None
    t_first_piece = None
    n_pieces_done = 0
    t_metadata = t_add if args.torrent else None
    last_kick = time.monotonic()
    done = False
    while not STOP.is_set():
        ses.wait_for_alert(200)
        for a in ses.pop_alerts():
            handle_common_alert("download", a, args.verbose)
            if isinstance(a, lt.metadata_received_alert) and t_metadata is None:
                t_metadata = time.monotonic()
                log("download", "metadata received")
            elif isinstance(a, lt.dht_bootstrap_alert) and args.dht_bootstrap:
                h.force_dht_announce()
            elif isinstance(a, lt.peer_connect_alert) and t_first_peer is None:
                t_first_peer = time.monotonic()
                log("download", a.message())
            elif isinstance(a, lt.piece_finished_alert):
                n_pieces_done += 1
                if t_first_piece is None:
                    t_first_piece = time.monotonic()
        st = h.status()
        if st.errc.value() != 0:
            return shutdown(ses, fail(f"torrent error: {st.errc.message()} ({st.error_file})", 1))
        now = time.monotonic()
        if st.has_metadata and (st.is_seeding or st.is_finished) and st.state in (
                lt.torrent_status.states.seeding, lt.torrent_status.states.finished):
            done = True
            break
        if st.num_peers == 0 and now - last_kick >= 2:
            # nobody yet: ask the trackers and the DHT again, redial the given peers
            last_kick = now
            for p in peers:
                h.connect_peer(p)
            if st.has_metadata or h.trackers():
                h.force_reannounce(0, -1, lt.reannounce_flags_t.ignore_min_interval)
            if args.dht_bootstrap:
                h.force_dht_announce()
        if now > deadline:
            return shutdown(ses, fail(
                f"timeout after {args.timeout}s: progress {st.progress * 100:.1f}%, {st.num_peers} peers, "
                f"metadata={'yes' if st.has_metadata else 'no'}", 1,
                progress=st.progress, peers=st.num_peers))
    if not done:
        return shutdown(ses, fail("interrupted", 1))
    t_done = time.monotonic()
    ti = h.torrent_file()
    summary = torrent_summary(ti)
    nbytes = summary["total_size"]
    # make sure the data is on disk / in the page cache with final sizes before we report success
    ses.remove_torrent(h)
    t_removed = time.monotonic()
    while time.monotonic() - t_removed < 5:
        ses.wait_for_alert(200)
        if any(isinstance(a, lt.torrent_removed_alert) for a in ses.pop_alerts()):
            break
    secs = t_done - t_add
    # transfer rate between the first and the last verified piece: leaves out process start, peer discovery,
    # metadata exchange and the first piece's round trips
    piece_len = ti.piece_length()
    if t_first_piece is not None and n_pieces_done >= 2 and t_done > t_first_piece:
        xfer = t_done - t_first_piece
        xfer_bytes = max(nbytes - piece_len, 1)
    else:
        xfer = max(t_done - (t_metadata or t_add), 1e-6)
        xfer_bytes = nbytes
    res = {
        "seconds": round(secs, 3),
        "transfer_seconds": round(xfer, 3),
        "bytes": nbytes,
        "payload_downloaded": st.total_payload_download,
        "mib_per_s": round(nbytes / max(secs, 1e-6) / 2 ** 20, 1),
        "transfer_mib_per_s": round(xfer_bytes / xfer / 2 ** 20, 1),
        "peer_seconds": round(t_first_peer - t_add, 3) if t_first_peer else None,
        "info_hash": summary["info_hash"],
        "name": summary["name"],
    }
    emit(res)
    return shutdown(ses, 0)


# ------------------------------------------------------------------------------------------------------ dht-node


def cmd_dht_node(args):
    install_signal_handlers()
    if args.die_with_parent:
        die_with_parent()
    boot = args.bootstrap
    if boot and not boot[0].startswith("127."):
        return fail("refusing a non-loopback bootstrap node", 2)
    args.dht_bootstrap = boot
    ses = make_session("dht-node", args, dht=True)
    ports = wait_listen("dht-node", ses)
    if "udp" not in ports:
        return fail("no UDP listen socket (DHT) on 127.0.0.1", 1)
    res = {"port": ports["udp"], "tcp_port": ports.get("tcp"), "pid": os.getpid()}
    write_port_file(args.port_file, res)
    emit(res)
    log("dht-node", f"DHT node on udp 127.0.0.1:{ports['udp']}")
    lifetime_end = time.monotonic() + args.lifetime if args.lifetime > 0 else None
    last_stats = time.monotonic()
    while not STOP.is_set():
        ses.wait_for_alert(500)
        for a in ses.pop_alerts():
            if isinstance(a, lt.dht_stats_alert):
                nodes = sum(b["num_nodes"] for b in a.routing_table) if a.routing_table else 0
                if args.verbose:
                    log("dht-node", f"routing table: {nodes} nodes")
            else:
                handle_common_alert("dht-node", a, args.verbose)
        if args.verbose and time.monotonic() - last_stats > 5:
            ses.post_dht_stats()
            last_stats = time.monotonic()
        if lifetime_end and time.monotonic() > lifetime_end:
            log("dht-node", f"--lifetime {args.lifetime}s reached, exiting")
            break
    return shutdown(ses, 0)


# ---------------------------------------------------------------------------------------------------------- main


def main(argv=None):
    global args_verbose
    p = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)

    m = sub.add_parser("make", help="create a .torrent")
    m.add_argument("--out", required=True)
    m.add_argument("--piece-kib", type=int, required=True)
    m.add_argument("--hybrid", action="store_true", help="v1+v2 (default: v1 only)")
    m.add_argument("--tracker", action="append", help="announce URL, each in its own tier (repeatable)")
    m.add_argument("--private", action="store_true")
    m.add_argument("--comment")
    m.add_argument("path")

    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--verbose", "-v", action="store_true", help="log every libtorrent alert to stderr")
    common.add_argument("--die-with-parent", action="store_true",
                        help="exit when the spawning thread dies (PR_SET_PDEATHSIG)")

    s = sub.add_parser("seed", parents=[common], help="seed until killed")
    s.add_argument("--torrent", required=True)
    s.add_argument("--dir", required=True, help="save_path: the directory that holds the torrent's name")
    s.add_argument("--port-file")
    s.add_argument("--port", type=int, default=0, help="listen on this port (default: an ephemeral one)")
    s.add_argument("--dht-bootstrap", type=parse_hostport)
    s.add_argument("--no-dht", action="store_true")
    s.add_argument("--tracker-interval", type=float, default=0,
                   help="re-announce to trackers (and DHT) every S seconds (default: only at start)")
    s.add_argument("--seed-mode", action="store_true",
                   help="skip the full hash check (libtorrent seed_mode); default is a full check")
    s.add_argument("--check-timeout", type=float, default=600)
    s.add_argument("--lifetime", type=float, default=3600, help="exit after S seconds (0: never); default 3600")

    d = sub.add_parser("download", parents=[common], help="download and exit when complete")
    d.add_argument("--dir", required=True)
    d.add_argument("--torrent")
    d.add_argument("--magnet")
    d.add_argument("--peer", action="append", type=parse_hostport, help="127.0.0.1:PORT (repeatable)")
    d.add_argument("--dht-bootstrap", type=parse_hostport)
    d.add_argument("--timeout", type=float, default=120)

    n = sub.add_parser("dht-node", parents=[common], help="bare DHT node (bootstrap for others)")
    n.add_argument("--port-file")
    n.add_argument("--bootstrap", type=parse_hostport)
    n.add_argument("--lifetime", type=float, default=3600, help="exit after S seconds (0: never); default 3600")

    args = p.parse_args(argv)
    args_verbose = getattr(args, "verbose", False)
    for a in ("dht_bootstrap",):
        v = getattr(args, a, None)
        if v and not v[0].startswith("127."):
            return fail(f"refusing non-loopback DHT bootstrap {v[0]}", 2)
    try:
        if args.cmd == "make":
            return cmd_make(args)
        if args.cmd == "seed":
            return cmd_seed(args)
        if args.cmd == "download":
            return cmd_download(args)
        if args.cmd == "dht-node":
            return cmd_dht_node(args)
    except KeyboardInterrupt:
        return fail("interrupted", 1)
    except Exception as e:
        return fail(f"{type(e).__name__}: {e}", 1)
    return 2


if __name__ == "__main__":
    code = main()
    sys.stdout.flush()
    sys.stderr.flush()
    # skip interpreter teardown (libtorrent objects finalised in arbitrary order can hang or crash)
    os._exit(code)
