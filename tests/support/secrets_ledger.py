"""What the whole test run must never find in a log or audit file, and where to look.

Every test daemon registers the files it writes in PRODUCED, and its channels record the
secret fields of every unary request and response in SECRETS (plaintexts, passwords,
blind-index values, data keys, tokens, derived keys). The secret scan runs last and looks
for each secret, raw and in hex and base64, in every produced file.
"""

from __future__ import annotations

import base64
import contextlib
from typing import TYPE_CHECKING, Any

import grpc

if TYPE_CHECKING:
    from pathlib import Path

PRODUCED: list[Path] = []  # log and audit files written by test daemons
SECRETS: set[bytes] = set()  # secrets the tests sent or received
SECRET_FIELDS = frozenset(
    {"plaintext", "password", "value", "data_key", "token", "text", "derived_key"}
)
MIN_SECRET = 8  # shorter values would match by chance


def remember(*secrets: bytes) -> None:
    """Add secrets the scan must not find."""
    SECRETS.update(s for s in secrets if len(s) >= MIN_SECRET)


def b64_forms(secret: bytes) -> set[bytes]:
    """The encodings a secret could appear in inside a text file."""
    forms = {secret, secret.hex().encode(), secret.hex().upper().encode()}
    for enc in (base64.b64encode, base64.urlsafe_b64encode):
        forms.add(enc(secret).rstrip(b"="))
    return {f for f in forms if len(f) >= MIN_SECRET}


def collect(message: Any) -> None:
    """Remember the secret fields of a protobuf message, recursing into nested messages."""
    for field, value in message.ListFields():
        if hasattr(value, "keys"):
            continue  # a map (the encryption context): authenticated, not secret
        if field.message_type is not None:
            repeated = isinstance(value, (list, tuple)) or hasattr(value, "append")
            for item in value if repeated else [value]:
                collect(item)
        elif field.name in SECRET_FIELDS:
            remember(value.encode() if isinstance(value, str) else bytes(value))


class SecretRecorder(grpc.UnaryUnaryClientInterceptor):
    """Client interceptor that feeds every unary call's secrets to the ledger."""

    def intercept_unary_unary(self, continuation, client_call_details, request):
        """Record the request, make the call, record the response when there is one."""
        collect(request)
        outcome = continuation(client_call_details, request)
        with contextlib.suppress(grpc.RpcError):
            collect(outcome.result())
        return outcome
