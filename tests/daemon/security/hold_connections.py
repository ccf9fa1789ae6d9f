"""Hold idle connections to a socket as another OS user, and say how many the daemon kept.

Usage: hold_connections.py UID GID GROUPS SOCKET COUNT
Drops to UID/GID/GROUPS, opens COUNT connections that never send a byte, prints one JSON line
{"open": N, "refused": M}, then keeps them open until its standard input reaches end of file.
Tests import `refused` from here to classify their own connections the same way.
"""

from __future__ import annotations

import json
import os
import select
import socket
import sys
import time

_EVENTS = select.POLLIN | select.POLLRDHUP | select.POLLHUP


def refused(socks: list[socket.socket], wait: float = 3.0) -> int:
    """How many of socks the far end closed: the proxy closes a refused one at accept.

    A kept connection either shows the gRPC server's first frame or stays silent until `wait`.
    """
    poller = select.poll()
    pending = {sock.fileno(): sock for sock in socks}
    for fd in pending:
        poller.register(fd, _EVENTS)
    closed, deadline = 0, time.monotonic() + wait
    while pending and time.monotonic() < deadline:
        for fd, _ in poller.poll(100):
            sock = pending.pop(fd, None)
            if sock is None:
                continue
            poller.unregister(fd)
            try:
                data = sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT)
            except ConnectionResetError:
                data = b""
            closed += data == b""
    return closed


def main() -> None:
    """Open, classify, report, hold."""
    uid, gid, groups, path, count = sys.argv[1:6]
    os.setgroups([int(g) for g in groups.split(",") if g])
    os.setgid(int(gid))
    os.setuid(int(uid))
    held: list[socket.socket] = []
    for _ in range(int(count)):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.connect(path)
        held.append(sock)
    closed = refused(held)
    sys.stdout.write(json.dumps({"open": len(held) - closed, "refused": closed}) + "\n")
    sys.stdout.flush()
    sys.stdin.read()


if __name__ == "__main__":
    main()
