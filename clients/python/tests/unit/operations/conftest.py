"""An in-process gRPC server with fake signing, RSA, hashing, derivation and token services.

The fakes are not a broker: they record what the client sends and answer with simple,
recognisable values and the broker's error shapes (status, reason word, fixed message),
so the client's conversions and error mapping are tested without the daemon. Key names
select behaviour: ``missing`` is unknown, ``default`` is an envelope key (wrong purpose),
``rsa`` is an RSA decryption key and ``signing`` an ECDSA signing key.
"""

import base64
import hashlib
import hmac
from concurrent import futures
from types import SimpleNamespace

import grpc
import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

from keybroker_client._errors import REASON_METADATA_KEY
from keybroker_client._gen import asymmetric_pb2 as asym_pb
from keybroker_client._gen import asymmetric_pb2_grpc as asym_grpc
from keybroker_client._gen import common_pb2
from keybroker_client._gen import hashing_pb2 as hash_pb
from keybroker_client._gen import hashing_pb2_grpc as hash_grpc
from keybroker_client._gen import key_derivation_pb2 as kdf_pb
from keybroker_client._gen import key_derivation_pb2_grpc as kdf_grpc
from keybroker_client._gen import signing_pb2 as sig_pb
from keybroker_client._gen import signing_pb2_grpc as sig_grpc
from keybroker_client._gen import token_pb2 as tok_pb
from keybroker_client._gen import token_pb2_grpc as tok_grpc

S = grpc.StatusCode
OAEP = padding.OAEP(mgf=padding.MGF1(hashes.SHA256()), algorithm=hashes.SHA256(), label=None)
FAILURES = {
    "missing": (S.NOT_FOUND, "KEY_NOT_FOUND", "key not found"),
    "default": (S.FAILED_PRECONDITION, "WRONG_KEY_PURPOSE", "key does not support this operation"),
}
VERIFY_FAILED = (S.INVALID_ARGUMENT, "VERIFICATION_FAILED", "verification failed")
BAD_ITEM = (S.INVALID_ARGUMENT, "INVALID_ARGUMENT", "item too large")


def _abort(context, failure):
    """Fail the call as the broker does: status, details and the reason word."""
    code, reason, message = failure
    context.set_trailing_metadata(((REASON_METADATA_KEY, reason),))
    context.abort(code, message)


def _check_key(context, key):
    """Abort for the key names that select a failure."""
    if key in FAILURES:
        _abort(context, FAILURES[key])


def _item_error(failure):
    """A batch item failure in the broker's shape."""
    code, reason, message = failure
    return common_pb2.ItemError(code=code.value[0], reason=reason, message=message)


def _pem(private_key):
    """SubjectPublicKeyInfo PEM of a private key's public half."""
    return private_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def fake_signature(key, data):
    """The fake's deterministic "signature": a hash of key name and data."""
    return hashlib.sha256(key.encode() + b"|" + data).digest()


def fake_mac(key, data):
    """The fake's MAC: HMAC-SHA256 under a key derived from the name."""
    return hmac.digest(b"fake-" + key.encode(), data, "sha256")


class FakeSigning(sig_grpc.SigningServiceServicer):
    """Signs with a hash, serves an RSA decryption key and an EC signing key."""

    def __init__(self, rsa_key, ec_key):
        """Keep the keys; record GetPublicKey calls."""
        self.rsa_key = rsa_key
        self.ec_key = ec_key
        self.public_key_calls = []

    def Sign(self, request, context):  # noqa: N802 - generated servicer name
        """Sign with the fake signature."""
        _check_key(context, request.key)
        return sig_pb.SignResponse(
            signature=fake_signature(request.key, request.data), key=request.key, key_version=1
        )

    def Verify(self, request, context):  # noqa: N802 - generated servicer name
        """Accept only the fake signature."""
        _check_key(context, request.key)
        if request.signature != fake_signature(request.key, request.data):
            _abort(context, VERIFY_FAILED)
        return sig_pb.VerifyResponse(key=request.key, key_version=1)

    def SignBatch(self, request, _context):  # noqa: N802 - generated servicer name
        """Sign every item; an item b"bad" fails alone."""
        results = [
            sig_pb.SignBatchResult(error=_item_error(BAD_ITEM))
            if item.data == b"bad"
            else sig_pb.SignBatchResult(
                response=sig_pb.SignResponse(signature=fake_signature(item.key, item.data))
            )
            for item in request.items
        ]
        return sig_pb.SignBatchResponse(results=results)

    def VerifyBatch(self, request, _context):  # noqa: N802 - generated servicer name
        """Verify every item, reporting a bad signature in its place."""
        results = [
            sig_pb.VerifyBatchResult(response=sig_pb.VerifyResponse(key=item.key, key_version=1))
            if item.signature == fake_signature(item.key, item.data)
            else sig_pb.VerifyBatchResult(error=_item_error(VERIFY_FAILED))
            for item in request.items
        ]
        return sig_pb.VerifyBatchResponse(results=results)

    def GetPublicKey(self, request, context):  # noqa: N802 - generated servicer name
        """`rsa` is a decryption key (no signature algorithm); `signing` is ECDSA P-384."""
        self.public_key_calls.append(request.key)
        _check_key(context, request.key)
        if request.key == "signing":
            return sig_pb.GetPublicKeyResponse(
                pem=_pem(self.ec_key).decode(),
                key="signing",
                key_version=1,
                algorithm=sig_pb.SIGNATURE_ALGORITHM_ECDSA_P384_SHA384,
            )
        return sig_pb.GetPublicKeyResponse(
            pem=_pem(self.rsa_key).decode(), key=request.key, key_version=1
        )


class FakeAsymmetric(asym_grpc.AsymmetricServiceServicer):
    """Decrypts with the RSA key; refuses to encrypt for the signing key."""

    def __init__(self, rsa_key):
        """Keep the key; record AsymmetricEncrypt calls and the versions asked to decrypt."""
        self.rsa_key = rsa_key
        self.encrypt_calls = []
        self.decrypt_versions = []

    def AsymmetricEncrypt(self, request, context):  # noqa: N802 - generated servicer name
        """Only `rsa` encrypts; `signing` is the wrong purpose."""
        self.encrypt_calls.append(request.key)
        if request.key == "signing":
            _abort(context, FAILURES["default"])
        _check_key(context, request.key)
        ciphertext = self.rsa_key.public_key().encrypt(request.plaintext, OAEP)
        return asym_pb.AsymmetricEncryptResponse(ciphertext=ciphertext, key=request.key)

    def AsymmetricDecrypt(self, request, context):  # noqa: N802 - generated servicer name
        """Decrypt with OAEP-SHA256; any failure is the fixed decryption error."""
        self.decrypt_versions.append(request.key_version)
        _check_key(context, request.key)
        try:
            plaintext = self.rsa_key.decrypt(request.ciphertext, OAEP)
        except ValueError:
            _abort(context, (S.INVALID_ARGUMENT, "DECRYPTION_FAILED", "decryption failed"))
        return asym_pb.AsymmetricDecryptResponse(plaintext=plaintext)


def _fake_hash(password, pepper):
    """A readable stand-in for a PHC string."""
    return f"$fake${pepper}${password}"


def _index(item):
    """The fake blind index: an HMAC over field, tenant and value, cut to the length."""
    mac = hmac.digest(f"{item.key}|{item.field}|{item.tenant}".encode(), item.value, "sha256")
    return mac[: item.length or 32]


class FakeHashing(hash_grpc.HashingServiceServicer):
    """Fake password hashes; real SHA-256; HMACs under name-derived keys."""

    def __init__(self):
        """Record BlindIndex requests."""
        self.blind_index_requests = []

    def HashPassword(self, request, context):  # noqa: N802 - generated servicer name
        """Hash readably; the password `flood` is over the memory budget."""
        if request.password == "flood":  # noqa: S105 - a trigger word, not a secret
            _abort(context, (S.RESOURCE_EXHAUSTED, "RESOURCE_EXHAUSTED", "password hashing busy"))
        return hash_pb.HashPasswordResponse(hash=_fake_hash(request.password, request.pepper_key))

    def VerifyPassword(self, request, context):  # noqa: N802 - generated servicer name
        """Match the readable hash, pepper included."""
        if request.hash != _fake_hash(request.password, request.pepper_key):
            _abort(context, VERIFY_FAILED)
        return hash_pb.VerifyPasswordResponse()

    def Digest(self, request, _context):  # noqa: N802 - generated servicer name
        """Real SHA-256."""
        digest = hashlib.sha256(request.data).digest()
        return hash_pb.DigestResponse(digest=digest, hex=digest.hex())

    def VerifyDigest(self, request, context):  # noqa: N802 - generated servicer name
        """Compare with the hex or raw expected digest."""
        digest = hashlib.sha256(request.data).digest()
        expected = request.digest if request.WhichOneof("expected") == "digest" else None
        if expected is None:
            expected = bytes.fromhex(request.hex) if len(request.hex) == 64 else b""
        if expected != digest:
            _abort(context, VERIFY_FAILED)
        return hash_pb.VerifyDigestResponse()

    def ComputeHmac(self, request, context):  # noqa: N802 - generated servicer name
        """MAC under the name-derived key."""
        _check_key(context, request.key)
        return hash_pb.ComputeHmacResponse(mac=fake_mac(request.key, request.data), key=request.key)

    def VerifyHmac(self, request, context):  # noqa: N802 - generated servicer name
        """Accept only the fake MAC."""
        _check_key(context, request.key)
        if request.mac != fake_mac(request.key, request.data):
            _abort(context, VERIFY_FAILED)
        return hash_pb.VerifyHmacResponse(key_version=1)

    def ComputeHmacBatch(self, request, _context):  # noqa: N802 - generated servicer name
        """MAC every item; b"bad" fails alone."""
        results = [
            hash_pb.ComputeHmacBatchResult(error=_item_error(BAD_ITEM))
            if item.data == b"bad"
            else hash_pb.ComputeHmacBatchResult(
                response=hash_pb.ComputeHmacResponse(mac=fake_mac(item.key, item.data))
            )
            for item in request.items
        ]
        return hash_pb.ComputeHmacBatchResponse(results=results)

    def BlindIndex(self, request, context):  # noqa: N802 - generated servicer name
        """Record the request and index the value; lengths outside 16..32 are refused."""
        self.blind_index_requests.append(request)
        _check_key(context, request.key)
        if not 16 <= (request.length or 32) <= 32:
            _abort(context, (S.INVALID_ARGUMENT, "INVALID_ARGUMENT", "length must be 16..32"))
        return hash_pb.BlindIndexResponse(index=_index(request), key=request.key)

    def BlindIndexBatch(self, request, _context):  # noqa: N802 - generated servicer name
        """Index every value; b"bad" fails alone."""
        results = [
            hash_pb.BlindIndexBatchResult(error=_item_error(BAD_ITEM))
            if item.value == b"bad"
            else hash_pb.BlindIndexBatchResult(
                response=hash_pb.BlindIndexResponse(index=_index(item))
            )
            for item in request.items
        ]
        return hash_pb.BlindIndexBatchResponse(results=results)


class FakeDerivation(kdf_grpc.KeyDerivationServiceServicer):
    """Records derivation requests and answers with recognisable keys."""

    def __init__(self):
        """Start with nothing recorded."""
        self.requests = []

    def DeriveKeyHkdf(self, request, context):  # noqa: N802 - generated servicer name
        """A hash of the inputs, cut to the length."""
        self.requests.append(request)
        _check_key(context, request.key)
        seed = request.SerializeToString(deterministic=True)
        derived = hashlib.sha512(seed).digest()[: request.length or 32]
        return kdf_pb.DeriveKeyHkdfResponse(derived_key=derived, key=request.key, key_version=1)

    def DeriveKeyPbkdf2(self, request, _context):  # noqa: N802 - generated servicer name
        """Zero bytes of the length; a fixed salt when none was sent."""
        self.requests.append(request)
        return kdf_pb.DeriveKeyPbkdf2Response(
            derived_key=bytes(request.length or 32),
            salt=request.salt or b"\x07" * 32,
            iterations=request.iterations or 600_000,
        )


class FakeToken(tok_grpc.TokenServiceServicer):
    """Counts bytes up from zero so the token's length and encoding are visible."""

    def GenerateToken(self, request, context):  # noqa: N802 - generated servicer name
        """Refuse under 16 bytes like the broker."""
        length = request.length or 32
        if length < 16:
            _abort(context, (S.INVALID_ARGUMENT, "INVALID_ARGUMENT", "length must be >= 16"))
        raw = bytes(range(length))
        if request.encoding == tok_pb.TOKEN_ENCODING_HEX:
            return tok_pb.GenerateTokenResponse(token=raw, text=raw.hex())
        if request.encoding == tok_pb.TOKEN_ENCODING_URLSAFE:
            text = base64.urlsafe_b64encode(raw).rstrip(b"=").decode()
            return tok_pb.GenerateTokenResponse(token=raw, text=text)
        return tok_pb.GenerateTokenResponse(token=raw)


@pytest.fixture(scope="module")
def ops(tmp_path_factory):
    """A real gRPC server with the fakes on a Unix socket, and the fakes themselves."""
    socket = tmp_path_factory.mktemp("ops") / "kb.sock"
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    fakes = SimpleNamespace(
        socket=socket,
        rsa_key=rsa_key,
        signing=FakeSigning(rsa_key, ec.generate_private_key(ec.SECP384R1())),
        asymmetric=FakeAsymmetric(rsa_key),
        hashing=FakeHashing(),
        derivation=FakeDerivation(),
        tokens=FakeToken(),
    )
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
    sig_grpc.add_SigningServiceServicer_to_server(fakes.signing, server)
    asym_grpc.add_AsymmetricServiceServicer_to_server(fakes.asymmetric, server)
    hash_grpc.add_HashingServiceServicer_to_server(fakes.hashing, server)
    kdf_grpc.add_KeyDerivationServiceServicer_to_server(fakes.derivation, server)
    tok_grpc.add_TokenServiceServicer_to_server(fakes.tokens, server)
    server.add_insecure_port(f"unix:{socket}")
    server.start()
    yield fakes
    server.stop(grace=None).wait()
