from __future__ import annotations

import base64
import re

import pytest
from unit.services.fakes import CALLER, Decision

from broker.errors import InvalidRequestError, PermissionDeniedError
from broker.services.tokens import TokenService


@pytest.fixture
def tokens(ops) -> TokenService:
    """The token service over the shared fakes."""
    return TokenService(ops)


class TestTokenService:
    """TokenService.generate: random tokens in three encodings, within bounds."""

    def test_raw_bytes(self, tokens):
        """The bytes encoding gives `length` raw bytes and no text."""
        token = tokens.generate(CALLER, 48, "bytes")
        assert (len(token.raw), token.text) == (48, "")

    def test_hex(self, tokens):
        """The hex encoding gives lowercase hex of `length` bytes."""
        token = tokens.generate(CALLER, 16, "hex")
        assert re.fullmatch(r"[0-9a-f]{32}", token.text)
        assert token.raw == b""

    def test_urlsafe_is_unpadded_base64url(self, tokens):
        """The urlsafe encoding decodes back to `length` bytes and has no padding."""
        text = tokens.generate(CALLER, 32, "urlsafe").text
        assert re.fullmatch(r"[A-Za-z0-9_-]{43}", text)
        assert len(base64.urlsafe_b64decode(text + "=")) == 32

    def test_zero_means_32_bytes(self, tokens):
        """Length 0 asks for the default of 32 bytes."""
        assert len(tokens.generate(CALLER, 0, "bytes").raw) == 32

    def test_tokens_differ(self, tokens):
        """Two tokens are never equal."""
        assert tokens.generate(CALLER, 16, "bytes") != tokens.generate(CALLER, 16, "bytes")

    @pytest.mark.parametrize("length", [15, 1025])
    def test_length_out_of_bounds(self, tokens, length, fakes):
        """Lengths outside 16..1024 are InvalidRequest naming the bounds, before the policy."""
        with pytest.raises(InvalidRequestError) as caught:
            tokens.generate(CALLER, length, "hex")
        assert caught.value.message == f"token length must be 16..1024 bytes (got {length})"
        assert fakes.authz.decisions == []

    def test_authorized_as_keyless_token(self, tokens, fakes):
        """Tokens need no key: the policy is asked about `token` on key "", and may deny."""
        fakes.authz.deny(operation="token")
        with pytest.raises(PermissionDeniedError):
            tokens.generate(CALLER, 32, "hex")
        assert fakes.authz.decisions == [Decision(CALLER, "", "token", {}, allowed=False)]
