import re
import time
from concurrent.futures import ThreadPoolExecutor

import argon2
import pytest

from broker.core.passwords import (
    DEFAULT_PARAMS,
    MAX_PASSWORD_BYTES,
    Argon2Params,
    PasswordHashFormatError,
    PasswordInputError,
    PasswordMismatchError,
    hash_password,
    needs_rehash,
    parse_hash,
    verify_password,
)

PHC = re.compile(r"^\$argon2id\$v=19\$m=65536,t=3,p=4\$[A-Za-z0-9+/]{22}\$[A-Za-z0-9+/]{43}$")
CHEAP = Argon2Params(time_cost=1, memory_kib=64, parallelism=1)
PHC_CHEAP = re.compile(r"^\$argon2id\$v=19\$m=64,t=1,p=1\$")


@pytest.fixture(scope="module")
def stored():
    """One default-cost hash of `correct horse`, shared because each costs 64 MiB and ~0.2 s."""
    return hash_password(b"correct horse")


class TestHashPassword:
    """hash_password: the seed's Argon2id parameters in a PHC string."""

    def test_format(self, stored):
        """t=3, m=64 MiB, p=4, a 16-byte salt and a 32-byte hash, unpadded base64."""
        assert PHC.match(stored)

    def test_argon2_cffi_verifies_our_hash(self, stored):
        """The reference implementation (argon2-cffi) accepts the hash."""
        assert argon2.PasswordHasher().verify(stored, "correct horse")

    def test_argon2_cffi_refuses_a_wrong_password(self, stored):
        """The reference implementation refuses another password for our hash."""
        with pytest.raises(argon2.exceptions.VerifyMismatchError):
            argon2.PasswordHasher().verify(stored, "correct horsf")

    def test_fresh_salt(self):
        """Two hashes of one password differ."""
        assert hash_password(b"pw", CHEAP) != hash_password(b"pw", CHEAP)

    @pytest.mark.parametrize("password", [b"", b"x" * (MAX_PASSWORD_BYTES + 1)])
    def test_password_bounds(self, password):
        """Empty and over-1024-byte passwords are refused before any work."""
        with pytest.raises(PasswordInputError, match="password"):
            hash_password(password)


class TestVerifyPassword:
    """verify_password over parse_hash."""

    def test_our_hash(self, stored):
        """The right password verifies."""
        verify_password(b"correct horse", parse_hash(stored))

    def test_wrong_password(self, stored):
        """A wrong password fails with the fixed message."""
        with pytest.raises(PasswordMismatchError, match=r"^password does not match$"):
            verify_password(b"Correct horse", parse_hash(stored))

    def test_argon2_cffi_hash_verifies_with_ours(self):
        """A hash made by argon2-cffi with the seed's parameters verifies here."""
        theirs = argon2.PasswordHasher(time_cost=3, memory_cost=65536, parallelism=4).hash("pw")
        verify_password(b"pw", parse_hash(theirs))
        with pytest.raises(PasswordMismatchError):
            verify_password(b"pv", parse_hash(theirs))

    def test_tampered_hash(self, stored):
        """A changed hash value does not verify."""
        tampered = stored[:-2] + ("AA" if not stored.endswith("AA") else "BA")
        with pytest.raises(PasswordMismatchError):
            verify_password(b"correct horse", parse_hash(tampered))

    def test_concurrent_verifies_finish(self, stored):
        """Overlapping Argon2id runs from several threads all finish (none deadlocks)."""
        parsed = parse_hash(stored)
        with ThreadPoolExecutor(4) as pool:
            futures = [pool.submit(verify_password, b"correct horse", parsed) for _ in range(6)]
            for future in futures:
                future.result(timeout=60)

    def test_runs_do_not_wait_for_each_other(self):
        """A cheap hash in one thread finishes while a costly one still runs in another."""
        costly = Argon2Params(time_cost=6, memory_kib=128 * 1024, parallelism=1)
        with ThreadPoolExecutor(2) as pool:
            slow = pool.submit(hash_password, b"pw", costly)
            time.sleep(0.05)  # the costly run starts first
            fast = pool.submit(hash_password, b"pw", CHEAP)
            assert PHC_CHEAP.match(fast.result(timeout=60))
            assert not slow.done()
            slow.result(timeout=60)


class TestParseHash:
    """parse_hash: strict PHC parsing with bounded costs."""

    SALT, HASH = "c2FsdHNhbHRzYWx0c2FsdA", "A" * 43

    def _phc(self, params="m=65536,t=3,p=4", head="$argon2id$v=19"):
        return f"{head}${params}${self.SALT}${self.HASH}"

    def test_round_trip(self, stored):
        """Parsing keeps the parameters, salt and hash."""
        parsed = parse_hash(stored)
        assert parsed.params == DEFAULT_PARAMS
        assert len(parsed.salt) == 16
        assert len(parsed.digest) == 32

    @pytest.mark.parametrize(
        "text",
        [
            "$argon2i$v=19$m=65536,t=3,p=4$c2FsdHNhbHRzYWx0c2FsdA$" + "A" * 43,
            "$argon2id$m=65536,t=3,p=4$c2FsdHNhbHRzYWx0c2FsdA$" + "A" * 43,
            "$argon2id$v=19$m=65536,t=3,p=4$c2FsdHNhbHRzYWx0c2FsdA$" + "A" * 43 + "$x",
            "$argon2id$v=19$t=3,m=65536,p=4$c2FsdHNhbHRzYWx0c2FsdA$" + "A" * 43,
            "$argon2id$v=19$m=065536,t=3,p=4$c2FsdHNhbHRzYWx0c2FsdA$" + "A" * 43,
            "$argon2id$v=19$m=65536,t=3,p=4,keyid=a$c2FsdHNhbHRzYWx0c2FsdA$" + "A" * 43,
            "$argon2id$v=19$m=65536,t=3,p=4$c2FsdHNhbHRzYWx0c2FsdA==$" + "A" * 43,
            "$argon2id$v=19$m=99999999999,t=3,p=4$c2FsdHNhbHRzYWx0c2FsdA$" + "A" * 43,
            "not a hash",
            "$argon2id$v=19$m=65536,t=3,p=4$" + "A" * 300,
        ],
        ids=[
            "argon2i",
            "no-version",
            "trailing-field",
            "reordered",
            "leading-zero",
            "extra-parameter",
            "padded-base64",
            "eleven-digits",
            "garbage",
            "overlong",
        ],
    )
    def test_malformed(self, text):
        """Anything but an exact argon2id v=19 PHC string is refused."""
        with pytest.raises(PasswordHashFormatError, match="not an Argon2id PHC string"):
            parse_hash(text)

    @pytest.mark.parametrize(
        "params",
        [
            "m=4194304,t=3,p=4",
            "m=262145,t=3,p=4",
            "m=65536,t=11,p=4",
            "m=65536,t=0,p=4",
            "m=65536,t=3,p=0",
            "m=65536,t=3,p=17",
            "m=31,t=3,p=4",
        ],
    )
    def test_costs_out_of_bounds(self, params):
        """A crafted string cannot ask for more than 256 MiB, 10 passes or 16 lanes."""
        with pytest.raises(PasswordHashFormatError, match="outside the accepted bounds"):
            parse_hash(self._phc(params))

    def test_other_version(self):
        """Argon2 version 16 (0x10) is refused."""
        with pytest.raises(PasswordHashFormatError, match="only 19"):
            parse_hash(self._phc(head="$argon2id$v=16"))

    @pytest.mark.parametrize(("salt", "digest"), [("A" * 88, "A" * 43), (SALT, "A" * 20)])
    def test_salt_and_hash_sizes(self, salt, digest):
        """Salts over 64 bytes and hashes under 16 bytes are refused."""
        with pytest.raises(PasswordHashFormatError, match="must be"):
            parse_hash(f"$argon2id$v=19$m=65536,t=3,p=4${salt}${digest}")

    def test_needs_rehash(self):
        """Weaker parameters need a rehash; the current ones do not."""
        weak = argon2.PasswordHasher(time_cost=2, memory_cost=19456, parallelism=1).hash("pw")
        assert needs_rehash(parse_hash(weak))
        assert not needs_rehash(parse_hash(self._phc()))
