"""Fixtures shared by the integration tests."""

from integration.kms.softhsm import softhsm

__all__ = ["softhsm"]
