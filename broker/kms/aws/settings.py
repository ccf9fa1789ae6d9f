"""`[backends.aws]`: how to reach AWS KMS; credentials are kept out of the repr."""

from __future__ import annotations

from dataclasses import dataclass, field

from broker.errors import ConfigError

__all__ = ["AwsKmsSettings"]


@dataclass(frozen=True, slots=True)
class AwsKmsSettings:
    """How to reach AWS KMS; unset fields fall back to the AWS SDK's usual chain (env, profile)."""

    region: str | None = None
    endpoint_url: str | None = None
    profile: str | None = None
    access_key_id: str | None = field(default=None, repr=False)
    secret_access_key: str | None = field(default=None, repr=False)
    session_token: str | None = field(default=None, repr=False)
    connect_timeout: float = 2.0
    read_timeout: float = 5.0
    max_pool_connections: int = 10
    max_attempts: int = 1

    def __post_init__(self) -> None:
        """Reject settings that could only fail later, naming the field."""
        if (self.access_key_id is None) != (self.secret_access_key is None):
            msg = "backends.aws: set both access_key_id and secret_access_key, or neither"
            raise ConfigError(msg)
        if self.session_token is not None and self.access_key_id is None:
            raise ConfigError(
                "backends.aws.session_token needs access_key_id and secret_access_key"
            )
        if self.endpoint_url is not None and not self.endpoint_url.startswith(
            ("http://", "https://")
        ):
            raise ConfigError("backends.aws.endpoint_url must start with http:// or https://")
        if self.connect_timeout <= 0 or self.read_timeout <= 0:
            raise ConfigError("backends.aws: connect_timeout and read_timeout must be > 0 seconds")
        if self.max_pool_connections < 1:
            raise ConfigError("backends.aws.max_pool_connections must be >= 1")
        if self.max_attempts < 1:
            raise ConfigError("backends.aws.max_attempts must be >= 1")
