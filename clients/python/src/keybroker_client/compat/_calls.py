"""Calls from the compat layer into the broker, with failures re-raised as the seed's classes.

``keybroker_client`` raises its own classes; inside ``broker_call`` each becomes the compat
class of the same meaning (itself a subclass of the client class), with the client's
exception as ``cause``, so both the seed's ``except`` clauses and keybroker's keep working.
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Final

from keybroker_client import _errors as kb
from keybroker_client import _facade

from . import exceptions as ex

if TYPE_CHECKING:
    from collections.abc import Iterator

    from keybroker_client._client import Client

__all__ = ["broker_call", "client", "translate"]

# Most specific first: the first class the client's exception is an instance of decides.
_BY_CLIENT_CLASS: Final[tuple[tuple[type[kb.KeybrokerError], type[ex.ECLCryptoError]], ...]] = (
    (kb.AuthenticationError, ex.AuthenticationError),
    (kb.PermissionDeniedError, ex.PermissionDeniedError),
    (kb.BrokerUnavailableError, ex.BrokerUnavailableError),
    (kb.ResourceExhaustedError, ex.ResourceExhaustedError),
    (kb.UnsupportedOperationError, ex.UnsupportedOperationError),
    (kb.KeyStateError, ex.KeyStateError),
    (kb.KMSKeyNotFoundError, ex.KMSKeyNotFoundError),
    (kb.KMSAuthenticationError, ex.KMSAuthenticationError),
    (kb.KMSUnavailableError, ex.KMSUnavailableError),
    (kb.KMSError, ex.KMSError),
    (kb.InvalidParameterError, ex.InvalidParameterError),
)


def client() -> Client:
    """The one shared ``Client`` (socket from ``KEYBROKER_SOCKET``), created on first use."""
    return _facade.shared_client()


def translate(
    error: kb.KeybrokerError,
    operation: type[ex.ECLCryptoError],
    *,
    mismatch: type[ex.ECLCryptoError] = ex.VerificationError,
    undecryptable: type[ex.ECLCryptoError] = ex.DecryptionError,
) -> ex.ECLCryptoError:
    """The compat exception for a client exception raised while doing ``operation``."""
    if isinstance(error, ex.ECLCryptoError):
        return error
    if isinstance(error, kb.VerificationError):
        cls = mismatch
    elif isinstance(error, kb.DecryptionError):
        cls = undecryptable
    else:
        cls = next((c for k, c in _BY_CLIENT_CLASS if isinstance(error, k)), operation)
    return cls(
        error.message,
        error,
        code=error.code,
        reason=error.reason,
        request_id=error.request_id,
    )


@contextlib.contextmanager
def broker_call(
    operation: type[ex.ECLCryptoError],
    *,
    mismatch: type[ex.ECLCryptoError] = ex.VerificationError,
    undecryptable: type[ex.ECLCryptoError] = ex.DecryptionError,
) -> Iterator[None]:
    """Run broker calls; a client exception leaves as the seed's class for ``operation``."""
    try:
        yield
    except kb.KeybrokerError as error:
        translated = translate(error, operation, mismatch=mismatch, undecryptable=undecryptable)
        if translated is error:
            raise
        raise translated from error
