"""Backend configuration tables map onto settings dataclasses with one-line errors."""

from __future__ import annotations

import pytest

from broker.errors import ConfigError
from broker.kms.aws import AwsKmsSettings
from broker.kms.registry import build_remote_backend, settings_from
from broker.kms.resilience import ResilienceSettings, ResilientBackend
from broker.kms.vault import VaultSettings


class TestSettingsFrom:
    """Field-by-field mapping and its errors."""

    def test_maps_fields(self):
        """Known fields of the right type build the dataclass; ints are accepted as floats."""
        s = settings_from(
            AwsKmsSettings, {"region": "eu-west-1", "read_timeout": 3}, "backends.aws"
        )
        assert (s.region, s.read_timeout) == ("eu-west-1", 3)

    @pytest.mark.parametrize(
        ("cls", "raw", "message"),
        [
            (AwsKmsSettings, {"regoin": "x"}, "backends.t.regoin: unknown setting"),
            (AwsKmsSettings, {"read_timeout": "fast"}, "backends.t.read_timeout: expected float"),
            (AwsKmsSettings, {"max_pool_connections": True}, "expected int"),
            (VaultSettings, {}, "backends.t.address: required"),
            (VaultSettings, {"address": "http://x", "auth": "ldap"}, "expected one of 'token'"),
            (ResilienceSettings, {"timeout": None}, "backends.t.timeout: expected float"),
        ],
    )
    def test_errors_name_the_field(self, cls, raw, message):
        """Every mistake is reported with its dotted field name."""
        with pytest.raises(ConfigError, match=message):
            settings_from(cls, raw, "backends.t")

    def test_backend_is_wrapped_for_resilience(self):
        """Remote backends come wrapped in the shared resilience layer with its own settings."""
        raw = {
            "aws": {"region": "us-east-1", "resilience": {"timeout": 1.5, "breaker_failures": 2}}
        }
        backend = build_remote_backend("aws-kms", raw)
        assert isinstance(backend, ResilientBackend)
        assert backend.scheme == "aws-kms"
        assert backend.state == "closed"
