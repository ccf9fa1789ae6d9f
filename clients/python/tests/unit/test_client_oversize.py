"""Requests too large for one call: a clear, non-retryable InvalidParameterError naming the stream.

The fake server in conftest.py keeps gRPC's default 4 MiB receive limit, so its transport
refuses a larger Encrypt the way a daemon's does beyond twice its own limit.
"""

import grpc
import pytest

import keybroker_client as kb
from keybroker_client._errors import REASON_METADATA_KEY, error_from_rpc
from keybroker_client.compat import _calls
from keybroker_client.compat import exceptions as compat

MiB = 1 << 20
S = grpc.StatusCode
SERVER_TOO_LARGE = "Received message larger than max (5242895 vs. 4194304)"
DAEMON_TOO_LARGE = (
    "plaintext is larger than the limit of 4194304 bytes (server.max_plaintext_bytes); "
    "use EncryptStream for large payloads"
)


class FakeRpcError(grpc.RpcError):
    """A failed call as grpc reports it: status code, details and the reason word, if any."""

    def __init__(self, code, details, reason=None):
        """Carry what the call failed with."""
        super().__init__()
        self._status = (code, details)
        self._metadata = () if reason is None else ((REASON_METADATA_KEY, reason),)

    def code(self):
        """The status code."""
        return self._status[0]

    def details(self):
        """The status details."""
        return self._status[1]

    def trailing_metadata(self):
        """The trailing metadata."""
        return self._metadata


def _mapped(details, operation=kb.EncryptionError, code=S.RESOURCE_EXHAUSTED, reason=None):
    return error_from_rpc(FakeRpcError(code, details, reason), operation)


class TestMapping:
    """error_from_rpc on the size refusals of gRPC and of the daemon."""

    def test_transport_refusal_is_invalid_parameter(self):
        """The transport's RESOURCE_EXHAUSTED "larger than max" says to use encrypt_stream."""
        err = error_from_rpc(
            FakeRpcError(S.RESOURCE_EXHAUSTED, SERVER_TOO_LARGE), kb.EncryptionError
        )

        assert type(err) is kb.InvalidParameterError
        assert err.message == (
            f"request too large for one call to the keybroker daemon ({SERVER_TOO_LARGE}); "
            "one call carries at most server.max_plaintext_bytes (4 MiB by default): "
            "use encrypt_stream for large payloads"
        )
        assert err.code == S.RESOURCE_EXHAUSTED

    def test_decrypt_names_decrypt_stream(self):
        """An oversize envelope was made by a stream: decrypt_stream opens it."""
        err = error_from_rpc(
            FakeRpcError(S.RESOURCE_EXHAUSTED, SERVER_TOO_LARGE), kb.DecryptionError
        )

        assert type(err) is kb.InvalidParameterError
        assert "use decrypt_stream" in err.message

    def test_daemon_refusal_names_the_client_method(self):
        """The daemon's INVALID_ARGUMENT keeps its text and adds this client's method."""
        err = _mapped(DAEMON_TOO_LARGE, code=S.INVALID_ARGUMENT, reason="INVALID_ARGUMENT")

        assert type(err) is kb.InvalidParameterError
        assert err.message == f"{DAEMON_TOO_LARGE} (in keybroker_client: encrypt_stream)"

    @pytest.mark.parametrize(
        ("details", "reason"),
        [
            ("Concurrent RPC limit exceeded!", None),
            ("rate limited", "RATE_LIMITED"),
            ("message larger than max", "RESOURCE_EXHAUSTED"),
        ],
    )
    def test_other_resource_exhaustion_stays_retryable(self, details, reason):
        """Only gRPC's own size refusal changes class; budgets and rate limits do not."""
        err = error_from_rpc(
            FakeRpcError(S.RESOURCE_EXHAUSTED, details, reason), kb.EncryptionError
        )

        assert type(err) is kb.ResourceExhaustedError
        assert err.message == details

    def test_compat_gets_its_invalid_parameter_error(self):
        """The compat layer sees InvalidParameterError, not a retryable KMSUnavailableError."""
        err = error_from_rpc(
            FakeRpcError(S.RESOURCE_EXHAUSTED, SERVER_TOO_LARGE), kb.EncryptionError
        )

        translated = _calls.translate(err, compat.EncryptionError)

        assert type(translated) is compat.InvalidParameterError
        assert not isinstance(translated, compat.KMSUnavailableError)


class TestOverTheWire:
    """The same through a real channel to the in-process server."""

    def test_server_transport_refusal(self, fake):
        """5 MiB to a server that takes 4 MiB: InvalidParameterError, the servicer never ran."""
        sent = len(fake[1].deadlines)
        with kb.Client(fake[0]) as client, pytest.raises(kb.InvalidParameterError) as info:
            client.encrypt(bytes(5 * MiB))

        assert "use encrypt_stream" in info.value.message
        assert "Received message larger than max" in info.value.message
        assert len(fake[1].deadlines) == sent

    def test_client_channel_refusal(self, fake):
        """More than the client's own 64 MiB channel limit fails the same way, unsent."""
        with kb.Client(fake[0]) as client, pytest.raises(kb.InvalidParameterError) as info:
            client.encrypt(bytes(64 * MiB + 1))

        assert "use encrypt_stream" in info.value.message
        assert "Sent message larger than max" in info.value.message

    async def test_async_client(self, fake):
        """AsyncClient maps it through the same table."""
        async with kb.AsyncClient(fake[0]) as client:
            with pytest.raises(kb.InvalidParameterError) as info:
                await client.encrypt(bytes(5 * MiB))

        assert "use encrypt_stream" in info.value.message
