import grpc
import grpc.aio
import pytest

import keybroker_client as kb
from keybroker_client._errors import (
    REASON_METADATA_KEY,
    REQUEST_ID_METADATA_KEY,
    error_from_item,
    error_from_rpc,
)
from keybroker_client._gen.common_pb2 import ErrorReason, ItemError


class FakeRpcError(grpc.RpcError):
    """A sync-flavoured RpcError: trailing metadata is a tuple of pairs."""

    def __init__(self, code, details="", reason=None, request_id=None):
        """Carry a status code, details and optionally a reason word and request id."""
        super().__init__()
        self._code = code
        self._details = details
        self._metadata = ()
        if reason is not None:
            self._metadata += ((REASON_METADATA_KEY, reason),)
        if request_id is not None:
            self._metadata += ((REQUEST_ID_METADATA_KEY, request_id),)

    def code(self):
        """The status code, as grpc.Call.code()."""
        return self._code

    def details(self):
        """The status details, as grpc.Call.details()."""
        return self._details

    def trailing_metadata(self):
        """The trailing metadata, as grpc.Call.trailing_metadata()."""
        return self._metadata


S = grpc.StatusCode

REASON_CASES = [
    ("DECRYPTION_FAILED", S.INVALID_ARGUMENT, kb.DecryptionError),
    ("VERIFICATION_FAILED", S.INVALID_ARGUMENT, kb.VerificationError),
    ("INVALID_ARGUMENT", S.INVALID_ARGUMENT, kb.InvalidParameterError),
    ("UNAUTHENTICATED", S.UNAUTHENTICATED, kb.AuthenticationError),
    ("PERMISSION_DENIED", S.PERMISSION_DENIED, kb.PermissionDeniedError),
    ("KEY_NOT_FOUND", S.NOT_FOUND, kb.KMSKeyNotFoundError),
    ("KEY_STATE", S.FAILED_PRECONDITION, kb.KeyStateError),
    ("WRONG_KEY_PURPOSE", S.FAILED_PRECONDITION, kb.KeyStateError),
    ("RESOURCE_EXHAUSTED", S.RESOURCE_EXHAUSTED, kb.ResourceExhaustedError),
    ("KMS_UNAVAILABLE", S.UNAVAILABLE, kb.KMSUnavailableError),
    ("KMS_AUTHENTICATION", S.INTERNAL, kb.KMSAuthenticationError),
    ("KMS_ERROR", S.INTERNAL, kb.KMSError),
    ("INTERNAL", S.INTERNAL, kb.EncryptionError),
]

ENUM_WORDS = [
    value.name.removeprefix("ERROR_REASON_")
    for value in ErrorReason.DESCRIPTOR.values
    if value.number != ErrorReason.Value("ERROR_REASON_UNSPECIFIED")
]

CODE_CASES = [
    (S.UNAVAILABLE, kb.BrokerUnavailableError),
    (S.DEADLINE_EXCEEDED, kb.BrokerUnavailableError),
    (S.UNIMPLEMENTED, kb.UnsupportedOperationError),
    (S.INVALID_ARGUMENT, kb.InvalidParameterError),
    (S.PERMISSION_DENIED, kb.PermissionDeniedError),
    (S.NOT_FOUND, kb.KMSKeyNotFoundError),
    (S.RESOURCE_EXHAUSTED, kb.ResourceExhaustedError),
    (S.INTERNAL, kb.EncryptionError),
    (S.UNKNOWN, kb.EncryptionError),
]


class TestErrorFromRpc:
    """Mapping a failed call to an exception class and message."""

    @pytest.mark.parametrize(("reason", "code", "expected"), REASON_CASES)
    def test_reason_word_decides_the_class(self, reason, code, expected):
        """The daemon's reason word picks the exception, whatever the status code."""
        error = error_from_rpc(FakeRpcError(code, "server says", reason), kb.EncryptionError)

        assert type(error) is expected
        assert error.reason == reason
        assert error.code is code
        assert str(error) == "server says"

    @pytest.mark.parametrize(("code", "expected"), CODE_CASES)
    def test_status_code_decides_without_a_reason(self, code, expected):
        """Without a reason word the status code picks the exception."""
        error = error_from_rpc(FakeRpcError(code, "details"), kb.EncryptionError)

        assert type(error) is expected
        assert error.reason == ""
        assert error.code is code

    def test_internal_reason_falls_back_to_the_operation_class(self):
        """An internal failure while decrypting is reported as a DecryptionError."""
        error = error_from_rpc(
            FakeRpcError(S.INTERNAL, "internal error", "INTERNAL"), kb.DecryptionError
        )

        assert type(error) is kb.DecryptionError
        assert str(error) == "internal error"

    def test_request_id_is_kept_for_the_daemon_log(self):
        """An internal error carries the request id under which the daemon logged detail."""
        error = error_from_rpc(
            FakeRpcError(S.INTERNAL, "internal error", "INTERNAL", request_id="r-42"),
            kb.EncryptionError,
        )

        assert error.request_id == "r-42"

    def test_unknown_reason_uses_the_status_code(self):
        """A reason word this client does not know yet still maps by status code."""
        error = error_from_rpc(
            FakeRpcError(S.RESOURCE_EXHAUSTED, "slow down", "RATE_LIMITED"), kb.EncryptionError
        )

        assert type(error) is kb.ResourceExhaustedError

    def test_unavailable_message_tells_the_user_what_to_check(self):
        """An unreachable daemon names the target, the daemon and KEYBROKER_SOCKET."""
        error = error_from_rpc(
            FakeRpcError(S.UNAVAILABLE, "connection refused"),
            kb.EncryptionError,
            target="unix:/run/keybroker/keybroker.sock",
        )

        message = str(error)
        assert "unix:/run/keybroker/keybroker.sock" in message
        assert "connection refused" in message
        assert "running" in message
        assert "KEYBROKER_SOCKET" in message

    def test_deadline_message_says_it_timed_out(self):
        """A deadline miss says the daemon did not answer in time."""
        error = error_from_rpc(FakeRpcError(S.DEADLINE_EXCEEDED, "Deadline Exceeded"), kb.KMSError)

        assert "did not answer in time" in str(error)
        assert "KEYBROKER_SOCKET" in str(error)

    def test_aio_errors_map_through_the_same_table(self):
        """AioRpcError carries aio Metadata; it maps exactly like a sync error."""
        aio_error = grpc.aio.AioRpcError(
            code=S.INVALID_ARGUMENT,
            initial_metadata=grpc.aio.Metadata(),
            trailing_metadata=grpc.aio.Metadata((REASON_METADATA_KEY, "DECRYPTION_FAILED")),
            details="ciphertext could not be decrypted",
        )

        error = error_from_rpc(aio_error, kb.EncryptionError)

        assert type(error) is kb.DecryptionError
        assert str(error) == "ciphertext could not be decrypted"

    def test_empty_details_fall_back_to_the_code_name(self):
        """An error without details still has a non-empty message."""
        error = error_from_rpc(FakeRpcError(S.INTERNAL), kb.SigningError)

        assert type(error) is kb.SigningError
        assert str(error) == "INTERNAL"


class TestReasonTable:
    """The reason table is the proto's ErrorReason enum, word for word."""

    @pytest.mark.parametrize("word", ENUM_WORDS)
    def test_every_enum_value_maps_to_a_client_class(self, word):
        """Each word the daemon can send picks a class; INTERNAL keeps the operation's own."""
        error = error_from_rpc(FakeRpcError(S.UNKNOWN, "details", word), kb.TokenGenerationError)

        assert isinstance(error, kb.KeybrokerError)
        assert (type(error) is kb.TokenGenerationError) == (word == "INTERNAL")
        assert error.reason == word

    def test_rate_limited_reason_is_a_resource_exhausted_error(self):
        """A policy rate limit is caught like any exhausted budget, whatever the status code."""
        error = error_from_rpc(
            FakeRpcError(S.UNKNOWN, "slow down", "RATE_LIMITED"), kb.HashingError
        )

        assert type(error) is kb.ResourceExhaustedError

    @pytest.mark.parametrize("word", ["ERROR_REASON_DECRYPTION_FAILED", "DECRYPTION_FAILURE"])
    def test_words_outside_the_enum_are_not_mapped(self, word):
        """Only the exact wire word maps; a prefixed name or a near miss falls back to the code."""
        error = error_from_rpc(
            FakeRpcError(S.INVALID_ARGUMENT, "details", word), kb.EncryptionError
        )

        assert type(error) is kb.InvalidParameterError


class TestErrorFromItem:
    """Mapping a failed batch item through the same table."""

    def test_item_errors_use_the_reason_table(self):
        """A failed batch item maps by its reason word like a whole-call failure."""
        item = ItemError(
            code=S.INVALID_ARGUMENT.value[0],
            reason="DECRYPTION_FAILED",
            message="ciphertext could not be decrypted",
        )

        error = error_from_item(item, kb.EncryptionError)

        assert type(error) is kb.DecryptionError
        assert error.code is S.INVALID_ARGUMENT
        assert error.reason == "DECRYPTION_FAILED"
        assert str(error) == "ciphertext could not be decrypted"

    def test_item_errors_without_reason_use_the_code(self):
        """A reason-less item error maps by its numeric status code."""
        error = error_from_item(ItemError(code=S.NOT_FOUND.value[0]), kb.EncryptionError)

        assert type(error) is kb.KMSKeyNotFoundError
        assert str(error) == "batch item failed"

    def test_unknown_item_code_falls_back_to_the_operation_class(self):
        """A code number outside gRPC's range is reported as the operation's error."""
        error = error_from_item(ItemError(code=999, message="odd"), kb.DecryptionError)

        assert type(error) is kb.DecryptionError
        assert error.code is None


class TestHierarchy:
    """The exception families callers catch."""

    @pytest.mark.parametrize(
        ("child", "parent"),
        [
            (kb.KMSUnavailableError, kb.KMSError),
            (kb.KMSAuthenticationError, kb.KMSError),
            (kb.KMSKeyNotFoundError, kb.KMSError),
            (kb.AuthenticationError, kb.PermissionDeniedError),
            (kb.BrokerUnavailableError, kb.KeybrokerError),
            (kb.DecryptionError, kb.KeybrokerError),
            (kb.UnsupportedOperationError, kb.KeybrokerError),
        ],
    )
    def test_one_except_clause_catches_the_family(self, child, parent):
        """Callers can catch a family (all KMS errors) or everything (KeybrokerError)."""
        assert issubclass(child, parent)
        assert issubclass(child, kb.KeybrokerError)

    def test_client_side_errors_have_no_status_code(self):
        """Errors raised by the client itself carry no gRPC status."""
        error = kb.KeyStateError("data-key lease exhausted; request a new lease")

        assert error.code is None
        assert error.reason == ""
        assert error.message == "data-key lease exhausted; request a new lease"
