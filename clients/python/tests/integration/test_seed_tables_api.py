"""Every row of the ecl_crypto_utility README's function tables, checked against the compat API.

A row's signature, as the README prints it, is parsed and compared with the compat
function: parameter names, order and defaults exactly, each documented type accepted, the
documented return type returned. Then the row's function is called and its result checked
against the row's "Returns" column. Sections: symmetric (3 rows), RSA (3), ECDSA (3),
hashing (6), key derivation (2), tokens (3), EnvelopeEncryptor (2), KMSBackend (3),
DEKCache (5), backend parameters (1 + 3 + 3 + 4): 41 rows.
"""

import ast
import base64
import inspect

import pytest

from keybroker_client.compat import (
    DEKCache,
    EnvelopeEncryptor,
    KMSBackend,
    LocalKMSBackend,
    asymmetric,
    exceptions,
    hashing,
    kdf,
    symmetric,
    tokens,
)
from keybroker_client.compat.kms.aws import AWSKMSBackend
from keybroker_client.compat.kms.gcp import GCPKMSBackend
from keybroker_client.compat.kms.vault import VaultKMSBackend

# (module, the README's signature cell, what the call returns)
FUNCTION_ROWS = [
    (symmetric, "generate_key() -> bytes", lambda r: len(r) == 32),
    (
        symmetric,
        "encrypt(plaintext: bytes, key: bytes, associated_data: bytes \\| None = None) -> str",
        lambda r: base64.b64decode(r, validate=True),
    ),
    (
        symmetric,
        "decrypt(encrypted_data: str, key: bytes, associated_data: bytes \\| None = None) -> bytes",
        lambda r: r == b"x",
    ),
    (asymmetric, "generate_rsa_key_pair() -> tuple[bytes, bytes]", lambda r: len(r) == 2),
    (
        asymmetric,
        "rsa_encrypt(plaintext: bytes, public_key_pem: bytes) -> str",
        lambda r: len(base64.b64decode(r)) == 512,
    ),
    (
        asymmetric,
        "rsa_decrypt(encrypted_data: str, private_key_pem: bytes) -> bytes",
        lambda r: r == b"x",
    ),
    (asymmetric, "generate_ecdsa_key_pair() -> tuple[bytes, bytes]", lambda r: len(r) == 2),
    (
        asymmetric,
        "sign(data: bytes, private_key_pem: bytes) -> str",
        lambda r: base64.b64decode(r)[0] == 0x30,
    ),
    (
        asymmetric,
        "verify(data: bytes, signature: str, public_key_pem: bytes) -> bool",
        lambda r: r is True,
    ),
    (hashing, "hash_password(password: str) -> str", lambda r: r.startswith("$argon2id$")),
    (
        hashing,
        "verify_password(password: str, hash_string: str) -> bool",
        lambda r: r is True,
    ),
    (hashing, "hash_data(data: bytes) -> str", lambda r: len(r) == 64),
    (
        hashing,
        "verify_data_integrity(data: bytes, expected_hash: str) -> bool",
        lambda r: r is True,
    ),
    (hashing, "hmac_sign(data: bytes, key: bytes) -> str", lambda r: len(r) == 64),
    (
        hashing,
        "hmac_verify(data: bytes, key: bytes, expected_hmac: str) -> bool",
        lambda r: r is True,
    ),
    (
        kdf,
        (
            "derive_key_hkdf(input_key_material: bytes, length: int = 32,"
            " salt: bytes \\| None = None, info: bytes \\| None = None) -> bytes"
        ),
        lambda r: len(r) == 32,
    ),
    (
        kdf,
        (
            "derive_key_pbkdf2(passphrase: str, length: int = 32, salt: bytes \\| None = None,"
            " iterations: int = 600000) -> tuple[bytes, bytes]"
        ),
        lambda r: len(r[0]) == len(r[1]) == 32,
    ),
    (tokens, "generate_token_bytes(length: int = 32) -> bytes", lambda r: len(r) == 32),
    (tokens, "generate_token_hex(length: int = 32) -> str", lambda r: len(r) == 64),
    (tokens, "generate_token_urlsafe(length: int = 32) -> str", lambda r: len(r) == 43),
]


def parse(cell):
    """(name, [(param, annotation, default)], return annotation) from a README signature cell."""
    function = ast.parse(f"def {cell.replace(chr(92) + '|', '|')}: ...").body[0]
    params = function.args.args
    defaults = [None] * (len(params) - len(function.args.defaults)) + function.args.defaults
    documented = [
        (p.arg, ast.unparse(p.annotation), None if d is None else ast.literal_eval(d))
        for p, d in zip(params, defaults, strict=True)
    ]
    returns = ast.unparse(function.returns) if function.returns else "None"
    return function.name, documented, returns


def types(annotation):
    """The set of type names in an annotation string; Literal[True] counts as bool."""
    return {t.strip().replace("Literal[True]", "bool") for t in annotation.split("|")}


def assert_matches(function, cell):
    """The compat function has the documented parameters and return type."""
    _, documented, returns = parse(cell)
    signature = inspect.signature(function)
    actual = [p for p in signature.parameters.values() if p.kind is p.POSITIONAL_OR_KEYWORD]
    assert [(p.name, None if p.default is p.empty else p.default) for p in actual] == [
        (name, default) for name, _, default in documented
    ]
    for parameter, (_, annotation, _) in zip(actual, documented, strict=True):
        assert types(annotation) <= types(parameter.annotation), parameter.name
    assert types(signature.return_annotation) == types(returns)


@pytest.fixture(scope="module")
def material():
    """Keys and values the rows' calls need."""
    rsa_private, rsa_public = asymmetric.generate_rsa_key_pair()
    ec_private, ec_public = asymmetric.generate_ecdsa_key_pair()
    key = symmetric.generate_key()
    return {
        "key": key,
        "rsa": (rsa_private, rsa_public),
        "ec": (ec_private, ec_public),
        "sealed": symmetric.encrypt(b"x", key),
        "rsa_sealed": asymmetric.rsa_encrypt(b"x", rsa_public),
        "signature": asymmetric.sign(b"x", ec_private),
    }


def call(name, m):
    """Call the row's function with arguments fitting its README signature."""
    key, (rsa_private, rsa_public), (ec_private, ec_public) = m["key"], m["rsa"], m["ec"]
    arguments = {
        "generate_key": (),
        "encrypt": (b"x", key),
        "decrypt": (m["sealed"], key),
        "generate_rsa_key_pair": (),
        "rsa_encrypt": (b"x", rsa_public),
        "rsa_decrypt": (m["rsa_sealed"], rsa_private),
        "generate_ecdsa_key_pair": (),
        "sign": (b"x", ec_private),
        "verify": (b"x", m["signature"], ec_public),
        "hash_password": ("pw",),
        "verify_password": ("pw", hashing.hash_password("pw")) if name == "verify_password" else (),
        "hash_data": (b"x",),
        "verify_data_integrity": (b"x", hashing.hash_data(b"x")),
        "hmac_sign": (b"x", key),
        "hmac_verify": (b"x", key, hashing.hmac_sign(b"x", key)),
        "derive_key_hkdf": (key,),
        "derive_key_pbkdf2": ("passphrase",),
    }
    return arguments.get(name, ())


@pytest.mark.usefixtures("broker")
class TestFunctionTables:
    """Symmetric, RSA, ECDSA, hashing, key derivation and token tables: 20 rows."""

    @pytest.mark.parametrize(
        ("module", "cell", "check"),
        FUNCTION_ROWS,
        ids=[parse(cell)[0] for _, cell, _ in FUNCTION_ROWS],
    )
    def test_row(self, material, module, cell, check):
        """Signature as documented; the call returns what the Returns column says."""
        name = parse(cell)[0]
        function = getattr(module, name)
        assert_matches(function, cell)

        assert check(function(*call(name, material)))


@pytest.fixture
def broker(seed_daemon_socket, use_broker):
    """The compat layer pointed at the README daemon (for passwords and envelopes)."""
    use_broker(seed_daemon_socket)


@pytest.mark.usefixtures("broker")
class TestEnvelopeAndKmsTables:
    """EnvelopeEncryptor methods (2 rows) and the KMSBackend interface (3 rows)."""

    @pytest.mark.parametrize(
        "cell", ["encrypt(plaintext: bytes) -> str", "decrypt(envelope_data: str) -> bytes"]
    )
    def test_encryptor_methods(self, cell):
        """Both methods have the documented signature and round-trip through the broker."""
        encryptor = EnvelopeEncryptor(kms_backend=LocalKMSBackend(), key_id="dev-key")
        name = parse(cell)[0]
        assert_matches(getattr(encryptor, name), cell)

        envelope = encryptor.encrypt(plaintext=b"x")

        assert isinstance(envelope, str)
        assert encryptor.decrypt(envelope_data=envelope) == b"x"

    @pytest.mark.parametrize(
        ("method", "params"),
        [
            ("encrypt_key", ["key_material", "key_id"]),
            ("decrypt_key", ["encrypted_key", "key_id"]),
            ("generate_data_key", ["key_id"]),
        ],
    )
    def test_kms_interface(self, method, params):
        """Each interface method takes the documented arguments and returns what is listed."""
        parameters = list(inspect.signature(getattr(KMSBackend, method)).parameters)
        backend = LocalKMSBackend()

        plaintext_key, encrypted_key = backend.generate_data_key(key_id="dev-key")
        wrapped = backend.encrypt_key(key_material=plaintext_key, key_id="dev-key")

        assert parameters == ["self", *params]
        assert base64.b64decode(encrypted_key, validate=True)
        assert base64.b64decode(wrapped, validate=True)
        assert backend.decrypt_key(encrypted_key=wrapped, key_id="dev-key") == plaintext_key
        assert backend.decrypt_key(encrypted_key=encrypted_key, key_id="dev-key") == plaintext_key


class TestDekCacheTable:
    """DEKCache: get, put, invalidate, clear, size (5 rows)."""

    @pytest.mark.parametrize(
        "cell",
        [
            "get(encrypted_dek: str) -> bytes \\| None",
            "put(encrypted_dek: str, plaintext_dek: bytes) -> None",
            "invalidate(encrypted_dek: str) -> None",
            "clear() -> None",
        ],
    )
    def test_method(self, cell):
        """Documented signature; the method does what the row says."""
        cache = DEKCache()
        assert_matches(getattr(cache, parse(cell)[0]), cell)
        cache.put(encrypted_dek="w", plaintext_dek=b"k")

        assert cache.get(encrypted_dek="w") == b"k"
        cache.invalidate(encrypted_dek="w")
        assert cache.get("w") is None
        cache.put("a", b"1")
        cache.clear()
        assert cache.size == 0

    def test_size_property(self):
        """The size is a read-only property counting entries."""
        cache = DEKCache()
        cache.put("a", b"1")

        assert isinstance(inspect.getattr_static(DEKCache, "size"), property)
        assert cache.size == 1


class TestBackendParameterTables:
    """LocalKMSBackend (1 row), AWSKMSBackend (3), GCPKMSBackend (3), VaultKMSBackend (4)."""

    @pytest.mark.parametrize(
        ("cls", "name", "annotation", "default"),
        [
            (LocalKMSBackend, "master_key", "bytes | None", None),
            (AWSKMSBackend, "region_name", "str | None", None),
            (AWSKMSBackend, "profile_name", "str | None", None),
            (AWSKMSBackend, "endpoint_url", "str | None", None),
            (GCPKMSBackend, "project_id", "str", inspect.Parameter.empty),
            (GCPKMSBackend, "location_id", "str", inspect.Parameter.empty),
            (GCPKMSBackend, "key_ring_id", "str", inspect.Parameter.empty),
            (VaultKMSBackend, "vault_url", "str", inspect.Parameter.empty),
            (VaultKMSBackend, "token", "str | None", None),
            (VaultKMSBackend, "mount_point", "str", "transit"),
            (VaultKMSBackend, "namespace", "str | None", None),
        ],
    )
    def test_parameter(self, cls, name, annotation, default):
        """Type and default as documented (required parameters have none)."""
        parameter = inspect.signature(cls).parameters[name]

        assert types(parameter.annotation) == types(annotation)
        assert parameter.default == default

    def test_local_master_key_size(self):
        """A 32-byte master key is accepted, other sizes are refused."""
        LocalKMSBackend(master_key=bytes(32))
        with pytest.raises(exceptions.InvalidParameterError):
            LocalKMSBackend(master_key=bytes(16))
