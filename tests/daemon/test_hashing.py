"""HashingService over a real socket: passwords, digests, HMACs, blind indexes, and a flood."""

# The passwords here are sample inputs, not credentials:
# ruff: noqa: S106

from __future__ import annotations

import asyncio
import collections
import contextlib
import hashlib
import os
import re
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import argon2
import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from support.rpc import assert_fails
from support.secure_daemon import ConfiguredDaemon, remove, short_dir

from broker.rpc.gen import envelope_pb2, hashing_pb2_grpc
from broker.rpc.gen import hashing_pb2 as pb
from broker.rpc.gen import key_admin_pb2 as admin_pb

INVALID, PRECONDITION = grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.FAILED_PRECONDITION
NOT_FOUND = grpc.StatusCode.NOT_FOUND
PHC = re.compile(r"^\$argon2id\$v=19\$m=65536,t=3,p=4\$[A-Za-z0-9+/]{22}\$[A-Za-z0-9+/]{43}$")
MiB = 1 << 20


@pytest.fixture(scope="module")
def stub(keys_daemon):
    """HashingService stub on the shared keys daemon."""
    return hashing_pb2_grpc.HashingServiceStub(keys_daemon.channel)


def _hash(stub, password, pepper=""):
    return stub.HashPassword(pb.HashPasswordRequest(password=password, pepper_key=pepper)).hash


def _verify(stub, password, stored, pepper=""):
    request = pb.VerifyPasswordRequest(password=password, hash=stored, pepper_key=pepper)
    return stub.VerifyPassword(request)


def _flip(value):
    return value[:-1] + bytes([value[-1] ^ 1])


class TestPasswords:
    """HashPassword and VerifyPassword: Argon2id in PHC form, optionally peppered."""

    def test_hash_verifies_with_argon2_cffi(self, stub):
        """The daemon's hash has the seed's parameters and argon2-cffi verifies it."""
        stored = _hash(stub, "correct horse battery staple")
        assert PHC.match(stored)
        assert argon2.PasswordHasher().verify(stored, "correct horse battery staple")
        assert _verify(stub, "correct horse battery staple", stored).needs_rehash is False

    def test_argon2_cffi_hash_verifies_in_the_daemon(self, stub):
        """A hash made by argon2-cffi verifies in the daemon; weaker parameters need a rehash."""
        strong = argon2.PasswordHasher(time_cost=3, memory_cost=65536, parallelism=4).hash("pw")
        weak = argon2.PasswordHasher(time_cost=2, memory_cost=19456, parallelism=1).hash("pw")
        assert _verify(stub, "pw", strong).needs_rehash is False
        assert _verify(stub, "pw", weak).needs_rehash is True

    def test_wrong_password(self, stub):
        """A wrong password is INVALID_ARGUMENT with reason VERIFICATION_FAILED."""
        stored = _hash(stub, "correct horse")
        request = pb.VerifyPasswordRequest(password="Correct horse", hash=stored)
        assert_fails(stub.VerifyPassword, request, INVALID, "VERIFICATION_FAILED")

    def test_tampered_hash(self, stub):
        """A changed hash value fails verification."""
        stored = _hash(stub, "pw")
        tampered = stored[:-2] + ("AA" if not stored.endswith("AA") else "BA")
        request = pb.VerifyPasswordRequest(password="pw", hash=tampered)
        assert_fails(stub.VerifyPassword, request, INVALID, "VERIFICATION_FAILED")

    @pytest.mark.parametrize(
        ("stored", "message"),
        [
            ("$2b$12$abcdefghijklmnopqrstuv", "not an Argon2id PHC string"),
            ("$argon2id$v=19$m=4194304,t=3,p=4$c2FsdHNhbHRzYWx0c2FsdA$" + "A" * 43, "bounds"),
        ],
        ids=["bcrypt", "four-gib"],
    )
    def test_malformed_or_absurd_hash(self, stub, stored, message):
        """A non-Argon2id string or one asking for 4 GiB is INVALID_ARGUMENT, nothing runs."""
        request = pb.VerifyPasswordRequest(password="pw", hash=stored)
        assert_fails(stub.VerifyPassword, request, INVALID, "INVALID_ARGUMENT", message)

    @pytest.mark.parametrize(
        ("password", "message"),
        [("p" * 1025, "password is longer than 1024 bytes"), ("", "password must not be empty")],
    )
    def test_password_bounds(self, stub, password, message):
        """Oversize and empty passwords are INVALID_ARGUMENT naming the bound."""
        request = pb.HashPasswordRequest(password=password)
        assert_fails(stub.HashPassword, request, INVALID, "INVALID_ARGUMENT", message)

    def test_pepper(self, stub):
        """A peppered hash verifies only with the same pepper key."""
        stored = _hash(stub, "pw", pepper="hmac")
        assert _verify(stub, "pw", stored, pepper="hmac").needs_rehash is False
        request = pb.VerifyPasswordRequest(password="pw", hash=stored)
        assert_fails(stub.VerifyPassword, request, INVALID, "VERIFICATION_FAILED")
        request.pepper_key = "rot-pepper"
        assert_fails(stub.VerifyPassword, request, INVALID, "VERIFICATION_FAILED")

    @pytest.mark.parametrize(("key", "code"), [("default", PRECONDITION), ("nope", NOT_FOUND)])
    def test_pepper_key_type(self, stub, key, code):
        """Only HMAC keys pepper: an envelope key is FAILED_PRECONDITION, unknown NOT_FOUND."""
        assert_fails(stub.HashPassword, pb.HashPasswordRequest(password="pw", pepper_key=key), code)

    def test_pepper_rotation(self, stub, keys_daemon):
        """After rotating the pepper key old hashes verify and ask for a rehash."""
        old = _hash(stub, "pw", pepper="rot-pepper")
        keys_daemon.admin.RotateKey(admin_pb.RotateKeyRequest(key="rot-pepper"))
        assert _verify(stub, "pw", old, pepper="rot-pepper").needs_rehash is True
        new = _hash(stub, "pw", pepper="rot-pepper")
        assert _verify(stub, "pw", new, pepper="rot-pepper").needs_rehash is False


class TestDigests:
    """Digest, DigestBatch and VerifyDigest: SHA-256."""

    def test_digest(self, stub):
        """Raw and lowercase hex SHA-256."""
        reply = stub.Digest(pb.DigestRequest(data=b"abc"))
        assert reply.digest == hashlib.sha256(b"abc").digest()
        assert reply.hex == hashlib.sha256(b"abc").hexdigest()

    def test_batch(self, stub):
        """One digest per item, in order."""
        items = [pb.DigestRequest(data=bytes([i])) for i in range(5)]
        results = stub.DigestBatch(pb.DigestBatchRequest(items=items)).results
        assert [r.digest for r in results] == [
            hashlib.sha256(bytes([i])).digest() for i in range(5)
        ]

    @pytest.mark.parametrize("form", ["digest", "hex", "HEX"])
    def test_verify(self, stub, form):
        """A matching digest verifies, given raw or as hex in either case."""
        expected = hashlib.sha256(b"abc")
        value = {
            "digest": expected.digest(),
            "hex": expected.hexdigest(),
            "HEX": expected.hexdigest().upper(),
        }
        field = "digest" if form == "digest" else "hex"
        stub.VerifyDigest(pb.VerifyDigestRequest(data=b"abc", **{field: value[form]}))

    def test_tampered(self, stub):
        """Other data or a changed digest is VERIFICATION_FAILED."""
        digest = hashlib.sha256(b"abc").digest()
        for request in (
            pb.VerifyDigestRequest(data=b"abd", digest=digest),
            pb.VerifyDigestRequest(data=b"abc", digest=_flip(digest)),
        ):
            assert_fails(stub.VerifyDigest, request, INVALID, "VERIFICATION_FAILED")

    @pytest.mark.parametrize(
        "request_",
        [
            pb.VerifyDigestRequest(data=b"abc", hex="zz" * 32),
            pb.VerifyDigestRequest(data=b"abc", hex="ab"),
            pb.VerifyDigestRequest(data=b"abc", digest=b"\0" * 31),
            pb.VerifyDigestRequest(data=b"abc"),
        ],
        ids=["not-hex", "short-hex", "short-digest", "missing"],
    )
    def test_malformed_expected_digest(self, stub, request_):
        """A malformed expected digest is INVALID_ARGUMENT naming the form."""
        assert_fails(stub.VerifyDigest, request_, INVALID, "INVALID_ARGUMENT", "SHA-256")

    def test_oversize(self, stub):
        """Data over server.max_plaintext_bytes is INVALID_ARGUMENT naming the limit."""
        request = pb.DigestRequest(data=b"x" * (4 * MiB + 1))
        assert_fails(
            stub.Digest, request, INVALID, "INVALID_ARGUMENT", "server.max_plaintext_bytes"
        )


class TestHmac:
    """ComputeHmac, VerifyHmac and ComputeHmacBatch."""

    def test_compute_and_verify(self, stub):
        """A 32-byte MAC that verifies, naming the version."""
        mac = stub.ComputeHmac(pb.ComputeHmacRequest(key="hmac", data=b"amount=100"))
        assert (len(mac.mac), mac.key, mac.key_version) == (32, "hmac", 1)
        request = pb.VerifyHmacRequest(key="hmac", data=b"amount=100", mac=mac.mac)
        assert stub.VerifyHmac(request).key_version == 1

    def test_tampered(self, stub):
        """A flipped bit, a truncated MAC or other data is VERIFICATION_FAILED."""
        mac = stub.ComputeHmac(pb.ComputeHmacRequest(key="hmac", data=b"amount=100")).mac
        for data, value in (
            (b"amount=100", _flip(mac)),
            (b"amount=100", mac[:16]),
            (b"amount=900", mac),
        ):
            request = pb.VerifyHmacRequest(key="hmac", data=data, mac=value)
            exc = assert_fails(stub.VerifyHmac, request, INVALID, "VERIFICATION_FAILED")
            assert exc.details() == "verification failed"

    @pytest.mark.parametrize("key", ["default", "signing", "derive"])
    def test_wrong_key_type(self, stub, key):
        """Only HMAC keys MAC."""
        request = pb.ComputeHmacRequest(key=key, data=b"x")
        assert_fails(stub.ComputeHmac, request, PRECONDITION, "WRONG_KEY_PURPOSE")
        request = pb.VerifyHmacRequest(key=key, data=b"x", mac=b"m" * 32)
        assert_fails(stub.VerifyHmac, request, PRECONDITION, "WRONG_KEY_PURPOSE")

    def test_unknown_key(self, stub):
        """An unknown key is NOT_FOUND."""
        request = pb.ComputeHmacRequest(key="nope", data=b"x")
        assert_fails(stub.ComputeHmac, request, NOT_FOUND, "KEY_NOT_FOUND")

    def test_oversize(self, stub):
        """Data over server.max_plaintext_bytes is INVALID_ARGUMENT naming the limit."""
        request = pb.ComputeHmacRequest(key="hmac", data=b"x" * (4 * MiB + 1))
        assert_fails(
            stub.ComputeHmac, request, INVALID, "INVALID_ARGUMENT", "server.max_plaintext_bytes"
        )

    def test_batch(self, stub):
        """Batch MACs equal single MACs; a bad item fails alone."""
        items = [
            pb.ComputeHmacRequest(key="hmac", data=b"a"),
            pb.ComputeHmacRequest(key="signing", data=b"b"),
            pb.ComputeHmacRequest(key="hmac", data=b"c"),
        ]
        results = stub.ComputeHmacBatch(pb.ComputeHmacBatchRequest(items=items)).results
        single = stub.ComputeHmac(pb.ComputeHmacRequest(key="hmac", data=b"c")).mac
        assert results[2].response.mac == single
        assert (results[1].error.code, results[1].error.reason) == (9, "WRONG_KEY_PURPOSE")

    def test_rotation(self, stub, keys_daemon):
        """After rotation new MACs use version 2 and old MACs still verify as version 1."""
        old = stub.ComputeHmac(pb.ComputeHmacRequest(key="rot-hmac", data=b"x")).mac
        keys_daemon.admin.RotateKey(admin_pb.RotateKeyRequest(key="rot-hmac"))
        new = stub.ComputeHmac(pb.ComputeHmacRequest(key="rot-hmac", data=b"x"))
        assert new.key_version == 2
        assert new.mac != old
        request = pb.VerifyHmacRequest(key="rot-hmac", data=b"x", mac=old)
        assert stub.VerifyHmac(request).key_version == 1
        request.key_version = 2
        assert_fails(stub.VerifyHmac, request, INVALID, "VERIFICATION_FAILED")


def _index(stub, value=b"a@example.com", **fields):
    fields = {"key": "hmac", "field": "email", "tenant": "acme", **fields}
    return stub.BlindIndex(pb.BlindIndexRequest(value=value, **fields))


class TestBlindIndex:
    """BlindIndex and BlindIndexBatch."""

    def test_deterministic_and_scoped(self, stub):
        """Same inputs give the same index; another field, tenant or value another one."""
        base = _index(stub)
        assert (len(base.index), base.key, base.key_version) == (32, "hmac", 1)
        assert _index(stub).index == base.index
        others = [
            _index(stub, field="login"),
            _index(stub, tenant="globex"),
            _index(stub, b"b@example.com"),
        ]
        assert base.index not in {o.index for o in others}

    def test_not_the_plain_hmac(self, stub):
        """The index key is derived: the index is not the key's plain HMAC of the value."""
        plain = stub.ComputeHmac(pb.ComputeHmacRequest(key="hmac", data=b"a@example.com")).mac
        assert _index(stub).index != plain

    def test_length(self, stub):
        """16..32 bytes; a shorter index is a prefix of the full one."""
        assert _index(stub, length=16).index == _index(stub).index[:16]
        for length in (8, 33):
            request = pb.BlindIndexRequest(key="hmac", field="f", value=b"v", length=length)
            assert_fails(stub.BlindIndex, request, INVALID, "INVALID_ARGUMENT", "16..32")

    def test_field_required(self, stub):
        """An empty field is INVALID_ARGUMENT."""
        request = pb.BlindIndexRequest(key="hmac", value=b"v")
        assert_fails(stub.BlindIndex, request, INVALID, "INVALID_ARGUMENT", "field")

    @pytest.mark.parametrize(("key", "code"), [("default", PRECONDITION), ("nope", NOT_FOUND)])
    def test_wrong_or_unknown_key(self, stub, key, code):
        """Only HMAC keys index."""
        assert_fails(stub.BlindIndex, pb.BlindIndexRequest(key=key, field="f", value=b"v"), code)

    def test_oversize(self, stub):
        """Values over server.max_plaintext_bytes are INVALID_ARGUMENT naming the limit."""
        request = pb.BlindIndexRequest(key="hmac", field="f", value=b"x" * (4 * MiB + 1))
        assert_fails(
            stub.BlindIndex, request, INVALID, "INVALID_ARGUMENT", "server.max_plaintext_bytes"
        )

    def test_batch(self, stub):
        """Bulk indexing gives the single-call tokens; a bad item fails alone."""
        values = [b"a@example.com", b"b@example.com"]
        items = [
            pb.BlindIndexRequest(key="hmac", field="email", tenant="acme", value=v) for v in values
        ]
        items.insert(1, pb.BlindIndexRequest(key="hmac", field="email", value=b"v", length=99))
        results = stub.BlindIndexBatch(pb.BlindIndexBatchRequest(items=items)).results
        assert [results[0].response.index, results[2].response.index] == [
            _index(stub, v).index for v in values
        ]
        assert (results[1].error.code, results[1].error.reason) == (3, "INVALID_ARGUMENT")


def _memory(pid):
    """VmRSS and VmHWM (peak RSS) of a process, in bytes."""
    fields = dict(
        line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
    )
    return {k: int(fields[k].split()[0]) * 1024 for k in ("VmRSS", "VmHWM")}


async def _flood(socket, count):
    """`count` HashPassword calls at once; the status code of each."""
    async with grpc.aio.insecure_channel(f"unix:{socket}") as channel:
        stub = hashing_pb2_grpc.HashingServiceStub(channel)

        async def one(i):
            try:
                await stub.HashPassword(pb.HashPasswordRequest(password=f"password {i}"))
            except grpc.aio.AioRpcError as exc:
                return exc.code()
            return grpc.StatusCode.OK

        return collections.Counter(await asyncio.gather(*(one(i) for i in range(count))))


class TestMemoryBudget:
    """A flood of password hashes against the default 256 MiB budget."""

    BUDGET = 256 * MiB
    # Beyond the idle daemon and the budget: gRPC buffers for 200 small in-flight calls, the
    # pool's thread stacks and allocator slack (measured at about 4 MiB on Linux x86-64).
    MARGIN = 32 * MiB

    @pytest.mark.slow
    async def test_flood_of_200_hashes(self, make_daemon):
        """The excess gets RESOURCE_EXHAUSTED, peak RSS stays in budget and the daemon serves on."""
        daemon = make_daemon().start()
        daemon.envelope.Encrypt(envelope_pb2.EncryptRequest(key="default", plaintext=b"warm"))
        idle = _memory(daemon.proc.pid)["VmRSS"]

        codes = await _flood(daemon.socket, 200)

        assert set(codes) == {grpc.StatusCode.OK, grpc.StatusCode.RESOURCE_EXHAUSTED}, codes
        assert codes[grpc.StatusCode.OK] >= 1
        assert codes[grpc.StatusCode.RESOURCE_EXHAUSTED] >= 100
        peak = _memory(daemon.proc.pid)["VmHWM"]
        assert peak <= idle + self.BUDGET + self.MARGIN, (idle, peak)
        health = health_pb2_grpc.HealthStub(daemon.channel).Check(health_pb2.HealthCheckRequest())
        assert health.status == health_pb2.HealthCheckResponse.SERVING
        reply = daemon.envelope.Encrypt(envelope_pb2.EncryptRequest(key="default", plaintext=b"ok"))
        assert reply.ciphertext
        hashing = hashing_pb2_grpc.HashingServiceStub(daemon.channel)
        assert PHC.match(hashing.HashPassword(pb.HashPasswordRequest(password="after")).hash)


# Two callers on one daemon: each listener is its own identity, and no policy is configured.
TWO_CALLERS = """
[server]
state_dir = "{state}"
allow_root = true

[[listeners]]
kind = "unix"
path = "{run}/a.sock"
identity = "app-a"

[[listeners]]
kind = "unix"
path = "{run}/b.sock"
identity = "app-b"

[keys.default]
uri = "local://default"
"""
# The largest hash string VerifyPassword accepts by default ([hashing] max_memory_kib,
# max_time_cost, max_parallelism): 128 MiB, about four times the work of a default hash.
MAX_COST = "m=131072,t=6,p=8"
OVER_COST = [
    ("m=262144,t=6,p=8", "hashing.max_memory_kib"),
    ("m=131072,t=7,p=8", "hashing.max_time_cost"),
    ("m=131072,t=6,p=9", "hashing.max_parallelism"),
]


def _phc(params, digest="A" * 43):
    """A well-formed hash string with these parameters (its digest matches no password)."""
    return f"$argon2id$v=19${params}$c2FsdHNhbHRzYWx0c2FsdA${digest}"


@pytest.fixture
def two_callers():
    """A daemon with sockets a.sock (caller app-a) and b.sock (caller app-b); stopped after."""
    base = short_dir()
    daemon = ConfiguredDaemon(
        base,
        TWO_CALLERS.format(state=base / "state", run=base),
        base / "a.sock",
        {"ECL_CRYPTO_LOCAL_MASTER_KEY": os.urandom(32).hex()},
    ).start()
    try:
        yield daemon
    finally:
        try:
            daemon.stop()
        finally:
            daemon.kill()
            remove(base)


async def _verify_code(stub, password, stored):
    try:
        await stub.VerifyPassword(pb.VerifyPasswordRequest(password=password, hash=stored))
    except grpc.aio.AioRpcError as exc:
        return exc.code()
    return grpc.StatusCode.OK


# Four one-lane hashes in threads must take at most this many times one hash before the
# daemon is measured: 2x is two free cores, 2.4x still leaves the daemon's 3x bound a margin.
SPARE_CORE_RATIO = 2.4


def _local_run(stored, count):
    """Wall times of three tries of `count` verifications of `stored` at once in threads."""
    hasher = argon2.PasswordHasher()
    tries = []
    with ThreadPoolExecutor(count) as pool:
        for _ in range(3):
            start = time.perf_counter()
            list(pool.map(lambda _: hasher.verify(stored, "pw"), range(count)))
            tries.append(time.perf_counter() - start)
    return tries


async def _timed(calls):
    """Run the calls at once; the wall time and each one's status code."""
    start = time.perf_counter()
    codes = await asyncio.gather(*calls)
    return time.perf_counter() - start, codes


class TestCosts:
    """Hash strings over the configured cost maxima are refused before any work."""

    @pytest.mark.parametrize(("params", "setting"), OVER_COST, ids=["memory", "time", "lanes"])
    def test_over_cost_hash_is_invalid(self, stub, params, setting):
        """A hash string costlier than a configured maximum is INVALID_ARGUMENT naming it."""
        request = pb.VerifyPasswordRequest(password="pw", hash=_phc(params))
        assert_fails(stub.VerifyPassword, request, INVALID, "INVALID_ARGUMENT", setting)

    def test_max_cost_hash_runs(self, stub):
        """A hash string at every maximum is checked (and here does not match)."""
        request = pb.VerifyPasswordRequest(password="pw", hash=_phc(MAX_COST))
        assert_fails(stub.VerifyPassword, request, INVALID, "VERIFICATION_FAILED")


class TestConcurrency:
    """Admitted hashes run at the same time, and one caller cannot take the whole budget."""

    @pytest.mark.slow
    async def test_four_hashes_run_concurrently(self, two_callers):
        """Four admitted hashes (two per caller) take well under four times one hash.

        Each hash has one lane, so it runs on one core: one after another, four take 4x one
        hash; on two free cores, about 2x. The bound of 3x leaves room for the rest of a
        shared machine, and each measurement keeps the best of three tries, since
        interference only ever adds time. The same four hashes in threads of this process
        show whether the machine has a spare core right now; without one no implementation
        can pass, and the test is skipped rather than left to chance.
        """
        stored = argon2.PasswordHasher(time_cost=3, memory_cost=65536, parallelism=1).hash("pw")
        machine = min(_local_run(stored, 4)) / min(_local_run(stored, 1))
        if machine > SPARE_CORE_RATIO:
            pytest.skip(f"four hashes in threads take {machine:.1f}x one here: no spare core")
        async with _channel(two_callers, "a") as a, _channel(two_callers, "b") as b:
            tries = []
            for _ in range(3):
                for stubs in ((a,), (a, a, b, b)):
                    seconds, codes = await _timed([_verify_code(s, "pw", stored) for s in stubs])
                    assert codes == [grpc.StatusCode.OK] * len(stubs)
                    tries.append(seconds)
        assert min(tries[1::2]) < 3 * min(tries[::2]), (machine, tries)

    @pytest.mark.slow
    async def test_cheap_hash_does_not_wait_for_a_costly_one(self, two_callers):
        """While app-a's max-cost check runs, app-b's cheap check answers at once."""
        costly = argon2.PasswordHasher(time_cost=6, memory_cost=131072, parallelism=8).hash("pw")
        cheap = argon2.PasswordHasher(time_cost=1, memory_cost=64, parallelism=1).hash("pw")
        async with _channel(two_callers, "a") as a, _channel(two_callers, "b") as b:
            started = time.perf_counter()
            running = asyncio.create_task(_verify_code(a, "pw", costly))
            await asyncio.sleep(0.1)
            cheap_seconds, codes = await _timed([_verify_code(b, "pw", cheap)])
            assert codes == [grpc.StatusCode.OK]
            assert await running == grpc.StatusCode.OK
            costly_seconds = time.perf_counter() - started
        assert cheap_seconds < costly_seconds / 4, (cheap_seconds, costly_seconds)

    @pytest.mark.slow
    async def test_flooding_caller_cannot_starve_another(self, two_callers):
        """app-a floods max-cost checks; every HashPassword of app-b is still served."""
        stop = asyncio.Event()

        async def flood(stub):
            codes = collections.Counter()
            while not stop.is_set():
                code = await _verify_code(stub, "pw", _phc(MAX_COST))
                codes[code] += 1
                if code == grpc.StatusCode.RESOURCE_EXHAUSTED:
                    await asyncio.sleep(0.01)
            return codes

        async with _channel(two_callers, "a") as a, _channel(two_callers, "b") as b:
            flooders = [asyncio.create_task(flood(a)) for _ in range(8)]
            await asyncio.sleep(0.3)
            served = [await _hash_code(b, f"password {i}") for i in range(3)]
            stop.set()
            flooded = sum(await asyncio.gather(*flooders), collections.Counter())
        assert served == [grpc.StatusCode.OK] * 3
        assert flooded[INVALID] >= 1  # app-a's checks ran (and did not match)
        assert flooded[grpc.StatusCode.RESOURCE_EXHAUSTED] >= 1  # and app-a was held back


async def _hash_code(stub, password):
    try:
        await stub.HashPassword(pb.HashPasswordRequest(password=password))
    except grpc.aio.AioRpcError as exc:
        return exc.code()
    return grpc.StatusCode.OK


@contextlib.asynccontextmanager
async def _channel(daemon, caller):
    """An aio HashingService stub on the socket of app-a or app-b."""
    async with grpc.aio.insecure_channel(f"unix:{daemon.base / caller}.sock") as channel:
        yield hashing_pb2_grpc.HashingServiceStub(channel)
