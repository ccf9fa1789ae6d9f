"""The seed's ``VaultKMSBackend``: Vault transit keys, used through the broker that logs in.

``key_id`` is the transit key's name, as with the seed; it maps to the broker key with URI
``vault-transit://MOUNT_POINT/KEY_ID``, else to a broker key of that name. ``token`` is
accepted so existing code runs, and dropped: the broker authenticates to Vault
(``[backends.vault]`` or ``ECL_CRYPTO_VAULT_*`` in the daemon's environment), so the token
should move there. This object never talks to Vault.
"""

from __future__ import annotations

from keybroker_client.compat._util import invalid

from .broker import BrokerKMSBackend

__all__ = ["VaultKMSBackend"]


class VaultKMSBackend(BrokerKMSBackend):
    """Vault (or OpenBao) transit keys under one mount, served by the broker."""

    def __init__(
        self,
        vault_url: str,
        token: str | None = None,
        mount_point: str = "transit",
        namespace: str | None = None,
    ) -> None:
        """Accept the seed's settings; the token is dropped, the mount point builds the URI."""
        super().__init__()
        del token  # credentials belong to the broker, never to this process
        if not isinstance(vault_url, str):
            raise invalid("vault_url must be a str")
        mount = mount_point.strip("/") if isinstance(mount_point, str) else ""
        if not mount:
            raise invalid("mount_point must be a non-empty str")
        self.vault_url = vault_url
        self.mount_point = mount
        self.namespace = namespace

    def key_uri(self, key_id: str) -> str:
        """``vault-transit://MOUNT/KEY_ID``: the URI form the broker's configuration uses."""
        return f"vault-transit://{self.mount_point}/{key_id}"

    def __repr__(self) -> str:
        """Address and mount, never the token (which is not kept)."""
        return f"VaultKMSBackend(vault_url={self.vault_url!r}, mount_point={self.mount_point!r})"
