"""The Vault token's lifecycle (login, renewal, re-login), apart from backend.py's transit calls."""

from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING, Any

from broker.errors import BrokerError, KmsAuthenticationError, KmsUnavailableError
from broker.kms.vault.errors import is_auth_error, map_error

if TYPE_CHECKING:
    from collections.abc import Callable

    from broker.kms.vault.settings import VaultSettings

__all__ = ["TokenKeeper"]


class TokenKeeper:
    """Keeps the client's token valid; every method runs on a worker thread, under one lock."""

    def __init__(
        self,
        client: Any,  # noqa: ANN401 - hvac client
        settings: VaultSettings,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """Nothing is known about the token until the first call."""
        self._client = client
        self._settings = settings
        self._clock = clock
        self._lock = threading.Lock()
        self._known = False
        self._expires_at: float | None = None
        self._lease = 0.0
        self._renewable = False
        self.generation = 0

    @property
    def can_login(self) -> bool:
        """AppRole and Kubernetes auth can fetch a fresh token; a static token cannot."""
        return self._settings.auth != "token"

    def ensure(self) -> None:
        """Log in or look the token up once, then renew it when a third of its lease is left."""
        with self._lock:
            if not self._known:
                self._login() if self.can_login else self._inspect()
                return
            if self._expires_at is None or self._expires_at - self._clock() > self._lease / 3:
                return
            if not (self._renewable and self._renew()) and self.can_login:
                self._login()

    def relogin(self, generation: int) -> bool:
        """After a 403: log in again unless another thread did; False if that cannot help.

        A token that still looks itself up is alive, so the 403 is the policy's answer and a
        new login (one more token per refused call) would change nothing.
        """
        if not self.can_login:
            return False
        with self._lock:
            if self.generation == generation:
                if self._alive():
                    return False
                self._login()
        return True

    def _alive(self) -> bool:
        """Whether Vault still accepts the current token (lookup-self)."""
        try:
            self._client.auth.token.lookup_self()
        except Exception as exc:
            if is_auth_error(exc):
                return False
            raise
        return True

    def _record(self, remaining: float, lease: float, *, renewable: bool) -> None:
        """Remember when the token expires (None: never) and how long its lease is."""
        self._known = True
        self._expires_at = None if remaining <= 0 else self._clock() + remaining
        self._lease = lease
        self._renewable = renewable

    def _inspect(self) -> None:
        """Learn a static token's remaining TTL, original TTL and renewability (lookup-self)."""
        if self._settings.token is not None:
            self._client.token = self._settings.token
        data = self._client.auth.token.lookup_self()["data"]
        ttl = float(data.get("ttl") or 0)
        lease = float(data.get("creation_ttl") or ttl)
        self._record(ttl, lease, renewable=bool(data.get("renewable")))

    def _renew(self) -> bool:
        """Renew in place; False when Vault refuses or caps the lease near the token's max TTL."""
        try:
            auth = self._client.auth.token.renew_self()["auth"]
        except Exception as exc:
            if isinstance(map_error(exc), KmsUnavailableError):
                raise
            self._renewable = False
            return False
        granted = float(auth.get("lease_duration") or 0)
        useful = granted >= self._lease / 3
        self._record(granted, self._lease, renewable=useful and bool(auth.get("renewable")))
        return useful

    def _login(self) -> None:
        """Log in with AppRole or Kubernetes; hvac installs the new token on the client."""
        settings = self._settings
        try:
            if settings.auth == "approle":
                result = self._client.auth.approle.login(
                    role_id=settings.role_id,
                    secret_id=settings.secret_id,
                    mount_point=settings.approle_mount,
                )
            else:
                result = self._client.auth.kubernetes.login(
                    role=settings.kubernetes_role,
                    jwt=self._service_account_jwt(),
                    mount_point=settings.kubernetes_mount,
                )
        except BrokerError:
            raise
        except Exception as exc:
            mapped = map_error(exc)
            unavailable = isinstance(mapped, KmsUnavailableError)
            raise (mapped if unavailable else KmsAuthenticationError()) from exc
        lease = float(result["auth"].get("lease_duration") or 0)
        self.generation += 1
        self._record(lease, lease, renewable=bool(result["auth"].get("renewable")))

    def _service_account_jwt(self) -> str:
        """Read the projected token on every login: the kubelet rotates it on disk."""
        path = self._settings.kubernetes_jwt_path
        try:
            with open(path, encoding="ascii") as token_file:  # noqa: PTH123 - plain read
                return token_file.read().strip()
        except (OSError, UnicodeDecodeError) as exc:
            msg = "cannot read the service account token at backends.vault.kubernetes_jwt_path"
            raise KmsAuthenticationError(msg) from exc
