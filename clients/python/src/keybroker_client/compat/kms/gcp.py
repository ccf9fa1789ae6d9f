"""The seed's ``GCPKMSBackend``: Cloud KMS keys, used through the broker that holds the credentials.

``key_id`` is the crypto key's name in the key ring, as with the seed; it maps to the broker
key with URI ``gcp-kms://projects/P/locations/L/keyRings/R/cryptoKeys/KEY_ID`` (a
``key_id`` that is already a full ``projects/…`` path is used as it is), else to a broker
key of that name. This object neither reads Google credentials nor talks to Cloud KMS.
"""

from __future__ import annotations

from keybroker_client.compat._util import invalid

from .broker import BrokerKMSBackend

__all__ = ["GCPKMSBackend"]


class GCPKMSBackend(BrokerKMSBackend):
    """Cloud KMS keys of one key ring, served by the broker."""

    def __init__(self, project_id: str, location_id: str, key_ring_id: str) -> None:
        """Name the key ring, as the seed required; the three build the key path."""
        super().__init__()
        for name, value in (
            ("project_id", project_id),
            ("location_id", location_id),
            ("key_ring_id", key_ring_id),
        ):
            if not isinstance(value, str) or not value or "/" in value:
                raise invalid(f"{name} must be a non-empty str without '/'")
        self.project_id = project_id
        self.location_id = location_id
        self.key_ring_id = key_ring_id

    @property
    def key_ring(self) -> str:
        """``projects/P/locations/L/keyRings/R``, the Cloud KMS resource name of the ring."""
        return (
            f"projects/{self.project_id}/locations/{self.location_id}/keyRings/{self.key_ring_id}"
        )

    def key_uri(self, key_id: str) -> str:
        """The broker URI of crypto key ``key_id`` in this key ring."""
        if key_id.startswith("projects/"):
            return f"gcp-kms://{key_id}"
        return f"gcp-kms://{self.key_ring}/cryptoKeys/{key_id}"

    def __repr__(self) -> str:
        """The key ring, which is not secret."""
        return f"GCPKMSBackend(key_ring={self.key_ring!r})"
