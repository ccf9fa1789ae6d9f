"""A client run as another OS user: imports first, then drops to UID/GID, then calls the daemon.

Usage: peer_client.py UID GID GROUPS SOCKET ACTION [ARG]
ACTION: encrypt KEY | direct PATH (raw connect, reports the errno)
Prints one JSON line: {"code": ..., "errno": ...}.
"""

from __future__ import annotations

import errno
import json
import os
import socket
import sys

import grpc

from broker.rpc.gen import envelope_pb2 as pb
from broker.rpc.gen import envelope_pb2_grpc


def _drop(uid: int, gid: int, groups: str) -> None:
    os.setgroups([int(g) for g in groups.split(",") if g])
    os.setgid(gid)
    os.setuid(uid)


def _encrypt(path: str, key: str) -> dict[str, object]:
    with grpc.insecure_channel(f"unix:{path}") as channel:
        stub = envelope_pb2_grpc.EnvelopeServiceStub(channel)
        try:
            stub.Encrypt(pb.EncryptRequest(key=key, plaintext=b"peer-client"), timeout=10)
        except grpc.RpcError as exc:
            return {"code": exc.code().name, "details": exc.details()}
    return {"code": "OK"}


def _direct(path: str) -> dict[str, object]:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect(path)
    except OSError as exc:
        return {"errno": errno.errorcode.get(exc.errno or 0, "?")}
    finally:
        sock.close()
    return {"errno": "connected"}


def main() -> None:
    """Run one action as the given user."""
    uid, gid, groups, path, action, arg = sys.argv[1:7]
    _drop(int(uid), int(gid), groups)
    result = _encrypt(path, arg) if action == "encrypt" else _direct(arg)
    result["uid"] = os.getuid()
    sys.stdout.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
