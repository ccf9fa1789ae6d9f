import hashlib

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa

from broker.core.signatures import (
    SIGNATURE_ALGORITHMS,
    InvalidSignatureError,
    SignatureInputError,
    digest_size,
    generate_private_key,
    load_private_key,
    load_public_key,
    public_pem,
    sign,
    verify,
)

HASHES = {"ecdsa-p384-sha384": hashlib.sha384, "ecdsa-p256-sha256": hashlib.sha256}
HASHES |= {"rsa-pss-3072-sha256": hashlib.sha256, "rsa-pss-4096-sha256": hashlib.sha256}


@pytest.fixture(scope="module")
def keys():
    """One private key per algorithm (RSA generation takes a moment)."""
    return {a: load_private_key(a, generate_private_key(a)) for a in SIGNATURE_ALGORITHMS}


def _pyca_verify(pem, algorithm, signature, message):
    """Verify with pyca primitives only, from the PEM, as a third party would."""
    public = load_public_key(pem)
    if isinstance(public, ed25519.Ed25519PublicKey):
        public.verify(signature, message)
    elif isinstance(public, ec.EllipticCurvePublicKey):
        hash_ = hashes.SHA384() if algorithm.endswith("sha384") else hashes.SHA256()
        public.verify(signature, message, ec.ECDSA(hash_))
    else:
        assert isinstance(public, rsa.RSAPublicKey)
        pss = padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=32)
        public.verify(signature, message, pss, hashes.SHA256())


@pytest.mark.parametrize("algorithm", list(SIGNATURE_ALGORITHMS))
class TestSignVerify:
    """sign/verify for every algorithm, checked against pyca independently."""

    def test_signature_verifies_outside(self, keys, algorithm):
        """A third party verifies the signature with the PEM and the documented parameters."""
        signature = sign(keys[algorithm], algorithm, b"invoice 42")
        _pyca_verify(public_pem(keys[algorithm]), algorithm, signature, b"invoice 42")
        with pytest.raises(InvalidSignature):
            _pyca_verify(public_pem(keys[algorithm]), algorithm, signature, b"invoice 43")

    def test_verify_accepts_and_refuses(self, keys, algorithm):
        """The signature verifies; a tampered one raises the fixed error."""
        key = keys[algorithm]
        signature = sign(key, algorithm, b"m")
        verify(key.public_key(), algorithm, signature, b"m")
        tampered = signature[:-1] + bytes([signature[-1] ^ 1])
        with pytest.raises(InvalidSignatureError, match=r"^signature verification failed$"):
            verify(key.public_key(), algorithm, tampered, b"m")

    def test_prehashed(self, keys, algorithm):
        """A signature over the digest verifies over the message (except Ed25519)."""
        key = keys[algorithm]
        if algorithm == "ed25519":
            assert digest_size(algorithm) is None
            with pytest.raises(SignatureInputError, match="send data, not a digest"):
                sign(key, algorithm, b"\0" * 32, prehashed=True)
            return
        digest = HASHES[algorithm](b"m").digest()
        assert digest_size(algorithm) == len(digest)
        signature = sign(key, algorithm, digest, prehashed=True)
        verify(key.public_key(), algorithm, signature, b"m")
        verify(key.public_key(), algorithm, sign(key, algorithm, b"m"), digest, prehashed=True)


class TestKeys:
    """Key generation and loading."""

    def test_ecdsa_signatures_are_der(self, keys):
        """ECDSA signatures are DER SEQUENCEs, not raw r||s."""
        assert sign(keys["ecdsa-p384-sha384"], "ecdsa-p384-sha384", b"m")[0] == 0x30

    @pytest.mark.parametrize(
        ("made_for", "loaded_as"),
        [
            ("ecdsa-p256-sha256", "ecdsa-p384-sha384"),
            ("ed25519", "ecdsa-p256-sha256"),
            ("rsa-pss-3072-sha256", "rsa-pss-4096-sha256"),
        ],
    )
    def test_mismatched_algorithm_is_refused(self, made_for, loaded_as):
        """Material of one algorithm does not load as another."""
        with pytest.raises(ValueError, match=f"not a {loaded_as} private key"):
            load_private_key(loaded_as, generate_private_key(made_for))

    @pytest.mark.parametrize("algorithm", list(HASHES))
    def test_wrong_digest_length(self, keys, algorithm):
        """A digest of the wrong size is refused, naming the size."""
        with pytest.raises(SignatureInputError, match=f"digest must be {digest_size(algorithm)}"):
            sign(keys[algorithm], algorithm, b"\0" * 20, prehashed=True)

    def test_unknown_algorithm(self):
        """Unknown names list the known ones."""
        with pytest.raises(ValueError, match="known: ecdsa-p384-sha384"):
            generate_private_key("dsa")
