import grpc
import pytest

import keybroker_client
from keybroker_client.compat import _calls, exceptions

SEED_CLASSES = [
    "ECLCryptoError",
    "EncryptionError",
    "DecryptionError",
    "SigningError",
    "VerificationError",
    "HashingError",
    "KeyDerivationError",
    "KeyGenerationError",
    "TokenGenerationError",
    "KMSError",
    "KMSUnavailableError",
    "KMSAuthenticationError",
    "KMSKeyNotFoundError",
    "EnvelopeError",
    "DEKCacheError",
    "InvalidParameterError",
    "UnsupportedBackendError",
]


class TestMessageAndCause:
    """Every exception takes (message, cause) and chains the cause."""

    @pytest.mark.parametrize("name", SEED_CLASSES)
    def test_message_and_cause(self, name):
        """The message is str(exc); the cause is .cause and __cause__."""
        cause = ValueError("root")
        exc = getattr(exceptions, name)("it failed", cause)

        assert str(exc) == "it failed"
        assert exc.cause is cause
        assert exc.__cause__ is cause

    def test_cause_is_optional(self):
        """Without a cause, .cause is None and nothing is chained."""
        exc = exceptions.DecryptionError("no")

        assert exc.cause is None
        assert exc.__cause__ is None


class TestTranslation:
    """Client failures reach compat callers as the seed's classes, with the client's as cause."""

    @pytest.mark.parametrize(
        ("client_error", "expected"),
        [
            (keybroker_client.KMSKeyNotFoundError, exceptions.KMSKeyNotFoundError),
            (keybroker_client.KMSAuthenticationError, exceptions.KMSAuthenticationError),
            (keybroker_client.KMSUnavailableError, exceptions.KMSUnavailableError),
            (keybroker_client.PermissionDeniedError, exceptions.PermissionDeniedError),
            (keybroker_client.AuthenticationError, exceptions.AuthenticationError),
            (keybroker_client.BrokerUnavailableError, exceptions.BrokerUnavailableError),
            (keybroker_client.ResourceExhaustedError, exceptions.ResourceExhaustedError),
            (keybroker_client.KeyStateError, exceptions.KeyStateError),
            (keybroker_client.UnsupportedOperationError, exceptions.UnsupportedOperationError),
            (keybroker_client.InvalidParameterError, exceptions.InvalidParameterError),
            (keybroker_client.KMSError, exceptions.KMSError),
            (keybroker_client.EncryptionError, exceptions.EncryptionError),
        ],
    )
    def test_class_mapping(self, client_error, expected):
        """Each client class becomes the compat class of the same meaning."""
        error = client_error("m", code=grpc.StatusCode.NOT_FOUND, reason="R", request_id="id-1")

        with pytest.raises(expected) as caught, _calls.broker_call(exceptions.EncryptionError):
            raise error

        assert type(caught.value) is expected
        assert caught.value.cause is error
        assert (caught.value.code, caught.value.reason) == (grpc.StatusCode.NOT_FOUND, "R")
        assert caught.value.request_id == "id-1"

    def test_mismatch_class_is_the_operations(self):
        """A verification failure becomes the class the operation names (hashing: both)."""
        with (
            pytest.raises(exceptions.HashMismatchError),
            _calls.broker_call(exceptions.HashingError, mismatch=exceptions.HashMismatchError),
        ):
            raise keybroker_client.VerificationError("verification failed")

    def test_decryption_class_is_the_operations(self):
        """A decryption failure in an envelope operation is an EnvelopeDecryptionError."""
        with (
            pytest.raises(exceptions.EnvelopeDecryptionError),
            _calls.broker_call(
                exceptions.EnvelopeError, undecryptable=exceptions.EnvelopeDecryptionError
            ),
        ):
            raise keybroker_client.DecryptionError("ciphertext could not be decrypted")

    def test_compat_errors_pass_unchanged(self):
        """An exception that is already the seed's class is not wrapped again."""
        error = exceptions.EnvelopeError("bad envelope")

        with (
            pytest.raises(exceptions.EnvelopeError) as caught,
            _calls.broker_call(exceptions.KMSError),
        ):
            raise error

        assert caught.value is error

    @pytest.mark.parametrize(
        ("cls", "seed_bases"),
        [
            (exceptions.HashMismatchError, ("HashingError", "VerificationError")),
            (exceptions.EnvelopeDecryptionError, ("EnvelopeError", "DecryptionError")),
            (exceptions.EnvelopeEncryptionError, ("EnvelopeError", "EncryptionError")),
            (exceptions.BrokerUnavailableError, ("KMSUnavailableError",)),
            (exceptions.PermissionDeniedError, ("KMSAuthenticationError",)),
            (exceptions.UnsupportedOperationError, ("UnsupportedBackendError",)),
        ],
    )
    def test_keybroker_additions_sit_under_seed_classes(self, cls, seed_bases):
        """Failures the seed did not name are caught by the seed class a caller already uses."""
        for base in seed_bases:
            assert issubclass(cls, getattr(exceptions, base))
