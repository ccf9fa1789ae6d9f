"""GCP Cloud KMS (`gcp-kms://projects/…/cryptoKeys/NAME`); the SDK comes with `keybroker[gcp]`."""

from broker.kms.gcp.backend import GcpKmsBackend, context_aad
from broker.kms.gcp.settings import GcpKmsSettings

__all__ = ["GcpKmsBackend", "GcpKmsSettings", "context_aad"]
