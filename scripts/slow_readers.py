#!/usr/bin/env python3
"""Opens N connections to HOST:PORT that pipeline RESOLVE CODE as fast as
the server reads them and never read a reply, for SECONDS; prints how many
request bytes the server took. (scripts/bench-slow-readers.sh)"""
import select
import socket
import struct
import sys
import time


def main():
    host, port, code, n, seconds = sys.argv[1], int(sys.argv[2]), sys.argv[3].encode(), int(sys.argv[4]), float(sys.argv[5])
    payload = b"\x04" + code
    frame = struct.pack("<I", len(payload)) + payload
    chunk = frame * 4096
    conns = []
    for _ in range(n):
        s = socket.create_connection((host, port))
        s.setblocking(False)
        conns.append(s)
    sent = 0
    end = time.time() + seconds
    while time.time() < end:
        _, writable, _ = select.select([], conns, [], 0.2)
        for s in writable:
            try:
                sent += s.send(chunk)
            except BlockingIOError:
                pass
    print(sent, flush=True)
    sys.stdin.read()


if __name__ == "__main__":
    main()
