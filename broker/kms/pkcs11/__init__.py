"""PKCS#11 HSMs (`pkcs11://TOKEN/LABEL`); python-pkcs11 comes with `keybroker[hsm]`."""

from broker.kms.pkcs11.backend import Pkcs11Backend, version_label
from broker.kms.pkcs11.settings import SOFTHSM_PATHS, Pkcs11Settings, find_softhsm

__all__ = ["SOFTHSM_PATHS", "Pkcs11Backend", "Pkcs11Settings", "find_softhsm", "version_label"]
