"""The seed's ``kms`` package: the ``KMSBackend`` interface and the backends, served by the broker.

``kms.base.KMSBackend`` is the interface to subclass for a KMS of your own. ``kms.local``,
``kms.aws``, ``kms.gcp`` and ``kms.vault`` hold the seed's backends; each maps its
``key_id`` to a broker key and holds no credentials (``kms.broker`` says how).
"""

from .aws import AWSKMSBackend
from .base import KMSBackend
from .broker import BrokerKMSBackend
from .gcp import GCPKMSBackend
from .local import LocalKMSBackend
from .vault import VaultKMSBackend

__all__ = [
    "AWSKMSBackend",
    "BrokerKMSBackend",
    "GCPKMSBackend",
    "KMSBackend",
    "LocalKMSBackend",
    "VaultKMSBackend",
]
