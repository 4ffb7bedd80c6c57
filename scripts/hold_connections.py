#!/usr/bin/env python3
"""Opens N idle TCP connections to HOST:PORT and holds them until stdin
closes, printing "ready" once all are open. For measuring a server's memory
per idle connection (scripts/bench-peers.sh). Connections beyond 25,000 per
source address spread over 127.0.0.x sources."""
import resource
import socket
import sys


def main():
    host, port, count = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    held = []
    for i in range(count):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if host.startswith("127.") and i >= 25000:
            # Past one source address's ephemeral ports. (Below that,
            # connect() picks the port, which also reuses ports of
            # connections still in TIME_WAIT to other destinations.)
            s.bind((f"127.0.0.{1 + i // 25000}", 0))
        s.connect((host, port))
        held.append(s)
    print("ready", flush=True)
    sys.stdin.read()


if __name__ == "__main__":
    main()
