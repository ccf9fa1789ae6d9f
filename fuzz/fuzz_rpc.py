"""Fuzz every request message: raw bytes to every RPC of a real dev daemon.

An input is: byte 0, which method (an index into every unary and streaming RPC of every service
in broker/rpc/gen, sorted by path); then the request's bytes, sent through a generic channel
with no serializer (request streams take frames, see _requests.py). The parent starts one dev
daemon for the whole run with tests/support/daemon.py; the seeds are valid requests made
against it at start (real envelopes, signatures, MACs and password hashes). For every input:

* the call ends with a gRPC status within DEADLINE_SECONDS: DEADLINE_EXCEEDED is a hang;
* the status is none of FORBIDDEN_CODES: UNKNOWN and INTERNAL mean the daemon failed on bytes
  a caller chose, where it must refuse them as the caller's error (INVALID_ARGUMENT);
* the daemon is still running after the call, and SERVING (asked every HEALTH_EVERY calls and
  after any UNAVAILABLE).

FUZZ_RPC_ALLOW_UNKNOWN=1 takes UNKNOWN out of the forbidden codes, for a daemon that still
answers undecodable requests that way. Every status seen is counted per method and printed by
the parent at the end. The daemon runs in another process, so libFuzzer gets no coverage from
it: it mutates the seeds without feedback, which is enough to reach the decoder and each
handler's checks with damaged and out-of-range fields, not to explore deep paths.

    .venv/bin/python fuzz/fuzz_rpc.py -max_total_time=60
"""

from __future__ import annotations

import collections
import contextlib
import json
import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from _harness import ROOT, FindingError, Harness, Target, instrumented, main

# The child decodes each request itself with protobuf's pure-Python implementation, instrumented:
# the only coverage libFuzzer gets, as the daemon's own decoding happens in another process.
with instrumented(["google.protobuf"]):
    import grpc
    from _requests import Method, framed, frames, methods, request_for, seed_requests
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    sys.path.insert(0, str(ROOT / "tests"))  # the one daemon launcher lives in tests/support
    from support.daemon import Daemon, DaemonError

if TYPE_CHECKING:
    from collections.abc import Iterator

# Statuses that fail the run: the daemon must refuse bad bytes, never fail on them.
FORBIDDEN_CODES = frozenset({grpc.StatusCode.UNKNOWN, grpc.StatusCode.INTERNAL})
FORBIDDEN_CODES_ALLOWING_UNKNOWN = frozenset({grpc.StatusCode.INTERNAL})
ALLOW_UNKNOWN_ENV = "FUZZ_RPC_ALLOW_UNKNOWN"
DEADLINE_SECONDS = 30.0  # above the slowest valid call: PBKDF2 at its 10,000,000-iteration bound
HEALTH_EVERY = 200
_HEALTH_TIMEOUT = 10.0
_EXIT_WAIT = 2.0
_WRITE_EVERY = 0.5
_DETAILS_CHARS = 160
_MESSAGES_KEPT = 200  # distinct messages counted per status
_SOCKET_ENV = "KEYBROKER_FUZZ_SOCKET"
_PID_ENV = "KEYBROKER_FUZZ_DAEMON_PID"
_CODES_ENV = "KEYBROKER_FUZZ_CODES"


def forbidden_codes() -> frozenset[grpc.StatusCode]:
    """The statuses that fail this run."""
    if os.environ.get(ALLOW_UNKNOWN_ENV) == "1":
        return FORBIDDEN_CODES_ALLOWING_UNKNOWN
    return FORBIDDEN_CODES


def _alive(pid: int) -> bool:
    """Whether the daemon process still runs (it is not our child: read its state)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


def _serving(channel: grpc.Channel) -> str | None:
    """None when health says SERVING; otherwise what it said."""
    try:
        reply = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(), timeout=_HEALTH_TIMEOUT
        )
    except grpc.RpcError as exc:
        return f"the health check failed with {exc.code().name}"
    if reply.status != health_pb2.HealthCheckResponse.SERVING:
        return f"health says {health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)}"
    return None


class _Tally:
    """Statuses per method and messages per status, in a file the parent reads at the end.

    The child cannot report when it exits (libFuzzer ends it), so the file is rewritten as
    the counts change: at once for a status a method had not given yet, else every half second.
    """

    def __init__(self, path: Path) -> None:
        """Start empty."""
        self._path = path
        self._codes: dict[str, collections.Counter[str]] = collections.defaultdict(
            collections.Counter
        )
        self._messages: dict[str, collections.Counter[str]] = collections.defaultdict(
            collections.Counter
        )
        self._written = 0.0

    def add(self, method: str, code: grpc.StatusCode, details: str) -> None:
        """Count one answer."""
        new = code.name not in self._codes[method]
        self._codes[method][code.name] += 1
        messages, text = self._messages[code.name], details[:_DETAILS_CHARS]
        if text in messages or len(messages) < _MESSAGES_KEPT:
            messages[text] += 1
        if new or time.monotonic() - self._written > _WRITE_EVERY:
            tmp = self._path.with_suffix(".tmp")
            tmp.write_text(json.dumps({"codes": self._codes, "messages": self._messages}))
            tmp.replace(self._path)
            self._written = time.monotonic()


class _Caller:
    """Sends each input to its method and holds the answer and the daemon to the rules."""

    def __init__(
        self, channel: grpc.Channel, methods_: list[Method], pid: int, tally: _Tally
    ) -> None:
        """Call through `channel`; `pid` is the daemon's."""
        self._channel, self._methods, self._pid, self._tally = channel, methods_, pid, tally
        self._forbidden = forbidden_codes()
        self._calls = 0

    def test_one(self, data: bytes) -> None:
        """One call; FindingError when the answer or the daemon breaks a rule."""
        if not data:
            return
        method = self._methods[data[0] % len(self._methods)]
        _decode(method, data[1:])
        try:
            method.call(self._channel, data[1:], DEADLINE_SECONDS)
            code, details = grpc.StatusCode.OK, ""
        except grpc.RpcError as exc:
            code, details = exc.code(), exc.details() or ""
        self._tally.add(method.name, code, details)
        self._calls += 1
        if code == grpc.StatusCode.DEADLINE_EXCEEDED:
            raise FindingError(f"{method.name} gave no answer in {DEADLINE_SECONDS:.0f} s")
        if code in self._forbidden:
            raise FindingError(f"{method.name} answered {code.name}: {details}")
        self._check_daemon(check_health=code == grpc.StatusCode.UNAVAILABLE)

    def _check_daemon(self, *, check_health: bool) -> None:
        """The daemon runs after every call, and says SERVING when asked."""
        deadline = time.monotonic() + (_EXIT_WAIT if check_health else 0)
        while True:  # after UNAVAILABLE, give a dying daemon time to be seen dead
            if not _alive(self._pid):
                raise FindingError("the daemon exited")
            if time.monotonic() >= deadline:
                break
            time.sleep(0.1)
        if check_health or self._calls % HEALTH_EVERY == 0:
            problem = _serving(self._channel)
            if problem:
                raise FindingError(problem)


def _decode(method: Method, payload: bytes) -> None:
    """Decode the request here too: the coverage that steers libFuzzer (see the imports)."""
    for message in frames(payload) if method.client_streaming else [payload]:
        # the pure-Python decoder fails in its own ways (UnicodeDecodeError, RecursionError...):
        # only the daemon's answer is judged
        with contextlib.suppress(Exception):
            method.request.FromString(message)


# (field in a request, method whose reply holds its valid value, field of that reply)
_MADE_BY_THE_DAEMON = (
    ("ciphertext", "EnvelopeService/Encrypt", "ciphertext"),
    ("signature", "SigningService/Sign", "signature"),
    ("mac", "HashingService/ComputeHmac", "mac"),
    ("hash", "HashingService/HashPassword", "hash"),
    ("digest", "HashingService/Digest", "digest"),
    ("hex", "HashingService/Digest", "hex"),
)


def _reply_field(channel: grpc.Channel, method: Method, field: str) -> object:
    """One field of the daemon's reply to the filled request for `method`."""
    request = request_for(method, {}).SerializeToString()
    reply = method.response.FromString(method.call(channel, request, DEADLINE_SECONDS)[0])
    return getattr(reply, field)


def _real_values(channel: grpc.Channel, by_name: dict[str, Method]) -> dict[str, object]:
    """Fields whose valid values only the daemon can make: envelopes, signatures, MACs, hashes."""
    return {
        field: _reply_field(channel, by_name[method], reply_field)
        for field, method, reply_field in _MADE_BY_THE_DAEMON
    }


def _stream_chunks(channel: grpc.Channel, by_name: dict[str, Method]) -> dict[str, list[bytes]]:
    """Chunks for the streams' seeds: a plaintext to seal, and the stream sealed from it."""
    encrypt = by_name["EnvelopeService/EncryptStream"]
    decrypt = by_name["EnvelopeService/DecryptStream"]
    plaintext = [b"keybroker fuzz stream"]
    start = request_for(encrypt, {}).SerializeToString()
    chunks = [encrypt.request(chunk=c).SerializeToString() for c in plaintext]
    replies = encrypt.call(channel, framed([start, *chunks]), DEADLINE_SECONDS)
    stream = b"".join(encrypt.response.FromString(r).chunk for r in replies)
    half = len(stream) // 2
    return {encrypt.path: plaintext, decrypt.path: [stream[:half], stream[half:]]}


class RpcHarness(Harness):
    """Every RPC of a dev daemon, with raw request bytes."""

    name = "rpc"
    max_len = 8192
    timeout_seconds = 90  # an input is one call: its deadline, plus the health check

    def __init__(self) -> None:
        """No daemon yet: the parent starts it in `supervise`."""
        self._daemon: Daemon | None = None
        self._log = ""

    @contextlib.contextmanager
    def supervise(self, work: Path) -> Iterator[dict[str, str]]:
        """A dev daemon for the whole run; it must stop cleanly at the end."""
        daemon = Daemon(work / "state", metrics=False)
        daemon.new_session = True  # a Ctrl-C reaches the harness, which then stops the daemon
        self._daemon = daemon
        try:
            daemon.start()
            yield {
                "PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION": "python",
                _SOCKET_ENV: str(daemon.socket),
                _PID_ENV: str(daemon.pid),
                _CODES_ENV: str(work / "codes.json"),
            }
            if daemon.proc is not None and daemon.proc.poll() is None:  # else: see problems()
                code = daemon.stop()
                if code != 0:
                    raise DaemonError(f"the daemon exited with {code} on SIGTERM")
        finally:
            self._log = daemon.log()
            daemon.close()

    def problems(self, work: Path) -> list[str]:
        """The daemon still runs and says SERVING after the whole run."""
        del work
        daemon = self._daemon
        if daemon is None or daemon.proc is None:
            return ["the daemon did not start"]
        if daemon.proc.poll() is not None:
            return [f"the daemon exited with {daemon.proc.returncode}:\n{daemon.log_tail()}"]
        with daemon.connect() as channel:
            problem = _serving(channel)
        return [problem] if problem else []

    def summary(self, work: Path) -> list[str]:
        """Every status seen, with how many methods gave it, and the first message of each."""
        mode = "UNKNOWN allowed" if forbidden_codes() != FORBIDDEN_CODES else "strict"
        lines = [
            f"forbidden statuses ({mode}): {', '.join(sorted(c.name for c in forbidden_codes()))}"
        ]
        path = work / "codes.json"
        if path.exists():
            lines += _status_lines(json.loads(path.read_text()))
        tracebacks = self._log.count("Traceback (most recent call last)")
        lines.append(f"daemon log: {tracebacks} tracebacks")
        return lines

    def target(self, work: Path) -> Target:
        """Connect to the parent's daemon, make the seeds with it, and call it per input."""
        channel = grpc.insecure_channel(f"unix:{os.environ[_SOCKET_ENV]}")
        all_methods = methods()
        by_name = {m.name: m for m in all_methods}
        real, chunks = _real_values(channel, by_name), _stream_chunks(channel, by_name)
        tally = _Tally(Path(os.environ[_CODES_ENV]))
        caller = _Caller(channel, all_methods, int(os.environ[_PID_ENV]), tally)
        requests = seed_requests(all_methods, real, chunks)
        seeds = [bytes((index,)) + payload for index, payload in requests]
        del work
        return Target(caller.test_one, seeds)


def _status_lines(tally: dict[str, Any]) -> list[str]:
    """One line per status: calls, how many methods gave it, its most frequent messages."""
    calls: collections.Counter[str] = collections.Counter()
    methods_by: collections.Counter[str] = collections.Counter()
    for counts in tally["codes"].values():
        for code, n in counts.items():
            calls[code] += n
            methods_by[code] += 1
    lines = []
    for code, n in calls.most_common():
        common = collections.Counter(tally["messages"].get(code, {})).most_common(3)
        said = ", ".join(f"{m!r} x{k:,}" for m, k in common if m)
        lines.append(
            f"{code}: {n:,} calls, {methods_by[code]} methods" + (f"; {said}" if said else "")
        )
    return lines


if __name__ == "__main__":
    sys.exit(main(RpcHarness()))
