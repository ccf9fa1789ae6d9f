import re

import pytest

from keybroker_client.compat import exceptions, tokens


class TestTokens:
    """tokens.generate_token_* from the local secrets module."""

    def test_bytes_length_is_length(self):
        """generate_token_bytes(length) returns length bytes; the default is 32."""
        assert len(tokens.generate_token_bytes(length=16)) == 16
        assert len(tokens.generate_token_bytes()) == 32

    def test_hex_is_two_characters_per_byte(self):
        """generate_token_hex(n) returns 2n lowercase hex characters."""
        token = tokens.generate_token_hex(20)

        assert re.fullmatch(r"[0-9a-f]{40}", token)

    def test_urlsafe_uses_the_urlsafe_alphabet_without_padding(self):
        """generate_token_urlsafe(32) is 43 characters of [A-Za-z0-9_-]."""
        token = tokens.generate_token_urlsafe(32)

        assert re.fullmatch(r"[A-Za-z0-9_-]{43}", token)

    def test_tokens_differ(self):
        """Two tokens are never the same."""
        assert tokens.generate_token_urlsafe() != tokens.generate_token_urlsafe()

    @pytest.mark.parametrize(
        "generate",
        [tokens.generate_token_bytes, tokens.generate_token_hex, tokens.generate_token_urlsafe],
    )
    @pytest.mark.parametrize("length", [0, 15, 1025])
    def test_out_of_bounds_is_invalid_parameter(self, generate, length):
        """Fewer than 16 or more than 1024 bytes is refused, as by the broker."""
        with pytest.raises(exceptions.InvalidParameterError, match="between 16 and 1024"):
            generate(length=length)

    @pytest.mark.parametrize("length", [16, 1024])
    def test_bounds_are_inclusive(self, length):
        """16 and 1024 bytes are allowed."""
        assert len(tokens.generate_token_bytes(length)) == length

    def test_bool_is_a_type_error(self):
        """True is not a length."""
        with pytest.raises(TypeError):
            tokens.generate_token_bytes(True)  # noqa: FBT003 - the point of the test

    def test_failing_random_source_is_a_token_generation_error(self, monkeypatch):
        """An OS random source that fails raises TokenGenerationError with the cause."""

        def broken(_length):
            raise OSError("getrandom failed")

        monkeypatch.setattr(tokens.secrets, "token_hex", broken)

        with pytest.raises(exceptions.TokenGenerationError) as caught:
            tokens.generate_token_hex()

        assert isinstance(caught.value.cause, OSError)
