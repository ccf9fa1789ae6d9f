"""Known-answer vectors for the compat tests, kept in tests/vectors/known_answers.json."""

import json
from pathlib import Path

import pytest

VECTORS = Path(__file__).resolve().parents[2] / "vectors" / "known_answers.json"


@pytest.fixture(scope="session")
def vectors():
    """The published test vectors, by algorithm."""
    return json.loads(VECTORS.read_text())
