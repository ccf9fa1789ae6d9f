"""Write the golden envelopes in tests/vectors/ from fixed DEKs, nonces and salts.

Usage: python scripts/make_vectors.py [--force] [--out-dir DIR]

The vectors pin the wire format: tests/unit/core/test_vectors.py decrypts each one and re-seals
it from the same inputs, so any format drift fails the tests. Files that exist are never
overwritten unless --force is given, and regenerating published vectors defeats their purpose:
add new vectors to new files instead.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

# The repository root must be importable before the package is.
from broker.core.aead import DataKey  # noqa: E402
from broker.core.context import canonical_context  # noqa: E402
from broker.core.stream import seal_stream  # noqa: E402
from broker.core.wire import FORMAT_STREAM, FORMAT_V1, encode_prefix, seal_v1  # noqa: E402

V1_FILE = "envelope-v1.json"
V2_FILE = "stream-v2.json"
SEGMENT_SIZE = 4096


def _fixed(label: str, size: int) -> bytes:
    """Expand a label into reproducible bytes, so no input is a bare magic number."""
    out = b""
    counter = 0
    while len(out) < size:
        out += hashlib.sha256(f"keybroker vectors/{label}/{counter}".encode()).digest()
        counter += 1
    return out[:size]


def _pattern(size: int) -> bytes:
    """A plaintext whose bytes are easy to eyeball in hex."""
    return bytes((i * 31 + 7) % 256 for i in range(size))


def _prefix(case: dict[str, Any], version: int) -> bytes:
    """Encode the header prefix a case describes."""
    context = canonical_context(case["context"])
    return encode_prefix(
        version=version,
        key_name=case["key_name"],
        key_version=case["key_version"],
        wrapped_dek=case["wrapped_dek"],
        commitment=DataKey.from_dek(case["dek"]).commitment,
        stored_context=context if case["store_context"] else None,
    )


def _as_json(case: dict[str, Any], envelope: bytes) -> dict[str, Any]:
    """Render a case with bytes as lowercase hex and the context as an object."""
    rendered = {"description": case["description"]}
    rendered |= {k: v.hex() if isinstance(v, bytes) else v for k, v in case.items()}
    rendered["envelope"] = envelope.hex()
    return rendered


def _v1_cases() -> list[dict[str, Any]]:
    """Format 1 cases: contexts presented and stored, empty and bounded fields."""
    base = {"key_name": "default", "key_version": 1, "store_context": False}
    return [
        {
            **base,
            "description": "short plaintext, context presented at decryption",
            "dek": _fixed("v1/1/dek", 32),
            "wrapped_dek": _fixed("v1/1/wrapped", 60),
            "context": {"tenant": "acme", "purpose": "golden-vector"},
            "nonce": _fixed("v1/1/nonce", 12),
            "plaintext": b"keybroker format 1 golden vector",
        },
        {
            **base,
            "description": "context stored in the envelope, non-ASCII context",
            "dek": _fixed("v1/2/dek", 32),
            "wrapped_dek": _fixed("v1/2/wrapped", 60),
            "context": {"tenant": "acme", "r\u00e9gion": "eu-west-1", "empty": ""},
            "store_context": True,
            "nonce": _fixed("v1/2/nonce", 12),
            "plaintext": _pattern(100),
        },
        {
            **base,
            "description": "empty plaintext, empty context",
            "dek": _fixed("v1/3/dek", 32),
            "wrapped_dek": _fixed("v1/3/wrapped", 1),
            "context": {},
            "nonce": _fixed("v1/3/nonce", 12),
            "plaintext": b"",
        },
        {
            **base,
            "description": "longest key name, largest key version, 2048-byte wrapped DEK",
            "key_name": "k" + "0123456789._-" * 4 + "abcdefghijk",
            "key_version": 2**32 - 1,
            "dek": _fixed("v1/4/dek", 32),
            "wrapped_dek": _fixed("v1/4/wrapped", 2048),
            "context": {"tenant": "acme"},
            "nonce": _fixed("v1/4/nonce", 12),
            "plaintext": _pattern(1000),
        },
    ]


def _v2_cases() -> list[dict[str, Any]]:
    """Format 2 cases with 4096-byte segments: several, exact boundary, one, empty."""
    base = {
        "key_name": "default",
        "key_version": 2,
        "store_context": False,
        "segment_size": SEGMENT_SIZE,
    }
    cases = [
        ("three segments, the last one partial", {"tenant": "acme"}, False, 2 * 4096 + 1000),
        ("two full segments, context stored", {"tenant": "acme", "r\u00e9gion": "eu"}, True, 8192),
        ("one short segment", {"tenant": "acme"}, False, 1),
        ("empty plaintext: one empty last segment, empty context", {}, False, 0),
    ]
    return [
        {
            **base,
            "description": description,
            "dek": _fixed(f"v2/{i}/dek", 32),
            "wrapped_dek": _fixed(f"v2/{i}/wrapped", 60),
            "context": context,
            "store_context": stored,
            "salt": _fixed(f"v2/{i}/salt", 16),
            "plaintext": _pattern(size),
        }
        for i, (description, context, stored, size) in enumerate(cases, start=1)
    ]


def build_v1() -> dict[str, Any]:
    """Seal every format 1 case."""
    vectors = []
    for case in _v1_cases():
        dk = DataKey.from_dek(case["dek"])
        context = canonical_context(case["context"])
        prefix = _prefix(case, FORMAT_V1)
        envelope = seal_v1(dk, prefix, case["plaintext"], context, nonce=case["nonce"])
        vectors.append(_as_json(case, envelope))
    return {
        "description": "Format 1 envelopes from fixed inputs (docs/wire-format.md). They must "
        "decrypt forever; never regenerate this file.",
        "format_version": FORMAT_V1,
        "vectors": vectors,
    }


def build_v2() -> dict[str, Any]:
    """Seal every format 2 case."""
    vectors = []
    for case in _v2_cases():
        dk = DataKey.from_dek(case["dek"])
        context = canonical_context(case["context"])
        prefix = _prefix(case, FORMAT_STREAM)
        envelope = seal_stream(
            dk,
            prefix,
            case["plaintext"],
            context,
            segment_size=case["segment_size"],
            salt=case["salt"],
        )
        vectors.append(_as_json(case, envelope))
    return {
        "description": "Format 2 (streaming) envelopes from fixed inputs (docs/wire-format.md). "
        "They must decrypt forever; never regenerate this file.",
        "format_version": FORMAT_STREAM,
        "vectors": vectors,
    }


def main(argv: list[str] | None = None) -> int:
    """Write both vector files, refusing to replace existing ones without --force."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--force", action="store_true", help="overwrite existing files")
    parser.add_argument("--out-dir", type=Path, default=ROOT / "tests" / "vectors")
    args = parser.parse_args(argv)
    outputs = {args.out_dir / V1_FILE: build_v1, args.out_dir / V2_FILE: build_v2}
    existing = [path for path in outputs if path.exists()]
    if existing and not args.force:
        for path in existing:
            print(f"refusing to overwrite {path} (golden vectors are permanent; use --force)")
        return 1
    args.out_dir.mkdir(parents=True, exist_ok=True)
    for path, build in outputs.items():
        path.write_text(json.dumps(build(), indent=2) + "\n", "utf-8")
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
