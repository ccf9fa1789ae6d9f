import pytest

from keybroker_client.compat import exceptions, kdf


class TestHkdf:
    """kdf.derive_key_hkdf over caller-held material."""

    def test_rfc5869_case_1(self, vectors):
        """HKDF-SHA256 matches RFC 5869 test case 1."""
        v = vectors["hkdf_sha256"]

        okm = kdf.derive_key_hkdf(
            input_key_material=bytes.fromhex(v["ikm"]),
            salt=bytes.fromhex(v["salt"]),
            info=bytes.fromhex(v["info"]),
            length=v["length"],
        )

        assert okm.hex() == v["okm"]

    def test_info_separates_keys(self):
        """Different info gives unrelated keys from the same material."""
        material = b"m" * 32

        assert kdf.derive_key_hkdf(material, info=b"a") != kdf.derive_key_hkdf(material, info=b"b")

    def test_default_length_is_32(self):
        """Without a length the key is 256 bits."""
        assert len(kdf.derive_key_hkdf(b"m" * 32)) == 32

    def test_no_salt_is_a_fresh_random_salt(self):
        """salt=None draws a random salt, so the same material gives different keys."""
        material = b"m" * 32

        assert kdf.derive_key_hkdf(material) != kdf.derive_key_hkdf(material)

    def test_explicit_salt_is_deterministic(self):
        """With the same salt and info the same key comes back."""
        first = kdf.derive_key_hkdf(b"m" * 32, salt=b"s", info=b"i")

        assert kdf.derive_key_hkdf(b"m" * 32, salt=b"s", info=b"i") == first

    def test_positional_order_is_the_seeds(self):
        """derive_key_hkdf(material, length, salt, info)."""
        assert len(kdf.derive_key_hkdf(b"m" * 32, 16, b"s", b"i")) == 16

    @pytest.mark.parametrize("length", [0, -1])
    def test_length_below_one_is_refused(self, length):
        """A length below 1 is a parameter error."""
        with pytest.raises(exceptions.InvalidParameterError, match="length must be at least 1"):
            kdf.derive_key_hkdf(b"m" * 32, length=length)

    def test_length_beyond_hkdf_is_a_derivation_error(self):
        """More than 255 SHA-256 blocks cannot be derived: KeyDerivationError with the cause."""
        with pytest.raises(exceptions.KeyDerivationError, match="8161 bytes") as caught:
            kdf.derive_key_hkdf(b"m" * 32, length=255 * 32 + 1)

        assert isinstance(caught.value.cause, ValueError)

    def test_empty_material_is_refused(self):
        """There is nothing to derive from empty material."""
        with pytest.raises(exceptions.InvalidParameterError, match="input_key_material"):
            kdf.derive_key_hkdf(b"")


class TestPbkdf2:
    """kdf.derive_key_pbkdf2 over a caller's password."""

    def test_rfc7914_vector(self, vectors):
        """PBKDF2-HMAC-SHA256 matches the RFC 7914 test vector, and the salt is returned."""
        v = vectors["pbkdf2_hmac_sha256"]
        salt = bytes.fromhex(v["salt"])

        key, used_salt = kdf.derive_key_pbkdf2(
            passphrase=v["password"], salt=salt, iterations=v["iterations"], length=v["length"]
        )

        assert key.hex() == v["key"]
        assert used_salt == salt

    def test_fresh_salt_is_32_random_bytes(self):
        """Without a salt a new 32-byte salt is drawn and returned."""
        _, first = kdf.derive_key_pbkdf2(b"pw", iterations=1)
        _, second = kdf.derive_key_pbkdf2(b"pw", iterations=1)

        assert len(first) == 32
        assert first != second

    def test_returned_salt_reproduces_the_key(self):
        """Deriving again with the returned salt gives the same key."""
        key, salt = kdf.derive_key_pbkdf2("hunter2", iterations=10)

        assert kdf.derive_key_pbkdf2("hunter2", salt=salt, iterations=10) == (key, salt)

    def test_default_iterations_are_600000(self):
        """The default work factor is the seed's 600,000 iterations."""
        assert kdf.DEFAULT_PBKDF2_ITERATIONS == 600_000

    @pytest.mark.parametrize(("name", "value"), [("iterations", 0), ("length", 0)])
    def test_zero_counts_are_refused(self, name, value):
        """Zero iterations or length are refused before any work."""
        with pytest.raises(exceptions.InvalidParameterError, match=name):
            kdf.derive_key_pbkdf2(b"pw", salt=b"s" * 16, **{name: value})

    def test_empty_salt_is_refused(self):
        """An explicit empty salt is a mistake; None asks for a fresh one."""
        with pytest.raises(exceptions.InvalidParameterError, match="pass None"):
            kdf.derive_key_pbkdf2(b"pw", salt=b"", iterations=1)
