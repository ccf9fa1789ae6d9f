"""Vault/OpenBao failures matched by class name, so that hvac is imported in _sdk.py alone."""

from __future__ import annotations

from broker.errors import (
    BrokerError,
    KeyStateError,
    KmsAuthenticationError,
    KmsError,
    KmsInvalidCiphertextError,
    KmsKeyNotFoundError,
    KmsUnavailableError,
    WrongKeyPurposeError,
)

__all__ = ["is_auth_error", "map_error"]

_AUTH_ERRORS = frozenset({"Forbidden", "Unauthorized"})
_UNAVAILABLE_ERRORS = frozenset(
    {
        "BadGateway",
        "ConnectionError",
        "InternalServerError",
        "RateLimitExceeded",
        "Timeout",
        "TimeoutError",
        "VaultDown",
        "VaultNotInitialized",
    }
)


def _names(exc: BaseException) -> set[str]:
    """Class names along the exception's hierarchy, so SDK errors match without importing it."""
    return {cls.__name__ for cls in type(exc).__mro__}


def is_auth_error(exc: BaseException) -> bool:
    """Whether Vault refused the token (403 Forbidden or 401 Unauthorized)."""
    return bool(_names(exc) & _AUTH_ERRORS)


def map_error(exc: Exception) -> BrokerError:  # noqa: PLR0911 - one branch per error class
    """Translate an hvac/requests failure into the broker's KMS errors, with no Vault text."""
    names = _names(exc)
    if names & _AUTH_ERRORS:
        return KmsAuthenticationError()
    if "InvalidPath" in names:
        return KmsKeyNotFoundError()
    if names & _UNAVAILABLE_ERRORS:
        return KmsUnavailableError()
    if "InvalidRequest" not in names:
        return KmsError()
    text = " ".join(getattr(exc, "errors", None) or [str(exc.args[0] if exc.args else "")])
    text = text.lower()
    if "not found" in text:
        return KmsKeyNotFoundError()
    if "disallowed by policy" in text:
        return KeyStateError()
    if "ciphertext" in text or "authentication failed" in text:
        return KmsInvalidCiphertextError()
    if "not support" in text:
        return WrongKeyPurposeError()
    return KmsError()
