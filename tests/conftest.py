"""Session-wide ordering: the secret scan runs after every other test under tests/."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pytest

_LAST = "test_zz_secret_scan.py"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Move the secret scan to the end, so it sees every file the other tests produced."""
    items.sort(key=lambda item: item.path.name == _LAST)
