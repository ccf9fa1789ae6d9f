"""Backend configuration tables map onto settings dataclasses with one-line errors."""

from __future__ import annotations

import pytest

from broker.errors import ConfigError
from broker.kms.aws import AwsKmsSettings
from broker.kms.base import DecryptionBackend, MacBackend, SecretBackend, SigningBackend
from broker.kms.registry import (
    PURPOSES,
    REMOTE_SCHEMES,
    SCHEMES,
    backend_settings,
    build_remote_backend,
    describe_uris,
    served_purposes,
    settings_from,
    uri_pattern,
)
from broker.kms.resilience import ResilienceSettings, ResilientBackend
from broker.kms.vault import VaultSettings

# a table each remote backend can be built from without reaching its KMS
TABLES = {
    "aws": {"region": "us-east-1"},
    "vault": {"address": "http://127.0.0.1:1", "token": "t"},
    "gcp": {"endpoint": "127.0.0.1:1"},
    "pkcs11": {"token_label": "t", "pin": "1"},
}


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


class TestVocabulary:
    """URI schemes and purposes, as configuration sees them."""

    def test_uri_pattern_takes_exactly_the_schemes(self):
        """Every scheme is accepted with a key id; other schemes and empty ids are not."""
        pattern = uri_pattern(SCHEMES)
        assert all(pattern.match(f"{scheme}://k") for scheme in SCHEMES)
        assert not pattern.match("file://k")
        assert not pattern.match("local://")
        assert not uri_pattern(REMOTE_SCHEMES).match("local://k")

    def test_describe_uris(self):
        """Messages list every accepted URI form, the last after "or"."""
        assert describe_uris(SCHEMES) == (
            "local://NAME, aws-kms://…, vault-transit://MOUNT/NAME, gcp-kms://projects/… "
            "or pkcs11://TOKEN/LABEL"
        )

    @pytest.mark.parametrize(
        ("scheme", "served"),
        [
            ("local", PURPOSES),
            ("aws-kms", ("envelope", "signing")),
            ("vault-transit", ("envelope", "signing", "hmac")),
            ("gcp-kms", ("envelope",)),
            ("pkcs11", ("envelope",)),
        ],
    )
    def test_served_purposes(self, scheme, served):
        """Which purposes a key on each backend may have."""
        assert served_purposes(scheme) == served

    @pytest.mark.parametrize("scheme", sorted(REMOTE_SCHEMES))
    async def test_served_purposes_match_built_backends(self, scheme):
        """What validation allows is what the built, resilience-wrapped backend implements."""
        backend = build_remote_backend(scheme, TABLES)
        try:
            protocols = {
                "signing": SigningBackend,
                "hmac": MacBackend,
                "asymmetric_decrypt": DecryptionBackend,
                "derivation": SecretBackend,
            }
            implemented = {p for p, proto in protocols.items() if isinstance(backend, proto)}
            assert implemented == set(served_purposes(scheme)) - {"envelope"}
        finally:
            await backend.close()


class TestBackendSettings:
    """A table checked without building its backend."""

    def test_settings_and_resilience(self):
        """The vendor settings and the nested resilience table come back checked."""
        raw = {"vault": {**TABLES["vault"], "resilience": {"max_attempts": 1}}}
        settings, resilience = backend_settings("vault-transit", raw)
        assert isinstance(settings, VaultSettings)
        assert settings.address == "http://127.0.0.1:1"
        assert resilience == ResilienceSettings(max_attempts=1)

    def test_resilience_must_be_a_table(self):
        """A resilience value that is not a table is named."""
        with pytest.raises(ConfigError, match=r"^backends\.aws\.resilience: expected a table$"):
            backend_settings("aws-kms", {"aws": {"resilience": 3}})
