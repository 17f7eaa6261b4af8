#!/usr/bin/python3
"""A hostile BitTorrent peer for btfs tests: it claims every piece of a torrent and answers every request with
bytes that are not the torrent's.

  liar.py --info-hash <40 hex> --tracker <http announce URL> --port-file <path> --stats <path>

It listens on 127.0.0.1 (a free port), announces itself to the tracker as a seed, and for each connection:
answers the handshake, sends a bitfield with every piece set, unchokes, and replies to each `request` with a
`piece` message of the asked length filled with 0xAA. After every piece message it rewrites `--stats` with
{"pieces_sent": n, "bytes_sent": n}. It speaks no extensions (no metadata, no PEX, no DHT). Stops on SIGTERM.
"""

import argparse
import json
import os
import socket
import struct
import sys
import threading
import urllib.parse
import urllib.request

LOCK = threading.Lock()
SENT = {"pieces_sent": 0, "bytes_sent": 0}


def write_json(path, obj):
    tmp = f"{path}.tmp.{os.getpid()}.{threading.get_ident()}"
    with open(tmp, "w") as f:
        json.dump(obj, f)
    os.replace(tmp, path)


def read_exact(sock, n):
    buf = b""
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise EOFError
        buf += chunk
    return buf


def serve(conn, info_hash, pieces, stats):
    try:
        hs = read_exact(conn, 68)
        if hs[0] != 19 or hs[1:20] != b"BitTorrent protocol" or hs[28:48] != info_hash:
            return
        conn.sendall(bytes([19]) + b"BitTorrent protocol" + bytes(8) + info_hash + b"-LI0001-" + os.urandom(12))
        bitfield = bytearray((pieces + 7) // 8)
        for i in range(pieces):
            bitfield[i // 8] |= 0x80 >> (i % 8)
        conn.sendall(struct.pack(">IB", 1 + len(bitfield), 5) + bytes(bitfield))
        conn.sendall(struct.pack(">IB", 1, 1))  # unchoke
        while True:
            (length,) = struct.unpack(">I", read_exact(conn, 4))
            if length == 0:
                continue  # keep-alive
            body = read_exact(conn, length)
            if body[0] == 6 and length == 13:  # request: index, begin, length
                index, begin, size = struct.unpack(">III", body[1:])
                if size > 1 << 17:
                    return
                conn.sendall(struct.pack(">IBII", 9 + size, 7, index, begin) + b"\xaa" * size)
                with LOCK:
                    SENT["pieces_sent"] += 1
                    SENT["bytes_sent"] += size
                    write_json(stats, SENT)
    except (EOFError, OSError):
        pass
    finally:
        conn.close()


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--info-hash", required=True)
    p.add_argument("--pieces", type=int, required=True, help="number of pieces in the torrent")
    p.add_argument("--tracker", required=True)
    p.add_argument("--port-file", required=True)
    p.add_argument("--stats", required=True)
    a = p.parse_args()
    info_hash = bytes.fromhex(a.info_hash)
    if len(info_hash) != 20:
        sys.exit("--info-hash must be 40 hex digits")
    if not a.tracker.startswith("http://127.0.0.1:"):
        sys.exit("--tracker must be an HTTP tracker on 127.0.0.1")
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    port = listener.getsockname()[1]
    query = urllib.parse.urlencode({
        "info_hash": info_hash, "peer_id": b"-LI0001-" + os.urandom(12), "port": port,
        "uploaded": 0, "downloaded": 0, "left": 0, "compact": 1, "event": "started",
    })
    urllib.request.urlopen(f"{a.tracker}?{query}", timeout=10).read()
    write_json(a.stats, SENT)
    write_json(a.port_file, {"port": port})
    while True:
        conn, _ = listener.accept()
        threading.Thread(target=serve, args=(conn, info_hash, a.pieces, a.stats), daemon=True).start()


if __name__ == "__main__":
    main()
