"""Golden envelopes made by an earlier daemon decrypt with this one, forever."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest
from support.daemon import Daemon

from broker.rpc.gen import envelope_pb2 as pb

VECTORS = Path(__file__).resolve().parent.parent / "vectors" / "local-v1"


@pytest.fixture(scope="module")
def golden(tmp_path_factory):
    """A daemon on a copy of the golden keyring, with its published test master key."""
    data = json.loads((VECTORS / "envelopes.json").read_text())
    state = tmp_path_factory.mktemp("golden") / "state"
    state.mkdir(mode=0o750)
    shutil.copy(VECTORS / "keyring.json", state / "keyring.json")
    (state / "keyring.json").chmod(0o600)
    d = Daemon(state, {"ECL_CRYPTO_LOCAL_MASTER_KEY": data["master_key"]}).start()
    try:
        yield d, data
    finally:
        d.stop()


class TestGoldenLocalVectors:
    """Every stored envelope opens to its recorded plaintext."""

    def test_format_1_vectors(self, golden):
        """Format-1 envelopes (context presented, stored, empty plaintext) decrypt."""
        d, data = golden
        for case in data["vectors"]:
            req = pb.DecryptRequest(
                ciphertext=bytes.fromhex(case["envelope"]), context=case["context"]
            )
            assert d.envelope.Decrypt(req).plaintext.hex() == case["plaintext"], case["description"]

    def test_format_2_stream_vector(self, golden):
        """The two-segment stream made under key version 2 decrypts."""
        d, data = golden
        case = data["stream"]
        envelope = (VECTORS / case["envelope_file"]).read_bytes()
        start = pb.DecryptStreamRequest(start=pb.DecryptStreamStart(context=case["context"]))
        chunk = pb.DecryptStreamRequest(chunk=envelope)
        out = b"".join(r.chunk for r in d.envelope.DecryptStream(iter([start, chunk])))
        assert hashlib.sha256(out).hexdigest() == case["plaintext_sha256"]

    def test_wrong_master_key_refuses_to_start(self, tmp_path):
        """A keyring opened with another master key stops the daemon with a clear message."""
        state = tmp_path / "state"
        state.mkdir(mode=0o750)
        shutil.copy(VECTORS / "keyring.json", state / "keyring.json")
        (state / "keyring.json").chmod(0o600)
        d = Daemon(state, {"ECL_CRYPTO_LOCAL_MASTER_KEY": "ab" * 32})
        with pytest.raises(RuntimeError, match="not the one this keyring was created with"):
            d.start()
