"""Write tests/vectors/local-v1/: a local keyring and envelopes a daemon must always decrypt.

Run once; it refuses to overwrite existing vectors (they are the compatibility record).
Usage: python scripts/make_local_vectors.py
"""

from __future__ import annotations

import hashlib
import json
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from support.daemon import Daemon  # noqa: E402

from broker.rpc.gen import envelope_pb2 as pb  # noqa: E402
from broker.rpc.gen import key_admin_pb2  # noqa: E402

OUT = ROOT / "tests" / "vectors" / "local-v1"
# a published test key: these vectors protect nothing
MASTER_KEY = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f"


def _stream(d: Daemon, plaintext: bytes, context: dict[str, str]) -> bytes:
    start = pb.EncryptStreamRequest(start=pb.EncryptStreamStart(key="default", context=context))
    chunk = pb.EncryptStreamRequest(chunk=plaintext)
    return b"".join(r.chunk for r in d.envelope.EncryptStream(iter([start, chunk])))


def main() -> int:
    """Create the vectors with a real daemon."""
    if OUT.exists():
        print(f"{OUT} exists; vectors are never regenerated", file=sys.stderr)
        return 1
    with tempfile.TemporaryDirectory() as tmp:
        d = Daemon(Path(tmp) / "state", {"ECL_CRYPTO_LOCAL_MASTER_KEY": MASTER_KEY}).start()
        try:
            cases = []
            for desc, pt, ctx, store in [
                ("format 1, context presented", b"keybroker vector one", {"tenant": "acme"}, False),
                ("format 1, context stored", b"stored context", {"tenant": "acme", "t": "2"}, True),
                ("format 1, empty plaintext, no context", b"", {}, False),
            ]:
                req = pb.EncryptRequest(
                    key="default", plaintext=pt, context=ctx, store_context=store
                )
                ct = d.envelope.Encrypt(req).ciphertext
                cases.append(
                    {
                        "description": desc,
                        "plaintext": pt.hex(),
                        "context": ctx,
                        "envelope": ct.hex(),
                    }
                )
            d.admin.RotateKey(key_admin_pb2.RotateKeyRequest(key="default"))
            big = bytes(range(256)) * 1200
            ct = _stream(d, big, {"file": "x"})
            stream_case = {
                "description": "format 2, 2 segments, key version 2 (envelope in stream.bin)",
                "plaintext_sha256": hashlib.sha256(big).hexdigest(),
                "context": {"file": "x"},
                "envelope_file": "stream.bin",
            }
        finally:
            d.stop()
        OUT.mkdir(parents=True)
        shutil.copy(Path(tmp) / "state" / "keyring.json", OUT / "keyring.json")
        (OUT / "stream.bin").write_bytes(ct)
    (OUT / "envelopes.json").write_text(
        json.dumps({"master_key": MASTER_KEY, "vectors": cases, "stream": stream_case}, indent=1)
        + "\n"
    )
    print(f"wrote {OUT}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
