"""The seed's ``AWSKMSBackend``: AWS KMS keys, used through the broker that holds the credentials.

``key_id`` (a key ARN, key id or alias, exactly as the seed was given it) maps to the broker
key with URI ``aws-kms://KEY_ID``, else to a broker key of that name. The constructor takes
the seed's arguments so existing code runs, but region, profile and endpoint are the
broker's business (``[backends.aws]`` or ``ECL_CRYPTO_AWS_*`` in the daemon's environment):
this object neither reads AWS credentials nor talks to AWS.
"""

from __future__ import annotations

from .broker import BrokerKMSBackend

__all__ = ["AWSKMSBackend"]


class AWSKMSBackend(BrokerKMSBackend):
    """AWS KMS keys served by the broker."""

    def __init__(
        self,
        region_name: str | None = None,
        profile_name: str | None = None,
        endpoint_url: str | None = None,
    ) -> None:
        """Accept the seed's settings; they are shown in repr and otherwise left to the broker."""
        super().__init__()
        self.region_name = region_name
        self.profile_name = profile_name
        self.endpoint_url = endpoint_url

    def key_uri(self, key_id: str) -> str:
        """``aws-kms://KEY_ID``: the URI form the broker's configuration uses."""
        return f"aws-kms://{key_id}"

    def __repr__(self) -> str:
        """The seed's settings, none of which is secret."""
        return f"AWSKMSBackend(region_name={self.region_name!r})"
