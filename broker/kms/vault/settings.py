"""`[backends.vault]`: how to reach Vault/OpenBao and log in."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from broker.errors import ConfigError

__all__ = ["DEFAULT_KUBERNETES_JWT_PATH", "Auth", "VaultSettings"]


DEFAULT_KUBERNETES_JWT_PATH = "/var/run/secrets/kubernetes.io/serviceaccount/token"


Auth = Literal["token", "approle", "kubernetes"]


@dataclass(frozen=True, slots=True)
class VaultSettings:
    """How to reach Vault/OpenBao and log in; secrets are kept out of the repr."""

    address: str
    auth: Auth = "token"
    token: str | None = field(default=None, repr=False)
    namespace: str | None = None
    role_id: str | None = field(default=None, repr=False)
    secret_id: str | None = field(default=None, repr=False)
    approle_mount: str = "approle"
    kubernetes_role: str | None = None
    kubernetes_jwt_path: str = DEFAULT_KUBERNETES_JWT_PATH
    kubernetes_mount: str = "kubernetes"
    ca_cert: str | None = None
    verify: bool = True
    timeout: float = 5.0
    max_connections: int = 10

    def __post_init__(self) -> None:
        """Reject settings that could only fail later, naming the field."""
        if not self.address.startswith(("http://", "https://")):
            raise ConfigError("backends.vault.address must start with http:// or https://")
        if self.auth not in ("token", "approle", "kubernetes"):
            raise ConfigError("backends.vault.auth must be token, approle or kubernetes")
        if self.auth == "approle" and not (self.role_id and self.secret_id):
            raise ConfigError("backends.vault: auth = approle needs role_id and secret_id")
        if self.auth == "kubernetes" and not self.kubernetes_role:
            raise ConfigError("backends.vault: auth = kubernetes needs kubernetes_role")
        if self.timeout <= 0:
            raise ConfigError("backends.vault.timeout must be > 0 seconds")
        if self.max_connections < 1:
            raise ConfigError("backends.vault.max_connections must be >= 1")
