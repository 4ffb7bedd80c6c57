#!/usr/bin/env python3
"""Deletes every other code of a file (one code a line, or JSON lines with
a "code" field as `export` writes them) through protocol version 2
(HELLO 2, then pipelined DELETEs; PROTOCOL.md sections 1 and 6), over
CONNECTIONS connections in threads. The "delete half" step of
scripts/bench-merge-server.sh.

Usage: delete_many.py HOST:PORT FILE [CONNECTIONS] [DEPTH]
"""
import json
import socket
import struct
import sys
import threading
import time


def read_exact(sock, n):
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise ConnectionError("closed by the server")
        buf += chunk
    return bytes(buf)


def read_frame(sock):
    (length,) = struct.unpack("<L", read_exact(sock, 4))
    return read_exact(sock, length)


def worker(addr, codes, depth, counts, lock):
    host, port = addr.rsplit(":", 1)
    sock = socket.create_connection((host, int(port)))
    sock.sendall(bytes.fromhex("0200000001 02".replace(" ", "")))
    hello = read_frame(sock)
    if hello[:2] != b"\x11\x02":
        raise RuntimeError(f"HELLO 2 refused: {hello.hex()}")
    ok = failed = 0
    for start in range(0, len(codes), depth):
        batch = codes[start:start + depth]
        sock.sendall(b"".join(struct.pack("<L", 1 + len(c)) + b"\x07" + c for c in batch))
        for _ in batch:
            if read_frame(sock) == b"\x17":
                ok += 1
            else:
                failed += 1
    sock.close()
    with lock:
        counts[0] += ok
        counts[1] += failed


def main():
    addr, path = sys.argv[1], sys.argv[2]
    connections = int(sys.argv[3]) if len(sys.argv) > 3 else 8
    depth = int(sys.argv[4]) if len(sys.argv) > 4 else 64
    codes = []
    with open(path) as f:
        for i, line in enumerate(f):
            if i % 2:
                continue
            line = line.strip()
            code = json.loads(line)["code"] if line.startswith("{") else line
            codes.append(code.encode())
    counts, lock = [0, 0], threading.Lock()
    started = time.monotonic()
    threads = [
        threading.Thread(target=worker, args=(addr, codes[i::connections], depth, counts, lock))
        for i in range(connections)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    took = time.monotonic() - started
    print(f"deleted {counts[0]} of {len(codes)} links in {took:.1f} s ({counts[1]} failed)")
    sys.exit(1 if counts[1] else 0)


if __name__ == "__main__":
    main()
