"""`[backends.gcp]`: which Cloud KMS endpoint and credentials the backend uses."""

from __future__ import annotations

from dataclasses import dataclass

from broker.errors import ConfigError

__all__ = ["GcpKmsSettings"]


@dataclass(frozen=True, slots=True)
class GcpKmsSettings:
    """`[backends.gcp]`: where Cloud KMS is and how the broker authenticates to it."""

    credentials_file: str | None = None
    endpoint: str | None = None
    timeout: float = 3.0
    max_workers: int = 8

    def __post_init__(self) -> None:
        """Reject settings that cannot work, naming the field."""
        if not self.timeout > 0:
            raise ConfigError("backends.gcp.timeout must be a positive number of seconds")
        if self.max_workers < 1:
            raise ConfigError("backends.gcp.max_workers must be at least 1")
        if self.endpoint is not None and ":" not in self.endpoint:
            raise ConfigError("backends.gcp.endpoint must be HOST:PORT")
