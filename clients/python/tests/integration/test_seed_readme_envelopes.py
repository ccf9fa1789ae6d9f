"""The ecl_crypto_utility README, block by block: envelopes, KMS backends, DEK cache, audit, errors.

Sixteen blocks, copied as the seed's README shows them and numbered in its order: B20-B38
but the three `pip install` blocks, which test_seed_readme.py checks. The `run_block`
fixture changes only their import lines. Class-signature blocks are compared with the
compat classes' signatures, the JSON blocks with what the compat layer writes, the
hierarchy block with its exception classes. The daemon is `seed_daemon_socket`
(integration/conftest.py): it serves `local://dev-key` and the README's AWS key on moto.
"""

import ast
import base64
import inspect
import json
import logging

import pytest

from keybroker_client.compat import (
    DEKCache,
    EnvelopeEncryptor,
    KMSBackend,
    LocalKMSBackend,
    encrypt,
    exceptions,
    generate_key,
)

B20 = """\
class EnvelopeEncryptor(kms_backend: KMSBackend, key_id: str, dek_cache: DEKCache | None = None)
"""

B21 = """\
from ecl_crypto_utility import EnvelopeEncryptor, LocalKMSBackend

backend = LocalKMSBackend()
encryptor = EnvelopeEncryptor(kms_backend=backend, key_id="dev-key")

envelope = encryptor.encrypt(plaintext=b"sensitive customer data")
plaintext = encryptor.decrypt(envelope_data=envelope)
"""

B22 = """\
from ecl_crypto_utility import EnvelopeEncryptor
from ecl_crypto_utility.kms.aws import AWSKMSBackend

backend = AWSKMSBackend(region_name="us-east-1")
encryptor = EnvelopeEncryptor(
    kms_backend=backend,
    key_id="arn:aws:kms:us-east-1:123456789012:key/abcd-1234",
)
envelope = encryptor.encrypt(plaintext=b"production data")
"""

B23 = """\
from ecl_crypto_utility import DEKCache, EnvelopeEncryptor, LocalKMSBackend

cache = DEKCache(max_size=100, ttl_seconds=300)
encryptor = EnvelopeEncryptor(kms_backend=LocalKMSBackend(), key_id="dev-key", dek_cache=cache)

envelope = encryptor.encrypt(plaintext=b"data")
result = encryptor.decrypt(envelope_data=envelope)  # KMS call, DEK cached
result = encryptor.decrypt(envelope_data=envelope)  # Cache hit, no KMS call
"""

B24 = """\
{
    "version": 1,
    "encrypted_dek": "<base64>",
    "key_id": "<KMS key identifier>",
    "encrypted_data": "<base64 AES-256-GCM ciphertext>",
    "algorithm": "AES-256-GCM",
    "timestamp": "<ISO 8601 UTC>"
}
"""

B25 = """\
from ecl_crypto_utility import LocalKMSBackend

backend = LocalKMSBackend()                          # Auto-generated master key
backend = LocalKMSBackend(master_key=my_32_byte_key)  # Explicit key
"""

B27 = """\
from ecl_crypto_utility.kms.aws import AWSKMSBackend

backend = AWSKMSBackend(region_name="us-east-1")
backend = AWSKMSBackend(region_name="us-east-1", endpoint_url="http://localhost:4566")  # LocalStack
"""

B29 = """\
from ecl_crypto_utility.kms.gcp import GCPKMSBackend

backend = GCPKMSBackend(project_id="my-project", location_id="us-east1", key_ring_id="my-keyring")
"""

B31 = """\
from ecl_crypto_utility.kms.vault import VaultKMSBackend

backend = VaultKMSBackend(vault_url="https://vault.example.com:8200", token="hvs.my-token")
"""

B32 = """\
from ecl_crypto_utility.kms.base import KMSBackend
from ecl_crypto_utility.symmetric import generate_key


class MyCustomKMSBackend(KMSBackend):
    def encrypt_key(self, key_material: bytes, key_id: str) -> str: ...
    def decrypt_key(self, encrypted_key: str, key_id: str) -> bytes: ...

    def generate_data_key(self, key_id: str) -> tuple[bytes, str]:
        plaintext_key = generate_key()
        encrypted_key = self.encrypt_key(key_material=plaintext_key, key_id=key_id)
        return (plaintext_key, encrypted_key)
"""

B33 = """\
class DEKCache(max_size: int = 100, ttl_seconds: int = 300)
"""

B34 = """\
from ecl_crypto_utility import log_kms_operation

log_kms_operation(
    operation="encrypt_dek",      # "encrypt_dek" | "decrypt_dek" | "generate_dek"
    key_id="my-key-id",
    backend_type="AWSKMSBackend",
    success=True,
    metadata={"request_id": "abc-123"},  # optional
)
"""

B35 = """\
{
    "operation": "encrypt_dek",
    "key_id": "arn:aws:kms:us-east-1:123:key/abc",
    "backend": "AWSKMSBackend",
    "success": true,
    "timestamp": "2026-04-08T12:00:00+00:00"
}
"""

B36 = """\
import logging

audit_logger = logging.getLogger("ecl_crypto_utility.audit")
audit_logger.setLevel(logging.INFO)
audit_logger.addHandler(logging.FileHandler("audit.log"))

# Prevent propagation to root logger
audit_logger.propagate = False
"""

B37 = """\
ECLCryptoError
├── EncryptionError
├── DecryptionError
├── SigningError
├── VerificationError
├── HashingError
├── KeyDerivationError
├── KeyGenerationError
├── TokenGenerationError
├── KMSError
│   ├── KMSUnavailableError
│   ├── KMSAuthenticationError
│   └── KMSKeyNotFoundError
├── EnvelopeError
├── DEKCacheError
├── InvalidParameterError
└── UnsupportedBackendError
"""

B38 = """\
from ecl_crypto_utility import decrypt
from ecl_crypto_utility.exceptions import DecryptionError, InvalidParameterError

try:
    plaintext = decrypt(encrypted_data=ciphertext, key=key)
except InvalidParameterError as exc:
    print(f"Invalid key: {exc}")
except DecryptionError as exc:
    print(f"Decryption failed: {exc}")
    if exc.cause:
        print(f"Root cause: {exc.cause}")
"""

SEED_ARN = "arn:aws:kms:us-east-1:123456789012:key/abcd-1234"


def signature_of(block):
    """(name, annotation, default) per parameter of a `class Name(params)` signature block."""
    function = ast.parse(block.replace("class ", "def ", 1).strip() + ": ...").body[0]
    params = function.args.args
    defaults = [None] * (len(params) - len(function.args.defaults)) + function.args.defaults
    return [
        (p.arg, ast.unparse(p.annotation), None if d is None else ast.literal_eval(d))
        for p, d in zip(params, defaults, strict=True)
    ]


def compat_signature(cls):
    """The same triples for a compat class's constructor (annotations are strings)."""
    parameters = list(inspect.signature(cls).parameters.values())
    return [
        (p.name, p.annotation, None if p.default is p.empty else p.default)
        for p in parameters
        if p.kind is p.POSITIONAL_OR_KEYWORD
    ]


def broker_key_name(envelope):
    """The logical key named in a broker envelope's header."""
    raw = base64.b64decode(envelope)
    return raw[4 : 4 + raw[3]].decode()


@pytest.fixture
def audit_entries(caplog):
    """The entries written to the seed's audit logger during the test, parsed."""
    caplog.set_level(logging.INFO, logger="ecl_crypto_utility.audit")
    return lambda: [
        json.loads(r.getMessage()) for r in caplog.records if r.name == "ecl_crypto_utility.audit"
    ]


@pytest.fixture
def broker(seed_daemon_socket, use_broker):
    """The compat layer pointed at the README daemon."""
    use_broker(seed_daemon_socket)


class TestSignatures:
    """B20, B33: the constructor signatures the README shows."""

    @pytest.mark.parametrize(
        ("block", "cls"), [(B20, EnvelopeEncryptor), (B33, DEKCache)], ids=["B20", "B33"]
    )
    def test_signature(self, block, cls):
        """Same parameter names, order, annotations and defaults."""
        assert compat_signature(cls) == signature_of(block)


@pytest.mark.usefixtures("broker")
class TestEnvelopeUsage:
    """B21, B22, B23: envelope encryption with the local and AWS backends, and the DEK cache."""

    def test_local_backend(self, run_block):
        """B21 seals under the broker key for local://dev-key and opens it."""
        namespace = run_block(B21)

        assert namespace["plaintext"] == b"sensitive customer data"
        assert broker_key_name(namespace["envelope"]) == "dev"

    def test_aws_backend(self, run_block):
        """B22 seals under the broker key for the README's ARN, which wraps with AWS KMS."""
        namespace = run_block(B22)

        assert broker_key_name(namespace["envelope"]) == "payments"

    def test_dek_cache(self, run_block):
        """B23 decrypts twice with a cache."""
        assert run_block(B23)["result"] == b"data"


class TestEnvelopeFormat:
    """B24: the seed's JSON envelope, as written with a caller's own backend and read back."""

    def test_fields(self, run_block):
        """The compat layer writes exactly the documented fields, with their types."""
        documented = json.loads(B24)
        namespace = run_block(B32)

        class Wrapping(namespace["MyCustomKMSBackend"]):
            def encrypt_key(self, key_material, key_id):
                return base64.b64encode(key_id.encode() + b":" + key_material).decode()

            def decrypt_key(self, encrypted_key, key_id):
                return base64.b64decode(encrypted_key).removeprefix(key_id.encode() + b":")

        encryptor = EnvelopeEncryptor(kms_backend=Wrapping(), key_id="my-key")
        envelope = encryptor.encrypt(plaintext=b"x")
        record = json.loads(base64.b64decode(envelope))

        assert sorted(record) == sorted(documented)
        assert (record["version"], record["algorithm"], record["key_id"]) == (
            1,
            "AES-256-GCM",
            "my-key",
        )
        assert len(base64.b64decode(record["encrypted_data"])) == 12 + 1 + 16
        assert record["timestamp"].endswith("+00:00")
        assert encryptor.decrypt(envelope_data=envelope) == b"x"


class TestBackends:
    """B25, B27, B29, B31, B32: constructing each backend; a custom backend."""

    def test_local(self, run_block):
        """B25 with and without a master key."""
        namespace = run_block(B25, {"my_32_byte_key": bytes(32)})

        assert namespace["backend"].key_uri("dev-key") == "local://dev-key"

    @pytest.mark.parametrize(
        ("block", "uri"),
        [
            (B27, f"aws-kms://{SEED_ARN}"),
            (
                B29,
                "gcp-kms://projects/my-project/locations/us-east1/keyRings/my-keyring/cryptoKeys/k",
            ),
            (B31, "vault-transit://transit/k"),
        ],
        ids=["B27", "B29", "B31"],
    )
    def test_remote(self, run_block, block, uri):
        """Building a remote backend contacts nothing and maps key ids to broker URIs."""
        backend = run_block(block)["backend"]
        key_id = SEED_ARN if block is B27 else "k"

        assert backend.key_uri(key_id) == uri

    def test_custom(self, run_block):
        """B32 defines a KMSBackend subclass that can be instantiated and called."""
        custom = run_block(B32)["MyCustomKMSBackend"]()

        plaintext_key, encrypted_key = custom.generate_data_key(key_id="k")

        assert isinstance(custom, KMSBackend)
        assert len(plaintext_key) == 32
        assert encrypted_key is None  # the README's encrypt_key body is `...`


class TestAuditLog:
    """B34, B35, B36: the audit logger and its entries."""

    def test_log_kms_operation(self, run_block, audit_entries):
        """B34 writes one INFO entry with the given metadata."""
        run_block(B34)

        [entry] = audit_entries()
        assert entry["metadata"] == {"request_id": "abc-123"}
        assert (entry["operation"], entry["key_id"], entry["backend"]) == (
            "encrypt_dek",
            "my-key-id",
            "AWSKMSBackend",
        )

    @pytest.mark.usefixtures("broker")
    def test_entry_format(self, audit_entries):
        """B35: EnvelopeEncryptor's entries have the documented fields (metadata besides)."""
        documented = json.loads(B35)
        encryptor = EnvelopeEncryptor(kms_backend=LocalKMSBackend(), key_id="dev-key")

        encryptor.decrypt(envelope_data=encryptor.encrypt(plaintext=b"x"))

        entries = audit_entries()
        assert [e["operation"] for e in entries] == ["encrypt_dek", "decrypt_dek"]
        for entry in entries:
            assert sorted(set(entry) - {"metadata"}) == sorted(documented)
            assert (entry["key_id"], entry["backend"], entry["success"]) == (
                "dev-key",
                "LocalKMSBackend",
                True,
            )

    @pytest.mark.usefixtures("broker")
    def test_custom_handler(self, run_block, tmp_path, monkeypatch):
        """B36's file handler receives the entries and the root logger does not."""
        monkeypatch.chdir(tmp_path)
        audit_logger = logging.getLogger("ecl_crypto_utility.audit")
        saved = (audit_logger.level, audit_logger.propagate, list(audit_logger.handlers))
        try:
            run_block(B36)
            encryptor = EnvelopeEncryptor(kms_backend=LocalKMSBackend(), key_id="dev-key")
            encryptor.encrypt(plaintext=b"x")
        finally:
            for handler in set(audit_logger.handlers) - set(saved[2]):
                audit_logger.removeHandler(handler)
                handler.close()
            audit_logger.setLevel(saved[0])
            audit_logger.propagate = saved[1]

        [line] = (tmp_path / "audit.log").read_text().splitlines()
        assert json.loads(line)["operation"] == "encrypt_dek"


class TestExceptions:
    """B37, B38: the hierarchy and the usage example."""

    def test_hierarchy(self):
        """Each class's nearest seed ancestor is its parent in B37's tree, and nothing else."""
        parents = {}
        stack = []
        for line in B37.splitlines():
            name = line.lstrip("│├└─ ")
            depth = (len(line) - len(name)) // 4
            stack[depth:] = [name]
            parents[name] = stack[depth - 1] if depth else None
        for name, nearest in parents.items():
            cls = getattr(exceptions, name)
            ancestors = {
                a for a in parents if a != name and issubclass(cls, getattr(exceptions, a))
            }
            expected, parent = set(), nearest
            while parent is not None:
                expected.add(parent)
                parent = parents[parent]
            assert ancestors == expected, name
        assert len(parents) == 17

    @pytest.mark.parametrize(
        ("key", "printed"),
        [
            (bytes(32), ["Decryption failed: ciphertext could not be decrypted", "Root cause: "]),
            (bytes(31), ["Invalid key: key must be 32 bytes (AES-256), got 31"]),
        ],
        ids=["wrong-key", "short-key"],
    )
    def test_usage(self, run_block, capsys, key, printed):
        """B38 catches the seed's classes; a decryption failure carries its cause."""
        ciphertext = encrypt(plaintext=b"secret", key=generate_key())

        run_block(B38, {"ciphertext": ciphertext, "key": key})

        assert capsys.readouterr().out.splitlines() == printed
